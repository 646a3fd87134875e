"""Computing on a ggml device (`device=` / `n_gpu_layers=`): the path a GPU takes, checked on every device present.

The CPU is always a device, so CI runs this path too: weights copied into the device's memory, embeddings looked up
on the host, ggml's kernels, and decode passes over several rows built from pieces whose kernels a one-row pass
also uses. On a machine with a GPU build the same checks run on the GPU. The logits of every device are held to
the fp32 reference in test_engine.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from conftest import gpu_devices
from prompts import PARITY_PROMPTS


@pytest.fixture(scope="module", params=["CPU", *gpu_devices()])
def device_model(request: pytest.FixtureRequest, engine: Any, smollm2_path: Path) -> Any:
    return engine(smollm2_path, n_ctx=512, n_threads=2, device=request.param, heads="auto")


def test_device_is_reported(device_model: Any) -> None:
    gen = device_model.generate("Hello", max_tokens=2, mode="standard")
    assert gen.stats["device"] == device_model.device
    assert device_model.device != "CPU (mapped file)"


@pytest.mark.slow
def test_layer_parallel_parity_on_device(device_model: Any) -> None:
    """Passes over 1-8 rows on the device give the tokens one-row standard decoding gives, prompt by prompt."""
    cases = [
        {"mode": "adadecode"},
        # Every exit check emits and up to 8 rows share a pass: the multi-row kernels are exercised hardest.
        {"mode": "adadecode", "gamma": 0.0, "max_pending": 7, "adaptive_exits": False},
        {"mode": "adadecode+ngram"},
    ]
    wide_passes = 0
    for prompt in PARITY_PROMPTS[:6]:
        std = device_model.generate(prompt, mode="standard", max_tokens=64)
        for case in cases:
            other = device_model.generate(prompt, max_tokens=64, **case)
            assert other.tokens == std.tokens, (prompt, case)
            wide_passes += sum(other.stats["rows_per_pass"][5:])
    assert wide_passes > 0  # passes of 5+ rows, where kernels change on a GPU, did happen


def test_unknown_device_is_a_clear_error(engine: Any, smollm2_path: Path) -> None:
    from adadecode import Error

    with pytest.raises(Error, match=r"unknown device 'nosuchdevice' \(available: .*CPU"):
        engine(smollm2_path, n_ctx=64, device="nosuchdevice")


def test_repack_is_refused_on_a_device(engine: Any, smollm2_path: Path) -> None:
    from adadecode import Error

    with pytest.raises(Error, match="repacking applies to the CPU"):
        engine(smollm2_path, n_ctx=64, device="CPU", repack=True)


def test_gpu_layers_without_gpu_warn_and_use_the_cpu(engine: Any, smollm2_path: Path) -> None:
    from adadecode import list_devices

    if any(d["kind"] in ("gpu", "igpu") for d in list_devices()):
        pytest.skip("this build has a GPU")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = engine(smollm2_path, n_ctx=64, n_gpu_layers=-1)
    assert any("has none; computing on the CPU" in str(w.message) for w in caught)
    assert model.device == "CPU (mapped file)"
    with pytest.raises(Exception, match="no GPU device"):
        engine(smollm2_path, n_ctx=64, device="gpu")


def test_cli_devices_and_run_on_a_device(engine: Any, smollm2_path: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "adadecode", "devices"], capture_output=True, text=True, timeout=120, check=True
    )
    assert any(line.startswith("CPU\tcpu\t") for line in listed.stdout.splitlines())
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "adadecode",
            "run",
            "-m",
            str(smollm2_path),
            "-p",
            "Hello",
            "-n",
            "4",
            "--device",
            "cpu",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["stats"]["device"] == "CPU"
    bad = subprocess.run(
        [sys.executable, "-m", "adadecode", "run", "-m", str(smollm2_path), "-p", "Hello", "--device", "tpu9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0
    assert "unknown device 'tpu9'" in bad.stderr
    assert "Traceback" not in bad.stderr
