"""User-facing errors.

Anything a user can cause (bad file, bad config value, unknown name) raises :class:`ConvgenError`; the CLI prints
its message on one line and exits non-zero. Any other exception is a bug in convgen.

The Python API and the CLI share one message: a parameter named in it is written in backticks (```tile` 8 is
too small``), which reads as the parameter's name through the API (``tile 8 is too small``) and as its flag on the
command line (``--tile 8 is too small``), so neither front end has to rewrite the other's errors.
"""

from __future__ import annotations

import re

_OPTION = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


class ConvgenError(Exception):
    """An error caused by user input; its message is shown without a traceback."""

    exit_code = 2

    def __init__(self, message: str = "") -> None:
        self.template = str(message)
        super().__init__(_OPTION.sub(r"\1", self.template))

    def cli_message(self) -> str:
        """The message with every backticked parameter written as its command-line flag."""
        return _OPTION.sub(lambda m: "--" + m.group(1).replace("_", "-"), self.template)


class ConfigError(ConvgenError):
    """A configuration file or override is invalid."""


class ImageError(ConvgenError):
    """An image could not be read, or is not what the model needs."""


class DataError(ConvgenError):
    """A dataset file is missing, malformed, or fails its checksum."""
