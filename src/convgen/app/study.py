"""Human evaluation studies: create one from folders of real and generated images, run raters, report.

A study is a folder ``STUDIES/NAME/`` made by ``convgen study create`` (never over HTTP): ``study.json`` (the
design), ``images/`` (every image re-encoded as PNG under an opaque random name, so neither a file name nor
metadata tells a rater which is real) and, by default, ``answers.sqlite``; with ``--db postgresql://...`` the
answers go to that PostgreSQL database instead.

Kinds (the pix2pix / HYPE protocols):

* ``2afc``: each trial shows a real image and a generated one side by side ("which is real?"); ``--practice`` trials
  first, with feedback; ``--catch`` trials pair a real image with an obvious fake (uniform noise) to check
  attention. The judged-real rate of a source is how often raters picked its image (0.5: indistinguishable).
* ``mos``: each trial shows one image (real, generated, or a noise catch image) to score from 1 (bad) to 5
  (excellent); a catch image passes when scored 1 or 2.

Every rater gets an opaque random token and their own random order and sides from a seed recorded with the
session, so a session can be rebuilt exactly (:func:`plan_trials`). Raters who get less than
``min_catch_accuracy`` of their catch trials right are excluded from the per-source numbers (the attention rule;
the report says who and why).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import secrets
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convgen.app.store import DuplicateAnswer, Store
from convgen.errors import ConvgenError
from convgen.io.atomic import atomic_dir, atomic_write_text, refuse_existing
from convgen.io.images import convert_channels, list_images, probe_image, read_image, write_image
from convgen.io.weights import dump_json, read_json
from convgen.metrics import human

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
IMAGE_ID = re.compile(r"^[0-9a-f]{16}$")
KINDS = ("2afc", "mos")
STUDY_MAX_PIXELS = 4096 * 4096
MAX_TRIALS = 1000
MAX_MS = 3_600_000.0
#: a server left open on a network cannot be filled with sessions without end
DEFAULT_MAX_SESSIONS = 10_000  # a response time over an hour is not a response time


class StudyNotFound(ConvgenError):
    """No study of that name in the studies folder."""


class UnknownRater(ConvgenError):
    """The token is not a session of this study."""


class ForeignTrial(ConvgenError):
    """The trial is not one of the token's own."""


class StudyFull(ConvgenError):
    """The study has as many sessions as it allows."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ConvgenError(
            f"study name {name!r}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


def _rater_id(token: str) -> str:
    """What a report shows for a rater: a hash of the token (the token itself lets one answer as that rater)."""
    return hashlib.sha256(token.encode()).hexdigest()[:10]


# -- creation ----------------------------------------------------------------------------------------------------
def _new_id(ids: set[str]) -> str:
    """A random image id not in ``ids`` (added to it)."""
    image_id = secrets.token_hex(8)
    while image_id in ids:
        image_id = secrets.token_hex(8)
    ids.add(image_id)
    return image_id


def _import_images(files: list[Path], images: Path, source: str, ids: set[str]) -> tuple[list[str], tuple]:
    """Re-encode ``files`` into ``images/<id>.png`` (metadata dropped); returns the ids and the first image's
    shape."""
    out, shape = [], None
    for f in files:
        arr = read_image(f, max_pixels=STUDY_MAX_PIXELS)
        if arr.shape[-1] in (2, 4):
            arr = convert_channels(arr, arr.shape[-1] - 1, str(f))
        shape = shape or arr.shape
        image_id = _new_id(ids)
        write_image(images / f"{image_id}.png", np.clip(arr, 0, 1))
        out.append(image_id)
    return out, shape


def _list_sources(real: str | Path, fakes: list[str | Path], names: list[str]) -> dict[str, list[Path]]:
    """Each source's images (``real`` and one per fake folder), every one checked before anything is written."""
    listed = {"real": list_images(real)}
    listed.update({n: list_images(f) for n, f in zip(names, fakes, strict=True)})
    for source, files in listed.items():
        if not files:
            raise ConvgenError(f"{real if source == 'real' else fakes[names.index(source)]}: no images found")
        for f in files:
            probe_image(f, max_pixels=STUDY_MAX_PIXELS)
    return listed


