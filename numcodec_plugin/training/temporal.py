"""Train the bundled temporal mode: a :class:`TemporalPrior` on top of the frozen image model.

Only the prior learns; the image model's transforms, hyperprior and gains stay exactly as
shipped, so its reconstruction (the distortion) does not change and the loss is the rate
alone: bits per pixel per band of frame t's latent under the refined Gaussian, given the decoded
latent of frame t-1. Data: consecutive frame pairs of the time series in ``../shared/data/s2``
(validation series held out). Each step draws a quality per pair, so one prior serves every
rate. The log shows the training rate beside the image model's rate on the same pairs and the
saving on fixed validation pairs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from numcodec_plugin.models.gain_hyperprior import GainHyperprior
from numcodec_plugin.models.registry import DEFAULT_MODEL, load_bundled_network
from numcodec_plugin.models.temporal_prior import TemporalPrior
from numcodec_plugin.training.data import PairSampler, load_sequences
from numcodec_plugin.training.train import save_atomic


def _decoded_hyper_parameters(image: GainHyperprior, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales and means the decoder derives for latent ``y`` (hyper-latent rounded as when coding)."""
    z = image.h_a(y)
    medians = image.entropy_bottleneck._get_medians()
    return image.hyper_parameters(torch.round(z - medians) + medians)


def pair_rates(image: GainHyperprior, prior: TemporalPrior, pairs: torch.Tensor, quality: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pair rate (bits/pixel/band) of frame 1's latent with and without the temporal prior.

    ``pairs``: (B, 2, C, H, W) standardised; ``quality``: (B,) level index in [0, levels-1].
    """
    b, _, c, h, w = pairs.shape
    with torch.no_grad():
        gain, _ = image.gains(quality)
        latents = image.g_a(image.rotate(pairs.flatten(0, 1))).unflatten(0, (b, 2))
        y0, y1 = latents[:, 0] * gain, latents[:, 1] * gain
        scales0, means0 = _decoded_hyper_parameters(image, y0)
        previous = torch.round(y0 - means0) + means0
        scales1, means1 = _decoded_hyper_parameters(image, y1)
    scales, means = prior(previous, means1, scales1, gain, quality / (image.levels - 1))
    noisy = y1 + torch.empty_like(y1).uniform_(-0.5, 0.5)
    conditional = image.gaussian_conditional

    def bits(s: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        likelihood = conditional.likelihood_lower_bound(conditional._likelihood(noisy, s, means=m))
        return -torch.log2(likelihood).flatten(1).sum(1) / (c * h * w)

    return {"temporal": bits(scales, means), "image": bits(scales1, means1).detach()}


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"

    image, statistics = load_bundled_network(args.base)
    image.eval().requires_grad_(False)
    mean = torch.tensor(statistics["mean"])[None, None, :, None, None]
    std = torch.tensor(statistics["std"])[None, None, :, None, None]
    prior = TemporalPrior(M=image.config["M"], hidden=args.hidden)
    optimizer = torch.optim.Adam(prior.parameters(), lr=args.lr)
    step = 0
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        prior.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"resuming from step {step}", flush=True)

    def standardise(batch) -> torch.Tensor:
        return (torch.from_numpy(batch) - mean) / std

    sampler = PairSampler(load_sequences(Path(args.data), "train"), args.crop, seed=args.seed + step)
    validation = PairSampler(load_sequences(Path(args.data), "validation"), 256, seed=12345)
    validation_pairs = standardise(validation.batch(12))
    validation_quality = torch.arange(12, dtype=torch.float32) % image.levels
    started, log = time.time(), {"temporal": 0.0, "image": 0.0, "n": 0}
    while step < args.steps:
        for group in optimizer.param_groups:
            group["lr"] = args.lr * (0.1 if step >= 0.9 * args.steps else 1.0)
        quality = torch.rand(args.batch) * (image.levels - 1)
        rates = pair_rates(image, prior, standardise(sampler.batch(args.batch)), quality)
        loss = rates["temporal"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        log["temporal"] += loss.item()
        log["image"] += rates["image"].mean().item()
        log["n"] += 1
        if step % args.log_every == 0 or step == args.steps:
            prior.eval()
            with torch.no_grad():
                v = pair_rates(image, prior, validation_pairs, validation_quality)
            prior.train()
            n = log["n"]
            print(json.dumps({
                "step": step, "bpp_temporal": round(log["temporal"] / n, 4), "bpp_image": round(log["image"] / n, 4),
                "validation_saving_pct": round(100 * (1 - v["temporal"].sum().item() / v["image"].sum().item()), 2),
                "steps_per_s": round(n / (time.time() - started), 2),
            }), flush=True)
            started, log = time.time(), {"temporal": 0.0, "image": 0.0, "n": 0}
        if step % args.checkpoint_every == 0 or step == args.steps:
            save_atomic({"model": prior.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                         "config": prior.config, "base": args.base, "args": vars(args)}, checkpoint_path)


def export(checkpoint: Path, destination: Path, name: str, note: str = "") -> None:
    """Write the shipped temporal weights file: the prior alone, naming the image model it extends."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    torch.save({"name": name, "architecture": "temporal-gain-hyperprior", "base": state["base"],
                "config": state["config"], "steps": state["step"], "note": note,
                "state_dict": {k: v.contiguous() for k, v in state["model"].items()}}, destination)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The ``temporal`` and ``export-temporal`` subcommands of ``terracodec-train``."""
    run = sub.add_parser("temporal", help="train (or resume) the temporal prior on top of a bundled image model")
    run.add_argument("--data", default="../shared/data/s2")
    run.add_argument("--out", default="runs/temporal")
    run.add_argument("--base", default=DEFAULT_MODEL)
    run.add_argument("--steps", type=int, default=5000)
    run.add_argument("--batch", type=int, default=8)
    run.add_argument("--crop", type=int, default=128)
    run.add_argument("--hidden", type=int, default=96)
    run.add_argument("--lr", type=float, default=3e-4)
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--log-every", type=int, default=100)
    run.add_argument("--checkpoint-every", type=int, default=500)
    run.set_defaults(handler=train)
    exp = sub.add_parser("export-temporal", help="turn a temporal checkpoint into a shipped weights file")
    exp.add_argument("checkpoint", type=Path)
    exp.add_argument("destination", type=Path)
    exp.add_argument("--name", required=True)
    exp.add_argument("--note", default="")
    exp.set_defaults(handler=lambda a: export(a.checkpoint, a.destination, a.name, a.note))
