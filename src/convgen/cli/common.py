"""What the command modules share: the one-line-error argument parser and command groups."""

from __future__ import annotations

import argparse

from convgen.errors import ConvgenError


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        raise ConvgenError(f"{message} (see '{self.prog} --help')")


def command_group(sub, name: str, help: str):
    """A command with subcommands of its own (``convgen zoo list``, ``convgen eval restoration``)."""
    group = sub.add_parser(name, help=help).add_subparsers(
        dest=f"{name}_command", metavar="SUBCOMMAND", parser_class=Parser
    )
    group.required = True
    return group
