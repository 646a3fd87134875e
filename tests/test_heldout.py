"""The held-out code prompts bench/heldout/networkx-code.jsonl are reproducible: the pinned command regenerates
them byte for byte (with the pinned networkx version; skipped, saying so, with another)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "heldout" / "make_heldout.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_heldout", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_heldout_set_regenerates_byte_for_byte(tmp_path: Path) -> None:
    mod = _script()
    have = mod.installed_version()
    if have != mod.PACKAGE_VERSION:
        pytest.skip(f"networkx {have or '(not installed)'} is installed; the committed held-out set was made with "
                    f"networkx {mod.PACKAGE_VERSION}, whose functions and docstrings it quotes")
    out = tmp_path / "networkx-code.jsonl"
    assert mod.main(["--out", str(out)]) == 0
    assert out.read_bytes() == mod.OUT.read_bytes()
    assert mod.main(["--check"]) == 0
    # --check can fail: one changed byte is reported
    out.write_bytes(out.read_bytes().replace(b"networkx", b"networkY", 1))
    assert mod.main(["--check", "--out", str(out)]) == 1
