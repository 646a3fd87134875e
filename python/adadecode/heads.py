"""Exit-head files: where the shipped ones live and how a heads argument (path or model name) resolves."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .fetch import known_models

SHIPPED_DIR = Path(__file__).resolve().parent / "heads"


def shipped_heads() -> dict[str, Path]:
    """Heads files shipped with the package, by model fetch name."""
    if not SHIPPED_DIR.is_dir():
        return {}
    return {p.name.removesuffix(".heads.gguf"): p for p in sorted(SHIPPED_DIR.glob("*.heads.gguf"))}


def identify_model(model_path: str | Path) -> str | None:
    """The fetch name of the known model whose file ``model_path`` is, by size then SHA-256 (so a renamed or
    copied GGUF is still recognised); None when it is none of them."""
    path = Path(model_path)
    try:
        size = path.stat().st_size
    except OSError:
        return None
    for name, spec in known_models().items():
        if spec.size is not None and spec.size != size:
            continue
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        if h.hexdigest() == spec.sha256:
            return name
    return None


def resolve_heads(name_or_path: str, model_path: str | None = None) -> Path:
    """A heads file path is returned as is; a model fetch name gives the heads shipped for that model."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = shipped_heads()
    if name_or_path in shipped:
        return shipped[name_or_path]
    if name_or_path == "auto" and model_path is not None:
        stem = Path(model_path).name.removesuffix(".gguf")
        if stem in shipped:
            return shipped[stem]
        known = identify_model(model_path)
        if known in shipped:
            return shipped[known]
        raise FileNotFoundError(
            f"--heads auto: {model_path} is none of the models with shipped heads ({', '.join(shipped) or 'none'}): "
            "its SHA-256 matches none of them; pass a heads file"
        )
    known = ", ".join(shipped) or "none"
    raise FileNotFoundError(f"heads '{name_or_path}' is neither a file nor a shipped heads name (shipped: {known})")
