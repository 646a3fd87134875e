"""One model split across the local CPU and two `adadecode rpc-server` processes on 127.0.0.1 (docs/rpc.md, phase 2).

Every device runs ggml's CPU kernels and a split pass hands its rows (f32) from device to device unchanged, so the
split's logits are bitwise those of the whole model on the local CPU device (`device="CPU"`), hence its tokens too,
in every decoding mode and when sampling with a seed. --tensor-split sets the layer ranges (Model.split reports
them) and bad values are refused; a server killed mid-generation is a clear error in bounded time.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prompts import PARITY_PROMPTS
from rpc_servers import Server, kill_all
from test_rpc import MODES, pytestmark, run_killing_a_server  # noqa: F401  (pytestmark: RPC backend, no server left over)

N_LAYER = 30  # SmolLM2-135M


@pytest.fixture(scope="module")
def servers() -> Iterator[list[Server]]:
    pair: list[Server] = []
    try:
        pair += [Server(), Server()]
        yield pair
        assert [s.stop()[0] for s in pair] == [0, 0]
    finally:
        kill_all(pair)


@pytest.fixture(scope="module")
def endpoints(servers: list[Server]) -> str:
    return ",".join(s.endpoint for s in servers)


@pytest.fixture(scope="module")
def split(engine: Any, smollm2_path: Path, endpoints: str) -> Any:
    """Split by the devices' free memory (the default)."""
    return engine(smollm2_path, n_ctx=512, n_threads=1, rpc_servers=endpoints, heads="auto")


@pytest.fixture(scope="module")
def local_cpu_device(engine: Any, smollm2_path: Path) -> Any:
    return engine(smollm2_path, n_ctx=512, n_threads=1, device="CPU", heads="auto")


def _check_ranges(ranges: list[tuple[str, int, int]]) -> None:
    assert ranges[0][1] == 0 and ranges[-1][2] == N_LAYER
    assert all(a[2] == b[1] for a, b in zip(ranges, ranges[1:], strict=False))
    assert all(b < e for _, b, e in ranges)


def test_layers_are_split_across_local_and_both_servers(split: Any) -> None:
    ranges = split.split
    assert [d for d, _, _ in ranges][0] == "CPU" and all(d.startswith("RPC") for d, _, _ in ranges[1:])
    assert len(ranges) == 3
    _check_ranges(ranges)
    # Loopback servers report this host's memory, as the local CPU does: about a third each.
    assert all(abs((e - b) - N_LAYER / 3) <= 2 for _, b, e in ranges), ranges
    assert split.device == "+".join(f"{d}[{b},{e})" for d, b, e in ranges)
    assert split.generate("Hi", max_tokens=2, mode="standard").stats["device"] == split.device


def test_split_logits_equal_the_local_cpu_device_bitwise(split: Any, local_cpu_device: Any) -> None:
    for prompt in PARITY_PROMPTS[:3]:
        ids = split.tokenize(prompt)
        a, b = split.logits(ids), local_cpu_device.logits(ids)
        assert a.shape == b.shape and np.array_equal(a, b), (prompt, float(np.abs(a - b).max()))


def test_split_hidden_states_equal_local(split: Any, local_cpu_device: Any) -> None:
    """States captured on every device (layers on both sides of each boundary) in one pass."""
    ids = split.tokenize(PARITY_PROMPTS[4])
    layers = [0, 1, 9, 10, 11, 19, 20, 21, 30]
    assert np.array_equal(split.hidden_states(ids, layers), local_cpu_device.hidden_states(ids, layers))


def test_split_prompt_state_round_trip(split: Any) -> None:
    """A saved state reads every device's KV cache and loading it writes them back."""
    prompt = PARITY_PROMPTS[5]
    split.reset()
    want = split.generate(prompt, max_tokens=12, mode="standard").tokens
    state = split.save_state()
    split.reset()
    split.load_state(state)
    again = split.generate(prompt, max_tokens=12, mode="standard")
    assert again.tokens == want and again.stats["n_prompt_reused"] > 0


@pytest.mark.parametrize("mode", MODES)
def test_split_tokens_equal_local_in_every_mode(split: Any, local_cpu_device: Any, mode: str) -> None:
    for prompt in PARITY_PROMPTS[:3]:
        want = local_cpu_device.generate(prompt, mode="standard", max_tokens=32).tokens
        got = split.generate(prompt, mode=mode, max_tokens=32)
        assert got.tokens == want, (prompt, mode)


