"""The ``convgen`` command line. The command contract is ../shared/BENCHMARKS.md; extend, never break it.

Each command group lives in its own module (``add_commands``) and only parses and calls the Python API, which
checks its arguments itself. User errors print one line ``convgen: error: ...`` on stderr and exit 2; ``--json``
output is one JSON object on stdout; progress and logs go to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from convgen import __version__
from convgen.cli import (
    autoencode,
    classify,
    codec,
    data,
    evaluate,
    generate,
    models,
    provenance,
    restore,
    serve,
    stylize,
    train,
    watermark,
)
from convgen.cli.common import Parser
from convgen.errors import ConvgenError


def build_parser(argv: Sequence[str] | None = None):
    """The parser; the models' own options and the restore verbs (which import every pipeline) are built only for
    the command that needs them."""
    command = None if argv is None else (argv[0] if argv else "")

    def full(*names: str) -> bool:
        return command is None or command in names

    p = Parser(prog="convgen", description="CNN image generation and restoration toolkit.")
    p.add_argument("--version", action="version", version=f"convgen {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    train.add_commands(sub)
    classify.add_commands(sub)
    generate.add_commands(sub, with_families=full("sample", "interpolate"))
    restore.add_commands(sub, with_verbs=full("restore"))
    autoencode.add_commands(sub, with_options=full("reconstruct", "traverse", "edit"))
    codec.add_commands(sub, with_options=full("compress"))
    stylize.add_commands(sub, with_options=full("stylize"))
    models.add_commands(sub)
    evaluate.add_commands(sub)
    data.add_commands(sub)
    serve.add_commands(sub)
    provenance.add_commands(sub)
    watermark.add_commands(sub, with_options=full("watermark"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args, extra = parser.parse_known_args(argv)
        if extra:
            # key=value overrides may also follow options (`convgen train cfg.yaml --out runs/x train.lr=0.1`)
            if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
                args.overrides = [*args.overrides, *extra]
            else:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return args.func(args)
    except ConvgenError as e:
        print(f"convgen: error: {e.cli_message()}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # the system refused something (permission, disk full, ...): its own words, one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"convgen: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        if "can't allocate memory" not in str(e) and "out of memory" not in str(e):
            raise
        print("convgen: error: out of memory (restore large images with a smaller --tile, or use fewer images)",
              file=sys.stderr)  # fmt: skip
        return 1
    except MemoryError:
        print("convgen: error: out of memory (restore large images with a smaller --tile, or use fewer images)",
              file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        print("convgen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
