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
import sys
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import logits as lg
from . import tools as tool_mod
from .chat_formats import chat_format as chat_format_named
from .fetch import known_models, resolve_model
from .gguf_meta import read_metadata, rms_norm_eps, training_context
from .grammar import GrammarError, GrammarProcessor, from_request
from .logits import chat_logprobs, completion_logprobs, token_logprobs
from .model import Error, Generation, GenerationConfig, Mode, Model, PromptState, common_prefix_length
from .prompt_cache import BaseLlamaCache
from .tools import template_message

STATS_KEY = "adadecode"
"""The key under which results carry the engine's statistics of the generation."""
# The request parameters that Model.config hands to the engine's options, which check them.
_ENGINE_PARAMS = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "mode", "gamma", "max_pending",
                  "max_draft")  # fmt: skip

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


def _refuse_sampler_extras(typical_p: float, tfs_z: float, mirostat_mode: int, mirostat_tau: float,
                           mirostat_eta: float, stopping_criteria: Any) -> None:  # fmt: skip
    _refuse("typical_p", typical_p, 1.0)
    _refuse("tfs_z", tfs_z, 1.0)
    _refuse("mirostat_mode", mirostat_mode, 0)
    _refuse("mirostat_tau", mirostat_tau, 5.0)
    _refuse("mirostat_eta", mirostat_eta, 0.1)
    _refuse("stopping_criteria", stopping_criteria, None, " (use stop strings or max_tokens)")


def resolve_model_path(model_path: str | os.PathLike[str]) -> str:
    return str(resolve_model(str(model_path)))


def _usage(n_prompt: int, gen: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": n_prompt,
        "completion_tokens": len(gen.tokens),
        "total_tokens": n_prompt + len(gen.tokens),
    }


def _finish_reason(gen: Generation) -> str:
    # The engine says "stop" both at an end token and when told to stop; OpenAI knows "stop" and "length".
    return "length" if gen.finish_reason == "length" else "stop"


_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: a random seed

# llama-cpp-python constructor parameters that adadecode cannot honour: accepted only at their default value.
_UNSUPPORTED_INIT: dict[str, Any] = {
    "split_mode": 1, "main_gpu": 0, "vocab_only": False, "use_mmap": True, "use_mlock": False,
    "kv_overrides": None, "rope_scaling_type": -1, "pooling_type": -1, "attention_type": -1, "rope_freq_base": 0.0,
    "rope_freq_scale": 0.0, "yarn_ext_factor": -1.0, "yarn_attn_factor": 1.0, "yarn_beta_fast": 32.0,
    "yarn_beta_slow": 1.0, "yarn_orig_ctx": 0, "lora_base": None, "lora_scale": 1.0, "lora_path": None,
    "numa": False, "chat_handler": None, "tokenizer": None, "type_k": None, "type_v": None,
    "spm_infill": False,
}  # fmt: skip
# ... and those that only tune llama.cpp's batching, memory or kernels: any value gives the same output here, where
# the engine batches prompts, maps the file and picks its kernels itself (verbose=True lists them).
_ENGINE_HINTS = ("n_ubatch", "logits_all", "embedding", "offload_kqv", "flash_attn", "op_offload",
                 "swa_full", "no_perf")  # fmt: skip


def _refuse(name: str, value: Any, default: Any, what: str = "") -> None:
    if value != default:
        raise InvalidRequestError(
            f"{name}={value!r} is not supported by adadecode{what} (only the default {default!r} is)", name
        )


