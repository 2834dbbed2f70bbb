"""Autoencoder and VAE commands: ``reconstruct``, and the latent-space tools ``traverse``, ``edit`` (attribute
arithmetic) and ``latent-map``."""

from __future__ import annotations

import argparse
import sys

from convgen.cli.common import add_option_flags, add_provenance_flag, given_options
from convgen.errors import ConvgenError


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from convgen.pipelines import RestorePipeline, load

    pipe = load(args.model, device=args.device, expect=RestorePipeline, role="an autoencoder")
    options = given_options(args, args.option_names)
    written = pipe.restore_files(args.input, args.output, overwrite=args.overwrite, verb="reconstruct",
                                 provenance=args.provenance, **options)  # fmt: skip
    print(f"reconstruct: wrote {len(written)} image(s) to {args.output}", file=sys.stderr)
    return 0


def _vae(model: str, device: str):
    from convgen.pipelines import load
    from convgen.pipelines.vae import VAEPipeline

    return load(model, device=device, expect=VAEPipeline, role="a VAE or autoencoder")


def _cmd_traverse(args: argparse.Namespace) -> int:
    from convgen.io.atomic import refuse_existing
    from convgen.io.images import read_image
    from convgen.viz.grid import save_grid

    refuse_existing([args.out], args.overwrite)
    pipe = _vae(args.model, args.device)
    image = pipe.prepare(read_image(args.input), args.input)[0].permute(1, 2, 0).numpy() if args.input else None
    if pipe.num_classes and args.class_ is None:
        raise ConvgenError(f"{args.model} is class-conditional: give --class CLASS")
    o = pipe.checked(pipe.traverse_options, given_options(args, args.option_names), "traverse")
    grid = pipe.traverse(image, o["dims"], o["span"], o["steps"], o["seed"], args.class_)
    save_grid(grid, args.out, nrow=o["steps"], provenance=pipe.provenance("traverse") if args.provenance else None)
    print(f"wrote {args.out} (rows: latent dimensions, columns: -{o['span']:g} .. +{o['span']:g})", file=sys.stderr)
    return 0


def _cmd_edit(args: argparse.Namespace) -> int:
    from convgen.io.atomic import refuse_existing
    from convgen.io.images import read_image
    from convgen.pipelines.vae import labelled_set
    from convgen.viz.grid import save_grid

    refuse_existing([args.out], args.overwrite)
    if args.from_ == args.to:
        raise ConvgenError(f"--from and --to are both class {args.to}: the edit would not change the image")
    pipe = _vae(args.model, args.device)
    image = pipe.prepare(read_image(args.input), args.input)[0].permute(1, 2, 0).numpy()
    images, labels = labelled_set(args.reference, args.labels, pipe.prepare)
    means = pipe.class_means(images, labels)
    for c in (args.from_, args.to):
        if c not in means:
            raise ConvgenError(f"class {c} has no image in the reference set (classes: {sorted(means)})")
    label = args.from_ if pipe.num_classes else None  # a conditional model codes the image given its own class
    o = pipe.checked(pipe.edit_options, given_options(args, args.option_names), "edit")
    row = pipe.attribute_shift(image, means[args.to] - means[args.from_], o["steps"], o["strength"], label)
    save_grid(row, args.out, nrow=o["steps"], provenance=pipe.provenance("edit") if args.provenance else None)
    print(f"wrote {args.out} ({o['steps']} steps from the reconstruction along class {args.from_} -> {args.to})",
          file=sys.stderr)  # fmt: skip
    return 0


def _cmd_latent_map(args: argparse.Namespace) -> int:
    from convgen.pipelines.vae import labelled_set

    pipe = _vae(args.model, args.device)
    images, labels = labelled_set(args.input, args.labels, pipe.prepare)
    what = pipe.latent_map(images, labels, args.out, args.overwrite)
    print(f"wrote {args.out}: {what}", file=sys.stderr)
    return 0


