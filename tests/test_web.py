"""The web app through FastAPI's TestClient: every endpoint of the contract, the same pixels as the CLI, and
bad input answered with a 4xx JSON error (never a 500)."""

from __future__ import annotations

import asyncio
import io
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from convgen import zoo  # noqa: E402
from convgen.app.jobs import JobPool, JobTimeout, QueueFull  # noqa: E402
from convgen.app.server import Settings, create_app  # noqa: E402
from convgen.app.study import create_study  # noqa: E402
from convgen.cli import main  # noqa: E402
from convgen.errors import ConvgenError  # noqa: E402

PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500" / "test" / "100007.jpg"


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("web")
    rng = np.random.default_rng(0)
    if PHOTO.is_file():
        photo = Image.open(PHOTO).convert("RGB").crop((0, 0, 96, 80))
    else:  # pragma: no cover - CI has ../shared/data
        photo = Image.fromarray((rng.random((80, 96, 3)) * 255).astype(np.uint8))
    photo.save(d / "photo.jpg", quality=40)
    photo.convert("L").save(d / "gray.png")
    mask = np.zeros((80, 96), np.uint8)
    mask[20:50, 30:70] = 255
    Image.fromarray(mask).save(d / "mask.png")
    for name, source in (("real", "val"), ("fake", None)):
        if source:
            assert main(["data", "export", "--split", "val", "--limit", "12", "--out", str(d / name)]) == 0
        else:
            assert main(["sample", "mnist-dcgan", "--n", "12", "--out", str(d / name)]) == 0
    create_study("pilot", d / "real", [d / "fake"], 4, d / "studies", practice=2, catch=2, exposure_ms=0)
    create_study("scores", d / "real", [d / "fake"], 3, d / "studies", kind="mos", practice=1, catch=1)
    create_study("odd", d / "real", [d / "fake"], 2, d / "studies", practice=0, catch=0)
    return {"dir": d, "photo": d / "photo.jpg", "gray": d / "gray.png", "mask": d / "mask.png",
            "studies": d / "studies"}  # fmt: skip


@pytest.fixture(scope="module")
def client(files) -> TestClient:
    app = create_app(Settings(studies=files["studies"], max_upload_bytes=2 * 2**20, max_pixels=2_000_000))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_health_lists_every_zoo_model(client):
    r = client.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["models"] == zoo.names()


def test_models_describe_what_each_model_serves(client):
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert models["mnist-cgan"]["generate"] and models["mnist-cgan"]["classes"][:2] == ["0", "1"]
    assert models["inpaint"]["verbs"] == ["inpaint"] and not models["inpaint"]["generate"]
    assert models["style-scream"]["tools"] == ["stylize"] and models["codec"]["tools"] == ["codec"]
    assert set(models["mnist-ddpm"]["verbs"]) == {"inpaint", "denoise"} and models["mnist-ddpm"]["generate"]
    # every option a model takes, from its pipeline's declaration: name, type, default, bounds, help
    ddpm = models["mnist-ddpm"]["options"]
    assert [o["name"] for o in ddpm["sample"]] == ["steps", "guidance", "eta"]
    steps = ddpm["sample"][0]
    assert steps["type"] == "int" and steps["lo"] == 1 and steps["hi"] == 1000 and steps["model_default"] == 25
    inpaint = ["seed", "label", "steps", "jump", "resample", "infer_label"]
    assert [o["name"] for o in ddpm["restore"]["inpaint"]] == inpaint
    assert {o["name"]: o.get("model_default") for o in ddpm["restore"]["inpaint"]}["steps"] == 25
    # the distilled student and its teacher name each other; the student's defaults are its own
    assert models["mnist-ddpm"]["fast"] == "mnist-ddpm-fast"
    assert models["mnist-ddpm-fast"]["distilled_from"] == "mnist-ddpm"
    fast = {o["name"]: o for o in models["mnist-ddpm-fast"]["options"]["sample"]}
    assert fast["steps"]["model_default"] == 8 and "fast" not in models["mnist-ddpm-fast"]
    denoise = {o["name"]: o for o in models["denoise-gray-s25"]["options"]["restore"]["denoise"]}
    assert denoise["tile"]["default"] == 512 and denoise["clip"]["type"] == "bool" and denoise["sigma"]["gt"] == 0
    assert denoise["strength"]["hi"] == 4 and denoise["guard"]["default"] is True
    gan_sample = {o["name"]: o for o in models["mnist-dcgan"]["options"]["sample"]}
    assert list(gan_sample) == ["truncation"] and gan_sample["truncation"]["model_default"] == 0
    assert {o["name"]: o for o in models["cifar10-cgan"]["options"]["sample"]}["truncation"]["model_default"] == 1
    assert models["mnist-vae"]["options"]["sample"][0]["choices"]
    assert [o["name"] for o in models["style-scream"]["options"]["stylize"]] == ["preserve_color", "size"]
    assert all(o["help"] for m in models.values() for group in m["options"].values()
               for o in (group if isinstance(group, list) else sum(group.values(), [])))  # fmt: skip