class LlamaTokenizer:
    """llama-cpp-python's ``Llama.tokenizer()``: text to ids and back with the model's vocabulary."""

    def __init__(self, llama: Llama) -> None:
        self._llama = llama

    def encode(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]:
        return self._llama.tokenize(text, add_bos=add_bos, special=special)

    def decode(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``; bytes that are not UTF-8 on their own (a character split across the ids' end)
        become U+FFFD."""
        return self._llama.detokenize(tokens).decode("utf-8", errors="replace")


class Llama:
    """A GGUF model behind llama-cpp-python's completion API, decoded by the adadecode engine.

    ``model_path`` is a GGUF file or a known model name (fetched on first use, see ``adadecode.known_models()``).
    ``heads`` enables adaptive layer-parallel decoding: a heads sidecar GGUF, the name of shipped heads, or
    ``"auto"`` for the heads shipped for this model; the output is the same with or without them. ``n_ctx`` is the
    context size in tokens (prompt + generated; 0: the model's training context), ``n_threads`` the CPU threads
    (default: one per core this process may use). ``n_gpu_layers`` (any non-zero value: the whole model) or
    ``device`` compute on a GPU, see :class:`Model`. ``model_alias`` is the name results report as ``"model"``
    (default: the file name without ``.gguf``). ``max_prompt_tokens`` refuses longer prompts with
    :class:`InvalidRequestError` (default: only the context size limits them).

    ``chat_format`` names a prompt format that replaces the GGUF's chat template (``"chatml"``, ``"llama-3"``,
    ``"llama-2"``, ``"mistral-instruct"``, ``"gemma"``, ``"zephyr"``; None or ``"chat_template.default"``: the
    GGUF's own); its end-of-turn text also stops the reply.

    llama-cpp-python's other constructor parameters are accepted: ``seed`` (default seed of the calls),
    ``last_n_tokens_size`` (the window of the repetition penalties), ``draft_model`` (a
    ``LlamaPromptLookupDecoding``: prompt-lookup drafts, the "ngram" mode), ``verbose`` (load information and
    timings on stderr), ``n_batch`` (prompt tokens per prefill pass, default 512: memory and speed, never the
    output); the batching/memory hints (``n_ubatch``, ``flash_attn``, ...) change nothing here; any other
    at a non-default value raises :class:`InvalidRequestError` naming it.

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
        n_gpu_layers: int = 0,
        seed: int = _DEFAULT_SEED,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        last_n_tokens_size: int = 64,
        draft_model: Any = None,
        verbose: bool = False,
        heads: str | os.PathLike[str] | None = None,
        device: str | None = None,
        rpc_servers: str | Sequence[str] | None = None,
        tensor_split: str | Sequence[float] | None = None,
        n_batch: int = 512,
        model_alias: str | None = None,
        max_prompt_tokens: int | None = None,
        cache: BaseLlamaCache | None = None,
        chat_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._set_chat_format(chat_format)
        self.cache: BaseLlamaCache | None = None
        self.set_cache(cache)
        hints = {k: kwargs.pop(k) for k in _ENGINE_HINTS if k in kwargs}
        for name, value in kwargs.items():
            if name not in _UNSUPPORTED_INIT:
                raise InvalidRequestError(f"Llama() got an unknown argument {name!r}", name)
            _refuse(name, value, _UNSUPPORTED_INIT[name])
        if n_threads_batch is not None and n_threads is not None and n_threads_batch != n_threads:
            raise InvalidRequestError(
                "n_threads_batch must equal n_threads: the engine uses one thread pool for prompts and tokens",
                "n_threads_batch",
            )
        n_threads = n_threads or n_threads_batch
        _require(isinstance(n_batch, int) and n_batch >= 1, f"n_batch must be an integer >= 1, got {n_batch!r}",
                 "n_batch")  # fmt: skip
        _require(last_n_tokens_size >= -1, f"last_n_tokens_size must be >= -1, got {last_n_tokens_size}",
                 "last_n_tokens_size")  # fmt: skip
        self.default_mode: str | None = None
        self.default_max_draft: int | None = None
        if draft_model is not None:
            n_pred = getattr(draft_model, "num_pred_tokens", None)
            if not isinstance(n_pred, int):
                raise InvalidRequestError(
                    "draft_model: only LlamaPromptLookupDecoding (prompt-lookup drafts) is supported", "draft_model"
                )
            self.default_mode = "ngram"
            self.default_max_draft = max(1, n_pred)
        start = time.perf_counter()

        path = resolve_model_path(model_path)
        self._metadata = read_metadata(path)
        n_train = training_context(self._metadata)
        if n_ctx == 0:
            _require(n_train is not None, "n_ctx=0 needs the GGUF's context_length, which it lacks", "n_ctx")
            n_ctx = int(n_train)  # type: ignore[arg-type]
        elif n_train is not None and n_ctx > n_train:
            warnings.warn(f"n_ctx={n_ctx} is larger than the model's training context {n_train}; "
                          "quality may degrade past it", UserWarning, stacklevel=2)  # fmt: skip
        self.model = Model(
            path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            heads=heads,
            n_gpu_layers=n_gpu_layers,
            device=device,
            rpc_servers=rpc_servers,
            tensor_split=tensor_split,
        )
        self._init_common(self.model, model_alias)
        self.max_prompt_tokens = max_prompt_tokens
        self.verbose = verbose
        self.seed = seed
        self.n_batch = n_batch
        self.last_n_tokens_size = last_n_tokens_size
        if verbose:
            m = self.model
            print(f"adadecode: loaded {m.path} ({m.arch}, {m.n_layer} layers, n_embd {m.n_embd}, n_vocab "
                  f"{m.n_vocab}) in {time.perf_counter() - start:.2f} s", file=sys.stderr)  # fmt: skip
            print(f"adadecode: n_ctx = {m.n_ctx} (trained {n_train}), device = {m.device}, exit heads at layers "
                  f"{m.exit_layers or 'none'}", file=sys.stderr)  # fmt: skip
            if hints:
                print(f"adadecode: {', '.join(f'{k}={v!r}' for k, v in hints.items())}: llama.cpp tuning that "
                      "does not apply to this engine", file=sys.stderr)  # fmt: skip

    def _set_chat_format(self, name: str | None) -> None:
        try:
            self.chat_format = chat_format_named(name)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), "chat_format") from exc

    def _init_common(self, model: Model, model_alias: str | None) -> None:
        self.model_path = model.path
        self.model_alias = model_alias or Path(model.path).name.removesuffix(".gguf")

    @classmethod
    def from_model(cls, model: Model, model_alias: str | None = None, chat_format: str | None = None) -> Llama:
        """Wrap an already loaded :class:`Model` (no second copy of the weights)."""
        self = cls.__new__(cls)
        self.model = model
        self._init_common(model, model_alias)
        self._metadata = read_metadata(model.path)
        self.max_prompt_tokens = None
        self.verbose = False
        self.seed = _DEFAULT_SEED
        self.n_batch = 512
        self.last_n_tokens_size = 64
        self.default_mode = None
        self.default_max_draft = None
        self.cache = None
        self._set_chat_format(chat_format)
        return self

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str | None = None, **kwargs: Any) -> Llama:
        """llama-cpp-python's hub loader, for local files only: ``repo_id`` a directory (``filename`` a file in it,
        a glob allowed) or a known model name (``adadecode.known_models()``). Downloads from model hubs are refused.
        """
        for name in ("additional_files", "local_dir", "cache_dir"):
            if kwargs.get(name) is not None:
                raise InvalidRequestError(f"from_pretrained: {name} is not supported (no hub downloads)", name)
        kwargs.pop("local_dir_use_symlinks", None)
        if repo_id in known_models() and filename is None:
            return cls(repo_id, **kwargs)
        root = Path(repo_id).expanduser()
        if root.is_dir() and filename:
            matches = sorted(root.glob(filename))
            _require(len(matches) == 1, f"from_pretrained: {filename!r} matches {len(matches)} files in {root}",
                     "filename")  # fmt: skip
            return cls(str(matches[0]), **kwargs)
        if root.is_file() and filename is None:
            return cls(str(root), **kwargs)
        raise InvalidRequestError(
            f"from_pretrained: {repo_id!r} is neither a local directory nor a known model name; adadecode does not "
            f"download from model hubs (known models: {', '.join(sorted(known_models()))})",
            "repo_id",
        )

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

    def token_eos(self) -> int:
        return int(self.model.vocab.eos)

    def token_bos(self) -> int:
        return int(self.model.vocab.bos)

    def token_nl(self) -> int:
        ids = self.model.tokenize("\n", add_special=False, parse_special=False)
        return int(ids[0]) if ids else -1

    def n_embd(self) -> int:
        return self.model.n_embd

    @property
    def n_tokens(self) -> int:
        """The tokens whose KV entries the cache holds: the last generation's prompt and reply."""
        return len(self.model.cached_tokens)

    @property
    def input_ids(self) -> np.ndarray:
        """Those tokens' ids (llama-cpp-python's ``input_ids[: n_tokens]``)."""
        return np.asarray(self.model.cached_tokens, dtype=np.intc)

    def tokenizer(self) -> LlamaTokenizer:
        return LlamaTokenizer(self)

    def set_seed(self, seed: int) -> None:
        """The seed of the calls that name none."""
        _check_sampling(1.0, 1.0, 0, 0.0, seed)
        self.seed = seed

    def close(self) -> None:
        """Free the model now (weights, KV cache, threads); calls afterwards raise :class:`Error`."""
        self.model.close()

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def generate(
        self,
        tokens: Sequence[int],
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        temp: float = 0.80,
        repeat_penalty: float = 1.0,
        reset: bool = True,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        penalize_nl: bool = True,
        logits_processor: Any = None,
        stopping_criteria: Any = None,
        grammar: Any = None,
    ) -> Iterator[int]:
        """llama-cpp-python's token generator: the ids chosen after ``tokens``, one at a time, up to the model's end
        of generation (which it does not yield) or a full context; breaking out of the loop (or ``close()``) stops
        the engine at its next token. Checked when called, like the other methods. ``reset`` changes nothing here:
        a generation keeps the KV entries of the prefix it shares with the cache either way. Sending tokens into it
        is refused."""
        _refuse_sampler_extras(typical_p, tfs_z, mirostat_mode, mirostat_tau, mirostat_eta, stopping_criteria)
        _refuse("penalize_nl", penalize_nl, True, " (the penalties apply to every token)")
        _require(isinstance(tokens, Sequence) and not isinstance(tokens, (str, bytes)), "tokens must be token ids",
                 "tokens")  # fmt: skip
        ids = self._token_ids(tokens, "tokens")
        config = self._generation_config(ids, None, temp, top_p, top_k, min_p, None, None, None, None, None, None,
                                         prompt_param="tokens")  # fmt: skip
        config.logits_processor = self._processor(
            ids, repeat_penalty, frequency_penalty, presence_penalty, None, None, logits_processor, grammar, None, None
        )
        return self._token_stream(ids, config)

    def _token_ids(self, tokens: Sequence[Any], param: str) -> list[int]:
        _require(all(isinstance(t, int) and 0 <= t < self.model.n_vocab for t in tokens),
                 f"{param} token ids must be integers in [0, {self.model.n_vocab})", param)  # fmt: skip
        _require(len(tokens) > 0, f"{param} is empty: no token ids", param)
        return [int(t) for t in tokens]

    def _token_stream(self, ids: list[int], config: GenerationConfig) -> Iterator[int]:
        self._load_cached_prefix(ids)
        tokens = self.model.run_tokens(ids, config)
        try:
            for token in tokens:
                sent = yield int(token)
                _require(sent is None, "generate() takes no tokens sent into it: start a new generate()", "tokens")
        finally:
            tokens.close()
            self._store_state()

    @property
    def metadata(self) -> dict[str, str]:
        """The GGUF's scalar key-values as strings, as llama-cpp-python's ``Llama.metadata``."""
        return dict(self._metadata)

    # --- embeddings -----------------------------------------------------------------------------------------------
    def embed(
        self, input: str | list[str], normalize: bool = True, truncate: bool = True, return_count: bool = False
    ) -> Any:
        """Mean-pooled embeddings: the final-layer states after the final norm, averaged over the tokens (BOS
        included), L2-normalized unless ``normalize`` is False. A list for a string, a list of lists for a list."""
        texts = [input] if isinstance(input, str) else input
        _require(isinstance(texts, list) and all(isinstance(t, str) for t in texts),
                 "input must be a string or a list of strings", "input")  # fmt: skip
        weight = getattr(self, "_norm_weight", None)
        if weight is None:
            weight = self._norm_weight = self.model.tensor("output_norm.weight").astype(np.float32)
        eps = rms_norm_eps(self._metadata)
        out: list[list[float]] = []
        total = 0
        for i, text in enumerate(texts):
            _check_unicode(text, f"input[{i}]", "input")
            ids = self.model.tokenize(text) if text else []
            _require(bool(ids), f"input[{i}] is empty", "input")
            if len(ids) > self.model.n_ctx:
                _require(truncate, f"input[{i}] has {len(ids)} tokens, more than n_ctx {self.model.n_ctx}", "input")
                ids = ids[: self.model.n_ctx]
            total += len(ids)
            h = self.model.hidden_states(ids, [self.model.n_layer])[0].astype(np.float64)
            h = h / np.sqrt(np.mean(h * h, axis=-1, keepdims=True) + eps) * weight
            v = h.mean(axis=0)
            if normalize:
                v = v / max(float(np.linalg.norm(v)), 1e-12)
            out.append([float(x) for x in v])
        result: Any = out[0] if isinstance(input, str) else out
        return (result, total) if return_count else result

    def create_embedding(self, input: str | list[str], model: str | None = None) -> dict[str, Any]:
        """OpenAI's embeddings response for ``input`` (see :meth:`embed`)."""
        texts = [input] if isinstance(input, str) else input
        vectors, total = self.embed(list(texts) if isinstance(texts, list) else texts, return_count=True)
        return {
            "object": "list",
            "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)],
            "model": model or self.model_alias,
            "usage": {"prompt_tokens": total, "total_tokens": total},
        }

    # --- completions ----------------------------------------------------------------------------------------------
    def __call__(self, prompt: str | bytes | Sequence[int], *args: Any, **kwargs: Any) -> Any:
        """Same as :meth:`create_completion`."""
        return self.create_completion(prompt, *args, **kwargs)

    def create_completion(
        self,
        prompt: str | bytes | Sequence[int],
        suffix: str | None = None,
        max_tokens: int | None = 16,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        logprobs: int | None = None,
        echo: bool = False,
        stop: str | Sequence[str] | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        top_k: int = 40,
        stream: bool = False,
        seed: int | None = None,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        model: str | None = None,
        stopping_criteria: Any = None,
        logits_processor: Any = None,
        grammar: Any = None,
        logit_bias: dict[Any, float] | None = None,
        *,
        mode: str | None = None,
        gamma: float | None = None,
        max_pending: int | None = None,
        max_draft: int | None = None,
        adaptive_exits: bool | None = None,
        repeat_last_n: int | None = None,
        response_format: dict[str, Any] | None = None,
        json_schema: Any = None,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Continue ``prompt`` (text, UTF-8 bytes or token ids); an OpenAI ``text_completion`` dict, or its chunks
        with ``stream``. The parameters are llama-cpp-python's, with the same defaults.

        ``max_tokens`` None or <= 0 means: until the context is full. ``temperature`` 0 is greedy decoding;
        ``top_k`` 0, ``top_p`` 1 and ``min_p`` 0 turn those filters off. ``stop`` strings end the text (they are not
        part of it). ``echo`` puts the prompt in front of the text. ``suffix`` asks a fill-in-the-middle model for
        the text between ``prompt`` and ``suffix``. ``repeat_penalty``, ``frequency_penalty`` and
        ``presence_penalty`` act as llama.cpp's over the last ``repeat_last_n`` tokens (default: the constructor's
        ``last_n_tokens_size``, 64); ``logit_bias`` maps token ids to added logits; ``logits_processor`` is a list
        of ``fn(input_ids, scores) -> scores``; ``grammar`` (GBNF text or :class:`LlamaGrammar`),
        ``response_format`` or ``json_schema`` constrain the output (llguidance); ``logprobs`` k returns OpenAI's
        logprobs with the k most likely tokens. ``typical_p``, ``tfs_z``, mirostat and ``stopping_criteria`` are
        refused unless left at their defaults. ``mode`` ("standard", "adadecode", "ngram" or "adadecode+ngram"),
        ``gamma``, ``max_pending``, ``max_draft`` and ``adaptive_exits`` tune the engine (see ``Model.config``;
        ``adaptive_exits=False`` lets every check at least ``gamma`` confident exit, the paper's rule, where by
        default the engine's exit policy also weighs what the exit is likely to save). ``finish_reason`` is
        "stop" (end token or stop string) or "length" (``max_tokens`` or the context reached). Statistics are under
        ``result["adadecode"]`` (in the last chunk when streaming).
        """
        _refuse_sampler_extras(typical_p, tfs_z, mirostat_mode, mirostat_tau, mirostat_eta, stopping_criteria)
        _require(isinstance(prompt, (str, bytes, Sequence)), "prompt must be text or token ids", "prompt")
        if isinstance(prompt, (bytes, bytearray)):  # UTF-8 text, as Model.generate takes it; not token ids
            prompt = _utf8_text(bytes(prompt), "the prompt", "prompt")
        if suffix is not None:
            _require(isinstance(prompt, str) and isinstance(suffix, str), "suffix needs a text prompt", "suffix")
            ids = self.infill_ids(str(prompt), suffix)
            prompt_text = str(prompt)
        elif isinstance(prompt, str):
            _require(prompt != "", "the prompt is empty", "prompt")
            _check_unicode(prompt, "the prompt", "prompt")
            ids = self.model.tokenize(prompt)
            prompt_text = prompt
        else:
            ids = self._token_ids(prompt, "prompt")
            prompt_text = self.model.detokenize(ids)
        if logprobs is not None:
            _require(isinstance(logprobs, int) and 0 <= logprobs <= 20, f"logprobs must be in [0, 20], got "
                     f"{logprobs!r}", "logprobs")  # fmt: skip
        config = self._generation_config(
            ids, max_tokens, temperature, top_p, top_k, min_p, seed, stop, mode, gamma, max_pending, max_draft,
            adaptive_exits,
        )
        config.logits_processor = self._processor(
            ids, repeat_penalty, frequency_penalty, presence_penalty, repeat_last_n, logit_bias, logits_processor,
            grammar, response_format, json_schema,
        )  # fmt: skip
        prefix = prompt_text if echo else ""
        meta = self._meta("cmpl", "text_completion", model)
        if stream and logprobs is None:
            return self._completion_chunks(ids, config, meta, prefix)
        gen = self._generate(ids, config, logprobs is not None)
        lp = None
        if logprobs is not None:
            lp = completion_logprobs(self._entries(gen, logprobs), self._piece, len(prefix))
        choice = {"text": prefix + gen.text, "index": 0, "logprobs": lp, "finish_reason": _finish_reason(gen)}
        result = {**meta, "choices": [choice], "usage": _usage(len(ids), gen), STATS_KEY: dict(gen.stats)}
        if stream:  # with logprobs: generated first, then handed out one token per chunk
            return self._replay_completion(result)
        return result

    def create_chat_completion(
        self,
        messages: list[Message],
        functions: list[dict[str, Any]] | None = None,
        function_call: Any = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        stream: bool = False,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        model: str | None = None,
        logits_processor: Any = None,
        grammar: Any = None,
        logit_bias: dict[Any, float] | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        *,
        mode: str | None = None,
        gamma: float | None = None,
        max_pending: int | None = None,
        max_draft: int | None = None,
        adaptive_exits: bool | None = None,
        repeat_last_n: int | None = None,
        json_schema: Any = None,
        parallel_tool_calls: bool = True,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Answer a conversation; an OpenAI ``chat.completion`` dict, or ``chat.completion.chunk`` dicts with
        ``stream``. The parameters are llama-cpp-python's, with the same defaults.

        ``messages`` are OpenAI's message dicts (system, user, assistant with ``tool_calls``, tool), rendered with
        the GGUF's chat template (``tokenizer.chat_template``, jinja2); the reply ends at the model's end-of-turn
        token. ``tools`` are given to the template (Qwen2.5's format); ``<tool_call>{json}</tool_call>`` in the reply
        becomes OpenAI ``tool_calls`` (finish_reason "tool_calls"); ``tool_choice`` "none", "auto", "required" or
        a named function (the last two force a call with a grammar). ``functions``/``function_call`` are the
        older spelling of the same. ``parallel_tool_calls`` False (OpenAI's): a reply's first call only, when the
        model wrote several. ``logprobs``/``top_logprobs`` return OpenAI's chat logprobs. The other arguments are
        those of :meth:`create_completion`.
        """
        _refuse_sampler_extras(typical_p, tfs_z, mirostat_mode, mirostat_tau, mirostat_eta, None)
        try:
            tool_list, forced = tool_mod.normalize(
                tools, tool_choice, functions, function_call, self.model.vocab.token_id
            )
        except ValueError as exc:
            raise InvalidRequestError(str(exc), "tools") from exc
        if forced is not None:
            _require(
                grammar is None and response_format is None and json_schema is None,
                "a forced tool_choice cannot be combined with grammar or response_format",
                "tool_choice",
            )
            grammar = forced  # fmt: skip
        if top_logprobs is not None:
            _require(isinstance(top_logprobs, int) and 0 <= top_logprobs <= 20,
                     f"top_logprobs must be in [0, 20], got {top_logprobs!r}", "top_logprobs")  # fmt: skip
            _require(bool(logprobs), "top_logprobs needs logprobs=True", "top_logprobs")
        ids = self.chat_prompt_ids(messages, tools=tool_list)
        if self.chat_format is not None:  # its end of turn need not be a token this model stops at
            stop = [*_stop_list(stop), self.chat_format.stop]
        config = self._generation_config(
            ids, max_tokens, temperature, top_p, top_k, min_p, seed, stop, mode, gamma, max_pending, max_draft,
            adaptive_exits, prompt_param="messages",
        )  # fmt: skip
        config.logits_processor = self._processor(
            ids, repeat_penalty, frequency_penalty, presence_penalty, repeat_last_n, logit_bias, logits_processor,
            grammar, response_format, json_schema,
        )  # fmt: skip
        meta = self._meta("chatcmpl", "chat.completion", model)
        if stream and not logprobs and not tool_list:
            return self._chat_chunks(ids, config, {**meta, "object": "chat.completion.chunk"})
        gen = self._generate(ids, config, bool(logprobs))
        message: dict[str, Any] = {"role": "assistant", "content": gen.text}
        finish = _finish_reason(gen)
        if tool_list:
            # <tool_call> is a special token in Qwen2.5's vocabulary, hidden from the plain text
            vocab = self.model.vocab
            raw = vocab.detokenize([t for t in gen.tokens if not vocab.is_eog(t)], True)
            names = {t["function"]["name"] for t in tool_list}
            content, calls = tool_mod.parse_tool_calls(raw, names)
            if not parallel_tool_calls:
                calls = calls[:1]
            if calls:
                message = {"role": "assistant", "content": content or None, "tool_calls": calls}
                finish = "tool_calls"
        lp = None
        if logprobs:
            lp = chat_logprobs(self._entries(gen, top_logprobs or 0), self._piece)
        choice = {"index": 0, "message": message, "logprobs": lp, "finish_reason": finish}
        result = {**meta, "choices": [choice], "usage": _usage(len(ids), gen), STATS_KEY: dict(gen.stats)}
        if stream:  # logprobs or tools: generated first, then handed out as chunks
            return self._replay_chat(result)
        return result

    def infill_ids(self, prefix: str, suffix: str) -> list[int]:
        """The prompt ids of a fill-in-the-middle request, with the model's FIM tokens (Qwen2.5-Coder's
        ``<|fim_prefix|>``, ``<|fim_suffix|>``, ``<|fim_middle|>``)."""
        vocab = self.model.vocab
        names = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
        tokens = [vocab.token_id(n) for n in names]
        _require(all(t >= 0 for t in tokens), f"{self.model_alias} has no fill-in-the-middle tokens "
                 f"({', '.join(names)})", "suffix")  # fmt: skip
        _check_unicode(prefix, "the prompt", "prompt")
        _check_unicode(suffix, "the suffix", "suffix")
        pre = self.model.tokenize(prefix, add_special=False, parse_special=False) if prefix else []
        suf = self.model.tokenize(suffix, add_special=False, parse_special=False) if suffix else []
        return [tokens[0], *pre, tokens[1], *suf, tokens[2]]

    def chat_prompt_ids(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The prompt token ids of a conversation, ending with the assistant's turn opening."""
        text = self.chat_prompt_text(messages, tools)
        vocab = self.model.vocab
        bos = vocab.token_to_piece(vocab.bos, True).decode("utf-8", "replace") if vocab.bos >= 0 else ""
        # Templates usually write the BOS text themselves; the tokenizer must not add a second one.
        add_special = not (bos and text.startswith(bos))
        return self.model.tokenize(text, add_special=add_special, parse_special=True)

    def chat_prompt_text(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> str:
        """A conversation as the chat template writes it, ending with the assistant's turn opening (llama-server's
        /apply-template). ``tools``: as :func:`tools.normalize` gives them."""
        _require(isinstance(messages, list) and len(messages) > 0, "messages must be a non-empty list", "messages")
        plain: list[dict[str, Any]] = []
        for i, m in enumerate(messages):
            _require(isinstance(m, dict), f"messages[{i}] must be an object", "messages")
            role = m.get("role")
            _require(
                role in ("system", "user", "assistant", "tool", "developer"),
                f"messages[{i}].role must be 'system', 'user', 'assistant' or 'tool', got {role!r}",
                "messages",
            )
            content = _message_text(m, i)
            _check_unicode(content, f"messages[{i}].content", "messages")
            try:
                plain.append(template_message(m, "system" if role == "developer" else str(role), content))
            except ValueError as exc:
                raise InvalidRequestError(f"messages[{i}]: {exc}", "messages") from exc
        _require(not (tools and self.chat_format), "tools need the GGUF's own chat template (chat_format=None): the "
                 "named formats have no place for them", "tools")  # fmt: skip
        try:
            text = self.model.apply_chat_template(plain, tools=tools, template=getattr(self.chat_format, "template",
                                                                                       None))  # fmt: skip
        except ValueError as exc:
            raise InvalidRequestError(str(exc), "messages") from exc
        except Exception as exc:  # a jinja2 error inside the template, e.g. its raise_exception("...")
            raise InvalidRequestError(f"the chat template rejected the messages: {exc}", "messages") from exc
        return text

    # --- internals --------------------------------------------------------------------------------------------
    def _stream(self, ids: list[int], config: GenerationConfig) -> Iterator[str]:
        self._load_cached_prefix(ids)
        pieces = self.model.run_stream(ids, config)
        try:
            yield from pieces
        finally:
            pieces.close()  # a consumer that stops early stops the engine at its next token
            self._store_state()

    def _generation_config(
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
        adaptive_exits: bool | None = None,
        prompt_param: str = "prompt",
    ) -> GenerationConfig:
        """The checked settings of a request (errors name its parameter); the logits processor is added later."""
        n_ctx = self.model.n_ctx
        limit = self.max_prompt_tokens
        if seed is None and self.seed != _DEFAULT_SEED:
            seed = self.seed
        if mode is None and self.default_mode is not None:
            mode = self.default_mode
            max_draft = max_draft if max_draft is not None else self.default_max_draft
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
            try:
                parsed = Mode.parse(mode)
            except ValueError as exc:
                raise InvalidRequestError(str(exc), "mode") from exc
            _require(not parsed.uses_heads or bool(self.model.exit_layers), f"mode {mode!r} needs exit heads", "mode")
        _require(adaptive_exits is None or isinstance(adaptive_exits, bool),
                 f"adaptive_exits must be true or false, got {adaptive_exits!r}", "adaptive_exits")  # fmt: skip
        try:
            config = self.model.config(
                max_tokens=n, temperature=float(temperature), top_p=float(top_p), top_k=int(top_k),
                min_p=float(min_p), seed=seed, stop=_stop_list(stop), mode=mode, gamma=gamma, max_pending=max_pending,
                max_draft=max_draft, adaptive_exits=adaptive_exits,
            )  # fmt: skip
            config.options.n_batch = self.n_batch
            return config
        except ValueError as exc:  # the engine's options check the values; their messages start with the field
            field = str(exc).split(" ", 1)[0]
            raise InvalidRequestError(str(exc), field if field in _ENGINE_PARAMS else prompt_param) from exc

    def _meta(self, prefix: str, kind: str, model: str | None = None) -> dict[str, Any]:
        return {
            "id": f"{prefix}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": model or self.model_alias,
        }

    def _processor(
        self, ids: list[int], repeat_penalty: float, frequency_penalty: float, presence_penalty: float,
        repeat_last_n: int | None, logit_bias: Any, logits_processor: Any, grammar: Any, response_format: Any,
        json_schema: Any,
    ) -> Any:  # fmt: skip
        """The logits processor of a request (user processors, logit bias, penalties, grammar, in that order)."""
        for name, value in (("repeat_penalty", repeat_penalty), ("frequency_penalty", frequency_penalty),
                            ("presence_penalty", presence_penalty)):  # fmt: skip
            _require(isinstance(value, (int, float)) and math.isfinite(value), f"{name} must be a number", name)
        _require(repeat_penalty >= 0, f"repeat_penalty must be >= 0, got {repeat_penalty}", "repeat_penalty")
        last_n = self.last_n_tokens_size if repeat_last_n is None else repeat_last_n
        _require(isinstance(last_n, int) and last_n >= -1, f"repeat_last_n must be >= -1, got {last_n!r}",
                 "repeat_last_n")  # fmt: skip
        parts: list[Any] = []
        if logits_processor is not None:
            try:
                parts.append(lg.UserProcessors(logits_processor))
            except (ValueError, TypeError) as exc:
                raise InvalidRequestError(str(exc), "logits_processor") from exc
        if logit_bias:
            _require(isinstance(logit_bias, dict), "logit_bias must be a map of token id to bias", "logit_bias")
            try:
                parts.append(lg.LogitBias(logit_bias, self.model.n_vocab))
            except ValueError as exc:
                raise InvalidRequestError(str(exc), "logit_bias") from exc
        penalties = lg.Penalties(repeat_penalty, frequency_penalty, presence_penalty, last_n)
        if penalties.active:
            parts.append(penalties)
        try:
            compiled = from_request(grammar, response_format, json_schema)
            if compiled is not None:
                parts.append(GrammarProcessor(self.model, compiled, len(ids)))
        except GrammarError as exc:
            param = "grammar" if grammar is not None else "response_format" if response_format else "json_schema"
            raise InvalidRequestError(str(exc), param) from exc
        return lg.chain(parts)

    def _piece(self, token: int) -> bytes:
        return bytes(self.model.vocab.token_to_piece(int(token), False))

    def _generate(self, ids: list[int], config: GenerationConfig, want_logits: bool) -> Generation:
        self._load_cached_prefix(ids)
        try:
            gen = self.model.run(ids, config, return_logits=want_logits)
        finally:
            self._store_state()
        self._print_timings(len(ids), gen)
        return gen

    def _print_timings(self, n_prompt: int, gen: Generation) -> None:
        if not self.verbose:
            return
        st = gen.stats
        pre, dec = float(st.get("prefill_seconds", 0.0)), float(st.get("decode_seconds", 0.0))
        n = len(gen.tokens)
        print(f"adadecode: prompt eval time = {pre * 1e3:10.2f} ms / {n_prompt:5d} tokens "
              f"({n_prompt / pre if pre > 0 else 0.0:8.2f} tokens per second)", file=sys.stderr)  # fmt: skip
        print(f"adadecode:        eval time = {dec * 1e3:10.2f} ms / {n:5d} tokens "
              f"({n / dec if dec > 0 else 0.0:8.2f} tokens per second), mode {st.get('mode')}, early exits "
              f"{100 * float(st.get('early_exit_fraction', 0.0)):.0f}%", file=sys.stderr)  # fmt: skip

    def _entries(self, gen: Generation, top_k: int) -> list[Any]:
        assert gen.logits is not None
        return token_logprobs(gen.logits, gen.tokens, top_k, self._piece)

    def _replay_completion(self, result: dict[str, Any]) -> Iterator[dict[str, Any]]:
        choice = result["choices"][0]
        lp = choice["logprobs"]
        meta = {k: result[k] for k in ("id", "object", "created", "model")}
        text = choice["text"]
        done = 0
        for i, token in enumerate(lp["tokens"]):
            start = lp["text_offset"][i]
            piece = text[start : start + len(token)] if i + 1 < len(lp["tokens"]) else text[start:]
            one = {k: [v[i]] for k, v in lp.items()}
            yield {**meta, "choices": [{"text": piece, "index": 0, "logprobs": one, "finish_reason": None}]}
            done = start + len(piece)
        if done < len(text) and not lp["tokens"]:
            yield {**meta, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": None}]}
        last = {"text": "", "index": 0, "logprobs": None, "finish_reason": choice["finish_reason"]}
        yield {**meta, "choices": [last], "usage": result["usage"], STATS_KEY: result[STATS_KEY]}

    def _replay_chat(self, result: dict[str, Any]) -> Iterator[dict[str, Any]]:
        choice = result["choices"][0]
        meta = {**{k: result[k] for k in ("id", "created", "model")}, "object": "chat.completion.chunk"}

        def chunk(delta: dict[str, Any], finish: str | None, lp: Any = None) -> dict[str, Any]:
            return {**meta, "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""}, None)
        message = choice["message"]
        if message.get("tool_calls"):
            if message.get("content"):
                yield chunk({"content": message["content"]}, None)
            calls = [{**c, "index": i} for i, c in enumerate(message["tool_calls"])]
            yield chunk({"tool_calls": calls}, None)
        elif choice["logprobs"] is not None:
            for entry in choice["logprobs"]["content"]:
                yield chunk({"content": entry["token"]}, None, {"content": [entry], "refusal": None})
        elif message.get("content"):
            yield chunk({"content": message["content"]}, None)
        yield {**chunk({}, choice["finish_reason"]), "usage": result["usage"], STATS_KEY: result[STATS_KEY]}

    def _completion_chunks(
        self, ids: list[int], config: GenerationConfig, meta: dict[str, Any], prefix: str
    ) -> Iterator[dict[str, Any]]:
        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            return {**meta, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

        if prefix:
            yield chunk(prefix, None)
        pieces = self._stream(ids, config)
        try:
            for piece in pieces:
                yield chunk(piece, None)
        finally:
            pieces.close()
        gen = self.model.last_generation
        assert gen is not None
        yield {**chunk("", _finish_reason(gen)), "usage": _usage(len(ids), gen), STATS_KEY: dict(gen.stats)}

    def _chat_chunks(self, ids: list[int], config: GenerationConfig, meta: dict[str, Any]) -> Iterator[dict[str, Any]]:
        def chunk(delta: dict[str, str], finish: str | None) -> dict[str, Any]:
            return {**meta, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""}, None)
        pieces = self._stream(ids, config)
        try:
            for piece in pieces:
                yield chunk({"content": piece}, None)
        finally:
            pieces.close()
        gen = self.model.last_generation
        assert gen is not None
        yield {**chunk({}, _finish_reason(gen)), "usage": _usage(len(ids), gen), STATS_KEY: dict(gen.stats)}
