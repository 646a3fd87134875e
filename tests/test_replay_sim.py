"""The pass trace, pass timing and the replay simulator (python/adadecode/replay.py, bench/replay_sim.py). Speed is
never asserted: the tests check that traces describe the passes the engine ran, that tracing changes nothing, and
that pricing adds up what the curve says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adadecode import Model
from adadecode.replay import (
    PassCost,
    check_curve,
    curve_from_microbench,
    curve_from_traces,
    load_curve,
    measure_curve,
    predict,
    record,
)
from adadecode.saving import cost_model

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "def fibonacci(n):\n    "


@pytest.fixture(scope="module")
def model() -> Model:
    return Model("smollm2-135m", n_ctx=512, n_threads=1, heads="smollm2-135m")


def test_trace_matches_the_engine_statistics_and_changes_nothing(model: Model) -> None:
    ids = model.tokenize(PROMPT)
    plain = {mode: model.generate(ids, max_tokens=40, mode=mode).tokens for mode in ("standard", "adadecode+ngram")}
    traces = record(model, [ids], ["standard", "adadecode", "ngram", "adadecode+ngram"], max_tokens=40)
    n_layer = model.n_layer
    for mode, run in traces[0]["modes"].items():
        assert run["tokens"] == plain["standard"], mode  # greedy parity, with the trace on
        stats = run["stats"]
        assert len(run["passes"]) == stats["n_passes"] == len(run["pass_seconds"])
        hist = stats["rows_per_pass"]
        assert sum(p[2] for p in run["passes"]) == sum(r * n for r, n in enumerate(hist))
        for a, b, k, logit_rows, head in run["passes"]:
            assert 0 <= a < b <= n_layer and k >= 1 and logit_rows in (0, 1, k) and head in (0, 1)
            assert logit_rows == 0 or b == n_layer
            assert not head or b in model.exit_layers
        assert all(s > 0 for s in run["pass_seconds"])
    std = traces[0]["modes"]["standard"]["passes"]
    assert std and all(p == [0, n_layer, 1, 1, 0] for p in std)
    assert any(p[4] for p in traces[0]["modes"]["adadecode"]["passes"])  # exit heads checked
    assert traces[0]["modes"]["adadecode+ngram"]["tokens"] == plain["adadecode+ngram"]
    # Tracing is off again afterwards: nothing accumulates.
    model.generate(ids, max_tokens=4)
    assert model._engine.take_pass_trace() == []


def _curve(n_layer: int = 10) -> dict:
    rows = {str(k): {"base_seconds": 1.0, "layer_seconds": 0.1 * (1 + 0.5 * (k - 1))} for k in range(1, 5)}
    return {"kind": "adadecode-pass-cost", "n_layer": n_layer, "rows": rows,
            "logits_seconds": {"1": 0.5, "2": 0.8, "4": 1.4}, "head_seconds": 0.25}  # fmt: skip


def test_pricing_adds_up_the_curve() -> None:
    c = PassCost(_curve())
    assert c.seconds(10, 1, 1) == pytest.approx(1 + 1.0 + 0.5)
    assert c.seconds(4, 2, 0, head=True) == pytest.approx(1 + 4 * 0.15 + 0.25)
    assert c.seconds(3, 4, 4) == pytest.approx(1 + 3 * 0.25 + 1.4)
    assert c.seconds(2, 3, 3) == pytest.approx(1 + 2 * 0.2 + 1.1)  # logits interpolated between 2 and 4 rows
    assert c.seconds(1, 6, 0) == pytest.approx(1 + 0.35)  # rows beyond the curve: its last step continued
    # A trace of a 20-layer model on a 10-layer curve: layer counts halve.
    assert c.price([[0, 20, 1, 1, 0], [0, 8, 2, 0, 1]], trace_layers=20) == pytest.approx(2.5 + 1 + 0.6 + 0.25)


def test_predict_speedups_against_standard() -> None:
    def run(passes: list, seconds: float) -> dict:
        return {"tokens": [1, 2, 3], "decode_seconds": seconds, "passes": passes, "pass_seconds": [seconds]}

    traces = [{"modes": {"standard": run([[0, 10, 1, 1, 0]] * 3, 3.0), "ngram": run([[0, 10, 3, 3, 0]], 1.5)}}]
    out = predict(traces, 10, {"c": PassCost(_curve())})
    assert out["standard"]["predicted_seconds"]["c"] == pytest.approx(3 * 2.5)
    assert out["ngram"]["predicted_seconds"]["c"] == pytest.approx(1 + 10 * 0.2 + 1.1)
    assert out["ngram"]["predicted_speedup"]["c"] == pytest.approx(7.5 / 4.1)
    assert out["ngram"]["measured_speedup"] == pytest.approx(2.0) and out["ngram"]["parity_vs_standard"] == "1/1"
    with pytest.raises(ValueError, match="standard"):
        predict([{"modes": {"ngram": run([], 1.0)}}], 10, {})


def test_curve_fitted_to_decode_traces(model: Model) -> None:
    """Passes priced by a known cost model come back as that model's curve, and its checks are priced per byte."""
    base, layer, extra_row, logits, extra_logits, head = 0.001, 0.01, 0.002, 0.03, 0.008, 0.004

    def price(a: int, b: int, k: int, r: int, h: int) -> float:
        return base + (b - a) * (layer + extra_row * (k - 1)) + (logits + extra_logits * (r - 1) if r else 0) + head * h

    shapes = [[0, 7, 1, 0, 1], [7, 14, 1, 0, 1], [14, 30, 1, 1, 0], [0, 30, 1, 1, 0], [14, 30, 3, 3, 0],
              [7, 14, 2, 0, 1], [0, 14, 1, 0, 1], [14, 30, 5, 5, 0], [0, 7, 1, 0, 0]]  # fmt: skip
    std = [0, 30, 1, 1, 0]
    traces = [{"modes": {
        "standard": {"passes": [std] * 3, "pass_seconds": [price(*std)] * 3},
        "adadecode": {"passes": shapes, "pass_seconds": [price(*p) for p in shapes]},
    }}]  # fmt: skip
    curve = curve_from_traces(traces, "adadecode", 30, check_bytes=1e6)
    check_curve(curve)
    c = PassCost(curve)
    for a, b, k, r, h in shapes:
        assert c.seconds(b - a, k, r, bool(h)) == pytest.approx(price(a, b, k, r, h))
    costs = cost_model(curve, 30, model.path)
    assert costs.marginal_row == pytest.approx(extra_row / layer)
    assert costs.logits_marginal_row == pytest.approx(extra_logits / logits)
    assert costs.check_per_byte == pytest.approx(head / price(*std) / 1e6)
    assert costs.source == "check cost calibrated on the curve's own exit checks"
    no_heads = [{"modes": {m: {**run, "passes": [[*p[:4], 0] for p in run["passes"]]}
                           for m, run in traces[0]["modes"].items()}}]  # fmt: skip
    with pytest.raises(ValueError, match="no head checks"):
        curve_from_traces(no_heads, "adadecode", 30)
    short = {"passes": shapes[:3], "pass_seconds": [1.0] * 3}
    with pytest.raises(ValueError, match="too few"):
        curve_from_traces([{"modes": {"standard": short, "adadecode": short}}], "adadecode", 30)
    with pytest.raises(ValueError, match="the modes standard and 'adadecode'"):
        curve_from_traces([{"modes": {"adadecode": traces[0]["modes"]["adadecode"]}}], "adadecode", 30)


