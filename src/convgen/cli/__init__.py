"""The ``convgen`` command line (entry point ``convgen.cli:main``); one module per command group."""

from convgen.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
