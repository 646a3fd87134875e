"""The exit-heads sidecar GGUF: write and read it (see docs/heads_format.md).

Layout: general.type = "adapter", adapter.type = "exit_heads", general.architecture = the base model's,
exit_heads.{block_count, embedding_length, vocab_size} of the base model, exit_heads.layers (int32 list), and per
exit layer l a tensor "exit.{l}.weight" (n_embd x n_embd, f32 or f16, PyTorch [out, in] layout) applied to the
residual stream after layer l before the model's own final norm and output matrix. An optional int32 tensor
"exit.vocab" restricts the heads to a vocabulary subset (confidence is then computed over that subset).

Version 2 (exit_heads.version = 2) adds a per-layer design tag, exit_heads.designs (a string array parallel to
exit_heads.layers): "dense" (the tensor above) or "mlp", the two-layer head ``h + rms(h) W2 gelu(W1 (h / rms_eps(h)))``
of head_designs.TwoLayer with tensors "exit.{l}.w1" (R x n_embd) and "exit.{l}.w2" (n_embd x R). A file with dense
heads only is written as version 1 (no version key, no tags), byte for byte as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ADAPTER_TYPE = "exit_heads"
FORMAT_VERSION = 2  # the newest version written and read; 1 = dense transforms only (no version key)
DESIGNS = ("dense", "mlp")
MLP_EPS = 1e-6  # the epsilon of the mlp head's input normalisation (head_designs.TwoLayer, cpp/forward.cpp)


@dataclass
class HeadsFile:
    arch: str
    n_layer: int
    n_embd: int
    n_vocab: int
    transforms: dict[int, np.ndarray]
    vocab: np.ndarray | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    mlps: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # layer -> (w1 [R, d], w2 [d, R])

    @property
    def layers(self) -> list[int]:
        return sorted({*self.transforms, *self.mlps})

    def design(self, layer: int) -> str:
        return "mlp" if layer in self.mlps else "dense"


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
    mlps: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Path:
    """Write a heads file atomically (temporary name, then rename). `transforms` are the dense heads, `mlps` the
    two-layer ones (w1 [R, n_embd], w2 [n_embd, R]); a layer has one or the other. With mlp heads the file is
    version 2 (per-layer design tags)."""
    import gguf

    mlps = dict(mlps or {})
    both = set(transforms) & set(mlps)
    if both:
        raise ValueError(f"exit layers {sorted(both)} have both a dense and an mlp head")
    layers = sorted({int(layer) for layer in transforms} | {int(layer) for layer in mlps})
    if not layers:
        raise ValueError("no exit layers given")
    for layer in layers:
        if not 1 <= layer < n_layer:
            raise ValueError(f"exit layer {layer} is outside 1..{n_layer - 1}")
        if layer in mlps:
            w1, w2 = (np.asarray(w) for w in mlps[layer])
            rank = w1.shape[0] if w1.ndim == 2 else 0
            if w1.shape != (rank, n_embd) or w2.shape != (n_embd, rank) or rank < 1:
                raise ValueError(f"mlp head of layer {layer} has w1 {w1.shape} and w2 {w2.shape}, need (R, {n_embd}) "
                                 f"and ({n_embd}, R) with R >= 1")
        elif transforms[layer].shape != (n_embd, n_embd):
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
    if mlps:
        writer.add_uint32("exit_heads.version", FORMAT_VERSION)
        writer.add_array("exit_heads.designs", ["mlp" if layer in mlps else "dense" for layer in layers])
    for key, value in (metadata or {}).items():
        if key in ("version", "designs"):
            raise ValueError(f"metadata key '{key}' is reserved for the format")
        writer.add_string(f"exit_heads.{key}", str(value))
    np_dtype = np.float16 if dtype == "f16" else np.float32
    for layer in layers:
        if layer in mlps:
            for name, w in zip(("w1", "w2"), mlps[layer], strict=True):
                writer.add_tensor(f"exit.{layer}.{name}", np.ascontiguousarray(w, dtype=np_dtype))
        else:
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


def write_identity_heads(model: str | os.PathLike[str], path: str | os.PathLike[str], layer: int = 0) -> Path:
    """Identity exit heads (the logit lens) at one layer of the GGUF `model` (default: a quarter of its depth): for
    timing an exit check, or forcing exits, on a model without trained heads, such as a synthetic one."""
    import gguf

    r = gguf.GGUFReader(str(model))
    arch = str(r.fields["general.architecture"].contents())
    n_layer = int(r.fields[f"{arch}.block_count"].contents())
    n_embd = int(r.fields[f"{arch}.embedding_length"].contents())
    n_vocab = next(int(t.shape[1]) for t in r.tensors if t.name == "token_embd.weight")
    layer = layer if layer > 0 else max(1, n_layer // 4)
    if not 1 <= layer < n_layer:
        raise ValueError(f"identity heads at layer {layer}: outside 1..{n_layer - 1}")
    return write_heads(path, arch=arch, n_layer=n_layer, n_embd=n_embd, n_vocab=n_vocab,
                       transforms={layer: np.eye(n_embd, dtype=np.float32)})  # fmt: skip


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
    version = int(reader.fields["exit_heads.version"].contents()) if "exit_heads.version" in reader.fields else 1
    if not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"'{path}': heads format version {version}; this adadecode reads 1..{FORMAT_VERSION}")
    if version >= 2:
        designs = [str(x) for x in field_value("exit_heads.designs")]  # type: ignore[union-attr]
        if len(designs) != len(layers):
            raise ValueError(f"'{path}': {len(designs)} design tags for {len(layers)} exit layers")
    else:
        designs = ["dense"] * len(layers)

    def matrix(name: str) -> np.ndarray:
        if name not in tensors:
            raise ValueError(f"'{path}': tensor '{name}' is missing")
        t = tensors[name]
        return np.array(t.data, dtype=np.float32).reshape(int(t.shape[1]), int(t.shape[0]))

    transforms = {}
    mlps = {}
    for layer, design in zip(layers, designs, strict=True):
        if design == "dense":
            transforms[layer] = matrix(f"exit.{layer}.weight")
        elif design == "mlp":
            mlps[layer] = (matrix(f"exit.{layer}.w1"), matrix(f"exit.{layer}.w2"))
        else:
            raise ValueError(f"'{path}': exit layer {layer} has head design '{design}'; known: {', '.join(DESIGNS)}")
    vocab = np.array(tensors["exit.vocab"].data, dtype=np.int32) if "exit.vocab" in tensors else None
    metadata = {
        k.removeprefix("exit_heads."): str(f.contents())
        for k, f in reader.fields.items()
        if k.startswith("exit_heads.") and k.removeprefix("exit_heads.") not in (
            "layers", "block_count", "embedding_length", "vocab_size", "version", "designs")
    }
    return HeadsFile(
        arch=str(field_value("general.architecture")),
        n_layer=int(field_value("exit_heads.block_count")),  # type: ignore[arg-type]
        n_embd=int(field_value("exit_heads.embedding_length")),  # type: ignore[arg-type]
        n_vocab=int(field_value("exit_heads.vocab_size")),  # type: ignore[arg-type]
        transforms=transforms,
        vocab=vocab,
        metadata=metadata,
        mlps=mlps,
    )
