"""Official TerraCodec checkpoints (IBM/ETH, arXiv 2510.12670) through the ``terracodec`` package.

Weights are looked up, in order, in

1. ``$TERRACODEC_HOME/<hub id>/`` (e.g. ``~/tec/embed2scale/TerraCodec-1.0-FP-S2L2A/``), a
   plain directory holding the hub's files ``config_lambda-<v>.yaml`` and the ``.pt``;
2. the Hugging Face cache (``HF_HOME``), without network access;
3. the Hugging Face hub itself, unless ``HF_HUB_OFFLINE=1`` or ``TERRACODEC_OFFLINE=1``.

If none has them, :class:`ModelNotFoundError` lists every place it looked.

Normalisation: the official models expect band-standardised input. We use the SSL4EO-S12
per-band statistics (Wang et al. 2022; L2A and L1C sets) on which TerraCodec was trained;
a ``statistics.json`` (``{"mean": [...], "std": [...]}``) beside the checkpoint overrides them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from numcodec_plugin._torchvision_shim import ensure_compressai_importable
from numcodec_plugin.errors import ConfigurationError, ModelNotFoundError
from numcodec_plugin.models.base import CodedTile, symbol_checksum
from numcodec_plugin.models.identity import ModelIdentity, is_coder_table
from numcodec_plugin.scoped_determinism import deterministic_torch

SSL4EO_L2A_MEAN = [752.40087073, 884.29673756, 1144.16202635, 1297.47289228, 1624.90992062, 2194.6423161,
                   2422.21248945, 2517.76053101, 2581.64687018, 2645.51888987, 2368.51236873, 1805.06846033]
SSL4EO_L2A_STD = [1108.02887453, 1155.15170768, 1183.6292542, 1368.11351514, 1370.265037, 1355.55390699,
                  1416.51487101, 1474.78900051, 1439.3086061, 1582.28010962, 1455.52084939, 1343.48379601]
SSL4EO_L1C_MEAN = [1605.57504906, 1390.78157673, 1314.8729939, 1363.52445545, 1549.44374991, 2091.74883118,
                   2371.7172463, 2299.90463006, 2560.29504086, 830.06605044, 22.10351321, 2177.07172323, 1524.06546312]
SSL4EO_L1C_STD = [786.78685367, 850.34818441, 875.06484736, 1138.84957046, 1122.17775652, 1161.59187054,
                  1274.39184232, 1248.42891965, 1345.52684884, 577.31607053, 51.15431158, 1336.09932639, 1136.53823676]


_network_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="terracodec-official")
R = TypeVar("R")


def on_network_thread(function: Callable[..., R], *args: Any) -> R:
    """``function(*args)`` in the one thread that evaluates the published networks, with one intra-op thread.

    The published models compute their entropy parameters (and TEC-TT its dequantiser features)
    outside our canonical path; torch's intra-op thread count is per OS thread, so the same call
    from different Dask or zarr threads could round differently. One dedicated thread makes every
    encode and decode in a process evaluate the network the same way (and serialises them: the
    networks keep per-call state on themselves).
    """
    def run() -> R:
        torch.set_num_threads(1)
        with torch.inference_mode():
            return function(*args)

    return _network_thread.submit(run).result()


@dataclass(frozen=True)
class OfficialModel:
    """One published TerraCodec family: hub repository, file names and lambdas (quality 1 = lowest rate)."""

    name: str
    variant: str  # the terracodec factory / pretrained_weights key
    architecture: str  # "factorizedprior", "elic", "temporaltransformer" or "flextec"
    band_set: str
    lambdas: tuple[str, ...]
    #: FlexTEC: qualities 1..levels from its one checkpoint (tokens coded per patch); 0 = one checkpoint per quality
    levels: int = 0

    @property
    def temporal(self) -> bool:
        return self.architecture in ("temporaltransformer", "flextec")

    @property
    def quality_count(self) -> int:
        return self.levels or len(self.lambdas)

    @property
    def hub_id(self) -> str:
        from terracodec.models import pretrained_weights

        return pretrained_weights[self.variant]["hf_hub_id"]

    def checkpoint_filename(self, key: str) -> str:
        from terracodec.models import pretrained_weights

        return pretrained_weights[self.variant]["hf_hub_filename"][key]

    def lambda_key(self, quality: float) -> str:
        """The checkpoint that serves ``quality`` (an integer 1..quality_count)."""
        index = int(round(quality))
        if not (1 <= index <= self.quality_count) or abs(quality - index) > 1e-9:
            what = "tokens coded per patch" if self.levels else f"one per published checkpoint {', '.join(self.lambdas)}"
            raise ConfigurationError(f"quality for {self.name} must be an integer 1..{self.quality_count} ({what}); got {quality}")
        return self.lambdas[0] if self.levels else self.lambdas[index - 1]


OFFICIAL_MODELS: dict[str, OfficialModel] = {m.name: m for m in (
    OfficialModel("tec-fp", "terracodec_v1_fp_s2l2a", "factorizedprior", "S2L2A",
                  ("lambda-0.5", "lambda-2", "lambda-10", "lambda-40", "lambda-200")),
    OfficialModel("tec-elic", "terracodec_v1_elic_s2l2a", "elic", "S2L2A",
                  ("lambda-0.5", "lambda-2", "lambda-10", "lambda-40", "lambda-200")),
    OfficialModel("tec-tt-l2a", "terracodec_v1_tt_s2l2a", "temporaltransformer", "S2L2A",
                  ("lambda-0.4", "lambda-1", "lambda-5", "lambda-20", "lambda-100", "lambda-200", "lambda-700")),
    OfficialModel("tec-tt-l1c", "terracodec_v1_tt_s2l1c", "temporaltransformer", "S2L1C",
                  ("lambda-5", "lambda-20", "lambda-100")),
    OfficialModel("flextec", "flextec_v1_s2l2a", "flextec", "S2L2A", ("lambda-800",), levels=16),
)}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or os.environ.get("TERRACODEC_OFFLINE", "0") not in ("0", "")


def find_checkpoint(model: OfficialModel, key: str) -> tuple[Path, Path | None]:
    """Paths of the weights and (if present) config for ``key``, from the places listed in the module doc."""
    from huggingface_hub import hf_hub_download

    filename = model.checkpoint_filename(key)
    config_name = f"config_{key}.yaml"
    looked: list[str] = []
    home = os.environ.get("TERRACODEC_HOME")
    if home:
        folder = Path(home).expanduser() / model.hub_id
        looked.append(str(folder / filename))
        if (folder / filename).is_file():
            config = folder / config_name
            return folder / filename, config if config.is_file() else None
    else:
        looked.append("$TERRACODEC_HOME (not set)")
    attempts = [True] if _offline() else [True, False]
    for local_only in attempts:
        where = "Hugging Face cache" if local_only else f"https://huggingface.co/{model.hub_id}"
        try:
            weights = Path(hf_hub_download(model.hub_id, filename, local_files_only=local_only))
        except Exception as exc:  # the hub client raises many types for "not there"/"offline"
            looked.append(f"{where} ({type(exc).__name__})")
            continue
        try:
            config = Path(hf_hub_download(model.hub_id, config_name, local_files_only=local_only))
        except Exception:
            config = None
        return weights, config
    if _offline():
        looked.append("the hub (skipped: HF_HUB_OFFLINE/TERRACODEC_OFFLINE is set)")
    raise ModelNotFoundError(
        f"no weights for {model.name} {key} ({filename}); looked in: " + "; ".join(looked)
        + f". Put the hub files in $TERRACODEC_HOME/{model.hub_id}/ to use them offline."
    )


def build_network(model: OfficialModel, key: str, image_size: int = 256) -> tuple[torch.nn.Module, Path]:
    """The terracodec image network (TEC-FP, TEC-ELIC) for ``key`` with its weights loaded, on CPU, in eval mode."""
    weights, config_path = find_checkpoint(model, key)
    config = yaml.safe_load(config_path.read_text()) if config_path else {}
    if "N" not in config or "M" not in config:
        raise ModelNotFoundError(f"{model.name} {key}: config_{key}.yaml with N and M is needed beside {weights}")
    ensure_compressai_importable()
    from terracodec.models import build_terracodec

    in_channels = config.get("in_channels", 13 if model.band_set == "S2L1C" else 12)
    # terracodec flips global determinism flags in its factory; keep that inside our scope.
    with deterministic_torch():
        network = build_terracodec(model.architecture, in_channels=in_channels, N=config["N"], M=config["M"],
                                   image_size=image_size)
    load_weights(network, weights, f"{model.name} (N={config['N']}, M={config['M']})", prefix="model.")
    network.update(force=True)
    return network.eval(), weights.parent


def load_weights(network: torch.nn.Module, weights: Path, what: str, prefix: str = "") -> None:
    """Load a published checkpoint into ``network``, without its range-coder tables (rebuilt from the
    weights afterwards) and with ``prefix`` taken off its keys (the image checkpoints have "model.");
    :class:`ModelNotFoundError` if the file is not a checkpoint of ``what``."""
    checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    state_dict = {k.removeprefix(prefix): v for k, v in checkpoint.items() if not is_coder_table(k)}
    try:
        # nn.Module's loader, not CompressAI's override (which wants the coder tables we dropped)
        torch.nn.Module.load_state_dict(network, state_dict, strict=False)
    except RuntimeError as exc:
        raise ModelNotFoundError(f"{weights} does not fit {what}: {exc}") from exc
    missing = [k for k in network.state_dict() if k not in state_dict and not is_coder_table(k)]
    if missing:
        raise ModelNotFoundError(f"{weights} is not a {what} checkpoint: missing {missing[:5]}")


def statistics_for(model: OfficialModel, weights_dir: Path | None) -> tuple[list[float], list[float]]:
    override = weights_dir / "statistics.json" if weights_dir else None
    if override and override.is_file():
        stats = json.loads(override.read_text())
        return stats["mean"], stats["std"]
    if model.band_set == "S2L1C":
        return SSL4EO_L1C_MEAN, SSL4EO_L1C_STD
    return SSL4EO_L2A_MEAN, SSL4EO_L2A_STD


class OfficialImageCoder:
    """:class:`TileCoder` for TEC-FP and TEC-ELIC: one checkpoint per quality, so quality is fixed at load."""

    tile_size = 256
    size_multiple = 64
    temporal = False
    latent_scale_table = False  # CompressAI's own streams
    lowpass_correction = True

    def __init__(self, network: torch.nn.Module, identity: ModelIdentity, quality: float) -> None:
        self.network = network
        self.identity = identity
        self.quality = quality
        self._latent_shapes: dict[tuple[int, int], object] = {}
        self._streams = len(self._compress_raw(torch.zeros(1, len(identity.bands), 64, 64))["strings"])

    def streams(self, quality: float) -> int:
        return self._streams

    def rate_lambda(self, quality: float) -> float | None:
        """Unknown in our units (the published lambdas weigh another distortion), so no low-pass layer."""
        return None

    @torch.inference_mode()
    def _compress_raw(self, x: torch.Tensor) -> dict:
        out = self.network.compress(x)
        self._latent_shapes.setdefault(tuple(x.shape[-2:]), out["shape"])
        return out

    def _latent_shape(self, tile_shape: tuple[int, int]) -> object:
        if tile_shape not in self._latent_shapes:
            device = next(self.network.parameters()).device
            self._compress_raw(torch.zeros(1, len(self.identity.bands), *tile_shape, device=device))
        return self._latent_shapes[tile_shape]

    def _decode_latent(self, strings: list[list[bytes]], tile_shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and the latent fed to the synthesis transform (captured by a hook)."""
        captured: list[torch.Tensor] = []
        hook = self.network.g_s.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            x_hat = self.network.decompress(strings, self._latent_shape(tile_shape))
        finally:
            hook.remove()
        return x_hat, captured[0]

    def compress(self, x: torch.Tensor, quality: float, refinement_steps: int = 0,
                 exact_reconstruction: bool = True) -> tuple[list[CodedTile], torch.Tensor]:
        if refinement_steps:  # the engine refuses this earlier (registry.check_refinement); direct callers too
            raise ConfigurationError("the published TerraCodec models do not support latent refinement")
        return on_network_thread(self._compress, x)

    def _compress(self, x: torch.Tensor) -> tuple[list[CodedTile], torch.Tensor]:
        strings = self._compress_raw(x)["strings"]
        # The published models quantise around context-dependent means; decoding once here gives the
        # exact latent a decoder must reproduce (which the checksum pins down) and its reconstruction.
        x_hat, y_hat = self._decode_latent(strings, tuple(x.shape[-2:]))
        tiles = [CodedTile(tuple(s[i] for s in strings), symbol_checksum(y_hat[i])) for i in range(x.shape[0])]
        return tiles, x_hat

    def decompress(self, streams: list[tuple[bytes, ...]], tile_shape: tuple[int, int], quality: float,
                   scale_table: bool = False) -> tuple[torch.Tensor, list[int]]:
        strings = [[tile[k] for tile in streams] for k in range(self._streams)]
        x_hat, y_hat = on_network_thread(self._decode_latent, strings, tile_shape)
        return x_hat, [symbol_checksum(y_hat[i]) for i in range(len(streams))]
