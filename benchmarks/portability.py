"""Decoding on another CPU: chunks coded here, decoded with oneDNN held to older instruction sets.

The learned decoder is floating point, and oneDNN picks its convolution kernels by instruction set
(SSE4.1, AVX, AVX2, AVX-512, AMX), so another CPU may compute the network with other bits. This
script measures what that does to our chunks without a second machine: it codes the benchmark tiles
here, then decodes them in fresh processes with ``ONEDNN_MAX_CPU_ISA`` set to each of ``--isas``
(oneDNN's documented switch; ``ATEN_CPU_CAPABILITY`` likewise for torch's own kernels) and compares
every decoded value with this machine's decode. Per setting and target it reports:

* chunks that decode, and chunks refused with ``EntropyModelMismatchError`` (a hyper-synthesis
  output that lands on the other side of a scale-table step changes the entropy model; the symbol
  checksum catches it, and error-bounded chunks also check a CRC of the learned reconstruction);
* the largest absolute difference (DN) from this machine's decode and the share of values that differ.

``--models`` compares the bundled model with its ``-portable`` mode (the decoder in rounded
float64, :class:`~numcodec_plugin.models.gain_hyperprior.PortableDecoder`), and the report
gives each model's decode time per tile on this machine.

Example::

    python benchmarks/portability.py --max-tiles 2 --out docs/benchmarks
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import reporting, timing  # noqa: E402
from benchmarks.rd_benchmark import add_data_arguments, load_tiles  # noqa: E402
from numcodec_plugin import DEFAULT_MODEL, bitstream, engine  # noqa: E402
from numcodec_plugin.models.registry import PORTABLE_MODES  # noqa: E402

#: the oneDNN instruction sets decoded with (torch's own kernels are held to their portable build too)
DEFAULT_ISAS = ("AVX", "SSE41")
SPEED_HEADERS = ("Model", "Chunks", "decode ms per tile")
HEADERS = ("Chunks", "with a learned layer", "Decoded with", "decoded", "refused (EntropyModelMismatchError)",
           "max abs difference (DN)", "values that differ")


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--qualities", type=float, nargs="+", default=(1.0, 5.0, 8.0),
                        help="lossy qualities to code the tiles at (default: %(default)s)")
    parser.add_argument("--max-error", type=float, default=10.0,
                        help="also code every tile with this bound in DN, at the quality the codec picks and at "
                             "quality 5 (default: %(default)s)")
    parser.add_argument("--isas", nargs="+", default=DEFAULT_ISAS,
                        help="ONEDNN_MAX_CPU_ISA values to decode with (default: %(default)s)")
    parser.add_argument("--models", nargs="+", default=tuple(dict.fromkeys((DEFAULT_MODEL, *PORTABLE_MODES.values(), *PORTABLE_MODES))),
                        help="TerraCodec models to compare (default: the bundled model and the portable modes with "
                             "their weights' models: %(default)s)")
    parser.add_argument("--out", type=Path, help="folder to write portability.md to")
    parser.add_argument("--note", default="", help="a remark printed at the top of the report")
    parser.add_argument("--decode", type=Path, help=argparse.SUPPRESS)  # worker mode: decode this folder's chunks
    return parser.parse_args(argv)


def decode_folder(folder: Path) -> None:
    """Worker: decode every ``*.tec`` in ``folder`` to ``<name>.<label>.npy``, or record the refusal."""
    label = os.environ.get("ONEDNN_MAX_CPU_ISA", "native")
    outcome = {}
    for path in sorted(folder.glob("*.tec")):
        try:
            np.save(path.with_suffix(f".{label}.npy"), engine.decode(path.read_bytes()))
            outcome[path.stem] = "decoded"
        except engine.EntropyModelMismatchError:
            outcome[path.stem] = "refused"
    (folder / f"{label}.json").write_text(json.dumps(outcome))


def decode_with(folder: Path, isa: str | None) -> dict[str, str]:
    """Decode the folder's chunks in a fresh process, with oneDNN (and torch) held to ``isa``."""
    env = dict(os.environ)
    if isa is not None:
        env.update(ONEDNN_MAX_CPU_ISA=isa, ATEN_CPU_CAPABILITY="default")
    else:
        env.pop("ONEDNN_MAX_CPU_ISA", None)
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--decode", str(folder)], env=env, check=True)
    return json.loads((folder / f"{isa or 'native'}.json").read_text())


