"""A llama-cpp-python style API: ``Llama.create_completion`` / ``create_chat_completion`` with OpenAI-format results.

Code written for llama-cpp-python switches by changing the import::

    from adadecode import Llama
    llm = Llama(model_path="smollm2-135m", heads="auto")
    out = llm("The capital of France is", max_tokens=8, temperature=0)
    print(out["choices"][0]["text"], out["adadecode"]["early_exit_fraction"])

    for chunk in llm.create_chat_completion([{"role": "user", "content": "Hi!"}], stream=True):
        print(chunk["choices"][0]["delta"].get("content", ""), end="")

Results are plain dicts shaped like OpenAI's ``text_completion`` / ``chat.completion`` objects (and their ``.chunk``
variants when streaming). The engine's statistics of each generation (decoding mode, tokens/s, early-exit
fraction, accept rate, rollbacks, ...) are under the key ``"adadecode"`` of a result, or of the last chunk of a
stream, next to ``"usage"``. Bad arguments raise :class:`InvalidRequestError` (a ``ValueError``) when the method is
called, before anything is generated, also with ``stream=True``.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .model import MODES, Error, Generation, Model, PromptState, common_prefix_length
from .prompt_cache import BaseLlamaCache

STATS_KEY = "adadecode"
"""The key under which results carry the engine's statistics of the generation."""

Message = dict[str, Any]


class InvalidRequestError(ValueError):
    """An argument of a completion request is not acceptable; ``param`` names it and ``code`` is OpenAI's error code
    where one applies (``"context_length_exceeded"`` for a prompt that is too long)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def _require(ok: bool, message: str, param: str, code: str | None = None) -> None:
    if not ok:
        raise InvalidRequestError(message, param, code)


def _check_sampling(temperature: float, top_p: float, top_k: int, min_p: float, seed: int | None) -> None:
    _require(
        math.isfinite(temperature) and temperature >= 0, f"temperature must be >= 0, got {temperature}", "temperature"
    )
    _require(0 <= top_p <= 1, f"top_p must be in [0, 1], got {top_p}", "top_p")
    _require(0 <= min_p <= 1, f"min_p must be in [0, 1], got {min_p}", "min_p")
    _require(top_k >= 0, f"top_k must be >= 0, got {top_k}", "top_k")
    _require(seed is None or 0 <= seed < 2**64, f"seed must be in [0, 2^64), got {seed}", "seed")


def _stop_list(stop: str | Sequence[str] | None) -> list[str]:
    if stop is None:
        return []
    items = [stop] if isinstance(stop, str) else list(stop)
    _require(all(isinstance(s, str) for s in items), "stop must be a string or a list of strings", "stop")
    return [s for s in items if s]


def _utf8_text(data: bytes, what: str, param: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"{what} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} ({exc.reason})", param
        ) from exc


def _check_unicode(text: str, what: str, param: str) -> None:
    """JSON's \\uXXXX escapes can carry half of a surrogate pair, which no UTF-8 encoding exists for."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{what} is not valid Unicode text: a lone surrogate U+{ord(text[exc.start]):04X} at position {exc.start}",
            param,
        ) from exc


