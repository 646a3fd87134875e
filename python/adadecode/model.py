"""The Python face of the engine: load a GGUF model, tokenize, generate (standard or layer-parallel)."""

from __future__ import annotations

import codecs
import contextlib
import math
import os
import queue
import struct
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _core
from .chat import render_chat_template
from .fetch import resolve_model
from .heads import resolve_heads

Error = _core.Error

Mode = _core.Mode
MODES = tuple(str(m) for m in Mode.__members__.values())  # the names users write, in the engine's order
# The engine's default options (C++, options.h): the one source of Python's defaults too.
_DEFAULTS = _core.DecodeOptions()


def default_threads() -> int:
    """The threads a :class:`Model` given no ``n_threads`` runs with: one per physical core among the CPUs this process
    may run on (its affinity, e.g. ``taskset`` or a container's cpuset; on a hybrid Intel CPU its performance cores),
    within its cgroup's CPU quota (``docker --cpus``). More would share cores, and a pass waits at every barrier for its
    slowest thread. Such a model runs fewer while other programs keep some of those CPUs busy
    (:attr:`Model.threads_in_use`)."""
    return _core.default_thread_count()


# (context ids up to and including a position, that position's final-layer logits to edit in place) -> None
LogitsProcessor = Callable[[np.ndarray, np.ndarray], None]


@dataclass
class GenerationConfig:
    """One generation's settings on their way to the engine (:meth:`Model.config` makes them): the engine's options
    (a ``DecodeOptions`` of the C++ engine), the stop strings and the logits processor."""

    options: _core.DecodeOptions
    stop: list[str] = field(default_factory=list)
    logits_processor: LogitsProcessor | None = None


@dataclass
class Generation:
    """The result of one generation: ids and text of the generated tokens, why it stopped, statistics."""

    tokens: list[int]
    text: str
    finish_reason: str
    stats: dict[str, Any] = field(default_factory=dict)
    # Per token, where it came from (all verified by the final layer): 'f' the final layer chose it, 'e' an exit
    # head proposed it early, 'd' a prompt-lookup draft proposed it.
    token_sources: str = ""
    logits: np.ndarray | None = None  # [n_generated (+1 at an end token), n_vocab] with return_logits=True


def _incomplete_utf8_suffix(data: bytes) -> int:
    """How many bytes at the end of ``data`` start a UTF-8 character that is not complete yet."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(data, final=False)
    return len(decoder.getstate()[0])
_STATE_HEADER = struct.Struct("<8sIQiiiiI")  # magic, version, fingerprint, n_ctx, KV type, n_layer, n_embd_kv, n
_STATE_MAGIC = b"ADASTATE"


@dataclass(frozen=True, eq=False)
class PromptState:
    """A snapshot of a model's KV cache: the tokens it holds and their KV entries (``data``, the engine's own
    self-checking format, which also names the model and n_ctx it came from). :meth:`Model.load_state` restores it
    on the same model with the same ``n_ctx``, so a prompt that starts with ``tokens`` is not prefilled again.
    ``bytes(state)`` / :meth:`from_bytes` round-trip it through a file."""

    tokens: tuple[int, ...]
    data: bytes
    n_ctx: int
    fingerprint: int

    @classmethod
    def from_bytes(cls, data: bytes) -> PromptState:
        """Reads the header of saved state bytes; the KV entries are checked when the state is loaded."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"a prompt state is bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _STATE_HEADER.size or not data.startswith(_STATE_MAGIC):
            raise ValueError("not an adadecode prompt state (bad magic bytes or too short)")
        _, _, fingerprint, n_ctx, _, _, _, n = _STATE_HEADER.unpack_from(data)
        end = _STATE_HEADER.size + 4 * n
        if end > len(data):
            raise ValueError("the prompt state is truncated or corrupt (it ends inside its tokens)")
        tokens = tuple(np.frombuffer(data, dtype="<i4", count=n, offset=_STATE_HEADER.size).tolist())
        return cls(tokens=tokens, data=data, n_ctx=n_ctx, fingerprint=fingerprint)

    def __bytes__(self) -> bytes:
        return self.data

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def nbytes(self) -> int:
        """The memory the state takes (its KV bytes and tokens)."""
        return len(self.data)

    # llama-cpp-python's LlamaState names
    @property
    def input_ids(self) -> np.ndarray:
        return np.asarray(self.tokens, dtype=np.intc)

    @property
    def llama_state(self) -> bytes:
        return self.data

    @property
    def llama_state_size(self) -> int:
        return len(self.data)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def list_devices() -> list[dict[str, str]]:
    """The ggml devices of this build: dicts with ``name``, ``description`` and ``kind`` (cpu, gpu, igpu, accel; rpc
    for those of rpc-servers added in this process)."""
    return list(_core.list_devices())