@pytest.mark.parametrize("model,cls", [("mnist-dcgan", None), ("mnist-cgan", "7")])
def test_sample_is_the_cli_grid(client, files, model, cls, tmp_path):
    body = {"model": model, "n": 6, "seed": 3} | ({"class": cls} if cls else {})
    r = client.post("/api/sample", json=body)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    grid = tmp_path / "grid.png"
    argv = ["sample", model, "--n", "6", "--seed", "3", "--out", str(tmp_path / "s"), "--grid", str(grid)]
    assert main(argv + (["--class", cls] if cls else [])) == 0
    assert np.array_equal(pixels(r.content), np.asarray(Image.open(grid)))


def test_interpolate_returns_the_frames(client):
    r = client.post("/api/interpolate", json={"model": "mnist-dcgan", "steps": 5, "seed": 1})
    assert r.status_code == 200
    frames = r.json()["frames"]
    assert len(frames) == 5 and all(f.startswith("data:image/png;base64,") for f in frames)
    assert len(set(frames)) == 5  # the walk moves


@pytest.mark.parametrize(
    "verb,model,source,extra",
    [("denoise", "denoise-gray-s25", "gray", {"sigma": "25"}), ("dejpeg", "dejpeg", "photo", {}),
     ("superres", "superres-x2", "photo", {}), ("inpaint", "inpaint", "photo", {})],
)  # fmt: skip
def test_restore_is_the_cli_output_pixel_for_pixel(client, files, tmp_path, verb, model, source, extra):
    upload = {"image": (files[source].name, files[source].read_bytes())}
    cli = ["restore", verb, model, "--input", str(files[source]), "--output", str(tmp_path / "cli.png")]
    if verb == "inpaint":
        upload["mask"] = ("mask.png", files["mask"].read_bytes())
        cli += ["--mask", str(files["mask"])]
    for k, v in extra.items():
        cli += [f"--{k}", v]
    r = client.post(f"/api/restore/{verb}", data={"model": model, **extra}, files=upload)
    assert r.status_code == 200, r.text
    assert main(cli) == 0
    web, ref = pixels(r.content), np.asarray(Image.open(tmp_path / "cli.png"))
    assert web.dtype == np.uint8 and web.shape == ref.shape
    assert np.array_equal(web, ref)


def test_tools_are_the_cli_outputs(client, files, tmp_path):
    r = client.post("/api/tool/stylize", data={"model": "style-scream", "size": "64"},
                    files={"image": ("photo.jpg", files["photo"].read_bytes())})  # fmt: skip
    assert r.status_code == 200, r.text
    out = tmp_path / "styled.png"
    assert main(["stylize", "style-scream", "--input", str(files["photo"]), "--output", str(out), "--size", "64"]) == 0
    assert np.array_equal(pixels(r.content), np.asarray(Image.open(out)))
    r = client.post("/api/tool/codec", data={"model": "codec", "quality": "2"},
                    files={"image": ("photo.jpg", files["photo"].read_bytes())})  # fmt: skip
    assert r.status_code == 200, r.text
    assert int(r.headers["x-convgen-bytes"]) > 0 and float(r.headers["x-convgen-bpp"]) > 0
    assert main(["compress", "codec", "--input", str(files["photo"]), "--output", str(tmp_path / "c"),
                 "--quality", "2"]) == 0  # fmt: skip
    assert main(["decompress", "--input", str(tmp_path / "c"), "--output", str(tmp_path / "d")]) == 0
    assert np.array_equal(pixels(r.content), np.asarray(Image.open(tmp_path / "d" / "photo.png")))
    assert int(r.headers["x-convgen-bytes"]) == (tmp_path / "c" / "photo.cvgc").stat().st_size