def _declared(attribute: str, with_options: bool) -> list[tuple[str, type]]:
    """The VAE pipeline's declaration of a tool's options (none when the command is not the one being run)."""
    if not with_options:
        return []
    from convgen.pipelines.vae import VAEPipeline

    return [("vae models", getattr(VAEPipeline, attribute))]


def add_commands(sub, with_options: bool = True) -> None:
    r = sub.add_parser(
        "reconstruct",
        help="reconstruct images with an autoencoder or VAE (the decoder's mean)",
        description="IN/OUT may be files or folders, with the naming rules of `convgen restore` (.npy in gives "
        ".npy float out of the same shape). Images must have the model's size and channels.",
    )
    r.add_argument("model", help="zoo name (e.g. mnist-vae) or saved model directory")
    r.add_argument("--input", required=True, help="image file or folder")
    r.add_argument("--output", required=True, help="output file or folder")
    r.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_provenance_flag(r)
    r.add_argument("--device", default="auto")
    declared = []
    if with_options:
        from convgen.pipelines.vae import VAEPipeline

        declared = [("autoencoders", VAEPipeline.restore_options["reconstruct"])]
    r.set_defaults(func=_cmd_reconstruct, option_names=add_option_flags(r, declared))

    t = sub.add_parser(
        "traverse",
        help="a VAE's latent traversal grid: one latent dimension per row",
        description="Each row sets one latent dimension to values from -SPAN to +SPAN (prior standard deviations) "
        "in the code of --input (or of a prior sample from --seed), the other dimensions fixed.",
    )
    t.add_argument("model")
    t.add_argument("--out", required=True, help="PNG grid (rows x --steps)")
    t.add_argument("--input", help="image whose code is traversed (default: a prior sample)")
    t.add_argument("--class", dest="class_", help="class (conditional models)")
    t.add_argument("--overwrite", action="store_true")
    add_provenance_flag(t)
    t.add_argument("--device", default="auto")
    t.set_defaults(func=_cmd_traverse, option_names=add_option_flags(t, _declared("traverse_options", with_options)))

    e = sub.add_parser(
        "edit",
        help="attribute arithmetic: move an image's code from one class towards another",
        description="Moves the code of --input along mean(code of class TO) - mean(code of class FROM), measured "
        "on a labelled reference set (--reference DIR with labels.csv; default: the 1,000 validation digits bundled "
        "with convgen), e.g. turn a 3 into an 8 while keeping the stroke style.",
    )
    e.add_argument("model")
    e.add_argument("--input", required=True, help="the image to edit")
    e.add_argument("--from", dest="from_", type=int, required=True, help="its class")
    e.add_argument("--to", type=int, required=True, help="the class to move towards")
    e.add_argument("--out", required=True, help="PNG row: the reconstruction, then each step")
    e.add_argument("--reference", help="labelled images (a folder with labels.csv)")
    e.add_argument("--labels", help="labels.csv (default: REFERENCE/labels.csv)")
    e.add_argument("--overwrite", action="store_true")
    add_provenance_flag(e)
    e.add_argument("--device", default="auto")
    e.set_defaults(func=_cmd_edit, option_names=add_option_flags(e, _declared("edit_options", with_options)))

    m = sub.add_parser(
        "latent-map",
        help="a 2-D map of a labelled set's latent codes, coloured by class",
        description="The model's own latent when it is 2-D, else its first two principal components (the picture "
        "says which). Default set: the 1,000 validation digits bundled with convgen.",
    )
    m.add_argument("model")
    m.add_argument("--out", required=True, help="PNG")
    m.add_argument("--input", help="labelled images (a folder with labels.csv)")
    m.add_argument("--labels", help="labels.csv (default: INPUT/labels.csv)")
    m.add_argument("--overwrite", action="store_true")
    m.add_argument("--device", default="auto")
    m.set_defaults(func=_cmd_latent_map)
