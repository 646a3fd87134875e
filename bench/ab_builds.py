"""Decode a task's prompts with two (or more) builds of adadecode side by side, in one run.

    python bench/ab_builds.py [--tokens-may-differ] [--fresh-workers] [--per-prompt] TASK N MODEL
        NAME=SITE:MODE[:LAYERS][:KEY=VALUE...] ...

SITE is a directory put first on PYTHONPATH for that configuration's worker process (a `pip install --target` of a
build, with its `libggml` next to it); empty (or a path that does not exist): the installed package. LAYERS: exit
layers separated by commas; KEY=VALUE: a number passed to `Model.generate` (e.g. gamma=0.5); heads=PATH: the
worker's heads file (default: the shipped ones, "auto"); with KEY in capitals, an environment variable of the worker
(e.g. ADADECODE_ATTENTION=0). Every distinct SITE, heads file and environment gets a worker process of its own.
The first configuration is the reference: every other one must produce its tokens exactly, unless --tokens-may-differ
(for configurations that change the arithmetic, such as another attention kernel: the table then counts the prompts
whose tokens equal the reference's). Per prompt each configuration runs once, in an order that rotates from prompt to
prompt, so that a burst of load hits all alike; prints tokens/s, the ratio to the reference (summed and median per
prompt) and the share of tokens from exit heads. Machine state moves whole-run figures by 5-25 % here: compare builds
only within one run of this script. A worker process keeps its speed for its life, and two processes of the same
build differed by up to 9 % in one run (bench/results/heads-1.5b/riding-cost/): with --fresh-workers every prompt
gets new worker processes, so that this spread averages over the prompts instead of tilting the whole run (each
start loads the model again: seconds per worker and prompt). --per-prompt adds a table of every prompt's tokens/s
per configuration, its early tokens and, where the build reports it, m: the extra row's cost the generation ended
with (stats["pass_costs"]), which shows a generation whose exits a misjudged m closed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Any

from adadecode.bench.tasks import load_prompts
from adadecode.fetch import cache_root
from adadecode.model import Model

WORKER = """
import json, sys
from adadecode.model import Model
m = Model(sys.argv[1], n_threads=2, heads=sys.argv[2])
print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    g = m.generate(req["ids"], max_tokens=256, **req["config"])
    costs = g.stats.get("pass_costs", [])  # builds before 2026-12-06 do not report it
    print(json.dumps({"tokens": list(g.tokens), "seconds": g.stats["decode_seconds"],
                      "early": g.token_sources.count("e"), "m": costs[1] - 1 if len(costs) > 1 else None}),
          flush=True)