def _check_design(name, kind, trials, practice, catch, exposure_ms, min_catch_accuracy, fakes, database) -> None:
    check_name(name)
    if kind not in KINDS:
        raise ConvgenError(f"`kind` {kind!r}: must be one of {', '.join(KINDS)}")
    if not 1 <= trials <= MAX_TRIALS:
        raise ConvgenError(f"`trials` {trials}: must be 1..{MAX_TRIALS}")
    for opt, value in (("practice", practice), ("catch", catch)):
        if not 0 <= value <= MAX_TRIALS:
            raise ConvgenError(f"`{opt}` {value}: must be 0..{MAX_TRIALS}")
    if not 0 <= exposure_ms <= 60_000:
        raise ConvgenError(f"`exposure_ms` {exposure_ms}: must be 0 (until the answer) .. 60000")
    if not 0.0 <= min_catch_accuracy <= 1.0:
        raise ConvgenError(f"`min_catch_accuracy` {min_catch_accuracy}: must be in [0, 1]")
    if not fakes:
        raise ConvgenError("give at least one `fake` folder")
    if database is not None and not database.startswith(("postgresql://", "postgres://")):
        raise ConvgenError(f"`db` {database!r}: give a postgresql:// URL (SQLite, the default, needs none)")
    if database is not None and "@" in database and ":" in database.split("://", 1)[1].split("@", 1)[0]:
        raise ConvgenError("`db`: leave the password out of the URL (it would be saved in study.json); PostgreSQL "
                           "reads it from PGPASSWORD or ~/.pgpass")  # fmt: skip


def create_study(
    name: str,
    real: str | Path,
    fakes: list[str | Path],
    trials: int,
    studies: str | Path,
    kind: str = "2afc",
    exposure_ms: int = 0,
    practice: int = 10,
    catch: int = 4,
    database: str | None = None,
    min_catch_accuracy: float = 0.75,
    seed: int | None = None,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
) -> Path:
    """Create ``studies/NAME`` (refused if it exists) and return its folder.

    ``trials`` main trials per rater, cycling over the fake sources (``mos``: over real and fake sources);
    ``exposure_ms`` how long the images stay on screen (0, the default: until the answer, as HYPE-infinity; 1000
    is the pix2pix protocol); ``practice`` trials with feedback
    first; ``catch`` attention trials mixed into the main ones. ``database`` a ``postgresql://`` URL (default: a
    SQLite file in the study folder). ``max_sessions`` raters (sessions) at most."""
    if not 1 <= max_sessions <= 10**7:
        raise ConvgenError(f"`max_sessions` {max_sessions}: must be 1..{10**7:,}")
    _check_design(name, kind, trials, practice, catch, exposure_ms, min_catch_accuracy, fakes, database)
    names = [Path(f).resolve().name for f in fakes]
    if len(set(names)) != len(names) or "real" in names:
        raise ConvgenError(f"fake folders need distinct names other than 'real' (got {', '.join(names)})")
    studies = Path(studies)
    target = studies / name
    if target.exists():
        raise ConvgenError(f"{target} already exists; choose another study name")
    listed = _list_sources(real, fakes, names)
    if database is not None:  # the tables exist (and the URL works) before any image is copied
        Store(database, name).close()
    studies.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target) as tmp:
        images = tmp / "images"
        images.mkdir()
        ids: set[str] = set()
        sources, shapes = {}, {}
        for source, files in listed.items():
            sources[source], shapes[source] = _import_images(files, images, source, ids)
        warning = None
        if len({s[:2] for s in shapes.values()}) > 1:
            sizes = ", ".join(f"{k} {v[1]}x{v[0]}" for k, v in shapes.items())
            warning = (f"study: warning: image sizes differ ({sizes}); the page shows every image at one size, but "
                       "raters may still notice")  # fmt: skip
        rng = np.random.default_rng(seed)
        h, w, c = shapes["real"]
        catch_ids = []
        for _ in range(catch):
            image_id = _new_id(ids)
            write_image(images / f"{image_id}.png", rng.random((h, w, c), dtype=np.float32))
            catch_ids.append(image_id)
        design = {
            "name": name,
            "kind": kind,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "trials": trials,
            "practice": practice,
            "catch": catch,
            "exposure_ms": exposure_ms,
            "min_catch_accuracy": min_catch_accuracy,
            "max_sessions": max_sessions,
            "database": database or "sqlite",
            "sources": sources,
            "catch_images": catch_ids,
            "files": {source: [f.name for f in files] for source, files in listed.items()},
        }
        atomic_write_text(tmp / "study.json", dump_json(design))
    Study(target).store().close()  # the SQLite file and its tables exist before anyone is invited
    for source, ids_of in sources.items():
        print(f"study: {source}: {len(ids_of)} image(s)", file=sys.stderr)
    if warning:
        print(warning, file=sys.stderr)
    return target


