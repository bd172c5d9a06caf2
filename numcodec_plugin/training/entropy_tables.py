"""Fit per-quality entropy tables for a shipped model: fewer bits for the same symbols.

Two parts of the entropy model were trained as one compromise over all qualities, or not at all:

* the hyper-latent's density (the entropy bottleneck) is one factorised density for every quality,
  but the hyper-latent's spread follows the gains: at low qualities most of its symbols are 0 and
  the shared density spends bits on values that never occur (27% of a chunk at quality -1 on the
  validation split with ``tec-s2-gain-v2``, ``git show d12500b:docs/benchmarks/low_qualities.md``).
  Per whole quality, one categorical table per channel is fitted from the symbols the model's own
  encoder gives on training crops, mixed with the shared density (weight ``mix``) so that every
  symbol of its range stays codable;
* the latent's scales come from the hyper-synthesis, whose activation steps stop at the lowest
  trained level: below quality 1 (extrapolated gains) the scales are too wide for the latents. Per
  whole quality and latent channel, a factor on the scales is chosen from a grid (:data:`SCALE_FACTORS`,
  powers of two from 1/4 to 2**0.5) to minimise the latent's coded bits (the format-4 scale table's laws).

Each part is kept at a quality only where, fitted on crops of half the training files, it saves at
least 1% of its stream's bits on crops of the other half (other scenes: the run prints the
comparison), then refitted on both. Nothing else changes: the latents, the hyper-latent's symbols
and the reconstruction are the base model's to the bit; only the streams are shorter. The result is a new model (the tables are part of its identity digest),
stored as a delta of the base weights file:

    terracodec-train entropy-tables --base numcodec_plugin/models/weights/tec-s2-gain-v2.pt \\
        --out numcodec_plugin/models/weights/tec-s2-gain-v3.pt --name tec-s2-gain-v3
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from numcodec_plugin.models.entropy_coding import CategoricalTables, ScaleTable, clip_symbols
from numcodec_plugin.models.gain_hyperprior import GainHyperprior
from numcodec_plugin.models.registry import EXTRAPOLATED_LEVELS, read_network
from numcodec_plugin.training.data import CropSampler, load_images

TILE = 256
MIXES = (0.01, 0.03, 0.1, 0.3)
SCALE_FACTORS = 2.0 ** np.linspace(-2.0, 0.5, 21)
#: a part is kept at a quality only if it saves at least this share of its stream's bits on the other images
KEEP_MARGIN = 0.01


@dataclass
class CodedSymbols:
    """What the base model's coder gives crops at one quality: how often each hyper-latent symbol occurs
    in each channel over all crops, and per crop the latent's symbols and the scales they are coded
    with, channel-major."""

    hyper_latent_counts: np.ndarray  # (C, K) int64, on the bottleneck table's layout
    latent_symbols: np.ndarray  # (crops, M, h * w) int32
    latent_scales: np.ndarray  # (crops, M, h * w) float32


def coded_symbols(network: GainHyperprior, tables: CategoricalTables, analysed: torch.Tensor,
                  quality: float, latent_crops: int) -> CodedSymbols:
    """The symbols of (crops, M, h, w) un-gained analysis outputs at ``quality``, computed as the coder
    does: the hyper-latent's of every crop, the latent's of the first ``latent_crops`` (each needs the
    hyper-synthesis, the costly part). The analysis is the caller's, once for every quality: the coder's
    own path (``GainHyperpriorCoder._analyse_tiles``) would run it again at each of the ten."""
    medians = network.entropy_bottleneck._get_medians().detach()
    level = torch.tensor([quality - 1.0])
    gain, _ = network.gains(level)
    counts = np.zeros(tables.probabilities.shape, dtype=np.int64)
    symbols, scales = [], []
    with torch.no_grad():
        for i, crop in enumerate(analysed):
            y = crop[None] * gain
            z_symbols = tables.clip((network.h_a(y) - medians).numpy())
            counts += tables.symbol_counts(z_symbols[0])
            if i >= latent_crops:
                continue
            crop_scales, means = network.hyper_parameters(torch.from_numpy(z_symbols).float() + medians, level)
            symbols.append(clip_symbols((y - means).numpy()).reshape(y.shape[1], -1))
            scales.append(crop_scales.numpy().reshape(y.shape[1], -1))
    return CodedSymbols(counts, np.stack(symbols), np.stack(scales))


def fitted_table(counts: np.ndarray, tables: CategoricalTables, mix: float) -> np.ndarray:
    """(C, K) probabilities: the (C, K) ``counts`` normalised, mixed with the shared ``tables`` by ``mix``."""
    frequencies = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    return (1 - mix) * frequencies + mix * tables.probabilities


def table_bits(counts: np.ndarray, probabilities: np.ndarray) -> float:
    """Information content of symbols with (C, K) ``counts`` under (C, K) ``probabilities``."""
    used = counts > 0
    return float(-(counts[used] * np.log2(probabilities[used])).sum())


def channel_bits(symbols: np.ndarray, scales: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(M,) latent bits of (crops, M, n) ``symbols`` with their ``scales`` times the (M,) ``factors``."""
    scaled = (scales * factors.astype(np.float32)[None, :, None]).astype(np.float32)
    return ScaleTable.standard().bits(symbols, scaled).sum(axis=(0, 2))


