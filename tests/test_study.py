"""Human studies without the web server: the statistics against scipy, the per-rater plans, the attention rule,
the CLI, and the answer store on SQLite and on a throwaway PostgreSQL server (the same tests for both)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from convgen.app.store import DuplicateAnswer, Store
from convgen.app.study import ForeignTrial, Study, UnknownRater, create_study, plan_trials, report, write_csv
from convgen.cli import main
from convgen.errors import ConvgenError
from convgen.metrics import human
from tests.conftest import free_port


# -- statistics ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (37, 80), (1, 1)])
def test_wilson_matches_scipy(k, n):
    ref = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert np.allclose(human.wilson_interval(k, n), (ref.low, ref.high), atol=1e-9)


def test_t_interval_matches_scipy():
    x = [1, 2, 2, 3, 5, 4, 4]
    ref = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert np.allclose(human.t_interval(x), ref)


def test_rater_bootstrap_is_wider_when_raters_disagree():
    agree = {f"r{i}": [1, 0] * 10 for i in range(8)}  # every rater at 0.5
    split = {f"r{i}": [i % 2] * 20 for i in range(8)}  # half always 1, half always 0: same pooled rate
    lo_a, hi_a = human.bootstrap_over_raters(agree)
    lo_s, hi_s = human.bootstrap_over_raters(split)
    assert lo_a == hi_a == 0.5
    assert lo_s < 0.35 and hi_s > 0.65
    summary = human.judged_real(split)
    assert summary["judged_real_rate"] == 0.5 and summary["n"] == 160 and summary["raters"] == 8
    assert summary["ci95"][1] - summary["ci95"][0] < hi_s - lo_s  # Wilson treats answers as independent


# -- designs -----------------------------------------------------------------------------------------------------
def _images(folder: Path, n: int, value: float, size: int = 8) -> Path:
    from convgen.io.images import write_image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(int(value * 100))
    for i in range(n):
        write_image(folder / f"{i:03d}.png", np.clip(value + 0.1 * rng.standard_normal((size, size)), 0, 1))
    return folder


@pytest.fixture()
def sources(tmp_path) -> dict[str, Path]:
    return {"real": _images(tmp_path / "real", 6, 0.5), "gan": _images(tmp_path / "gan", 5, 0.3),
            "vae": _images(tmp_path / "vae", 4, 0.7)}  # fmt: skip


def test_plans_are_per_rater_seeded_and_balanced(sources, tmp_path):
    path = create_study("s", sources["real"], [sources["gan"], sources["vae"]], 20, tmp_path / "st", practice=4,
                        catch=3)  # fmt: skip
    design = Study(path).design
    a, b = plan_trials(design, 1), plan_trials(design, 2)
    assert a == plan_trials(design, 1) and a != b
    assert [t["phase"] for t in a[:4]] == ["practice"] * 4
    main_trials = [t for t in a if t["phase"] == "main"]
    assert len(main_trials) == 20 and sum(t["phase"] == "catch" for t in a) == 3
    assert sum(t["source"] == "gan" for t in main_trials) == 10
    for t in a:
        real = t[t["real"]]
        other = t["right" if t["real"] == "left" else "left"]
        assert real in design["sources"]["real"]
        assert other in (design["catch_images"] if t["phase"] == "catch" else design["sources"][t["source"]])
    sides = [t["real"] for s in range(30) for t in plan_trials(design, s)]
    assert 0.4 < sides.count("left") / len(sides) < 0.6
    assert len({t["id"] for t in a}) == len(a)


def test_images_are_renamed_and_reencoded(sources, tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("convgen:model", "mnist-dcgan")
    Image.open(sources["gan"] / "000.png").save(sources["gan"] / "000.png", pnginfo=info)
    path = create_study("s", sources["real"], [sources["gan"]], 4, tmp_path / "st")
    files = sorted((path / "images").iterdir())
    assert len(files) == 6 + 5 + 4  # real, fake, catch images
    assert not any("gan" in f.name or "real" in f.name for f in files)
    assert all(not Image.open(f).text for f in files)  # no metadata tells the source


def test_create_refuses_bad_designs(sources, tmp_path):
    st = tmp_path / "st"
    with pytest.raises(ConvgenError, match="study name"):
        create_study("../evil", sources["real"], [sources["gan"]], 4, st)
    with pytest.raises(ConvgenError, match="kind"):
        create_study("s", sources["real"], [sources["gan"]], 4, st, kind="abx")
    with pytest.raises(ConvgenError, match="trials"):
        create_study("s", sources["real"], [sources["gan"]], 0, st)
    with pytest.raises(ConvgenError, match="distinct names"):
        create_study("s", sources["real"], [sources["gan"], sources["gan"]], 4, st)
    with pytest.raises(ConvgenError, match="postgresql"):
        create_study("s", sources["real"], [sources["gan"]], 4, st, database="mysql://x")
    with pytest.raises(ConvgenError, match="PGPASSWORD"):
        create_study("s", sources["real"], [sources["gan"]], 4, st, database="postgresql://me:secret@db/x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConvgenError, match="no images"):
        create_study("s", sources["real"], [tmp_path / "empty"], 4, st)
    assert not (st / "s").exists()
    create_study("s", sources["real"], [sources["gan"]], 4, st)
    with pytest.raises(ConvgenError, match="already exists"):
        create_study("s", sources["real"], [sources["vae"]], 4, st)


# -- the store on both databases ---------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> str | None:
    """None: the study's own SQLite file; else a PostgreSQL URL."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgres")


