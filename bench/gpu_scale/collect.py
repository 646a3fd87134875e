#!/usr/bin/env python3
"""Bundles run_gpu.sh's results (RESULTS_DIR) into OUT_DIR/gpu_scale.json and gpu_scale.md: the environment, per
model adadecode's pass-cost curve, standard decoding's rate and llama-bench's figures side by side, and the
predicted speedups of every priced trace file. Standard library only (runs before anything else is known to work).

    python3 bench/gpu_scale/collect.py RESULTS_DIR OUT_DIR [--mode gpu|cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return {"error": f"{path.name}: {e}"}


def llama_bench_summary(doc: Any) -> dict[str, Any]:
    """llama-bench -o json: a list of tests; n_prompt > 0 is a prompt batch, n_gen > 0 token generation."""
    out: dict[str, Any] = {}
    if not isinstance(doc, list):
        return {"error": "not a llama-bench JSON list"}
    for t in doc:
        # The median of the repetitions, not llama-bench's mean: on the GPU its first repetition of each test is
        # 2-3x the others (12.6 ms against 4.3 for one token on the H200), and the mean carries that.
        samples = [float(x) for x in t.get("samples_ns") or []]
        if samples:
            seconds = statistics.median(samples) / 1e9
        else:
            tps_mean = float(t.get("avg_ts", 0.0))
            tokens = t.get("n_prompt", 0) + t.get("n_gen", 0)
            seconds = tokens / tps_mean if tps_mean > 0 else 0.0
        if t.get("n_prompt", 0) > 0 and t.get("n_gen", 0) == 0:
            k = int(t["n_prompt"])
            out[f"pp{k}"] = {"tokens_per_second": k / seconds if seconds > 0 else 0.0,
                             "pass_ms": 1e3 * seconds if seconds > 0 else None}  # fmt: skip
        elif t.get("n_gen", 0) > 0 and t.get("n_prompt", 0) == 0:
            n_gen = int(t["n_gen"])
            out[f"tg{n_gen}"] = {"tokens_per_second": n_gen / seconds if seconds > 0 else 0.0,
                                 "ms_per_token": 1e3 * seconds / n_gen if seconds > 0 else None}  # fmt: skip
    for key in ("gpu_info", "backends", "build_commit", "flash_attn", "n_gpu_layers"):
        if doc and key in doc[0]:
            out[key] = doc[0][key]
    return out


def collect(results: Path, mode: str) -> tuple[dict[str, Any], str]:
    env = (results / "env.txt").read_text() if (results / "env.txt").exists() else ""
    models: dict[str, Any] = {}
    for p in sorted(results.glob("curve-*.json")):
        if p.name.endswith(".heads.json"):
            continue
        name = p.stem.removeprefix("curve-")
        curve = _load(p)
        if isinstance(curve, dict):
            for m in curve.get("measurements", []):
                m.pop("all", None)  # the repetitions: in results.tar.gz
        models.setdefault(name, {})["curve"] = curve
    for p in sorted(results.glob("llama-bench-*.json")):
        models.setdefault(p.stem.removeprefix("llama-bench-"), {})["llama_bench"] = llama_bench_summary(_load(p))
    predictions = {p.stem.removeprefix("price-"): _load(p) for p in sorted(results.glob("price-*.json"))}
    doc = {"kind": "adadecode-gpu-scale", "mode": mode, "env": env, "models": models, "predictions": predictions}

    lines = [f"# GPU scale ({mode})", "", "```", env.strip(), "```", ""]
    lines += ["## Cost of a pass over all layers, no logits (ms; relative to 1 row)", ""]
    lines += ["| model | " + " | ".join(f"{k} rows" for k in range(1, 9)) + " | standard t/s | llama.cpp tg128 t/s |"]
    lines += ["|---" * 11 + "|"]
    for name, m in models.items():
        c = m.get("curve", {})
        rows = c.get("rows", {}) if isinstance(c, dict) else {}
        one = rows.get("1", {}).get("full_pass_seconds")
        cells = []
        for k in range(1, 9):
            r = rows.get(str(k))
            t = r["full_pass_seconds"] if r else None
            cells.append(f"{t * 1e3:.2f} ({t / one:.2f})" if t and one else "")
        std = c.get("standard_decode", {}).get("tokens_per_second") if isinstance(c, dict) else None
        tg = m.get("llama_bench", {}).get("tg128", {}).get("tokens_per_second")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {std or 0:.1f} | {tg or 0:.1f} |")
    lines += ["", "## llama-bench: a batch of k prompt tokens (ms per batch)", ""]
    for name, m in models.items():
        lb = m.get("llama_bench")
        if lb:
            ms = {k: lb.get(f"pp{k}", {}).get("pass_ms") for k in (1, 2, 4, 8)}
            cells = [f"pp{k} {v:.2f}" for k, v in ms.items() if v]
            lines.append(f"- {name}: " + ", ".join(cells))
    for stem, pred in predictions.items():
        lines += ["", f"## Predicted speedups over standard decoding: traces {stem}", ""]
        modes = pred.get("modes", {}) if isinstance(pred, dict) else {}
        curves = list(pred.get("curves", {})) if isinstance(pred, dict) else []
        lines += ["| mode | measured (CPU) | " + " | ".join(curves) + " |", "|---" * (2 + len(curves)) + "|"]
        for mode, t in modes.items():
            cells = [f"{t['predicted_speedup'].get(c, float('nan')):.2f}x" for c in curves]
            lines.append(f"| {mode} | {t['measured_speedup']:.2f}x | " + " | ".join(cells) + " |")
    return doc, "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--mode", default="gpu")
    args = p.parse_args()
    doc, md = collect(args.results, args.mode)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_scale.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / "gpu_scale.md").write_text(md)
    n_models, n_predictions = len(doc["models"]), len(doc["predictions"])
    print(f"{args.out}/gpu_scale.json, gpu_scale.md: {n_models} models, {n_predictions} predictions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