def _restore(client, files, model="denoise-gray-s25", verb="denoise", image=None, mask=None, **data):
    upload = {"image": image if image is not None else ("gray.png", files["gray"].read_bytes())}
    if mask is not None:
        upload["mask"] = mask
    return client.post(f"/api/restore/{verb}", data={"model": model, **data}, files=upload)


def test_bad_uploads_are_one_line_4xx_errors(client, files):
    cases = {
        "not an image": _restore(client, files, image=("x.png", b"this is not an image")),
        "truncated or corrupt": _restore(client, files, image=("g.png", files["gray"].read_bytes()[:200])),
        "colour (RGB) image": _restore(client, files, image=("photo.jpg", files["photo"].read_bytes())),
        "mask is 10x10": _restore(
            client,
            files,
            "inpaint",
            "inpaint",
            ("photo.jpg", files["photo"].read_bytes()),
            ("m.png", png(np.full((10, 10), 255, np.uint8))),
        ),  # fmt: skip
        "needs a mask": _restore(client, files, "inpaint", "inpaint", ("photo.jpg", files["photo"].read_bytes())),
        "not a number": _restore(client, files, sigma="lots"),
        "over the limit": _restore(client, files, image=("big.png", png(np.zeros((1500, 1500), np.uint8)))),
        "upload limit": _restore(client, files, image=("huge.png", b"\0" * (3 * 2**20))),
        "not a dejpeg model": _restore(client, files, verb="dejpeg"),
        "unknown model": _restore(client, files, model="../../etc/passwd"),
    }
    for expected, r in cases.items():
        assert 400 <= r.status_code < 500, (expected, r.status_code, r.text)
        message = r.json()["error"]
        assert expected in message and "\n" not in message, (expected, message)
        assert "convgen-web-" not in message and "/tmp" not in message  # no server paths leak
    assert cases["unknown model"].status_code == 404
    assert cases["upload limit"].status_code == 413
    # a JPEG truncated after its header is found when decoded, before anything is returned
    r = _restore(client, files, model="dejpeg", verb="dejpeg", image=("p.jpg", files["photo"].read_bytes()[:600]))
    assert r.status_code == 400 and "truncated" in r.json()["error"]


