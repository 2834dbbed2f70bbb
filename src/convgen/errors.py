"""User-facing errors.

Anything a user can cause (bad file, bad config value, unknown name) raises :class:`ConvgenError`;
the CLI prints its message on one line and exits non-zero. Any other exception is a bug in convgen.
"""

from __future__ import annotations


class ConvgenError(Exception):
    """An error caused by user input; its message is shown without a traceback."""

    exit_code = 2


class ConfigError(ConvgenError):
    """A configuration file or override is invalid."""


class ImageError(ConvgenError):
    """An image could not be read, or is not what the model needs."""


class DataError(ConvgenError):
    """A dataset file is missing, malformed, or fails its checksum."""
