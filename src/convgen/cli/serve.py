"""``convgen serve`` (the web app) and ``convgen study create|report`` (human evaluation studies)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from convgen.cli.common import command_group
from convgen.errors import ConvgenError


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from convgen.app.server import Settings, create_app, is_loopback
    except ImportError as e:
        raise ConvgenError(f"the web app needs its extra ({e.name} is missing): pip install 'convgen[web]'") from None
    if args.studies is not None and not Path(args.studies).is_dir():
        raise ConvgenError(f"{args.studies}: `studies` directory not found (create a study with convgen study create)")
    for key in ("workers", "queue", "max_samples"):
        if getattr(args, key) < (0 if key == "queue" else 1):
            raise ConvgenError(f"`{key}` {getattr(args, key)}: must be >= {0 if key == 'queue' else 1}")
    if args.timeout <= 0 or args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise ConvgenError("`timeout`, `max_upload_mb` and `max_megapixels` must be > 0")
    local = is_loopback(args.host)
    settings = Settings(
        allowed_hosts=("127.0.0.1", "localhost", "::1", args.host.lower()) if local else None,
        models=[Path(m) for m in args.models],
        studies=Path(args.studies) if args.studies else None,
        workers=args.workers,
        queue=args.queue,
        timeout_s=args.timeout,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=int(args.max_megapixels * 1e6),
        max_samples=args.max_samples,
        device=args.device,
    )
    app = create_app(settings)
    if not local:
        print(f"convgen serve: warning: listening on {args.host}, reachable from other machines on this network "
              "(no login; study results stay visible only on this machine)", file=sys.stderr)  # fmt: skip
    print(
        f"convgen serve: http://{args.host}:{args.port}/ ({len(app.state.catalog.names())} models"
        + (f", studies in {args.studies}" if args.studies else "")
        + "); Ctrl-C stops it",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=5,
                timeout_graceful_shutdown=5, limit_concurrency=args.max_connections)  # fmt: skip
    return 0


def _cmd_create(args: argparse.Namespace) -> int:
    from convgen.app.study import create_study

    path = create_study(args.name, args.real, args.fake, args.trials, args.dir, kind=args.kind,
                        exposure_ms=args.exposure_ms, practice=args.practice, catch=args.catch, database=args.db,
                        min_catch_accuracy=args.min_catch_accuracy, seed=args.seed,
                        max_sessions=args.max_sessions)  # fmt: skip
    print(f"created study {args.name} in {path}; raters open /study/{args.name} on `convgen serve --studies "
          f"{args.dir}`", file=sys.stderr)  # fmt: skip
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from convgen.app.study import Study, report, write_csv

    study = Study.open(args.dir, args.name)
    result = report(study)
    if args.csv:
        rows = write_csv(study, args.csv, overwrite=args.overwrite)
        print(f"wrote {rows} answers to {args.csv}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
        return 0
    print(f"study {result['study']} ({result['kind']}): {result['raters']} raters, {result['answers']} answers, "
          f"{len(result['excluded_raters'])} excluded ({result['attention_rule']})")  # fmt: skip

    def f(x) -> str:
        return "-" if x is None else f"{x:.3f}"

    for source, v in result["per_source"].items():
        value = v["mos"] if result["kind"] == "mos" else v["judged_real_rate"]
        what = "MOS" if result["kind"] == "mos" else "judged real"
        (lo, hi), (blo, bhi) = v["ci95"], v["bootstrap_ci95"]
        print(
            f"  {source}: {what} {f(value)}  95% CI {f(lo)}-{f(hi)}  bootstrap over raters {f(blo)}-{f(bhi)}  "
            f"(n={v['n']}, raters={v['raters']}; before exclusions {f(v['all_raters']['value'])}, "
            f"n={v['all_raters']['n']})"
        )
    return 0


def add_commands(sub) -> None:
    sv = sub.add_parser(
        "serve",
        help="the local web app (generate, restore, style, codec, human studies)",
        description="Serve the zoo and the given models in a browser, and run human studies. Needs the web extra: "
        "pip install 'convgen[web]'.",
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--models", nargs="*", default=[], metavar="DIR",
                    help="saved model or run directories, or folders of them, served besides the zoo")  # fmt: skip
    sv.add_argument("--studies", metavar="DIR", help="folder of studies made by `convgen study create`")
    sv.add_argument("--workers", type=int, default=2, help="model jobs run at once")
    sv.add_argument("--queue", type=int, default=32, help="jobs that may wait; more get HTTP 429")
    sv.add_argument("--timeout", type=float, default=120.0, help="seconds a job may take (then HTTP 503)")
    sv.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body")
    sv.add_argument("--max-megapixels", type=float, default=16.8, help="largest uploaded image (about 4096x4096)")
    sv.add_argument("--max-samples", type=int, default=100, help="most images one sample request may ask for")
    sv.add_argument("--max-connections", type=int, default=256, help="open connections before HTTP 503")
    sv.add_argument("--device", default="auto")
    sv.set_defaults(func=_cmd_serve)

    st = command_group(sub, "study", "human evaluation studies (real vs generated, opinion scores)")
    cr = st.add_parser("create", help="make a study from folders of real and generated images",
                       description="Copy the images (re-encoded, under opaque names) into STUDIES/NAME with the "
                       "study design; raters then open /study/NAME on `convgen serve --studies STUDIES`.")  # fmt: skip
    cr.add_argument("name")
    cr.add_argument("--real", required=True, help="folder of real images")
    cr.add_argument("--fake", required=True, action="append", help="folder of generated images (repeatable)")
    cr.add_argument("--trials", required=True, type=int, help="main trials per rater")
    cr.add_argument("--dir", required=True, help="the studies folder")
    cr.add_argument("--kind", choices=["2afc", "mos"], default="2afc")
    cr.add_argument("--exposure-ms", type=int, default=0,
                    help="how long images show (0 = until the answer; 1000 = the pix2pix protocol)")
    cr.add_argument("--practice", type=int, default=10, help="practice trials first (2afc: with feedback)")
    cr.add_argument("--catch", type=int, default=4, help="attention trials with an obvious fake (noise)")
    cr.add_argument("--min-catch-accuracy", type=float, default=0.75, help="raters below this are excluded")
    cr.add_argument("--max-sessions", type=int, default=10_000, help="raters (sessions) at most; then new ones "
                    "are refused")  # fmt: skip
    cr.add_argument("--db", help="postgresql://USER@HOST:PORT/DB for the answers (default: SQLite in the study)")
    cr.add_argument("--seed", type=int, help="seed of the catch images")
    cr.set_defaults(func=_cmd_create)
    rp = st.add_parser("report", help="the study's numbers: judged-real rates or MOS with intervals, raters")
    rp.add_argument("name")
    rp.add_argument("--dir", required=True, help="the studies folder")
    rp.add_argument("--json", action="store_true", help="print one JSON object")
    rp.add_argument("--csv", help="also write every answer to this CSV file")
    rp.add_argument("--overwrite", action="store_true", help="replace an existing --csv file")
    rp.set_defaults(func=_cmd_report)
