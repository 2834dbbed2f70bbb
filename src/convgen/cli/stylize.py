"""``convgen stylize``: a trained fast style model (``convgen stylize MODEL``) or the optimisation of Gatys et al.
(``convgen stylize --style PAINTING``), on a file or a folder. Both write PNGs whose text chunks name the method,
the style and the feature network; ``--json`` prints the same on stdout."""

from __future__ import annotations

import argparse
import json
import sys

from convgen.cli.common import add_option_flags, add_provenance_flag, given_options
from convgen.errors import ConvgenError

GATYS_ARGS = ("style_mix", "vgg_weights", "feature_net")  # what the optimisation is built from, not its options


def _cmd_stylize(args: argparse.Namespace) -> int:
    method = args.method or ("fast" if args.model else "gatys")
    options = given_options(args, args.option_names)
    if method == "fast":
        if not args.model:
            raise ConvgenError("--method fast needs a trained style MODEL (e.g. style-starry-night)")
        if args.style:
            raise ConvgenError("give either a trained style MODEL or --style PAINTING (Gatys), not both")
        given = [k for k in GATYS_ARGS if getattr(args, k) is not None]
        if given:
            raise ConvgenError(f"--{given[0].replace('_', '-')} is an option of the Gatys optimisation (--style)")
        from convgen.pipelines import load
        from convgen.pipelines.style import StylePipeline

        pipe = load(args.model, device=args.device, expect=StylePipeline, role="a style model")
    else:
        if args.model:
            raise ConvgenError(f"{args.model}: --method gatys optimises against --style images, not a model")
        if not args.style:
            raise ConvgenError("give a trained style MODEL or --style PAINTING (the Gatys optimisation)")
        from convgen.pipelines.style import Gatys

        pipe = Gatys(args.style, args.style_mix, feature_net=args.feature_net or "auto",
                     vgg_weights=args.vgg_weights, device=args.device)  # fmt: skip
    written = pipe.stylize_files(args.input, args.output, overwrite=args.overwrite, provenance=args.provenance,
                                 **options)  # fmt: skip
    info = {k.split(":", 1)[1]: v for k, v in pipe.describe().items()}
    if info.get("feature_net", "").startswith("random"):
        print(f"stylize: feature network {info['feature_net']} (the offline fallback, not the ImageNet VGG19; "
              "see the README)", file=sys.stderr)  # fmt: skip
    print(f"stylize: wrote {len(written)} image(s) to {args.output}", file=sys.stderr)
    if args.json:
        print(json.dumps({**info, "outputs": [str(p) for p in written]}))
    return 0


def _declared() -> list[tuple[str, type]]:
    from convgen.pipelines.style import Gatys, StylePipeline

    return [("fast models", StylePipeline.stylize_options), ("Gatys --style", Gatys.stylize_options)]


def add_commands(sub, with_options: bool = True) -> None:
    s = sub.add_parser(
        "stylize",
        help="neural style transfer: a trained fast model, or the Gatys optimisation against --style images",
        description="convgen stylize MODEL --input IN --output OUT runs a trained feed-forward style model (zoo: "
        "style-starry-night, style-shipwreck, style-scream). convgen stylize --style PAINTING --input IN --output OUT "
        "optimises each image (Gatys et al.; several --style images mix, weighted by --style-mix). IN/OUT may be "
        "files or folders (outputs keep the input names; JPEG inputs become PNG). Features come from the ImageNet "
        "VGG19 when its file is found (--vgg-weights, $CONVGEN_VGG_WEIGHTS, the cache), else from the offline "
        "fallback random-vgg19; the output names the one used.",
    )
    s.add_argument("model", nargs="?", help="a trained style model: zoo name or saved model directory")
    s.add_argument("--input", required=True, help="image file or folder (PNG/JPEG/TIFF/.npy)")
    s.add_argument("--output", required=True, help="output file or folder")
    s.add_argument("--style", nargs="+", help="style image(s) for the Gatys optimisation")
    s.add_argument("--style-mix", type=float, nargs="+", help="weights of several --style images (default: equal)")
    s.add_argument("--method", choices=["gatys", "fast"], help="default: fast with a MODEL, gatys with --style")
    g = s.add_argument_group("Gatys optimisation: what it is built from")
    g.add_argument("--feature-net", choices=["auto", "vgg19-imagenet", "random-vgg19"], help="default auto")
    g.add_argument("--vgg-weights", help="torchvision's vgg19-dcbb9e9d.pth (or set $CONVGEN_VGG_WEIGHTS)")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_provenance_flag(s)
    s.add_argument("--json", action="store_true", help="print what was done as one JSON object on stdout")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    names = add_option_flags(s, _declared() if with_options else [], "style options")
    s.set_defaults(func=_cmd_stylize, option_names=names)
