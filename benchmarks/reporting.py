"""What the benchmark reports share: the machine and software, Markdown tables, report files."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import imagecodecs
import numcodecs
import numpy as np
import torch

import numcodec_plugin


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(threads: int) -> list[str]:
    """Markdown bullet lines describing the machine, libraries and thread setting."""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores, load average {load}",
        f"- threads: {threads} (TerraCodec tile threads and imagecodecs numthreads)",
        f"- Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"numcodecs {numcodecs.__version__}, imagecodecs {imagecodecs.__version__} "
        f"({imagecodecs.jpeg2k_version()}, {imagecodecs.jpegxl_version()}), xr-terracodec {numcodec_plugin.__version__}",
    ]


def model_line(model: str | None) -> str:
    """The TerraCodec model and the digest of its weights (which snapshot was measured)."""
    name = model or numcodec_plugin.DEFAULT_MODEL
    low, high = numcodec_plugin.quality_range(name)
    identity = numcodec_plugin.load_model(name).identity
    return f"- TerraCodec model: {name}, weights digest {identity.digest.hex()}, quality range {low:g}..{high:g}"


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces this run."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", script, *arguments])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], text_columns: int = 1) -> str:
    """A GitHub Markdown table; the first ``text_columns`` columns left-aligned, the rest right-aligned."""
    align = ["---" if i < text_columns else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join("-" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(title: str, script: str, argv: Sequence[str] | None, threads: int, model: str | None,
           sections: Sequence[str], note: str = "") -> str:
    """A Markdown report: title, optional note, how and where it was run, then ``sections``."""
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = [f"# {title}", ""]
    if note:
        header += [f"> {note}", ""]
    header += ["```", command_line(script, argv), "```", "", f"- date: {date}", *machine_lines(threads),
               model_line(model)]
    return "\n".join(header) + "\n\n" + "\n\n".join(sections) + "\n"


def write(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def publish(text: str, out: Path | None, filename: str) -> None:
    """Print a report and, with ``out``, also write it as ``out/filename``."""
    print(text)
    if out:
        write(out / filename, text)
        print(f"wrote {out / filename}", file=sys.stderr)
