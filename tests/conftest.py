"""Shared pytest fixtures.

- ``cache_dir``: the model cache the tests use (``$ADADECODE_CACHE`` or ``~/.cache/adadecode``), so the real models
  are downloaded once per machine, not once per test run.
- ``smollm2_path``: the SmolLM2-135M GGUF, fetched into that cache on first use.
- ``engine``: ``adadecode.Model``; tests that need the compiled engine use it. Without the engine they are skipped
  locally but fail under CI (``CI`` set), where a missing engine is a broken build.
- ``start_rpc_server``: starts ``adadecode rpc-server`` processes (rpc_servers.Server) that are killed when the test
  ends, whatever happens in it; ``no_rpc_server_outlives_its_test`` / ``..._the_module`` fail a test (module) that
  leaves one running (test_rpc.py and test_rpc_split.py use them).
- marker ``slow``: deselect with ``-m "not slow"`` for a quick run.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adadecode.fetch import cache_root, fetch
from rpc_servers import Server, kill_all, running_rpc_servers


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


@pytest.fixture
def start_rpc_server() -> Iterator[Callable[..., Server]]:
    """Starts rpc-servers (``rpc_servers.Server(*extra, **options)``) that are killed when the test ends."""
    started: list[Server] = []

    def start(*extra: str, **options: Any) -> Server:
        started.append(Server(*extra, **options))
        return started[-1]

    yield start
    kill_all(started)


def _kill_and_fail_on_leftover_rpc_servers(allowed: set[int]) -> None:
    left = sorted(set(running_rpc_servers()) - allowed)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"rpc-server processes outlived their test or module (killed now): {left}"


@pytest.fixture(scope="module")
def no_rpc_server_outlives_the_module() -> Iterator[None]:
    """Requested before the module's server fixtures, so checked after their teardown: none left."""
    yield
    _kill_and_fail_on_leftover_rpc_servers(set())


@pytest.fixture
def no_rpc_server_outlives_its_test() -> Iterator[None]:
    """The servers a test starts are gone when it ends, pass or fail (those of module fixtures live on)."""
    before = set(running_rpc_servers())
    yield
    _kill_and_fail_on_leftover_rpc_servers(before)
