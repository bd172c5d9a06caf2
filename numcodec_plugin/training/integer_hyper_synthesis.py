"""Give a bundled model an integer hyper-synthesis (:mod:`numcodec_plugin.models.integer_hyper_synthesis`).

Everything but the hyper-synthesis stays frozen, so the latents, the hyper-latents and the
reconstruction are the base model's; only the entropy parameters are relearnt, and only the
latent's rate depends on them. That makes the fine-tuning cheap: the analysis transform runs once,
over a bank of random 256 x 256 training crops (flipped and rotated), and each step runs the
frozen hyper-analysis and the trained hyper-synthesis on a batch of banked latents at random
qualities (half of them integer levels), minimising the bits of the latent's coded symbols relative
to the float hyper-synthesis's on the same batch (:func:`latent_bits`), which the log reports.

The shipped ``tec-s2-gain-v2`` (model card, "Integer hyper-synthesis"):

    terracodec-train integer-hyper-synthesis --base numcodec_plugin/models/weights/tec-s2-gain-v1.pt \\
        --out runs/integer-hs-2 --steps 3000 --bank 1024
    terracodec-train export-integer-hyper-synthesis runs/integer-hs-2/checkpoint.pt \\
        numcodec_plugin/models/weights/tec-s2-gain-v2.pt --name tec-s2-gain-v2
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

from numcodec_plugin.models.gain_hyperprior import GainHyperprior
from numcodec_plugin.models.integer_hyper_synthesis import INPUT_STEP, IntegerHyperSynthesis
from numcodec_plugin.models.registry import read_network
from numcodec_plugin.training.checkpoint import save_atomic
from numcodec_plugin.training.data import CropSampler, load_images

TILE = 256


def with_integer_hyper_synthesis(base: GainHyperprior) -> GainHyperprior:
    """A copy of ``base`` whose hyper-synthesis is an :class:`IntegerHyperSynthesis` started from base's."""
    network = copy.deepcopy(base)
    network.h_s = IntegerHyperSynthesis(base.h_s, base.levels)
    network.config = {**base.config, "integer_hyper_synthesis": True}
    return network


def latent_bank(network: GainHyperprior, images: list, count: int, mean: torch.Tensor, std: torch.Tensor,
                seed: int) -> torch.Tensor:
    """(count, M, 32, 32) float16 un-gained analysis outputs of random augmented 256 x 256 crops."""
    sampler = CropSampler(images, TILE, seed=seed)
    bank = []
    with torch.no_grad():
        while sum(len(b) for b in bank) < count:
            x = (torch.from_numpy(sampler.batch(8)) - mean) / std
            bank.append(network.g_a(network.rotate(x)).half())
    return torch.cat(bank)[:count]


def hyper_latents(network: GainHyperprior, analysed: torch.Tensor, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gained latent y, decoded hyper-latent z_hat) of banked analysis outputs at per-sample levels."""
    gain, _ = network.gains(level)
    y = analysed.float() * gain
    medians = network.entropy_bottleneck._get_medians().detach()
    z_hat = torch.round(network.h_a(y) - medians) + medians
    return y, z_hat


def latent_bits(network: GainHyperprior, y: torch.Tensor, z_hat: torch.Tensor, level: torch.Tensor,
                noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample bits of ``y`` under ``network``'s entropy parameters, two ways:

    * coded: the bits of the symbols the coder writes, ``round(y - means)``, under the scales; what
      the chunk costs. Its gradient reaches the scales only (the symbols are piecewise constant in
      the means).
    * noisy: ``y + noise`` standing in for rounding, under the means (scales held): the gradient for
      the means. At low qualities, where most symbols are 0, it is a poor estimate of the rate
      (noise spreads every zero over a whole bin), which is why the coded bits are the objective.
    """
    scales, means = network.hyper_parameters(z_hat, level)
    conditional = network.gaussian_conditional

    def bits(values: torch.Tensor, scales: torch.Tensor, means: torch.Tensor | None) -> torch.Tensor:
        likelihood = conditional.likelihood_lower_bound(conditional._likelihood(values, scales, means))
        return -torch.log2(likelihood).flatten(1).sum(1)

    coded = bits(torch.round(y - means).detach(), scales, None)
    noisy = bits(y + noise, scales.detach(), means)
    return coded, noisy


