"""The table of run.sh's runs: tokens/s per load, mode and thread setting (median over prompts and rounds), the
default's speed over `-t 2` and `-t 1` paired by prompt and round, and whether the tokens agree everywhere.
    python3 table.py RAW_DIR"""

import collections
import json
import statistics
import sys
from pathlib import Path

raw = Path(sys.argv[1])
speed: dict[tuple[str, str, str], dict[tuple[str, str], float]] = collections.defaultdict(dict)
ends: dict[tuple[str, str, str], collections.Counter[int]] = collections.defaultdict(collections.Counter)
tokens: dict[tuple[str, str], set[tuple[int, ...]]] = collections.defaultdict(set)
for f in sorted(raw.glob("*.json")):
    load, mode, threads, prompt, rnd = f.stem.split("-")
    run = json.loads(f.read_text())
    speed[load, mode, threads][prompt, rnd] = run["stats"]["tokens_per_second"]
    ends[load, mode, threads][run["stats"]["threads"]] += 1
    tokens[mode, prompt].add(tuple(run["tokens"]))


def paired(load: str, mode: str, other: str) -> str:
    ours, theirs = speed[load, mode, "auto"], speed.get((load, mode, other), {})
    ratios = [ours[k] / theirs[k] for k in ours if k in theirs]
    if not ratios:
        return "–"
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


others = ["2", "1"] + (["noadapt"] if any(key[2] == "noadapt" for key in speed) else [])
names = {"2": "`-t 2`", "1": "`-t 1`", "noadapt": "`ADADECODE_ADAPT_THREADS=0`"}
print("| load | mode | `-t` | tokens/s, median | runs | threads at the end | "
      + " | ".join(f"default / {names[o]}" for o in others) + " |")
print("|---|---|---|---|---|---|" + "---|" * len(others))
for (load, mode, threads), runs in sorted(speed.items()):
    at_end = ", ".join(f"{n}: {count}" for n, count in sorted(ends[load, mode, threads].items()))
    ratios = [paired(load, mode, o) if threads == "auto" else "" for o in others]
    print(f"| {load} | {mode} | {threads} | {statistics.median(runs.values()):.1f} | {len(runs)} | {at_end} | "
          + " | ".join(ratios) + " |")
same = all(len(s) == 1 for s in tokens.values())
print(f"\nTokens equal across every load and thread setting, per mode and prompt: {'yes' if same else 'NO'} "
      f"({len(tokens)} mode x prompt pairs). Ratios: median over the (prompt, round) pairs, range in brackets.")
