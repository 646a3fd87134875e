"""Multi-turn sessions through ``adadecode serve`` and llama.cpp's ``llama-server``: what prefix reuse buys.

Two sessions run through the OpenAI client against each server in turn (same model file, same threads, greedy):

- coding: a coding assistant with a ~600-token system prompt, ``--turns`` user questions; every turn resends the
  whole conversation, so without prefix reuse each turn prefills everything again.
- agent: an agent loop; after each reply a 300-800-token tool output (a file listing, a log, a test report) is
  appended and the model answers again.

Reported per turn: prompt tokens, time to first token (TTFT, where prefill shows), decode tokens/s after the first
token, and per session the total time. adadecode runs with ``--cache-ram``; llama-server with ``--cache-reuse 256``
(its own prompt cache; llama-server keeps a slot's KV across requests). Writes a JSON file with every figure.

    python bench/session_bench.py -m qwen2.5-coder-1.5b --heads auto -t 2 -o bench/results/session.json
    python bench/session_bench.py -m smollm2-135m --turns 2 --agent-steps 2 --max-tokens 16   # smoke run

Needs the server extra and the ``openai`` package; llama-server from bench/build_llamacpp.sh (skipped with
``--servers adadecode`` or when the binary is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adadecode.bench.machine import cpu_class
from adadecode.bench.processes import stop_process

CACHE = Path(os.environ.get("ADADECODE_CACHE", Path.home() / ".cache/adadecode"))
LLAMA_SERVER = CACHE / "llamacpp-bin/bin/llama-server"

CODING_RULES = [
    "Prefer the standard library; add a dependency only when it saves real work and say why.",
    "Write type hints on every public function and keep functions short enough to read at a glance.",
    "Name things for what they mean in the problem, not for their type; avoid abbreviations except well-known ones.",
    "Handle errors where something can be done about them; otherwise let them propagate with a clear message.",
    "Never swallow an exception silently; log it or re-raise it with context that names the failing input.",
    "Tests come with every change: a failing test first when fixing a bug, then the fix.",
    "Keep I/O at the edges: pure functions in the middle are easier to test and to reuse.",
    "Document why a piece of code exists when it is not obvious, not what each line does.",
    "Use dataclasses for plain records and enums for closed sets of values instead of bare strings.",
    "Format with the project's formatter and keep lines under 100 characters.",
    "Avoid global state; pass configuration explicitly or through one settings object.",
    "Measure before optimising, and keep the measurement in the commit message.",
    "Prefer iteration over recursion in Python for inputs of unbounded depth.",
    "When parsing input, validate it once at the boundary and work with trusted types afterwards.",
    "Keep public APIs small; every exported name is a promise to keep.",
    "Write commit messages in the imperative mood with a short summary line and a body that explains why.",
]
CODING_QUESTIONS = [
    "Write a function that parses a CSV line with quoted fields.",
    "Now add support for a custom delimiter.",
    "Write tests for it with pytest.",
    "How would you make it faster for very long files?",
    "Add type hints and a docstring to the final version.",
    "Summarise the design decisions we made in three bullet points.",
    "Refactor it into a small class.",
    "What edge cases are still untested?",
]
AGENT_TASK = "Find why the test suite of the project fails and propose a fix. Think step by step and ask for tools."


def coding_system_prompt() -> str:
    """About 600 tokens of instructions."""
    lines = ["You are a careful senior Python engineer acting as a coding assistant. Follow these rules:"]
    rules = (CODING_RULES * 2)[:27]  # ~22 tokens a rule
    lines += [f"{i + 1}. {rule}" for i, rule in enumerate(rules)]
    return "\n".join(lines)


def tool_output(rng: random.Random, step: int) -> str:
    """A 300-800-token tool result: a directory listing, a log excerpt or a test report."""
    kind = step % 3
    n = rng.randint(18, 45)  # lines of ~17-25 tokens
    if kind == 0:
        rows = [f"-rw-r--r-- 1 dev dev {rng.randint(100, 99999):>6} src/pkg/module_{i:03d}.py" for i in range(n)]
        return "$ ls -l src/pkg\n" + "\n".join(rows)
    if kind == 1:
        rows = [
            f"2026-01-{rng.randint(1, 28):02d} 12:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} "
            f"{rng.choice(['INFO', 'WARN', 'ERROR'])} worker-{rng.randint(1, 8)} handled job {rng.randint(1, 9999)}"
            for _ in range(n)
        ]
        return "$ tail -n 80 app.log\n" + "\n".join(rows)
    rows = [
        f"tests/test_mod_{i:03d}.py::test_case_{rng.randint(1, 40)} {rng.choice(['PASSED', 'PASSED', 'FAILED'])}"
        for i in range(n)
    ]
    return "$ pytest -v\n" + "\n".join(rows)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OtherCpu:
    """The CPU time that processes other than the server under test and this client spend while a session runs, in
    cores averaged over it (and the hypervisor's steal): turns are timed one after the other, so anything else that
    runs meanwhile slows one server's figures and not the other's. bench/check_disturbed.py lists such sessions."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.start = self._read()

    def _read(self) -> tuple[float, float, float]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        busy, steal = sum(fields[i] for i in (0, 1, 2, 5, 6)), fields[7]  # user nice system irq softirq; steal
        with open(f"/proc/{self.server_pid}/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
        server = sum(int(v) for v in stat[11:15])  # utime stime cutime cstime
        mine = os.times()
        own = (mine.user + mine.system + mine.children_user + mine.children_system) * self.ticks
        return busy - server - own, steal, time.perf_counter()

    def cores(self) -> dict[str, float]:
        other, steal, wall = self._read()
        seconds = max(1e-9, wall - self.start[2]) * self.ticks
        return {"other_cores": round(max(0.0, other - self.start[0]) / seconds, 3),
                "steal_cores": round((steal - self.start[1]) / seconds, 3)}  # fmt: skip


@contextlib.contextmanager
def running(cmd: list[str], port: int, log: Path, timeout: float = 300.0) -> Iterator[tuple[str, int]]:
    from soak_server import _wait_healthy  # bench/ is the script's directory, first on sys.path

    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, str(log), timeout)
        yield url, proc.pid
    finally:
        stop_process(proc, 20)


def one_turn(
    client: Any, model: str, messages: list[dict[str, str]], max_tokens: int, mode: str | None
) -> dict[str, Any]:
    start = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    usage: Any = None
    n_chunks = 0
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"mode": mode} if mode else None,
    )  # fmt: skip
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter()
            pieces.append(chunk.choices[0].delta.content)
            n_chunks += 1
        if getattr(chunk, "usage", None):
            usage = chunk.usage
    end = time.perf_counter()
    completion = usage.completion_tokens if usage else n_chunks
    ttft = (first if first is not None else end) - start
    decode = end - first if first is not None else 0.0
    return {
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": completion,
        "ttft_s": round(ttft, 4),
        "decode_tokens_per_s": round((completion - 1) / decode, 2) if decode > 0 and completion > 1 else None,
        "total_s": round(end - start, 4),
        "text": "".join(pieces),
    }


