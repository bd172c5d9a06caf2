"""Load codec models by name, once per process and device.

Names:

* ``"klt-wavelet-v3"`` (:data:`DEFAULT_MODEL`): the classical transform coder
  (:mod:`numcodec_plugin.models.transform_coder`: per-tile spectral KLT, 9/7 wavelet, dead-zone
  quantiser with rate-distortion decisions, tabled Laplace laws, compiled inner loops), qualities
  -3..10 with the bundled network's lambdas (extrapolated beyond 1..8), its subbands coded by the compiled rANS coder (:mod:`numcodec_plugin.models.laplace_rans`),
  which decodes faster than constriction's grouped calls and skips classes of zeros. The default
  since session 17.
* ``"klt-wavelet-v2"``: the same coder with constriction's ANS (the same laws, the same symbols and
  reconstruction; v3's streams are within a few bytes of its size). The default in session 16: it codes
  0.1% more bits than the hybrid below at four to six times its encode speed (docs/benchmarks/rd.md,
  codec_speed.md, hybrid-speed/codec_speed.md); its chunks decode as they always did.
* ``"tec-s2-hybrid-v2"``: per chunk, the cheaper (``lambda * D + R``) of ``tec-s2-gain-v3`` and
  ``klt-wavelet-v2`` at the same quality; a chunk's header names the one that coded it
  (:func:`hybrid_members`, :func:`numcodec_plugin.engine.encode_many`). Qualities -3..10: below -1, the
  network's lowest, and above 8, its highest, only ``klt-wavelet-v2`` codes. The default in session 15.
* ``"tec-s2-gain-v3"``: the bundled learned model (the default before the hybrid), weights shipped in
  ``numcodec_plugin/models/weights/``: ``tec-s2-gain-v2`` with entropy tables per whole quality
  (hyper-latent tables and latent scale factors, :mod:`numcodec_plugin.training.entropy_tables`),
  stored as a delta of v2's file. The same symbols and reconstruction as v2, in shorter streams.
* ``"tec-s2-gain-v2"``: one checkpoint, continuous quality 1..8 as trained, down to -1
  by extrapolation (:data:`EXTRAPOLATED_LEVELS`). Its hyper-synthesis
  computes with integers (:mod:`numcodec_plugin.models.integer_hyper_synthesis`), so every CPU and
  GPU derives the same entropy parameters: its lossy chunks decode on CPUs with other instruction
  sets (to within float rounding of the reconstruction) instead of being refused now and then.
  The default before v3; its chunks decode as they always did.
* ``"tec-s2-gain-v1"``: the first bundled model, the same transforms with a float hyper-synthesis
  (the default until the integer one matched its rate); its chunks decode as they always did.
* ``"tec-fp"``, ``"tec-elic"``: official TerraCodec image models, quality 1..5 = the published
  lambdas (see :mod:`numcodec_plugin.models.official` for where weights are found).
* ``"tec-tt-l2a"``, ``"tec-tt-l1c"`` (quality = published lambda), ``"flextec"`` (quality 1..16):
  official temporal models (:mod:`numcodec_plugin.models.official_temporal`).
* ``"tec-s2-temporal-v1"`` (:data:`DEFAULT_TEMPORAL_MODEL`): the bundled temporal mode, the bundled
  ``tec-s2-gain-v1`` predicting each frame's latent from the previous one
  (:mod:`numcodec_plugin.models.temporal_gain_hyperprior`); same weights and qualities.
* ``"tec-s2-gain-v1-portable"``: ``tec-s2-gain-v1`` evaluated so that any CPU reproduces its whole decoder
  (:class:`~numcodec_plugin.models.gain_hyperprior.PortableDecoder`): its chunks decode to the same
  values on CPUs with other instruction sets, at the cost of float64 arithmetic; same weights and qualities.
* ``"test-fixed-seed"`` / ``"test-fixed-seed-l1c"`` / ``"test-fixed-seed-temporal"``: tiny randomly
  initialised models built from a fixed seed, **for tests only** (they compress poorly).
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import torch

from numcodec_plugin.errors import ConfigurationError, ModelNotFoundError
from numcodec_plugin.models.bands import BAND_SETS
from numcodec_plugin.models.base import AnyCoder
from numcodec_plugin.models.gain_hyperprior import GainHyperprior, GainHyperpriorCoder, training_lambdas
from numcodec_plugin.models.identity import ModelIdentity
from numcodec_plugin.models.official import OFFICIAL_MODELS, OfficialImageCoder, build_network, statistics_for
from numcodec_plugin.models.official_temporal import OfficialTemporalCoder, load_temporal_network
from numcodec_plugin.models import transform_coder
from numcodec_plugin.models.temporal_gain_hyperprior import TemporalGainHyperpriorCoder
from numcodec_plugin.models.transform_coder import TransformCoder
from numcodec_plugin.scoped_determinism import deterministic_torch

DEFAULT_MODEL = "klt-wavelet-v3"
DEFAULT_TEMPORAL_MODEL = "tec-s2-temporal-v1"
WEIGHTS_DIR = Path(__file__).parent / "weights"
TEST_MODELS = {"test-fixed-seed": "S2L2A", "test-fixed-seed-l1c": "S2L1C", "test-fixed-seed-temporal": "S2L2A"}
#: temporal modes of bundled image models: name -> the image model whose weights they use
#: (each name stays bound to the weights its chunks were written with, whatever the default becomes)
TEMPORAL_MODES = {DEFAULT_TEMPORAL_MODEL: "tec-s2-gain-v1", "test-fixed-seed-temporal": "test-fixed-seed"}
#: bundled image models whose decoder any CPU reproduces: name -> the model whose weights
#: they use (:class:`~numcodec_plugin.models.gain_hyperprior.PortableDecoder`)
PORTABLE_MODES = {"tec-s2-gain-v1-portable": "tec-s2-gain-v1"}
#: classical coders in the model registry: name -> band set
CLASSICAL_MODELS = {"klt-wavelet-v2": "S2L2A", "klt-wavelet-v3": "S2L2A"}
#: the classical coders whose subbands the compiled rANS coder codes (the others: constriction)
RANS_CODED = frozenset({"klt-wavelet-v3"})
#: models that code each chunk with every member and keep the cheaper: name -> members, the network first
#: (which the name otherwise stands for: its band set, tiles, qualities and lambdas)
HYBRID_MODELS = {"tec-s2-hybrid-v2": ("tec-s2-gain-v3", "klt-wavelet-v2")}
#: the model :func:`check_refinement`'s error suggests: the bundled network
REFINABLE_EXAMPLE = "tec-s2-gain-v3"
_TEST_MEAN = {"S2L2A": [1000.0] * 12, "S2L1C": [1500.0] * 13}
_TEST_STD = {"S2L2A": [1500.0] * 12, "S2L1C": [1200.0] * 13}

_cache: dict[tuple, AnyCoder] = {}
_lock = threading.Lock()


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, else ``$TERRACODEC_DEVICE``, else CUDA when present, else CPU."""
    choice = device or os.environ.get("TERRACODEC_DEVICE")
    if choice:
        return torch.device(choice)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_models() -> list[str]:
    bundled = sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))
    return (sorted(HYBRID_MODELS) + bundled + sorted(CLASSICAL_MODELS) + [DEFAULT_TEMPORAL_MODEL] + sorted(PORTABLE_MODES)
            + sorted(OFFICIAL_MODELS) + sorted(TEST_MODELS))


