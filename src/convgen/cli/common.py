"""What the command modules share: the one-line-error argument parser and command groups."""

from __future__ import annotations

import argparse
from typing import Any

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


def add_provenance_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-provenance",
        dest="provenance",
        action="store_false",
        help="write no provenance record (outputs otherwise carry XMP with the IPTC digital source type and "
        "signed C2PA Content Credentials naming convgen and the model)",
    )


# -- flags from declared options (convgen.options) -------------------------------------------------------------------
def add_option_flags(parser: argparse.ArgumentParser, declared: list[tuple[str, type]], title: str = "model options"):
    """A flag for every field of the declared options (``[(owner label, Options dataclass), ...]``): ``name`` ->
    ``--name``, bools -> ``--name/--no-name``, Literals -> choices, lists -> several values; each help says which
    owners take it. Flags default to absent, so only what the user typed reaches the pipeline, which checks it.
    Returns the option names (see :func:`given_options`)."""
    from convgen.options import fields_of, split_type

    taken = {a.dest for a in parser._actions}
    found: dict[str, tuple[Any, Any, list[str]]] = {}
    for owner, cls in declared:
        for f, tp in fields_of(cls):
            if f.name in taken:
                raise ConvgenError(f"{owner}: its option `{f.name}` is also a flag of the command itself; rename it")
            if f.name in found and found[f.name][1] != tp:
                first = found[f.name][2][0]
                raise ConvgenError(f"{owner} and {first} declare option `{f.name}` with different types")
            found.setdefault(f.name, (f, tp, []))[2].append(owner)
    group = parser.add_argument_group(title) if found else parser
    helps: dict[str, dict[str, list[str]]] = {}
    for owner, cls in declared:
        for f, _ in fields_of(cls):
            text = f.metadata.get("help", "") + _default_text(f.default)
            helps.setdefault(f.name, {}).setdefault(text, []).append(owner)
    for name, (f, tp, _) in found.items():
        item, _, is_list = split_type(tp)
        help_text = "; ".join(f"{text} [{', '.join(sorted(set(o)))}]" for text, o in helps[name].items())
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text.replace("%", "%%")}
        flag = "--" + name.replace("_", "-")
        if item is bool and not is_list:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        kw["type"] = _parser_of(name, item)
        kw["metavar"] = f.metadata.get("metavar") or _metavar(item)
        if is_list:
            kw["nargs"] = "+"
        group.add_argument(flag, **kw)
    return tuple(found)


def given_options(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The declared options the user gave on the command line."""
    return {k: getattr(args, k) for k in names if hasattr(args, k)}


def _default_text(default: Any) -> str:
    if default is None or default is False:
        return ""
    if isinstance(default, tuple):
        default = " ".join(map(str, default))
    return f" (default: {default})"


def _metavar(item: Any) -> str:
    import typing

    if typing.get_origin(item) is typing.Literal:
        return "{" + ",".join(map(str, typing.get_args(item))) + "}"
    return {int: "N", float: "X", str: "TEXT"}.get(item, "VALUE")


def _parser_of(name: str, item: Any):
    from convgen.options import parse_text

    def parse(raw: str) -> Any:
        return parse_text(name, item, raw)

    parse.__name__ = getattr(item, "__name__", "value")
    return parse