@pytest.mark.parametrize("mode", ["standard", "adadecode+ngram"])
def test_split_sampling_with_a_seed_equals_local(split: Any, local_cpu_device: Any, mode: str) -> None:
    """Sampling in a mode with drafts consumes the random stream differently from standard decoding (the same
    distribution, another sequence), so each mode is compared with itself on the local CPU device."""
    prompt = PARITY_PROMPTS[9]
    want = local_cpu_device.generate(prompt, mode=mode, max_tokens=24, temperature=0.9, seed=1234).tokens
    got = split.generate(prompt, mode=mode, max_tokens=24, temperature=0.9, seed=1234).tokens
    assert got == want


def test_decode_logits_equal_local_with_exit_heads(split: Any, local_cpu_device: Any) -> None:
    """The pass trace of an adadecode generation crosses device boundaries (passes from an exit layer on one device
    to the last layer on another, the exit head on the device of the output matrix): the final logits of each
    verified token are still the local CPU device's."""
    prompt = PARITY_PROMPTS[2]
    got = split.generate(prompt, mode="adadecode", max_tokens=16, return_logits=True)
    want = local_cpu_device.generate(prompt, mode="standard", max_tokens=16, return_logits=True)
    assert got.tokens == want.tokens
    assert np.array_equal(np.asarray(got.logits), np.asarray(want.logits))


