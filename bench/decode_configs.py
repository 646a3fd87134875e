"""Decoding configurations side by side on one model: standard, ngram, adadecode with and without the exit policy,
adadecode+ngram, interleaved prompt by prompt in one process (so machine load hits them alike), greedy.

    PYTHONPATH=build-native/pkg python3 bench/decode_configs.py -m qwen2.5-coder-1.5b --limit 2 -n 128 -t 1
    PYTHONPATH=python python3 bench/decode_configs.py -m smollm2-135m --device gpu --limit 10 -n 256   # on a GPU

Prints one JSON line per (prompt, configuration) and a summary; every configuration must give the first one's tokens
(standard by default; --configs picks and orders them).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import adadecode
from adadecode.bench.tasks import load_prompts

CONFIGS: dict[str, dict[str, object]] = {
    "standard": {"mode": "standard"},
    "ngram": {"mode": "ngram"},
    "adadecode": {"mode": "adadecode"},
    "adadecode-fixed": {"mode": "adadecode", "adaptive_exits": False},
    "adadecode+ngram": {"mode": "adadecode+ngram"},
    # Heads wait while a prompt-lookup draft is in flight (before exits on drafts' rows, issue 24 §3).
    "adadecode+ngram-held": {"mode": "adadecode+ngram", "exits_in_drafts": False},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--task", default="humaneval")
    ap.add_argument("--limit", type=int, default=2)
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("--device", default=None, help="ggml device to compute on (gpu, CUDA0, CPU; default: ours)")
    ap.add_argument("--gamma", type=float, default=None, help="exit threshold of the adadecode configurations")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated; the first is the reference")
    args = ap.parse_args()
    chosen = [name.strip() for name in args.configs.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in CONFIGS]
    if unknown or not chosen:
        ap.error(f"--configs: unknown {unknown or 'empty list'}; choose from {', '.join(CONFIGS)}")
    configs = {name: CONFIGS[name] for name in chosen}
    model = adadecode.Model(args.model, heads="auto", n_threads=args.threads, n_ctx=2048, device=args.device)
    if args.gamma is not None:
        for kwargs in configs.values():
            if str(kwargs["mode"]).startswith("adadecode"):
                kwargs["gamma"] = args.gamma
    prompts = load_prompts(model, args.task, Path.home() / ".cache" / "adadecode", limit=args.limit)
    totals = {name: [0, 0.0] for name in configs}
    mismatches = 0
    for prompt in prompts:
        model.generate(prompt.ids, max_tokens=8)  # warm-up
        reference: list[int] | None = None
        for name, kwargs in configs.items():
            start = time.perf_counter()
            gen = model.generate(prompt.ids, max_tokens=args.max_tokens, temperature=0.0, **kwargs)
            seconds = gen.stats.get("decode_seconds") or time.perf_counter() - start
            if reference is None:
                reference = gen.tokens
            same = gen.tokens == reference
            mismatches += not same
            totals[name][0] += len(gen.tokens)
            totals[name][1] += seconds
            s = gen.stats
            print(json.dumps({"prompt": prompt.index, "config": name, "device": model.device, "tokens": len(gen.tokens),
                              "tokens_per_second": len(gen.tokens) / seconds, "same_as_standard": same,
                              "early_exit_fraction": s.get("early_exit_fraction"), "accept_rate": s.get("accept_rate"),
                              "ngram_fraction": s.get("ngram_fraction"), "early_per_layer": s.get("early_per_layer"),
                              "early_in_drafts": s.get("early_in_drafts"), "rows_per_pass": s.get("rows_per_pass"),
                              "rollbacks": s.get("rollbacks")}),
                  flush=True)  # fmt: skip
    base = totals[chosen[0]][0] / totals[chosen[0]][1]
    for name, (tokens, seconds) in totals.items():
        print(f"{name:18s} {tokens / seconds:7.2f} tok/s  {tokens / seconds / base:5.2f}x")
    print(f"outputs differing from {chosen[0]}: {mismatches}")


if __name__ == "__main__":
    main()
