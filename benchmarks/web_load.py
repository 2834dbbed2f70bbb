"""Load on the web app: N concurrent clients for M seconds on loopback against ``convgen serve`` (a separate
process, started as a user would), each looping over a mix of sampling (``POST /api/sample``, mnist-dcgan, 4
images), restoring (``POST /api/restore/denoise``, denoise-gray-s25 on a 64 x 64 photo crop) and answering a study
(``POST /api/study/NAME/answer``, a new session when a rater's trials run out).

Reports requests/s, p50/p95 latency per kind, status counts, server errors (5xx or a dropped connection), requests
refused with 429 (queue full: the designed answer to overload, counted apart), and the answers sent, acknowledged
and found in the study report afterwards (``lost`` = acknowledged but not stored). Beside it, the baseline: the same
pipeline calls made directly in this process, one at a time, with no HTTP; ``work_vs_direct`` = the sum over kinds
of (served per second / direct calls per second): the model work the server delivered under the mix, in units of
what direct sequential calls do (1.0 = no cost for HTTP, JSON, uploads and the pool; answers not counted).

    python benchmarks/web_load.py --clients 32 --seconds 30 --out docs/web_load.json
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
from _common import print_report
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "bsds500" / "test" / "100007.jpg"
MIX = (("answer", 0.6), ("sample", 0.25), ("restore", 0.15))
CONVGEN = [sys.executable, "-m", "convgen"]


def _photo() -> bytes:
    img = Image.open(PHOTO).convert("L").crop((0, 0, 64, 64)) if PHOTO.is_file() else Image.new("L", (64, 64), 128)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _multipart(fields: dict[str, str], name: str, data: bytes) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    parts.append(f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                 "Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")  # fmt: skip
    return b"".join(parts) + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


class Client(threading.Thread):
    def __init__(self, port: int, study: str, until: float, photo: bytes, seed: int) -> None:
        super().__init__(daemon=True)
        self.port, self.study, self.until, self.photo = port, study, until, photo
        self.rng = random.Random(seed)
        self.log: list[tuple[str, int, float]] = []  # kind, status (0 = connection error), seconds
        self.sent = self.acked = 0
        self.trials: list[str] = []
        self.token = ""

    def request(self, method: str, path: str, body: bytes, ctype: str) -> tuple[int, bytes]:
        try:
            self.conn.request(method, path, body=body, headers={"Content-Type": ctype})
            r = self.conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            return 0, b""

    def one(self, kind: str) -> int:
        if kind == "sample":
            body = json.dumps({"model": "mnist-dcgan", "n": 4, "seed": self.rng.randrange(10**6)}).encode()
            return self.request("POST", "/api/sample", body, "application/json")[0]
        if kind == "restore":
            body, ctype = _multipart({"model": "denoise-gray-s25", "sigma": "25"}, "crop.png", self.photo)
            return self.request("POST", "/api/restore/denoise", body, ctype)[0]
        if not self.trials:
            status, data = self.request("POST", f"/api/study/{self.study}/session", b"{}", "application/json")
            if status != 200:
                return status
            s = json.loads(data)
            self.token, self.trials = s["token"], [t["id"] for t in s["trials"]]
        choice = self.rng.choice(["left", "right"])
        body = json.dumps({"token": self.token, "trial": self.trials.pop(), "choice": choice,
                           "ms": self.rng.randrange(200, 2000)}).encode()  # fmt: skip
        self.sent += 1
        status = self.request("POST", f"/api/study/{self.study}/answer", body, "application/json")[0]
        self.acked += status == 200
        return status

    def run(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        kinds, weights = zip(*MIX, strict=True)
        while time.perf_counter() < self.until:
            kind = self.rng.choices(kinds, weights)[0]
            t0 = time.perf_counter()
            status = self.one(kind)
            self.log.append((kind, status, time.perf_counter() - t0))
        self.conn.close()


def _summary(log: list[tuple[str, int, float]], seconds: float) -> dict:
    by_kind: dict[str, dict] = {}
    for kind in sorted({k for k, _, _ in log}):
        rows = [(s, t) for k, s, t in log if k == kind]
        ok = [t for s, t in rows if s == 200]
        statuses: dict[str, int] = defaultdict(int)
        for s, _ in rows:
            statuses[str(s)] += 1
        by_kind[kind] = {"requests": len(rows), "ok_per_s": round(len(ok) / seconds, 2),
                         "p50_ms": round(1000 * float(np.percentile(ok, 50)), 1) if ok else None,
                         "p95_ms": round(1000 * float(np.percentile(ok, 95)), 1) if ok else None,
                         "status": dict(statuses)}  # fmt: skip
    return by_kind


def direct_baseline(photo: bytes, seconds: float) -> dict:
    """The same calls without HTTP, one at a time in this process (before the server starts)."""
    import convgen
    from convgen.app import tools

    gan, den = convgen.load("mnist-dcgan", device="cpu"), convgen.load("denoise-gray-s25", device="cpu")
    calls = {"sample": lambda i: tools.sample_grid(gan, 4, i, None, {}),
             "restore": lambda i: tools.restore_upload(den, "denoise", tools.Upload("crop.png", photo), None,
                                                       {"sigma": 25.0, "tile": 512, "overlap": 64}, 10**8)}  # fmt: skip
    out = {}
    for kind, call in calls.items():
        call(0)
        times, t_end = [], time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            call(len(times))
            times.append(time.perf_counter() - t0)
        out[kind] = {"per_s": round(len(times) / seconds, 2), "p50_ms": round(1000 * float(np.median(times)), 1)}
    return out


def _serve(studies: Path, workers: int, queue: int) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*CONVGEN, "serve", "--port", str(port), "--studies", str(studies), "--workers",
                             str(workers), "--queue", str(queue)], stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/api/health")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("convgen serve did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2, help="convgen serve --workers")
    ap.add_argument("--queue", type=int, default=32, help="convgen serve --queue")
    ap.add_argument("--baseline-seconds", type=float, default=5.0)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    photo = _photo()
    baseline = direct_baseline(photo, args.baseline_seconds)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([*CONVGEN, "data", "export", "--split", "val", "--limit", "20", "--out", str(tmp / "real")],
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run([*CONVGEN, "sample", "mnist-dcgan", "--n", "20", "--out", str(tmp / "fake")], check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run([*CONVGEN, "study", "create", "load", "--real", str(tmp / "real"), "--fake", str(tmp / "fake"),
                        "--trials", "40", "--dir", str(tmp / "st")], check=True, capture_output=True)  # fmt: skip
        proc, port = _serve(tmp / "st", args.workers, args.queue)
        try:
            until = time.perf_counter() + args.seconds
            clients = [Client(port, "load", until, photo, i) for i in range(args.clients)]
            t0 = time.perf_counter()
            for c in clients:
                c.start()
            for c in clients:
                c.join()
            elapsed = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        report = json.loads(subprocess.run([*CONVGEN, "study", "report", "load", "--dir", str(tmp / "st"), "--json"],
                                           check=True, capture_output=True, text=True).stdout)  # fmt: skip
    log = [row for c in clients for row in c.log]
    by_kind = _summary(log, elapsed)
    sent, acked = sum(c.sent for c in clients), sum(c.acked for c in clients)
    results = {
        "requests": len(log),
        "requests_per_s": round(len(log) / elapsed, 1),
        "by_kind": by_kind,
        "server_errors": sum(1 for _, s, _ in log if s == 0 or s >= 500),
        "refused_429": sum(1 for _, s, _ in log if s == 429),
        "answers": {
            "sent": sent,
            "acknowledged": acked,
            "stored": report["answers"],
            "lost": acked - report["answers"],
        },
        "direct_baseline": baseline,
        # the model work the server delivered under the mix, in units of what direct sequential calls do alone
        "work_vs_direct": round(
            sum(by_kind[k]["ok_per_s"] / baseline[k]["per_s"] for k in baseline if k in by_kind), 3
        ),
    }
    print_report("web_load", results, clients=args.clients, seconds=args.seconds, workers=args.workers,
                 queue=args.queue, mix=dict(MIX))  # fmt: skip
    if args.out:
        import contextlib

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            print_report("web_load", results, clients=args.clients, seconds=args.seconds, workers=args.workers,
                         queue=args.queue, mix=dict(MIX))  # fmt: skip
        Path(args.out).write_text(buf.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    main()