def test_microbench_json_reads_as_a_curve() -> None:
    path = ROOT / "bench" / "results" / "gpu" / "microbench-smollm2-h100.json"
    doc = json.loads(path.read_text())
    curve = load_curve(path)
    c = PassCost(curve)
    g = doc["gpu"]
    one = g["full_pass_seconds_min"]["1"]
    for k in ("1", "4", "8"):  # a pass over all layers without logits, and with them
        assert c.seconds(30, int(k)) == pytest.approx(g["relative_cost_min"][k] * one)
        assert c.seconds(30, int(k), int(k)) == pytest.approx(g["full_pass_seconds_min"][k])
    # The fixed cost: a one-row pass extrapolated to no layers from the half and the full pass (medians both).
    base = 2 * g["half_model_pass_seconds"] - g["relative_cost"]["1"] * g["full_pass_seconds"]["1"]
    assert curve["rows"]["8"]["base_seconds"] == pytest.approx(max(0.0, base))
    nographs = json.loads((path.parent / "microbench-smollm2-h100-no-cuda-graphs.json").read_text())["gpu"]
    base = 2 * nographs["half_model_pass_seconds"] - nographs["relative_cost"]["1"] * nographs["full_pass_seconds"]["1"]
    assert base > 0  # launches dominate without CUDA graphs: half the layers cost nearly a whole pass
    c = PassCost(load_curve(path.parent / "microbench-smollm2-h100-no-cuda-graphs.json"))
    assert c.seconds(0, 1) == pytest.approx(base)
    with pytest.raises(ValueError, match="setup 'mmap' is not in"):
        curve_from_microbench(doc, "mmap")
    # `adadecode bench --micro` writes the binary's JSON inside a report of its own; it is a curve as it stands.
    report = ROOT / "bench" / "results" / "roofline" / "after-merges-2026-12-03e" / "micro-avx512-zen4"
    report_doc = json.loads((report / "micro-qwen2.5-coder-1.5b.json").read_text())
    assert load_curve(report / "micro-qwen2.5-coder-1.5b.json") == curve_from_microbench(report_doc["microbench"])
    with pytest.raises(ValueError, match="not an adadecode-microbench result"):
        curve_from_microbench({"n_layer": 3})
    with pytest.raises(ValueError, match="layer_seconds must be a finite number"):
        check_curve({"n_layer": 2, "rows": {"1": {"base_seconds": 0.0, "layer_seconds": -1}}, "logits_seconds": {}})