def choose_device(n_gpu_layers: int = 0, device: str | None = None) -> str:
    """The engine's device for llama.cpp's ``n_gpu_layers`` convention, or an explicit ggml device name.

    ``device`` wins when given. Otherwise ``n_gpu_layers`` 0 keeps the default CPU path, and any other value puts the
    whole model on the first GPU (there is no partial offload); without a GPU in this build that is a warning and
    the CPU, as in llama-cpp-python, so scripts written for a GPU still run.
    """
    if device:
        return device
    if n_gpu_layers == 0:
        return ""
    if _core.has_gpu():
        return "gpu"
    warnings.warn(
        f"n_gpu_layers={n_gpu_layers} asks for a GPU but this build of adadecode has none; computing on the CPU",
        RuntimeWarning,
        stacklevel=3,
    )
    return ""


def parse_rpc_servers(rpc_servers: str | Sequence[str] | None) -> list[str]:
    """``"host:port,host:port"`` (llama.cpp's form) or a list of ``host:port`` -> the list; None or "" -> []."""
    if rpc_servers is None:
        return []
    items = rpc_servers.split(",") if isinstance(rpc_servers, str) else list(rpc_servers)
    out = [str(s).strip() for s in items]
    if any(not s for s in out):
        raise ValueError(f"rpc_servers: an empty entry in {rpc_servers!r} (expected host:port[,host:port...])")
    return out


def add_rpc_servers(rpc_servers: str | Sequence[str] | None, timeout_s: float = 10.0) -> list[str]:
    """Connect to each rpc-server (``adadecode rpc-server``) and return the names of the devices they serve.

    Raises :class:`Error` within ``timeout_s`` per server when one is unreachable, busy with another client or
    speaks another protocol version, and when this build has no RPC backend (the ``ADADECODE_RPC`` build option).
    """
    names: list[str] = []
    for endpoint in parse_rpc_servers(rpc_servers):
        names.extend(_core.rpc_add_server(endpoint, timeout_s))
    return names


def parse_tensor_split(tensor_split: str | Sequence[float] | None) -> list[float]:
    """``"a,b,c"`` (llama.cpp's --tensor-split) or a list of floats -> the list; None, "" or [] -> [].

    Raises ValueError for a value that is not a number, negative or not finite, and for all zeros."""
    if tensor_split is None:
        return []
    items = tensor_split.split(",") if isinstance(tensor_split, str) else list(tensor_split)
    if isinstance(tensor_split, str) and not tensor_split.strip():
        return []
    out: list[float] = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise ValueError(f"tensor_split: {item!r} is not a number (expected a,b,c: one share per device)") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"tensor_split: values must be finite and >= 0, got {item!r}")
        out.append(value)
    if out and not any(out):
        raise ValueError(f"tensor_split: {tensor_split!r} gives no device a share (all values are 0)")
    return out


class _Closed:
    """In place of the engine and vocabulary of a closed model: every use is an error naming it."""

    def __init__(self, path: str) -> None:
        self._path = path

    def __getattr__(self, name: str) -> Any:
        raise Error(f"the model {self._path} was closed")


