# Switchboard: one image for every part (web, worker, sandbox); docker-compose.yml picks
# the part with its command. Not built here (no Docker engine on the development
# machine); tests/unit/test_compose.py checks this file and the compose file statically.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (cached while only the code changes).
# constraints.txt: the exact versions CI tested (pyproject.toml keeps the ranges).
COPY pyproject.toml constraints.txt README.md* ./
RUN test -f README.md || touch README.md \
    && mkdir -p webhooks worker config sandbox \
    && touch webhooks/__init__.py worker/__init__.py config/__init__.py sandbox/__init__.py \
    && pip install -c constraints.txt . \
    && pip uninstall -y switchboard

COPY . .
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home /app switchboard \
    && mkdir -p /app/var && chown switchboard /app/var

USER switchboard
# In a container the web must listen on all interfaces (the default is 127.0.0.1).
ENV SWITCHBOARD_HOST=0.0.0.0 \
    PORT=8000 \
    SWITCHBOARD_CONFIG=/app/config/switchboard.yaml
EXPOSE 8000 8100

CMD ["switchboard", "web"]