# -- a study while it runs ---------------------------------------------------------------------------------------
@dataclass
class Study:
    """An existing study folder."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not (self.path / "study.json").is_file():
            raise StudyNotFound(f"no study {self.path.name!r} in {self.path.parent}")
        self.design: dict[str, Any] = read_json(self.path / "study.json")
        self.name: str = self.design["name"]
        self.kind: str = self.design["kind"]
        self._store: Store | None = None
        known = [i for ids in self.design["sources"].values() for i in ids] + self.design["catch_images"]
        self.image_ids = frozenset(known)

    @classmethod
    def open(cls, studies: str | Path, name: str) -> Study:
        check_name(name)
        return cls(Path(studies) / name)

    def store(self) -> Store:
        if self._store is None:
            db = self.design["database"]
            self._store = Store(f"sqlite:///{self.path / 'answers.sqlite'}" if db == "sqlite" else db, self.name)
        return self._store

    def image_path(self, image_id: str) -> Path:
        """The file of an image id of this study (anything else, ``../`` included, is not found)."""
        if not IMAGE_ID.match(image_id) or image_id not in self.image_ids:
            raise StudyNotFound(f"no image {image_id!r} in study {self.name!r}")
        return self.path / "images" / f"{image_id}.png"

    # -- sessions --------------------------------------------------------------------------------------------
    def new_session(self) -> dict[str, Any]:
        limit = int(self.design.get("max_sessions", DEFAULT_MAX_SESSIONS))
        if self.store().count_sessions() >= limit:
            raise StudyFull(f"study {self.name!r} has reached its {limit} sessions (`max_sessions`); thank you")
        token = secrets.token_urlsafe(18)
        seed = secrets.randbits(63)
        trials = plan_trials(self.design, seed)
        self.store().add_session(token, seed, trials)
        return self.session_view(token, trials, [])

    def resume(self, token: str) -> dict[str, Any]:
        s = self.store().session(token) if isinstance(token, str) else None
        if s is None:
            raise UnknownRater("unknown token for this study; start a new session")
        answered = [a["trial"] for a in self.store().answers(token)]
        return self.session_view(token, s["trials"], answered)

    def session_view(self, token: str, trials: list[dict], answered: list[str]) -> dict[str, Any]:
        """What the rater's page gets: image URLs per trial, never which one is real."""
        url = f"/study/{self.name}/image/"
        shown = []
        for t in trials:
            item: dict[str, Any] = {"id": t["id"], "practice": t["phase"] == "practice"}
            if self.kind == "2afc":
                item.update(left=url + t["left"], right=url + t["right"])
            else:
                item.update(image=url + t["image"])
            shown.append(item)
        return {"token": token, "study": self.name, "kind": self.kind, "exposure_ms": self.design["exposure_ms"],
                "trials": shown, "answered": answered}  # fmt: skip

    def answer(self, token: Any, trial: Any, choice: Any, ms: Any) -> dict[str, Any]:
        """Store one answer: ``choice`` left/right (2afc) or 1..5 (mos). Refuses an unknown token, another
        rater's trial and a repeat (:class:`DuplicateAnswer`)."""
        if not isinstance(token, str) or not isinstance(trial, str):
            raise ConvgenError("`token` and `trial` must be strings")
        if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms <= MAX_MS:
            raise ConvgenError(f"`ms` must be a response time in milliseconds (0..{MAX_MS:.0f})")
        s = self.store().session(token)
        if s is None:
            raise UnknownRater("unknown token for this study")
        mine = {t["id"]: (i, t) for i, t in enumerate(s["trials"])}
        if trial not in mine:
            raise ForeignTrial(f"trial {trial!r} is not one of this rater's trials")
        position, t = mine[trial]
        if self.kind == "2afc":
            if choice not in ("left", "right"):
                raise ConvgenError("`choice` must be 'left' or 'right'")
            value = choice
        else:
            if isinstance(choice, bool) or choice not in (1, 2, 3, 4, 5, "1", "2", "3", "4", "5"):
                raise ConvgenError("`choice` must be an opinion score 1..5")
            value = str(choice)
        self.store().add_answer(token, trial, position, value, float(ms))
        reply: dict[str, Any] = {"ok": True}
        if t["phase"] == "practice" and self.kind == "2afc":
            reply["correct"] = value == t["real"]
        return reply


