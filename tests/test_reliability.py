"""Reliability: corrupt or mismatched files, edge-case inputs and interrupted generations give a clear exception or
clean behaviour, and leave the model usable (tests/test_errors.py has the basic cases; test_fuzz_gguf.py fuzzes).
File cases use the tiny llama of tiny_gguf.py, so each states exactly what is wrong with its file."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiny_gguf import N_EMBD, N_LAYER, N_VOCAB, write_tiny_heads, write_tiny_model

HEADS_DIR = Path(__file__).resolve().parents[1] / "python" / "adadecode" / "heads"


@pytest.fixture(scope="module")
def model(engine: Any, smollm2_path: Path) -> Any:
    return engine(smollm2_path, n_ctx=128, n_threads=2)


@pytest.fixture(scope="module")
def tiny(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def _load_error(engine: Any, path: Path, heads: Path | None = None) -> str:
    import adadecode

    with pytest.raises(adadecode.Error) as info:
        engine(path, n_ctx=32, n_threads=1, heads=heads)
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert str(path.name) in message or (heads is not None and heads.name in message), message
    return message


# --------------------------------------------------------------------------------------------------------------------
# files


def test_tiny_model_loads_and_runs(engine: Any, tiny: Path) -> None:
    m = engine(tiny, n_ctx=32, n_threads=1)
    assert (m.n_layer, m.n_embd, m.n_vocab) == (N_LAYER, N_EMBD, N_VOCAB)
    assert len(m.generate([1, 260, 261], max_tokens=4).tokens) >= 1


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"metadata": {"llama.attention.layer_norm_rms_epsilon": float("nan")}}, "layer_norm_rms_epsilon"),
        ({"metadata": {"llama.attention.layer_norm_rms_epsilon": -1e-5}}, "layer_norm_rms_epsilon"),
        ({"metadata": {"llama.rope.freq_base": float("inf")}}, "freq_base"),
        ({"metadata": {"llama.rope.freq_base": 0.0}}, "freq_base"),
        ({"metadata": {"llama.attention.head_count": 0}}, "head_count"),
        ({"metadata": {"llama.block_count": -2}}, "block_count"),
        ({"metadata": {"llama.block_count": 10**6}}, "block_count"),
        ({"metadata": {"llama.embedding_length": 2**40}}, "embedding_length"),
        ({"metadata": {"llama.attention.head_count_kv": 3}}, "head_count"),
        ({"metadata": {"llama.rope.dimension_count": 7}}, "rope.dimension_count"),
        ({"metadata": {"llama.block_count": "two"}}, "block_count' is not an integer"),
        ({"metadata": {"tokenizer.ggml.token_type": ["a", "b"]}}, "token_type' is not an array of integers"),
        ({"metadata": {"tokenizer.ggml.scores": ["a"]}}, "scores' is not an array of numbers"),
        ({"metadata": {"tokenizer.ggml.model": "bert"}}, "tokenizer model 'bert'"),
        ({"drop_keys": ("llama.feed_forward_length",)}, "feed_forward_length' is missing"),
        ({"drop_tensors": ("blk.1.attn_v.weight",)}, "required tensor 'blk.1.attn_v.weight' is missing"),
        ({"drop_tensors": ("token_embd.weight",)}, "token_embd.weight"),
        ({"tensors": {"blk.0.attn_q.weight": np.zeros((N_EMBD + 1, N_EMBD), np.float32)}}, "has shape [32, 33, 1, 1]"),
        ({"tensors": {"output_norm.weight": np.ones(N_EMBD, np.float16)}}, "has type f16, expected f32"),
        ({"tensors": {"blk.0.ffn_up.weight": np.zeros((64, N_EMBD), np.int32)}}, "not a supported weight type"),
        ({"tensors": {"blk.0.ffn_up.weight": np.zeros((64, N_EMBD), np.float64)}}, "not a supported weight type"),
        ({"arch": "mamba"}, "unsupported architecture 'mamba'"),
    ],
)
def test_bad_model_file(engine: Any, tmp_path: Path, changes: dict[str, Any], needle: str) -> None:
    path = write_tiny_model(tmp_path / "bad.gguf", **changes)
    assert needle in _load_error(engine, path)


def test_extra_empty_tensor_is_harmless(engine: Any, tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "extra.gguf", tensors={"extra.weight": np.zeros((3, 0), np.float32)})
    m = engine(path, n_ctx=32, n_threads=1)
    assert "extra.weight" in m.tensor_names()
    assert m.tensor("extra.weight").size == 0


def _patch(data: bytes, pos: int, fmt: str, value: int) -> bytes:
    return data[:pos] + struct.pack("<" + fmt, value) + data[pos + struct.calcsize(fmt) :]


def _tensor_entry(data: bytes, name: str) -> int:
    """Offset of tensor `name`'s directory entry (its length prefix)."""
    raw = name.encode()
    pos = data.index(struct.pack("<Q", len(raw)) + raw)
    return pos


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d[:3], "empty or truncated"),
        (lambda d: b"GGUG" + d[4:], "not a GGUF file (bad magic)"),
        (lambda d: _patch(d, 4, "I", 1), "unsupported GGUF version 1"),
        (lambda d: _patch(d, 4, "I", 0x03000000), "byte-swapped"),
        (lambda d: _patch(d, 4, "I", 99), "unsupported GGUF version 99"),
        (lambda d: _patch(d, 8, "q", 2**60), "tensor count"),
        (lambda d: _patch(d, 16, "q", -5), "metadata count"),
        (lambda d: _patch(d, 24, "Q", 2**64 - 1), "has length"),
        (lambda d: d[: len(d) // 3], "truncated"),
        (lambda d: d[:-1], "truncated"),
    ],
)
def test_corrupt_header(engine: Any, tiny: Path, tmp_path: Path, edit: Any, needle: str) -> None:
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(edit(tiny.read_bytes()))
    assert needle in _load_error(engine, path)