def hybrid_members(model: str | None = None, quality: float | None = None) -> tuple[str, ...]:
    """The models ``model`` codes each chunk with (the cheaper coding is kept): a hybrid's members whose
    quality range holds ``quality`` (all of them where it is None), else itself."""
    name = model or DEFAULT_MODEL
    if name not in HYBRID_MODELS:
        return (name,)
    members = HYBRID_MODELS[name]
    if quality is None:
        return members
    return tuple(m for m in members if quality_range(m)[0] <= quality <= quality_range(m)[1])


def _bundled_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.pt"


def model_band_count(model: str | None = None) -> int:
    """Number of bands ``model`` codes, without loading its weights."""
    name = model or DEFAULT_MODEL
    if name in OFFICIAL_MODELS:
        return len(BAND_SETS[OFFICIAL_MODELS[name].band_set])
    if name in TEST_MODELS:
        return len(BAND_SETS[TEST_MODELS[name]])
    if name in CLASSICAL_MODELS:
        return len(BAND_SETS[CLASSICAL_MODELS[name]])
    return int(_shipped_header(_weights_name(name))["config"]["bands"])


def is_temporal(model: str | None = None) -> bool:
    """Whether ``model`` codes the time steps of a chunk jointly (without loading its weights)."""
    name = model or DEFAULT_MODEL
    return OFFICIAL_MODELS[name].temporal if name in OFFICIAL_MODELS else name in TEMPORAL_MODES


