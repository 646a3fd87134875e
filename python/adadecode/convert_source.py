"""Lazy access to the weights of a Hugging Face checkpoint for ``adadecode convert``: safetensors shards are read
by byte range (their header is a small JSON directory of offsets), ``pytorch_model*.bin`` files through
``torch.load(mmap=True)``. Only the rows a caller asks for are converted to float32, so converting a model needs
about one slab of one tensor in memory, not the model.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class CheckpointError(ValueError):
    """The checkpoint's weight files are missing or malformed."""


# safetensors dtype -> (numpy dtype of the stored bits, converter to float32)
_ST_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8")}


@dataclass
class TensorEntry:
    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors spelling (F32, F16, BF16, F64) or a torch dtype name
    file: Path
    begin: int = 0  # byte range of a safetensors tensor inside its file
    end: int = 0


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


class Checkpoint:
    """The tensors of a checkpoint directory, by name, readable row range by row range as float32."""

    def __init__(self, hf_dir: Path) -> None:
        self.dir = hf_dir
        self.entries: dict[str, TensorEntry] = {}
        self._torch: dict[Path, dict[str, Any]] = {}
        files = self._weight_files()
        if not files:
            raise CheckpointError(
                f"no weights in {hf_dir}: expected model*.safetensors (or model.safetensors.index.json) or "
                "pytorch_model*.bin"
            )
        for path in files:
            if path.suffix == ".safetensors":
                self._index_safetensors(path)
            else:
                self._index_torch(path)

    def _weight_files(self) -> list[Path]:
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            index = self.dir / index_name
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise CheckpointError(f"{index} is not a valid shard index: {exc}") from exc
                files = sorted({self.dir / f for f in weight_map.values()})
                missing = [f.name for f in files if not f.is_file()]
                if missing:
                    raise CheckpointError(f"{index} names shard(s) that are missing: {', '.join(missing)}")
                return files
        st = sorted(self.dir.glob("*.safetensors"))
        if st:
            return st
        return sorted(self.dir.glob("pytorch_model*.bin"))

    def _index_safetensors(self, path: Path) -> None:
        try:
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > 100_000_000:
                    raise CheckpointError(f"{path}: the header length {n} is implausible (not a safetensors file?)")
                header = json.loads(f.read(n))
        except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from exc
        base = 8 + n
        size = path.stat().st_size
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = info.get("dtype")
            if dtype not in _ST_DTYPES:
                raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype}, supported: F32, F16, BF16, F64")
            begin, end = (base + int(x) for x in info["data_offsets"])
            shape = tuple(int(x) for x in info["shape"])
            if end > size or end - begin != int(np.prod(shape, dtype=np.int64)) * _ST_DTYPES[dtype].itemsize:
                raise CheckpointError(f"{path}: tensor {name!r} has an inconsistent size (truncated file?)")
            self._add(TensorEntry(name, shape, dtype, path, begin, end))

    def _index_torch(self, path: Path) -> None:
        try:
            import torch
        except ImportError as exc:
            raise CheckpointError(f"{path.name} is a PyTorch checkpoint: reading it needs torch installed") from exc
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise CheckpointError(f"cannot read {path}: {exc}") from exc
        self._torch[path] = state
        for name, t in state.items():
            self._add(TensorEntry(name, tuple(t.shape), str(t.dtype).removeprefix("torch."), path))

    def _add(self, entry: TensorEntry) -> None:
        if entry.name in self.entries:
            raise CheckpointError(
                f"tensor {entry.name!r} appears in both {self.entries[entry.name].file.name} and {entry.file.name}"
            )
        self.entries[entry.name] = entry

    def rows(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of a tensor (all of a 1-D tensor) as a float32 array."""
        e = self.entries[name]
        if e.file.suffix == ".safetensors":
            # Plain reads rather than a memory map: pages of a map stay resident (and in RSS) once touched.
            dtype = _ST_DTYPES[e.dtype]
            if len(e.shape) <= 1:  # vectors and scalars are read whole
                first, last, row, shape = 0, 1, int(np.prod(e.shape, dtype=np.int64)), e.shape
            else:
                first, last = start, e.shape[0] if stop is None else min(stop, e.shape[0])
                row = int(np.prod(e.shape[1:], dtype=np.int64))
                shape = (last - first, *e.shape[1:])
            with open(e.file, "rb") as f:
                f.seek(e.begin + first * row * dtype.itemsize)
                part = np.fromfile(f, dtype=dtype, count=(last - first) * row)
            if part.size != (last - first) * row:
                raise CheckpointError(f"{e.file}: tensor {name!r} is truncated")
            part = part.reshape(shape)
            return _bf16_to_f32(part) if e.dtype == "BF16" else part.astype(np.float32)
        import torch

        t = self._torch[e.file][name]
        part = t[start:stop] if t.dim() >= 1 else t
        return part.to(torch.float32).numpy()
