"""How fast could prompt-lookup drafting be at best, on a benchmark's recorded outputs and this machine's pass costs?

An oracle drafter proposes, at every step, the continuation of an earlier occurrence of the text's last tokens (as
NgramDrafter does) but knows how many of its tokens verification will accept and drafts exactly those: no row is
ever wasted. Its speed relative to standard decoding bounds what any draft-length policy over the same proposals
can reach, under the measured cost of a pass over k rows (adadecode-microbench's full_pass_seconds_min, logits
included, as in a verification pass). Next to it, the engine's own policy is replayed over the same outputs and
costs (adadecode._core.replay_ngram_drafts), which shows how far that policy is from the bound.

    PYTHONPATH=build-native/pkg python3 bench/ngram_oracle.py RUN.json MICROBENCH.json [--max-draft 7]

RUN.json: an `adadecode bench` result with the standard mode (its token ids are the text to predict; the prompts
are rebuilt from the task and the model named in it).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

Proposer = Callable[[list[int], int], list[list[int]]]


def context_length(seq: list[int], start: int, n: int, cap: int = 32) -> int:
    """How many tokens before and including the occurrence of seq's n-token suffix at `start` match the tokens
    before and including the suffix (at most `cap`), as NgramDrafter compares them."""
    size = len(seq)
    length = n
    while length < cap and start - (length - n) - 1 >= 0 and seq[start - (length - n) - 1] == seq[size - length - 1]:
        length += 1
    return length


def candidates(seq: list[int], limit: int, max_match: int = 4, select: str = "context") -> list[list[int]]:
    """Continuations of earlier occurrences of seq's longest matching suffix (of at most max_match tokens): the
    occurrence whose context matches furthest back, the most recent among equals ("context", NgramDrafter's
    choice); the most recent one ("recent", NgramDrafter's choice before the context rule); or all ("every")."""
    size = len(seq)
    for n in range(min(max_match, size - 1), 0, -1):
        suffix = seq[size - n :]
        starts = [start for start in range(size - n - 1, -1, -1) if seq[start : start + n] == suffix]
        if not starts:
            continue
        if select == "recent":
            starts = starts[:1]
        elif select == "context":
            starts = [max(starts, key=lambda start: context_length(seq, start, n))]  # max keeps the first of equals
        return [seq[start + n : start + n + limit] for start in starts]
    return []


def accepted(draft: list[int], truth: list[int]) -> int:
    n = 0
    while n < len(draft) and n < len(truth) and draft[n] == truth[n]:
        n += 1
    return n


def oracle_speedup(texts: list[tuple[list[int], list[int]]], cost: list[float], max_draft: int, select: str) -> float:
    """Tokens per unit of pass cost with oracle draft lengths, relative to one token per one-row pass."""
    tokens = units = 0.0
    for prompt, out in texts:
        i = 0
        while i < len(out):
            seq = prompt + out[:i]
            k = max((accepted(d, out[i:]) for d in candidates(seq, max_draft, select=select)), default=0)
            units += cost[k]  # k drafted tokens: a pass over k + 1 rows
            tokens += k + 1  # the accepted draft and the final layer's next token
            i += k + 1
    return tokens / units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("microbench", type=Path)
    parser.add_argument("--max-draft", type=int, default=7, help="most drafted tokens (the microbench has 1-8 rows)")
    args = parser.parse_args()

    import adadecode
    from adadecode.bench.tasks import load_prompts

    doc = json.loads(args.run.read_text())
    bench = json.loads(args.microbench.read_text())
    setup = next(v for v in bench.values() if isinstance(v, dict) and "full_pass_seconds_min" in v)
    seconds = setup["full_pass_seconds_min"]
    cost = [seconds[str(r)] / seconds["1"] for r in range(1, len(seconds) + 1)]
    max_draft = min(args.max_draft, len(cost) - 1)

    meta = doc["meta"]
    model = adadecode.Model(meta["model"], n_threads=1, n_ctx=8192)
    cache = Path.home() / ".cache" / "adadecode"
    prompts = {p.index: p.ids for p in load_prompts(model, meta["task"], cache, len(doc["prompts"]))}
    texts = [(prompts[p["index"]], p["systems"]["standard"]["tokens"]) for p in doc["prompts"]]

    def measured(mode: str) -> str:
        speedup = doc["summary"].get(mode, {}).get("speedup_vs_standard")
        return f"{speedup:.2f}x" if speedup else "not run"

    print(
        f"{meta['model']} · {meta['task']} · {len(texts)} prompts · pass cost (rows 1..{len(cost)}): "
        + ", ".join(f"{c:.2f}" for c in cost)
    )
    print(f"measured: ngram {measured('ngram')}, adadecode+ngram {measured('adadecode+ngram')} standard")
    from adadecode import _core

    replay = [_core.replay_ngram_drafts(prompt, out, cost[: max_draft + 1]) for prompt, out in texts]
    tokens = sum(r["tokens"] for r in replay)
    print(
        f"NgramDrafter's own draft lengths (the engine's policy replayed), max draft {max_draft}: "
        f"{tokens / sum(r['cost'] for r in replay):.2f}x standard, "
        f"{sum(r['accepted'] for r in replay)} of {sum(r['drafted'] for r in replay)} drafted tokens accepted"
    )
    for select, label in (
        ("context", "match with the longest context (NgramDrafter's proposals)"),
        ("recent", "most recent match (NgramDrafter's proposals before 8dc211f)"),
        ("every", "best of all matches"),
    ):
        print(
            f"oracle draft lengths, {label}, max draft {max_draft}: "
            f"{oracle_speedup(texts, cost, max_draft, select):.2f}x standard"
        )


if __name__ == "__main__":
    main()