def fine_tune(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"
    base, shipped = read_network(Path(args.base))
    base.eval()
    mean = torch.tensor(shipped["statistics"]["mean"])[None, :, None, None]
    std = torch.tensor(shipped["statistics"]["std"])[None, :, None, None]
    images = load_images(Path(args.data), "train", min_size=TILE)
    print(f"banking {args.bank} analysed crops", flush=True)
    bank = latent_bank(base, images, args.bank, mean, std, args.seed)
    network = with_integer_hyper_synthesis(base)
    network.requires_grad_(False)
    hyper_synthesis = network.h_s
    hyper_synthesis.requires_grad_(True)
    optimizer = torch.optim.Adam(hyper_synthesis.parameters(), lr=args.lr)
    step = 0
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        hyper_synthesis.load_state_dict(state["hyper_synthesis"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"resuming from step {step}", flush=True)
    else:
        with torch.no_grad():
            sample = bank[:64]
            levels = [hyper_latents(base, sample, torch.full((len(sample),), float(k)))[1] for k in range(base.levels)]
        hyper_synthesis.calibrate(base.h_s, levels)
    generator = torch.Generator().manual_seed(args.seed + step)
    started, log = time.time(), {"bits": 0.0, "float_bits": 0.0, "n": 0}
    while step < args.steps:
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = torch.randint(len(bank), (args.batch,), generator=generator)
        level = torch.rand(args.batch, generator=generator) * (base.levels - 1)
        level[::2] = level[::2].round()  # half the batch at the integer levels, where most chunks are coded
        with torch.no_grad():
            y, z_hat = hyper_latents(base, bank[index], level)
            noise = torch.rand(y.shape, generator=generator) - 0.5
            float_bits, float_noisy = latent_bits(base, y, z_hat, level, noise)
        bits, noisy = latent_bits(network, y, z_hat, level, noise)
        loss = (bits / float_bits + noisy / float_noisy).mean()  # relative, so every quality counts alike
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            hyper_synthesis.input_steps.clamp_(min=INPUT_STEP)
            for layer in hyper_synthesis.layers:
                if layer.output_steps is not None:
                    layer.output_steps.clamp_(min=1e-6)
        step += 1
        log["bits"] += bits.sum().item()
        log["float_bits"] += float_bits.sum().item()
        log["n"] += 1
        if step % args.log_every == 0 or step == args.steps:
            print(json.dumps({"step": step, "bits_vs_float_pct": round(100 * (log["bits"] / log["float_bits"] - 1), 2),
                              "steps_per_s": round(log["n"] / (time.time() - started), 2), "lr": lr}), flush=True)
            started, log = time.time(), {"bits": 0.0, "float_bits": 0.0, "n": 0}
        if step % args.checkpoint_every == 0 or step == args.steps:
            save_atomic({"hyper_synthesis": hyper_synthesis.state_dict(), "optimizer": optimizer.state_dict(),
                         "step": step, "base": args.base, "args": vars(args)}, checkpoint_path)


def export(checkpoint: Path, destination: Path, name: str, note: str = "") -> None:
    """Write a shipped weights file: the base model's with the fine-tuned integer hyper-synthesis, after
    checking that its sums are exact (:meth:`IntegerHyperSynthesis.check_exact`)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    base, shipped = read_network(Path(state["base"]))
    network = with_integer_hyper_synthesis(base)
    network.h_s.load_state_dict(state["hyper_synthesis"])
    network.h_s.check_exact()
    print(f"partial sums at most {network.h_s.accumulator_bounds()} (exact below {2 ** 24})")
    shipped.update(name=name, config=network.config, note=note, hyper_synthesis_steps=state["step"],
                   base=shipped.get("name"),
                   state_dict={k: v.contiguous() for k, v in network.state_dict().items()})
    torch.save(shipped, destination)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The ``integer-hyper-synthesis`` and ``export-integer-hyper-synthesis`` subcommands of terracodec-train."""
    run = sub.add_parser("integer-hyper-synthesis", help="fine-tune an integer hyper-synthesis for a shipped model")
    run.add_argument("--base", required=True, help="shipped weights file of the float model")
    run.add_argument("--data", default="../shared/data/s2")
    run.add_argument("--out", default="runs/integer-hs")
    run.add_argument("--steps", type=int, default=3000)
    run.add_argument("--batch", type=int, default=8)
    run.add_argument("--bank", type=int, default=1024, help="analysed 256 x 256 crops to train on")
    run.add_argument("--lr", type=float, default=1e-4)
    run.add_argument("--threads", type=int, default=2)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--log-every", type=int, default=50)
    run.add_argument("--checkpoint-every", type=int, default=250)
    run.set_defaults(handler=fine_tune)
    exp = sub.add_parser("export-integer-hyper-synthesis", help="write the shipped weights file of a fine-tuned run")
    exp.add_argument("checkpoint", type=Path)
    exp.add_argument("destination", type=Path)
    exp.add_argument("--name", required=True)
    exp.add_argument("--note", default="")
    exp.set_defaults(handler=lambda a: export(a.checkpoint, a.destination, a.name, a.note))