def test_bad_json_requests(client):
    for body, expected in (({"model": "mnist-dcgan", "n": 0}, "n 0"), ({"model": "mnist-dcgan", "n": "4"}, "n must"),
                           ({"model": "inpaint", "n": 2}, "not a generator"), ({"n": 2}, "unknown model"),
                           ({"model": "mnist-dcgan", "n": 2, "class": "3"}, "unconditional"),
                           ({"model": "mnist-cgan", "n": 2, "class": "cat"}, "unknown class")):  # fmt: skip
        r = client.post("/api/sample", json=body)
        assert 400 <= r.status_code < 500 and expected in r.json()["error"], (body, r.text)
    r = client.post("/api/sample", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = client.post("/api/sample", json=[1, 2])
    assert r.status_code == 400


ODD = [None, True, False, "", "x", "../etc", -1, 0, 2**70, 1e308, -0.5, [], [1, 2], {}, {"a": 1}]


@pytest.mark.parametrize(
    "url,base",
    [("/api/sample", {"model": "mnist-cgan", "n": 2}), ("/api/sample", {"model": "mnist-ddpm", "n": 1, "steps": 2}),
     ("/api/sample", {"model": "mnist-vae", "n": 2}), ("/api/interpolate", {"model": "mnist-cgan", "steps": 3}),
     ("/api/study/odd/session", {}), ("/api/study/odd/answer", {"trial": "x", "choice": "left", "ms": 1})],
)  # fmt: skip
def test_odd_json_values_never_give_a_500(client, url, base):
    keys = ["model", "n", "seed", "class", "classes", "mode", "steps", "guidance", "eta", "sampler", "token",
            "trial", "choice", "ms", "score"]  # fmt: skip
    for key in keys:
        for value in ODD:
            r = client.post(url, json={**base, key: value})
            assert r.status_code < 500, (url, key, value, r.status_code, r.text)
            if r.status_code >= 400:
                assert r.json()["error"], (url, key, value)


def test_names_reach_nothing_outside_what_the_server_was_given(client):
    for url in ("/static/../server.py", "/static/..%2Fserver.py", "/study/..%2F..%2Fetc",
                "/study/pilot/image/..%2Fstudy.json", "/study/pilot/image/0123456789abcdef", "/tool/..%2Fserver",
                "/api/study/..%2Fpilot"):  # fmt: skip
        r = client.get(url)
        assert r.status_code == 404, url
        assert "error" in r.json()
    assert client.post("/api/tool/nope", data={"model": "codec"}).status_code == 404


def test_pages_are_local_files_with_a_strict_policy(client):
    for url in ("/", "/generate", "/restore", "/tool/stylize", "/tool/codec", "/study/pilot", "/study/pilot/results"):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), url
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert "http://" not in r.text and "https://" not in r.text  # no CDN, no telemetry
        for script in __import__("re").findall(r'src="(/static/[^"]+)"', r.text):
            assert client.get(script).status_code == 200, script
        assert "<script>" not in r.text  # the policy allows no inline script


def test_study_session_answers_and_report(client):
    about = client.get("/api/study/pilot").json()
    assert about["kind"] == "2afc" and about["trials"] == 4
    s = client.post("/api/study/pilot/session").json()
    assert len(s["trials"]) == 2 + 4 + 2 and all({"id", "left", "right"} <= set(t) for t in s["trials"])
    assert [t["practice"] for t in s["trials"]] == [True, True] + [False] * 6
    assert client.get(s["trials"][0]["left"]).headers["content-type"] == "image/png"
    first = client.post("/api/study/pilot/answer", json={"token": s["token"], "trial": s["trials"][0]["id"],
                                                         "choice": "left", "ms": 812})  # fmt: skip
    assert first.status_code == 200 and "correct" in first.json()  # practice feedback
    for t in s["trials"][1:]:
        r = client.post("/api/study/pilot/answer", json={"token": s["token"], "trial": t["id"], "choice": "right",
                                                         "ms": 640.5})  # fmt: skip
        assert r.status_code == 200 and ("correct" in r.json()) == t["practice"]
    again = client.post("/api/study/pilot/answer", json={"token": s["token"], "trial": s["trials"][3]["id"],
                                                         "choice": "left", "ms": 10})  # fmt: skip
    assert again.status_code == 409
    other = client.post("/api/study/pilot/session").json()
    foreign = client.post("/api/study/pilot/answer", json={"token": other["token"], "trial": s["trials"][3]["id"],
                                                           "choice": "left", "ms": 10})  # fmt: skip
    assert foreign.status_code == 403
    for bad in ({"token": "forged", "trial": other["trials"][0]["id"], "choice": "left", "ms": 1},
                {"token": other["token"], "trial": other["trials"][0]["id"], "choice": "up", "ms": 1},
                {"token": other["token"], "trial": other["trials"][0]["id"], "choice": "left", "ms": -5},
                {"token": other["token"], "trial": other["trials"][0]["id"], "choice": "left"}):  # fmt: skip
        r = client.post("/api/study/pilot/answer", json=bad)
        assert 400 <= r.status_code < 500 and r.json()["error"], bad
    resumed = client.post("/api/study/pilot/session", json={"token": s["token"]}).json()
    assert resumed["token"] == s["token"] and len(resumed["answered"]) == 8
    report = client.get("/api/study/pilot/report").json()
    assert report["answers"] == 8 and report["raters"] == 1 and report["sessions"] == 2
    assert report["answers_by_phase"] == {"practice": 2, "main": 4, "catch": 2}
    assert set(report["per_source"]) == {"fake"}


