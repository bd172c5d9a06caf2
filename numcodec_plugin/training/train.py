"""Train the bundled :class:`GainHyperprior` on Sentinel-2 crops, resumably, on CPU or GPU.

Each step draws one quality level per crop, so every batch trains several rates of the one
set of weights. The loss is ``lambda * D + R`` with ``D`` the mean squared error in
reflectance units (DN / 10000, the unit of the benchmark's PSNR) and ``R`` the estimated bits
per pixel per band. Checkpoints are written atomically every ``--checkpoint-every`` steps and
a rerun of the same command resumes from the last one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from numcodec_plugin.models.distortion import reflectance_mse
from numcodec_plugin.models.gain_hyperprior import GainHyperprior, training_lambdas
from numcodec_plugin.training import entropy_tables, integer_hyper_synthesis
from numcodec_plugin.training.checkpoint import save_atomic
from numcodec_plugin.training.data import CropSampler, band_statistics, load_images

#: Lagrange multiplier of each quality level, lowest rate first (D in reflectance units).
LAMBDAS: tuple[float, ...] = training_lambdas(8)


def rate_distortion(model: GainHyperprior, x: torch.Tensor, levels: torch.Tensor, std: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample rate (bits/pixel/band) and distortion (reflectance MSE) of a training pass."""
    out = model(x, levels.float())
    pixels = x.shape[1] * x.shape[2] * x.shape[3]
    bits = sum(-torch.log2(lk).flatten(1).sum(1) for lk in out["likelihoods"])
    return {"bpp": bits / pixels, "mse": reflectance_mse(out["x_hat"], x, std)}


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"

    images = load_images(Path(args.data), "train")
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        stats = state["statistics"]
        print(f"resuming from step {state['step']}", flush=True)
    else:
        s = band_statistics(images)
        stats = {"mean": s.mean.tolist(), "std": s.std.tolist(), "rotation": s.rotation.tolist()}
        state = None

    model = GainHyperprior(bands=12, N=args.N, M=args.M, levels=len(LAMBDAS))
    model.spectral_rotation.copy_(torch.tensor(stats["rotation"]))
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    optimizer = torch.optim.Adam(main_params, lr=args.lr)
    aux_optimizer = torch.optim.Adam(aux_params, lr=1e-3)
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        aux_optimizer.load_state_dict(state["aux_optimizer"])
        step = state["step"]
    model.to_channels_last().to(device).train()

    mean = torch.tensor(stats["mean"], device=device)[None, :, None, None]
    std = torch.tensor(stats["std"], device=device)
    lambdas = torch.tensor(LAMBDAS, device=device)
    sampler = CropSampler(images, args.crop, seed=args.seed + step)
    started, log = time.time(), {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
    while step < args.steps:
        lr = args.lr * (0.1 if step >= 0.9 * args.steps else 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = torch.from_numpy(sampler.batch(args.batch)).to(device)
        x = (x - mean) / std[None, :, None, None]
        levels = torch.randint(0, len(LAMBDAS), (x.shape[0],), device=device)
        rd = rate_distortion(model, x, levels, std)
        loss = (lambdas[levels] * rd["mse"] + rd["bpp"]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        optimizer.step()
        aux_optimizer.zero_grad(set_to_none=True)
        model.aux_loss().backward()
        aux_optimizer.step()
        step += 1

        log["loss"] += loss.item()
        log["bpp"] += rd["bpp"].mean().item()
        log["psnr"] += (-10 * torch.log10(rd["mse"])).mean().item()
        log["n"] += 1
        if step % args.log_every == 0 or step == args.steps:
            n = log["n"]
            rate = n / (time.time() - started)
            print(json.dumps({"step": step, "loss": round(log["loss"] / n, 4), "bpp_per_band": round(log["bpp"] / n, 4),
                              "psnr_db": round(log["psnr"] / n, 2), "aux": round(model.aux_loss().item(), 2),
                              "steps_per_s": round(rate, 2), "lr": lr}), flush=True)
            started, log = time.time(), {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
        if step % args.checkpoint_every == 0 or step == args.steps:
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "aux_optimizer": aux_optimizer.state_dict(), "step": step, "statistics": stats,
                         "config": model.config, "lambdas": LAMBDAS, "args": vars(args)}, checkpoint_path)


def fit_quantiles(model: GainHyperprior, steps: int = 6000) -> float:
    """Converge the entropy bottleneck's quantiles (data-independent), so coded rates match training.

    The quantiles can sit far out in the tails; a decaying step size (1, 0.1, 0.01) gets them there
    in seconds, where the training's small auxiliary step would need many thousands of steps.
    """
    params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    optimizer = torch.optim.Adam(params, lr=1.0)
    for i in range(steps):
        optimizer.param_groups[0]["lr"] = 10.0 ** -(3 * i // steps)
        optimizer.zero_grad(set_to_none=True)
        loss = model.aux_loss()
        loss.backward()
        optimizer.step()
    return float(model.aux_loss().item())


def export(checkpoint: Path, destination: Path, name: str, note: str = "") -> None:
    """Write the shipped weights file: config, statistics, lambdas and a CPU state dict."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = GainHyperprior(**state["config"])
    model.load_state_dict(state["model"])
    aux = fit_quantiles(model)
    print(f"auxiliary loss after quantile fitting: {aux:.3f}")
    torch.save({"name": name, "architecture": "gain-hyperprior", "config": state["config"], "statistics": state["statistics"],
                "lambdas": list(state["lambdas"]), "steps": state["step"], "note": note,
                "state_dict": {k: v.contiguous() for k, v in model.state_dict().items()}}, destination)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="terracodec-train", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train (or resume) a model")
    run.add_argument("--data", default="../shared/data/s2")
    run.add_argument("--out", default="runs/default")
    run.add_argument("--steps", type=int, default=100_000)
    run.add_argument("--batch", type=int, default=8)
    run.add_argument("--crop", type=int, default=128)
    run.add_argument("--lr", type=float, default=1e-4)
    run.add_argument("--N", type=int, default=64)
    run.add_argument("--M", type=int, default=160)
    run.add_argument("--threads", type=int, default=2)
    run.add_argument("--device", default="auto")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--log-every", type=int, default=100)
    run.add_argument("--checkpoint-every", type=int, default=500)
    exp = sub.add_parser("export", help="turn a checkpoint into a shipped weights file")
    exp.add_argument("checkpoint", type=Path)
    exp.add_argument("destination", type=Path)
    exp.add_argument("--name", required=True)
    exp.add_argument("--note", default="")
    run.set_defaults(handler=train)
    exp.set_defaults(handler=lambda a: export(a.checkpoint, a.destination, a.name, a.note))
    integer_hyper_synthesis.add_commands(sub)
    entropy_tables.add_commands(sub)
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