"""


# name, site, generate options, worker settings: (heads, PATH) and environment variables (KEY, VALUE)
Spec = tuple[str, str, dict[str, Any], tuple[tuple[str, str], ...]]


def parse(spec: str) -> Spec:
    name, rest = spec.split("=", 1)
    parts = rest.split(":")
    config: dict[str, Any] = {"mode": parts[1]}
    worker: list[tuple[str, str]] = []
    for part in parts[2:]:
        if "=" in part:
            key, value = part.split("=", 1)
            if key.isupper() or key == "heads":
                worker.append((key, value))
            else:
                config[key] = float(value) if "." in value else int(value)
        else:
            config["exit_layers"] = [int(x) for x in part.split(",")]
    return name, parts[0], config, tuple(sorted(worker))


FLAGS = ("--tokens-may-differ", "--fresh-workers", "--per-prompt")


def main(argv: list[str]) -> int:
    flags = set()
    while argv and argv[0].startswith("--"):
        if argv[0] not in FLAGS:
            print(f"ab_builds: unknown option {argv[0]} (known: {', '.join(FLAGS)})", file=sys.stderr)
            return 2
        flags.add(argv[0])
        argv = argv[1:]
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    compare(argv[0], int(argv[1]), argv[2], [parse(s) for s in argv[3:]],
            tokens_may_differ="--tokens-may-differ" in flags, fresh_workers="--fresh-workers" in flags,
            per_prompt_table="--per-prompt" in flags)  # fmt: skip
    return 0


WorkerKey = tuple[str, tuple[tuple[str, str], ...]]


def start_workers(model: str, specs: list[Spec]) -> dict[WorkerKey, subprocess.Popen[str]]:
    """One worker process per distinct site and worker settings, ready to decode."""
    workers = {}
    for site, settings in {(site, worker) for _, site, _, worker in specs}:
        env = dict(os.environ, **{k: v for k, v in settings if k.isupper()})
        if site:
            env["PYTHONPATH"] = site
        cmd = [sys.executable, "-c", WORKER, model, dict(settings).get("heads", "auto")]
        worker = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        worker.stdout.readline()  # type: ignore[union-attr]
        workers[site, settings] = worker
    return workers


def stop_workers(workers: dict[WorkerKey, subprocess.Popen[str]]) -> None:
    for worker in workers.values():
        worker.stdin.close()  # type: ignore[union-attr]
        worker.wait()


def compare(
    task: str,
    n: int,
    model: str,
    specs: list[Spec],
    tokens_may_differ: bool = False,
    fresh_workers: bool = False,
    per_prompt_table: bool = False,
) -> None:
    """Decode `n` prompts of `task` with every (name, site, generate options, worker settings) of `specs`; print
    the table."""
    workers = start_workers(model, specs)

    def decode(worker_key: WorkerKey, ids: list[int], config: dict[str, Any]) -> dict[str, Any]:
        w = workers[worker_key]
        w.stdin.write(json.dumps({"ids": ids, "config": config}) + "\n")  # type: ignore[union-attr]
        w.stdin.flush()  # type: ignore[union-attr]
        return json.loads(w.stdout.readline())  # type: ignore[union-attr]

    names = [s[0] for s in specs]
    tokens, seconds, early = dict.fromkeys(names, 0), dict.fromkeys(names, 0.0), dict.fromkeys(names, 0)
    same = dict.fromkeys(names, 0)
    per_prompt: dict[str, list[float]] = {k: [] for k in names}
    early_per_prompt: dict[str, list[int]] = {k: [] for k in names}
    m_per_prompt: dict[str, list[float | None]] = {k: [] for k in names}
    for i, prompt in enumerate(load_prompts(Model(model, n_threads=1), task, cache_root() / "data", n)):
        if fresh_workers and i > 0:
            stop_workers(workers)
            workers = start_workers(model, specs)
        order = specs[i % len(specs) :] + specs[: i % len(specs)]
        results = {name: decode((site, worker), list(prompt.ids), config) for name, site, config, worker in order}
        for name, r in results.items():
            if r["tokens"] == results[names[0]]["tokens"]:
                same[name] += 1
            elif not tokens_may_differ:
                raise SystemExit(f"prompt {i}: {name} differs from {names[0]}")
            tokens[name] += len(r["tokens"])
            seconds[name] += r["seconds"]
            early[name] += r["early"]
            per_prompt[name].append(len(r["tokens"]) / r["seconds"])
            early_per_prompt[name].append(r["early"])
            m_per_prompt[name].append(r["m"])
    stop_workers(workers)
    base = tokens[names[0]] / seconds[names[0]]
    n_prompts = len(per_prompt[names[0]])
    print(f"| config | tok/s | x {names[0]} (sum) | x {names[0]} (median per prompt) | early | tokens as {names[0]} |")
    print("|---|---|---|---|---|---|")
    for k in names:
        tps = tokens[k] / seconds[k]
        median = statistics.median(a / b for a, b in zip(per_prompt[k], per_prompt[names[0]], strict=True))
        share = early[k] / tokens[k]
        print(f"| {k} | {tps:.2f} | {tps / base:.3f} | {median:.3f} | {share:.1%} | {same[k]}/{n_prompts} |")
    if per_prompt_table:
        print("\nPer prompt: tokens/s (early tokens, m)\n")
        print("| prompt | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for i in range(n_prompts):
            cells = (cell(per_prompt[k][i], early_per_prompt[k][i], m_per_prompt[k][i]) for k in names)
            print(f"| {i} | " + " | ".join(cells) + " |")


def cell(tokens_per_second: float, early: int, m: float | None) -> str:
    return f"{tokens_per_second:.2f} ({early}" + (f", {m:.2f})" if m is not None else ")")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
