"""Tokens/s of a model on the local CPU against the same model split across the local CPU and 1 or 2 loopback
`adadecode rpc-server` processes (docs/rpc.md), and the bytes each server reads and writes per generated token.

Every configuration runs in a fresh child process with 1 thread (each server too: `-t 1`); a split pass computes on
one device at a time, so the processes never compete for a core. The bytes are each server's TCP traffic (the kernel's
byte counters of its connection, `ss -i`) around the timed generations, divided by the tokens generated.

    python bench/rpc_split_bench.py -m qwen2.5-coder-0.5b --out bench/results/rpc
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adadecode.bench.machine import cpu_class, cpu_name
from adadecode.bench.processes import stop_process

PROMPTS = [
    "def quicksort(arr):\n",
    "import numpy as np\n\ndef moving_average(x, window):\n    ",
    "class Stack:\n    def __init__(self):\n",
]

CHILD = r"""
import json, sys, time
from adadecode import Model
cfg = json.loads(sys.argv[1])
m = Model(cfg["model"], n_ctx=1024, n_threads=1, **cfg["options"])
import re, subprocess
def io(port):
    # The server side of the connections to `port`: TCP's own byte counters (ss -i), received and sent.
    text = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                          capture_output=True, text=True).stdout
    received = sum(int(x) for x in re.findall(r"bytes_received:(\d+)", text))
    sent = sum(int(x) for x in re.findall(r"bytes_sent:(\d+)", text))
    return received, sent
out = {"split": m.split, "device": m.device, "runs": {}}
for mode in cfg["modes"]:
    m.generate(cfg["prompts"][0], max_tokens=8, mode=mode)  # warm-up: graphs planned, pages touched
    before = [io(p) for p in cfg["server_ports"]]
    tokens, seconds, ids = 0, 0.0, []
    for prompt in cfg["prompts"]:
        m.reset()
        start = time.perf_counter()
        g = m.generate(prompt, max_tokens=cfg["max_tokens"], mode=mode)
        seconds += time.perf_counter() - start
        tokens += len(g.tokens)
        ids.append(g.tokens)
    after = [io(p) for p in cfg["server_ports"]]
    out["runs"][mode] = {
        "tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds, "token_ids": ids,
        "server_bytes_in_per_token": [(a[0] - b[0]) / tokens for a, b in zip(after, before)],
        "server_bytes_out_per_token": [(a[1] - b[1]) / tokens for a, b in zip(after, before)],
    }
print("RESULT " + json.dumps(out))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "adadecode", "rpc-server", "--port", str(port), "-t", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc, 30)
                raise RuntimeError(f"rpc-server 127.0.0.1:{port} did not start within 60 s "
                                   f"(exit status {proc.returncode})") from None  # fmt: skip
            time.sleep(0.1)
        except BaseException:  # Ctrl-C while waiting: the server must not outlive the benchmark
            stop_process(proc, 30)
            raise


def run_config(name: str, model: str, options: dict[str, Any], n_servers: int, args: argparse.Namespace) -> Any:
    servers: list[tuple[subprocess.Popen[str], str]] = []
    try:
        for _ in range(n_servers):
            servers.append(start_server())  # one at a time: a failed second start still stops the first
        if servers:
            options = {**options, "rpc_servers": ",".join(e for _, e in servers)}
        cfg = {
            "model": model, "options": options, "modes": args.modes, "prompts": PROMPTS,
            "max_tokens": args.max_tokens, "server_ports": [int(e.rsplit(":", 1)[1]) for _, e in servers],
        }  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, timeout=1800
        )
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"{name}: {out.stderr[-2000:]}")
        result = json.loads(line[len("RESULT ") :])
        result["name"] = name
        return result
    finally:
        for proc, _ in servers:
            stop_process(proc, 30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default="qwen2.5-coder-0.5b")
    p.add_argument("--out", default="bench/results/rpc")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--modes", nargs="+", default=["standard", "ngram"],
                   choices=["standard", "adadecode", "ngram", "adadecode+ngram"])  # fmt: skip
    p.add_argument("--heads", default=None, help="exit heads for the adadecode modes (e.g. auto)")
    args = p.parse_args()
    if any(m.startswith("adadecode") for m in args.modes) and not args.heads:
        p.error("the adadecode modes need exit heads: pass --heads auto")
    from adadecode.fetch import resolve_model

    model = str(resolve_model(args.model))
    configs = [
        ("local, default path (own kernels)", {}, 0),
        ("local, --device CPU (ggml)", {"device": "CPU"}, 0),
        ("split: CPU + 1 server (1,1)", {"tensor_split": [1, 1]}, 1),
        ("split: CPU + 2 servers (1,1,1)", {"tensor_split": [1, 1, 1]}, 2),
    ]
    if args.heads:
        configs = [(name, {**options, "heads": args.heads}, n) for name, options, n in configs]
    results = [run_config(name, model, options, n, args) for name, options, n in configs]
    # Greedy tokens against the local ggml run, whose logits a split reproduces bitwise.
    reference = results[1]["runs"]
    for r in results:
        r["same_tokens_as_device_cpu"] = all(r["runs"][m]["token_ids"] == reference[m]["token_ids"] for m in args.modes)
        first = r["runs"][args.modes[0]]["token_ids"]
        r["same_tokens_in_every_mode"] = all(r["runs"][m]["token_ids"] == first for m in args.modes)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"split-{Path(model).stem}"
    meta = {
        "model": Path(model).name, "heads": args.heads, "max_tokens": args.max_tokens, "prompts": PROMPTS, "threads": 1,
        "machine": platform.platform(), "cpu_count": os.cpu_count(), "cpu_class": cpu_class(), "cpu": cpu_name(),
        "command": "python bench/rpc_split_bench.py " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    (out_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = [
        f"# {Path(model).name}: local vs split across loopback rpc-servers",
        "",
        f"`{meta['command']}`; 1 thread per process, {args.max_tokens} greedy tokens after each of "
        f"{len(PROMPTS)} code prompts, on {meta['cpu_count']} shared cores, CPU class {meta['cpu_class']} "
        f"({meta['cpu']}).",
        "",
        "| configuration | layer ranges | " + " | ".join(f"{m} tok/s" for m in args.modes)
        + " | tokens = --device CPU's | bytes per token in / out, each server (" + args.modes[0] + ") |",
        "|---|---|" + "---|" * len(args.modes) + "---|---|",
    ]
    for r in results:
        ranges = ", ".join(f"{d}[{b},{e})" for d, b, e in r["split"]) or r["device"]
        run0 = r["runs"][args.modes[0]]
        traffic = "; ".join(
            f"{i / 1024:.1f} KiB / {o / 1024:.1f} KiB"
            for i, o in zip(run0["server_bytes_in_per_token"], run0["server_bytes_out_per_token"], strict=True)
        ) or "-"
        speeds = " | ".join(f"{r['runs'][m]['tok_s']:.1f}" for m in args.modes)
        same = "yes" if r["same_tokens_as_device_cpu"] else "NO"
        lines.append(f"| {r['name']} | {ranges} | {speeds} | {same} | {traffic} |")
    every_mode = all(r["same_tokens_in_every_mode"] for r in results)
    lines += [
        "",
        f"Within each configuration every mode gives the same tokens: {'yes' if every_mode else 'NO'}. The splits are "
        "compared with `--device CPU`, whose ggml kernels they run (their logits are bitwise equal, "
        "tests/test_rpc_split.py); the default path runs our own kernels, whose rounding differs from ggml's, so its "
        "greedy tokens may part from ggml's at a near tie.",
    ]
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