class Model:
    """A GGUF model on the adadecode engine.

    >>> m = Model("smollm2-135m")          # a path or a fetch name
    >>> m.generate("The capital of France is", max_tokens=8).text

    ``n_gpu_layers`` (llama.cpp's flag; any non-zero value offloads the whole model) or ``device`` (a name from
    :func:`list_devices`, or ``"gpu"``) move the weights to a ggml device and compute there with ggml's kernels.
    ``rpc_servers`` (``"host:port"``, a comma-separated list, or a list) computes on the devices of
    ``adadecode rpc-server`` processes on other hosts. With one server the whole model goes to its device; with
    several (or with ``tensor_split``) the layers, with their KV cache, are split in whole contiguous ranges across
    the local CPU and the servers' devices, in that order, in proportion to their free memory or to
    ``tensor_split`` (one share per device, e.g. ``[1, 2, 2]``; ``"1,2,2"`` too). ``device`` naming one of the
    servers' devices (``"RPC0"``) puts the whole model there instead. :attr:`split` lists the ranges. See
    docs/rpc.md.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        n_ctx: int = 4096,
        n_threads: int | None = None,
        heads: str | os.PathLike[str] | None = None,
        repack: bool = False,
        n_gpu_layers: int = 0,
        device: str | None = None,
        rpc_servers: str | Sequence[str] | None = None,
        tensor_split: str | Sequence[float] | None = None,
    ) -> None:
        if n_threads is not None and n_threads <= 0:
            raise ValueError(f"n_threads must be >= 1, got {n_threads}")
        if not 0 < n_ctx < 2**31:
            raise ValueError(f"n_ctx must be in [1, 2**31), got {n_ctx}")
        self.path = str(resolve_model(str(path)))
        heads_path = ""
        if heads is not None:
            heads_path = str(resolve_heads(str(heads), self.path))
        shares = parse_tensor_split(tensor_split)
        if shares and not rpc_servers:
            raise ValueError("tensor_split splits a model across the local CPU and rpc_servers; give rpc_servers")
        if shares and (device or n_gpu_layers or repack):
            raise ValueError("tensor_split takes neither device, n_gpu_layers nor repack (it splits across the "
                             "local CPU and the rpc_servers' devices)")  # fmt: skip
        remote = add_rpc_servers(rpc_servers)
        if remote and device and device.lower() not in (r.lower() for r in remote):
            raise ValueError(
                f"device={device!r} is not a device of rpc_servers ({', '.join(remote)}): the servers would go unused"
            )
        split_devices: list[str] = []
        if remote and not device:
            if len(remote) == 1 and not shares:
                device = remote[0]
            else:
                split_devices = ["CPU", *remote]
        if shares and len(shares) != len(split_devices):
            raise ValueError(
                f"tensor_split has {len(shares)} entries but the model is split across {len(split_devices)} devices "
                f"({', '.join(split_devices)}: the local CPU, then each rpc-server's)"
            )
        self._engine = _core.Engine(
            self.path,
            n_ctx=n_ctx,
            n_threads=n_threads or 0,
            heads=heads_path,
            repack=repack,
            device="" if split_devices else choose_device(n_gpu_layers, device),
            split_devices=split_devices,
            tensor_split=shares,
        )
        # The engine is not reentrant: a second generation while one runs (another thread, or the worker thread of
        # a stream nobody closed) is refused with a clear error instead of corrupting the KV cache.
        self._generating = threading.Lock()
        self.vocab = self._engine.vocab
        self.last_generation: Generation | None = None

    # --- properties -------------------------------------------------------------------------------------------
    @property
    def n_layer(self) -> int:
        return self._engine.n_layer

    @property
    def n_threads(self) -> int:
        """The most threads a pass runs with (given, or :func:`default_threads`)."""
        return self._engine.n_threads

    @property
    def threads_in_use(self) -> int:
        """The threads the last pass ran with: :attr:`n_threads` when it was given; without it, fewer while other
        programs keep some of the CPUs busy (a pass waits at every barrier for a thread that shares its CPU with
        them). Outputs are bitwise the same at any count."""
        return self._engine.threads_in_use

    @property
    def n_embd(self) -> int:
        return self._engine.n_embd

    @property
    def n_vocab(self) -> int:
        return self._engine.n_vocab

    @property
    def n_ctx(self) -> int:
        return self._engine.n_ctx

    @property
    def device(self) -> str:
        """Where the model computes: a ggml device name, or "CPU (mapped file)" for the default path."""
        return str(self._engine.device)

    @property
    def split(self) -> list[tuple[str, int, int]]:
        """For a model split across devices, ``(device, layer_begin, layer_end)`` per range in layer order (the
        layers ``layer_begin <= i < layer_end`` and their KV cache live on ``device``); empty otherwise."""
        return [(str(d), int(b), int(e)) for d, b, e in self._engine.split]

    @property
    def n_repacked(self) -> int:
        """How many weights live in ggml's repacked layout (0 with ``repack=False`` or when none fits)."""
        return int(self._engine.n_repacked)

    @property
    def packed_bytes(self) -> int:
        """Bytes of weights copied into our matmul kernel's own layout at load (0 where the CPU has no such kernel)."""
        return int(self._engine.packed_bytes)

    @property
    def arch(self) -> str:
        return self._engine.arch

    @property
    def exit_layers(self) -> list[int]:
        """Layers with a loaded exit head (empty without heads)."""
        return list(self._engine.exit_layers)

    def load_heads(self, heads: str | os.PathLike[str]) -> None:
        self._engine.load_heads(str(resolve_heads(str(heads), self.path)))

    # --- the KV cache across generations -----------------------------------------------------------------------
    # A generation keeps the KV entries of the longest common prefix of its prompt with `cached_tokens` and prefills
    # only the rest (stats["n_prompt_reused"]); the output is the same as from an empty cache.
    @property
    def cached_tokens(self) -> list[int]:
        """The tokens whose KV entries the cache holds: the last prompt and what was generated after it."""
        return list(self._engine.cached_tokens)

    @property
    def fingerprint(self) -> int:
        """A 64-bit hash of the model's weights; prompt states carry it."""
        return int(self._engine.fingerprint)

    def close(self) -> None:
        """Free the weights, KV cache and threads now rather than when the model is garbage-collected; the model
        cannot be used afterwards (its calls raise :class:`Error`). Closing again does nothing."""
        if isinstance(self._engine, _Closed):
            return
        with self._exclusive("close()"):
            self._engine = self.vocab = _Closed(self.path)

    @contextlib.contextmanager
    def _exclusive(self, what: str) -> Iterator[None]:
        if not self._generating.acquire(blocking=False):
            raise Error(f"this model is generating; call {what} when the generation is over")
        try:
            yield
        finally:
            self._generating.release()

    def reset(self) -> None:
        """Forget the KV cache: the next generation prefills its whole prompt."""
        with self._exclusive("reset()"):
            self._engine.reset()

    def save_state(self) -> PromptState:
        """A snapshot of the KV cache (the tokens of :attr:`cached_tokens` and their KV entries)."""
        with self._exclusive("save_state()"):
            data = self._engine.save_state()
        return PromptState.from_bytes(data)

    def load_state(self, state: PromptState | bytes) -> None:
        """Restore a :meth:`save_state` snapshot (or its bytes) of this model with the same ``n_ctx``; a state of
        another model or n_ctx, or corrupt bytes, raise :class:`Error` and leave the cache as it was."""
        if isinstance(state, (bytes, bytearray, memoryview)):
            try:
                state = PromptState.from_bytes(bytes(state))
            except ValueError as exc:
                raise Error(str(exc)) from exc
        if not isinstance(state, PromptState):
            raise TypeError(f"load_state takes a PromptState or its bytes, got {type(state).__name__}")
        if state.fingerprint != self.fingerprint:
            raise Error(f"the prompt state was saved from another model than {self.path}")
        if state.n_ctx != self.n_ctx:
            raise Error(f"the prompt state was saved with n_ctx {state.n_ctx}, this model has n_ctx {self.n_ctx}")
        with self._exclusive("load_state()"):
            self._engine.load_state(state.data)

    # --- tokenizer --------------------------------------------------------------------------------------------
    def tokenize(self, text: str | bytes, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self.vocab.tokenize(text, add_special, parse_special)

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        return self.vocab.detokenize(list(ids), special)

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[Any] | None = None,
        template: str | None = None,
    ) -> str:
        return render_chat_template(self, messages, add_generation_prompt, tools, template)

    # --- generation -------------------------------------------------------------------------------------------
    def _prompt_ids(self, prompt: str | bytes | Sequence[int]) -> list[int]:
        if isinstance(prompt, (str, bytes)):  # bytes are UTF-8 text, not a list of token ids
            if not prompt:
                raise ValueError("the prompt is empty")
            return self.tokenize(prompt)
        ids = [int(t) for t in prompt]
        if not ids:
            raise ValueError("the prompt is empty")
        return ids

    def _resolve_mode(self, mode: str | Mode | None) -> Mode:
        if mode is None:
            return Mode.adadecode if self.exit_layers else Mode.standard
        resolved = Mode.parse(mode)
        if resolved.uses_heads and not self.exit_layers:
            raise ValueError(f"mode {str(resolved)!r} needs exit heads: pass heads=... or load_heads(...)")
        return resolved

    def config(
        self, max_tokens: int | None = None, temperature: float | None = None, top_k: int | None = None,
        top_p: float | None = None, min_p: float | None = None, seed: int | None = None,
        stop: Sequence[str] | str | None = None, mode: str | Mode | None = None, gamma: float | None = None,
        max_pending: int | None = None, exit_layers: Sequence[int] | None = None, max_draft: int | None = None,
        adaptive_exits: bool | None = None, logits_processor: LogitsProcessor | None = None,
        exits_in_drafts: bool | None = None,
    ) -> GenerationConfig:  # fmt: skip
        """The checked settings of a generation on this model (the keywords of :meth:`generate`); None keeps the
        engine's default (mode: adadecode with heads, else standard; seed: random when sampling). Values this model
        can never use are clamped (a budget or draft beyond the context, top_k beyond the vocabulary); values no
        model can use raise ValueError naming the parameter (the engine's options check them)."""
        o = _core.DecodeOptions()
        o.mode = self._resolve_mode(mode)
        sp = o.sampling  # a view: setting its fields sets o's
        if max_draft is not None:
            o.ngram_options.max_draft = min(int(max_draft), self.n_ctx)
        if max_tokens is not None:  # the context full ends generation, so a larger budget changes nothing
            o.max_tokens = min(int(max_tokens), self.n_ctx)
        if temperature is not None:
            sp.temperature = float(temperature)
        if top_k is not None:  # <= 0 disables top-k; more than the vocabulary is all of it
            sp.top_k = max(0, min(int(top_k), self.n_vocab))
        if top_p is not None:
            sp.top_p = float(top_p)
        if min_p is not None:
            sp.min_p = float(min_p)
        if gamma is not None:
            o.gamma = float(gamma)
        if max_pending is not None:  # more than the context holds can never be pending
            if int(max_pending) < 1:  # the engine's 0 means its default: only None asks for that here
                raise ValueError(f"max_pending must be >= 1, got {max_pending}")
            o.max_pending = min(int(max_pending), self.n_ctx)
        layers = [int(layer) for layer in exit_layers or []]
        if any(not 0 <= layer < 2**31 for layer in layers):  # the engine's int; in-range mistakes it names itself
            raise ValueError(f"exit_layers must be layer numbers with a loaded head {self.exit_layers}, got {layers}")
        o.active_exits = layers
        if adaptive_exits is not None:
            o.adaptive_exits = bool(adaptive_exits)
        if exits_in_drafts is not None:
            o.exits_in_drafts = bool(exits_in_drafts)
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") if sp.temperature > 0 else 0
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        sp.seed = int(seed)
        stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]
        return GenerationConfig(options=o, stop=stops, logits_processor=logits_processor)

    def generate_stream(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = _DEFAULTS.max_tokens,
        temperature: float = _DEFAULTS.sampling.temperature,
        top_k: int = _DEFAULTS.sampling.top_k,
        top_p: float = _DEFAULTS.sampling.top_p,
        min_p: float = _DEFAULTS.sampling.min_p,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        mode: str | None = None,
        gamma: float | None = None,
        max_pending: int | None = None,
        exit_layers: Sequence[int] | None = None,
        max_draft: int | None = None,
        adaptive_exits: bool = _DEFAULTS.adaptive_exits,
        exits_in_drafts: bool = _DEFAULTS.exits_in_drafts,
        logits_processor: LogitsProcessor | None = None,
    ) -> Iterator[str]:
        """Yield the generated text piece by piece (only verified tokens); the full result is then in
        `self.last_generation`. Bad settings raise when the first piece is asked for."""
        config = self.config(
            max_tokens, temperature, top_k, top_p, min_p, seed, stop, mode, gamma, max_pending, exit_layers,
            max_draft, adaptive_exits, logits_processor, exits_in_drafts,
        )  # fmt: skip
        yield from self.run_stream(prompt, config)

    def run_stream(self, prompt: str | Sequence[int], config: GenerationConfig) -> Iterator[str]:
        """:meth:`generate_stream` with its settings made by :meth:`config`."""
        for piece in self._in_thread(lambda emit: self.run(prompt, config, _on_text=emit)):
            if piece:
                yield piece

    def run_tokens(self, prompt: str | Sequence[int], config: GenerationConfig) -> Iterator[int]:
        """The token ids of a generation as they are chosen (the text's stop strings still end it); closing the
        iterator stops the engine at its next token."""
        yield from self._in_thread(lambda emit: self.run(prompt, config, _on_token=emit))

    def _in_thread(self, start: Callable[[Callable[[Any], bool]], Generation]) -> Iterator[Any]:
        """What ``start(emit)`` emits, as an iterator: the generation runs in a thread of its own, and stops at its
        next token once the iterator is closed."""
        items: queue.Queue[tuple[str, Any]] = queue.Queue()
        cancelled = threading.Event()

        def emit(item: Any) -> bool:
            items.put(("item", item))
            return not cancelled.is_set()

        def work() -> None:
            try:
                items.put(("done", start(emit)))
            except BaseException as exc:  # handed to the consumer thread
                items.put(("error", exc))

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            while True:
                kind, value = items.get()
                if kind == "item":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            cancelled.set()
            # The engine stops at its next token; wait for that even through a second Ctrl-C, so that nobody
            # can start another generation on the (non-reentrant) engine while this one still runs.
            interrupt: KeyboardInterrupt | None = None
            while thread.is_alive():
                try:
                    thread.join()
                except KeyboardInterrupt as exc:
                    interrupt = exc
            if interrupt is not None:
                raise interrupt

    def generate(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = _DEFAULTS.max_tokens,
        temperature: float = _DEFAULTS.sampling.temperature,
        top_k: int = _DEFAULTS.sampling.top_k,
        top_p: float = _DEFAULTS.sampling.top_p,
        min_p: float = _DEFAULTS.sampling.min_p,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        mode: str | None = None,
        gamma: float | None = None,
        max_pending: int | None = None,
        exit_layers: Sequence[int] | None = None,
        max_draft: int | None = None,
        adaptive_exits: bool = _DEFAULTS.adaptive_exits,
        exits_in_drafts: bool = _DEFAULTS.exits_in_drafts,
        _on_text: Any = None,
        return_logits: bool = False,
        logits_processor: LogitsProcessor | None = None,
    ) -> Generation:
        """Generate up to `max_tokens` tokens after `prompt` (text or token ids).

        temperature 0 is greedy. `mode` is "standard", "adadecode" (exit heads), "ngram" (prompt-lookup drafts)
        or "adadecode+ngram" (both; default: adadecode when heads are loaded, else standard). The output is
        identical in every mode for greedy decoding, and equal in distribution when sampling. `max_draft` caps the
        tokens one prompt-lookup draft proposes (default 16; the engine picks fewer from measured acceptance).
        `adaptive_exits` lets an exit layer sit out while its early tokens fail verification too often to pay
        (False: every exit layer always checks, as the parity tests' adversarial heads need). `exits_in_drafts`
        lets heads emit while a prompt-lookup draft is in flight (False: they wait until it is verified).
        `stop` strings end generation; the text is cut before the stop string.
        `logits_processor(context, logits)` edits the final-layer logits of a position in place (``context``: the
        int32 ids up to and including it; ``logits``: float32 [n_vocab]) before the next token is chosen or a
        provisional one verified; every mode then chooses from the processed distribution, so the output stays
        the same in every mode. Both arrays are only valid during the call.
        """
        ids = self._prompt_ids(prompt)
        config = self.config(
            max_tokens, temperature, top_k, top_p, min_p, seed, stop, mode, gamma, max_pending, exit_layers,
            max_draft, adaptive_exits, logits_processor, exits_in_drafts,
        )  # fmt: skip
        return self.run(ids, config, return_logits=return_logits, _on_text=_on_text)

    def run(
        self,
        prompt: str | Sequence[int],
        config: GenerationConfig,
        return_logits: bool = False,
        _on_text: Any = None,
        _on_token: Callable[[int], bool] | None = None,
    ) -> Generation:
        """:meth:`generate` with its settings made by :meth:`config`."""
        ids = self._prompt_ids(prompt)
        stops = config.stop
        text_parts: list[str] = []
        length = 0  # characters generated so far
        emitted = 0  # characters already handed to _on_text
        hold = max((len(s) for s in stops), default=1) - 1
        stopped_at: int | None = None
        # The tail of the text a new stop match or the next emission can still touch, starting at window_start:
        # keeping only that makes each token's work independent of how long the generation already is.
        window = ""
        window_start = 0

        def on_token(token: int, piece: str) -> bool:
            nonlocal length, emitted, stopped_at, window, window_start
            text_parts.append(piece)
            if _on_token is not None and not _on_token(token):
                return False
            if not stops and _on_text is None:
                return True
            length += len(piece)
            window += piece
            if stops:
                hits = [i for i in (window.find(s) for s in stops) if i >= 0]
                if hits:
                    stopped_at = window_start + min(hits)
                    if _on_text is not None and stopped_at > emitted:
                        _on_text(window[emitted - window_start : stopped_at - window_start])
                    emitted = stopped_at
                    return False
            keep_going = True
            safe = length - hold if stops else length
            if _on_text is not None and safe > emitted:
                keep_going = bool(_on_text(window[emitted - window_start : safe - window_start]))
                emitted = safe
            # A later match starts after length - hold; text before `emitted` has been handed out.
            cut = min(emitted if _on_text is not None else length, length - hold if stops else length)
            if cut > window_start:
                window = window[cut - window_start :]
                window_start = cut
            return keep_going

        if not self._generating.acquire(blocking=False):
            raise Error("this model is already generating (in another thread, or a stream that was neither "
                        "finished nor closed); it runs one generation at a time")  # fmt: skip
        try:
            out = self._engine.generate(ids, config.options, on_token, return_logits, config.logits_processor)
        finally:
            self._generating.release()
        tail = out["tail"]
        if tail.endswith("\ufffd") and _incomplete_utf8_suffix(self.vocab.detokenize_bytes(list(out["tokens"]), False)):
            # The generation stopped inside a multi-byte character: drop the partial character rather than end the
            # text with a replacement character that the model never produced.
            tail = tail[:-1]
        text = "".join(text_parts) + tail
        finish = out["finish_reason"]
        if stopped_at is not None:
            text = text[:stopped_at]
            finish = "stop"
        elif _on_text is not None and len(text) > emitted:
            _on_text(text[emitted:])
        # The engine's statistics, peak_rss_mib of the whole process: the mapped model, KV cache and Python.
        gen = Generation(
            tokens=list(out["tokens"]), text=text, finish_reason=finish, stats=out["stats"], logits=out.get("logits"),
            token_sources=out["token_sources"],
        )
        self.last_generation = gen
        return gen

    # --- internals for training and tests ---------------------------------------------------------------------
    def hidden_states(self, ids: Sequence[int], layers: Sequence[int]) -> np.ndarray:
        """Residual-stream states after each of `layers` (0 = embeddings, n_layer = last layer, before the final
        norm) for teacher-forced `ids`: array [len(layers), len(ids), n_embd]."""
        return self._engine.hidden_states([int(t) for t in ids], [int(layer) for layer in layers])

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Final-layer logits for every position of teacher-forced `ids`: array [len(ids), n_vocab]."""
        return self._engine.logits([int(t) for t in ids])

    def head_logits(self, index: int, hidden: np.ndarray) -> np.ndarray:
        """Exit head `index` (of `exit_layers`) on residual states after its layer, as decoding computes it: array
        [rows, head vocabulary] for `hidden` [rows, n_embd] (the head vocabulary is the heads file's ``exit.vocab``,
        or the whole vocabulary)."""
        return self._engine.head_logits(int(index), np.ascontiguousarray(hidden, dtype=np.float32))

    def tensor(self, name: str) -> np.ndarray:
        """A weight dequantized to float32, shaped like the PyTorch weight ([out, in] for matrices)."""
        return self._engine.tensor(name)

    def tensor_names(self) -> list[str]:
        return list(self._engine.tensor_names())