def test_store_refuses_repeats_and_keeps_every_answer_under_threads(db, tmp_path, request):
    url = db or f"sqlite:///{tmp_path / 'a.sqlite'}"
    study = f"t{abs(hash(request.node.name)) % 10**8}"
    store = Store(url, study)
    trials = [{"id": f"x{i}", "phase": "main"} for i in range(50)]
    store.add_session("tok", 7, trials)
    assert store.session("tok")["trials"] == trials and store.session("nope") is None
    errors: list[Exception] = []

    def answer(j: int) -> None:  # 20 threads, one connection each, 100 answers: every trial twice
        own = Store(url, study)
        try:
            for i in range(j, 100, 20):
                with contextlib.suppress(DuplicateAnswer):
                    own.add_answer("tok", f"x{i % 50}", i % 50, "left", 100.0 + i)
        except Exception as e:  # pragma: no cover - shows in the assert
            errors.append(e)
        finally:
            own.close()

    threads = [threading.Thread(target=answer, args=(j,)) for j in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = store.answers("tok")
    assert sorted(r["trial"] for r in rows) == sorted(f"x{i}" for i in range(50))
    with pytest.raises(DuplicateAnswer):
        store.add_answer("tok", "x0", 0, "right", 5.0)
    assert Store(url, study + "other").answers() == []  # studies share a database, not answers


def test_study_answers_report_and_csv(db, sources, tmp_path):
    name = f"r{os.getpid()}{np.random.default_rng().integers(10**6)}"
    path = create_study(name, sources["real"], [sources["gan"], sources["vae"]], 6, tmp_path / "st", practice=2,
                        catch=2, database=db, exposure_ms=500)  # fmt: skip
    study = Study(path)
    careful, careless = study.new_session(), study.new_session()
    plans = {s["token"]: study.store().session(s["token"])["trials"] for s in (careful, careless)}
    for t in plans[careful["token"]]:  # always right, except: takes every 'gan' image for real
        fooled = t["source"] == "gan" and t["phase"] == "main"
        choice = ("right" if t["real"] == "left" else "left") if fooled else t["real"]
        reply = study.answer(careful["token"], t["id"], choice, 700)
        assert ("correct" in reply) == (t["phase"] == "practice")
    for t in plans[careless["token"]]:  # misses every catch trial: excluded by the attention rule
        study.answer(careless["token"], t["id"], "left" if t["real"] == "right" else "right", 300)
    with pytest.raises(DuplicateAnswer):
        study.answer(careful["token"], plans[careful["token"]][0]["id"], "left", 1)
    with pytest.raises(ForeignTrial):
        study.answer(careful["token"], "not-a-trial", "left", 1)
    with pytest.raises(UnknownRater):
        study.answer("forged-token", plans[careful["token"]][0]["id"], "left", 1)
    r = report(study)
    json.dumps(r, allow_nan=False)
    assert r["raters"] == 2 and r["answers"] == 2 * 10
    assert len(r["excluded_raters"]) == 1 and "catch" in r["attention_rule"]
    assert r["per_source"]["gan"]["judged_real_rate"] == 1.0 and r["per_source"]["vae"]["judged_real_rate"] == 0.0
    assert r["per_source"]["gan"]["n"] == 3 and r["per_source"]["gan"]["raters"] == 1
    assert r["per_source"]["vae"]["all_raters"] == {"value": 0.5, "n": 6}  # the careless rater always picked fakes
    assert r["per_source"]["gan"]["response_time"]["median_ms"] == 700
    rows = write_csv(study, tmp_path / "answers.csv")
    assert rows == 20 and len((tmp_path / "answers.csv").read_text().splitlines()) == 21
    with pytest.raises(ConvgenError, match="already exists"):
        write_csv(study, tmp_path / "answers.csv")
    study.store().close()


def test_cli_create_and_report(sources, tmp_path, capsys):
    st = tmp_path / "st"
    argv = ["study", "create", "cli", "--real", str(sources["real"]), "--fake", str(sources["gan"]), "--fake",
            str(sources["vae"]), "--trials", "4", "--dir", str(st), "--practice", "1", "--catch", "1"]  # fmt: skip
    assert main(argv) == 0
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
    study = Study.open(st, "cli")
    s = study.new_session()
    for t in s["trials"]:
        study.answer(s["token"], t["id"], "left", 400)
    capsys.readouterr()
    assert main(["study", "report", "cli", "--dir", str(st), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["raters"] == 1 and out["answers"] == 6 and set(out["per_source"]) == {"gan", "vae"}
    assert {"judged_real_rate", "ci95", "n"} <= set(out["per_source"]["gan"])
    assert main(["study", "report", "cli", "--dir", str(st)]) == 0
    assert "judged real" in capsys.readouterr().out
    assert main(["study", "report", "nope", "--dir", str(st)]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
    assert main(["study", "create", "x", "--real", str(tmp_path / "missing"), "--fake", str(sources["gan"]),
                 "--trials", "4", "--dir", str(st)]) == 2  # fmt: skip
    assert "directory not found" in capsys.readouterr().err


def test_a_broken_postgres_url_is_one_line(sources, tmp_path):
    pytest.importorskip("psycopg")
    with pytest.raises(ConvgenError, match="PostgreSQL database"):
        create_study("s", sources["real"], [sources["gan"]], 4, tmp_path / "st",
                     database=f"postgresql://nobody@127.0.0.1:{free_port()}/none")  # fmt: skip
    assert not (tmp_path / "st" / "s").exists()
