"""The two-layer ("mlp") exit-head design in the heads file (format version 2, per-layer design tags) and in the
engine: the engine's head logits match the Python forward (head_designs.TwoLayer) on real SmolLM2 hidden states,
decoding with mlp heads keeps greedy parity with standard decoding, and bad design tags, versions or shapes are
refused with an error naming the problem. Dense-only files stay version 1, byte for byte as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from adadecode.heads_format import read_heads, write_heads  # noqa: E402

SMOL = {"arch": "llama", "n_layer": 30, "n_embd": 576, "n_vocab": 49152}
RANK = 48


def _mlp(d: int, rank: int, seed: int, scale: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Weights that move the head well away from the logit lens (top-1 changes on many rows)."""
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal((rank, d)) / np.sqrt(d)).astype(np.float32),
            (rng.standard_normal((d, rank)) * scale / np.sqrt(rank)).astype(np.float32))


def _raw(path: Path, layers: list[int], designs: list[str] | None, version: int | None,
         tensors: dict[str, np.ndarray]) -> Path:
    """A heads file for SmolLM2 written without write_heads' checks, to see the engine's own."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type("adapter")
    w.add_string("adapter.type", "exit_heads")
    w.add_uint32("exit_heads.block_count", SMOL["n_layer"])
    w.add_uint32("exit_heads.embedding_length", SMOL["n_embd"])
    w.add_uint32("exit_heads.vocab_size", SMOL["n_vocab"])
    w.add_array("exit_heads.layers", layers)
    if version is not None:
        w.add_uint32("exit_heads.version", version)
    if designs is not None:
        w.add_array("exit_heads.designs", designs)
    for name, t in tensors.items():
        w.add_tensor(name, t.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# --------------------------------------------------------------------------------------------------------------------
# format


def test_mixed_designs_round_trip_and_dense_files_stay_version_1(tmp_path: Path) -> None:
    d = 64
    w1, w2 = _mlp(d, 8, 0)
    path = write_heads(tmp_path / "mix.gguf", arch="llama", n_layer=12, n_embd=d, n_vocab=100,
                       transforms={3: np.eye(d, dtype=np.float32)}, mlps={7: (w1, w2)}, metadata={"design": "mlp:8"},
                       dtype="f16")
    heads = read_heads(path)
    assert heads.layers == [3, 7] and heads.design(3) == "dense" and heads.design(7) == "mlp"
    np.testing.assert_array_equal(heads.mlps[7][0], w1.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(heads.mlps[7][1], w2.astype(np.float16).astype(np.float32))
    assert heads.metadata == {"design": "mlp:8"}  # the format's own keys are not provenance
    fields = gguf.GGUFReader(str(path)).fields
    assert fields["exit_heads.version"].contents() == 2
    assert fields["exit_heads.designs"].contents() == ["dense", "mlp"]
    dense = write_heads(tmp_path / "dense.gguf", arch="llama", n_layer=12, n_embd=d, n_vocab=100,
                        transforms={3: np.eye(d, dtype=np.float32)})
    fields = gguf.GGUFReader(str(dense)).fields
    assert "exit_heads.version" not in fields and "exit_heads.designs" not in fields


def test_writer_and_reader_reject_bad_mlp_heads(tmp_path: Path) -> None:
    w1, w2 = _mlp(16, 4, 0)
    kw: dict[str, Any] = {"arch": "llama", "n_layer": 8, "n_embd": 16, "n_vocab": 50}
    with pytest.raises(ValueError, match="both a dense and an mlp head"):
        write_heads(tmp_path / "a.gguf", **kw, transforms={2: np.eye(16)}, mlps={2: (w1, w2)})
    with pytest.raises(ValueError, match="w1 .* and w2"):
        write_heads(tmp_path / "b.gguf", **kw, transforms={}, mlps={2: (w1, w2[:, :3])})
    with pytest.raises(ValueError, match="reserved"):
        write_heads(tmp_path / "c.gguf", **kw, transforms={}, mlps={2: (w1, w2)}, metadata={"designs": "x"})
    bad = _raw(tmp_path / "bad.gguf", [8], ["conv"], 2, {"exit.8.w1": w1})
    with pytest.raises(ValueError, match="head design 'conv'"):
        read_heads(bad)
    newer = _raw(tmp_path / "newer.gguf", [8], ["dense"], 3, {"exit.8.weight": np.eye(16)})
    with pytest.raises(ValueError, match="format version 3"):
        read_heads(newer)


# --------------------------------------------------------------------------------------------------------------------
# the engine


@pytest.fixture(scope="module")
def smol(engine: Any, smollm2_path: Path) -> Any:
    return engine(str(smollm2_path), n_ctx=512, n_threads=2)


@pytest.fixture(scope="module")
def mlp_file(smol: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Layer 8 dense (the logit lens), 15 and 22 mlp, over a 8192-token vocabulary subset, stored as f16."""
    d = smol.n_embd
    return write_heads(tmp_path_factory.mktemp("mlp") / "mlp.gguf", arch=smol.arch, n_layer=smol.n_layer, n_embd=d,
                       n_vocab=smol.n_vocab, transforms={8: np.eye(d, dtype=np.float32)},
                       mlps={15: _mlp(d, RANK, 1), 22: _mlp(d, RANK, 2, scale=0.25)},
                       vocab=np.arange(0, 8192, dtype=np.int32), dtype="f16")


