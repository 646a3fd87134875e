"""Exit-head files: where the shipped ones live and how a heads argument (path or model name) resolves."""

from __future__ import annotations

from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent / "heads"


def shipped_heads() -> dict[str, Path]:
    """Heads files shipped with the package, by model fetch name."""
    if not SHIPPED_DIR.is_dir():
        return {}
    return {p.name.removesuffix(".heads.gguf"): p for p in sorted(SHIPPED_DIR.glob("*.heads.gguf"))}


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
    known = ", ".join(shipped) or "none"
    raise FileNotFoundError(f"heads '{name_or_path}' is neither a file nor a shipped heads name (shipped: {known})")