def _message_text(message: Message, index: int) -> str:
    """The text of a message; OpenAI's list-of-parts content is joined when every part is text."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            ok = isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            _require(ok, f"messages[{index}].content: only text parts are supported", "messages")
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidRequestError(f"messages[{index}].content must be a string or a list of text parts", "messages")


def _usage(n_prompt: int, gen: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": n_prompt,
        "completion_tokens": len(gen.tokens),
        "total_tokens": n_prompt + len(gen.tokens),
    }


def _finish_reason(gen: Generation) -> str:
    # The engine says "stop" both at an end token and when told to stop; OpenAI knows "stop" and "length".
    return "length" if gen.finish_reason == "length" else "stop"


class Llama:
    """A GGUF model behind llama-cpp-python's completion API, decoded by the adadecode engine.

    ``model_path`` is a GGUF file or a known model name (fetched on first use, see ``adadecode.known_models()``).
    ``heads`` enables adaptive layer-parallel decoding: a heads sidecar GGUF, the name of shipped heads, or
    ``"auto"`` for the heads shipped for this model; the output is the same with or without them. ``n_ctx`` is the
    context size in tokens (prompt + generated), ``n_threads`` the CPU threads (default: all cores).
    ``n_gpu_layers`` (any non-zero value: the whole model) or ``device`` compute on a GPU, see :class:`Model`.
    ``model_alias`` is the name results report as ``"model"`` (default: the file name without ``.gguf``).
    ``max_prompt_tokens`` refuses longer prompts with :class:`InvalidRequestError` (default: only the context
    size limits them).

    Every generation keeps the KV entries of the prompt's longest common prefix with the previous prompt and reply
    and prefills only the rest (a chat's earlier turns are not computed again); ``reset()`` forgets them,
    ``save_state()`` / ``load_state()`` snapshot and restore them. ``cache`` (a :class:`LlamaRAMCache` or
    :class:`LlamaDiskCache`, also ``set_cache``) keeps such snapshots for several conversations at once.

    One ``Llama`` runs one generation at a time: the engine is not reentrant, so threads sharing an instance must
    take turns (the server does this with a single worker thread).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        heads: str | os.PathLike[str] | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        device: str | None = None,
        model_alias: str | None = None,
        max_prompt_tokens: int | None = None,
        cache: BaseLlamaCache | None = None,
        verbose: bool = False,
    ) -> None:
        self.cache: BaseLlamaCache | None = None
        self.set_cache(cache)
        self.model = Model(
            model_path, n_ctx=n_ctx, n_threads=n_threads, heads=heads, n_gpu_layers=n_gpu_layers, device=device
        )
        self.model_path = self.model.path
        self.model_alias = model_alias or Path(self.model.path).name.removesuffix(".gguf")
        self.max_prompt_tokens = max_prompt_tokens
        self.verbose = verbose

    @classmethod
    def from_model(cls, model: Model, model_alias: str | None = None) -> Llama:
        """Wrap an already loaded :class:`Model` (no second copy of the weights)."""
        self = cls.__new__(cls)
        self.model = model
        self.model_path = model.path
        self.model_alias = model_alias or Path(model.path).name.removesuffix(".gguf")
        self.max_prompt_tokens = None
        self.verbose = False
        self.cache = None
        return self

    # --- prompt states ----------------------------------------------------------------------------------------------
    def set_cache(self, cache: BaseLlamaCache | None) -> None:
        """Use ``cache`` for prompt states from the next generation on (None: no cache)."""
        if cache is not None and not isinstance(cache, BaseLlamaCache):
            raise TypeError(f"cache must be a LlamaRAMCache or LlamaDiskCache, got {type(cache).__name__}")
        self.cache = cache

    def reset(self) -> None:
        """Forget the KV cache: the next generation prefills its whole prompt."""
        self.model.reset()

    def save_state(self) -> PromptState:
        """A snapshot of the KV cache: the tokens it holds and their KV entries."""
        return self.model.save_state()

    def load_state(self, state: PromptState) -> None:
        """Restore a :meth:`save_state` snapshot of this model (same ``n_ctx``)."""
        self.model.load_state(state)

    def _load_cached_prefix(self, ids: list[int]) -> None:
        """Before a generation: load the stored state sharing the longest prefix with ``ids``, when that is longer
        than what the model's own cache shares with it."""
        if self.cache is None:
            return
        try:
            state = self.cache[ids]
        except KeyError:
            return
        if state.fingerprint != self.model.fingerprint or state.n_ctx != self.model.n_ctx:
            return  # a cache shared with another model: not this model's entry
        usable = len(ids) - 1  # the last prompt token always runs
        here = min(common_prefix_length(self.model.cached_tokens, ids), usable)
        if min(common_prefix_length(state.tokens, ids), usable) > here:
            self.model.load_state(state)

    def _store_state(self) -> None:
        """After a generation (also a stopped or failed one): keep the model's state in the cache."""
        if self.cache is None:
            return
        try:
            state = self.model.save_state()
        except Error:  # the model is busy with a generation of another thread: nothing of ours to keep
            return
        if state.n_tokens:
            self.cache[state.tokens] = state

    # --- llama-cpp-python helpers -------------------------------------------------------------------------------
    def tokenize(self, text: bytes | str, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_bos`` adds the model's BOS/EOS as its GGUF says, ``special`` parses control
        tokens such as ``<|im_end|>`` written in the text."""
        return self.model.tokenize(text, add_special=add_bos, parse_special=special)

    def detokenize(self, tokens: Sequence[int], special: bool = False) -> bytes:
        """The UTF-8 bytes of ``tokens``."""
        return self.model.vocab.detokenize_bytes([int(t) for t in tokens], special)

    def n_ctx(self) -> int:
        """The context size in tokens."""
        return self.model.n_ctx

    def n_vocab(self) -> int:
        return self.model.n_vocab

    # --- completions ----------------------------------------------------------------------------------------------
    def __call__(self, prompt: str | bytes | Sequence[int], **kwargs: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Same as :meth:`create_completion`."""
        return self.create_completion(prompt, **kwargs)

    def create_completion(
        self,
        prompt: str | bytes | Sequence[int],
        max_tokens: int | None = 16,
        temperature: float = 0.8,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        stream: bool = False,
        echo: bool = False,
        mode: str | None = None,
        gamma: float | None = None,
        max_pending: int | None = None,
        max_draft: int | None = None,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Continue ``prompt`` (text, UTF-8 bytes or token ids); an OpenAI ``text_completion`` dict, or its chunks
        with ``stream``.

        ``max_tokens`` None or <= 0 means: until the context is full. ``temperature`` 0 is greedy decoding;
        ``top_k`` 0, ``top_p`` 1 and ``min_p`` 0 turn those filters off. ``stop`` strings end the text (they are not
        part of it). ``echo`` puts the prompt in front of the text. ``mode`` ("standard", "adadecode",
        "ngram" or "adadecode+ngram"), ``gamma``, ``max_pending`` and ``max_draft`` tune the engine (see
        ``Model.generate``). ``finish_reason`` is "stop" (end
        token or stop string) or "length" (``max_tokens`` or the context reached). Statistics are under
        ``result["adadecode"]`` (in the last chunk when streaming).
        """
        _require(isinstance(prompt, (str, bytes, Sequence)), "prompt must be text or token ids", "prompt")
        if isinstance(prompt, (bytes, bytearray)):  # UTF-8 text, as Model.generate takes it; not token ids
            prompt = _utf8_text(bytes(prompt), "the prompt", "prompt")
        if isinstance(prompt, str):
            _require(prompt != "", "the prompt is empty", "prompt")
            _check_unicode(prompt, "the prompt", "prompt")
            ids = self.model.tokenize(prompt)
            prompt_text = prompt
        else:
            _require(
                all(isinstance(t, int) and 0 <= t < self.model.n_vocab for t in prompt),
                f"prompt token ids must be integers in [0, {self.model.n_vocab})",
                "prompt",
            )
            ids = [int(t) for t in prompt]
            _require(bool(ids), "the prompt is empty", "prompt")
            prompt_text = self.model.detokenize(ids)
        gen_args = self._generation_args(
            ids, max_tokens, temperature, top_p, top_k, min_p, seed, stop, mode, gamma, max_pending, max_draft
        )
        prefix = prompt_text if echo else ""
        meta = self._meta("cmpl", "text_completion")
        if stream:
            return self._completion_chunks(ids, gen_args, meta, prefix)
        gen = self._generate(ids, gen_args)
        choice = {"text": prefix + gen.text, "index": 0, "logprobs": None, "finish_reason": _finish_reason(gen)}
        return {**meta, "choices": [choice], "usage": _usage(len(ids), gen), STATS_KEY: dict(gen.stats)}

    def create_chat_completion(
        self,
        messages: list[Message],
        max_tokens: int | None = None,
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        stream: bool = False,
        mode: str | None = None,
        gamma: float | None = None,
        max_pending: int | None = None,
        max_draft: int | None = None,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Answer a conversation; an OpenAI ``chat.completion`` dict, or ``chat.completion.chunk`` dicts with
        ``stream``.

        ``messages`` are ``{"role": "system" | "user" | "assistant", "content": str}`` dicts, rendered with the
        GGUF's chat template (``tokenizer.chat_template``, jinja2); the reply ends at the model's end-of-turn token.
        The other arguments are those of :meth:`create_completion`.
        """
        ids = self.chat_prompt_ids(messages)
        gen_args = self._generation_args(
            ids,
            max_tokens,
            temperature,
            top_p,
            top_k,
            min_p,
            seed,
            stop,
            mode,
            gamma,
            max_pending,
            max_draft,
            prompt_param="messages",
        )
        if stream:
            return self._chat_chunks(ids, gen_args, self._meta("chatcmpl", "chat.completion.chunk"))
        gen = self._generate(ids, gen_args)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": gen.text},
            "logprobs": None,
            "finish_reason": _finish_reason(gen),
        }
        meta = self._meta("chatcmpl", "chat.completion")
        return {**meta, "choices": [choice], "usage": _usage(len(ids), gen), STATS_KEY: dict(gen.stats)}

    def chat_prompt_ids(self, messages: list[Message]) -> list[int]:
        """The prompt token ids of a conversation, ending with the assistant's turn opening."""
        _require(isinstance(messages, list) and len(messages) > 0, "messages must be a non-empty list", "messages")
        plain: list[dict[str, str]] = []
        for i, m in enumerate(messages):
            _require(isinstance(m, dict), f"messages[{i}] must be an object", "messages")
            role = m.get("role")
            _require(
                role in ("system", "user", "assistant"),
                f"messages[{i}].role must be 'system', 'user' or 'assistant', got {role!r}",
                "messages",
            )
            content = _message_text(m, i)
            _check_unicode(content, f"messages[{i}].content", "messages")
            plain.append({"role": role, "content": content})
        try:
            text = self.model.apply_chat_template(plain)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), "messages") from exc
        except Exception as exc:  # a jinja2 error inside the template, e.g. its raise_exception("...")
            raise InvalidRequestError(f"the chat template rejected the messages: {exc}", "messages") from exc
        vocab = self.model.vocab
        bos = vocab.token_to_piece(vocab.bos, True).decode("utf-8", "replace") if vocab.bos >= 0 else ""
        # Templates usually write the BOS text themselves; the tokenizer must not add a second one.
        add_special = not (bos and text.startswith(bos))
        return self.model.tokenize(text, add_special=add_special, parse_special=True)

    # --- internals --------------------------------------------------------------------------------------------
    def _generate(self, ids: list[int], gen_args: dict[str, Any]) -> Generation:
        self._load_cached_prefix(ids)
        try:
            return self.model.generate(ids, **gen_args)
        finally:
            self._store_state()

    def _stream(self, ids: list[int], gen_args: dict[str, Any]) -> Iterator[str]:
        self._load_cached_prefix(ids)
        pieces = self.model.generate_stream(ids, **gen_args)
        try:
            yield from pieces
        finally:
            pieces.close()  # a consumer that stops early stops the engine at its next token
            self._store_state()

    def _generation_args(
        self,
        ids: list[int],
        max_tokens: int | None,
        temperature: float,
        top_p: float,
        top_k: int,
        min_p: float,
        seed: int | None,
        stop: str | Sequence[str] | None,
        mode: str | None,
        gamma: float | None,
        max_pending: int | None,
        max_draft: int | None,
        prompt_param: str = "prompt",
    ) -> dict[str, Any]:
        n_ctx = self.model.n_ctx
        limit = self.max_prompt_tokens
        _require(
            limit is None or len(ids) <= limit,
            f"the prompt has {len(ids)} tokens, more than the limit of {limit}",
            prompt_param,
            "context_length_exceeded",
        )
        _require(
            len(ids) < n_ctx,
            f"the prompt has {len(ids)} tokens but the context holds {n_ctx}: no room to "
            "generate (shorten the prompt or raise n_ctx)",
            prompt_param,
            "context_length_exceeded",
        )
        _check_sampling(float(temperature), float(top_p), int(top_k), float(min_p), seed)
        room = n_ctx - len(ids)
        n = room if max_tokens is None or max_tokens <= 0 else min(int(max_tokens), room)
        if mode is not None:
            _require(mode in MODES, f"mode must be one of {', '.join(MODES)}, got {mode!r}", "mode")
            _require(not mode.startswith("adadecode") or bool(self.model.exit_layers),
                     f"mode {mode!r} needs exit heads", "mode")  # fmt: skip
        if max_draft is not None:
            _require(max_draft >= 1, f"max_draft must be >= 1, got {max_draft}", "max_draft")
        if gamma is not None:
            _require(0 <= gamma <= 1, f"gamma must be in [0, 1], got {gamma}", "gamma")
        if max_pending is not None:
            _require(max_pending >= 1, f"max_pending must be >= 1, got {max_pending}", "max_pending")
        return {
            "max_tokens": n,
            "temperature": float(temperature),
            "top_p": float(top_p),
            "top_k": int(top_k),
            "min_p": float(min_p),
            "seed": seed,
            "stop": _stop_list(stop),
            "mode": mode,
            "gamma": gamma,
            "max_pending": max_pending,
            "max_draft": max_draft,
        }

    def _meta(self, prefix: str, kind: str) -> dict[str, Any]:
        return {
            "id": f"{prefix}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model_alias,
        }

    def _completion_chunks(
        self, ids: list[int], gen_args: dict[str, Any], meta: dict[str, Any], prefix: str
    ) -> Iterator[dict[str, Any]]:
        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            return {**meta, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

        if prefix:
            yield chunk(prefix, None)
        pieces = self._stream(ids, gen_args)
        try:
            for piece in pieces:
                yield chunk(piece, None)
        finally:
            pieces.close()
        gen = self.model.last_generation
        assert gen is not None
        yield {**chunk("", _finish_reason(gen)), "usage": _usage(len(ids), gen), STATS_KEY: dict(gen.stats)}

    def _chat_chunks(self, ids: list[int], gen_args: dict[str, Any], meta: dict[str, Any]) -> Iterator[dict[str, Any]]:
        def chunk(delta: dict[str, str], finish: str | None) -> dict[str, Any]:
            return {**meta, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""}, None)
        pieces = self._stream(ids, gen_args)
        try:
            for piece in pieces:
                yield chunk({"content": piece}, None)
        finally:
            pieces.close()
        gen = self.model.last_generation
        assert gen is not None
        yield {**chunk({}, _finish_reason(gen)), "usage": _usage(len(ids), gen), STATS_KEY: dict(gen.stats)}
