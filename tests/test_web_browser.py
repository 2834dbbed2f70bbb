"""End to end in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium, never `playwright
install`) against `convgen serve` started as a user would. Generates, draws a mask and inpaints (the download equals
the CLI's output for the same photo and mask), stylizes, completes a short study and finds every answer in
`convgen study report --json`. Screenshots go to $CONVGEN_SCREENSHOTS (default: the test's temporary folder)."""

from __future__ import annotations

import email.parser
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500" / "test" / "100039.jpg"
CONVGEN = [sys.executable, "-m", "convgen"]


def _need(what: str, ok: bool) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have {what} for the browser test")
        pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _need("Debian's chromium", Path(CHROMIUM).exists())
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _need("playwright (Python)", False)
    d = tmp_path_factory.mktemp("browser")
    subprocess.run([*CONVGEN, "data", "export", "--split", "val", "--limit", "10", "--out", str(d / "real")],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([*CONVGEN, "sample", "mnist-dcgan", "--n", "10", "--out", str(d / "mnist-dcgan")], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run([*CONVGEN, "study", "create", "pilot", "--real", str(d / "real"), "--fake", str(d / "mnist-dcgan"),
                    "--trials", "4", "--practice", "2", "--catch", "1", "--exposure-ms", "1500", "--dir",
                    str(d / "studies")], check=True, capture_output=True)  # fmt: skip
    subprocess.run([*CONVGEN, "study", "create", "scores", "--kind", "mos", "--real", str(d / "real"), "--fake",
                    str(d / "mnist-dcgan"), "--trials", "4", "--practice", "1", "--catch", "1", "--exposure-ms", "0",
                    "--dir", str(d / "studies")], check=True, capture_output=True)  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*CONVGEN, "serve", "--port", str(port), "--studies", str(d / "studies")],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=1) as r:
                if json.load(r)["status"] == "ok":
                    break
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None:
            pytest.fail(f"convgen serve exited: {proc.stderr.read()}")
    else:
        proc.kill()
        pytest.fail("convgen serve did not answer within 30 s")
    yield {"url": url, "dir": d}
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser, request):
    ctx = browser.new_context(viewport={"width": 1200, "height": 860}, accept_downloads=True)
    pg = ctx.new_page()
    pg.console_errors = []
    pg.on("console", lambda m: pg.console_errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.console_errors.append(str(e)))
    yield pg
    ctx.close()


def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("CONVGEN_SCREENSHOTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_generate_page(server, page, tmp_path):
    page.goto(server["url"] + "/")
    page.wait_for_selector(".models .card")
    assert page.locator(".models .card").count() >= 17
    page.screenshot(path=shots(tmp_path) / "web-models.png")
    page.goto(server["url"] + "/generate")  # opens on the fast (distilled) diffusion model
    page.wait_for_selector("#model option[value='mnist-ddpm-fast']", state="attached")
    assert page.eval_on_selector("#model", "e => e.value") == "mnist-ddpm-fast"
    page.goto(server["url"] + "/generate?model=mnist-cgan")
    page.wait_for_selector("#class option[value='7']", state="attached")
    page.select_option("#class", "7")
    page.fill("#count", "20")
    page.click("#generate")
    page.wait_for_selector("#grid:not(.hidden)")
    assert page.evaluate("document.getElementById('grid').naturalWidth") > 100
    page.click("#interpolate")
    page.wait_for_selector("#frame:not(.hidden)")
    first = page.get_attribute("#frame", "src")
    page.fill("#slider", "6")
    page.dispatch_event("#slider", "input")
    assert page.get_attribute("#frame", "src") != first
    page.screenshot(path=shots(tmp_path) / "web-generate.png", full_page=True)
    assert page.console_errors == []


def _multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    msg = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in msg.get_payload()}  # fmt: skip


