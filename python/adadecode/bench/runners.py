"""The systems a benchmark compares: modes of our engine (in this process) and anchors (worker processes).

Every system answers ``generate(ids, max_tokens)`` with one dict: ``tokens`` (generated ids, end token excluded),
``prefill_seconds``, ``decode_seconds`` and ``stats`` (whatever else the system reports). Greedy throughout.
An anchor that cannot start becomes a `Skipped` with the reason, which the report shows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import llamacpp_bin as binaries
from .errors import WorkerError

# The llamacpp-bin* anchors are llama.cpp's own programs (llamacpp_bin.py); llamacpp-bin-ngram is a group of three.
ANCHORS = (
    "llamacpp",
    "llamacpp-ngram",
    "llamacpp-spec",
    "transformers",
    "llamacpp-bin",
    "llamacpp-bin-ngram",
    "llamacpp-bin-ngram-simple",
    "llamacpp-bin-ngram-mod",
    "llamacpp-bin-ngram-map-k",
)
LLAMACPP_PYTHON_ENV = "ADADECODE_LLAMACPP_PYTHON"
_WORKER_KIND = {"llamacpp": "greedy", "llamacpp-ngram": "ngram", "llamacpp-spec": "spec"}


@dataclass
class Skipped:
    name: str
    reason: str


class EngineMode:
    """One decoding mode of our engine; the mode string goes to `Model.generate` as it is."""

    def __init__(self, model: Any, mode: str, gamma: float | None, max_pending: int | None) -> None:
        self.name = mode
        self.model = model
        self.gamma = gamma
        self.max_pending = max_pending

    def generate(self, ids: list[int], max_tokens: int) -> dict[str, Any]:
        g = self.model.generate(
            ids, max_tokens=max_tokens, temperature=0.0, mode=self.name, gamma=self.gamma, max_pending=self.max_pending
        )
        stats = {k: v for k, v in g.stats.items() if k not in ("prefill_seconds", "decode_seconds", "mode")}
        return {
            "tokens": [int(t) for t in g.tokens],
            "finish_reason": g.finish_reason,
            "token_sources": g.token_sources,
            "prefill_seconds": float(g.stats["prefill_seconds"]),
            "decode_seconds": float(g.stats["decode_seconds"]),
            "stats": stats,
        }

    def close(self) -> None:
        pass


class Worker:
    """An anchor in a child process speaking JSON lines (see llamacpp_worker.py)."""

    def __init__(self, name: str, python: str, script: Path, config: dict[str, Any]) -> None:
        self.name = name
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [python, str(script), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        hello = self._read()
        if "error" in hello:
            self.close()
            raise WorkerError(hello["error"])
        self.info: dict[str, Any] = hello.get("info", {})

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            self._stderr.seek(0)
            tail = " ".join(self._stderr.read().split())[-300:]
            raise WorkerError(f"worker exited with status {self.proc.returncode}" + (f": {tail}" if tail else ""))
        return json.loads(line)

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send one request line and return the worker's reply."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # _read reports how the worker ended
        return self._read()

    def generate(self, ids: list[int], max_tokens: int, eog: list[int]) -> dict[str, Any]:
        reply = self.request({"ids": ids, "max_tokens": max_tokens, "eog": eog})
        stats = {k: v for k, v in reply.items() if k not in ("tokens", "prefill_seconds", "decode_seconds")}
        return {
            "tokens": [int(t) for t in reply["tokens"]],
            "prefill_seconds": float(reply["prefill_seconds"]),
            "decode_seconds": float(reply["decode_seconds"]),
            "stats": stats,
        }

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


class Anchor:
    """A worker bound to the prompt's end tokens, with the same interface as `EngineMode`."""

    def __init__(self, worker: Worker, eog: list[int]) -> None:
        self.name = worker.name
        self.worker = worker
        self.eog = eog

    @property
    def info(self) -> dict[str, Any]:
        return self.worker.info

    def generate(self, ids: list[int], max_tokens: int) -> dict[str, Any]:
        return self.worker.generate(ids, max_tokens, self.eog)

    def close(self) -> None:
        self.worker.close()


def _python(path: str | None) -> tuple[str | None, str]:
    """(the Python executable, or None, and where it came from) for llama.cpp workers."""
    if path:
        where = "--llamacpp-python"
    elif os.environ.get(LLAMACPP_PYTHON_ENV):
        path, where = os.environ[LLAMACPP_PYTHON_ENV], f"${LLAMACPP_PYTHON_ENV}"
    else:
        path, where = sys.executable, "this Python"
    found = shutil.which(path) if os.sep not in path else (path if os.access(path, os.X_OK) else None)
    return found, f"{where} ({path})"


def start_anchor(
    name: str,
    model_path: str,
    threads: int,
    n_ctx: int,
    eog: list[int],
    *,
    llamacpp_python: str | None = None,
    draft_model: str | None = None,
    n_draft: int | None = None,
    llamacpp_bin_dir: str | None = None,
    vocab: Any = None,
) -> Any:
    """Start anchor `name` (an `Anchor`, or a `llamacpp_bin.BinaryAnchor`), or say why it cannot run (`Skipped`)."""
    here = Path(__file__).resolve().parent
    if name.startswith("llamacpp-bin"):
        if name not in binaries.SPEC_TYPES and name != binaries.GREEDY:
            raise ValueError(f"anchor '{name}' is a group: expand it with llamacpp_bin.expand first")
        if vocab is None:
            raise ValueError(f"anchor '{name}' needs the model's vocabulary (vocab=)")
        anchor, why = binaries.start(name, llamacpp_bin_dir, model_path, threads, n_ctx, vocab)
        return anchor if anchor is not None else Skipped(name, why)
    if name in _WORKER_KIND:
        python, where = _python(llamacpp_python)
        if python is None:
            return Skipped(
                name,
                f"no Python executable at {where}; pass --llamacpp-python or set "
                f"${LLAMACPP_PYTHON_ENV} to a Python with llama-cpp-python",
            )
        config: dict[str, Any] = {"model": model_path, "threads": threads, "n_ctx": n_ctx, "kind": _WORKER_KIND[name]}
        if n_draft:
            config["n_draft"] = n_draft
        if name == "llamacpp-spec":
            if not draft_model:
                return Skipped(name, "speculative decoding needs a draft model: pass --draft-model")
            config["draft_model"] = draft_model
        script = here / "llamacpp_worker.py"
    elif name == "transformers":
        python, where = sys.executable, "this Python"
        config = {"model": model_path, "threads": threads}
        script = here / "transformers_worker.py"
    else:
        raise ValueError(f"unknown anchor '{name}' (known: {', '.join(ANCHORS)})")
    try:
        return Anchor(Worker(name, python, script, config), eog)
    except (WorkerError, OSError) as exc:
        return Skipped(name, f"{exc} [python: {where}]")
