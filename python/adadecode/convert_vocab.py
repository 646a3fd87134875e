"""The tokenizer part of ``adadecode convert``: a Hugging Face ``tokenizer.json`` (+ ``tokenizer_config.json``,
``config.json``, ``chat_template.jinja``) as GGUF ``tokenizer.*`` metadata, the way the engine's ``cpp/vocab.cpp``
and llama.cpp read it (docs/convert.md).

Only byte-level BPE tokenizers (``tokenizer.ggml.model = "gpt2"``) are converted. The pre-tokenizer family
(``tokenizer.ggml.pre``) is recognised from the tokenizer.json structure itself, so a tokenizer whose splitting rules
the engine does not implement is refused instead of being silently tokenized another way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# GGUF token types (llama.cpp's llama_token_type).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# The split patterns of the families the engine implements (cpp/pretokenizer.cpp), as they appear in the models'
# tokenizer.json files.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)

# tokenizer.ggml.pre values the engine and llama.cpp both know, for --tokenizer-pre.
KNOWN_PRE = ("smollm", "qwen2", "llama-bpe", "gpt-2")


class TokenizerError(ValueError):
    """The tokenizer files are missing, malformed, or describe a tokenizer the engine cannot reproduce."""


@dataclass
class VocabMetadata:
    """Everything the converter writes under ``tokenizer.*``."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int] = field(default_factory=dict)  # bos / eos / unknown / padding -> id
    add_bos: bool = False
    add_eos: bool = False
    chat_templates: dict[str, str] = field(default_factory=dict)  # "" = the default template


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise TokenizerError(f"{path} is not valid JSON: {exc}") from exc


def _step_kind(step: dict[str, Any]) -> str:
    """One pre-tokenizer step as a short comparable description."""
    kind = step.get("type")
    if kind == "ByteLevel":
        return f"ByteLevel(regex={bool(step.get('use_regex', True))}, prefix={bool(step.get('add_prefix_space'))})"
    if kind == "Digits":
        return f"Digits(individual={bool(step.get('individual_digits'))})"
    if kind == "Split":
        pattern = step.get("pattern", {})
        regex = pattern.get("Regex", pattern.get("String"))
        name = {QWEN2_PATTERN: "qwen2", LLAMA3_PATTERN: "llama3"}.get(regex, f"other:{regex!r}")
        behavior = str(step.get("behavior", "")).lower()
        return f"Split({name}, {behavior}, invert={bool(step.get('invert'))})"
    return f"{kind}({json.dumps(step, sort_keys=True)})"


_FAMILIES = {
    ("Digits(individual=True)", "ByteLevel(regex=True, prefix=False)"): ("smollm", None),
    ("Split(qwen2, isolated, invert=False)", "ByteLevel(regex=False, prefix=False)"): ("qwen2", "NFC"),
    ("Split(llama3, isolated, invert=False)", "ByteLevel(regex=False, prefix=False)"): ("llama-bpe", None),
    ("ByteLevel(regex=True, prefix=False)",): ("gpt-2", None),
}


def detect_pre(tokenizer: dict[str, Any]) -> str:
    """The ``tokenizer.ggml.pre`` family of a byte-level BPE tokenizer.json, or TokenizerError."""
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = tuple(_step_kind(s) for s in steps if s)
    norm = tokenizer.get("normalizer")
    norm_kind = None if norm is None else norm.get("type")
    if norm_kind == "Sequence" and not norm.get("normalizers"):
        norm_kind = None
    family = _FAMILIES.get(kinds)
    if family is None:
        raise TokenizerError(
            f"the tokenizer's pre-tokenizer [{', '.join(kinds) or 'none'}] is not one the engine implements "
            f"(smollm, qwen2, llama-bpe, gpt-2); pass --tokenizer-pre to choose one if you know it is equivalent"
        )
    name, want_norm = family
    if norm_kind != want_norm:
        raise TokenizerError(
            f"the tokenizer's normalizer {norm_kind or 'none'} does not fit the {name!r} pre-tokenizer family "
            f"(which expects {want_norm or 'none'}); pass --tokenizer-pre to override"
        )
    ignore_merges = bool(tokenizer.get("model", {}).get("ignore_merges", False))
    if ignore_merges != (name == "llama-bpe"):
        raise TokenizerError(
            f"the tokenizer has ignore_merges={ignore_merges}, which the {name!r} family does not; "
            "pass --tokenizer-pre to override"
        )
    return name


def _template_adds(processor: dict[str, Any] | None) -> tuple[bool, bool]:
    """(adds a special token before, after) the sequence in a TemplateProcessing post-processor."""
    if not processor:
        return False, False
    if processor.get("type") == "Sequence":
        bos = eos = False
        for p in processor.get("processors", []):
            b, e = _template_adds(p)
            bos, eos = bos or b, eos or e
        return bos, eos
    if processor.get("type") != "TemplateProcessing":
        return False, False
    single = processor.get("single", [])
    if not single:
        return False, False
    return "SpecialToken" in single[0], "SpecialToken" in single[-1]


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _first_int(value: Any) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_chat_templates(hf_dir: Path, tok_config: dict[str, Any]) -> dict[str, str]:
    """Chat templates: tokenizer_config.json's ``chat_template`` (a string or a list of named ones), else the
    ``chat_template.jinja`` / ``chat_template.json`` files transformers 5 saves next to it."""
    value = tok_config.get("chat_template")
    if value is None and (hf_dir / "chat_template.jinja").is_file():
        value = (hf_dir / "chat_template.jinja").read_text(encoding="utf-8")
    if value is None and (hf_dir / "chat_template.json").is_file():
        value = _read_json(hf_dir / "chat_template.json").get("chat_template")
    if isinstance(value, str):
        return {"": value} if value else {}
    templates: dict[str, str] = {}
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                name = str(item.get("name", "default"))
                templates["" if name == "default" else name] = item["template"]
    return templates


