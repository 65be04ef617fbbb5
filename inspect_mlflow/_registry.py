"""Entry point target of the ``inspect_ai`` group: importing it registers the hook."""