def plan_trials(design: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One rater's trials from their seed: practice first, then main and catch trials shuffled together."""
    rng = np.random.default_rng(seed)
    sources = design["sources"]
    fakes = [s for s in sources if s != "real"]
    real_pool = list(rng.permutation(sources["real"]))

    def real_image(i: int) -> str:
        return str(real_pool[i % len(real_pool)])

    def pick(source: str) -> str:
        return str(sources[source][int(rng.integers(len(sources[source])))])

    used_ids: set[str] = set()

    def trial_id() -> str:
        while True:
            t = rng.bytes(6).hex()
            if t not in used_ids:
                used_ids.add(t)
                return t

    def pair(phase: str, source: str, real: str, other: str) -> dict[str, Any]:
        side = "left" if rng.random() < 0.5 else "right"
        left, right = (real, other) if side == "left" else (other, real)
        return {"id": trial_id(), "phase": phase, "source": source, "left": left, "right": right, "real": side}

    def single(phase: str, source: str, image: str) -> dict[str, Any]:
        return {"id": trial_id(), "phase": phase, "source": source, "image": image}

    catch_pool = design["catch_images"]
    practice, main = [], []
    k = 0
    if design["kind"] == "2afc":
        for i in range(design["practice"]):
            src = fakes[i % len(fakes)]
            practice.append(pair("practice", src, real_image(k), pick(src)))
            k += 1
        for i in range(design["trials"]):
            src = fakes[i % len(fakes)]
            main.append(pair("main", src, real_image(k), pick(src)))
            k += 1
        for i in range(design["catch"]):
            main.append(pair("catch", "catch", real_image(k), catch_pool[i % len(catch_pool)]))
            k += 1
    else:
        everyone = ["real", *fakes]
        for i in range(design["practice"]):
            src = everyone[i % len(everyone)]
            practice.append(single("practice", src, pick(src)))
        for i in range(design["trials"]):
            src = everyone[i % len(everyone)]
            main.append(single("main", src, pick(src)))
        for i in range(design["catch"]):
            main.append(single("catch", "catch", catch_pool[i % len(catch_pool)]))
    order = rng.permutation(len(main))
    return practice + [main[i] for i in order]


# -- the report --------------------------------------------------------------------------------------------------
def _correct(kind: str, trial: dict[str, Any], choice: str) -> bool | None:
    if kind == "2afc":
        return choice == trial["real"]
    if trial["phase"] == "catch":
        return int(choice) <= 2
    return None


def answer_rows(study: Study, sessions: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every stored answer joined with its trial (what ``--csv`` writes); ``sessions``: the store's, if read
    already."""
    store = study.store()
    sessions = store.sessions() if sessions is None else sessions
    trials = {s["token"]: {t["id"]: t for t in s["trials"]} for s in sessions}
    rows = []
    for a in store.answers():
        t = trials.get(a["token"], {}).get(a["trial"])
        if t is None:
            continue
        row = {"rater": _rater_id(a["token"]), "trial": a["trial"], "position": a["position"], "phase": t["phase"],
               "source": t["source"], "choice": a["choice"], "ms": a["ms"], "answered": a["answered"]}  # fmt: skip
        if study.kind == "2afc":
            row.update(left=t["left"], right=t["right"], real=t["real"])
            row["judged_real"] = "" if t["phase"] == "catch" else int(a["choice"] != t["real"])
        else:
            row["image"] = t["image"]
        c = _correct(study.kind, t, a["choice"])
        row["correct"] = "" if c is None else int(c)
        rows.append(row)
    return rows


def report(study: Study, seed: int = 0) -> dict[str, Any]:
    """The study's numbers (see the module docstring); JSON-ready."""
    sessions = study.store().sessions()
    rows = answer_rows(study, sessions)
    by_rater: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_rater[r["rater"]].append(r)
    threshold = study.design["min_catch_accuracy"]
    per_rater, excluded = [], set()
    for rater, rs in by_rater.items():
        catch = [r for r in rs if r["phase"] == "catch"]
        main = [r for r in rs if r["phase"] == "main"]
        acc = sum(r["correct"] for r in catch) / len(catch) if catch else None
        out = acc is not None and acc < threshold
        if out:
            excluded.add(rater)
        entry = {"rater": rater, "answers": len(rs), "main": len(main), "catch": len(catch), "catch_accuracy": acc,
                 "excluded": out, "median_ms": human.time_summary([r["ms"] for r in rs]).get("median_ms")}  # fmt: skip
        if study.kind == "2afc" and main:
            entry["accuracy"] = sum(r["correct"] for r in main) / len(main)
        per_rater.append(entry)
    kept = [r for r in rows if r["phase"] == "main" and r["rater"] not in excluded]
    sources = [s for s in study.design["sources"] if study.kind == "mos" or s != "real"]
    per_source: dict[str, Any] = {}

    def value(r: dict[str, Any]) -> int:  # what a main answer says of its source: took it for real, or the score
        return r["judged_real"] if study.kind == "2afc" else int(r["choice"])

    for src in sources:
        values: dict[str, list] = defaultdict(list)
        for r in kept:
            if r["source"] == src:
                values[r["rater"]].append(value(r))
        summary = human.judged_real(values, seed) if study.kind == "2afc" else human.opinion_score(values, seed)
        summary["response_time"] = human.time_summary([r["ms"] for r in kept if r["source"] == src])
        everyone = [r for r in rows if r["phase"] == "main" and r["source"] == src]
        summary["all_raters"] = {  # before the attention rule, to see what the exclusions change
            "value": sum(map(value, everyone)) / len(everyone) if everyone else None,
            "n": len(everyone),
        }
        per_source[src] = summary
    rule = (f"raters who got less than {threshold:.0%} of their catch trials right are excluded "
            "(raters with no catch answers are kept)")  # fmt: skip
    return {
        "study": study.name,
        "kind": study.kind,
        "sessions": len(sessions),
        "raters": len(by_rater),
        "answers": len(rows),
        "answers_by_phase": {p: sum(r["phase"] == p for r in rows) for p in ("practice", "main", "catch")},
        "per_source": per_source,
        "attention_rule": rule,
        "excluded_raters": sorted(excluded),
        "per_rater": per_rater,
        "response_time": human.time_summary([r["ms"] for r in rows]),
        "intervals": "ci95: Wilson over answers (mos: Student t); bootstrap_ci95: 2000 resamples of whole raters",
    }


def write_csv(study: Study, out: str | Path, overwrite: bool = False) -> int:
    """Write every answer as one CSV row; returns the number of rows."""
    refuse_existing([out], overwrite)
    rows = answer_rows(study)
    buf = io.StringIO()
    fields = list(rows[0]) if rows else ["rater", "trial", "phase", "source", "choice", "ms"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out, buf.getvalue())
    return len(rows)


__all__ = ["DuplicateAnswer", "Study", "StudyNotFound", "create_study", "plan_trials", "report", "write_csv"]
