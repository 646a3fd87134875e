"""Decoding speed and parity side by side, in one run: our standard and layer-parallel modes and llama.cpp greedy
on the same GGUF, the same prompt ids and thread count, prompt by prompt in rotating order after a warm-up.

    python bench/compare.py -m qwen2.5-coder-0.5b --heads H.gguf --task humaneval --limit 20 --max-tokens 256 \
        -t 2 --llama-python /path/to/venv-with-llama_cpp/bin/python -o bench/results/qwen05-humaneval

Writes OUT.json (every per-prompt figure) and OUT.md (the summary table). Decode tokens/s are generated tokens over
decode time, prefill excluded; parity compares each mode's tokens with our standard decoding token for token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from adadecode import Model
from adadecode.eval_heads import task_prompts
from adadecode.fetch import cache_root


class LlamaWorker:
    def __init__(self, python: str, model_path: str, n_threads: int, n_ctx: int) -> None:
        worker = Path(__file__).with_name("llamacpp_worker.py")
        self.proc = subprocess.Popen(
            [python, str(worker), model_path, str(n_threads), str(n_ctx)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        json.loads(self.proc.stdout.readline())

    def generate(self, ids: list[int], max_tokens: int, eog: list[int]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"ids": ids, "max_tokens": max_tokens, "eog": eog}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", required=True, help="GGUF path or fetch name")
    p.add_argument("--heads", help="exit-heads GGUF (needed for the adadecode mode)")
    p.add_argument("--task", default="humaneval", help="humaneval | mtbench | a JSONL file of {'prompt': ...}")
    p.add_argument("--limit", type=int, default=10, help="number of prompts")
    p.add_argument("--max-tokens", type=int, default=256, help="new tokens per prompt")
    p.add_argument("-t", "--threads", type=int, default=2, help="threads for every system")
    p.add_argument("--gamma", type=float, default=0.75, help="exit confidence threshold")
    p.add_argument("--max-pending", type=int, default=5, help="deferred tokens at most")
    p.add_argument("--modes", default="standard,adadecode", help="our modes, comma-separated")
    p.add_argument("--llama-python", help="a Python with llama_cpp installed (anchor skipped without it)")
    p.add_argument("-o", "--out", required=True, help="output path prefix (.json and .md are added)")
    args = p.parse_args()

    model = Model(args.model, n_ctx=4096, n_threads=args.threads, heads=args.heads)
    modes = [m for m in args.modes.split(",") if m and (m != "adadecode" or args.heads)]
    records = task_prompts(args.task, cache_root())[: args.limit]
    prompts = [model.tokenize(model.apply_chat_template(r.messages)) for r in records if r.messages]
    eog = [i for i in range(model.n_vocab) if i < model.vocab.n_tokens and model.vocab.is_eog(i)]

    systems: list[str] = list(modes)
    llama = None
    skipped: dict[str, str] = {}
    if args.llama_python:
        llama = LlamaWorker(args.llama_python, model.path, args.threads, 4096)
        systems.append("llama.cpp")
    else:
        skipped["llama.cpp"] = "no --llama-python given"

    def run(system: str, ids: list[int], max_tokens: int) -> dict[str, Any]:
        if system == "llama.cpp":
            assert llama is not None
            return llama.generate(ids, max_tokens, eog)
        g = model.generate(ids, max_tokens=max_tokens, mode=system, gamma=args.gamma, max_pending=args.max_pending)
        return {"tokens": g.tokens, **{k: g.stats[k] for k in g.stats if k != "mode"}}

    for system in systems:  # warm-up: page in the weights, start the threads
        run(system, prompts[0][:32], 16)

    rows = []
    for i, ids in enumerate(tqdm(prompts, desc="prompts")):
        order = systems[i % len(systems):] + systems[: i % len(systems)]
        row: dict[str, Any] = {"prompt": i, "source": records[i].source, "n_prompt": len(ids)}
        for system in order:
            row[system] = run(system, ids, args.max_tokens)
        ref = row["standard"]["tokens"] if "standard" in row else None
        for system in systems:
            r = row[system]
            r["n_generated"] = len(r["tokens"])
            r["matches_standard"] = ref is not None and r["tokens"] == ref
        rows.append(row)

    summary: dict[str, Any] = {}
    for system in systems:
        toks = sum(r[system]["n_generated"] for r in rows)
        secs = sum(r[system]["decode_seconds"] for r in rows)
        summary[system] = {
            "tokens": toks,
            "decode_seconds": secs,
            "tokens_per_second": toks / secs if secs else 0.0,
            "prefill_seconds": sum(r[system]["prefill_seconds"] for r in rows),
            "parity": sum(r[system]["matches_standard"] for r in rows),
        }
        if system == "adadecode":
            s = summary[system]
            s["early_exit_fraction"] = sum(r[system]["n_accepted"] for r in rows) / max(toks, 1)
            verified = sum(r[system]["n_verified"] for r in rows)
            s["accept_rate"] = sum(r[system]["n_accepted"] for r in rows) / max(verified, 1)
    if "standard" in summary:
        base = summary["standard"]["tokens_per_second"]
        for system in systems:
            summary[system]["speedup_vs_standard"] = summary[system]["tokens_per_second"] / base if base else 0.0
            ratios = [
                r["standard"]["decode_seconds"] / r[system]["decode_seconds"] * r[system]["n_generated"]
                / max(r["standard"]["n_generated"], 1)
                for r in rows if r[system]["decode_seconds"] > 0
            ]
            summary[system]["median_prompt_speedup"] = statistics.median(ratios) if ratios else 0.0

    meta = {
        "command": " ".join(sys.argv), "model": model.path, "heads": args.heads, "task": args.task,
        "prompts": len(rows), "max_tokens": args.max_tokens, "threads": args.threads, "gamma": args.gamma,
        "max_pending": args.max_pending, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "skipped": skipped,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "prompts": rows}, indent=1))
    lines = [
        f"# {Path(model.path).name}, {args.task}, {len(rows)} prompts x {args.max_tokens} new tokens, "
        f"{args.threads} threads", "", f"`{meta['command']}`", "",
        "| system | tokens/s | speedup vs standard | median per-prompt | parity | early exit | accept |",
        "|---|---|---|---|---|---|---|",
    ]
    for system, s in summary.items():
        lines.append(
            f"| {system} | {s['tokens_per_second']:.2f} | {s.get('speedup_vs_standard', 0):.3f}x | "
            f"{s.get('median_prompt_speedup', 0):.3f}x | {s['parity']}/{len(rows)} | "
            f"{s.get('early_exit_fraction', float('nan')):.3f} | {s.get('accept_rate', float('nan')):.3f} |"
        )
    for name, why in skipped.items():
        lines.append(f"\n{name}: skipped ({why})")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if llama:
        llama.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