@pytest.mark.parametrize(
    ("field", "fmt", "value", "needle"),
    [
        ("n_dims", "I", 5, "has 5 dimensions"),
        ("dim0", "q", -1, "negative dimension"),
        ("dim1", "q", 2**62, "impossibly large shape"),
        ("type", "I", 1000, "invalid ggml type 1000"),
        ("type", "I", 5, "removed ggml type 5"),
        ("offset", "Q", 2**64 - 16, "data offset"),
        ("offset", "Q", 1, "data offset"),
    ],
)
def test_corrupt_tensor_directory(engine: Any, tiny: Path, tmp_path: Path, field: str, fmt: str, value: int,
                                  needle: str) -> None:  # fmt: skip
    data = tiny.read_bytes()
    name = "blk.1.attn_q.weight"
    entry = _tensor_entry(data, name)
    n_dims_pos = entry + 8 + len(name)
    pos = {"n_dims": n_dims_pos, "dim0": n_dims_pos + 4, "dim1": n_dims_pos + 12, "type": n_dims_pos + 20,
           "offset": n_dims_pos + 24}[field]  # fmt: skip
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(_patch(data, pos, fmt, value))
    message = _load_error(engine, path)
    assert needle in message and (name in message or field in ("offset",)), message


def test_duplicate_tensor_and_key(engine: Any, tiny: Path, tmp_path: Path) -> None:
    data = tiny.read_bytes()
    path = tmp_path / "dup.gguf"
    path.write_bytes(data.replace(b"blk.0.attn_k.weight", b"blk.0.attn_v.weight", 1))
    assert "duplicate tensor 'blk.0.attn_v.weight'" in _load_error(engine, path)
    # Equal-length names keep the file well-formed apart from the duplicate.
    path.write_bytes(data.replace(b"tokenizer.ggml.eos_token_id", b"tokenizer.ggml.bos_token_id", 1))
    assert "duplicate metadata key 'tokenizer.ggml.bos_token_id'" in _load_error(engine, path)
    path.write_bytes(data.replace(b"llama.context_length", b"llama.block_count\0\0\0", 1))
    assert "contains a NUL byte" in _load_error(engine, path)


def test_invalid_utf8_names_give_a_readable_error(engine: Any, tiny: Path, tmp_path: Path) -> None:
    data = tiny.read_bytes()
    value = struct.pack("<Q", 5) + b"llama"  # the first length-prefixed "llama" is general.architecture's value
    assert value in data
    path = tmp_path / "utf8.gguf"
    path.write_bytes(data.replace(value, struct.pack("<Q", 5) + b"ll\xffma", 1))
    message = _load_error(engine, path)
    assert "unsupported architecture 'll\ufffdma'" in message  # U+FFFD, not a UnicodeDecodeError


def _bad_vocab_heads(path: Path) -> Path:
    """Heads whose vocabulary subset names a token the model does not have (the writer refuses: patch it in)."""
    write_tiny_heads(path, vocab=[258, 259, 260])
    data = path.read_bytes()
    ids = struct.pack("<3i", 258, 259, 260)
    assert data.count(ids) == 1
    path.write_bytes(data.replace(ids, struct.pack("<3i", 258, 259, N_VOCAB + 7)))
    return path


