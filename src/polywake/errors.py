"""Errors users can act on. The CLI prints their message in one line and exits non-zero."""


class PolywakeError(Exception):
    """Base of every error whose message is meant for the user."""


class ModelFileError(PolywakeError, ValueError):
    """A model file that is missing, truncated, tampered with, or of another format version."""


class ConfigError(PolywakeError, ValueError):
    """A configuration file that cannot be used; the message names the file and line."""
