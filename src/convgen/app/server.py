"""The web app: FastAPI routes over the pipeline API, the study runner, and the local pages.

The HTTP contract is ../shared/BENCHMARKS.md ("Web app and human study"). User errors are 4xx with a JSON body
``{"error": "one line"}`` (unknown model or study 404, a foreign token or trial 403, a repeated answer 409, a body
over the upload limit 413, a full queue 429, a job over the time limit 503); nothing a client sends gives a 500.
Pages and scripts are files of this package (no CDN, no telemetry), served with a content security policy that
allows only this origin. Study results are only shown to clients on this machine (loopback).
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import traceback
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from convgen import __version__
from convgen.app import tools
from convgen.app.catalog import Catalog, UnknownModel
from convgen.app.jobs import JobPool, JobTimeout, QueueFull
from convgen.app.study import DuplicateAnswer, ForeignTrial, Study, StudyFull, StudyNotFound, UnknownRater, check_name
from convgen.errors import ConvgenError
from convgen.pipelines import RestorePipeline, Sampler

STATIC = ("app.css", "app.js", "index.js", "generate.js", "restore.js", "tool.js", "study.js", "results.js")
#: the request fields of the endpoints themselves; any other field is one of the model's declared options
SAMPLE_FIELDS = ("model", "n", "seed", "class")
INTERPOLATE_FIELDS = ("model", "steps", "seed", "class", "classes", "mode")
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")  # fmt: skip


@dataclass
class Settings:
    """Limits of one server (``convgen serve`` flags)."""

    models: list[Path] = field(default_factory=list)
    studies: Path | None = None
    workers: int = 2
    queue: int = 32
    timeout_s: float = 120.0
    read_timeout_s: float = 30.0
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_samples: int = 100  # what `convgen sample --grid` shows at most
    device: str = "auto"
    #: Host header names answered (None: any); ``convgen serve`` on a loopback address sets the loopback names
    allowed_hosts: tuple[str, ...] | None = None


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before it is read into memory, and a client
    that stops sending its body for ``read_timeout`` seconds gets 408 (a slow upload cannot hold a connection)."""

    def __init__(self, app, limit: int, shown: int, read_timeout: float = 30.0) -> None:
        self.app, self.limit, self.shown, self.read_timeout = app, limit, shown, read_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _too_large(self.shown)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except asyncio.TimeoutError:
                raise BodyTimeout(f"the request body stopped arriving for {self.read_timeout:g} s") from None
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(_too_large_message(self.shown))
            return message

        try:
            await self.app(scope, counted, send)
        except (BodyTooLarge, BodyTimeout) as e:  # raised where no route turned it into a response
            await _error(STATUS[type(e)], str(e))(scope, receive, send)


class BodyTooLarge(ConvgenError):
    """The request body is over the upload limit (413)."""


class BodyTimeout(ConvgenError):
    """The client stopped sending its request body (408)."""


STATUS = {UnknownModel: 404, StudyNotFound: 404, UnknownRater: 403, ForeignTrial: 403, StudyFull: 403,
          DuplicateAnswer: 409,
          QueueFull: 429, JobTimeout: 503, BodyTooLarge: 413, BodyTimeout: 408}  # fmt: skip


def _too_large_message(limit: int) -> str:
    return f"the request is larger than the server's upload limit of {limit / 2**20:g} MiB"


def _too_large(limit: int) -> JSONResponse:
    return _error(413, _too_large_message(limit))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def is_loopback(host: str) -> bool:
    """An address (or ``localhost``) of this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _is_local(request: Request) -> bool:
    host = request.client.host if request.client else ""
    return is_loopback(host) or host == "testclient"


def _static(name: str) -> Path:
    return Path(str(resources.files("convgen.app") / "static" / name))


def _page(name: str) -> HTMLResponse:
    return HTMLResponse(_static(f"{name}.html").read_text(encoding="utf-8"))


def _tool(name: str) -> tools.Tool:
    if name not in tools.TOOLS:
        raise UnknownModel(f"no tool {_short(name)!r} (tools: {', '.join(tools.TOOLS)})")
    return tools.TOOLS[name]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings`` (models loaded now; studies opened per request from ``settings.studies``)."""
    s = settings or Settings()
    catalog = Catalog(s.models, device=s.device)
    pool = JobPool(s.workers, s.queue, s.timeout_s)
    app = FastAPI(title="convgen", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.catalog, app.state.pool = s, catalog, pool
    app.state.studies = {}
    _errors(app)
    _headers(app, s.allowed_hosts)
    _pages(app)
    _model_routes(app, s, catalog, pool)
    _study_routes(app, s)
    app.add_middleware(BodyLimit, limit=s.max_upload_bytes + 64 * 1024, shown=s.max_upload_bytes,  # + form overhead
                       read_timeout=s.read_timeout_s)  # fmt: skip
    app.router.on_shutdown.append(pool.close)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ConvgenError)
    async def user_error(request: Request, e: ConvgenError):
        return _error(next((v for k, v in STATUS.items() if isinstance(e, k)), 400), str(e))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return _error(e.status_code, e.detail if isinstance(e.detail, str) else "request refused")

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception):
        if isinstance(e, RuntimeError | MemoryError) and "memory" in str(e):
            return _error(503, "the server ran out of memory for this request; try a smaller image")
        traceback.print_exception(e, file=sys.stderr)
        return _error(500, "internal error in convgen (the traceback is in the server's log)")