def test_tensor_split_sets_the_ranges(engine: Any, smollm2_path: Path, endpoints: str, split: Any) -> None:
    m = engine(smollm2_path, n_ctx=256, n_threads=1, rpc_servers=endpoints, tensor_split=[1, 2, 1])
    remote = [d for d, _, _ in split.split[1:]]
    assert m.split == [("CPU", 0, 8), (remote[0], 8, 23), (remote[1], 23, 30)]  # 30/4 = 7.5 -> 8, 22.5 -> 23
    ids = m.tokenize(PARITY_PROMPTS[0])
    assert np.array_equal(m.logits(ids), split.logits(ids))
    # A device given 0 gets no layers; the string form is llama.cpp's flag.
    assert engine(smollm2_path, n_ctx=256, rpc_servers=endpoints, tensor_split="0,1,1").split == [
        (remote[0], 0, 15),
        (remote[1], 15, 30),
    ]
    # One server and a tensor_split: split across the local CPU and that server.
    one = engine(smollm2_path, n_ctx=256, rpc_servers=endpoints.split(",")[0], tensor_split=[3, 1])
    assert one.split == [("CPU", 0, 23), (remote[0], 23, 30)]  # 22.5 rounds away from zero
    # One server without it: the whole model there (phase 1).
    assert engine(smollm2_path, n_ctx=256, rpc_servers=endpoints.split(",")[0]).split == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1, 1], "tensor_split has 2 entries but the model is split across 3 devices"),
        ([1, 1, 1, 1], "tensor_split has 4 entries"),
        ([1, -1, 1], "values must be finite and >= 0"),
        ([1, float("nan"), 1], "values must be finite and >= 0"),
        ([0, 0, 0], "gives no device a share"),
        ("1,x,1", "'x' is not a number"),
    ],
)
def test_bad_tensor_split_is_refused(
    engine: Any, smollm2_path: Path, endpoints: str, value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        engine(smollm2_path, n_ctx=64, rpc_servers=endpoints, tensor_split=value)


def test_tensor_split_needs_rpc_servers(engine: Any, smollm2_path: Path, endpoints: str) -> None:
    with pytest.raises(ValueError, match="give rpc_servers"):
        engine(smollm2_path, n_ctx=64, tensor_split=[1, 1])
    with pytest.raises(ValueError, match="takes neither device"):
        engine(smollm2_path, n_ctx=64, rpc_servers=endpoints, device="RPC0", tensor_split=[1, 1, 1])


def test_more_devices_than_layers_is_refused(engine: Any, endpoints: str, tmp_path: Path) -> None:
    from adadecode import Error
    from tiny_gguf import N_LAYER as TINY_LAYERS
    from tiny_gguf import write_tiny_model

    assert TINY_LAYERS == 2
    with pytest.raises(Error, match="cannot split 2 layers across 3 devices: each needs at least one whole layer"):
        engine(write_tiny_model(tmp_path / "tiny.gguf"), n_ctx=64, rpc_servers=endpoints)
    # Two of the three given a share: fine.
    tiny = engine(write_tiny_model(tmp_path / "tiny.gguf"), n_ctx=64, rpc_servers=endpoints, tensor_split=[1, 0, 1])
    assert [(b, e) for _, b, e in tiny.split] == [(0, 1), (1, 2)]


def test_split_that_does_not_fit_is_a_clear_error(
    engine: Any, smollm2_path: Path, start_rpc_server: Callable[..., Server]
) -> None:
    """The second server reports 20 MiB (--mem): its third of the layers with the output matrix (~49 MiB) does not
    fit; refused before any weight is sent to any device, naming the range and both sizes. The process then loads
    the model locally."""
    from adadecode import Error

    big, small = start_rpc_server(), start_rpc_server("--mem", "20")
    with pytest.raises(
        Error,
        match=r"the weights of layers \[20, 30\) and the output need \d+ MiB but RPC\d+ \(127\.0\.0\.1:\d+\) has "
        r"20 MiB free",
    ):
        engine(smollm2_path, n_ctx=64, rpc_servers=f"{big.endpoint},{small.endpoint}", tensor_split=[1, 1, 1])
    assert [big.stop()[0], small.stop()[0]] == [0, 0]
    assert engine(smollm2_path, n_ctx=64, n_threads=1).generate("Hi", max_tokens=1, mode="standard").tokens


@pytest.mark.parametrize("mode", ["standard", "adadecode+ngram"])
def test_server_killed_mid_generation_in_a_split(
    smollm2_path: Path, mode: str, start_rpc_server: Callable[..., Server]
) -> None:
    """SIGKILL the last server (which holds the output) while tokens stream: a clear Error at the next pass, no hang;
    the model can be dropped and the same process then runs a local model."""
    first, victim = start_rpc_server(), start_rpc_server()
    start = time.monotonic()
    stdout = run_killing_a_server(
        smollm2_path, victim, f'heads="auto", rpc_servers={first.endpoint + "," + victim.endpoint!r}',
        f", mode={mode!r}",
    )  # fmt: skip
    assert "SPLIT [('CPU', 0," in stdout, stdout
    assert time.monotonic() - start < 60


def test_cli_run_with_a_split(smollm2_path: Path, start_rpc_server: Callable[..., Server]) -> None:
    pair = [start_rpc_server(), start_rpc_server()]  # their own: the module's servers serve this process's models
    args = ["-m", str(smollm2_path), "-p", "The capital of France is", "-n", "8", "--temp", "0", "-c", "256"]
    rpc = ["--rpc", ",".join(s.endpoint for s in pair)]
    local = subprocess.run(
        [sys.executable, "-m", "adadecode", "run", *args, "--device", "CPU"], capture_output=True, text=True
    )
    split = subprocess.run(
        [sys.executable, "-m", "adadecode", "run", *args, *rpc, "--tensor-split", "2,1,1", "-v"],
        capture_output=True,
        text=True,
    )
    bad = subprocess.run(
        [sys.executable, "-m", "adadecode", "run", *args, *rpc, "--tensor-split", "1,1"],
        capture_output=True,
        text=True,
    )
    assert [s.stop()[0] for s in pair] == [0, 0]
    assert local.returncode == 0 and split.returncode == 0, (local.stderr, split.stderr)
    assert split.stdout == local.stdout and split.stdout.strip()
    assert re.search(r"device=CPU\[0,15\)\+RPC\d+\[15,23\)\+RPC\d+\[23,30\)", split.stderr), split.stderr
    assert bad.returncode != 0 and "tensor_split has 2 entries" in bad.stderr, bad.stderr


def test_llama_with_tensor_split(smollm2_path: Path, endpoints: str, local_cpu_device: Any) -> None:
    """llama-cpp-python's tensor_split (a list of floats) with rpc_servers: the same completion as the local CPU
    device."""
    from adadecode import Llama

    llm = Llama(str(smollm2_path), n_ctx=256, n_threads=1, rpc_servers=endpoints, tensor_split=[0.5, 0.25, 0.25])
    assert [(b, e) for _, b, e in llm.model.split] == [(0, 15), (15, 23), (23, 30)]  # 0.75 * 30 = 22.5 -> 23
    prompt = PARITY_PROMPTS[3]
    got = llm.create_completion(prompt, max_tokens=16, temperature=0.0)["choices"][0]["text"]
    want = local_cpu_device.generate(prompt, max_tokens=16, mode="standard").text
    assert got == want
