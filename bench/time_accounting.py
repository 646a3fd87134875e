"""Where layer-parallel decoding's time goes: adadecode's traced passes fitted to a per-part cost model.

    python bench/time_accounting.py record -m MODEL N TASK -o traces.json.gz [--heads H] [--curve-out curve.json]
    python bench/time_accounting.py analyse -m MODEL traces.json.gz [--heads H] [--curve-out curve.json]

`record` decodes N prompts x 256 tokens in standard and adadecode mode with the engine's pass trace on.

The fit: seconds of a pass = base + layers x (one row + extra rows x per extra row) + logits (first row, extra rows)
+ head check, by least squares over every adadecode pass of the traces (engine pass trace, adadecode.replay.record).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
from collections import defaultdict
from pathlib import Path

from adadecode.replay import PASS_COST_PARTS, pass_cost_fit


def record(model_name: str, n_prompts: int, task: str, heads: str, out: Path) -> None:
    import adadecode
    from adadecode.bench.tasks import load_prompts
    from adadecode.replay import record as record_traces

    model = adadecode.Model(model_name, heads=heads, n_threads=2, n_ctx=2048)
    traces = []
    for p in load_prompts(model, task, Path.home() / ".cache" / "adadecode", limit=n_prompts):
        model.generate(p.ids, max_tokens=8)  # warm-up
        traces += record_traces(model, [p.ids], ["standard", "adadecode"], 256)
    with gzip.open(out, "wt") as f:
        json.dump(traces, f)


def write_curve(traces: list, out: Path, model_name: str, heads: str) -> None:
    """The fit as a pass-cost curve (adadecode.replay.curve_from_traces), its checks priced per byte of `heads`."""
    from adadecode.fetch import resolve_model
    from adadecode.fit_features import check_bytes
    from adadecode.head_designs import from_heads_file
    from adadecode.heads import resolve_heads
    from adadecode.heads_format import read_heads
    from adadecode.replay import curve_from_traces
    from adadecode.saving import model_bytes

    model_path = str(resolve_model(model_name))
    h = read_heads(resolve_heads(heads, model_path))
    _, row_bytes, n_vocab = model_bytes(model_path)
    k_rows = len(h.vocab) if h.vocab is not None else n_vocab
    per_check = check_bytes(from_heads_file(h, h.layers[0]), k_rows, row_bytes)
    curve = curve_from_traces(traces, "adadecode", h.n_layer, per_check)
    out.write_text(json.dumps(curve, indent=1))
    print(f"wrote {out} (a check reads {per_check / 1e6:.1f} MB)")


def analyse(path: Path, model_name: str, curve_out: Path | None = None, heads: str = "auto") -> None:
    with gzip.open(path, "rt") as f:
        traces = json.load(f)
    for mode in ("standard", "adadecode"):
        runs = [t["modes"][mode] for t in traces]
        measured = sum(r["decode_seconds"] for r in runs)
        traced = sum(sum(r["pass_seconds"]) for r in runs)
        tokens = sum(len(r["tokens"]) for r in runs)
        print(f"{mode}: {tokens} tokens, {measured:.2f} s ({1000 * measured / tokens:.2f} ms/token); "
              f"passes {traced:.2f} s, outside passes {measured - traced:.2f} s")  # fmt: skip
    coef, x, y = pass_cost_fit(traces, "adadecode")
    shapes: dict[tuple[int, int, int, bool, int], list[float]] = defaultdict(list)
    for t in traces:
        r = t["modes"]["adadecode"]
        for (a, b, k, logit_rows, head), s in zip(r["passes"], r["pass_seconds"], strict=True):
            shapes[(a, b, min(k, 9), logit_rows > 0, head)].append(s)
    std_pass = statistics.median(s for t in traces for s in t["modes"]["standard"]["pass_seconds"])
    print(f"standard pass (all layers and logits), median: {1000 * std_pass:.2f} ms")
    print(
        f"an extra row costs {coef[2] / coef[1]:.3f} of a row per layer and {coef[4] / coef[3]:.3f} of a row's logits"
    )
    parts = x * coef
    for i, name in enumerate(PASS_COST_PARTS):
        share = 100 * parts[:, i].sum() / y.sum()
        print(f"  {name:22s} {1000 * coef[i]:7.3f} ms each  {parts[:, i].sum():6.2f} s  ({share:4.1f} %)")
    print(f"  residual {y.sum() - parts.sum():.2f} s over {len(y)} passes")
    stats = [t["modes"]["adadecode"]["stats"] for t in traces]
    for key in ("early_exit_fraction", "accept_rate", "rollbacks", "early_per_layer"):
        print(key, [s.get(key) for s in stats])
    print("pass shapes by total time: (begin, end, rows (9 = 9 or more), logits, head) count total median")
    for key in sorted(shapes, key=lambda k: -sum(shapes[k]))[:12]:
        v = shapes[key]
        print(f"  {key} {len(v):4d} {sum(v):6.2f} s {1000 * statistics.median(v):7.2f} ms")
    if curve_out is not None:
        write_curve(traces, curve_out, model_name, heads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="decode with the pass trace on, then analyse")
    r.add_argument("n_prompts", type=int)
    r.add_argument("task", help="humaneval, mtbench or a JSONL file of prompt records")
    r.add_argument("-o", "--output", type=Path, required=True, help="traces to write (.json.gz)")
    a = sub.add_parser("analyse", help="analyse recorded traces")
    a.add_argument("traces", type=Path)
    for p in (r, a):
        p.add_argument("-m", "--model", required=True, help="GGUF file or known model name")
        p.add_argument("--heads", default="auto", help="the heads file decoding ran (and whose checks are priced)")
        p.add_argument("--curve-out", type=Path, help="write the fit as a pass-cost curve (for eval-heads --curve)")
    args = ap.parse_args()
    if args.command == "record":
        record(args.model, args.n_prompts, args.task, args.heads, args.output)
    analyse(args.output if args.command == "record" else args.traces, args.model, args.curve_out, args.heads)


if __name__ == "__main__":
    main()
