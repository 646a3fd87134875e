"""Replay simulation: price recorded decoding traces with a pass-cost curve (bench/replay_sim.py).

Layer-parallel decoding pays off where a pass over k rows costs little more than one row. Whether it does at the
model sizes it is made for, on a GPU, can be asked without running the real model there: record which passes each
mode runs on real prompts here (the engine's pass trace: layers [a, b), rows, logit rows, exit head; the scheduler's
choices do not depend on the machine except through the exit policy), measure what a pass of each shape costs on
the target (``measure_curve``, on a synthetic model of the target's shape, python/adadecode/synth.py), and add up.

A curve gives, per row count k, ``base_seconds`` (a pass's fixed cost: graph launch, embedding, upload) and
``layer_seconds`` (per layer), plus ``logits_seconds`` per number of logit rows and ``head_seconds`` (an exit check
on one row); a pass over layers [a, b) costs base[k] + (b - a) * layer[k] + logits[r] + head. A trace recorded on a
model of L_t layers, priced with a curve of L_c layers, scales its layer counts by L_c / L_t (exit layers at the same
depth fractions). adadecode-microbench's JSON is read as a curve too.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CURVE_KIND = "adadecode-pass-cost"
ROWS = tuple(range(1, 9))

# Requests for the default prompts: code (where drafts and early exits fire often) and chat.
DEFAULT_REQUESTS = [
    "Write a Python function that returns the n-th Fibonacci number iteratively, with a docstring.",
    "Write a Python class Stack with push, pop, peek and is_empty methods, each with a type-annotated signature.",
    "Explain the difference between a list and a tuple in Python, with an example of each.",
    "Give three tips for writing clear technical documentation, as a numbered list.",
]


def _pick(values: list[float], statistic: str) -> float:
    return min(values) if statistic == "min" else statistics.median(values)


def measure_curve(
    model: Any,
    rows: Sequence[int] = ROWS,
    position: int = 200,
    reps: int = 10,
    statistic: str = "min",
    head: bool = True,
) -> dict[str, Any]:
    """Measure the pass-cost curve of `model` (an adadecode.Model, n_ctx > position + max(rows)) on its device.

    Per row count: passes over all layers, the first half, the second half and the first quarter, fitted by least
    squares to base + layers * per_layer; the logits as the difference of full passes with and without them. The
    minimum over `reps` repetitions by default: on a shared machine noise only adds."""
    engine = model._engine
    n_layer = model.n_layer
    if statistic not in ("min", "median"):
        raise ValueError(f"statistic must be min or median, got {statistic!r}")
    if position + max(rows) > model.n_ctx:
        raise ValueError(f"position {position} + {max(rows)} rows exceed n_ctx {model.n_ctx}")
    half, quarter = max(1, n_layer // 2), max(1, n_layer // 4)
    ranges = sorted({(0, n_layer), (0, half), (half, n_layer), (0, quarter)} - {(n_layer, n_layer)})
    # Every shape once per round, round after round, so that a burst of load on a shared machine hits all alike.
    shapes = [(a, b, k, 0, False) for k in rows for a, b in ranges] + [(0, n_layer, k, k, False) for k in rows]
    if head and model.exit_layers:
        layer = model.exit_layers[0]
        shapes += [(0, layer, 1, 0, False), (0, layer, 1, 0, True)]
    times: dict[tuple[int, int, int, int, bool], list[float]] = {s: [] for s in shapes}
    for _ in range(reps):
        for a, b, k, logit_rows, with_head in shapes:
            t = engine.time_pass(a, b, k, position, logit_rows=logit_rows, head=with_head, reps=1)
            times[(a, b, k, logit_rows, with_head)].extend(t)
    measurements = [
        {"layer_begin": a, "layer_end": b, "rows": k, "logit_rows": r, "head": h, "seconds": _pick(v, statistic),
         "all": v}
        for (a, b, k, r, h), v in times.items()
    ]  # fmt: skip

    def timed(a: int, b: int, k: int, logit_rows: int = 0, with_head: bool = False) -> float:
        return _pick(times[(a, b, k, logit_rows, with_head)], statistic)

    per_rows: dict[str, dict[str, float]] = {}
    logits: dict[str, float] = {}
    for k in rows:
        points = [(b - a, timed(a, b, k)) for a, b in ranges]
        base, per_layer = _fit_line(points)
        full = timed(0, n_layer, k)
        with_logits = timed(0, n_layer, k, logit_rows=k)
        logits[str(k)] = max(0.0, with_logits - full)
        per_rows[str(k)] = {"base_seconds": base, "layer_seconds": per_layer, "full_pass_seconds": full,
                            "full_pass_with_logits_seconds": with_logits}  # fmt: skip
    head_seconds = 0.0
    if head and model.exit_layers:
        layer = model.exit_layers[0]
        head_seconds = max(0.0, timed(0, layer, 1, with_head=True) - timed(0, layer, 1))
    return {
        "kind": CURVE_KIND,
        "version": 1,
        "model": Path(model.path).name,
        "n_layer": n_layer,
        "n_embd": model.n_embd,
        "n_vocab": model.n_vocab,
        "device": model.device,
        "threads": engine.n_threads,
        "position": position,
        "reps": reps,
        "statistic": statistic,
        "rows": per_rows,
        "logits_seconds": logits,
        "head_seconds": head_seconds if head and model.exit_layers else None,
        "measurements": measurements,
    }


def _fit_line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of seconds against layer counts; the intercept is kept >= 0."""
    xs = [float(x) for x, _ in points]
    ys = [y for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else my / max(mx, 1.0)
    intercept = my - slope * mx
    if intercept < 0:  # a negative fixed cost is noise: put it all on the layers
        intercept, slope = 0.0, sum(ys) / sum(xs)
    return intercept, slope


def curve_from_microbench(doc: dict[str, Any], setup: str | None = None) -> dict[str, Any]:
    """A curve from adadecode-microbench's JSON (one setup: mmap, gpu, ...): passes over all layers with and without
    logits for 1..8 rows, the half-model pass and the exit check. The fixed cost per pass is the one-row
    extrapolation to zero layers from the half and full passes, taken as the same for every row count."""
    setups = [k for k, v in doc.items() if isinstance(v, dict) and "full_pass_seconds" in v]
    if not setups:
        raise ValueError("not an adadecode-microbench result: no setup with full_pass_seconds")
    if setup is None:
        setup = setups[0]
    if setup not in setups:
        raise ValueError(f"setup {setup!r} is not in the microbench result (it has {', '.join(setups)})")
    s, n_layer = doc[setup], int(doc["n_layer"])
    minimum = "full_pass_seconds_min" in s
    with_logits = s["full_pass_seconds_min" if minimum else "full_pass_seconds"]
    relative = s["relative_cost_min" if minimum else "relative_cost"]
    one = with_logits["1"]
    without = {k: relative[k] * one for k in relative}
    base = 0.0
    if "half_model_pass_seconds" in s:  # a median: extrapolate with the median full pass
        base = max(0.0, 2 * s["half_model_pass_seconds"] - s["relative_cost"]["1"] * s["full_pass_seconds"]["1"])
    rows = {
        k: {"base_seconds": base, "layer_seconds": (without[k] - base) / n_layer, "full_pass_seconds": without[k],
            "full_pass_with_logits_seconds": with_logits[k]}
        for k in without
    }  # fmt: skip
    return {
        "kind": CURVE_KIND,
        "version": 1,
        "model": doc.get("model"),
        "n_layer": n_layer,
        "device": setup,
        "threads": doc.get("threads"),
        "position": doc.get("position"),
        "statistic": "min" if minimum else "median",
        "source": "adadecode-microbench",
        "rows": rows,
        "logits_seconds": {k: max(0.0, with_logits[k] - without[k]) for k in without},
        "head_seconds": s.get("exit_check_seconds"),
    }


# The parts of a pass's cost that pass_cost_fit separates, in the order of its coefficients.
PASS_COST_PARTS = ("base", "layer, one row", "layer, per extra row", "logits, first row", "logits, per extra row",
                   "head check")  # fmt: skip


def pass_cost_fit(traces: list[dict[str, Any]], mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pass of `mode` in `record`'s traces fitted by least squares to base + layers x (one row + (rows - 1) x
    extra row) + logits (first row + (logit rows - 1) x extra row) + head check: the coefficients (PASS_COST_PARTS),
    and the passes' feature rows and seconds (a pass's cost of part i is rows[:, i] x coefficients[i])."""
    if not traces or any(m not in t["modes"] for t in traces for m in (mode, "standard")):
        raise ValueError(f"the pass-cost fit needs traces with the modes standard and {mode!r}")
    rows, seconds = [], []
    for t in traces:
        run = t["modes"][mode]
        for (a, b, k, logit_rows, head), s in zip(run["passes"], run["pass_seconds"], strict=True):
            rows.append([1.0, b - a, (b - a) * (k - 1), float(logit_rows > 0), max(0, logit_rows - 1), float(head)])
            seconds.append(s)
    if len(rows) < len(PASS_COST_PARTS):
        raise ValueError(f"the traces hold {len(rows)} passes of mode {mode!r}: too few to fit a curve")
    x, y = np.array(rows), np.array(seconds)
    missing = [name for name, col in zip(("extra rows", "logits", "head checks"), (2, 3, 5), strict=True)
               if not x[:, col].any()]  # fmt: skip
    if missing:
        raise ValueError(f"the {mode!r} passes have no {', '.join(missing)}: the fit cannot price them")
    return np.linalg.lstsq(x, y, rcond=None)[0], x, y


def curve_from_traces(
    traces: list[dict[str, Any]], mode: str, n_layer: int, check_bytes: float | None = None
) -> dict[str, Any]:
    """A curve fitted to what decoding itself spent (pass_cost_fit over the passes of `mode`). A microbench times
    passes of each shape alone, back to back; in decoding they alternate with passes of other shapes, so the weights
    a pass reads are colder (on the 1.5B, AVX-512 Zen 4, an extra row cost 0.15 of a row per layer in decoding
    against 0.005-0.11 in microbench curves). `check_bytes`: the bytes one head check reads, to price checks of other
    heads files per byte. A token's cost is standard decoding's median pass."""
    fit, x, _ = pass_cost_fit(traces, mode)
    coef = [max(0.0, float(c)) for c in fit]
    base, layer, extra_row, logits, extra_logits, head = coef
    token = statistics.median(s for t in traces for s in t["modes"]["standard"]["pass_seconds"])
    return {
        "kind": CURVE_KIND,
        "version": 1,
        "n_layer": n_layer,
        "source": "decode-trace fit",
        "mode": mode,
        "passes": len(x),
        "rows": {
            str(k): {
                "base_seconds": base,
                "layer_seconds": layer + (k - 1) * extra_row,
                **({"full_pass_with_logits_seconds": token} if k == 1 else {}),
            }
            for k in ROWS
        },
        "logits_seconds": {str(k): logits + (k - 1) * extra_logits for k in ROWS},
        "head_seconds": head,
        "head_check_bytes": check_bytes,
    }


def load_curve(path: str | Path, setup: str | None = None) -> dict[str, Any]:
    """A pass-cost curve from a JSON file: this module's format or adadecode-microbench's."""
    doc = json.loads(Path(path).read_text())
    if doc.get("kind") == CURVE_KIND:
        check_curve(doc)
        return doc
    if isinstance(doc.get("microbench"), dict):  # `adadecode bench --micro`'s report wraps the binary's JSON
        doc = doc["microbench"]
    curve = curve_from_microbench(doc, setup)
    check_curve(curve)
    return curve


def check_curve(curve: dict[str, Any]) -> None:
    """Raise ValueError naming what is missing or wrong in a curve."""
    for key in ("n_layer", "rows", "logits_seconds"):
        if key not in curve:
            raise ValueError(f"pass-cost curve lacks '{key}'")
    if not curve["rows"] or "1" not in curve["rows"]:
        raise ValueError("pass-cost curve has no entry for 1 row")
    for k, entry in curve["rows"].items():
        for field in ("base_seconds", "layer_seconds"):
            v = entry.get(field)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"pass-cost curve: rows[{k}].{field} must be a finite number >= 0, got {v!r}")


class PassCost:
    """Prices passes with a curve; row counts beyond the curve's extend its last step linearly."""

    def __init__(self, curve: dict[str, Any]) -> None:
        check_curve(curve)
        self.curve = curve
        self.n_layer = int(curve["n_layer"])
        self.rows = {int(k): v for k, v in curve["rows"].items()}
        self.logits = {int(k): float(v) for k, v in curve["logits_seconds"].items()}
        self.head = float(curve.get("head_seconds") or 0.0)

    @staticmethod
    def _at(table: dict[int, float], k: int) -> float:
        if k in table:
            return table[k]
        known = sorted(table)
        if k > known[-1]:
            hi = known[-1]
            lo = known[-2] if len(known) > 1 else hi
            step = (table[hi] - table[lo]) / (hi - lo) if hi != lo else table[hi] / hi
            return table[hi] + step * (k - hi)
        below = max(x for x in known if x < k)
        above = min(x for x in known if x > k)
        return table[below] + (table[above] - table[below]) * (k - below) / (above - below)

    def seconds(self, layers: float, rows: int, logit_rows: int = 0, head: bool = False) -> float:
        base = self._at({k: v["base_seconds"] for k, v in self.rows.items()}, rows)
        per_layer = self._at({k: v["layer_seconds"] for k, v in self.rows.items()}, rows)
        t = base + layers * per_layer
        if logit_rows > 0:
            t += self._at(self.logits, logit_rows)
        if head:
            t += self.head
        return t

    def price(self, passes: Sequence[Sequence[int]], trace_layers: int) -> float:
        """Seconds of a trace's decode passes ([layer_begin, layer_end, rows, logit_rows, head] each) recorded on a
        model of `trace_layers` layers."""
        scale = self.n_layer / trace_layers
        return sum(self.seconds((b - a) * scale, k, r, bool(h)) for a, b, k, r, h in passes)


