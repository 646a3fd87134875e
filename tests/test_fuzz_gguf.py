"""Corruption fuzzing: 10,000 mutated GGUF files (tiny model, its exit heads, and SmolLM2's real header over a sparse
data region), each loaded by a worker process. Every file must either be rejected with a RuntimeError/ValueError
carrying a message, or load cleanly (a mutation can be harmless, e.g. a changed byte inside a token's text), and
then run. Zero crashes, zero hangs: a worker that dies is reported with the mutation that killed it and restarted
after it. The cases are fixed by SEED; ADADECODE_FUZZ_CASES changes their number (e.g. 200 for a quick look).
"""

from __future__ import annotations

import collections
import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import gguf_fuzz
from tiny_gguf import write_tiny_heads, write_tiny_model

N_CASES = int(os.environ.get("ADADECODE_FUZZ_CASES", "10000"))
N_SMOLLM2 = min(1000, N_CASES // 10)  # the first cases mutate the real header, the rest the tiny files
N_WORKERS = 2
STALL_SECONDS = 60  # no progress for this long is a hang


def _run_range(args: list[str], start: int, stop: int, results: dict[int, tuple[str, str, str, str]]) -> list[str]:
    """Run workers over [start, stop), restarting after each crash; fills `results`, returns crash reports."""
    crashes = []
    while start < stop:
        cmd = [sys.executable, gguf_fuzz.__file__, "worker", *args, str(start), str(stop), str(N_SMOLLM2)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        current: tuple[int, str, str] | None = None
        last = time.monotonic()
        hung = False
        while True:
            if not sel.select(timeout=5):
                if time.monotonic() - last > STALL_SECONDS:
                    proc.kill()
                    hung = True
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            last = time.monotonic()
            tag, index, rest = line.rstrip("\n").split(" ", 2)
            if tag == "B":
                name, desc = rest.split(" ", 1)
                current = (int(index), name, json.loads(desc))
            elif tag == "E" and current is not None:
                outcome, message = rest.split(" ", 1)
                results[current[0]] = (current[1], current[2], outcome, json.loads(message))
                current = None
        stderr = proc.stderr.read()
        rc = proc.wait()
        sel.close()
        if current is None and rc == 0 and not hung:
            break
        if current is None:  # died between cases: a worker problem, not a mutation
            crashes.append(f"worker exited with {rc} outside a case after {start}: {stderr[-2000:]}")
            break
        index, name, desc = current
        what = "hung" if hung else f"exited with status {rc}"
        crashes.append(f"case {index} ({name}: {desc}) {what}; stderr: {stderr[-1500:]}")
        results[index] = (name, desc, "crash", what)
        start = index + 1
    return crashes


@pytest.mark.slow
def test_fuzz_gguf(tmp_path: Path, cache_dir: Path, engine: Any) -> None:
    tiny_model = write_tiny_model(tmp_path / "tiny.gguf")
    tiny_heads = write_tiny_heads(tmp_path / "tiny-heads.gguf", layers=(1,))
    smollm2 = cache_dir / "models" / "smollm2-135m.gguf"
    args = [str(tiny_model), str(tiny_heads), str(smollm2) if smollm2.is_file() else "-", str(tmp_path)]

    import threading

    results: dict[int, tuple[str, str, str, str]] = {}
    crashes: list[str] = []
    bounds = [N_CASES * k // N_WORKERS for k in range(N_WORKERS + 1)]

    def run(k: int) -> None:
        crashes.extend(_run_range(args, bounds[k], bounds[k + 1], results))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(N_WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    by_outcome = collections.Counter(outcome for _, _, outcome, _ in results.values())
    by_case = collections.Counter((name, outcome) for name, _, outcome, _ in results.values())
    summary = f"{len(results)} cases: {dict(by_outcome)}; by file: {dict(sorted(by_case.items()))}"
    print(summary)
    assert not crashes, "\n".join(crashes[:20])
    assert len(results) == N_CASES, summary
    bad = [f"case {i} ({r[0]}: {r[1]}): {r[2]} {r[3]}" for i, r in sorted(results.items())
           if r[2] not in ("rejected", "accepted")]  # fmt: skip
    assert not bad, "\n".join(bad[:20])
    # The mutations are meant to break files: most must be rejected, or the fuzzer is not reaching the checks.
    assert by_outcome["rejected"] >= 0.6 * N_CASES, summary
