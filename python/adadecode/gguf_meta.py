"""GGUF metadata as llama-cpp-python's ``Llama.metadata`` shows it: every scalar key as a string."""

from __future__ import annotations

import functools
import os
import struct
from typing import Any

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime: float) -> dict[str, str]:
    """The key-value header only (gguf.GGUFReader parses every tensor and token too: seconds on a large model)."""
    with open(path, "rb") as f:
        data = f.read(24)  # magic, version, tensor count, key-value count
        if data[:4] != b"GGUF" or len(data) < 24:
            raise ValueError(f"{path} is not a GGUF file")
        n_kv = struct.unpack("<Q", data[16:24])[0]

        def read(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            return struct.unpack(fmt, f.read(size))[0]

        def string() -> str:
            return f.read(read("<Q")).decode("utf-8", "replace")

        def value(kind: int) -> Any:
            if kind == 8:
                return string()
            if kind == 9:
                elem, count = read("<I"), read("<Q")
                if elem in _SCALARS:
                    f.seek(count * struct.calcsize(_SCALARS[elem]), os.SEEK_CUR)
                else:
                    for _ in range(count):
                        value(elem)
                return None
            return read(_SCALARS[kind])

        out: dict[str, str] = {}
        for _ in range(n_kv):
            key = string()
            v = value(read("<I"))
            if v is not None:
                out[key] = str(v).lower() if isinstance(v, bool) else str(v)
        return out


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    p = os.fspath(path)
    return dict(_read(p, os.path.getmtime(p)))


def training_context(meta: dict[str, str]) -> int | None:
    arch = meta.get("general.architecture", "")
    value = meta.get(f"{arch}.context_length")
    return int(value) if value is not None else None


def rms_norm_eps(meta: dict[str, str]) -> float:
    arch = meta.get("general.architecture", "")
    return float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", "1e-5"))
