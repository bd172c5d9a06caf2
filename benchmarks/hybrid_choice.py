"""Which member of a hybrid model codes each chunk: per quality, the chunks each member's coding won.

Codes every benchmark tile (default: the validation split) through the public numcodecs
configuration of the hybrid at each whole quality of its range and counts the model names in the
chunk headers; the hybrid's rate-distortion curve is in ``rd_benchmark.py``'s report (``--also-models``).

    python benchmarks/hybrid_choice.py [inputs ...] [--model tec-s2-hybrid-v2] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import coders, reporting  # noqa: E402
from benchmarks.rd_benchmark import add_data_arguments, load_tiles  # noqa: E402
from numcodec_plugin import bitstream, quality_range  # noqa: E402
from numcodec_plugin.models.registry import HYBRID_MODELS  # noqa: E402


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--model", default=min(HYBRID_MODELS), choices=sorted(HYBRID_MODELS),
                        help="hybrid model (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="folder to write hybrid_choice.md to")
    args = parser.parse_args(argv)
    tiles = load_tiles(args)
    members = HYBRID_MODELS[args.model]
    low, high = quality_range(args.model)
    rows, totals = [], Counter()
    for quality in range(math.ceil(low), math.floor(high) + 1):
        coder = coders.TerraCodec(float(quality), args.model)
        won = Counter(bitstream.unpack(coder.encode(tile.data)[0]).header.model_name for tile in tiles)
        totals += won
        rows.append([quality, *(won[m] for m in members)])
    rows.append(["all", *(totals[m] for m in members)])
    sections = [f"Data: {len(tiles)} tiles: {', '.join(t.name for t in tiles)}.",
                f"## Chunks coded by each member of {args.model}\n\n"
                + reporting.markdown_table(("quality", *members), rows)]
    reporting.publish(reporting.report("Which member codes each chunk", "benchmarks/hybrid_choice.py", argv, 2,
                                       args.model, sections), args.out, "hybrid_choice.md")


if __name__ == "__main__":
    main()