def read_vocab(hf_dir: Path, config: dict[str, Any], n_vocab: int, pre_override: str | None = None) -> VocabMetadata:
    """Reads the tokenizer of a Hugging Face model directory; ``n_vocab`` is the model's embedding row count (the
    token list is padded to it with unused ``[PADn]`` tokens, as the model's extra rows are never produced)."""
    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(
            f"no tokenizer.json in {hf_dir} (only Hugging Face fast tokenizers are supported; a sentencepiece "
            "tokenizer.model alone is not)"
        )
    tokenizer = _read_json(path)
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE":
        raise TokenizerError(f"{path}: tokenizer model {model.get('type')!r} is not supported (only byte-level BPE)")
    if model.get("byte_fallback"):
        raise TokenizerError(f"{path}: a BPE with byte_fallback (sentencepiece-style) is not supported")
    vocab: dict[str, int] = model.get("vocab") or {}
    added: list[dict[str, Any]] = tokenizer.get("added_tokens") or []
    n_tokens = 1 + max([*vocab.values(), *(int(a["id"]) for a in added)], default=-1)
    if n_tokens == 0:
        raise TokenizerError(f"{path}: the vocabulary is empty")
    if n_tokens > n_vocab:
        raise TokenizerError(
            f"{path}: the tokenizer has {n_tokens} tokens but the model's embedding has only {n_vocab} rows"
        )
    tokens: list[str | None] = [None] * n_vocab
    types = [TOKEN_NORMAL] * n_vocab
    for text, i in vocab.items():
        tokens[i] = text
    for a in added:
        i = int(a["id"])
        if tokens[i] is not None and tokens[i] != a["content"]:
            raise TokenizerError(f"{path}: id {i} is both {tokens[i]!r} and added token {a['content']!r}")
        tokens[i] = a["content"]
        # Hugging Face splits special added tokens out only when asked, others always: the engine's CONTROL and
        # USER_DEFINED types mean exactly that (docs/tokenizer.md).
        types[i] = TOKEN_CONTROL if a.get("special") else TOKEN_USER_DEFINED
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i] = f"[PAD{i}]"
            types[i] = TOKEN_UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]

    if pre_override is not None:
        pre = pre_override
    else:
        pre = detect_pre(tokenizer)

    tok_config = _read_json(hf_dir / "tokenizer_config.json") if (hf_dir / "tokenizer_config.json").is_file() else {}
    token_id = {t: i for i, t in enumerate(tokens)}
    special_ids: dict[str, int] = {}
    for role, gguf_role in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        text = _token_text(tok_config.get(f"{role}_token"))
        ident = token_id.get(text) if text is not None else None
        if text is not None and ident is None:
            raise TokenizerError(f"tokenizer_config.json: {role}_token {text!r} is not in the vocabulary")
        if ident is None:
            ident = _first_int(config.get(f"{role}_token_id"))
        if ident is not None:
            if not 0 <= ident < n_vocab:
                raise TokenizerError(f"{role} token id {ident} is outside the vocabulary (0..{n_vocab - 1})")
            special_ids[gguf_role] = ident
    add_bos, add_eos = _template_adds(tokenizer.get("post_processor"))
    if isinstance(tok_config.get("add_bos_token"), bool):
        add_bos = tok_config["add_bos_token"]
    if isinstance(tok_config.get("add_eos_token"), bool):
        add_eos = tok_config["add_eos_token"]
    return VocabMetadata(
        tokens=[str(t) for t in tokens],
        token_types=types,
        merges=merges,
        pre=pre,
        special_ids=special_ids,
        add_bos=add_bos,
        add_eos=add_eos,
        chat_templates=read_chat_templates(hf_dir, tok_config),
    )


def add_vocab_to_writer(writer: Any, meta: VocabMetadata) -> None:
    """Adds the tokenizer.* keys to a gguf.GGUFWriter."""
    import gguf

    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_string("tokenizer.ggml.pre", meta.pre)
    writer.add_array("tokenizer.ggml.tokens", meta.tokens)
    writer.add_key_value(
        "tokenizer.ggml.token_type", meta.token_types, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32
    )
    if meta.merges:
        writer.add_array("tokenizer.ggml.merges", meta.merges)
    for role, ident in meta.special_ids.items():
        writer.add_uint32(f"tokenizer.ggml.{role}_token_id", ident)
    writer.add_bool("tokenizer.ggml.add_bos_token", meta.add_bos)
    writer.add_bool("tokenizer.ggml.add_eos_token", meta.add_eos)
    for name, template in meta.chat_templates.items():
        writer.add_string("tokenizer.chat_template" + (f".{name}" if name else ""), template)
    named = [n for n in meta.chat_templates if n]
    if named:
        writer.add_array("tokenizer.chat_templates", named)