def test_a_full_study_refuses_new_sessions(files, tmp_path):
    create_study("tiny", files["dir"] / "real", [files["dir"] / "fake"], 2, tmp_path / "st", max_sessions=2)
    with TestClient(create_app(Settings(studies=tmp_path / "st"))) as c:
        first = c.post("/api/study/tiny/session").json()
        assert c.post("/api/study/tiny/session").status_code == 200
        r = c.post("/api/study/tiny/session")
        assert r.status_code == 403 and "reached its 2 sessions" in r.json()["error"]
        assert c.post("/api/study/tiny/session", json={"token": first["token"]}).status_code == 200  # resuming is fine


def test_mos_study_takes_scores(client):
    s = client.post("/api/study/scores/session").json()
    assert s["kind"] == "mos" and all("image" in t for t in s["trials"])
    for i, t in enumerate(s["trials"]):
        r = client.post("/api/study/scores/answer", json={"token": s["token"], "trial": t["id"], "choice": 1 + i % 5,
                                                          "ms": 300})  # fmt: skip
        assert r.status_code == 200
    bad = client.post("/api/study/scores/answer", json={"token": s["token"], "trial": s["trials"][0]["id"],
                                                        "choice": 6, "ms": 1})  # fmt: skip
    assert bad.status_code in (400, 409)
    report = client.get("/api/study/scores/report").json()
    assert set(report["per_source"]) == {"real", "fake"} and report["answers"] == len(s["trials"])


def test_other_sites_are_refused(files):
    """DNS rebinding (a foreign Host) and cross-site posts (a foreign Origin) get nothing."""
    app = create_app(Settings(studies=files["studies"], allowed_hosts=("127.0.0.1", "localhost", "::1")))
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/health").status_code == 200
        assert c.get("/api/health", headers={"host": "evil.example:8000"}).status_code == 400
        assert c.get("/api/health", headers={"host": "[::1]:8000"}).status_code == 200
        body = {"model": "mnist-dcgan", "n": 1}
        assert c.post("/api/sample", json=body, headers={"origin": "http://127.0.0.1:8000"}).status_code == 200
        r = c.post("/api/sample", json=body, headers={"origin": "http://evil.example"})
        assert r.status_code == 403 and "cross-origin" in r.json()["error"]


def test_results_only_for_this_machine(files):
    app = create_app(Settings(studies=files["studies"]))
    with TestClient(app, client=("10.1.2.3", 4000)) as remote:
        assert remote.get("/api/study/pilot/report").status_code == 403
        assert remote.get("/study/pilot/results").status_code == 403
        assert remote.post("/api/study/pilot/session").status_code == 200  # raters may come from the network
    with TestClient(app, client=("127.0.0.1", 4000)) as local:
        assert local.get("/api/study/pilot/report").status_code == 200


def test_unknown_study_and_no_studies_folder(client):
    assert client.get("/study/nope").status_code == 404
    assert client.post("/api/study/nope/session").status_code == 404
    app = create_app(Settings())
    with TestClient(app) as c:
        r = c.post("/api/study/pilot/session")
        assert r.status_code == 404 and "--studies" in r.json()["error"]


def test_models_dirs_are_served_by_name(tmp_path):
    shutil.copytree(zoo.model_dir("mnist-dcgan"), tmp_path / "models" / "my-gan")
    app = create_app(Settings(models=[tmp_path / "models"]))
    with TestClient(app) as c:
        assert "my-gan" in c.get("/api/health").json()["models"]
        assert c.post("/api/sample", json={"model": "my-gan", "n": 2}).status_code == 200
        assert c.post("/api/sample", json={"model": str(tmp_path / "models" / "my-gan"), "n": 2}).status_code == 404
    shutil.copytree(zoo.model_dir("mnist-dcgan"), tmp_path / "dup" / "mnist-dcgan")
    with pytest.raises(ConvgenError, match="already served"):
        create_app(Settings(models=[tmp_path / "dup"]))


