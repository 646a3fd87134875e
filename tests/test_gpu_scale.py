"""bench/gpu_scale: the prepared GPU run's CPU dry run (synthetic 2-layer model of the 1.5B's widths, ggml's CPU
device, the curve and the pricing of the committed traces), its argument checks and the result bundling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_scale" / "run_gpu.sh"

pytest.importorskip("gguf")


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"), JOBS="1", PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


def test_cpu_dry_run(tmp_path: Path) -> None:
    r = _run(tmp_path, "--cpu", "--layers", "2", "--models", "qwen2.5-1.5b:q4_k_m", "--reps", "1", "--rows", "2",
             "--decode", "4")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["gpu_scale.json", "gpu_scale.md", "results.tar.gz", "run.log"]
    doc = json.loads((out / "gpu_scale.json").read_text())
    assert doc["mode"] == "cpu"
    curve = doc["models"]["qwen2.5-1.5b-q4_k_m-2l"]["curve"]
    assert curve["n_layer"] == 2 and curve["n_embd"] == 1536 and curve["device"] == "CPU"
    assert set(curve["rows"]) == {"1", "2"} and curve["head_seconds"] is not None
    assert curve["standard_decode"]["tokens"] == 4
    traces = sorted(p.stem.removeprefix("traces-") for p in (ROOT / "bench/results/gpu_scale").glob("traces-*.json"))
    assert traces and sorted(doc["predictions"]) == traces
    for pred in doc["predictions"].values():
        assert pred["modes"]["standard"]["predicted_speedup"] == {"curve-qwen2.5-1.5b-q4_k_m-2l": pytest.approx(1.0)}
        assert "adadecode" in pred["modes"] and "ngram" in pred["modes"]
    assert "qwen2.5-1.5b-q4_k_m-2l" in (out / "gpu_scale.md").read_text()
    # A second call resumes: the model and the curve are there, nothing is measured again.
    r2 = _run(tmp_path, "--cpu", "--layers", "2", "--models", "qwen2.5-1.5b:q4_k_m", "--reps", "1", "--rows", "2",
              "--decode", "4")  # fmt: skip
    assert r2.returncode == 0, r2.stderr
    assert "pass-cost curve" not in (tmp_path / "out" / "run.log").read_text().split("mode cpu")[-1]


def test_bad_arguments(tmp_path: Path) -> None:
    r = _run(tmp_path, "--cpu", "--reps", "0")
    assert r.returncode == 2 and "'0' is not a positive integer" in r.stderr
    r = _run(tmp_path, "--frobnicate")
    assert r.returncode == 2 and "unknown argument '--frobnicate'" in r.stderr
    r = subprocess.run(["bash", str(ROOT / "bench/gpu_scale/pack_sources.sh"), str(tmp_path / "nothing")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "no llama.cpp tree" in r.stderr


def test_collect_reads_llama_bench_json(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench" / "gpu_scale"))
    try:
        import collect
    finally:
        sys.path.pop(0)
    tests = [{"n_prompt": 4, "n_gen": 0, "avg_ts": 400.0, "gpu_info": "H200", "n_gpu_layers": 99},
             {"n_prompt": 0, "n_gen": 128, "avg_ts": 250.0}]  # fmt: skip
    s = collect.llama_bench_summary(tests)
    assert s["pp4"]["pass_ms"] == pytest.approx(10.0) and s["tg128"]["ms_per_token"] == pytest.approx(4.0)
    assert s["gpu_info"] == "H200"
    assert "error" in collect.llama_bench_summary({"not": "a list"})
