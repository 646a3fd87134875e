"""Exit heads: the sidecar format, the engine's checks on it, the trainer's data and fit, a short real training run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from adadecode.heads_format import read_heads, write_heads  # noqa: E402

SMOL = {"arch": "llama", "n_layer": 30, "n_embd": 576, "n_vocab": 49152}


def _transforms(layers: list[int], d: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {layer: (np.eye(d) + 0.01 * rng.standard_normal((d, d))).astype(np.float32) for layer in layers}


# --------------------------------------------------------------------------------------------------------------------
# format


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_round_trip(tmp_path: Path, dtype: str) -> None:
    transforms = _transforms([3, 7, 11], 16)
    vocab = np.array([0, 5, 9, 40, 99], dtype=np.int32)
    meta = {"command": "adadecode train-heads -m x.gguf", "seed": "7", "agreement": "0.5,0.6,0.7"}
    path = write_heads(tmp_path / "h.gguf", arch="llama", n_layer=12, n_embd=16, n_vocab=100, transforms=transforms,
                       vocab=vocab, metadata=meta, dtype=dtype)
    heads = read_heads(path)
    assert (heads.arch, heads.n_layer, heads.n_embd, heads.n_vocab) == ("llama", 12, 16, 100)
    assert heads.layers == [3, 7, 11]
    for layer, t in transforms.items():
        expect = t.astype(np.float16).astype(np.float32) if dtype == "f16" else t
        np.testing.assert_array_equal(heads.transforms[layer], expect)
    np.testing.assert_array_equal(heads.vocab, vocab)
    assert heads.metadata == meta


def test_round_trip_without_vocab(tmp_path: Path) -> None:
    path = write_heads(tmp_path / "h.gguf", arch="qwen2", n_layer=4, n_embd=8, n_vocab=50,
                       transforms=_transforms([2], 8))
    heads = read_heads(path)
    assert heads.vocab is None and heads.metadata == {} and heads.layers == [2]


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        write_heads(tmp_path / "h.gguf", arch="llama", n_layer=4, n_embd=8, n_vocab=50, transforms=_transforms([4], 8))
    with pytest.raises(ValueError, match="shape"):
        write_heads(tmp_path / "h.gguf", arch="llama", n_layer=4, n_embd=8, n_vocab=50, transforms=_transforms([2], 4))
    with pytest.raises(ValueError, match="vocab"):
        write_heads(tmp_path / "h.gguf", arch="llama", n_layer=4, n_embd=8, n_vocab=50, transforms=_transforms([2], 8),
                    vocab=[3, 50])


def _raw_heads(path: Path, arch: str, n_layer: int, n_embd: int, layers: list[int], d: int) -> Path:
    """A heads file written without write_heads' checks, to see the engine's own."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_type("adapter")
    w.add_string("adapter.type", "exit_heads")
    w.add_uint32("exit_heads.block_count", n_layer)
    w.add_uint32("exit_heads.embedding_length", n_embd)
    w.add_uint32("exit_heads.vocab_size", SMOL["n_vocab"])
    w.add_array("exit_heads.layers", layers)
    for layer in layers:
        w.add_tensor(f"exit.{layer}.weight", np.eye(d, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# --------------------------------------------------------------------------------------------------------------------
# the engine checks a heads file against the model


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("other_model", "another model"),
        ("other_width", "another model"),
        ("layer_too_high", "outside"),
        ("layer_zero", "outside"),
        ("tensor_shape", "must be 576 x 576"),
        ("not_adapter", "not an exit-heads adapter"),
    ],
)
def test_engine_rejects_mismatched_heads(engine: Any, smollm2_path: Path, tmp_path: Path, case: str,
                                         needle: str) -> None:
    import adadecode

    path = tmp_path / f"{case}.gguf"
    if case == "other_model":
        write_heads(path, arch="qwen2", n_layer=24, n_embd=896, n_vocab=151936, transforms=_transforms([12], 896))
    elif case == "other_width":
        write_heads(path, arch="llama", n_layer=30, n_embd=512, n_vocab=49152, transforms=_transforms([12], 512))
    elif case == "layer_too_high":
        _raw_heads(path, "llama", 30, 576, [8, 30], 576)
    elif case == "layer_zero":
        _raw_heads(path, "llama", 30, 576, [0], 576)
    elif case == "tensor_shape":
        _raw_heads(path, "llama", 30, 576, [8], 64)
    else:
        path = smollm2_path  # a model file is no heads file
    with pytest.raises(adadecode.Error, match=needle):
        engine(str(smollm2_path), n_ctx=64, heads=str(path))