def test_heads_for_another_model(engine: Any, tiny: Path, tmp_path: Path) -> None:
    cases = [
        (write_tiny_heads(tmp_path / "wide.heads.gguf", n_embd=N_EMBD * 2), "made for another model"),
        (write_tiny_heads(tmp_path / "deep.heads.gguf", n_layer=N_LAYER + 4), "made for another model"),
        (write_tiny_heads(tmp_path / "vocab.heads.gguf", n_vocab=N_VOCAB + 1), "made for another model"),
        (write_tiny_heads(tmp_path / "arch.heads.gguf", arch="qwen2"), "made for another model"),
        (HEADS_DIR / "smollm2-135m.heads.gguf", "made for another model"),
        (write_tiny_heads(tmp_path / "nan.heads.gguf", transform=np.full((N_EMBD, N_EMBD), np.nan, np.float32)),
         "NaN"),
        (_bad_vocab_heads(tmp_path / "badvocab.heads.gguf"), "invalid token id"),
        (tiny, "not an exit-heads adapter"),
    ]  # fmt: skip
    m = engine(tiny, n_ctx=32, n_threads=1)
    for heads, needle in cases:
        import adadecode

        with pytest.raises(adadecode.Error, match=needle):
            m.load_heads(heads)
        assert m.exit_layers == []  # a failed load leaves the model as it was
    good = write_tiny_heads(tmp_path / "good.heads.gguf", layers=(1,))
    m.load_heads(good)
    assert m.exit_layers == [1]
    assert (
        m.generate([1, 260], max_tokens=5, mode="adadecode").tokens
        == m.generate([1, 260], max_tokens=5, mode="standard").tokens
    )


# --------------------------------------------------------------------------------------------------------------------
# inputs


def test_absurd_context_and_threads(engine: Any, tiny: Path) -> None:
    import adadecode

    with pytest.raises(adadecode.Error, match="KV cache for 2147483647 positions needs"):
        engine(tiny, n_ctx=2**31 - 1, n_threads=1)  # refused up front, not an allocation the OOM killer ends
    with pytest.raises(ValueError, match="n_ctx"):
        engine(tiny, n_ctx=2**31, n_threads=1)
    with pytest.raises(adadecode.Error, match="n_threads must be between 1 and"):
        engine(tiny, n_ctx=32, n_threads=10**6)


def test_max_tokens_past_the_context_stops_with_length(model: Any) -> None:
    ids = model.tokenize("Once upon a time")
    gen = model.generate(ids, max_tokens=10_000)
    assert gen.finish_reason == "length"
    assert len(ids) + len(gen.tokens) == model.n_ctx + 1  # the last token is sampled but needs no cache slot
    huge = model.generate(ids, max_tokens=2**40)  # no overflow: clamped to what the context can hold
    assert huge.tokens == gen.tokens and huge.finish_reason == "length"
    # The prompt alone filling the context leaves no room: an error, not an empty "success".
    import adadecode

    with pytest.raises(adadecode.Error, match="no room to generate"):
        model.generate([ids[0]] * model.n_ctx, max_tokens=1)


