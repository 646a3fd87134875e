"""bench/session_bench.py: a short run through `adadecode serve` gives per-turn figures, replies identical to
standard decoding from an empty cache, and the CPU time of other processes; check_disturbed lists sessions that
other processes disturbed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_other_cpu_counts_a_busy_process_unless_it_is_the_server() -> None:
    session_bench = _load("session_bench")
    idle = subprocess.Popen(["sleep", "60"])
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        as_other = session_bench.OtherCpu(idle.pid)
        time.sleep(1.5)
        other = as_other.cores()["other_cores"]
        as_server = session_bench.OtherCpu(busy.pid)
        time.sleep(1.5)
        server = as_server.cores()["other_cores"]
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()
    assert other - server > 0.5, (other, server)


def test_check_disturbed_lists_sessions_other_processes_slowed() -> None:
    check = _load("check_disturbed")
    quiet = {"other_cores": 0.02, "steal_cores": 0.0}
    doc = {"servers": {
        "adadecode standard": {"coding": {**quiet}, "agent": {"other_cores": 0.9, "steal_cores": 0.0}},
        "llama-server": {"coding": {**quiet}, "agent": {"other_cores": 0.01, "steal_cores": 0.4}},
        "old run": {"coding": {}, "agent": {**quiet}},
    }}  # fmt: skip
    flagged = {(name, session) for name, session, *_ in check.disturbed_sessions(doc, 0.15)}
    assert flagged == {("adadecode standard", "agent"), ("llama-server", "agent"), ("old run", "coding")}


def test_short_session_run_through_the_server(smollm2_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "session.json"
    argv = [sys.executable, str(BENCH / "session_bench.py"), "-m", str(smollm2_path), "--servers", "adadecode",
            "--modes", "standard,ngram", "--turns", "2", "--agent-steps", "2", "--max-tokens", "8", "-t", "1",
            "-c", "4096", "-o", str(out)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert set(doc["servers"]) == {"adadecode standard", "adadecode ngram"}
    for res in doc["servers"].values():
        for session, n in (("coding", 2), ("agent", 2)):
            turns = res[session]["turns"]
            assert len(turns) == n and all(t["completion_tokens"] >= 1 and t["ttft_s"] > 0 for t in turns)
            assert res[session]["other_cores"] >= 0 and res[session]["steal_cores"] >= 0
        agent = res["agent"]["turns"]
        assert agent[1]["prompt_tokens"] > agent[0]["prompt_tokens"] + 200  # the tool output went in
    assert doc["fresh_check"]["turns_checked"] == 8 and doc["fresh_check"]["mismatched"] == 0
    md = out.with_suffix(".md").read_text()
    assert "8/8 turns identical" in md and "Other processes on the machine" in md
