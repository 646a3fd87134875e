"""Synthetic models of real shapes (python/adadecode/synth.py, bench/synth_gguf.py): valid blocks of every type,
the real hyper-parameters, and a 2-layer file of the 1.5B's real widths that the engine loads and runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from adadecode import synth  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "Q6_K", "F16"])
def test_drawn_blocks_dequantize_to_the_intended_distribution(qtype: str) -> None:
    ne = (1024, 64)  # 1024 columns: values should have mean 0 and standard deviation 1/32
    blocks = synth._RandomBlocks(np.random.default_rng(1), qtype, ne, "random")
    raw = np.concatenate(list(blocks.chunks()))
    assert raw.nbytes == blocks.nbytes
    if qtype == "F16":
        values = raw.view(np.float16).astype(np.float32)
    else:
        values = gguf.quants.dequantize(raw.reshape(ne[1], -1), gguf.GGMLQuantizationType[qtype])
    assert values.size == ne[0] * ne[1]
    assert np.isfinite(values).all()
    assert abs(float(values.mean())) < 0.05 / 32
    assert float(values.std()) == pytest.approx(1 / 32, rel=0.05)
    # A Q4_K block's scales and mins decode to what the draw promises (sc 8, min 60).
    if qtype == "Q4_K":
        sc, mn = gguf.quants.Q4_K.get_scale_min(raw.reshape(-1, 144)[:, 4:16])
        assert (sc == 8).all() and (mn == 60).all()


def test_drawing_is_deterministic_per_seed() -> None:
    def draw(seed: int) -> bytes:
        b = synth._RandomBlocks(np.random.default_rng(seed), "Q4_K", (4096, 8), "random")
        return b"".join(c.tobytes() for c in b.chunks())

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_shapes_are_the_real_models() -> None:
    q15, q7, l8 = synth.SHAPES["qwen2.5-1.5b"], synth.SHAPES["qwen2.5-7b"], synth.SHAPES["llama-3.1-8b"]
    def dims(s: synth.Shape) -> tuple[int, ...]:
        return (s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff, s.n_vocab)

    assert dims(q15) == (28, 1536, 12, 2, 8960, 151936)
    assert dims(q7) == (28, 3584, 28, 4, 18944, 152064)
    assert dims(l8) == (32, 4096, 32, 8, 14336, 128256)
    assert l8.head_dim == q7.head_dim == q15.head_dim == 128
    # Parameter counts of the published models (Qwen counts tied embeddings once; 1.54B, 7.62B, 8.03B).
    def params(shape: synth.Shape, tied: bool) -> float:
        plan = synth.tensor_plan(shape, "q8_0")
        n = sum(int(np.prod(ne)) for name, ne, _ in plan if not (tied and name == "output.weight"))
        return n / 1e9

    assert params(q15, tied=True) == pytest.approx(1.54, abs=0.01)
    assert params(q7, tied=False) == pytest.approx(7.62, abs=0.01)
    assert params(l8, tied=False) == pytest.approx(8.03, abs=0.01)


def test_q4_k_m_mix_and_rope_factors() -> None:
    plan = {name: t for name, _, t in synth.tensor_plan(synth.SHAPES["qwen2.5-7b"], "q4_k_m")}
    assert plan["output.weight"] == "Q6_K" and plan["token_embd.weight"] == "Q4_K"
    assert plan["blk.0.attn_v.weight"] == "Q6_K" and plan["blk.27.ffn_down.weight"] == "Q6_K"
    assert plan["blk.0.attn_q.weight"] == plan["blk.10.ffn_up.weight"] == "Q4_K"
    n_more = sum(plan[f"blk.{i}.ffn_down.weight"] == "Q6_K" for i in range(28))
    assert 10 <= n_more <= 16  # about half the layers, as in published Q4_K_M files
    assert plan["blk.3.attn_q.bias"] == "F32"
    assert {t for _, _, t in synth.tensor_plan(synth.SHAPES["qwen2.5-7b"], "f16") if t != "F32"} == {"F16"}
    f = synth.llama3_rope_factors(synth.SHAPES["llama-3.1-8b"])
    assert f.shape == (64,) and f[0] == 1.0 and f[-1] == 8.0
    assert (np.diff(f) >= 0).all() and ((f > 1) & (f < 8)).any()


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown model shape"):
        synth.resolve_shape("gpt-5")
    with pytest.raises(ValueError, match="--layers"):
        synth.resolve_shape("qwen2.5-7b", 0)
    with pytest.raises(ValueError, match="unknown quantisation"):
        synth.weight_type("q3_k", "output.weight", 28)


@pytest.fixture(scope="module")
def two_layer_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 1.5B's real widths and vocabulary, 2 layers, Q4_K_M, written by the script as a user would."""
    path = tmp_path_factory.mktemp("synth") / "qwen1.5b-2l.gguf"
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "synth_gguf.py"), "qwen2.5-1.5b", "q4_k_m", "-o", str(path),
         "--layers", "2", "-q"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert str(path) in out.stdout
    return path


def test_two_layer_model_loads_and_generates(two_layer_model: Path) -> None:
    from adadecode import Model

    r = gguf.GGUFReader(str(two_layer_model))
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types["blk.1.ffn_down.weight"] == "Q6_K" and types["blk.0.ffn_down.weight"] == "Q4_K"
    assert len(r.fields["tokenizer.ggml.tokens"].data) == 151936

    m = Model(two_layer_model, n_ctx=64, n_threads=1)
    assert (m.n_layer, m.n_embd, m.n_vocab, m.arch) == (2, 1536, 151936, "qwen2")
    g = m.generate("hello world", max_tokens=5)
    assert len(g.tokens) == 5 and all(0 <= t < 151936 for t in g.tokens)
    logits = m.logits(m.tokenize("hello world"))
    assert np.isfinite(logits).all() and float(logits.std()) > 0
    # Deterministic: the same file gives the same tokens again.
    assert m.generate("hello world", max_tokens=5).tokens == g.tokens


def test_script_reports_bad_arguments(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "synth_gguf.py"), "qwen2.5-7b", "q8_0", "-o", str(tmp_path / "x.gguf"),
         "--layers", "0"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "--layers must be in 1..1024" in out.stderr
    assert not (tmp_path / "x.gguf").exists()