def test_max_tokens_zero(model: Any) -> None:
    gen = model.generate("Hello", max_tokens=0)
    assert gen.tokens == [] and gen.text == "" and gen.finish_reason == "length"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_p": float("nan")}, "top_p"),
        ({"gamma": float("nan")}, "gamma"),
        ({"seed": 2**64}, "seed"),
    ],
)
def test_non_finite_arguments(model: Any, kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        model.generate("Hello", max_tokens=2, **kwargs)


def test_extreme_but_valid_arguments(model: Any) -> None:
    ref = model.generate("Hello", max_tokens=4).tokens
    assert model.generate("Hello", max_tokens=4, top_k=2**40).tokens == ref
    assert model.generate("Hello", max_tokens=4, max_pending=2**40).tokens == ref
    # larger than the engine's int: clamped like max_pending, not a TypeError from the binding
    assert model.generate("Hello", max_tokens=4, mode="ngram", max_draft=2**40).tokens == ref
    assert model.generate(b"Hello", max_tokens=4).tokens == ref  # bytes are UTF-8 text


def test_exit_layers_out_of_range(model: Any) -> None:
    for layers in ([2**40], [-1]):  # past the engine's int: a ValueError naming them, not a binding TypeError
        with pytest.raises(ValueError, match=r"exit_layers must be layer numbers .* got \[-?\d+\]"):
            model.generate("Hello", max_tokens=2, exit_layers=layers)


def test_detokenize_invalid_ids(model: Any) -> None:
    import adadecode

    for bad in ([model.n_vocab], [-1], [5, 2**33]):
        with pytest.raises(adadecode.Error, match="out of range"):
            model.detokenize(bad)


def test_detokenize_partial_utf8_is_replaced(model: Any) -> None:
    ids = model.tokenize("日本", add_special=False)
    whole = model.detokenize(ids)
    assert whole == "日本"
    # A byte-level token holding only the first byte of a multi-byte character: U+FFFD, never invalid str/bytes.
    lead = model.vocab.token_id("æ")  # byte 0xE6 in the GPT-2 byte map, the first byte of 日
    assert lead >= 0
    text = model.detokenize([lead])
    assert text == "\ufffd"
    assert model.vocab.detokenize_bytes([lead]) == b"\xe6"


def test_invalid_utf8_and_surrogates_in_prompts(model: Any) -> None:
    import adadecode

    with pytest.raises(adadecode.Error, match="UTF-8"):
        model.generate(b"abc\xc3(", max_tokens=1)
    with pytest.raises(UnicodeError):  # a lone surrogate cannot be encoded as UTF-8: a ValueError subclass
        model.generate("abc\udcff", max_tokens=1)


def test_stop_string_spanning_tokens(model: Any) -> None:
    prompt = "The capital of France is"
    full = model.generate(prompt, max_tokens=24)
    pieces = [model.detokenize(full.tokens[: i + 1]) for i in range(len(full.tokens))]
    # A stop string that starts inside one token's text and ends inside a later one.
    boundary = next(i for i in range(2, len(pieces)) if len(pieces[i - 1]) - len(pieces[i - 2]) >= 2)
    cut = len(pieces[boundary - 1]) - 1
    stop = full.text[cut : cut + 3]
    assert len(stop) == 3 and full.text.find(stop) == cut, (full.text, stop)
    gen = model.generate(prompt, max_tokens=24, stop=[stop, "never-there"])
    assert gen.finish_reason == "stop"
    assert gen.text == full.text[:cut]
    streamed = "".join(model.generate_stream(prompt, max_tokens=24, stop=stop))
    assert streamed == full.text[:cut]


# --------------------------------------------------------------------------------------------------------------------
# faults: cancellation mid-generation leaves the model usable


@pytest.mark.parametrize("mode", ["standard", "adadecode"])
def test_keyboard_interrupt_mid_generation(engine: Any, smollm2_path: Path, mode: str) -> None:
    m = engine(smollm2_path, n_ctx=256, n_threads=2, heads=HEADS_DIR / "smollm2-135m.heads.gguf")
    prompt = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # greedy decoding counts on: no end token for hundreds of tokens
    reference = m.generate(prompt, max_tokens=40, mode=mode)
    seen = []

    def interrupt(piece: str) -> bool:
        seen.append(piece)
        if len(seen) == 5:
            raise KeyboardInterrupt
        return True

    with pytest.raises(KeyboardInterrupt):
        m.generate(prompt, max_tokens=200, mode=mode, _on_text=interrupt)
    assert len(seen) == 5
    again = m.generate(prompt, max_tokens=40, mode=mode)
    assert again.tokens == reference.tokens and again.text == reference.text
    # An abandoned stream cancels its generation; the next one is unaffected.
    stream = m.generate_stream(prompt, max_tokens=200, mode=mode)
    next(stream)
    stream.close()
    assert m.generate(prompt, max_tokens=40, mode=mode).tokens == reference.tokens


_SIGINT_SCRIPT = textwrap.dedent(
    """
    import sys
    from adadecode import Model
    m = Model(sys.argv[1], n_ctx=2048, n_threads=1)
    prompt = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
    reference = m.generate(prompt, max_tokens=12).tokens
    print("ready", flush=True)
    try:
        m.generate(prompt, max_tokens=2000)
        print("not interrupted", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    print("same" if m.generate(prompt, max_tokens=12).tokens == reference else "different", flush=True)
    """
)


def test_ctrl_c_during_generate(engine: Any, smollm2_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    # SIGINT at its default in the child, as in a terminal, even when the tests run with it ignored (started in the
    # background by a shell without job control: an ignored signal stays ignored across exec).
    proc = subprocess.Popen([sys.executable, "-c", _SIGINT_SCRIPT, str(smollm2_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    import time

    time.sleep(0.5)  # well inside the 2000-token generation
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.split() == ["interrupted", "same"], (out, err)