def record(
    model: Any,
    prompts: Sequence[list[int]],
    modes: Sequence[str],
    max_tokens: int = 128,
    **generate_options: Any,
) -> list[dict[str, Any]]:
    """Generate greedily from every prompt in every mode with the engine's pass trace on. Per prompt: per mode the
    tokens, the measured decode seconds, the engine's statistics and the decode passes as [layer_begin, layer_end,
    rows, logit_rows, head] with their measured seconds."""
    engine = model._engine
    out = []
    for i, ids in enumerate(prompts):
        # The prompt ids too: with a mode's output they let _core.replay_ngram_drafts re-run the drafter's policy
        # under another machine's relative costs.
        entry: dict[str, Any] = {"index": i, "n_prompt": len(ids), "prompt": list(ids), "modes": {}}
        for mode in modes:
            engine.take_pass_trace()
            engine.trace_passes(True)
            try:
                g = model.generate(list(ids), max_tokens=max_tokens, mode=mode, **generate_options)
            finally:
                engine.trace_passes(False)
            trace = [t for t in engine.take_pass_trace() if not t["prompt"]]
            entry["modes"][mode] = {
                "tokens": g.tokens,
                "decode_seconds": g.stats["decode_seconds"],
                "stats": {k: v for k, v in g.stats.items() if k not in ("device", "peak_rss_mib")},
                "passes": [
                    [t["layer_begin"], t["layer_end"], t["rows"], t["logit_rows"], int(t["head"])] for t in trace
                ],
                "pass_seconds": [t["seconds"] for t in trace],
            }
        out.append(entry)
    return out


