"""Finds prompts of a bench run that something else on the machine slowed down.

The systems of one prompt run one after the other, so a build or a test that overlaps a prompt slows some of its
systems and not others. Per system, a cost model is fitted over the run: its seconds on a prompt, in units of that
prompt's standard decoding's seconds per pass, as a x passes + b x the rows its passes carried beyond one (an
anchor: a x tokens). A prompt whose seconds lie more than `--z` robust standard deviations (1.4826 x the median
absolute deviation of the logarithms) above what the model predicts is listed. Delete listed prompts from the JSON
and run `adadecode bench ... --resume` to redo them.

Session runs (bench/session_bench.py) carry a direct measurement instead: the CPU time other processes spent
while each server's session ran. A session where they used more than `--other-cores` cores on average is listed;
rerun the whole file.

    python3 bench/check_disturbed.py bench/results/full/qwen2.5-coder-1.5b-humaneval.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any


def passes_and_extra_rows(system: dict[str, Any]) -> tuple[int, int]:
    """Passes of one of our modes, and the rows they carried beyond one each; an anchor's tokens, and 0."""
    rows = system.get("stats", {}).get("rows_per_pass")
    if not rows:
        return len(system.get("tokens", [])), 0
    return sum(rows), sum((r - 1) * n for r, n in enumerate(rows) if r > 0)


def cost_model(points: list[tuple[float, float, float]]) -> tuple[float, float]:
    """Least squares fit of seconds / standard's seconds per pass = a x passes + b x extra rows, over (passes,
    extra rows, that ratio) per prompt. a is below 1 where passes run over part of the layers (early exits)."""
    spp = sum(p * p for p, _, _ in points)
    spe = sum(p * e for p, e, _ in points)
    see = sum(e * e for _, e, _ in points)
    spy = sum(p * y for p, _, y in points)
    sey = sum(e * y for _, e, y in points)
    det = spp * see - spe * spe
    if det <= 0:
        return (spy / spp if spp else 1.0), 0.0
    return (spy * see - sey * spe) / det, (spp * sey - spe * spy) / det


def median_and_spread(values: list[float]) -> tuple[float, float]:
    """The median and the robust standard deviation (1.4826 x the median absolute deviation)."""
    median = statistics.median(values)
    return median, 1.4826 * statistics.median(abs(v - median) for v in values)


def relative_costs(doc: dict[str, Any], name: str) -> dict[int, float]:
    """Per prompt: log of its seconds against what the run's cost model predicts for its passes."""
    points: dict[int, tuple[float, float, float]] = {}
    for p in doc["prompts"]:
        std, mine = p["systems"]["standard"], p["systems"].get(name)
        if not mine or not mine.get("decode_seconds") or not std.get("decode_seconds"):
            continue
        passes, extra = passes_and_extra_rows(mine)
        base = std["decode_seconds"] / passes_and_extra_rows(std)[0]
        points[p["index"]] = (passes, extra, mine["decode_seconds"] / base)
    logs: dict[int, float] = {}
    kept = dict(points)
    for _ in range(2):  # fit, drop the prompts far above the fit, fit again
        a, b = cost_model(list(kept.values()))
        logs = {i: math.log(y / max(1e-9, a * n + b * e)) for i, (n, e, y) in points.items()}
        median, spread = median_and_spread(list(logs.values()))
        kept = {i: points[i] for i, v in logs.items() if spread == 0 or v - median < 3 * spread} or points
    return logs


def outliers(doc: dict[str, Any], z_limit: float) -> list[tuple[int, str, float, float]]:
    """(prompt index, system, robust z, ratio to the system's median) of every flagged prompt and system."""
    found = []
    systems = [s for s in doc["prompts"][0]["order"] if s != "standard"] if doc["prompts"] else []
    for name in systems:
        logs = relative_costs(doc, name)
        if len(logs) < 8:
            continue
        median, spread = median_and_spread(list(logs.values()))
        for index, v in logs.items():
            z = (v - median) / spread if spread > 0 else 0.0
            if z > z_limit:
                found.append((index, name, z, math.exp(v - median)))
    return sorted(found)


def disturbed_sessions(doc: dict[str, Any], limit: float) -> list[tuple[str, str, float, float]]:
    """(server, session, other processes' cores, steal cores) of every session of a session_bench run over the
    limit, or without the measurement (a run from before it was recorded)."""
    found = []
    for name, res in doc["servers"].items():
        for session in ("coding", "agent"):
            other, steal = res[session].get("other_cores", math.inf), res[session].get("steal_cores", math.inf)
            if other > limit or steal > limit:
                found.append((name, session, other, steal))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="JSON files written by adadecode bench")
    parser.add_argument("--z", type=float, default=5.0, help="robust z-score above which a prompt is listed")
    parser.add_argument("--other-cores", type=float, default=0.15, metavar="C",
                        help="session runs: cores other processes may use before a session is listed")  # fmt: skip
    args = parser.parse_args(argv)
    for path in args.runs:
        doc = json.loads(path.read_text())
        if "servers" in doc:
            sessions = disturbed_sessions(doc, args.other_cores)
            print(f"{path}: {len(doc['servers'])} server runs, {len(sessions)} sessions flagged")
            for name, session, other, steal in sessions:
                measured = f"other processes {other:.2f} cores, steal {steal:.2f}" if math.isfinite(other) else (
                    "not measured (a run from before session_bench recorded other processes' CPU time)")
                print(f"  {name} {session}: {measured}")
            continue
        flagged = outliers(doc, args.z)
        print(f"{path}: {len(doc['prompts'])} prompts, {len({i for i, *_ in flagged})} flagged")
        for index, name, z, ratio in flagged:
            print(f"  prompt {index}: {name} {ratio:.2f}x slower than the run's median prompt (z = {z:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
