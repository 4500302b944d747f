"""The offline `kqlwatch` workbench: the CLI and its commands. Not deployed (see .funcignore)."""