def _refusal(request: Request, allowed_hosts: tuple[str, ...] | None) -> JSONResponse | None:
    """Requests a browser makes for another site: a Host this server is not (DNS rebinding onto 127.0.0.1), or a
    POST whose Origin is another site (cross-site form posts need no CORS preflight)."""
    host = request.headers.get("host", "")
    if allowed_hosts is not None and host.rsplit(":", 1)[0].strip("[]").lower() not in allowed_hosts:
        return _error(400, f"this server does not answer for host {host!r}")
    origin = request.headers.get("origin")
    if request.method == "POST" and origin not in (None, "null") and origin.split("://", 1)[-1] != host:
        return _error(403, "cross-origin request refused (use the pages of this server)")
    return None


def _headers(app: FastAPI, allowed_hosts: tuple[str, ...] | None) -> None:
    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = _refusal(request, allowed_hosts) or await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response


def _pages(app: FastAPI) -> None:
    app.get("/", include_in_schema=False)(lambda: _page("index"))
    app.get("/generate", include_in_schema=False)(lambda: _page("generate"))
    app.get("/restore", include_in_schema=False)(lambda: _page("restore"))

    @app.get("/tool/{name}", include_in_schema=False)
    def tool_page(name: str):
        _tool(name)
        return _page("tool")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC:
            return _error(404, f"no file {_short(name)!r}")
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        return FileResponse(_static(name), media_type=f"{kind}; charset=utf-8")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ConvgenError("the request body must be a JSON object") from None
    except RecursionError:
        raise ConvgenError("the request body is JSON nested too deeply") from None
    except Exception as e:  # the body is read in a task group: our own error (408, 413) arrives inside a group
        raise _convgen_inside(e) or e from None
    if not isinstance(body, dict):
        raise ConvgenError("the request body must be a JSON object")
    return body


def _class(value: Any) -> str | int | None:
    """A class given by name or index (the pipeline checks it exists)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConvgenError(f"`class` must be a class name or index, got {value!r}")
    return value


def _rest(body: dict, fields: tuple[str, ...]) -> dict[str, Any]:
    """The fields of a JSON body that are not the endpoint's own: the model's options (its pipeline checks them)."""
    return {k: v for k, v in body.items() if k not in fields and v is not None}


def _int(body: dict, key: str, default: Any, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConvgenError(f"`{key}` must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConvgenError(f"`{key}` {value}: must be in {lo}..{hi}")
    return value


async def _form(request: Request, files: tuple[str, ...]) -> tuple[dict[str, str], dict[str, tools.Upload]]:
    """A multipart form: its text fields and its uploads (``files`` names the file fields it may have)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ConvgenError("send the image as multipart/form-data (fields: model, image, ...)")
    try:
        form = await request.form(max_files=len(files), max_fields=32)
    except Exception as e:  # the multipart parser runs in a task group: our error arrives inside a group
        raise _convgen_inside(e) or e from None
    text, uploads = {}, {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, str):
                text[key] = value
            elif key in files:
                uploads[key] = tools.Upload(value.filename or key, await value.read())
            else:
                raise ConvgenError(f"unexpected file field {_short(key)!r}")
    finally:
        await form.close()  # the spooled temporary files of the uploads
    return text, uploads


