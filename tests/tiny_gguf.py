"""A tiny but complete llama GGUF (and exit heads for it), written with the gguf package, for tests that need many
model files fast: the corruption and fuzz suites. Random weights; the point is a file the engine loads and runs.

``write_tiny_model(path, **changes)`` writes a valid model; the keyword arguments make it invalid in one named way
(a hyper-parameter replaced, a tensor dropped, reshaped or stored in another type), so each test states exactly
what is wrong with its file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

N_LAYER = 2
N_EMBD = 32
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 64
HEAD_DIM = N_EMBD // N_HEAD

_WORDS = ["▁the", "▁a", "▁cat", "▁sat", "▁on", "▁mat", "▁dog", "▁ran", "▁and", "▁to", "ing", "ed", "▁is", "▁it"]


def tiny_vocab() -> tuple[list[str], list[float], list[int]]:
    """A sentencepiece vocabulary: <unk> <s> </s>, the 256 byte-fallback tokens, then a few words."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + _WORDS
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(_WORDS))]
    types = [2, 3, 3] + [6] * 256 + [1] * len(_WORDS)  # unknown, control, byte, normal
    return tokens, scores, types


N_VOCAB = len(tiny_vocab()[0])


def tiny_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """Weights by GGUF name, numpy shape = reversed ggml shape (gguf-py's convention)."""
    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    dkv = N_HEAD_KV * HEAD_DIM
    t: dict[str, np.ndarray] = {
        "token_embd.weight": mat(N_VOCAB, N_EMBD),
        "output_norm.weight": np.ones(N_EMBD, dtype=np.float32),
    }
    for il in range(N_LAYER):
        p = f"blk.{il}."
        t[p + "attn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        t[p + "attn_q.weight"] = mat(N_EMBD, N_EMBD)
        t[p + "attn_k.weight"] = mat(dkv, N_EMBD)
        t[p + "attn_v.weight"] = mat(dkv, N_EMBD)
        t[p + "attn_output.weight"] = mat(N_EMBD, N_EMBD)
        t[p + "ffn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        t[p + "ffn_gate.weight"] = mat(N_FF, N_EMBD).astype(np.float16)
        t[p + "ffn_up.weight"] = mat(N_FF, N_EMBD)
        t[p + "ffn_down.weight"] = mat(N_EMBD, N_FF)
    return t


def tiny_metadata() -> dict[str, Any]:
    """The llama hyper-parameters and tokenizer, by key."""
    tokens, scores, types = tiny_vocab()
    return {
        "llama.block_count": N_LAYER,
        "llama.context_length": 256,
        "llama.embedding_length": N_EMBD,
        "llama.feed_forward_length": N_FF,
        "llama.attention.head_count": N_HEAD,
        "llama.attention.head_count_kv": N_HEAD_KV,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "llama.rope.freq_base": 10000.0,
        "llama.rope.dimension_count": HEAD_DIM,
        "llama.vocab_size": N_VOCAB,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }


_UINT32_KEYS = {
    "llama.block_count",
    "llama.context_length",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.rope.dimension_count",
    "llama.vocab_size",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
}


def write_tiny_model(
    path: str | Path,
    *,
    metadata: Mapping[str, Any] | None = None,
    drop_keys: tuple[str, ...] = (),
    drop_tensors: tuple[str, ...] = (),
    tensors: Mapping[str, np.ndarray] | None = None,
    arch: str = "llama",
    seed: int = 0,
) -> Path:
    """Write the tiny model to `path`. `metadata` replaces or adds keys (a value's Python type picks the GGUF type:
    int -> uint32 for the known integer keys else int32, float -> float32, str, list); `tensors` replaces or adds
    tensors (numpy arrays, any dtype gguf-py writes, or (raw bytes as uint8 array, GGMLQuantizationType))."""
    import gguf

    path = Path(path)
    meta = tiny_metadata()
    meta.update(metadata or {})
    for key in drop_keys:
        meta.pop(key, None)
    weights = tiny_tensors(seed)
    weights.update(tensors or {})
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in meta.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            if key in _UINT32_KEYS and 0 <= value < 2**32:
                w.add_uint32(key, value)
            else:
                w.add_int64(key, value) if not -(2**31) <= value < 2**31 else w.add_int32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, list(value))
    for name, array in weights.items():
        if name in drop_tensors:
            continue
        if isinstance(array, tuple):
            raw, qtype = array
            w.add_tensor(name, raw, raw_dtype=qtype)
        else:
            w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_tiny_heads(
    path: str | Path,
    *,
    layers: tuple[int, ...] = (1,),
    n_layer: int = N_LAYER,
    n_embd: int = N_EMBD,
    n_vocab: int = N_VOCAB,
    arch: str = "llama",
    vocab: list[int] | None = None,
    transform: np.ndarray | None = None,
) -> Path:
    """Exit heads for the tiny model (identity transforms unless `transform` is given), written by the project's
    own heads writer so the format stays in one place."""
    from adadecode.heads_format import write_heads

    t = np.eye(n_embd, dtype=np.float32) if transform is None else transform
    return write_heads(
        path, arch=arch, n_layer=n_layer, n_embd=n_embd, n_vocab=n_vocab, transforms=dict.fromkeys(layers, t),
        vocab=vocab,
    )  # fmt: skip