def test_engine_mlp_heads_match_the_python_forward(smol: Any, mlp_file: Path) -> None:
    """Per layer, on real hidden states: the engine's head confidences within 0.05 of the Python forward's, and
    the same top-1 wherever the Python forward's top two are more than 0.05 apart.

    The tolerance: both sides use the same f16-rounded weights (read back from the file), so what differs is
    ggml's f16 product (its input rounded to f16: relative 2^-11, ~5e-4 on a confidence) and, far larger, the
    engine's output product on SmolLM2's quantized output matrix, whose input is quantized to 8 bits per block
    (Python multiplies by the dequantized matrix in float32): up to ~1 on logits of ~70, ~0.02 on a confidence,
    as the dense layer-8 control in this same test shows."""
    from adadecode.head_designs import from_heads_file
    from adadecode.head_math import Readout, output_weights, rms_eps

    smol.load_heads(str(mlp_file))
    heads = read_heads(mlp_file)
    assert smol.exit_layers == heads.layers == [8, 15, 22]
    w_out, g = output_weights(smol)
    readout = Readout(torch.from_numpy(w_out), torch.from_numpy(g), rms_eps(smol.path)).with_vocab(heads.vocab)
    ids = smol.tokenize(smol.apply_chat_template(
        [{"role": "user", "content": "Write a Python function that returns the n-th Fibonacci number."}]))
    hs = smol.hidden_states(ids, heads.layers)
    for i, layer in enumerate(heads.layers):
        got = smol.head_logits(i, hs[i])
        assert got.shape == (len(ids), len(heads.vocab))
        head = from_heads_file(heads, layer)
        with torch.no_grad():
            ref = readout.head_logits(head(torch.from_numpy(hs[i])))
            lens = readout.head_logits(torch.from_numpy(hs[i]))
        p_got, p_ref = torch.softmax(torch.from_numpy(got), -1).numpy(), torch.softmax(ref, -1).numpy()
        np.testing.assert_allclose(p_got.max(-1), p_ref.max(-1), atol=0.05, err_msg=f"layer {layer}")
        top2 = np.sort(p_ref, -1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 0.05
        assert clear.mean() > 0.5
        np.testing.assert_array_equal(got.argmax(-1)[clear], p_ref.argmax(-1)[clear], err_msg=f"layer {layer}")
        if heads.design(layer) == "mlp":
            # the check can fail: an engine that skipped the mlp (the logit lens) would differ on many rows
            changed = float((lens.argmax(-1).numpy() != p_ref.argmax(-1)).mean())
            assert changed > 0.05, (layer, changed)


def test_decoding_with_mlp_heads_keeps_greedy_parity(smol: Any, mlp_file: Path) -> None:
    from prompts import PARITY_PROMPTS

    smol.load_heads(str(mlp_file))
    early = 0
    for prompt in PARITY_PROMPTS[:2]:
        text = smol.apply_chat_template([{"role": "user", "content": prompt}])
        kw: dict[str, Any] = {"max_tokens": 40, "gamma": 0.3, "adaptive_exits": False, "return_logits": True}
        std = smol.generate(text, mode="standard", **kw)
        ada = smol.generate(text, mode="adadecode", **kw)
        assert ada.tokens == std.tokens and ada.finish_reason == std.finish_reason
        assert np.array_equal(ada.logits, std.logits), "final-layer logits differ bitwise"
        early += ada.stats["n_accepted"]
        assert ada.stats["n_verified"] > 0
    assert early > 0, "no token was ever emitted early: the test exercised nothing"


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("unknown_design", "exit layer 15 has head design 'conv', which this engine does not know"),
        ("newer_version", "heads format version 3; this engine reads versions 1..2"),
        ("tags_without_version", "'exit_heads.designs' needs 'exit_heads.version' 2"),
        ("tag_count", "one design tag per exit layer \\(2\\), but it holds 1"),
        ("w2_shape", "tensor 'exit.15.w2' must be 576 x 48 \\(rows x columns\\), not 576 x 40"),
        ("w1_width", "tensor 'exit.15.w1' must be R x 576"),
        ("missing_w2", "tensor 'exit.15.w2' is missing"),
        ("mlp_and_dense", "tagged 'mlp' but also holds a dense transform"),
    ],
)
def test_engine_rejects_bad_mlp_heads(engine: Any, smollm2_path: Path, tmp_path: Path, case: str,
                                      needle: str) -> None:
    import adadecode

    d = SMOL["n_embd"]
    w1, w2 = _mlp(d, RANK, 0)
    eye = np.eye(d, dtype=np.float32)
    ok = {"exit.8.weight": eye, "exit.15.w1": w1, "exit.15.w2": w2}
    layers, designs, version = [8, 15], ["dense", "mlp"], 2
    tensors = dict(ok)
    if case == "unknown_design":
        designs = ["dense", "conv"]
    elif case == "newer_version":
        version = 3
    elif case == "tags_without_version":
        version = None  # type: ignore[assignment]
    elif case == "tag_count":
        designs = ["dense"]
    elif case == "w2_shape":
        tensors["exit.15.w2"] = w2[:, :40]
    elif case == "w1_width":
        tensors["exit.15.w1"] = w1[:, :64]
    elif case == "missing_w2":
        del tensors["exit.15.w2"]
    elif case == "mlp_and_dense":
        tensors["exit.15.weight"] = eye
    path = _raw(tmp_path / f"{case}.gguf", layers, designs, version, tensors)
    with pytest.raises(adadecode.Error, match=needle):
        engine(str(smollm2_path), n_ctx=64, heads=str(path))
    # the same file, repaired, loads
    good = _raw(tmp_path / "good.gguf", layers, ["dense", "mlp"], 2, ok)
    assert engine(str(smollm2_path), n_ctx=64, heads=str(good)).exit_layers == layers