def temporal_model(model: str | None = None) -> str:
    """The model to code time chunks with: ``model`` (which must be temporal), else :data:`DEFAULT_TEMPORAL_MODEL`."""
    if model is None:
        return DEFAULT_TEMPORAL_MODEL
    if not is_temporal(model):
        temporal = [DEFAULT_TEMPORAL_MODEL] + sorted(name for name, m in OFFICIAL_MODELS.items() if m.temporal)
        raise ConfigurationError(f"temporal coding needs a temporal model; {model} codes single dates "
                                 f"(temporal ones: {', '.join(temporal)})")
    return model


def image_counterpart(model: str) -> str | None:
    """The image model whose weights temporal ``model`` uses (None for the official temporal models)."""
    return TEMPORAL_MODES.get(model)


def _weights_name(name: str) -> str:
    """The bundled or test model whose weights ``name`` uses (itself, or the image model of a temporal or
    portable mode, or the network of a hybrid)."""
    if name in HYBRID_MODELS:
        return HYBRID_MODELS[name][0]
    return TEMPORAL_MODES.get(name) or PORTABLE_MODES.get(name, name)


def _read_weights_file(name: str) -> dict:
    """Everything a bundled weights file holds: ``state_dict``, ``config``, ``statistics``, ``lambdas``, ..."""
    path = _bundled_path(name)
    if not path.is_file():
        raise _unknown(name)
    return torch.load(path, map_location="cpu", weights_only=True)


@functools.lru_cache(maxsize=None)
def _shipped_header(name: str) -> dict:
    """A bundled weights file without its state dict (read once per process, kept small)."""
    return {k: v for k, v in _read_weights_file(name).items() if k != "state_dict"}


def load_bundled_network(name: str) -> tuple[GainHyperprior, dict]:
    """A bundled image model's network (CPU, weights loaded) and the rest of its weights file
    (``statistics``, ``lambdas``, ``config``, ...)."""
    if not _bundled_path(name).is_file():
        raise _unknown(name)
    return read_network(_bundled_path(name))


def read_network(path: Path) -> tuple[GainHyperprior, dict]:
    """The network of a weights file in the shipped format (CPU, weights loaded) and the file's other entries.
    A file with ``delta_of`` holds only the tensors it adds to or changes in that weights file (beside it)."""
    shipped = torch.load(path, map_location="cpu", weights_only=True)
    state = shipped.pop("state_dict")
    if "delta_of" in shipped:
        base = torch.load(path.parent / f"{shipped['delta_of']}.pt", map_location="cpu", weights_only=True)
        state = {**base["state_dict"], **state}
    network = GainHyperprior(**shipped["config"])
    network.load_state_dict(state)
    return network, shipped


#: how many levels below its lowest trained one a model with gain units may be asked for. There the
#: encoder codes each chunk with the network at the quality asked for (gains, inverse gains and lambda
#: extrapolated geometrically from the two lowest levels, :meth:`GainHyperprior.gains`; chunk format 6,
#: which older readers refuse), at every whole quality above it and at the lowest trained one, the
#: engine's corrections at the extrapolated lambda each time, and keeps the coding of lowest
#: ``lambda * D + R`` (:func:`numcodec_plugin.engine.network_qualities`): rates below the trained ones
#: (docs/model-card.md measures them). The extrapolated gains alone are not enough: on scenes the
#: network codes well they cost more bits, not fewer, the further they go.
EXTRAPOLATED_LEVELS = 2.0


def trained_quality_range(model: str | None = None) -> tuple[float, float]:
    """The qualities (inclusive) ``model`` (default: the bundled model) was trained or published for:
    1 to its number of levels (a hybrid: its network's)."""
    name = model or DEFAULT_MODEL
    if name in OFFICIAL_MODELS:
        return (1.0, float(OFFICIAL_MODELS[name].quality_count))
    if name in TEST_MODELS:
        return (1.0, 4.0)
    if name in CLASSICAL_MODELS:
        return (1.0, float(len(transform_coder.LAMBDAS)))
    return (1.0, float(len(_shipped_header(_weights_name(name))["lambdas"])))


def quality_range(model: str | None = None) -> tuple[float, float]:
    """Valid ``quality`` values (inclusive) of ``model`` (default: the bundled model); higher = more bits.
    The trained range, and for the bundled and test models (gain units) :data:`EXTRAPOLATED_LEVELS` below
    it; a classical coder's from its ``LOWEST_QUALITY`` to its ``HIGHEST_QUALITY``; a hybrid's members'
    ranges together."""
    name = model or DEFAULT_MODEL
    if name in HYBRID_MODELS:
        ranges = [quality_range(member) for member in HYBRID_MODELS[name]]
        return (min(low for low, _ in ranges), max(high for _, high in ranges))
    low, high = trained_quality_range(name)
    if name in CLASSICAL_MODELS:
        return (transform_coder.LOWEST_QUALITY, transform_coder.HIGHEST_QUALITY)
    if name not in OFFICIAL_MODELS:
        low -= EXTRAPOLATED_LEVELS
    return (low, high)