def test_engine_loads_written_heads(engine: Any, smollm2_path: Path, tmp_path: Path) -> None:
    path = write_heads(tmp_path / "ok.gguf", **SMOL, transforms=_transforms([8, 15, 22], 576), vocab=range(4096),
                       dtype="f16")
    m = engine(str(smollm2_path), n_ctx=64, heads=str(path))
    assert m.exit_layers == [8, 15, 22]


# --------------------------------------------------------------------------------------------------------------------
# trainer pieces without the engine


def test_layers_and_prompts() -> None:
    from adadecode.train_data import code_prompts
    from adadecode.train_heads import auto_layers, parse_layers

    assert auto_layers(30) == [8, 15, 23] and auto_layers(24) == [6, 12, 18]
    assert parse_layers("22,8,15", 30) == [8, 15, 22]
    with pytest.raises(ValueError):
        parse_layers("0,5", 30)
    a, b = code_prompts(6, seed=3, n_forced=2), code_prompts(6, seed=3, n_forced=2)
    assert [r.to_json() for r in a] == [r.to_json() for r in b]  # seeded
    assert sum(r.forced for r in a) == 2 and all(r.answer and r.answer.startswith("```python") for r in a if r.forced)
    text = json.dumps([r.to_json() for r in a]).lower()
    assert "humaneval" not in text


def _toy_problem(d: int = 16, vocab: int = 300, rows: int = 400, seed: int = 0) -> tuple[Any, np.ndarray, np.ndarray]:
    torch = pytest.importorskip("torch")
    from adadecode.head_math import Readout

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((vocab, d)).astype(np.float32)
    readout = Readout(torch.from_numpy(w), torch.ones(d), 1e-5)
    h_last = rng.standard_normal((rows, d)).astype(np.float32) * 3
    mix = np.eye(d) + 0.8 * rng.standard_normal((d, d)) / np.sqrt(d)
    h_exit = (h_last @ np.linalg.inv(mix).T + 0.2 * rng.standard_normal((rows, d))).astype(np.float32)
    feats = np.stack([h_exit, h_last]).astype(np.float16)
    return readout, feats[:, :320], feats[:, 320:]


def test_fit_lowers_kl_is_seeded_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from adadecode.train_heads import FitConfig, fit_heads

    readout, train, held = _toy_problem()
    cfg = FitConfig(steps=40, lr=3e-2, batch=64, seed=5, weight_decay=0.0, init="identity", loss_vocab="full",
                    matmul="f32", checkpoint_every=10)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    t_a, report = fit_heads(readout, [3], train, held, cfg, tmp_path / "a", progress=False)
    assert report["after"]["3"]["kl"] < 0.7 * report["before"]["3"]["kl"]
    assert report["after"]["3"]["agreement"] > report["before"]["3"]["agreement"]
    fit_heads(readout, [3], train, held, cfg, tmp_path / "b", progress=False, stop_after=15)
    t_b, _ = fit_heads(readout, [3], train, held, cfg, tmp_path / "b", progress=False)  # resumes at step 15
    np.testing.assert_array_equal(t_a[3], t_b[3])


def test_head_math_matches_formula() -> None:
    torch = pytest.importorskip("torch")
    from adadecode.head_math import Readout

    rng = np.random.default_rng(1)
    w, g = rng.standard_normal((50, 8)).astype(np.float32), rng.random(8).astype(np.float32) + 0.5
    t, h = rng.standard_normal((8, 8)).astype(np.float32), rng.standard_normal((3, 8)).astype(np.float32)
    vocab = np.array([1, 4, 7, 30])
    x = h @ t.T
    expect = (x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * g) @ w[vocab].T
    r = Readout(torch.from_numpy(w), torch.from_numpy(g), 1e-6).with_vocab(vocab)
    got = r.head_logits(torch.from_numpy(h), torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4)