def test_measured_curve_and_time_pass_errors(model: Model) -> None:
    curve = measure_curve(model, rows=(1, 2), position=32, reps=2)
    check_curve(curve)
    assert curve["n_layer"] == 30 and set(curve["rows"]) == {"1", "2"}
    assert all(v["full_pass_seconds"] > 0 for v in curve["rows"].values())
    assert curve["head_seconds"] is not None and len(curve["measurements"]) == 2 * 5 + 2
    e = model._engine
    with pytest.raises(RuntimeError, match="not a non-empty range"):
        e.time_pass(5, 5, 1, 10)
    with pytest.raises(RuntimeError, match="logits need layer_end"):
        e.time_pass(0, 10, 1, 10, logit_rows=1)
    with pytest.raises(RuntimeError, match="exceed|n_ctx"):
        e.time_pass(0, 30, 8, 510)
    with pytest.raises(RuntimeError, match="logit_rows must be 0, 1 or n_rows"):
        e.time_pass(0, 30, 4, 10, logit_rows=2)
    # Timing leaves the engine able to generate as before.
    assert model.generate(PROMPT, max_tokens=8).tokens == model.generate(PROMPT, max_tokens=8, mode="standard").tokens


def test_script_end_to_end(tmp_path: Path) -> None:
    script = str(ROOT / "bench" / "replay_sim.py")
    common = ["-m", "smollm2-135m", "--heads", "smollm2-135m", "-t", "1", "--n-ctx", "256"]
    subprocess.run([sys.executable, script, "record", *common, "-n", "16", "--limit", "1", "--modes",
                    "adadecode,ngram", "-o", str(tmp_path / "t.json")], check=True, capture_output=True)  # fmt: skip
    subprocess.run([sys.executable, script, "curve", *common, "--reps", "1", "--max-rows", "3", "--position", "16",
                    "-o", str(tmp_path / "c.json")], check=True, capture_output=True)  # fmt: skip
    out = subprocess.run([sys.executable, script, "price", str(tmp_path / "t.json"), str(tmp_path / "c.json"),
                          "-o", str(tmp_path / "p.json")], check=True, capture_output=True, text=True)  # fmt: skip
    assert "| adadecode |" in out.stdout and "| ngram |" in out.stdout
    doc = json.loads((tmp_path / "p.json").read_text())
    assert set(doc["modes"]) == {"standard", "adadecode", "ngram"}
    assert doc["modes"]["standard"]["predicted_speedup"]["c"] == pytest.approx(1.0)
    bad = subprocess.run([sys.executable, script, "price", str(tmp_path / "c.json"), str(tmp_path / "c.json")],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "not a traces file" in bad.stderr
