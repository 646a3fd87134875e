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
    # With the repetitions: their median (the first, a warm-up on the GPU, would drag the mean)
    samples = [12_100_000, 4_550_000, 4_480_000, 4_480_000, 4_470_000]
    s = collect.llama_bench_summary([{"n_prompt": 2, "n_gen": 0, "avg_ts": 300.0, "samples_ns": samples}])
    assert s["pp2"]["pass_ms"] == pytest.approx(4.48) and s["pp2"]["tokens_per_second"] == pytest.approx(2 / 4.48e-3)


_NCU_HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size",'
               '"Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"')  # fmt: skip


def _ncu_csv(path: Path, launches: list[tuple[str, str]]) -> Path:
    fixed = '"(32, 4, 1)","(64, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","ns"'
    rows = [f'"{i}","7","python3","host","{name}","1","7",{fixed},"{ns}"' for i, (name, ns) in enumerate(launches)]
    path.write_text("==PROF== Connected to process 7\n" + "\n".join([_NCU_HEADER, *rows]) + "\n==PROF== Disconnected\n")
    return path


def test_kernel_profile_tabulates_ncu_csv(tmp_path: Path) -> None:
    script = ROOT / "bench" / "gpu_scale" / "kernel_profile.py"
    mmvq = "void mul_mat_vec_q<(ggml_type)12, 1, false>(const void *, const void *, float *, int)"
    one = _ncu_csv(tmp_path / "rows1.csv", [(mmvq, "5,120"), ("rms_norm_f32(const float *, float *)", "2,000")])
    two = _ncu_csv(tmp_path / "rows2.csv", [(mmvq, "6,000"), (mmvq, "1,000"), ("k_set_rows(float *)", "900")])
    r = subprocess.run([sys.executable, str(script), "--summarize", str(one), str(two)], capture_output=True,
                       text=True, check=True)  # fmt: skip
    lines = r.stdout.splitlines()
    assert lines[0] == "| kernel | rows1: launches, us | rows2: launches, us |"
    assert "| mul_mat_vec_q<(ggml_type)12, 1, false> | 1, 5.1 | 2, 7.0 |" in lines
    assert "| rms_norm_f32 | 1, 2.0 |  |" in lines and "| k_set_rows |  | 1, 0.9 |" in lines
    assert lines[-2] == "| **total launches** | **2** | **3** |"
    assert lines[-1] == "| **total kernel time, us** | **7.1** | **7.9** |"
    bad = tmp_path / "bad.csv"
    bad.write_text("no profile here\n")
    r = subprocess.run([sys.executable, str(script), "--summarize", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "no ncu CSV header" in r.stderr


def test_kernel_profile_drives_passes_on_the_cpu(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    subprocess.run([sys.executable, str(ROOT / "bench" / "synth_gguf.py"), "qwen2.5-1.5b", "q4_k_m", "-o", str(model),
                    "-q", "--layers", "2"], check=True)  # fmt: skip
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_scale" / "kernel_profile.py"), str(model),
                        "--device", "CPU", "--no-profiler", "--rows", "1,3"], capture_output=True, text=True,
                       check=True)  # fmt: skip
    assert [line.split(":")[0] for line in r.stderr.splitlines() if line.startswith("rows")] == ["rows 1", "rows 3"]


def test_rescale_gives_the_other_engines_row_costs(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from replay_sim import rescale_rows
    finally:
        sys.path.pop(0)
    rows = {str(k): {"base_seconds": 0.1 * k, "layer_seconds": 0.2 * k, "full_pass_seconds": 1.0 * k,
                     "full_pass_with_logits_seconds": 1.5 * k} for k in (1, 2, 3, 4)}  # fmt: skip
    curve = {"n_layer": 4, "rows": rows, "logits_seconds": {str(k): 0.5 * k for k in (1, 2, 3, 4)}}
    out = rescale_rows(curve, {1: 1.0, 2: 1.1, 4: 1.5})
    assert out["rows"]["1"] == rows["1"]  # one row kept
    assert out["rows"]["2"]["full_pass_seconds"] == pytest.approx(1.1)
    assert out["rows"]["3"]["full_pass_seconds"] == pytest.approx(1.3)  # between 2 and 4
    assert out["rows"]["4"]["layer_seconds"] == pytest.approx(0.8 * 1.5 / 4)
    assert out["logits_seconds"]["4"] == pytest.approx(2.0 * 1.5 / 4)
    assert curve["rows"]["4"]["full_pass_seconds"] == 4.0  # the input untouched
    with pytest.raises(ValueError, match="no relative cost at or beyond 3 rows"):
        rescale_rows(curve, {1: 1.0, 2: 1.1})
    with pytest.raises(ValueError, match="must start at 1 row"):
        rescale_rows(curve, {2: 1.1, 4: 1.5})


@pytest.mark.slow
def test_parity_check_runs_on_the_cpu_device(tmp_path: Path) -> None:
    """The GPU's bitwise parity check (identity heads, every exit emitting, up to 8 rows per pass), on ggml's CPU
    device: every mode equal to standard decoding, and passes of several rows did happen."""
    model = tmp_path / "m.gguf"
    subprocess.run([sys.executable, str(ROOT / "bench" / "synth_gguf.py"), "qwen2.5-1.5b", "q4_k_m", "-o", str(model),
                    "-q", "--layers", "2"], check=True)  # fmt: skip
    out = tmp_path / "parity.json"
    script = ROOT / "bench" / "gpu_scale" / "parity_check.py"
    r = subprocess.run([sys.executable, str(script), str(model), "--device", "CPU", "--tokens", "8", "-o", str(out)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert doc["parity"] and doc["device"] == "CPU" and len(doc["cases"]) == 9
    assert all(c["tokens_equal"] and c["logits_bitwise_equal"] for c in doc["cases"].values())
    assert any(sum(c["rows_per_pass"][2:]) > 0 for c in doc["cases"].values())
