"""The exit-heads sidecar GGUF: write and read it (see docs/heads_format.md).

Layout: general.type = "adapter", adapter.type = "exit_heads", general.architecture = the base model's,
exit_heads.{block_count, embedding_length, vocab_size} of the base model, exit_heads.layers (int32 list), and per
exit layer l a tensor "exit.{l}.weight" (n_embd x n_embd, f32 or f16, PyTorch [out, in] layout) applied to the
residual stream after layer l before the model's own final norm and output matrix. An optional int32 tensor
"exit.vocab" restricts the heads to a vocabulary subset (confidence is then computed over that subset).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ADAPTER_TYPE = "exit_heads"


@dataclass
class HeadsFile:
    arch: str
    n_layer: int
    n_embd: int
    n_vocab: int
    transforms: dict[int, np.ndarray]
    vocab: np.ndarray | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(self.transforms)


def write_heads(
    path: str | os.PathLike[str],
    *,
    arch: str,
    n_layer: int,
    n_embd: int,
    n_vocab: int,
    transforms: Mapping[int, np.ndarray],
    vocab: Sequence[int] | np.ndarray | None = None,
    metadata: Mapping[str, str] | None = None,
    dtype: str = "f32",
) -> Path:
    """Write a heads file atomically (temporary name, then rename)."""
    import gguf

    layers = sorted(int(layer) for layer in transforms)
    if not layers:
        raise ValueError("no exit layers given")
    for layer in layers:
        if not 1 <= layer < n_layer:
            raise ValueError(f"exit layer {layer} is outside 1..{n_layer - 1}")
        if transforms[layer].shape != (n_embd, n_embd):
            raise ValueError(f"transform of layer {layer} has shape {transforms[layer].shape}, need {(n_embd, n_embd)}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_type("adapter")
    writer.add_string("adapter.type", ADAPTER_TYPE)
    writer.add_uint32("exit_heads.block_count", n_layer)
    writer.add_uint32("exit_heads.embedding_length", n_embd)
    writer.add_uint32("exit_heads.vocab_size", n_vocab)
    writer.add_array("exit_heads.layers", layers)
    for key, value in (metadata or {}).items():
        writer.add_string(f"exit_heads.{key}", str(value))
    np_dtype = np.float16 if dtype == "f16" else np.float32
    for layer in layers:
        writer.add_tensor(f"exit.{layer}.weight", np.ascontiguousarray(transforms[layer], dtype=np_dtype))
    if vocab is not None:
        ids = np.asarray(vocab, dtype=np.int32)
        if ids.ndim != 1 or ids.size == 0 or ids.min() < 0 or ids.max() >= n_vocab:
            raise ValueError("vocab must be a non-empty list of token ids below n_vocab")
        writer.add_tensor("exit.vocab", ids)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path


def read_heads(path: str | os.PathLike[str]) -> HeadsFile:
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field_value(key: str) -> object:
        f = reader.fields.get(key)
        if f is None:
            raise ValueError(f"'{path}': metadata key '{key}' is missing")
        return f.contents()

    if field_value("general.type") != "adapter" or field_value("adapter.type") != ADAPTER_TYPE:
        raise ValueError(f"'{path}' is not an exit-heads adapter")
    tensors = {t.name: t for t in reader.tensors}
    layers = [int(x) for x in field_value("exit_heads.layers")]  # type: ignore[union-attr]
    transforms = {}
    for layer in layers:
        t = tensors[f"exit.{layer}.weight"]
        transforms[layer] = np.array(t.data, dtype=np.float32).reshape(int(t.shape[1]), int(t.shape[0]))
    vocab = np.array(tensors["exit.vocab"].data, dtype=np.int32) if "exit.vocab" in tensors else None
    metadata = {
        k.removeprefix("exit_heads."): str(f.contents())
        for k, f in reader.fields.items()
        if k.startswith("exit_heads.") and k not in ("exit_heads.layers",)
        and k.removeprefix("exit_heads.") not in ("block_count", "embedding_length", "vocab_size")
    }
    return HeadsFile(
        arch=str(field_value("general.architecture")),
        n_layer=int(field_value("exit_heads.block_count")),  # type: ignore[arg-type]
        n_embd=int(field_value("exit_heads.embedding_length")),  # type: ignore[arg-type]
        n_vocab=int(field_value("exit_heads.vocab_size")),  # type: ignore[arg-type]
        transforms=transforms,
        vocab=vocab,
        metadata=metadata,
    )