def comparison_row(kind: str, learned: int, isa: str, names: list[str], folder: Path, outcome: dict[str, str]) -> list[object]:
    """One table row: how the chunks ``names`` (``learned`` of them with a learned layer) fared under ``isa``."""
    decoded = [n for n in names if outcome[n] == "decoded"]
    differences = [np.abs(np.load(folder / f"{n}.{isa}.npy").astype(np.float64) - np.load(folder / f"{n}.native.npy"))
                   for n in decoded]
    largest = max((float(d.max()) for d in differences), default=None)
    share = sum(int(np.count_nonzero(d)) for d in differences) / max(1, sum(d.size for d in differences))
    return [kind, learned, f"ONEDNN_MAX_CPU_ISA={isa}", f"{len(decoded)} / {len(names)}", len(names) - len(decoded),
            None if largest is None else f"{largest:g}", f"{100 * share:.4f} %"]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.decode:
        decode_folder(args.decode)
        return
    tiles = load_tiles(args)
    bounded = f"max_error {args.max_error:g} DN"
    settings = {}
    for model in args.models:
        for q in args.qualities:
            settings[(model, f"quality {q:g}")] = engine.EncodeSettings(model=model, quality=q)
        settings[(model, f"{bounded}, quality chosen by the codec")] = engine.EncodeSettings(model=model, max_error=args.max_error)
        settings[(model, f"{bounded} at quality 5")] = engine.EncodeSettings(model=model, quality=5.0, max_error=args.max_error)
    rows, speed_rows = [], []
    with tempfile.TemporaryDirectory(prefix="portability_") as workdir:
        folder = Path(workdir)
        kinds: dict[tuple[str, str], list[str]] = {}
        learned: dict[str, bool] = {}
        for k, (kind, setting) in enumerate(settings.items()):
            for t, tile in enumerate(tiles):
                name = f"s{k}_t{t}"
                data = engine.encode(tile.data, setting)
                (folder / f"{name}.tec").write_bytes(data)
                learned[name] = not bitstream.unpack(data).residual_only  # quality <= 0 is a network quality too
                kinds.setdefault(kind, []).append(name)
        for model in args.models:  # decode speed here, on the first quality's chunks
            chunks = [(folder / f"{n}.tec").read_bytes() for n in kinds[(model, f"quality {args.qualities[0]:g}")]]
            seconds = timing.median_seconds(lambda: [engine.decode(chunk) for chunk in chunks], 3)
            speed_rows.append([model, f"quality {args.qualities[0]:g}", f"{1e3 * seconds / len(chunks):.0f}"])
        native = decode_with(folder, None)
        if any(v != "decoded" for v in native.values()):
            raise AssertionError("a chunk coded here does not decode here")
        for isa in args.isas:
            outcome = decode_with(folder, isa)
            rows += [comparison_row(f"{model}, {kind}", sum(learned[n] for n in names), isa, names, folder, outcome)
                     for (model, kind), names in kinds.items()]
    text = reporting.report(
        "Decoding on another CPU", "benchmarks/portability.py", argv, 1, args.models[0],
        [f"Data: {len(tiles)} tiles of {args.tile} x {args.tile} pixels: {', '.join(t.name for t in tiles)}. Coded "
         "and decoded here; then decoded again in fresh processes with oneDNN held to older instruction sets "
         "(`ONEDNN_MAX_CPU_ISA`, and `ATEN_CPU_CAPABILITY=default`) and compared value by value.",
         reporting.markdown_table(HEADERS, rows, 1),
         "Decode time here (one tile per chunk, median of 3 passes over the chunks):\n\n"
         + reporting.markdown_table(SPEED_HEADERS, speed_rows, 2)],
        args.note)
    reporting.publish(text, args.out, "portability.md")


if __name__ == "__main__":
    main()
