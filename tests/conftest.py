"""Shared pytest fixtures.

- ``cache_dir``: the model cache the tests use (``$ADADECODE_CACHE`` or ``~/.cache/adadecode``), so the real models
  are downloaded once per machine, not once per test run.
- ``smollm2_path``: the SmolLM2-135M GGUF, fetched into that cache on first use.
- ``engine``: ``adadecode.Model``; tests that need the compiled engine use it. Without the engine they are skipped
  locally but fail under CI (``CI`` set), where a missing engine is a broken build.
- marker ``slow``: deselect with ``-m "not slow"`` for a quick run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from adadecode.fetch import cache_root, fetch


def gpu_devices() -> list[str]:
    """The GPUs this build of the engine can compute on (none for the default CPU build)."""
    try:
        from adadecode import list_devices
    except ImportError:
        return []
    return [d["name"] for d in list_devices() if d["kind"] in ("gpu", "igpu")]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a test that takes more than a few seconds (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    path = cache_root()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def smollm2_path(cache_dir: Path) -> Path:
    return fetch("smollm2-135m", cache_dir=cache_dir, progress=False)


@pytest.fixture(scope="session")
def engine() -> Any:
    try:
        from adadecode import Model
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the adadecode engine is not importable under CI: {exc}")
        pytest.skip(f"adadecode engine not built: {exc}")
    return Model
