"""Stopping the servers a benchmark script starts, so that none outlives it."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], grace_seconds: float) -> None:
    """SIGTERM (a clean stop that works even where SIGINT is ignored, as in background jobs), SIGKILL after
    `grace_seconds`."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
