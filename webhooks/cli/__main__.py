"""``python -m webhooks.cli``: the ``switchboard`` command."""

from webhooks.cli import main

main()