def run_sessions(url: str, pid: int, model: str, args: argparse.Namespace, mode: str | None) -> dict[str, Any]:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=3600)
    results: dict[str, Any] = {}

    messages = [{"role": "system", "content": coding_system_prompt()}]
    turns = []
    start, cpu = time.perf_counter(), OtherCpu(pid)
    for question in (CODING_QUESTIONS * 2)[: args.turns]:
        messages.append({"role": "user", "content": question})
        t = one_turn(client, model, messages, args.max_tokens, mode)
        t["messages"] = list(messages)
        messages.append({"role": "assistant", "content": t["text"]})
        turns.append(t)
        print(f"  coding turn {len(turns)}: {_brief(t)}", flush=True)
    results["coding"] = {"turns": turns, "total_s": round(time.perf_counter() - start, 3), **cpu.cores()}

    rng = random.Random(1)
    messages = [
        {"role": "system", "content": "You are an autonomous software agent. Reply with your next action."},
        {"role": "user", "content": AGENT_TASK},
    ]
    turns = []
    start, cpu = time.perf_counter(), OtherCpu(pid)
    for step in range(args.agent_steps):
        t = one_turn(client, model, messages, args.max_tokens, mode)
        t["messages"] = list(messages)
        messages.append({"role": "assistant", "content": t["text"]})
        messages.append({"role": "user", "content": "Tool output:\n" + tool_output(rng, step)})
        turns.append(t)
        print(f"  agent step {len(turns)}: {_brief(t)}", flush=True)
    results["agent"] = {"turns": turns, "total_s": round(time.perf_counter() - start, 3), **cpu.cores()}
    return results


