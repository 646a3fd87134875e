"""Decode a task's prompts with subsets of a model's shipped exit layers, side by side with standard decoding.

    python bench/probe_exit_layers.py TASK N [MODEL] [SUBSETS]

SUBSETS: exit-layer subsets separated by ';', e.g. "7,14,21;21" (default: every subset of the model's layers).

For each prompt every configuration runs once, in an order that rotates from prompt to prompt; outputs must equal
standard decoding token for token. Prints tokens/s summed over prompts, the ratio to standard (summed and median per
prompt) and the share of tokens taken from exit heads. A probe, not a benchmark: run it on a quiet machine
(/work/timed.sh-style) and repeat it before trusting a difference under ~5 %.
"""

from __future__ import annotations

import statistics
import sys
from itertools import combinations

from adadecode.bench.tasks import load_prompts
from adadecode.fetch import cache_root
from adadecode.model import Model


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    task, n = argv[0], int(argv[1])
    model = Model(argv[2] if len(argv) >= 3 else "qwen2.5-coder-1.5b", n_threads=2, heads="auto")
    layers = list(model.exit_layers)
    if len(argv) == 4:
        subsets = [[int(x) for x in part.split(",")] for part in argv[3].split(";")]
    else:
        subsets = [list(c) for k in range(len(layers), 0, -1) for c in combinations(layers, k)]
    configs: dict[str, dict[str, object]] = {"standard": {"mode": "standard"}}
    configs.update({",".join(map(str, s)): {"mode": "adadecode", "exit_layers": s} for s in subsets})
    names = list(configs)
    per_prompt: dict[str, list[float]] = {k: [] for k in names}
    tokens = dict.fromkeys(names, 0)
    seconds = dict.fromkeys(names, 0.0)
    early = dict.fromkeys(names, 0)
    for i, prompt in enumerate(load_prompts(model, task, cache_root() / "data", n)):
        order = names[i % len(names) :] + names[: i % len(names)]
        results = {k: model.generate(prompt.ids, max_tokens=256, **configs[k]) for k in order}
        for k, g in results.items():
            if g.tokens != results["standard"].tokens:
                raise SystemExit(f"prompt {i}: {k} differs from standard decoding")
            tokens[k] += len(g.tokens)
            seconds[k] += g.stats["decode_seconds"]
            early[k] += g.token_sources.count("e")
            per_prompt[k].append(len(g.tokens) / g.stats["decode_seconds"])
    base = tokens["standard"] / seconds["standard"]
    print("| exit layers | tok/s | x standard (sum) | x standard (median per prompt) | early |")
    print("|---|---|---|---|---|")
    for k in names:
        tps = tokens[k] / seconds[k]
        median = statistics.median(a / b for a, b in zip(per_prompt[k], per_prompt["standard"], strict=True))
        print(f"| {k} | {tps:.2f} | {tps / base:.3f} | {median:.3f} | {early[k] / tokens[k]:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
