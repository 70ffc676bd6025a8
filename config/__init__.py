"""Configuration: settings from the environment and the validated rule config file."""
