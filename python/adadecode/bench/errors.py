"""The error every anchor raises when it cannot go on; its own module so that runners.py, which starts the anchors,
and the anchor modules it imports (llamacpp_bin.py) share it without importing each other."""

from __future__ import annotations


class WorkerError(RuntimeError):
    pass
