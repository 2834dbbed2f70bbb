"""Training (variational) autoencoders: negative ELBO (reconstruction + beta * KL), the importance-weighted bound
(IWAE, ``iwae_k`` samples) as an option, plain and denoising autoencoders.

Binary likelihood (``model.likelihood: bernoulli``) follows the standard MNIST protocol: every training batch is
binarized stochastically (each pixel is 1 with probability its gray value) and the held-out digits are binarized
once with a fixed seed, so validation numbers are comparable between runs and with the literature. A discretized
logistic likelihood models the 8-bit gray or colour values instead.

Validation reports ``neg_elbo`` (nats per image, the checkpoint selector), ``rec`` and ``kl``, and for 1-channel
models the sample quality of decoder means in the feature space of a classifier (``fd``: FD-mnistcls, not a
standard FID; ``diversity``, ``min_class_share`` and, for a conditional model, ``class_accuracy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from convgen.data.degradations import make_degradation
from convgen.engine.optim import optimizer_step
from convgen.engine.runtime import wrap_ddp
from convgen.engine.task import Task, load_init_weights
from convgen.errors import ConfigError
from convgen.losses.likelihood import (
    EVAL_BINARIZE_SEED,
    binarize,
    bits_per_dim,
    free_bits_kl,
    gaussian_kl,
    gaussian_kl_per_dim,
    iwae_nll,
    log_weights,
)
from convgen.models import build_model
from convgen.models.autoencoders import decode_means, prior_latents
from convgen.registry import TASKS
from convgen.schema import check


@TASKS.register("vae")
class VAETask(Task):
    @dataclass
    class Config:
        beta: float = 1.0  # weight of the KL term (beta-VAE); 1 = the ELBO
        kl_warmup_steps: int = 0  # the KL weight rises linearly from 0 to beta over this many steps
        free_bits: float = 0.0  # > 0: each latent dimension's batch-mean KL counts as at least this many nats
        iwae_k: int = 1  # > 1: train on the importance-weighted bound with this many samples (IWAE)
        binarize: Literal["stochastic", "threshold", "none"] | None = None  # null: stochastic for bernoulli
        corruption: Any = None  # a degradation ({kind: noise, sigma: 50}, ...): a denoising autoencoder
        eval_samples: int = 1000
        eval_batch_size: int = 500
        fd_extractor: str = "auto"  # auto | none | a classifier (zoo name or model dir)
        sample_grid: int = 64
        init_from: str | None = None  # a saved VAE (zoo name or path) to start from (a later chunk, a shipped model)

        def __post_init__(self) -> None:
            check(self.beta >= 0, "task.beta", "must be >= 0")
            check(self.kl_warmup_steps >= 0, "task.kl_warmup_steps", "must be >= 0")
            check(self.free_bits >= 0, "task.free_bits", "must be >= 0")
            check(1 <= self.iwae_k <= 5000, "task.iwae_k", "must be in 1..5000")
            check(self.eval_samples >= 10, "task.eval_samples", "must be >= 10")
            check(self.eval_batch_size >= 1, "task.eval_batch_size", "must be >= 1")
            check(self.sample_grid >= 1, "task.sample_grid", "must be >= 1")
            if self.corruption is not None:
                make_degradation(self.corruption)  # validated now, as every config section is

    export_models = ("vae",)
    best_metric = ("val/neg_elbo", "min")
    progress_keys = ("loss", "rec", "kl")
    rng_salt = 43  # binarisation, corruption, latent noise

    def __init__(self, cfg, data, ctx, total_steps) -> None:
        super().__init__(cfg, data, ctx, total_steps)
        m, t = cfg.model, cfg.task
        self.check_data("channels", "image_size", "num_classes")
        net = build_model(m)
        if not hasattr(net, "encode"):
            raise ConfigError(f"model type {m.registry_name!r} is not an autoencoder")
        if t.init_from:
            load_init_weights(net, t.init_from, "vae", "VAE")
        if t.iwae_k > 1 and not net.variational:
            raise ConfigError("task.iwae_k > 1 needs a variational model (model.variational: true)")
        if t.iwae_k > 1 and ctx.dist.world_size > 1:
            raise ConfigError("task.iwae_k > 1 is not supported in multi-process runs yet; train it in one process")
        net = ctx.prepare(net)
        self.net, self.module = net, wrap_ddp(net, ctx.dist, ctx.device)
        self.models = {"vae": net}
        self.add_optimizer("vae", net.parameters())
        self.binarize = t.binarize or ("stochastic" if net.likelihood == "bernoulli" else "none")
        self.corruption = make_degradation(t.corruption) if t.corruption is not None else None
        self._val: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def _inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the network's input, the target it reconstructs): binarized, and corrupted for a denoising model."""
        target = binarize(x, self.binarize, self.gen)
        inp = target if self.corruption is None else self.corruption.batch(target, self.gen)[0]
        return self.ctx.to_device(inp), self.ctx.to_device(target)

    def train_step(self, batch, step: int) -> dict[str, float]:
        t = self.cfg.task
        x, labels = batch
        inp, target = self._inputs(x)
        y = labels.to(self.ctx.device) if self.conditional else None
        self.net.train()
        beta = t.beta * min(1.0, (step + 1) / t.kl_warmup_steps) if t.kl_warmup_steps else t.beta
        with self.ctx.autocast():
            if t.iwae_k > 1:
                log_w, rec_k = log_weights(self.net, inp, y, t.iwae_k, self.gen, target)
                mu, logvar = self.net.encode(inp, y)
                loss, rec, kl = iwae_nll(log_w).float().mean(), rec_k.mean(0), gaussian_kl(mu.float(), logvar.float())
            else:
                noise = torch.randn(len(x), self.net.latent_dim, generator=self.gen) if self.net.variational else None
                params, mu, logvar = self.module(inp, y, noise)
                rec = self.net.nll(params, target)
                kl = penalty = torch.zeros_like(rec)
                if logvar is not None:
                    per_dim = gaussian_kl_per_dim(mu.float(), logvar.float())
                    kl = per_dim.sum(1)
                    penalty = free_bits_kl(per_dim, t.free_bits) if t.free_bits else kl
                loss = (rec + beta * penalty).mean()
        opt = self.optimizers["vae"]
        optimizer_step(loss, opt, self.net.parameters(), self.cfg.train.grad_clip, self.schedulers["vae"])
        return {
            "loss": loss.item(),
            "rec": rec.mean().item(),
            "kl": kl.mean().item(),
            "neg_elbo": (rec + kl).mean().item(),
            "lr": opt.param_groups[0]["lr"],
        }

    # -- validation --------------------------------------------------------------------------------------------
    def _val_data(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The held-out images, binarized once with a fixed seed (the protocol), and their labels."""
        if self._val is None:
            split = self.data.val if self.data.val is not None else self.data.train
            x, y = split.batch(torch.arange(len(split)))
            gen = torch.Generator().manual_seed(EVAL_BINARIZE_SEED)
            self._val = binarize(x, self.binarize, gen), y
        return self._val

    @torch.no_grad()
    def generate(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decoder means of ``n`` prior samples from ``seed``; conditional models cycle through the classes."""
        self.net.eval()
        y = torch.arange(n) % self.net.num_classes if self.conditional else None
        z = prior_latents(n, self.net.latent_dim, seed)
        return decode_means(self.net, z, y, batch_size=self.cfg.task.eval_batch_size, device=self.ctx.device), y

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.net.eval()
        x, labels = self._val_data()
        gen = torch.Generator().manual_seed(EVAL_BINARIZE_SEED + 1)
        rec_sum = kl_sum = 0.0
        bs = self.cfg.task.eval_batch_size
        for i in range(0, len(x), bs):
            xi = self.ctx.to_device(x[i : i + bs])
            yi = None if labels is None or not self.conditional else labels[i : i + bs].to(self.ctx.device)
            inp = xi if self.corruption is None else self.ctx.to_device(self.corruption.batch(x[i : i + bs], gen)[0])
            mu, logvar = self.net.encode(inp, yi)
            if self.net.variational:
                z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=gen).to(mu.device)
                kl_sum += gaussian_kl(mu.float(), logvar.float()).sum().item()
            else:
                z = mu
            rec_sum += self.net.nll(self.net.decode(z, yi), xi).sum().item()
        n = len(x)
        result = {"neg_elbo": (rec_sum + kl_sum) / n, "rec": rec_sum / n, "kl": kl_sum / n}
        if self.binarize == "none" and self.net.likelihood != "bernoulli":  # 8-bit values: bits per dimension
            result["bpd"] = float(bits_per_dim(result["neg_elbo"], x[0].numel()))
        fakes, y = self.generate(self.cfg.task.eval_samples, seed=2024)
        self.save_sample_grid(fakes[: self.cfg.task.sample_grid], self.net.num_classes or None)
        validator = self.validator
        if validator is not None:
            result.update(validator(fakes, y))
        return result

    @torch.no_grad()
    def finalize_export(self, model_dir: Path) -> None:
        """Fit the ex-post Gaussian mixture to the training images' posterior means (exported as ``gmm``)."""
        from convgen.io.weights import load_models, save_models
        from convgen.models.autoencoders import GaussianMixture

        if not self.net.variational:
            return
        load_models(model_dir, {"vae": self.net})  # the exported (best) weights
        self.net.eval()
        split = self.data.train
        gen = torch.Generator().manual_seed(EVAL_BINARIZE_SEED + 2)
        codes = []
        for i in range(0, len(split), 500):
            x, y = split.batch(torch.arange(i, min(i + 500, len(split))))
            yi = None if not self.conditional else y.to(self.ctx.device)
            codes.append(self.net.encode(self.ctx.to_device(binarize(x, self.binarize, gen)), yi)[0].float().cpu())
        labels = split.labels if self.conditional else None
        gmm = GaussianMixture(self.net.gmm_components, self.net.latent_dim)
        gmm.fit(torch.cat(codes), labels, seed=self.cfg.seed)
        save_models(model_dir, {"gmm": gmm})

    def export_meta(self) -> dict[str, Any]:
        return {**super().export_meta(), "binarize": self.binarize, "eval_binarize_seed": EVAL_BINARIZE_SEED}

    def on_train_end(self, run_dir: Path) -> dict[str, Any]:
        from convgen.viz.grid import save_grid

        n = 100 if not self.conditional else 10 * self.net.num_classes
        fakes, _ = self.generate(n, seed=0)
        save_grid(fakes, run_dir / "samples.png", nrow=10 if not self.conditional else self.net.num_classes)
        x, labels = self._val_data()
        k = min(8, len(x))
        with torch.no_grad():
            yi = None if labels is None or not self.conditional else labels[:k]
            mu, _ = self.net.encode(self.ctx.to_device(x[:k]), yi)
            rec = self.net.mean_image(self.net.decode(mu, yi)).cpu()
        save_grid(torch.cat([x[:k], rec]), run_dir / "reconstructions.png", nrow=k)
        return {"pictures": ["samples.png", "reconstructions.png"]}
