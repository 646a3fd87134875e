"""Decode a task's prompts with subsets of a model's shipped exit layers, side by side with standard decoding.

    python bench/probe_exit_layers.py TASK N [MODEL] [SUBSETS]

SUBSETS: exit-layer subsets separated by ';', e.g. "7,14,21;21" (default: every subset of the model's layers).

The installed package, through `ab_builds.compare`: for each prompt every configuration runs once, in an order that
rotates from prompt to prompt; outputs must equal standard decoding token for token. Prints tokens/s summed over
prompts, the ratio to standard (summed and median per prompt) and the share of tokens taken from exit heads. A
probe, not a benchmark: run it on a quiet machine (/work/timed.sh-style) and repeat it before trusting a difference
under ~5 %.
"""

from __future__ import annotations

import sys
from itertools import combinations

from ab_builds import Spec, compare  # bench/ is the script's directory, first on sys.path

from adadecode.model import Model


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    task, n = argv[0], int(argv[1])
    model = argv[2] if len(argv) >= 3 else "qwen2.5-coder-1.5b"
    if len(argv) == 4:
        subsets = [[int(x) for x in part.split(",")] for part in argv[3].split(";")]
    else:
        layers = list(Model(model, n_threads=1, heads="auto").exit_layers)
        subsets = [list(c) for k in range(len(layers), 0, -1) for c in combinations(layers, k)]
    specs: list[Spec] = [("standard", "", {"mode": "standard"}, ())]
    specs += [(",".join(map(str, s)), "", {"mode": "adadecode", "exit_layers": s}, ()) for s in subsets]
    compare(task, n, model, specs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
