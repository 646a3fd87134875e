#!/usr/bin/env python3
"""Which GPU kernels make a pass over k rows dearer than a pass over one? Run under Nsight Compute.

A pass over 2 rows of the synthetic 8B costs 1.26x one row with adadecode but 1.03x with llama.cpp (bench/results/
gpu_scale/h200-2026-12-04). This driver runs warm-up passes of k rows, then one more between
cuProfilerStart/Stop, so that `ncu --profile-from-start off` times every kernel of exactly that pass; one process
per row count:

    for k in 1 2 4 8; do GGML_CUDA_DISABLE_GRAPHS=1 ncu --profile-from-start off --clock-control none \\
        --metrics gpu__time_duration.sum --csv --print-units base \\
        python3 bench/gpu_scale/kernel_profile.py MODEL.gguf --rows $k > ncu-$k.csv; done
    python3 bench/gpu_scale/kernel_profile.py --summarize ncu-1.csv ncu-2.csv ncu-4.csv ncu-8.csv > kernels.md

Without ncu (`--no-profiler`) it only times the passes, for a check on the CPU.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def _profiler() -> tuple[Any, Any] | None:
    """(start, stop) of the CUDA profiler range that `ncu --profile-from-start off` waits for (driver API)."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    return cuda.cuProfilerStart, cuda.cuProfilerStop


def drive(args: argparse.Namespace) -> int:
    from adadecode import Model

    model = Model(str(args.model), n_ctx=args.n_ctx, n_threads=1, device=args.device)
    engine = model._engine
    rows = [int(r) for r in args.rows.split(",")]
    layers = model.n_layer if args.layers == 0 else args.layers
    for k in rows:  # warm-up: graphs allocated, weights resident
        engine.time_pass(0, layers, k, args.position, logit_rows=min(k, args.logit_rows), head=False, reps=3)
    profiler = None if args.no_profiler else _profiler()
    if profiler is not None:
        profiler[0]()
    for k in rows:
        logit_rows = min(k, args.logit_rows)
        seconds = engine.time_pass(0, layers, k, args.position, logit_rows=logit_rows, head=False, reps=1)[0]
        print(f"rows {k}: pass over {layers} layers, {logit_rows} logit rows: {seconds * 1e3:.3f} ms", file=sys.stderr,
              flush=True)  # fmt: skip
    if profiler is not None:
        profiler[1]()
    return 0


def _without_arguments(kernel: str) -> str:
    """'void f<(ggml_type)12, 1>(const void *, int)' -> 'f<(ggml_type)12, 1>': template arguments tell the
    variants apart (the weight type, the number of columns), the argument list does not."""
    kernel = kernel.strip()
    if kernel.endswith(")"):
        depth = 0
        for i in range(len(kernel) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(kernel[i], 0)
            if depth == 0:
                kernel = kernel[:i]
                break
    return kernel.removeprefix("void ").strip()


def _launches(path: Path) -> list[tuple[str, float]]:
    """ncu's CSV (one line per kernel launch and metric) -> (kernel name, nanoseconds) in launch order."""
    text = path.read_text()
    start = text.find('"ID"')
    if start < 0:
        raise ValueError(f'{path}: no ncu CSV header ("ID",...) found')
    launches = []
    for rec in csv.DictReader(io.StringIO(text[start:])):
        if rec.get("Metric Name") == "gpu__time_duration.sum":
            name = _without_arguments(rec["Kernel Name"])
            launches.append((name, float(rec["Metric Value"].replace(",", ""))))
    return launches


def summarize(paths: list[Path]) -> str:
    """One ncu CSV per row count (one pass each) -> a table of kernel launches and time by kernel name."""
    tables: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
    labels = [p.stem for p in paths]
    for label, path in zip(labels, paths, strict=True):
        agg: dict[str, list[float]] = defaultdict(list)
        for name, ns in _launches(path):
            agg[name].append(ns)
        for name, v in agg.items():
            tables[name][label] = (len(v), sum(v))
    out = [
        "| kernel | " + " | ".join(f"{lab}: launches, us" for lab in labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for name in sorted(tables, key=lambda n: -max(t for _, t in tables[n].values())):
        cells = [f"{tables[name][lab][0]}, {tables[name][lab][1] / 1e3:.1f}" if lab in tables[name] else ""
                 for lab in labels]  # fmt: skip
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    for what, idx in (("launches", 0), ("kernel time, us", 1)):
        sums = [sum(tables[n][lab][idx] for n in tables if lab in tables[n]) for lab in labels]
        cells = [f"**{s:.0f}**" if idx == 0 else f"**{s / 1e3:.1f}**" for s in sums]
        out.append(f"| **total {what}** | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, nargs="?", help="GGUF file (driver mode)")
    p.add_argument("--rows", default="1,2,4,8")
    p.add_argument("--layers", type=int, default=0, help="pass over the first N layers (default: all)")
    p.add_argument("--logit-rows", type=int, default=0, help="also the logits of up to N rows (needs all layers)")
    p.add_argument("--position", type=int, default=200)
    p.add_argument("--n-ctx", type=int, default=512)
    p.add_argument("--device", default="gpu")
    p.add_argument("--no-profiler", action="store_true", help="do not call cuProfilerStart/Stop")
    p.add_argument(
        "--summarize",
        type=Path,
        nargs="+",
        default=None,
        help="ncu CSVs (one per row count) to tabulate instead of driving",
    )
    args = p.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    if args.model is None:
        p.error("a model is needed unless --summarize is given")
    return drive(args)


if __name__ == "__main__":
    raise SystemExit(main())