def _brief(turn: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in turn.items() if k not in ("text", "messages")}


def check_fresh(gguf: str, args: argparse.Namespace, report: dict[str, Any]) -> dict[str, Any]:
    """Each turn of every adadecode run against our standard decoding from an empty cache on the same messages."""
    from adadecode import Llama

    llm = Llama(gguf, n_ctx=args.ctx_size, n_threads=args.threads)
    checked = mismatched = 0
    reference: dict[str, str] = {}
    first_mismatch = None
    for name, res in report["servers"].items():
        if not name.startswith("adadecode"):
            continue
        for session in ("coding", "agent"):
            for i, turn in enumerate(res[session]["turns"]):
                key = json.dumps(turn["messages"])
                if key not in reference:
                    llm.reset()
                    out = llm.create_chat_completion(turn["messages"], max_tokens=args.max_tokens, temperature=0,
                                                     mode="standard")  # fmt: skip
                    reference[key] = out["choices"][0]["message"]["content"]
                checked += 1
                if reference[key] != turn["text"]:
                    mismatched += 1
                    first_mismatch = first_mismatch or f"{name} {session} turn {i + 1}"
    return {"turns_checked": checked, "mismatched": mismatched, "first_mismatch": first_mismatch,
            "distinct_requests": len(reference)}  # fmt: skip


def summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per server (and mode) and session: total time, median TTFT of turns >= 2, and their ratios to llama-server."""
    rows = []
    servers = report["servers"]
    for session in ("coding", "agent"):
        base = servers.get("llama-server", {}).get(session)
        for name, res in servers.items():
            turns = res[session]["turns"]
            ttft = statistics.median(t["ttft_s"] for t in turns[1:]) if len(turns) > 1 else turns[0]["ttft_s"]
            row = {"server": name, "session": session, "total_s": res[session]["total_s"], "ttft_later_s": ttft,
                   "prompt_tokens_last": turns[-1]["prompt_tokens"]}  # fmt: skip
            if base:
                base_turns = base["turns"]
                base_ttft = (statistics.median(t["ttft_s"] for t in base_turns[1:]) if len(base_turns) > 1
                             else base_turns[0]["ttft_s"])  # fmt: skip
                row["total_vs_llama_server"] = round(res[session]["total_s"] / base["total_s"], 3)
                row["ttft_later_vs_llama_server"] = round(ttft / base_ttft, 3) if base_ttft > 0 else None
            rows.append(row)
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Sessions through the servers: {Path(report['model']).name}, {report['threads']} threads, "
        f"{report['max_tokens']} tokens per reply, CPU class {report['cpu_class']}",
        "",
        f"Command: `{report['command']}`",
        "",
        "| server / mode | session | total s | vs llama-server | TTFT turns >= 2 (median) s | vs llama-server |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["summary"]:
        lines.append(f"| {r['server']} | {r['session']} | {r['total_s']:.2f} | {r.get('total_vs_llama_server', '-')} | "
                     f"{r['ttft_later_s']:.3f} | {r.get('ttft_later_vs_llama_server', '-')} |")  # fmt: skip
    fresh = report.get("fresh_check")
    if fresh:
        lines += [
            "",
            f"Text against our standard decoding from an empty cache on the same messages: "
            f"{fresh['turns_checked'] - fresh['mismatched']}/{fresh['turns_checked']} turns identical"
            + (f" (first mismatch: {fresh['first_mismatch']})" if fresh["mismatched"] else "")
            + ".",
        ]
    watched = [(res[s]["other_cores"], res[s]["steal_cores"]) for res in report["servers"].values()
               for s in ("coding", "agent") if "other_cores" in res[s]]  # fmt: skip
    if watched:
        lines += ["", f"Other processes on the machine during the sessions: at most {max(o for o, _ in watched):.2f} "
                  f"cores (steal at most {max(t for _, t in watched):.2f}); `bench/check_disturbed.py` lists sessions "
                  "over its limit."]  # fmt: skip
    lines += ["", "Per-turn figures (prompt tokens, TTFT, decode tokens/s) are in the JSON file next to this one."]
    return "\n".join(lines) + "\n"



def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default="smollm2-135m", help="GGUF path or known model name")
    p.add_argument("--heads", default=None, help="adadecode's exit heads (e.g. auto); default none")
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("-c", "--ctx-size", type=int, default=8192)
    p.add_argument("--turns", type=int, default=6, help="coding-session turns")
    p.add_argument("--agent-steps", type=int, default=6, help="agent-loop steps")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per reply")
    p.add_argument("--cache-ram", type=int, default=2048, metavar="MiB", help="adadecode serve --cache-ram")
    p.add_argument("--servers", default="adadecode,llama-server", help="comma-separated: adadecode, llama-server")
    p.add_argument(
        "--modes",
        default="standard,adadecode,ngram,adadecode+ngram",
        help="adadecode's decoding modes, one fresh server each (adadecode ones need --heads)",
    )
    p.add_argument("--no-fresh-check", action="store_true",
                   help="skip comparing every reply with standard decoding from an empty cache")  # fmt: skip
    p.add_argument("--llama-server", type=Path, default=LLAMA_SERVER)
    p.add_argument("-o", "--output", type=Path, default=None, help="JSON results file")
    args = p.parse_args()
    for name in ("threads", "ctx_size", "turns", "agent_steps", "max_tokens", "cache_ram"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - {"adadecode", "llama-server"}
    if unknown:
        p.error(f"unknown servers {sorted(unknown)}: choose from adadecode, llama-server")

    modes = [m for m in args.modes.split(",") if m]
    bad = set(modes) - {"standard", "adadecode", "ngram", "adadecode+ngram"}
    if bad:
        p.error(f"unknown modes {sorted(bad)}: choose from standard, adadecode, ngram, adadecode+ngram")
    if any(m.startswith("adadecode") for m in modes) and not args.heads:
        p.error("the adadecode modes need exit heads: pass --heads auto (or drop them from --modes)")

    from adadecode.fetch import resolve_model

    gguf = str(resolve_model(args.model))
    report: dict[str, Any] = {"model": gguf, "heads": args.heads, "threads": args.threads, "ctx": args.ctx_size,
                              "max_tokens": args.max_tokens, "cpu_class": cpu_class(),
                              "command": " ".join(["python", *sys.argv]), "servers": {}}  # fmt: skip
    logs = Path(tempfile.mkdtemp(prefix="session_bench_"))
    runs = [("adadecode", m) for m in modes] if "adadecode" in servers else []
    runs += [("llama-server", None)] if "llama-server" in servers else []
    for server, mode in runs:
        port = _free_port()
        if server == "adadecode":
            cmd = [sys.executable, "-m", "adadecode", "serve", "-m", gguf, "-t", str(args.threads),
                   "-c", str(args.ctx_size), "--port", str(port), "--cache-ram", str(args.cache_ram),
                   "--max-tokens", str(args.max_tokens), "--log-level", "warning"]  # fmt: skip
            if args.heads:
                cmd += ["--heads", args.heads]
        else:
            if not args.llama_server.exists():
                print(f"skipping llama-server: {args.llama_server} not found (bench/build_llamacpp.sh)", flush=True)
                continue
            cmd = [str(args.llama_server), "-m", gguf, "-t", str(args.threads), "-c", str(args.ctx_size),
                   "--port", str(port), "--host", "127.0.0.1", "--cache-reuse", "256", "-np", "1"]  # fmt: skip
        name = f"adadecode {mode}" if mode else server
        print(f"{name}: {' '.join(cmd)}", flush=True)
        with running(cmd, port, logs / f"{name.replace(' ', '_')}.log") as (url, pid):
            sessions = run_sessions(url, pid, Path(gguf).stem, args, mode)
            report["servers"][name] = {"command": cmd, "mode": mode, **sessions}
    if not args.no_fresh_check and runs and runs[0][0] == "adadecode":
        print("checking every reply against standard decoding from an empty cache ...", flush=True)
        report["fresh_check"] = check_fresh(gguf, args, report)
        print(f"  {report['fresh_check']}", flush=True)
    report["summary"] = summary(report)
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
        args.output.with_suffix(".md").write_text(markdown(report))
    print("\nserver                    session  turn  prompt  TTFT s  decode tok/s")
    for server, res in report["servers"].items():
        for session in ("coding", "agent"):
            for i, t in enumerate(res[session]["turns"]):
                print(f"{server:<25} {session:<8} {i + 1:>4}  {t['prompt_tokens'] or '?':>6}  {t['ttft_s']:>6.3f}  "
                      f"{t['decode_tokens_per_s'] or 0:>12.1f}")  # fmt: skip
            print(f"{server:<25} {session:<8} total {res[session]['total_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
