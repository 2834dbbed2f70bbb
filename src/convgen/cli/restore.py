"""``convgen restore VERB MODEL``: every verb of every registered image-to-image pipeline.

The verbs come from the pipelines (``RestorePipeline.restores``), so a new family or a plugin adds its verbs
without an edit here; the options are passed through to the pipeline, which checks them.
"""

from __future__ import annotations

import argparse
import sys

from convgen.cli.common import add_option_flags, add_provenance_flag, command_group, given_options


def restore_families() -> dict[str, list[tuple[str, type]]]:
    """verb -> [(pipeline name, its options for the verb), ...] over every registered image-to-image pipeline."""
    from convgen.options import Options
    from convgen.pipelines.restore import RestorePipeline
    from convgen.registry import PIPELINES

    verbs: dict[str, list[tuple[str, type]]] = {}
    for name, cls in PIPELINES.items():
        if isinstance(cls, type) and issubclass(cls, RestorePipeline):
            for verb in cls.restores:
                verbs.setdefault(verb, []).append((f"{name} models", cls.restore_options.get(verb, Options)))
    return verbs


def restore_verbs() -> dict[str, str]:
    """verb -> one-line help over every registered pipeline that restores images (each family's own words, with
    the family named when several serve the verb)."""
    from convgen.pipelines.restore import RestorePipeline
    from convgen.registry import PIPELINES

    helps: dict[str, dict[str, list[str]]] = {}
    for name, cls in PIPELINES.items():
        if isinstance(cls, type) and issubclass(cls, RestorePipeline):
            for verb in cls.restores:
                text = cls.verb_help.get(verb, f"restore images with a {verb} model")
                helps.setdefault(verb, {}).setdefault(text, []).append(f"{name} models")
    return {verb: text if len(by) == 1 else "; ".join(f"{t} [{', '.join(o)}]" for t, o in by.items())
            for verb, by in helps.items() for text in [next(iter(by))]}  # fmt: skip


def _cmd_restore(args: argparse.Namespace) -> int:
    from convgen.pipelines import RestorePipeline, load

    pipe = load(args.model, device=args.device, expect=RestorePipeline, role="a restoration model")
    pipe.check_verb(args.verb, args.model)
    options = given_options(args, args.option_names)
    written = pipe.restore_files(
        args.input, args.output, mask=args.mask, overwrite=args.overwrite, verb=args.verb,
        provenance=args.provenance, **options,
    )  # fmt: skip
    print(f"{args.verb}: wrote {len(written)} image(s) to {args.output}", file=sys.stderr)
    return 0


def add_commands(sub, with_verbs: bool = True) -> None:
    """``with_verbs`` False lists the command without importing the pipelines (for other commands' start-up)."""
    rsub = command_group(sub, "restore", "denoise, inpaint, super-resolve or de-JPEG images")
    families = restore_families() if with_verbs else {}
    for verb, what in (restore_verbs() if with_verbs else {}).items():
        r = rsub.add_parser(
            verb,
            help=what,
            description=f"{what[0].upper()}{what[1:]}. IN/OUT may be files or folders (outputs keep the input "
            "file names; .npy in gives .npy float out of the same shape). The options below are the models' own: "
            "each says which kind of model takes it.",
        )
        r.add_argument("model", help="zoo name (e.g. denoise-gray-s25) or saved model directory")
        r.add_argument("--input", required=True, help="image file or folder (PNG/JPEG/TIFF/.npy)")
        r.add_argument("--output", required=True, help="output file or folder")
        r.add_argument("--mask", help="mask file or folder of masks named like the inputs (inpaint)")
        r.add_argument("--overwrite", action="store_true", help="replace existing output files")
        add_provenance_flag(r)
        r.add_argument("--device", default="auto")
        names = add_option_flags(r, families.get(verb, []))
        r.set_defaults(func=_cmd_restore, verb=verb, option_names=names)