def _short(text: Any, limit: int = 60) -> str:
    """A client's string as it may appear in a message: at most ``limit`` characters."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _convgen_inside(e: BaseException) -> ConvgenError | None:
    """The first ConvgenError in ``e`` or the exception group it is."""
    if isinstance(e, ConvgenError):
        return e
    for inner in getattr(e, "exceptions", ()):
        found = _convgen_inside(inner)
        if found is not None:
            return found
    return None


def _model_routes(app: FastAPI, s: Settings, catalog: Catalog, pool: JobPool) -> None:
    @app.get("/api/health")
    def health():
        return {"status": "ok", "version": __version__, "models": catalog.names(), "jobs": pool.stats()}

    @app.get("/api/models")
    def models():
        return {"models": [catalog.describe(n, tools.TOOLS) for n in catalog.names()],
                "tools": [t.describe() for t in tools.TOOLS.values()],
                "limits": {"max_samples": s.max_samples, "max_upload_bytes": s.max_upload_bytes,
                           "max_pixels": s.max_pixels}}  # fmt: skip

    @app.post("/api/sample")
    async def sample(request: Request):
        body = await _json(request)
        pipe = catalog.get(body.get("model"), Sampler, "a generator")
        n = _int(body, "n", 16, 1, s.max_samples)
        seed = _int(body, "seed", 0, -(2**63), 2**63 - 1)
        cls = _class(body.get("class"))
        options = _rest(body, SAMPLE_FIELDS)
        pipe.checked_sample_options(options)  # a bad option is a 4xx before the job is queued
        png = await pool.run(tools.sample_grid, pipe, n, seed, None if cls is None else [cls], options)
        return Response(png, media_type="image/png")

    @app.post("/api/interpolate")
    async def interpolate(request: Request):
        body = await _json(request)
        pipe = catalog.get(body.get("model"), Sampler, "a generator")
        steps = _int(body, "steps", 10, 2, 32)
        seed = _int(body, "seed", 0, -(2**63), 2**63 - 1)
        label = _class(body.get("class"))
        classes = body.get("classes")
        if classes is not None and (not isinstance(classes, list) or len(classes) != 2):
            raise ConvgenError("`classes` must be a list of two classes [from, to]")
        classes = tuple(_class(c) for c in classes) if classes else None
        if classes is not None and None in classes:
            raise ConvgenError("`classes` must name two classes [from, to]")
        mode = body.get("mode", "slerp")
        if mode not in ("slerp", "lerp"):
            raise ConvgenError(f"`mode` must be slerp or lerp, got {mode!r}")
        options = _rest(body, INTERPOLATE_FIELDS)
        pipe.checked(pipe.walk_options, options, "interpolation")
        frames = await pool.run(tools.interpolation_frames, pipe, steps, seed, mode, label, classes, options)
        return {"frames": frames}

    @app.post("/api/restore/{verb}")
    async def restore(verb: str, request: Request):
        text, uploads = await _form(request, ("image", "mask"))
        pipe = catalog.get(text.get("model"), RestorePipeline, "a restoration model")
        pipe.check_verb(verb, text["model"])
        if "image" not in uploads:
            raise ConvgenError("no `image` file in the form")
        options = tools.parse_form(pipe.restore_options.get(verb), text)
        pipe.check_options(verb, uploads.get("mask"), **options)
        png = await pool.run(tools.restore_upload, pipe, verb, uploads["image"], uploads.get("mask"), options,
                             s.max_pixels)  # fmt: skip
        return Response(png, media_type="image/png")

    @app.post("/api/tool/{name}")
    async def tool(name: str, request: Request):
        t = _tool(name)
        text, uploads = await _form(request, ("image",))
        pipe = catalog.get(text.get("model"), t.pipeline, f"a model for {t.title.lower()}")
        if "image" not in uploads:
            raise ConvgenError("no `image` file in the form")
        png, info = await pool.run(tools.run_tool, t, pipe, uploads["image"], text, s.max_pixels)
        return Response(png, media_type="image/png", headers={f"X-Convgen-{k}": str(v) for k, v in info.items()})


def _study_routes(app: FastAPI, s: Settings) -> None:
    def study(name: str) -> Study:
        check_name(name)
        if s.studies is None:
            raise StudyNotFound("this server runs no studies (start it with --studies DIR)")
        if name not in app.state.studies:
            app.state.studies[name] = Study.open(s.studies, name)
        return app.state.studies[name]

    @app.get("/study/{name}", include_in_schema=False)
    def rater_page(name: str):
        study(name)
        return _page("study")

    @app.get("/study/{name}/image/{image_id}", include_in_schema=False)
    def image(name: str, image_id: str):
        return FileResponse(study(name).image_path(image_id), media_type="image/png",
                            headers={"Cache-Control": "private, max-age=3600"})  # fmt: skip

    @app.get("/api/study/{name}")
    def about(name: str):
        d = study(name).design
        return {k: d[k] for k in ("name", "kind", "exposure_ms", "trials", "practice", "catch")}

    @app.post("/api/study/{name}/session")
    async def session(name: str, request: Request):
        st = study(name)
        raw = await request.body()
        body = await _json(request) if raw.strip() else {}
        if body.get("token"):
            return await run_in_threadpool(st.resume, body["token"])
        return await run_in_threadpool(st.new_session)

    @app.post("/api/study/{name}/answer")
    async def answer(name: str, request: Request):
        st = study(name)
        body = await _json(request)
        choice = body.get("choice", body.get("score"))
        return await run_in_threadpool(st.answer, body.get("token"), body.get("trial"), choice, body.get("ms"))

    @app.get("/study/{name}/results", include_in_schema=False)
    def results_page(name: str, request: Request):
        study(name)
        if not _is_local(request):
            return _error(403, "study results are only shown on the machine that runs the server")
        return _page("results")

    @app.get("/api/study/{name}/report")
    def report(name: str, request: Request):
        from convgen.app.study import report as make_report

        st = study(name)
        if not _is_local(request):
            return _error(403, "study results are only shown on the machine that runs the server")
        return make_report(st)
