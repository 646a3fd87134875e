#!/usr/bin/env python3
"""Replay simulator: what would each decoding mode gain on another machine or at another model size?

Records decoding traces here (the passes each mode runs, from the engine's pass trace), measures or reads a
pass-cost curve (seconds of a pass over layers [a, b) for k rows), and prices the traces with it
(python/adadecode/replay.py says how):

    # traces of every mode on real prompts (4 built-in requests, or --task humaneval|mtbench|FILE.jsonl --limit N)
    python3 bench/replay_sim.py record -m smollm2-135m --heads smollm2-135m -n 128 -t 1 -o traces.json
    # this machine's curve (any model; --device gpu on a GPU; synthetic models: bench/synth_gguf.py)
    python3 bench/replay_sim.py curve -m smollm2-135m --heads smollm2-135m -t 1 -o curve.json
    # predicted speedups over standard decoding, per curve (adadecode-microbench JSON works as a curve too)
    python3 bench/replay_sim.py price traces.json curve.json bench/results/gpu/microbench-smollm2-h100.json
    # what-if: the same curve with k-row passes costing what llama.cpp's k-token batches cost on that file
    python3 bench/replay_sim.py rescale curve.json --like llama-bench.json -o curve-like-llama.json

`price` prints one table: per mode the measured speedup (decode seconds of the recorded run), the traced speedup
(the recorded passes' own seconds) and the predicted speedup under each curve, and writes JSON with -o.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _model(args: argparse.Namespace) -> Any:
    from adadecode import Model

    return Model(args.model, n_ctx=args.n_ctx, n_threads=args.threads, heads=args.heads, device=args.device)


def _prompts(model: Any, args: argparse.Namespace) -> list[list[int]]:
    from adadecode.replay import DEFAULT_REQUESTS

    if args.task:
        from adadecode.bench.tasks import load_prompts
        from adadecode.fetch import cache_root

        return [p.ids for p in load_prompts(model, args.task, cache_root() / "data", args.limit)]
    requests = DEFAULT_REQUESTS[: args.limit or None]
    if model.vocab.chat_template:
        return [model.tokenize(model.apply_chat_template([{"role": "user", "content": r}])) for r in requests]
    return [model.tokenize(r) for r in requests]


def _write(path: Path, doc: Any, indent: int | None = 1) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=indent) + "\n")
    tmp.replace(path)


def cmd_record(args: argparse.Namespace) -> int:
    from adadecode.replay import record

    model = _model(args)
    modes = [m for m in args.modes.split(",") if m]
    if "standard" not in modes:
        modes.insert(0, "standard")
    skipped = [m for m in modes if m.startswith("adadecode") and not model.exit_layers]
    modes = [m for m in modes if m not in skipped]
    prompts = _prompts(model, args)
    start = time.time()
    traces = record(model, prompts, modes, max_tokens=args.max_tokens)
    doc = {
        "kind": "adadecode-traces",
        "model": Path(model.path).name,
        "n_layer": model.n_layer,
        "exit_layers": model.exit_layers,
        "device": model.device,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "modes": modes,
        "skipped_modes": {m: "the model has no exit heads" for m in skipped},
        "load_average": os.getloadavg()[0],
        "seconds": time.time() - start,
        "prompts": traces,
    }
    _write(args.output, doc, indent=None)  # thousands of short lists: one line
    print(f"{args.output}: {len(traces)} prompts x {len(modes)} modes ({', '.join(modes)})")
    return 0


def _synthetic_heads(args: argparse.Namespace) -> None:
    """Identity exit heads at one layer of the model, written next to the output: for timing an exit check on a
    model without trained heads (a synthetic one)."""
    from adadecode.heads_format import write_identity_heads

    path = args.output.with_name(args.output.stem + ".heads.gguf")
    try:
        write_identity_heads(_model_path(args.model), path, args.synthetic_heads)
    except ValueError as e:
        raise ValueError(f"--synthetic-heads: {e}") from e
    args.heads = str(path)


def _model_path(name: str) -> Path:
    from adadecode.fetch import resolve_model

    return Path(resolve_model(name))


def cmd_curve(args: argparse.Namespace) -> int:
    from adadecode.replay import measure_curve

    if args.synthetic_heads is not None:
        if args.heads:
            raise ValueError("--heads and --synthetic-heads exclude each other")
        _synthetic_heads(args)
    model = _model(args)
    rows = list(range(1, args.max_rows + 1))
    curve = measure_curve(model, rows=rows, position=args.position, reps=args.reps, statistic=args.statistic)
    if args.decode_tokens:
        # Standard decoding's own rate on this device, next to llama-bench's tg figure for the same file.
        ids = [(i * 7919 + 13) % model.n_vocab for i in range(args.position)]
        model.generate(ids, max_tokens=8, mode="standard")  # warm-up: graphs built, weights resident
        g = model.generate(ids, max_tokens=args.decode_tokens, mode="standard")
        curve["standard_decode"] = {"prompt_tokens": len(ids), "tokens": g.stats["n_generated"],
                                    "decode_seconds": g.stats["decode_seconds"],
                                    "tokens_per_second": g.stats["tokens_per_second"]}  # fmt: skip
    curve["load_average"] = os.getloadavg()[0]
    curve["command"] = " ".join(sys.argv)
    _write(args.output, curve)
    full = [curve["rows"][str(k)]["full_pass_seconds"] * 1e3 for k in rows]
    print(f"{args.output}: {curve['model']} on {curve['device']}, pass over all layers (ms) for 1..{len(rows)} rows: "
          + " ".join(f"{t:.2f}" for t in full))  # fmt: skip
    return 0


def price_table(traces: dict[str, Any], curve_paths: list[Path], setup: str | None) -> tuple[dict[str, Any], str]:
    from adadecode.replay import PassCost, load_curve, predict

    curves: dict[str, PassCost] = {}
    described = {}
    for p in curve_paths:
        c = load_curve(p, setup)
        name = p.stem
        curves[name] = PassCost(c)
        described[name] = {"path": str(p), "model": c.get("model"), "device": c.get("device"),
                           "n_layer": c["n_layer"]}  # fmt: skip
    totals = predict(traces["prompts"], int(traces["n_layer"]), curves)
    lines = [
        f"traces: {traces['model']} ({traces['n_layer']} layers, exits {traces['exit_layers']}), "
        f"{len(traces['prompts'])} prompts, on {traces['device']}",
        "",
        "| mode | tokens | passes | rows | parity | measured | traced | " + " | ".join(curves) + " |",
        "|---" * (7 + len(curves)) + "|",
    ]
    for mode, t in totals.items():
        pred = " | ".join(f"{t['predicted_speedup'].get(n, float('nan')):.2f}x" for n in curves)
        lines.append(
            f"| {mode} | {t['tokens']} | {t['passes']} | {t['rows']} | {t['parity_vs_standard']} | "
            f"{t['measured_speedup']:.2f}x | {t['traced_speedup']:.2f}x | {pred} |"
        )
    doc = {"kind": "adadecode-replay-prediction", "traces_model": traces["model"], "curves": described,
           "modes": totals}  # fmt: skip
    return doc, "\n".join(lines)


def cmd_price(args: argparse.Namespace) -> int:
    traces = json.loads(args.traces.read_text())
    if traces.get("kind") != "adadecode-traces":
        raise ValueError(f"{args.traces} is not a traces file written by `replay_sim.py record`")
    doc, table = price_table(traces, args.curves, args.setup)
    print(table)
    if args.output:
        _write(args.output, doc)
    return 0


def rescale_rows(curve: dict[str, Any], relative: dict[int, float]) -> dict[str, Any]:
    """`curve` with each row count's pass costs scaled so that k rows cost relative[k] x one row (a what-if: the
    multi-row cost of another engine on the same file, the one-row pass kept). Row counts between two measured ones
    are interpolated linearly; beyond the largest, refused."""
    known = sorted(relative)
    if not known or known[0] != 1 or relative[1] != 1.0:
        raise ValueError("the relative costs must start at 1 row = 1.0")

    def rel(k: int) -> float:
        if k in relative:
            return relative[k]
        hi = next((r for r in known if r > k), None)
        if hi is None:
            raise ValueError(f"no relative cost at or beyond {k} rows (measured: {known})")
        lo = max(r for r in known if r < k)
        return relative[lo] + (relative[hi] - relative[lo]) * (k - lo) / (hi - lo)

    out = json.loads(json.dumps(curve))
    one = float(curve["rows"]["1"]["full_pass_seconds"])
    for key, entry in out["rows"].items():
        k = int(key)
        factor = rel(k) * one / float(curve["rows"][key]["full_pass_seconds"])
        for field in ("base_seconds", "layer_seconds", "full_pass_seconds", "full_pass_with_logits_seconds"):
            if field in entry:
                entry[field] = float(entry[field]) * factor
        if key in out.get("logits_seconds", {}):
            out["logits_seconds"][key] = float(out["logits_seconds"][key]) * factor
    out["rescaled_rows"] = {str(k): rel(k) for k in sorted(int(r) for r in out["rows"])}
    return out


def cmd_rescale(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu_scale"))
    from collect import llama_bench_summary

    curve = json.loads(args.curve.read_text())
    bench = llama_bench_summary(json.loads(args.like.read_text()))
    ms = {int(k[2:]): v["pass_ms"] for k, v in bench.items() if k.startswith("pp") and v.get("pass_ms")}
    if 1 not in ms:
        raise ValueError(f"{args.like}: no one-token prompt batch (llama-bench -p 1,...)")
    out = rescale_rows(curve, {k: t / ms[1] for k, t in ms.items()})
    out["rescaled_like"] = str(args.like)
    _write(args.output, out)
    print(f"{args.output}: {curve.get('model')} with rows costing " +
          ", ".join(f"{k}: {v:.2f}x" for k, v in out["rescaled_rows"].items()))  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="replay_sim", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("-m", "--model", required=True, help="GGUF path or fetch name")
        q.add_argument("--heads", default=None, help="exit heads (path, name or auto)")
        q.add_argument("-t", "--threads", type=int, default=1)
        q.add_argument("--device", default=None, help="a ggml device (gpu, CUDA0, CPU); default: mapped CPU")
        q.add_argument("--n-ctx", type=int, default=1024)
        q.add_argument("-o", "--output", type=Path, required=True)

    r = sub.add_parser("record", help="record decoding traces of every mode")
    model_args(r)
    r.add_argument("--modes", default="standard,adadecode,ngram,adadecode+ngram")
    r.add_argument("-n", "--max-tokens", type=int, default=128)
    r.add_argument("--task", default=None, help="humaneval, mtbench or a JSONL file (default: 4 built-in requests)")
    r.add_argument("--limit", type=int, default=0, help="first N prompts")
    r.set_defaults(func=cmd_record)

    c = sub.add_parser("curve", help="measure this machine's pass-cost curve")
    model_args(c)
    c.add_argument("--max-rows", type=int, default=8)
    c.add_argument("--position", type=int, default=200)
    c.add_argument("--reps", type=int, default=10)
    c.add_argument("--statistic", choices=("min", "median"), default="min")
    c.add_argument("--synthetic-heads", type=int, nargs="?", const=0, default=None, metavar="LAYER",
                   help="time the exit check with identity heads at LAYER (default n_layer/4), for synthetic models")
    c.add_argument("--decode-tokens", type=int, default=0, help="also time standard decoding of N tokens")
    c.set_defaults(func=cmd_curve)

    q = sub.add_parser("price", help="price traces with one or more curves")
    q.add_argument("traces", type=Path)
    q.add_argument("curves", type=Path, nargs="+", help="curve JSON (replay_sim curve or adadecode-microbench)")
    q.add_argument("--setup", default=None, help="which setup of a microbench JSON (default: its first)")
    q.add_argument("-o", "--output", type=Path, default=None)
    q.set_defaults(func=cmd_price)

    s = sub.add_parser("rescale", help="a curve whose k-row passes cost what llama-bench's k-token batches do")
    s.add_argument("curve", type=Path)
    s.add_argument("--like", type=Path, required=True, help="llama-bench -o json with -p 1,2,4,8 on the same file")
    s.add_argument("-o", "--output", type=Path, required=True)
    s.set_defaults(func=cmd_rescale)

    args = p.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"replay_sim: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