def predict(traces: list[dict[str, Any]], trace_layers: int, curves: dict[str, PassCost]) -> dict[str, Any]:
    """Per mode: measured decode seconds, traced pass seconds and, per curve, the priced seconds, summed over the
    prompts, with speedups over standard decoding (which must be among the recorded modes)."""
    modes = list(traces[0]["modes"]) if traces else []
    if "standard" not in modes:
        raise ValueError("the traces need the standard mode to compute speedups against")
    totals: dict[str, dict[str, Any]] = {}
    for mode in modes:
        runs = [t["modes"][mode] for t in traces]
        std = [t["modes"]["standard"] for t in traces]
        parity = sum(r["tokens"] == s["tokens"] for r, s in zip(runs, std, strict=True))
        tot: dict[str, Any] = {
            "tokens": sum(len(r["tokens"]) for r in runs),
            "passes": sum(len(r["passes"]) for r in runs),
            "rows": sum(p[2] for r in runs for p in r["passes"]),
            "parity_vs_standard": f"{parity}/{len(runs)}",
            "measured_decode_seconds": sum(r["decode_seconds"] for r in runs),
            "traced_pass_seconds": sum(sum(r["pass_seconds"]) for r in runs),
            "predicted_seconds": {
                name: sum(c.price(r["passes"], trace_layers) for r in runs) for name, c in curves.items()
            },
        }
        totals[mode] = tot
    base = totals["standard"]
    for tot in totals.values():
        tot["measured_speedup"] = base["measured_decode_seconds"] / tot["measured_decode_seconds"]
        tot["traced_speedup"] = base["traced_pass_seconds"] / tot["traced_pass_seconds"]
        tot["predicted_speedup"] = {
            name: base["predicted_seconds"][name] / s for name, s in tot["predicted_seconds"].items() if s > 0
        }
    return totals