def test_inpaint_with_a_drawn_mask_equals_the_cli(server, page, tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.open(PHOTO).convert("RGB").crop((0, 0, 240, 180)).save(photo, quality=92)
    sent: dict[str, bytes] = {}

    def capture(route, request):
        sent.update(_multipart(request.post_data_buffer, request.headers["content-type"]))
        route.continue_()

    page.route("**/api/restore/inpaint", capture)
    page.goto(server["url"] + "/restore?model=inpaint")
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#size:has-text('240')")  # (no wait_for_function: the page's CSP forbids eval)
    page.fill("#brush", "40")
    box = page.locator("#mask").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.4)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.55, steps=15)
    page.mouse.up()
    page.click("#run")
    page.wait_for_selector("#after:not(.hidden)")
    with page.expect_download() as dl:
        page.click("#download")
    result = tmp_path / "web.png"
    dl.value.save_as(result)
    page.screenshot(path=shots(tmp_path) / "web-restore.png", full_page=True)
    assert page.console_errors == []
    (tmp_path / "mask.png").write_bytes(sent["mask"])
    mask = np.asarray(Image.open(tmp_path / "mask.png").convert("L"))
    assert mask.shape == (180, 240) and set(np.unique(mask)) == {0, 255} and (mask == 255).mean() > 0.02
    cli = ["restore", "inpaint", "inpaint", "--input", str(photo), "--mask", str(tmp_path / "mask.png"), "--output",
           str(tmp_path / "cli.png")]  # fmt: skip
    subprocess.run([*CONVGEN, *cli], check=True, capture_output=True)
    assert np.array_equal(np.asarray(Image.open(result)), np.asarray(Image.open(tmp_path / "cli.png")))


def test_style_page(server, page, tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.open(PHOTO).convert("RGB").crop((0, 0, 240, 180)).save(photo)
    page.goto(server["url"] + "/tool/stylize?model=style-starry-night")
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files("#file", str(photo))
    page.click("#run")
    page.wait_for_selector("#after:not(.hidden)")
    assert "style" in page.text_content("#info")
    page.screenshot(path=shots(tmp_path) / "web-style.png", full_page=True)
    assert page.console_errors == []


def test_a_study_completed_in_the_browser_is_in_the_report(server, page, tmp_path):
    page.goto(server["url"] + "/study/pilot")
    page.wait_for_selector("#instructions p:has-text('real')")  # the first trial follows with no click
    answered = 0
    while True:
        page.wait_for_selector("#answers button:not([disabled]), #done:not(.hidden)")
        if page.is_visible("#done"):
            break
        if answered == 2:
            page.screenshot(path=shots(tmp_path) / "web-study.png")
        if answered == 3:  # --exposure-ms 1500: the images go, the buttons stay
            page.wait_for_selector("#images .blank >> nth=1", timeout=5000)
            assert page.locator("#images img").count() == 0
        page.get_by_role("button", name="left" if answered % 2 else "right").click()
        answered += 1
    assert answered == 2 + 4 + 1
    page.goto(server["url"] + "/study/pilot/results")
    page.wait_for_selector("#sources td")
    page.screenshot(path=shots(tmp_path) / "web-results.png", full_page=True)
    assert page.console_errors == []
    out = subprocess.run([*CONVGEN, "study", "report", "pilot", "--dir", str(server["dir"] / "studies"), "--json"],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    report = json.loads(out)
    assert report["answers"] == answered and report["raters"] == 1
    assert set(report["per_source"]) == {"mnist-dcgan"}


def test_a_mos_study_resumes_after_a_reload(server, page, tmp_path):
    """Opinion scores by button and by key; a reload in the middle continues the same session."""
    page.goto(server["url"] + "/study/scores")
    page.wait_for_selector("#instructions p:has-text('1 (bad)')")
    for score in (2, 4):
        page.wait_for_selector("#answers button:not([disabled])")
        page.get_by_role("button", name=f"score {score}").click()
    page.wait_for_selector("#progress:has-text('3 of 6')")
    page.reload()  # the token in localStorage resumes the session: 4 trials left
    answered = 2
    while True:
        page.wait_for_selector("#answers button:not([disabled]), #done:not(.hidden)")
        if page.is_visible("#done"):
            break
        page.keyboard.press(str(1 + answered % 5))
        answered += 1
        page.wait_for_selector(f"#progress:has-text('{answered + 1} of 6')" if answered < 6 else "#done:not(.hidden)")
    assert answered == 1 + 4 + 1
    assert page.console_errors == []
    out = subprocess.run([*CONVGEN, "study", "report", "scores", "--dir", str(server["dir"] / "studies"), "--json"],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    report = json.loads(out)
    assert report["kind"] == "mos" and report["sessions"] == 1 and report["answers"] == 6
    assert set(report["per_source"]) == {"real", "mnist-dcgan"}
