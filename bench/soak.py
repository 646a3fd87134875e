"""Soak benchmark: memory stays flat over many generations and repeated model loads.

1. One model, N generations (rotating prompts, alternating standard / layer-parallel decoding with the shipped
   heads, greedy): resident memory (VmRSS) is sampled every few generations; every repeat of a prompt must give
   the same tokens as its first run.
2. C load / generate / unload cycles: RSS after each load, after each unload, and after glibc's malloc_trim
   (what is still allocated; glibc keeps freed heap in steps of ~25 MiB).
3. The server (bench/soak_server.py): ``adadecode serve`` on the model and heads, rounds of C concurrent clients
   x R greedy requests (completions and chat, streaming or not, every mode, some with stop strings) while malformed
   requests and clients that walk away go alongside; every response is checked against a solo reference or the
   documented 4xx error, and the server's RSS is sampled throughout and compared idle after each round.

Growth is the highest RSS among the last 10% of samples over the highest among the first 10% after a warm-up (the
first 5%: allocators and the page cache settle). Writes JSON + Markdown:

    nice -n 19 python bench/soak.py -m smollm2-135m --heads smollm2-135m --generations 1000 --cycles 100 \
        --max-tokens 8 --clients 32 --requests 20 --rounds 2 -o bench/results/soak-smollm2

``--parts server`` (or ``generations,loads``) runs only some parts.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Write a haiku about the sea.",
    "1, 2, 3, 4, 5,",
    "Once upon a time, in a small village,",
    "The three laws of thermodynamics are",
    "import numpy as np\n\n# compute the mean of each row\n",
    "Q: What is the boiling point of water?\nA:",
]


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def growth(samples: list[int]) -> dict[str, float]:
    """Relative growth of the late samples' high-water mark over the early ones' (after a warm-up). Maxima, not
    medians: RSS after an unload alternates between two levels (glibc keeps or returns a freed ~25 MiB block),
    which would make medians jump; a leak raises the maxima."""
    n = len(samples)
    warm = max(1, n // 20)
    window = max(1, n // 10)
    early = max(samples[warm : warm + window])
    late = max(samples[-window:])
    return {
        "early_max_kib": early,
        "late_max_kib": late,
        "growth_percent": 100.0 * (late - early) / early,
        "min_kib": min(samples[warm:]),
        "max_kib": max(samples[warm:]),
    }


def soak_generations(model: Any, n: int, max_tokens: int, every: int) -> dict[str, Any]:
    first: dict[str, list[int]] = {}
    samples, mismatches = [], 0
    modes = ["standard", "adadecode"] if model.exit_layers else ["standard"]
    start = time.perf_counter()
    n_tokens = 0
    for i in range(n):
        prompt = PROMPTS[i % len(PROMPTS)]
        mode = modes[(i // len(PROMPTS)) % len(modes)]
        tokens = model.generate(prompt, max_tokens=max_tokens, mode=mode).tokens
        n_tokens += len(tokens)
        # Greedy output is deterministic and identical between the modes: any drift means corrupted state.
        ref = first.setdefault(prompt, tokens)
        if tokens != ref:
            mismatches += 1
        if i % every == 0 or i == n - 1:
            samples.append(rss_kib())
        if (i + 1) % max(1, n // 10) == 0:
            print(f"soak: {i + 1}/{n} generations, RSS {rss_kib() / 1024:.1f} MiB", file=sys.stderr, flush=True)
    return {
        "generations": n,
        "max_tokens": max_tokens,
        "tokens_generated": n_tokens,
        "seconds": time.perf_counter() - start,
        "output_mismatches": mismatches,
        "rss_samples_kib": samples,
        "sample_every": every,
        **growth(samples),
    }


def trim() -> None:
    """Return the heap's free memory to the system (glibc's malloc_trim); nothing elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def soak_loads(path: str, heads: str | None, cycles: int, n_threads: int) -> dict[str, Any]:
    from adadecode import Model

    after_unload, after_load, after_trim = [], [], []
    reference = None
    start = time.perf_counter()
    for _ in range(cycles):
        m = Model(path, n_ctx=512, n_threads=n_threads, heads=heads)
        after_load.append(rss_kib())
        tokens = m.generate(PROMPTS[0], max_tokens=8).tokens
        reference = reference or tokens
        assert tokens == reference, "a fresh load generated different tokens"
        del m
        gc.collect()
        after_unload.append(rss_kib())
        # glibc keeps freed heap and hands it back in steps, which makes RSS after an unload swing by ~25 MiB;
        # after malloc_trim only what is still allocated counts, and a leak is.
        trim()
        after_trim.append(rss_kib())
    return {
        "cycles": cycles,
        "seconds": time.perf_counter() - start,
        "rss_after_load_kib": after_load,
        "rss_after_unload_kib": after_unload,
        "after_load": growth(after_load),
        "after_unload": growth(after_unload),
        "rss_after_unload_and_trim_kib": after_trim,
        "after_unload_and_trim": growth(after_trim),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default="smollm2-135m")
    ap.add_argument("--heads", default=None, help="heads file or name (layer-parallel generations alternate)")
    ap.add_argument("--generations", type=int, default=1000)
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=32)
    # One thread by default: ggml's thread barriers collapse on shared cores, and this measures memory, not speed.
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("--clients", type=int, default=32, help="server: concurrent clients")
    ap.add_argument("--requests", type=int, default=20, help="server: requests per client")
    ap.add_argument("--rounds", type=int, default=2, help="server: rounds of clients x requests (RSS after each)")
    ap.add_argument("--parts", default="generations,loads,server", help="comma-separated parts to run")
    ap.add_argument("-o", "--output", default="bench/results/soak", help="path prefix for .json and .md")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    if parts - {"generations", "loads", "server"}:
        ap.error(f"unknown parts: {', '.join(sorted(parts - {'generations', 'loads', 'server'}))}")

    from adadecode import Model

    t0 = time.perf_counter()
    baseline = rss_kib()
    model = Model(args.model, n_ctx=1024, n_threads=args.threads, heads=args.heads)
    heads = None
    if args.heads:
        from adadecode.heads import resolve_heads

        heads = str(resolve_heads(args.heads, model.path))
    path = model.path
    gens = loads = server = None
    if "generations" in parts:
        gens = soak_generations(model, args.generations, args.max_tokens, every=max(1, args.generations // 200))
    del model
    gc.collect()
    if "loads" in parts:
        loads = soak_loads(path, heads, args.cycles, args.threads)
    if "server" in parts:
        from soak_server import soak_server

        log = Path(tempfile.gettempdir()) / f"soak-server-{os.getpid()}.log"  # the server's output, for failures
        print(f"soak: server log in {log}", file=sys.stderr, flush=True)
        server = soak_server(path, heads, args.clients, args.requests, args.rounds, args.threads, str(log))
    with open("/proc/loadavg") as f:
        loadavg = f.read().split()[:3]
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": path,
        "heads": heads,
        "threads": args.threads,
        "python_rss_before_load_kib": baseline,
        "generations": gens,
        "load_cycles": loads,
        "server": server,
        "total_seconds": time.perf_counter() - t0,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_at_end": loadavg},
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    ok = gens is None or gens["output_mismatches"] == 0 and abs(gens["growth_percent"]) < 5
    ok = ok and (
        loads is None
        or all(abs(g["growth_percent"]) < 5 for g in (loads["after_load"], loads["after_unload_and_trim"]))
    )
    ok = ok and (server is None or not server["failures"] and server["rss_growth_after_first_round_percent"] < 5)
    return 0 if ok else 1


def markdown(r: dict[str, Any]) -> str:
    g, c = r["generations"], r["load_cycles"]

    def mib(kib: float) -> str:
        return f"{kib / 1024:.1f}"

    lines = [
        "# Soak: memory over many generations and model loads, the server under load and malformed requests",
        "",
        f"Command: `{r['command']}`  ",
        f"Model: `{Path(r['model']).name}`, heads: `{Path(r['heads']).name if r['heads'] else 'none'}`, "
        f"{r['threads']} threads; {r['machine']['cpus']} CPUs, "
        f"load average at the end {r['machine']['loadavg_at_end']}.",
    ]
    rows = []
    if g:
        rows.append((f"generations ({g['max_tokens']} tokens max)", g["generations"], g))
    if c:
        rows += [
            ("after load", c["cycles"], c["after_load"]),
            ("after unload", c["cycles"], c["after_unload"]),
            ("after unload and malloc_trim", c["cycles"], c["after_unload_and_trim"]),
        ]
    if rows:
        lines += [
            "",
            "| part | count | RSS early max (MiB) | RSS late max (MiB) | growth | min..max (MiB) |",
            "|---|---|---|---|---|---|",
        ]
        for name, count, s in rows:
            lines.append(
                f"| {name} | {count} | {mib(s['early_max_kib'])} | {mib(s['late_max_kib'])} | "
                f"{s['growth_percent']:+.2f}% | {mib(s['min_kib'])}..{mib(s['max_kib'])} |"
            )
        lines.append("")
    if g:
        lines.append(
            f"Generations: {g['tokens_generated']} tokens in {g['seconds']:.0f} s, "
            f"{g['output_mismatches']} outputs differing from the first run of their prompt.  "
        )
    if c:
        lines.append(
            f"Load cycles: {c['cycles']} in {c['seconds']:.0f} s (each: load, 8 greedy tokens checked, unload)."
        )
    if r["server"]:
        from soak_server import markdown as server_markdown

        lines += server_markdown(r["server"], mib)
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