def default_quality(model: str | None = None) -> float:
    """The middle of the trained range: the codec's default when none is given."""
    lo, hi = trained_quality_range(model)
    return float(round((lo + hi) / 2 + 0.49))


def _unknown(name: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"unknown model {name!r}; available: {', '.join(available_models())}")


def load_model(name: str | None = None, quality: float | None = None, device: str | torch.device | None = None) -> AnyCoder:
    """The :class:`AnyCoder` for ``name`` on ``device``, loaded once per process (thread-safe); for a hybrid,
    its network's (:func:`hybrid_members` names what the encoder codes with)."""
    name = name or DEFAULT_MODEL
    name = HYBRID_MODELS.get(name, (name,))[0]
    target = resolve_device(device)
    official = OFFICIAL_MODELS.get(name)
    weights_key = official.lambda_key(quality if quality is not None else default_quality(name)) if official else None
    key = (name, weights_key, str(target))
    with _lock:
        coder = _cache.get(key)
        if coder is None:
            coder = _build(name, weights_key, quality)
            coder.network.to(target)
            _cache[key] = coder
    return coder


def _build(name: str, weights_key: str | None, quality: float | None) -> AnyCoder:
    with deterministic_torch(), torch.inference_mode(False):
        if name in OFFICIAL_MODELS:
            model = OFFICIAL_MODELS[name]
            network, folder = (load_temporal_network if model.temporal else build_network)(model, weights_key)
            mean, std = statistics_for(model, folder)
            identity = ModelIdentity.of(f"{name}/{weights_key}", model.band_set, mean, std, network)
            if model.temporal:
                return OfficialTemporalCoder(network, identity, flextec=bool(model.levels))
            return OfficialImageCoder(network, identity, float(quality or default_quality(name)))
        if name in CLASSICAL_MODELS:
            return TransformCoder(name, CLASSICAL_MODELS[name], rans=name in RANS_CODED)
        image = _weights_name(name)
        if image in TEST_MODELS:
            band_set = TEST_MODELS[image]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1234)
                network = GainHyperprior(bands=len(BAND_SETS[band_set]), N=16, M=32, levels=4)
            mean, std = _TEST_MEAN[band_set], _TEST_STD[band_set]
            lambdas = training_lambdas(network.levels)
        else:
            network, shipped = load_bundled_network(image)
            mean, std = shipped["statistics"]["mean"], shipped["statistics"]["std"]
            lambdas = tuple(shipped["lambdas"])
            band_set = "S2L2A"
        network.eval()
        identity = ModelIdentity.of(name, band_set, mean, std, network)
        network.update(force=True)
        if name in TEMPORAL_MODES:
            return TemporalGainHyperpriorCoder(network, identity, lambdas)
        return GainHyperpriorCoder(network, identity, lambdas, portable=name in PORTABLE_MODES)


def supports_refinement(name: str | None) -> bool:
    """Whether the encoder can refine ``name``'s latents: bundled image models with gain units (not the
    published TerraCodec models, whose entropy models it does not own, nor temporal models, whose
    frames predict each other, nor classical coders, which have no latents)."""
    name = name or DEFAULT_MODEL
    return not (name in OFFICIAL_MODELS or name in CLASSICAL_MODELS or is_temporal(name))


def check_refinement(name: str | None, steps: int) -> None:
    """Raise :class:`ConfigurationError` unless ``steps`` latent-refinement steps are valid for ``name``:
    a whole number >= 0, and 0 for models the encoder cannot refine (:func:`supports_refinement`)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigurationError(f"refinement_steps must be a whole number >= 0, got {steps!r}")
    name = name or DEFAULT_MODEL
    if steps and not supports_refinement(name):
        raise ConfigurationError(f"model {name} does not support latent refinement; use refinement_steps=0 "
                                 f"or a bundled learned image model such as {REFINABLE_EXAMPLE}")


def check_quality(name: str | None, quality: float) -> None:
    """Raise :class:`ConfigurationError` unless ``quality`` is valid for ``name``."""
    lo, hi = quality_range(name)
    if not (lo <= quality <= hi):
        raise ConfigurationError(f"quality {quality} is outside {name or DEFAULT_MODEL}'s range [{lo:g}, {hi:g}]")
