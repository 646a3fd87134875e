"""Constrained decoding with llguidance: GBNF grammars, JSON schemas and JSON mode as a logits processor.

The scheduler calls a processor for provisional positions too and may roll them back, so the matcher is kept in
sync with whatever context it is shown (roll back to the common prefix, consume the rest); a context holding a
token the grammar refuses can only come from a provisional token that verification will reject, so its row is
left alone. llguidance is imported lazily: ``pip install llguidance`` (or ``adadecode[grammar]``).
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .model import Model


class GrammarError(ValueError):
    """A grammar or schema llguidance cannot compile."""


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError as exc:
        raise GrammarError(
            "grammars, JSON schemas and JSON mode need llguidance: pip install 'adadecode[grammar]' "
            f"(or pip install llguidance) ({exc})"
        ) from exc
    return llguidance


class LlamaGrammar:
    """llama-cpp-python's grammar object: ``LlamaGrammar.from_string(gbnf)``, ``from_file(path)`` and
    ``from_json_schema(schema_json)``; pass it as ``grammar=``."""

    def __init__(self, *, _grammar: str, _format: str = "gbnf") -> None:
        self._grammar = _grammar
        self._format = _format

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> LlamaGrammar:
        return cls(_grammar=grammar)

    @classmethod
    def from_file(cls, file: str | os.PathLike[str], verbose: bool = True) -> LlamaGrammar:
        with open(file, encoding="utf-8") as f:
            return cls(_grammar=f.read())

    @classmethod
    def from_json_schema(cls, json_schema: str, verbose: bool = True) -> LlamaGrammar:
        json.loads(json_schema)  # a clear error now rather than at the first request
        return cls(_grammar=json_schema, _format="json_schema")


class _VocabTokenizer:
    """What llguidance's TokenizerWrapper wants: token bytes, special ids, and a tokenize function."""

    def __init__(self, model: Model) -> None:
        vocab = model.vocab
        n = model.n_vocab
        self.eos_token_id = vocab.eos
        self.bos_token_id = vocab.bos if vocab.bos >= 0 else None
        self.tokens = [vocab.token_to_piece(i, True) for i in range(n)]
        # llama.cpp's token types: 3 control, 4 user-defined (<|im_start|>, <tool_call> ...)
        self.special_token_ids = [i for i in range(n) if vocab.token_type(i) in (3, 4)]
        self._vocab = vocab

    def __call__(self, text: bytes | str) -> list[int]:
        return list(self._vocab.tokenize(text, False, False))


def tokenizer_for(model: Model) -> Any:
    """The llguidance tokenizer of ``model``, built once (about a second) and kept on the model."""
    cached = getattr(model, "_llg_tokenizer", None)
    if cached is not None:
        return cached
    llg = _llguidance()
    wrapper = _VocabTokenizer(model)
    eog = [i for i in range(model.n_vocab) if model.vocab.is_eog(i)]
    tok = llg.LLTokenizer(llg.TokenizerWrapper(wrapper), n_vocab=model.n_vocab, eos_token=eog or None)
    model._llg_tokenizer = tok  # type: ignore[attr-defined]
    return tok


def compile_grammar(kind: str, source: Any) -> str:
    """An llguidance grammar from ``kind`` "gbnf", "lark", "json_schema" (a dict or JSON text) or "regex"."""
    llg = _llguidance()
    if kind == "json_schema" and not isinstance(source, str):
        source = json.dumps(source)
    if not isinstance(source, str) or not source.strip():
        raise GrammarError(f"the {kind} grammar must be non-empty text")
    try:
        return str(llg.grammar_from(kind, source))
    except Exception as exc:  # llguidance raises ValueError/RuntimeError with the parser's message
        raise GrammarError(f"invalid {kind}: {exc}") from exc


def from_request(grammar: Any = None, response_format: Any = None, json_schema: Any = None) -> str | None:
    """The llguidance grammar of a request's ``grammar`` (GBNF text or a :class:`LlamaGrammar`), OpenAI's
    ``response_format`` or llama-server's ``json_schema``; None when none is set; at most one may be."""
    given = [name for name, v in (("grammar", grammar), ("response_format", response_format),
                                   ("json_schema", json_schema)) if v is not None]  # fmt: skip
    if isinstance(response_format, dict) and response_format.get("type") == "text":
        given.remove("response_format")
        response_format = None
    if len(given) > 1:
        raise GrammarError(f"only one of {', '.join(given)} may be set")
    if grammar is not None:
        if isinstance(grammar, LlamaGrammar) or hasattr(grammar, "_grammar"):
            return compile_grammar(getattr(grammar, "_format", "gbnf"), grammar._grammar)
        if isinstance(grammar, str):
            return compile_grammar("gbnf", grammar)
        raise GrammarError(f"grammar must be GBNF text or a LlamaGrammar, got {type(grammar).__name__}")
    if json_schema is not None:
        return compile_grammar("json_schema", json_schema)
    if response_format is not None:
        if not isinstance(response_format, dict):
            raise GrammarError("response_format must be an object")
        kind = response_format.get("type")
        if kind == "json_object":
            schema = response_format.get("schema") or {"type": "object"}  # llama-cpp-python accepts a schema here
            return compile_grammar("json_schema", schema)
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, dict) or "schema" not in spec:
                raise GrammarError("response_format.json_schema must be an object with a 'schema'")
            return compile_grammar("json_schema", spec["schema"])
        raise GrammarError(f"response_format.type must be 'text', 'json_object' or 'json_schema', got {kind!r}")
    return None


class GrammarProcessor:
    """Masks every token the grammar does not allow after the generated part of the context (the context after
    ``n_prompt`` tokens)."""

    def __init__(self, model: Model, grammar: str, n_prompt: int) -> None:
        llg = _llguidance()
        self.tokenizer = tokenizer_for(model)
        self.matcher = llg.LLMatcher(self.tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise GrammarError(f"invalid grammar: {self.matcher.get_error()}")
        self.n_prompt = n_prompt
        self.n_vocab = model.n_vocab
        self.consumed: list[int] = []
        self.mask = np.full((self.n_vocab + 31) // 32, -1, dtype=np.int32)
        self.calls = 0
        self.mask_seconds = 0.0

    def _sync(self, generated: np.ndarray) -> bool:
        """Bring the matcher to ``generated``; False when the grammar refuses one of its tokens."""
        k = 0
        n = min(len(self.consumed), len(generated))
        while k < n and self.consumed[k] == int(generated[k]):
            k += 1
        if k < len(self.consumed):
            self.matcher.rollback(len(self.consumed) - k)
            del self.consumed[k:]
        rest = [int(t) for t in generated[k:]]
        if rest:
            n_ok = self.matcher.try_consume_tokens(rest)
            self.consumed.extend(rest[:n_ok])
            if n_ok < len(rest):
                return False
        return True

    def __call__(self, context: np.ndarray, logits: np.ndarray) -> None:
        start = time.perf_counter()
        if not self._sync(context[self.n_prompt :]):
            return  # a rejected provisional token precedes this row: verification discards it
        self.matcher.unsafe_compute_mask_ptr(self.mask.ctypes.data, self.mask.nbytes)
        allowed = np.unpackbits(self.mask.view(np.uint8), bitorder="little")[: self.n_vocab].astype(bool)
        logits[~allowed] = -np.inf
        self.calls += 1
        self.mask_seconds += time.perf_counter() - start
