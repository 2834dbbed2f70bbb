"""Few-step diffusion (issue 38): progressive distillation with the guidance folded in. The one-step target lands
exactly on the teacher's multi-step result, a student of factor 1 at scale 1 starts at zero loss (it is its
teacher's conditional model), training lowers the loss, and the exported student samples in one network pass per
step on its own grid, deterministically, through the same pipeline (sampling, interpolation, inpainting)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import convgen
from convgen.config import build_config
from convgen.data.datasets import build_data
from convgen.diffusion import NoiseSchedule, ddim_step, ddim_timesteps
from convgen.diffusion.samplers import distilled_grid, one_step_target, step_grid
from convgen.engine.runtime import DistInfo
from convgen.engine.task import Context
from convgen.engine.trainer import Trainer
from convgen.errors import ConfigError
from convgen.registry import TASKS
from tests.conftest import with_overrides
from tests.test_diffusion import ddpm_config


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("teacher") / "run"
    cfg = ddpm_config(task__fd_extractor="none", train__eval_every=40)
    Trainer(build_config(cfg), run).fit()
    return run / "model"


def distill_config(teacher: Path, **overrides) -> dict:
    cfg = ddpm_config(task__fd_extractor="none", train__max_steps=30, train__eval_every=30, train__ckpt_every=30,
                      train__lr=0.001)  # fmt: skip
    cfg["name"] = "tiny-student"
    cfg["model"].update(guidance_input=True, dropout=0.0)
    cfg["task"].update(sample_steps=4, distill={"teacher": str(teacher), "teacher_steps": 8, "factor": 2,
                                                "guidance_range": [1.0, 3.0]})  # fmt: skip
    return with_overrides(cfg, overrides)


def test_one_step_target_lands_on_the_multi_step_result():
    s = NoiseSchedule.make("cosine", 1000)
    gen = torch.Generator().manual_seed(0)
    xt, x_end = torch.randn(4, 1, 6, 6, generator=gen), torch.randn(4, 1, 6, 6, generator=gen)
    t, t_end = torch.tensor([999, 600, 250, 40]), torch.tensor([700, 300, 10, -1])
    x0, eps = one_step_target(s, xt, t, x_end, t_end)
    for i in range(4):
        landed = ddim_step(s, xt[i : i + 1], int(t[i]), int(t_end[i]), x0[i : i + 1], eps[i : i + 1], 0.0, None)
        assert torch.allclose(landed, x_end[i : i + 1], atol=1e-4), i
    assert torch.allclose(x0[3], x_end[3])  # the last step lands on the clean image itself


def test_student_grid_is_every_factor_th_teacher_level():
    teacher = ddim_timesteps(1000, 24)
    grid = distilled_grid(teacher, 3)
    assert len(grid) == 8 and grid[0] == 999 and grid == teacher[::3]
    with pytest.raises(ValueError, match="does not split"):
        distilled_grid(teacher, 5)
    assert step_grid(1000, 8, grid) == grid  # its own count: its own grid
    assert step_grid(1000, 4, grid) == ddim_timesteps(1000, 4)  # any other: the even DDIM grid
    assert step_grid(1000, 8) == ddim_timesteps(1000, 8)


def make_task(cfg: dict):
    """The diffusion task of a config, outside a trainer (its networks, teacher and loss)."""
    run = build_config(cfg)
    return TASKS.get("diffusion")(run, build_data(run.data), Context(torch.device("cpu"), DistInfo()), 30)


def test_known_pixel_errors_pick_the_class_whose_noise_prediction_fits_the_known_pixels():
    s = NoiseSchedule.make("cosine", 100)
    images, keep = torch.zeros(10, 2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    keep[:, :, :2] = 1  # the top half is known
    seen = {}

    def predictor(labels):  # right noise for class 3 on image 0 and class 7 on image 1; and only known pixels
        def predict(xt, t):
            n = (xt - s.abar(t).sqrt() * images.flatten(0, 1)) / (1 - s.abar(t)).sqrt()
            seen["labels"] = labels
            wrong = n + 1.0
            right = (labels == 3) & (torch.arange(len(xt)) % 2 == 0) | (labels == 7) & (torch.arange(len(xt)) % 2 == 1)
            out = torch.where(right.view(-1, 1, 1, 1), n, wrong)
            out[:, :, 2:] += 5.0  # errors on the missing pixels do not count
            return None, out

        return predict

    from convgen.diffusion.samplers import ImageNoise, known_pixel_errors

    errors = known_pixel_errors(predictor, images, keep, s, [10, 50, 90], ImageNoise([1, 2]))
    assert errors.shape == (10, 2) and errors.argmin(0).tolist() == [3, 7]
    assert torch.allclose(errors[0], torch.ones(2, dtype=torch.float64))  # (n + 1 - n)^2 on known pixels only
    assert seen["labels"].tolist() == [c for c in range(10) for _ in range(2)]


def _batch(task, n: int = 32):
    return task.data.train.batch(torch.arange(n))


def test_a_factor_one_student_at_scale_one_starts_as_its_teachers_conditional_model(teacher):
    task = make_task(distill_config(teacher, task__cond_drop=0.0, task__sample_steps=8,
                                    task__distill={"teacher": str(teacher), "teacher_steps": 8, "factor": 1,
                                                   "guidance_range": [1.0, 1.0]}))  # fmt: skip
    x, y = _batch(task)
    split = task.schedule.split  # the teacher's clipping of x0 to [-1, 1] is part of the target; off here, the
    task.schedule.split = lambda kind, xt, out, t, clip=True: split(kind, xt, out, t, clip=False)  # target is
    loss = task.distill_loss(task.net.eval(), x, y, torch.Generator().manual_seed(0))  # the teacher's own output
    assert loss.item() < 1e-8
    task.schedule.split = split
    clipped = task.distill_loss(task.net.eval(), x, y, torch.Generator().manual_seed(0)).item()
    assert clipped > 1e-6  # (a 40-step teacher's x0 often leaves [-1, 1])
    guided = copy.deepcopy(task.cfg)
    guided.task.distill.guidance_range = [3.0, 3.0]  # the target is the guided teacher: no longer the same
    task.cfg = guided
    assert task.distill_loss(task.net.eval(), x, y, torch.Generator().manual_seed(0)).item() > 1e-4


def test_distillation_trains_and_the_student_samples_in_one_pass_per_step(teacher, tmp_path):
    task = make_task(distill_config(teacher))
    x, y = _batch(task, 100)
    before = task.distill_loss(task.net.eval(), x, y, torch.Generator().manual_seed(1)).item()
    convgen.train(build_config(distill_config(teacher)), tmp_path / "student")
    task.net.load_state_dict(convgen.load(tmp_path / "student" / "model", device="cpu").net.state_dict())
    after = task.distill_loss(task.net.eval(), x, y, torch.Generator().manual_seed(1)).item()
    assert after < 0.8 * before, (before, after)  # (the exported EMA weights)

    pipe = convgen.load(tmp_path / "student" / "model", device="cpu")
    assert pipe.defaults["steps"] == 4 and pipe.folded
    assert pipe.meta["distilled"]["timesteps"] == ddim_timesteps(100, 9)[1::2]  # trailing: T - 1 left out
    calls = []
    forward = pipe.net.forward
    pipe.net.forward = lambda *a, **k: calls.append(len(a[0])) or forward(*a, **k)
    a = pipe.sample(6, seed=3)
    assert calls == [6] * 4  # 4 steps, one pass each, guidance 2 included
    b = pipe.sample(6, seed=3)
    assert torch.equal(a, b) and a.shape == (6, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    calls.clear()
    pipe.sample(6, seed=3, guidance=0.5)  # any scale: still one pass a step
    assert calls == [6] * 4
    # interpolation and inpainting through the same pipeline; known pixels kept exactly
    frames = pipe.walk(steps=3, rows=2, seed=0, mode="slerp", classes=(1, 7), label=None)
    assert frames.shape == (6, 1, 28, 28)
    img = np.random.default_rng(0).uniform(0, 1, (28, 28)).astype(np.float32)
    mask = np.zeros((28, 28), bool)
    mask[:14] = True
    out = pipe.inpaint(img, mask, steps=4, jump=1, resample=2)
    assert np.array_equal(out[14:, :, 0], img[14:])
    calls.clear()  # inferring the class: one fill per class (4 passes each), then 10 levels x 10 classes scored
    inferred = pipe.inpaint(img, mask, steps=4, jump=1, resample=1, infer_label=True)
    assert np.array_equal(inferred[14:, :, 0], img[14:]) and calls == [1] * 40 + [10] * 10
    calls.clear()
    pipe.inpaint(img, mask, steps=4, jump=1, resample=1, infer_label=True, label="3")  # a label given: one fill
    assert calls == [1] * 4

    # the student teaches the next stage on its own grid: 4 -> 2 steps
    nxt = distill_config(tmp_path / "student" / "model", train__max_steps=4, task__sample_steps=2,
                         task__distill={"teacher": str(tmp_path / "student" / "model"), "factor": 2})  # fmt: skip
    stage2 = make_task(nxt)
    assert stage2.grid == ddim_timesteps(100, 9)[1::4] and stage2.teacher_folded
    x, y = _batch(stage2, 8)
    assert torch.isfinite(stage2.distill_loss(stage2.net, x, y, torch.Generator().manual_seed(0)))


def test_distillation_refuses_what_does_not_fit(teacher):
    with pytest.raises(ConfigError, match="schedule"):
        make_task(distill_config(teacher, task__schedule="linear"))
    with pytest.raises(ConfigError, match="guidance_input"):
        cfg = distill_config(teacher)
        cfg["model"]["guidance_input"] = False
        make_task(cfg)
    with pytest.raises(ConfigError, match="does not split"):
        make_task(distill_config(teacher, task__distill={"teacher": str(teacher), "teacher_steps": 9, "factor": 2}))
    with pytest.raises(ConfigError, match="sample_steps must be the student's step count, 4"):
        make_task(distill_config(teacher, task__sample_steps=5))
    with pytest.raises(ConfigError, match="teacher_steps is needed"):
        make_task(distill_config(teacher, task__distill={"teacher": str(teacher)}))
    with pytest.raises(ConfigError, match="does not fit"):
        cfg = distill_config(teacher)
        cfg["model"]["widths"] = [8, 8]
        make_task(cfg)