def test_serve_refuses_bad_settings(tmp_path, capsys):
    assert main(["serve", "--studies", str(tmp_path / "missing")]) == 2
    assert "--studies directory not found" in capsys.readouterr().err
    assert main(["serve", "--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err
    assert main(["serve", "--models", str(tmp_path / "none")]) == 2
    assert "--models directory not found" in capsys.readouterr().err


def test_a_chunked_upload_over_the_limit_is_413(client, files):
    def chunks():
        for _ in range(40):
            yield b"\0" * 100_000  # 4 MB in chunks, no Content-Length

    headers = {"content-type": "multipart/form-data; boundary=x"}
    r = client.post("/api/restore/denoise", content=chunks(), headers=headers)
    assert r.status_code == 413 and "upload limit" in r.json()["error"]


def test_a_stalled_upload_is_408():
    from convgen.app.server import BodyLimit

    sent: list[dict] = []

    async def app(scope, receive, send):
        await receive()
        await receive()  # never comes

    async def scenario():
        chunks = iter([{"type": "http.request", "body": b"x", "more_body": True}])

        async def receive():
            try:
                return next(chunks)
            except StopIteration:
                await asyncio.sleep(10)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "headers": [], "method": "POST", "path": "/"}
        await BodyLimit(app, 1000, 1000, read_timeout=0.1)(scope, receive, send)

    asyncio.run(scenario())
    assert sent[0]["status"] == 408 and b"stopped arriving" in sent[1]["body"]


def test_answers_over_http_in_postgresql(postgres, files, tmp_path):
    create_study("pg", files["dir"] / "real", [files["dir"] / "fake"], 3, tmp_path / "st", practice=1, catch=1,
                 database=postgres)  # fmt: skip
    with TestClient(create_app(Settings(studies=tmp_path / "st"))) as c:
        s = c.post("/api/study/pg/session").json()
        for t in s["trials"]:
            assert c.post("/api/study/pg/answer", json={"token": s["token"], "trial": t["id"], "choice": "left",
                                                        "ms": 250}).status_code == 200  # fmt: skip
        repeat = {"token": s["token"], "trial": s["trials"][0]["id"], "choice": "right", "ms": 1}
        assert c.post("/api/study/pg/answer", json=repeat).status_code == 409
        report = c.get("/api/study/pg/report").json()
    assert report["answers"] == 5 and report["raters"] == 1
    assert not (tmp_path / "st" / "pg" / "answers.sqlite").exists()  # the answers went to PostgreSQL


def test_job_pool_refuses_when_full_and_times_out():
    async def scenario():
        pool = JobPool(workers=1, queue=1, timeout_s=0.3)
        gate = threading.Event()
        running = [asyncio.ensure_future(pool.run(gate.wait, 5)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await pool.run(lambda: 1)
        with pytest.raises(JobTimeout):
            await running[0]
        assert pool.pending == 2  # a timed-out job keeps its slot until its thread is done
        gate.set()
        for _ in range(500):  # both threads end (up to 5 s on a loaded machine)
            if pool.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.pending == 0
        assert await pool.run(lambda: 42) == 42
        for job in running[1:]:
            job.cancel()
        pool.close()
        return pool.stats()

    stats = asyncio.run(scenario())
    assert stats["refused"] == 1 and stats["timed_out"] >= 1


def test_busy_server_answers_429(files, monkeypatch):
    app = create_app(Settings(workers=1, queue=0))
    gate = threading.Event()
    from convgen.app import tools

    monkeypatch.setattr(tools, "sample_grid", lambda *a: gate.wait(10) and b"")
    with TestClient(app, raise_server_exceptions=False) as c:
        done = []
        t = threading.Thread(target=lambda: done.append(c.post("/api/sample", json={"model": "mnist-dcgan", "n": 1})))
        t.start()
        for _ in range(500):  # the first request holds the only worker (up to 10 s on a loaded machine)
            if app.state.pool.pending:
                break
            threading.Event().wait(0.02)
        assert app.state.pool.pending == 1
        r = c.post("/api/sample", json={"model": "mnist-dcgan", "n": 1})
        assert r.status_code == 429 and "busy" in r.json()["error"]
        gate.set()
        t.join()
