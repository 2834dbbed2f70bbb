"""Reverse-process samplers over a :class:`~convgen.diffusion.schedule.NoiseSchedule`.

A sampler is given ``predict(x_t, t) -> (x0, eps)``: the model's estimate of the clean image and of the noise at
integer timestep ``t`` (:func:`guided_predictor` builds one from a network, with classifier-free guidance), and
``noise(like) -> tensor``, the standard-normal draws (:class:`ImageNoise` gives every image its own generator, so
image ``i`` of a seed does not depend on how images are batched).

- :func:`ddpm_step` / :func:`ddpm_sample`: ancestral sampling from the posterior q(x_{t-1} | x_t, x0_hat) over all
  T steps (Ho et al. 2020).
- :func:`ddim_step` / :func:`ddim_sample`: DDIM (Song et al. 2021) on a strided grid of timesteps; ``eta = 0`` is
  deterministic, ``eta = 1`` over all T steps draws from the same per-step distribution as DDPM.
- :func:`repaint_sample`: inpainting by conditioning the reverse process on the known pixels, with RePaint's
  resampling (Lugmayr et al. 2022) on the strided grid: known pixels are re-noised to every level from the image,
  and every ``jump`` steps the merged image is diffused back ``jump`` levels and denoised again, ``resample`` times.
- :func:`denoise_from`: denoising a noisy image by entering the reverse process at the level of its noise.
- :func:`distilled_grid` / :func:`step_grid`: the timesteps of a distilled student (every ``factor``-th level of
  its teacher's grid; Salimans & Ho 2022), and the grid a sampler runs for a number of steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from convgen.diffusion.schedule import NoiseSchedule

Predict = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
Noise = Callable[[torch.Tensor], torch.Tensor]


class ImageNoise:
    """Standard-normal draws with one generator per image (seeded from ``seeds``): ``noise(like)`` returns a tensor
    like ``like`` (B x ...), row ``i`` from generator ``i``."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(int(s) % 2**64) for s in seeds]

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        if len(like) != len(self.generators):
            raise ValueError(f"noise for {len(like)} images from {len(self.generators)} generators")
        rows = [torch.randn(like.shape[1:], generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(rows).to(device=like.device, dtype=like.dtype)

    def initial(self, shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """x_T: one (C, H, W) draw per image."""
        return self(torch.empty(len(self.generators), *shape)).to(device)


def image_seeds(seed: int, start: int, n: int) -> list[int]:
    """The generator seeds of images ``start .. start + n - 1`` of a sampling seed."""
    return [(int(seed) * 1_000_003 + 7_919 * (start + i) + 17) % 2**64 for i in range(n)]


def guided_predictor(
    net: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    schedule: NoiseSchedule,
    parameterization: str,
    labels: torch.Tensor | None,
    guidance: float,
    null_label: int | None,
    clip: bool = True,
    folded: bool = False,
) -> Predict:
    """``predict`` for a network ``net(x_t, t_batch, labels) -> output``, with classifier-free guidance (Ho &
    Salimans 2022): out = out(null) + ``guidance`` * (out(labels) - out(null)). Guidance 0 is the unconditional
    model, 1 the conditional one (one network pass for either); above 1 both passes run in one batch. Without
    ``labels`` (or without a null class) the network runs as it is. A ``folded`` network (a guidance-distilled
    student) takes the scale as an input, ``net(x_t, t_batch, labels, scales)``: one pass at any scale."""

    def predict(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        tb = torch.full((len(x),), t, dtype=torch.long, device=x.device)
        if folded and labels is not None:
            out = net(x, tb, labels, torch.full((len(x),), float(guidance), device=x.device))
        elif labels is None or null_label is None or guidance == 1:
            out = net(x, tb, labels)
        elif guidance == 0:
            out = net(x, tb, torch.full_like(labels, null_label))
        else:
            both = net(torch.cat([x, x]), torch.cat([tb, tb]), torch.cat([labels, torch.full_like(labels, null_label)]))
            cond, uncond = both.chunk(2)
            out = uncond + guidance * (cond - uncond)
        return schedule.split(parameterization, x, out.float(), tb, clip=clip)

    return predict


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Images in the model range [-1, 1] as CPU float32 in [0, 1] (clamped)."""
    return ((x.float().cpu() + 1) / 2).clamp(0, 1)


def sample_images(
    predictor: Callable[[torch.Tensor | None], Predict],
    shape: Sequence[int],
    n: int,
    seed: int,
    labels: torch.Tensor | None,
    schedule: NoiseSchedule,
    steps: int,
    eta: float,
    batch_size: int,
    device: torch.device | str = "cpu",
    progress=None,
    timesteps: list[int] | None = None,
) -> torch.Tensor:
    """``n`` DDIM samples in [0, 1] (CPU float32, n x C x H x W), ``batch_size`` at a time: image ``i`` starts from
    and draws its noise from (seed, i), with class ``labels[i]``; ``predictor(labels_of_the_batch)`` gives the
    batch's ``predict`` (e.g. :func:`guided_predictor`); ``timesteps`` (default: the even grid of ``steps``)."""
    out = []
    for i in range(0, n, batch_size):
        k = min(batch_size, n - i)
        noise = ImageNoise(image_seeds(seed, i, k))
        y = None if labels is None else labels[i : i + k].to(device)
        x = noise.initial(shape, device)
        out.append(to_unit(ddim_sample(predictor(y), x, schedule, steps, eta, noise, timesteps, progress)))
    return torch.cat(out)


def generate(
    net: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    schedule: NoiseSchedule,
    parameterization: str,
    shape: Sequence[int],
    n: int,
    seed: int,
    labels: torch.Tensor | None,
    steps: int,
    guidance: float,
    eta: float,
    batch_size: int,
    null_label: int | None,
    device: torch.device | str = "cpu",
    progress=None,
    timesteps: list[int] | None = None,
    folded: bool = False,
) -> torch.Tensor:
    """The sampler of ``convgen sample`` and of a diffusion run's validation: ``n`` DDIM samples in [0, 1] of the
    network ``net(x_t, t, labels)`` with classifier-free guidance ``guidance`` (:func:`guided_predictor`; a
    ``folded`` net takes it as an input), image ``i`` from (seed, i) with class ``labels[i]``
    (:func:`sample_images`), on ``timesteps`` (default: the even grid of ``steps``)."""

    def predictor(y: torch.Tensor | None) -> Predict:
        return guided_predictor(net, schedule, parameterization, y, guidance, null_label, folded=folded)

    return sample_images(predictor, shape, n, seed, labels, schedule, steps, eta, batch_size, device, progress,
                         timesteps)  # fmt: skip


def ddim_timesteps(T: int, steps: int, last: int | None = None) -> list[int]:
    """``steps`` timesteps from ``last`` (default T - 1) down to 0, evenly spaced (all of them when steps = last+1)."""
    last = T - 1 if last is None else last
    if not 1 <= steps <= last + 1:
        raise ValueError(f"steps must be in 1..{last + 1}, got {steps}")
    if steps == 1:
        return [last]
    grid = torch.linspace(0, last, steps, dtype=torch.float64).round().long().tolist()
    return sorted(set(grid), reverse=True)


def distilled_grid(teacher: list[int], factor: int) -> list[int]:
    """A distilled student's timesteps: every ``factor``-th level of its teacher's grid ``teacher`` (descending,
    ending at 0); student step ``i`` goes from ``teacher[factor * i]`` to ``teacher[factor * (i + 1)]`` (-1, the
    clean image, past the end), where the teacher takes ``factor`` steps."""
    if factor < 1 or len(teacher) % factor:
        raise ValueError(f"a teacher grid of {len(teacher)} steps does not split into steps of {factor}")
    return list(teacher[::factor])


def one_step_target(
    schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, x_end: torch.Tensor, t_end: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x0, eps) for which one deterministic DDIM step from ``xt`` at ``t`` lands exactly on ``x_end`` at
    ``t_end`` (per image; -1 = clean): x0 = (x_end - s_end / s_t x_t) / (a_end - s_end a_t / s_t), eps = (x_t -
    a_t x0) / s_t, with a = sqrt(abar), s = sqrt(1 - abar) (Salimans & Ho 2022, Algorithm 2's target)."""
    ab_t, ab_e = schedule.abar(t), schedule.abar(t_end)
    a_t, s_t = schedule._b(ab_t.sqrt(), xt), schedule._b((1 - ab_t).sqrt(), xt)
    a_e, s_e = schedule._b(ab_e.sqrt(), xt), schedule._b((1 - ab_e).sqrt(), xt)
    x0 = (x_end - s_e / s_t * xt) / (a_e - s_e * a_t / s_t)
    return x0, (xt - a_t * x0) / s_t


def step_grid(T: int, steps: int, distilled: list[int] | None = None) -> list[int]:
    """The timesteps a sampler of ``steps`` steps visits: a distilled model's own grid at its own count, else the
    even DDIM grid (:func:`ddim_timesteps`)."""
    if distilled and steps == len(distilled):
        return list(distilled)
    return ddim_timesteps(T, steps)


def ddim_step(
    schedule: NoiseSchedule,
    x: torch.Tensor,
    t: int,
    t_prev: int,
    x0: torch.Tensor,
    eps: torch.Tensor,
    eta: float,
    noise: Noise | None,
) -> torch.Tensor:
    """x_{t_prev} from x_t (t_prev < t; -1 = clean): sqrt(abar') x0 + sqrt(1 - abar' - s^2) eps + s z with
    s = eta * sqrt((1 - abar') / (1 - abar) * (1 - abar / abar'))."""
    ab, ab_prev = float(schedule.abar(t)), float(schedule.abar(t_prev))
    s2 = eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
    out = ab_prev**0.5 * x0 + max(1 - ab_prev - s2, 0.0) ** 0.5 * eps
    if s2 > 0:
        if noise is None:
            raise ValueError("eta > 0 needs a noise source")
        out = out + s2**0.5 * noise(x)
    return out


def ddpm_step(schedule: NoiseSchedule, x: torch.Tensor, t: int, x0: torch.Tensor, noise: Noise) -> torch.Tensor:
    """One ancestral step: a draw from q(x_{t-1} | x_t, x0) (its mean at t = 0)."""
    mean, var = schedule.posterior(x0, x, torch.tensor(t))
    if t == 0:
        return mean
    return mean + var.sqrt() * noise(x)


def ddim_sample(
    predict: Predict,
    x: torch.Tensor,
    schedule: NoiseSchedule,
    steps: int,
    eta: float = 0.0,
    noise: Noise | None = None,
    timesteps: list[int] | None = None,
    progress=None,
) -> torch.Tensor:
    """Run DDIM from x (at ``timesteps[0]``, default T - 1) to a clean image estimate."""
    ts = timesteps if timesteps is not None else ddim_timesteps(schedule.T, steps)
    for i, t in enumerate(ts):
        x0, eps = predict(x, t)
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        x = ddim_step(schedule, x, t, t_prev, x0, eps, eta, noise)
        if progress is not None:
            progress.update(len(x))
    return x


def ddpm_sample(predict: Predict, x: torch.Tensor, schedule: NoiseSchedule, noise: Noise, progress=None):
    """Ancestral sampling over all T steps."""
    for t in range(schedule.T - 1, -1, -1):
        x0, _ = predict(x, t)
        x = ddpm_step(schedule, x, t, x0, noise)
        if progress is not None:
            progress.update(len(x))
    return x


def repaint_schedule(steps: int, jump: int, resample: int) -> list[int]:
    """The sequence of grid positions RePaint visits on a grid of ``steps`` levels (position ``steps`` is pure
    noise, 0 the clean image): down one level at a time; after reaching a multiple of ``jump`` (below
    ``steps - jump``) it goes back up ``jump`` levels, ``resample - 1`` times per such point (Lugmayr et al.'s
    ``get_schedule_jump``)."""
    if steps < 1 or jump < 1 or resample < 1:
        raise ValueError("steps, jump and resample must be >= 1")
    jumps = {j: resample - 1 for j in range(0, steps - jump, jump)}
    t, seq = steps, [steps]
    while t >= 1:
        t -= 1
        seq.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump):
                t += 1
                seq.append(t)
    return seq


def repaint_sample(
    predict: Predict,
    known: torch.Tensor,
    keep: torch.Tensor,
    schedule: NoiseSchedule,
    noise: Noise,
    steps: int = 25,
    jump: int = 5,
    resample: int = 4,
    progress=None,
    timesteps: list[int] | None = None,
) -> torch.Tensor:
    """Inpaint: ``known`` images (model range) where ``keep`` is 1, generated where it is 0, on ``timesteps``
    (default: the even grid of ``steps``). Returns images whose kept pixels equal ``known`` exactly."""
    grid = timesteps if timesteps is not None else ddim_timesteps(schedule.T, steps)
    levels = [-1, *sorted(grid)]  # position p -> timestep levels[p]
    seq = repaint_schedule(len(levels) - 1, jump, resample)
    keep = keep.to(known.dtype)
    x = keep * schedule.q_sample(known, torch.tensor(levels[-1]), noise(known)) + (1 - keep) * noise(known)
    for p, q in zip(seq[:-1], seq[1:], strict=True):
        if q < p:  # one reverse step, then the known pixels at the new level
            x0, eps = predict(x, levels[p])
            x = ddim_step(schedule, x, levels[p], levels[q], x0, eps, 1.0, noise)
            seen = known if levels[q] < 0 else schedule.q_sample(known, torch.tensor(levels[q]), noise(known))
            x = keep * seen + (1 - keep) * x
            if progress is not None:
                progress.update(len(x))
        else:  # back up one level of the forward process
            x = schedule.q_jump(x, levels[p], levels[q], noise(x))
    return x


def known_pixel_errors(
    predictor: Callable[[torch.Tensor], Predict],
    images: torch.Tensor,
    keep: torch.Tensor,
    schedule: NoiseSchedule,
    levels: Sequence[int],
    noise: Noise,
) -> torch.Tensor:
    """A diffusion classifier on the known pixels (Li et al. 2023, "Your diffusion model is secretly a zero-shot
    classifier", restricted to ``keep``): K x B mean squared errors of the noise predicted for class k (the eps of
    ``predictor(labels)(x_t, t)``, e.g. :func:`guided_predictor` unclipped), at the noise ``levels`` (one draw
    each, the same for every class), over the pixels where ``keep`` (B x 1 x H x W) is 1. ``images`` (K x B x C x H x
    W, model range) are complete: class k's row holds its own fill of the missing pixels. The class with the lowest
    error explains the known pixels best."""
    k, b = images.shape[:2]
    weight = keep.to(images.dtype).expand_as(images[0]).repeat(k, 1, 1, 1)
    area = weight.flatten(1).sum(1).clamp(min=1)
    classes = torch.arange(k, device=images.device).repeat_interleave(b)
    flat = images.flatten(0, 1)
    errors = torch.zeros(k * b, dtype=torch.float64)
    for t in levels:
        n = noise(images[0]).repeat(k, 1, 1, 1)
        tb = torch.full((k * b,), int(t), dtype=torch.long, device=images.device)
        eps = predictor(classes)(schedule.q_sample(flat, tb, n), int(t))[1].float()
        errors += ((((eps - n) ** 2) * weight).flatten(1).sum(1) / area).double().cpu()
    return (errors / len(levels)).view(k, b)


def repaint_cost(steps: int, jump: int, resample: int) -> int:
    """Network evaluations per image of :func:`repaint_sample`."""
    seq = repaint_schedule(steps, jump, resample)
    return sum(1 for p, q in zip(seq[:-1], seq[1:], strict=True) if q < p)


def denoise_from(
    predict: Predict, noisy: torch.Tensor, schedule: NoiseSchedule, sigma: float, steps: int, progress=None
) -> torch.Tensor:
    """Denoise ``noisy`` = x0 + sigma * n (model range, sigma on that range): scale it to x_t at the timestep whose
    noise level is ``sigma`` and run deterministic DDIM from there with ``steps`` steps (fewer if t is small)."""
    t = schedule.timestep_for_sigma(sigma)
    x = float(schedule.abar(t).sqrt()) * noisy
    ts = ddim_timesteps(schedule.T, min(steps, t + 1), last=t)
    return ddim_sample(predict, x, schedule, len(ts), 0.0, None, timesteps=ts, progress=progress)