def test_training_data_lands_in_aligned_memory() -> None:
    """MKL's GEMM may round by its operands' alignment: whatever numpy buffer training reads from, torch_owned hands
    torch 64-byte-aligned memory with the same values (the readout's weights go through it too)."""
    torch = pytest.importorskip("torch")
    from adadecode.head_math import Readout, torch_owned

    buf = np.zeros(64 * 9 + 64, dtype=np.uint8)
    for offset in (4, 16, 32):
        start = (-buf.ctypes.data) % 64 + offset
        a = np.frombuffer(buf.data, dtype=np.float32, count=64 * 2, offset=start).reshape(2, 64)
        a[:] = np.arange(128, dtype=np.float32).reshape(2, 64)
        for view in (a, a.T, a[:, ::2].T):
            t = torch_owned(view)
            assert t.data_ptr() % 64 == 0
            np.testing.assert_array_equal(t.numpy(), view)
        r = Readout(torch.from_numpy(a), torch.from_numpy(a[0]), 1e-6)
        assert r.w_out.data_ptr() % 64 == 0 and r.norm_w.data_ptr() % 64 == 0 and r.w_sub.data_ptr() % 64 == 0
    aligned = torch.zeros(4, 16)
    assert torch_owned(aligned) is aligned  # already torch's: no copy


# --------------------------------------------------------------------------------------------------------------------
# a short real training run


def test_short_training_run_beats_the_logit_lens(engine: Any, smollm2_path: Path, tmp_path: Path) -> None:
    """A few prompts, a few steps on SmolLM2 (about a minute on 2 cores): held-out KL down, agreement up."""
    pytest.importorskip("torch")
    import argparse

    from adadecode.train_heads import add_arguments, train

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args([
        "-m", str(smollm2_path), "-o", str(tmp_path / "h.gguf"), "--layers", "22", "--data", "code",
        "--n-prompts", "4", "--gen-tokens", "16", "--n-texts", "2", "--holdout-every", "3", "--steps", "40",
        "--batch", "64", "--lr", "3e-3", "--vocab-subset", "4096", "--threads", "2", "--no-progress",
        "--workdir", str(tmp_path / "work"),
    ])
    result = train(args)
    before, after = result["report"]["before"]["22"], result["report"]["after"]["22"]
    assert after["kl"] < before["kl"]
    assert after["agreement"] > before["agreement"]
    heads = read_heads(tmp_path / "h.gguf")
    assert heads.layers == [22] and heads.vocab is not None and len(heads.vocab) == 4096
    assert heads.metadata["seed"] == "0" and "train-heads" in heads.metadata["command"]
    assert engine(str(smollm2_path), n_ctx=64, heads=str(tmp_path / "h.gguf")).exit_layers == [22]


# --------------------------------------------------------------------------------------------------------------------
# shipped heads


def test_shipped_heads_match_their_record() -> None:
    """Every shipped heads file is recorded in models/heads/README.md with its SHA-256, and reads back."""
    import hashlib

    from adadecode.heads import shipped_heads

    readme = (Path(__file__).resolve().parent.parent / "models" / "heads" / "README.md").read_text()
    shipped = shipped_heads()
    assert "smollm2-135m" in shipped
    for name, path in shipped.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() in readme, f"{name}: SHA-256 not recorded"
        assert path.stat().st_size <= 16 << 20
        heads = read_heads(path)
        assert heads.metadata["seed"] and "train-heads" in heads.metadata["command"]


def test_shipped_smollm2_heads_load(engine: Any, smollm2_path: Path) -> None:
    m = engine(str(smollm2_path), n_ctx=256, heads="auto")
    assert m.exit_layers == [22, 25]
    request = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
    ids = m.tokenize(m.apply_chat_template(request))
    standard = m.generate(ids, max_tokens=24, mode="standard")
    fast = m.generate(ids, max_tokens=24, mode="adadecode")
    assert fast.tokens == standard.tokens
