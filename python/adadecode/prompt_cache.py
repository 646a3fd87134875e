"""Prompt-state caches in the style of llama-cpp-python's ``LlamaRAMCache`` / ``LlamaDiskCache``.

A cache maps token sequences to :class:`~adadecode.model.PromptState` snapshots. ``Llama(..., cache=...)`` looks a
prompt up before each generation: when a stored state shares a longer prefix with the prompt than the model's own
KV cache does, that state is loaded, so the prefix is not prefilled again; after the generation the model's state is
stored. Two conversations that take turns on one model then each keep their prefix.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from .model import PromptState, common_prefix_length


class BaseLlamaCache:
    """A byte-bounded map from token sequences to prompt states; lookups find the longest common prefix."""

    def __init__(self, capacity_bytes: int) -> None:
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int):
            raise TypeError(f"capacity_bytes must be an int, got {type(capacity_bytes).__name__}")
        if capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be positive, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes

    @property
    def cache_size(self) -> int:
        """Bytes of the stored states."""
        raise NotImplementedError

    def _keys(self) -> list[tuple[int, ...]]:
        raise NotImplementedError

    def _find_prefix_key(self, key: Sequence[int]) -> tuple[int, ...] | None:
        best, best_length = None, 0
        for k in self._keys():
            n = common_prefix_length(k, key)
            if n > best_length:
                best, best_length = k, n
        return best

    def __getitem__(self, key: Sequence[int]) -> PromptState:
        raise NotImplementedError

    def __contains__(self, key: Sequence[int]) -> bool:
        return self._find_prefix_key(tuple(key)) is not None

    def __setitem__(self, key: Sequence[int], value: PromptState) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._keys())

    @staticmethod
    def _dominated(old: tuple[int, ...], new: tuple[int, ...]) -> bool:
        # A state whose tokens start the new state's tokens shares no prompt a longer prefix than the new one does.
        return len(old) <= len(new) and new[: len(old)] == old


class LlamaRAMCache(BaseLlamaCache):
    """Prompt states in memory, least recently used first out, at most ``capacity_bytes`` together. A state larger
    than the whole budget is not stored (no error)."""

    def __init__(self, capacity_bytes: int = 2 << 30) -> None:
        super().__init__(capacity_bytes)
        self._states: OrderedDict[tuple[int, ...], PromptState] = OrderedDict()
        self._size = 0

    @property
    def cache_size(self) -> int:
        return self._size

    def _keys(self) -> list[tuple[int, ...]]:
        return list(self._states)

    def __getitem__(self, key: Sequence[int]) -> PromptState:
        found = self._find_prefix_key(tuple(key))
        if found is None:
            raise KeyError("no cached state shares a prefix with the key")
        self._states.move_to_end(found)
        return self._states[found]

    def __setitem__(self, key: Sequence[int], value: PromptState) -> None:
        if not isinstance(value, PromptState):
            raise TypeError(f"cache values are PromptState, got {type(value).__name__}")
        key = tuple(int(t) for t in key)
        for old in [k for k in self._states if self._dominated(k, key)]:
            self._size -= self._states.pop(old).nbytes
        if value.nbytes > self.capacity_bytes:
            return
        self._states[key] = value
        self._size += value.nbytes
        while self._size > self.capacity_bytes:
            _, evicted = self._states.popitem(last=False)
            self._size -= evicted.nbytes


class LlamaDiskCache(BaseLlamaCache):
    """Prompt states as files in ``cache_dir`` (one per state, named by a hash of its tokens), least recently used
    first out at ``capacity_bytes``. States already in the folder are found again by a later process."""

    def __init__(self, cache_dir: str | os.PathLike[str] = ".cache/adadecode_cache", capacity_bytes: int = 2 << 30):
        super().__init__(capacity_bytes)
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # key -> (file, bytes), in use order; rebuilt from the files' headers (oldest access first).
        self._index: OrderedDict[tuple[int, ...], tuple[Path, int]] = OrderedDict()
        for path in sorted(self.cache_dir.glob("*.state"), key=lambda p: p.stat().st_mtime):
            try:
                state = PromptState.from_bytes(path.read_bytes())
            except (OSError, ValueError):
                continue  # not ours, or damaged: ignored, never deleted
            self._index[state.tokens] = (path, state.nbytes)

    @property
    def cache_size(self) -> int:
        return sum(n for _, n in self._index.values())

    def _keys(self) -> list[tuple[int, ...]]:
        return list(self._index)

    def _file(self, key: tuple[int, ...]) -> Path:
        digest = hashlib.sha256(b"".join(t.to_bytes(4, "little", signed=True) for t in key)).hexdigest()
        return self.cache_dir / f"{digest[:32]}.state"

    def _drop(self, key: tuple[int, ...]) -> None:
        path, _ = self._index.pop(key)
        path.unlink(missing_ok=True)

    def __getitem__(self, key: Sequence[int]) -> PromptState:
        found = self._find_prefix_key(tuple(key))
        if found is None:
            raise KeyError("no cached state shares a prefix with the key")
        path, _ = self._index[found]
        try:
            state = PromptState.from_bytes(path.read_bytes())
        except (OSError, ValueError) as exc:
            self._index.pop(found)
            raise KeyError(f"the cached state {path} is unreadable: {exc}") from exc
        self._index.move_to_end(found)
        os.utime(path)
        return state

    def __setitem__(self, key: Sequence[int], value: PromptState) -> None:
        if not isinstance(value, PromptState):
            raise TypeError(f"cache values are PromptState, got {type(value).__name__}")
        key = tuple(int(t) for t in key)
        for old in [k for k in self._index if self._dominated(k, key)]:
            self._drop(old)
        if value.nbytes > self.capacity_bytes:
            return
        path = self._file(key)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(value.data)
        tmp.replace(path)  # a reader never sees half a state
        self._index[key] = (path, value.nbytes)
        while self.cache_size > self.capacity_bytes:
            self._drop(next(iter(self._index)))


__all__ = ["BaseLlamaCache", "LlamaDiskCache", "LlamaRAMCache"]