def best_factors(symbols: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(M,) per channel the grid factor of fewest latent bits."""
    bits = np.stack([channel_bits(symbols, scales, np.full(symbols.shape[1], f)) for f in SCALE_FACTORS])
    return SCALE_FACTORS[bits.argmin(axis=0)]


def fit_scale_factors(fitting: CodedSymbols, checking: CodedSymbols) -> tuple[np.ndarray, dict]:
    """(M,) latent scale factors at one quality, fitted on ``fitting`` and kept (else ones) only if they save
    ``KEEP_MARGIN`` of the latent's bits on ``checking``, then refitted on both; and what the check found."""
    ones = np.ones(fitting.latent_symbols.shape[1])
    trial = best_factors(fitting.latent_symbols, fitting.latent_scales)
    before = channel_bits(checking.latent_symbols, checking.latent_scales, ones).sum()
    after = channel_bits(checking.latent_symbols, checking.latent_scales, trial).sum()
    keep = after < (1 - KEEP_MARGIN) * before
    both = [np.concatenate(pair) for pair in zip((fitting.latent_symbols, fitting.latent_scales),
                                                  (checking.latent_symbols, checking.latent_scales))]
    report = {"latent_bits_per_crop": round(before / len(checking.latent_symbols)),
              "scale factors": f"{100 * (after / before - 1):+.2f}%", "factors kept": bool(keep)}
    return (best_factors(*both) if keep else ones), report


def fit_hyper_latent_table(fitting: np.ndarray, checking: np.ndarray, tables: CategoricalTables, crops: int
                           ) -> tuple[np.ndarray, float, dict]:
    """Packed hyper-latent probabilities at one quality from (C, K) symbol counts of the two groups (the
    checking one from ``crops`` crops): the mix of fewest bits on ``checking``, kept (else the shared
    table) only if it saves ``KEEP_MARGIN`` of them, then refitted on both; the mix kept (0 for none)
    and what the check found."""
    shared = table_bits(checking, tables.probabilities)
    relative = {mix: table_bits(checking, fitted_table(fitting, tables, mix)) / shared - 1 for mix in MIXES}
    mix = min(MIXES, key=relative.get)
    keep = relative[mix] < -KEEP_MARGIN
    probabilities = fitted_table(fitting + checking, tables, mix) if keep else tables.probabilities
    report = {"hyper_latent_bits_per_crop": round(shared / crops), **{f"tables mix {m}": f"{100 * r:+.1f}%" for m, r in relative.items()},
              "table kept": keep and mix}
    return tables.packed(probabilities), (mix if keep else 0.0), report


def fit(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    network, shipped = read_network(Path(args.base))
    network.update(force=True)
    network.eval()
    tables = CategoricalTables.from_entropy_bottleneck(network.entropy_bottleneck)
    mean = torch.tensor(shipped["statistics"]["mean"])[None, :, None, None]
    std = torch.tensor(shipped["statistics"]["std"])[None, :, None, None]
    images = load_images(Path(args.data), "train", min_size=TILE)
    files = sorted({name.split("[")[0] for name, _ in images})  # the dates of a time series stay together
    if len(files) < 2:
        raise SystemExit(f"entropy-tables fits on half the training files and checks on the other half; "
                         f"{args.data} has {len(files)} with 12 bands of at least {TILE} x {TILE} pixels")
    analysed = []  # two groups of training files, crops of each: fit on one, check on the other
    for group_files in (set(files[0::2]), set(files[1::2])):
        group = [(name, image) for name, image in images if name.split("[")[0] in group_files]
        x = (torch.from_numpy(CropSampler(group, TILE, seed=args.seed).batch(args.crops // 2)) - mean) / std
        with torch.no_grad():
            analysed.append(torch.cat([network.g_a(network.rotate(x[i:i + 8])) for i in range(0, len(x), 8)]))
    qualities = [float(q) for q in np.arange(1.0 - EXTRAPOLATED_LEVELS, len(shipped["lambdas"]) + 1)]
    probabilities, mixes, factors = [], [], []
    for q in qualities:  # one quality's latents in memory at a time
        fitting, checking = (coded_symbols(network, tables, a, q, args.latent_crops // 2) for a in analysed)
        quality_factors, latent_report = fit_scale_factors(fitting, checking)
        packed, mix, table_report = fit_hyper_latent_table(fitting.hyper_latent_counts, checking.hyper_latent_counts,
                                                           tables, crops=len(analysed[1]))
        probabilities.append(packed)
        mixes.append(mix)
        factors.append(quality_factors)
        print(json.dumps({"quality": q, **table_report, **latent_report}), flush=True)
    config = {**shipped["config"], "table_qualities": qualities, "hyper_latent_table_size": tables.packed_size}
    note = (f"{shipped['name']} with per-quality entropy tables (hyper-latent tables, latent scale factors) fitted "
            f"on {args.crops} training crops of 256 x 256 ({args.latent_crops} for the scale factors)")
    state = {"hyper_latent_probabilities": torch.tensor(np.stack(probabilities), dtype=torch.float32),
             "latent_scale_factors": torch.tensor(np.stack(factors), dtype=torch.float32)}
    torch.save({**shipped, "name": args.name, "config": config, "note": note, "delta_of": Path(args.base).stem,
                "table_crops": args.crops, "scale_factor_crops": args.latent_crops, "hyper_latent_mixes": mixes,
                "state_dict": state}, args.out)
    print(f"wrote {args.out}", flush=True)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The ``entropy-tables`` subcommand of terracodec-train."""
    run = sub.add_parser("entropy-tables", help="fit per-quality entropy tables for a shipped model")
    run.add_argument("--base", required=True, help="shipped weights file (the new file is a delta of it)")
    run.add_argument("--out", required=True, type=Path, help="weights file to write, beside the base")
    run.add_argument("--name", required=True)
    run.add_argument("--data", default="../shared/data/s2")
    run.add_argument("--crops", type=int, default=1024, help="random augmented 256 x 256 training crops")
    run.add_argument("--latent-crops", type=int, default=96,
                     help="of them, the crops whose latents choose the scale factors (about 160,000 symbols each)")
    run.add_argument("--threads", type=int, default=2)
    run.add_argument("--seed", type=int, default=0)
    run.set_defaults(handler=fit)
