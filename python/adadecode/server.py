"""``adadecode serve``: an OpenAI-compatible HTTP server (FastAPI + uvicorn; ``pip install "adadecode[server]"``).

Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (both stream server-sent
events with ``"stream": true``), ``GET /health`` and ``GET /metrics`` (Prometheus text format).

The engine is not reentrant, so one worker thread runs the requests one at a time, in arrival order; the event loop
only moves chunks between that thread and the clients. A client that disconnects, while queued or mid-stream,
cancels its generation (the engine stops at its next token). Limits (``max_tokens``, prompt tokens, body bytes,
queued requests) answer 4xx with an OpenAI-format JSON error body ``{"error": {"message", "type", "param",
"code"}}``.
"""

import argparse
import asyncio
import base64
import contextlib
import functools
import hmac
import ipaddress
import itertools
import json
import os
import queue
import socket
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import tools as tool_mod
from ._version import __version__
from .api import STATS_KEY, InvalidRequestError, Llama
from .cli_common import (
    EXIT_OK,
    HelpFormatter,
    UsageError,
    add_chat_format_option,
    add_device_options,
    model_options,
)
from .prompt_cache import LlamaRAMCache

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send


@dataclass
class Limits:
    """What one request may ask for; anything over answers 4xx."""

    max_tokens: int = 4096  # generated tokens per request (also the default for chat requests without max_tokens)
    max_prompt_tokens: int | None = None  # None: the context size is the only limit
    max_body_bytes: int = 1 << 20
    max_queue: int = 64  # requests waiting or running at once
    max_choices: int = 16  # choices per request (n, times the prompts of a /v1/completions batch): they run in turn


class ApiError(Exception):  # noqa: N818 - OpenAI's name for these
    """An error answered to the client as OpenAI's JSON error object."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# --------------------------------------------------------------------------------------------------------------------
# metrics


class Metrics:
    """Counters for /metrics; updated from the worker thread and the event loop, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.generations = 0
        self.cancelled = 0
        self.prompt_tokens = 0
        self.prompt_tokens_reused = 0  # ... whose KV entries were kept from an earlier request
        self.generated_tokens = 0
        self.prefill_seconds = 0.0
        self.decode_seconds = 0.0
        self.verified = 0  # early tokens checked against the full model
        self.accepted = 0  # ... of which right: emitted early for real
        self.ngram_accepted = 0  # accepted tokens that came from prompt-lookup drafts rather than exit heads
        self.rollbacks = 0

    def count_request(self, path: str, status: int) -> None:
        with self._lock:
            self.requests[(path, status)] = self.requests.get((path, status), 0) + 1

    def count_generation(self, stats: dict[str, Any], n_tokens: int, cancelled: bool) -> None:
        with self._lock:
            self.generations += 1
            self.cancelled += int(cancelled)
            self.prompt_tokens += int(stats.get("n_prompt", 0))
            self.prompt_tokens_reused += int(stats.get("n_prompt_reused", 0))
            self.generated_tokens += n_tokens
            self.prefill_seconds += float(stats.get("prefill_seconds", 0.0))
            self.decode_seconds += float(stats.get("decode_seconds", 0.0))
            self.verified += int(stats.get("n_verified", 0))
            self.accepted += int(stats.get("n_accepted", 0))
            self.ngram_accepted += int(stats.get("ngram_accepted", 0))
            self.rollbacks += int(stats.get("rollbacks", 0))

    def render(self, queued: int, busy: bool) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP adadecode_{name} {help_text}")
            lines.append(f"# TYPE adadecode_{name} {kind}")
            for labels, value in samples:
                lines.append(f"adadecode_{name}{labels} {value}")

        with self._lock:
            requests = [(f'{{path="{p}",code="{c}"}}', n) for (p, c), n in sorted(self.requests.items())]
            metric("requests_total", "counter", "HTTP requests answered, by path and status code.", requests)
            metric("generations_total", "counter", "Generations run by the engine.", [("", self.generations)])
            metric(
                "generations_cancelled_total",
                "counter",
                "Generations stopped because the client went away.",
                [("", self.cancelled)],
            )
            metric("prompt_tokens_total", "counter", "Prompt tokens processed.", [("", self.prompt_tokens)])
            metric(
                "prompt_tokens_reused_total",
                "counter",
                "Prompt tokens whose KV entries were kept from an earlier request (not computed again).",
                [("", self.prompt_tokens_reused)],
            )
            metric(
                "prompt_tokens_computed_total",
                "counter",
                "Prompt tokens run through the model (prefilled).",
                [("", self.prompt_tokens - self.prompt_tokens_reused)],
            )
            metric("generated_tokens_total", "counter", "Tokens generated.", [("", self.generated_tokens)])
            metric("prefill_seconds_total", "counter", "Seconds spent on prompts.", [("", self.prefill_seconds)])
            metric("decode_seconds_total", "counter", "Seconds spent generating.", [("", self.decode_seconds)])
            metric(
                "early_verified_tokens_total",
                "counter",
                "Tokens emitted early by an exit head and verified.",
                [("", self.verified)],
            )
            metric(
                "early_accepted_tokens_total",
                "counter",
                "Early tokens that verification accepted.",
                [("", self.accepted)],
            )
            metric(
                "rollbacks_total", "counter", "KV-cache rollbacks after a rejected early token.", [("", self.rollbacks)]
            )
            tps = self.generated_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0
            metric(
                "tokens_per_second",
                "gauge",
                "Generated tokens per second of decoding, over all generations.",
                [("", float(tps))],
            )
            exits = self.accepted - self.ngram_accepted
            early = exits / self.generated_tokens if self.generated_tokens else 0.0
            drafted = self.ngram_accepted / self.generated_tokens if self.generated_tokens else 0.0
            metric(
                "early_exit_fraction",
                "gauge",
                "Fraction of generated tokens that left at an exit head.",
                [("", float(early))],
            )
            metric(
                "ngram_fraction",
                "gauge",
                "Fraction of generated tokens that came from accepted prompt-lookup drafts (ngram modes).",
                [("", float(drafted))],
            )
            accept = self.accepted / self.verified if self.verified else 0.0
            metric(
                "accept_rate", "gauge", "Fraction of early tokens that verification accepted.", [("", float(accept))]
            )
        metric("queued_requests", "gauge", "Requests waiting for or running on the engine.", [("", queued)])
        metric("generating", "gauge", "1 while the engine is running a request.", [("", int(busy))])
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# the engine's thread


class _Job:
    def __init__(self, run: Callable[[threading.Event], None]) -> None:
        self.run = run
        self.cancel = threading.Event()


class EngineWorker:
    """Runs jobs one at a time, in order, on one thread, which is the only one that touches the model."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0
        self.busy = False
        self._thread = threading.Thread(target=self._loop, name="adadecode-engine", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, run: Callable[[threading.Event], None]) -> threading.Event:
        """Queue ``run(cancel)``; returns ``cancel``, which the caller sets when nobody waits for the result."""
        with self._lock:
            if self._pending >= self.max_queue:
                raise ApiError(
                    429,
                    f"the server has {self._pending} requests queued, its limit; retry later",
                    kind="rate_limit_error",
                    code="queue_full",
                )
            self._pending += 1
        job = _Job(run)
        self._jobs.put(job)
        return job.cancel

    def close(self) -> None:
        self._jobs.put(None)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self.busy = True
                job.run(job.cancel)  # a job reports its own errors; see _Dispatch
            finally:
                self.busy = False
                with self._lock:
                    self._pending -= 1


class _Dispatch:
    """One request's trip through the worker: events ("start", "chunk", "result", "error", "end") come back to the
    event loop through an asyncio queue."""

    def __init__(self, server: "_Server", call: Callable[[], Any], stream: bool) -> None:
        self.server = server
        self.call = call
        self.stream = stream
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.cancel = server.worker.submit(self._work)

    def _post(self, kind: str, value: Any = None) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def _work(self, cancel: threading.Event) -> None:
        if cancel.is_set():  # the client left while the request was queued
            self._post("end")
            return
        model = self.server.llm.model
        before = model.last_generation
        cancelled = False
        try:
            result = self.call()
            if not self.stream:
                self._post("result", result)
            else:
                self._post("start")
                try:
                    for chunk in result:
                        if cancel.is_set():
                            cancelled = True
                            break
                        self._post("chunk", chunk)
                finally:
                    result.close()  # stops the engine at its next token when we broke out early
        except BaseException as exc:  # handed to the event loop, which answers the client
            self._post("error", exc)
        finally:
            gen = model.last_generation
            if gen is not None and gen is not before:
                self.server.metrics.count_generation(gen.stats, len(gen.tokens), cancelled)
            self._post("end")

    async def first(self, request: Any) -> tuple[str, Any]:
        """The first event; while waiting (queued or generating), a client that goes away cancels the job."""
        getter = asyncio.ensure_future(self.events.get())
        while True:
            done, _ = await asyncio.wait({getter}, timeout=0.25)
            if done:
                return getter.result()
            if await request.is_disconnected():
                self.cancel.set()
                getter.cancel()
                return ("disconnected", None)


class _Closing:
    """An iterator over a generator of chunks whose close() closes the underlying stream too (and `also`, a stream
    the generator would close once started: it may be closed before it starts)."""

    def __init__(self, gen: Any, also: Any = None) -> None:
        self._gen = gen
        self._also = also

    def __iter__(self) -> Any:
        return self._gen

    def close(self) -> None:
        self._gen.close()
        if self._also is not None:
            self._also.close()


def _as_api_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InvalidRequestError):
        return ApiError(400, str(exc), param=exc.param, code=exc.code)
    if isinstance(exc, ValueError):
        return ApiError(400, str(exc))
    return ApiError(500, f"{type(exc).__name__}: {exc}", kind="server_error")


# --------------------------------------------------------------------------------------------------------------------
# HTTP


_PATHS = (
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/completion",
    "/infill",
    "/tokenize",
    "/detokenize",
    "/apply-template",
    "/props",
    "/embedding",
)


def _read_as_json(scope: "Scope") -> "Scope":
    """A POST body is read as JSON whatever its Content-Type says, as llama-server reads it: `curl -d` sends
    application/x-www-form-urlencoded, and FastAPI then answered "Input should be a valid dictionary"."""
    headers = scope.get("headers", [])
    if any(name == b"content-type" and b"json" in value.lower() for name, value in headers):
        return scope
    others = [h for h in headers if h[0] != b"content-type"]
    return {**scope, "headers": [*others, (b"content-type", b"application/json")]}


class _Gate:
    """The outermost ASGI layer: refuses request bodies over the limit with 413 (also those sent without a
    Content-Length) and counts the answered requests by path and status for /metrics. A plain ASGI wrapper rather
    than an HTTP middleware, so that streamed responses and client disconnects pass through untouched."""

    def __init__(self, app: Any, max_bytes: int, metrics: Metrics, api_key: str | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.api_key = api_key

    def _authorized(self, scope: "Scope") -> bool:
        if not self.api_key or scope.get("path") == "/health":
            return True
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                return hmac.compare_digest(value, b"Bearer " + self.api_key.encode())
        return False

    async def _refuse(self, send: Any, err: ApiError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = json.dumps(err.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": err.status, "headers": headers + (extra or [])})
        await send({"type": "http.response.body", "body": body})

    def _too_large(self) -> ApiError:
        return ApiError(
            413, f"the request body is larger than the limit of {self.max_bytes} bytes", code="request_too_large"
        )

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.exceptions import HTTPException as StarletteHTTPException

        status = 0

        async def counting_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            if not self._authorized(scope):
                err = ApiError(401, "invalid or missing API key (Authorization: Bearer <key>)",
                               kind="authentication_error", code="invalid_api_key")  # fmt: skip
                await self._refuse(counting_send, err, [(b"www-authenticate", b"Bearer")])
                return
            for name, value in scope.get("headers", []):
                if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                    await self._refuse(counting_send, self._too_large())
                    return
            if scope.get("method") == "POST":
                scope = _read_as_json(scope)
            received = 0

            async def limited_receive() -> Any:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_bytes:
                        # FastAPI passes HTTPExceptions from reading the body on to the app's handler.
                        raise StarletteHTTPException(413, detail=self._too_large().message)
                return message

            await self.app(scope, limited_receive, counting_send)
        finally:
            if status:
                path = scope.get("path", "")
                # Only our own paths get a label of their own: a scanner must not grow /metrics without bound.
                self.metrics.count_request(path if path in _PATHS else "other", status)


class _Server:
    def __init__(self, llm: Llama, limits: Limits) -> None:
        self.llm = llm
        self.limits = limits
        self.metrics = Metrics()
        self.worker = EngineWorker(limits.max_queue)
        self.started = time.time()


def create_app(llm: Llama, limits: Limits | None = None, api_key: str | None = None) -> Any:
    """The ASGI application serving ``llm`` (FastAPI inside a small gate for body limits and request counts); run it
    with uvicorn, as ``adadecode serve`` does."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    limits = limits or Limits()
    if limits.max_prompt_tokens is not None:
        llm.max_prompt_tokens = limits.max_prompt_tokens
    server = _Server(llm, limits)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        server.worker.close()

    app = FastAPI(
        title="adadecode",
        summary="OpenAI-compatible API on the adadecode engine",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.adadecode = server
    # What a request may name as its model (or leave out): the alias /v1/models lists, or the GGUF's file name.
    served_names = {None, "", llm.model_alias, Path(llm.model.path).name, llm.model.path}

    class _Sampling(BaseModel):
        # Unknown fields are refused with a 400 naming them: a field we silently dropped would change the output
        # the client asked for. The harmless ones (bookkeeping that does not affect the output) are listed here.
        model_config = ConfigDict(extra="forbid")
        model: str | None = None
        max_tokens: int | None = Field(default=None, description="tokens to generate at most")
        n_predict: int | None = Field(default=None, description="llama-server's name for max_tokens")
        temperature: float = 0.8
        top_p: float = 0.95
        top_k: int = 40
        min_p: float = 0.05
        typical_p: float = 1.0
        tfs_z: float = 1.0
        mirostat: int = 0
        mirostat_mode: int = 0
        mirostat_tau: float = 5.0
        mirostat_eta: float = 0.1
        seed: int | None = None
        stop: str | list[str] | None = None
        stream: bool = False
        stream_options: dict[str, Any] | None = None
        n: int = 1
        frequency_penalty: float = 0.0
        presence_penalty: float = 0.0
        repeat_penalty: float = 1.0
        repeat_last_n: int | None = None
        logit_bias: dict[str, float] | list[list[Any]] | None = None
        grammar: str | None = None
        json_schema: dict[str, Any] | None = None
        response_format: dict[str, Any] | None = None
        n_probs: int = 0
        mode: str | None = None
        gamma: float | None = None
        max_pending: int | None = None
        max_draft: int | None = None
        adaptive_exits: bool | None = None
        # harmless: they do not change the output
        user: str | None = None
        cache_prompt: bool = True
        id_slot: int | None = None
        metadata: dict[str, Any] | None = None
        store: bool | None = None

        def generation_kwargs(self, default_max_tokens: int) -> dict[str, Any]:
            if self.model not in served_names:
                raise ApiError(
                    404,
                    f"the model {self.model!r} does not exist: this server serves {llm.model_alias!r} (/v1/models)",
                    param="model",
                    code="model_not_found",
                )
            if not 1 <= self.n <= limits.max_choices:
                raise ApiError(400, f"n must be in [1, {limits.max_choices}], got {self.n}", param="n")
            if self.stream_options is not None:
                unknown = set(self.stream_options) - {"include_usage"}
                if unknown or not self.stream:
                    what = f"unknown stream_options {sorted(unknown)}" if unknown else "stream_options needs stream"
                    raise ApiError(400, what, param="stream_options")
            max_tokens = self.max_tokens
            if max_tokens is None:  # llama-server's n_predict -1: as many as allowed
                n = self.n_predict
                max_tokens = default_max_tokens if n is None or n < 0 else n
            if not 1 <= max_tokens <= limits.max_tokens:
                raise ApiError(
                    400, f"max_tokens must be in [1, {limits.max_tokens}], got {max_tokens}", param="max_tokens"
                )
            bias = self.logit_bias
            if isinstance(bias, list):  # llama-server's [[token, bias], ...]; false bans the token
                try:
                    bias = {str(int(t)): (-1e30 if b is False else float(b)) for t, b in bias}
                except (TypeError, ValueError) as exc:
                    raise ApiError(400, f"logit_bias: {exc}", param="logit_bias") from exc
            return {
                "max_tokens": max_tokens,
                "temperature": self.temperature,
                "top_p": self.top_p,
                "top_k": self.top_k,
                "min_p": self.min_p,
                "typical_p": self.typical_p,
                "tfs_z": self.tfs_z,
                "mirostat_mode": self.mirostat_mode or self.mirostat,
                "mirostat_tau": self.mirostat_tau,
                "mirostat_eta": self.mirostat_eta,
                "seed": self.seed,
                "stop": self.stop,
                "stream": self.stream,
                "frequency_penalty": self.frequency_penalty,
                "presence_penalty": self.presence_penalty,
                "repeat_penalty": self.repeat_penalty,
                "repeat_last_n": self.repeat_last_n,
                "logit_bias": bias,
                "grammar": self.grammar,
                "json_schema": self.json_schema,
                "response_format": self.response_format,
                "mode": self.mode,
                "gamma": self.gamma,
                "max_pending": self.max_pending,
                "max_draft": self.max_draft,
                "adaptive_exits": self.adaptive_exits,
            }

        def include_usage(self) -> bool:
            return bool((self.stream_options or {}).get("include_usage"))

    class CompletionRequest(_Sampling):
        prompt: str | list[int] | list[str | list[int]]  # one prompt, or a batch (OpenAI: of texts or of token lists)
        echo: bool = False
        suffix: str | None = None
        logprobs: int | None = None

    class ChatMessage(BaseModel):
        model_config = ConfigDict(extra="forbid")
        role: str
        content: str | list[dict[str, Any]] | None = None
        name: str | None = None
        tool_calls: list[dict[str, Any]] | None = None
        tool_call_id: str | None = None
        # what the openai client writes back from a response message; only their empty values are accepted
        refusal: None = None
        annotations: list[Any] | None = None
        audio: None = None
        function_call: None = None

    class ChatRequest(_Sampling):
        messages: list[ChatMessage]
        max_completion_tokens: int | None = None
        tools: list[dict[str, Any]] | None = None
        tool_choice: str | dict[str, Any] | None = None
        parallel_tool_calls: bool | None = None
        functions: list[dict[str, Any]] | None = None
        function_call: str | dict[str, Any] | None = None
        logprobs: bool | None = None
        top_logprobs: int | None = None

    class NativeCompletion(_Sampling):  # llama-server's /completion and /infill
        prompt: str | list[int] = ""
        input_prefix: str | None = None
        input_suffix: str | None = None
        input_extra: list[dict[str, Any]] | None = None

    class EmbeddingRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        input: str | list[str] | None = None
        content: str | list[str] | None = None  # llama-server's /embedding
        model: str | None = None
        encoding_format: str = "float"
        user: str | None = None

    class TokenizeRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        content: str
        add_special: bool = False
        with_pieces: bool = False

    class DetokenizeRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        tokens: list[int]

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown paths, wrong methods, unreadable bodies: the same error format as everything else.
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        message = str(exc.detail)
        cause = exc.__cause__
        if isinstance(cause, UnicodeDecodeError):  # FastAPI's "error parsing the body" says nothing of why
            bad = cause.object[cause.start : cause.start + 1].hex()
            message = f"the request body is not valid UTF-8: byte 0x{bad} at offset {cause.start} ({cause.reason})"
        err = ApiError(exc.status_code, message, kind=kind)
        return JSONResponse(err.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        param = None
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                detail = (e.get("ctx") or {}).get("error", "")
                err = ApiError(400, f"the request body is not valid JSON ({detail})" if detail else "bad JSON")
                return JSONResponse(err.body(), status_code=400)
            loc = [str(x) for x in e.get("loc", ()) if x != "body"]
            param = param or (loc[0] if loc else None)
            problems.append(f"{'.'.join(loc) or 'body'}: {e.get('msg', 'invalid')}")
        err = ApiError(400, "invalid request: " + "; ".join(problems), param=param)
        return JSONResponse(err.body(), status_code=400)

    async def _answer(request: Request, call: Callable[[], Any], stream: bool) -> Any:
        dispatch = _Dispatch(server, call, stream)
        kind, value = await dispatch.first(request)
        if kind == "disconnected":
            return Response(status_code=499)  # nobody reads it; nginx's code for "client closed request"
        if kind == "error":
            err = _as_api_error(value)
            return JSONResponse(err.body(), status_code=err.status)
        if kind == "result":
            return JSONResponse(value)
        if kind == "end":  # cancelled before it ran
            return Response(status_code=499)

        async def events() -> AsyncIterator[bytes]:
            while True:
                kind, value = await dispatch.events.get()
                if kind == "chunk":
                    yield b"data: " + json.dumps(value).encode() + b"\n\n"
                elif kind == "error":
                    yield b"data: " + json.dumps(_as_api_error(value).body()).encode() + b"\n\n"
                elif kind == "end":
                    yield b"data: [DONE]\n\n"
                    return

        return _EventStream(events(), dispatch.cancel)

    class _EventStream(StreamingResponse):
        """Server-sent events; however the response ends (done, client gone, server stopping), the job is told."""

        def __init__(self, content: AsyncIterator[bytes], cancel: threading.Event) -> None:
            super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            self._cancel = cancel

        async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                self._cancel.set()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": llm.model_alias, "queued": server.worker.pending}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        m = llm.model
        card = {
            "id": llm.model_alias,
            "object": "model",
            "created": int(server.started),
            "owned_by": "adadecode",
            "meta": {
                "path": m.path,
                "arch": m.arch,
                "n_ctx": m.n_ctx,
                "n_layer": m.n_layer,
                "exit_layers": m.exit_layers,
            },
        }
        return {"object": "list", "data": [card]}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        text = server.metrics.render(server.worker.pending, server.worker.busy)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    def _count_generation() -> None:
        """Counts a choice's generation in /metrics when another choice follows it (_Dispatch counts the last)."""
        gen = llm.model.last_generation
        if gen is not None:
            server.metrics.count_generation(gen.stats, len(gen.tokens), False)

    def _add_usage(total: dict[str, int] | None, usage: dict[str, Any], count_prompt: bool) -> dict[str, int]:
        """OpenAI's usage of several choices: a prompt's tokens once however many choices it has, every choice's
        completion tokens."""
        total = dict(total or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        if count_prompt:
            total["prompt_tokens"] += int(usage.get("prompt_tokens", 0))
        total["completion_tokens"] += int(usage.get("completion_tokens", 0))
        total["total_tokens"] = total["prompt_tokens"] + total["completion_tokens"]
        return total

    def _choice_calls(prompts: list[Any], n: int, kwargs: dict[str, Any], run: Callable[..., Any]) -> list[Any]:
        """One call per choice, in OpenAI's order of choice indices: prompt by prompt, n choices each. A seed makes
        every choice reproducible, and each of a prompt's n choices samples with its own (seed + j)."""
        seed = kwargs.get("seed")
        calls = []
        for prompt in prompts:
            for j in range(n):
                seeded = kwargs if seed is None or j == 0 else {**kwargs, "seed": (seed + j) % 2**64}
                calls.append(functools.partial(run, prompt, **seeded))
        return calls

    def _merged(calls: list[Callable[[], dict[str, Any]]], n: int) -> dict[str, Any]:
        """The choices run one after another, answered as one response; with several, each choice carries its own
        engine statistics (the top level keeps the first's)."""
        results = []
        for i, call in enumerate(calls):
            results.append(call())
            if i + 1 < len(calls):
                _count_generation()
        if len(results) == 1:
            return results[0]
        choices: list[dict[str, Any]] = []
        usage = None
        for i, result in enumerate(results):
            choices += [{**c, "index": i, STATS_KEY: result.get(STATS_KEY)} for c in result["choices"]]
            usage = _add_usage(usage, result.get("usage") or {}, count_prompt=i % n == 0)
        return {**results[0], "choices": choices, "usage": usage}

    def _streamed_choices(first: Any, calls: list[Callable[[], Any]], n: int, include_usage: bool) -> Any:
        """The choices' chunks in turn, each under its index and the first choice's id; the usage of all of them only
        in a separate last chunk with no choices, and only when asked for (OpenAI's format)."""
        meta: dict[str, Any] | None = None
        usage = None
        for i, chunks in enumerate(itertools.chain([first], (call() for call in calls))):
            choice_usage = None
            try:
                for chunk in chunks:
                    choice_usage = chunk.pop("usage", choice_usage)
                    meta = meta or {k: chunk[k] for k in ("id", "object", "created", "model")}
                    chunk.update(id=meta["id"], created=meta["created"])
                    for choice in chunk["choices"]:
                        choice["index"] = i
                    yield chunk
            finally:
                chunks.close()
            if choice_usage is not None:
                usage = _add_usage(usage, choice_usage, count_prompt=i % n == 0)
            if i < len(calls):
                _count_generation()
        if include_usage and usage is not None and meta is not None:
            yield {**meta, "choices": [], "usage": usage}

    def _choices(calls: list[Callable[[], Any]], n: int, stream: bool, include_usage: bool) -> Callable[[], Any]:
        if not stream:
            return lambda: _merged(calls, n)

        def run() -> Any:
            first = calls[0]()  # bad settings raise here, before the response starts: a 4xx, not an event
            return _Closing(_streamed_choices(first, calls[1:], n, include_usage), first)

        return run

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        kwargs = body.generation_kwargs(default_max_tokens=16)
        kwargs.update(echo=body.echo, suffix=body.suffix, logprobs=body.logprobs if body.logprobs else
                      (body.n_probs or None))  # fmt: skip

        batch = isinstance(body.prompt, list) and bool(body.prompt) and not isinstance(body.prompt[0], int)
        prompts = list(body.prompt) if batch else [body.prompt]
        if len(prompts) * body.n > limits.max_choices:
            raise ApiError(
                400,
                f"{len(prompts)} prompts x n={body.n} is {len(prompts) * body.n} choices, over this server's "
                f"{limits.max_choices} per request",
                param="prompt" if batch else "n",
            )
        calls = _choice_calls(prompts, body.n, kwargs, llm.create_completion)
        return await _answer(request, _choices(calls, body.n, body.stream, body.include_usage()), body.stream)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        if body.max_tokens is None:
            body.max_tokens = body.max_completion_tokens
        kwargs = body.generation_kwargs(default_max_tokens=limits.max_tokens)
        kwargs.update(
            tools=body.tools,
            tool_choice=body.tool_choice,
            functions=body.functions,
            function_call=body.function_call,
            parallel_tool_calls=body.parallel_tool_calls is not False,
            logprobs=body.logprobs or bool(body.n_probs) or None,
            top_logprobs=body.top_logprobs if body.top_logprobs is not None else (body.n_probs or None),
        )
        messages = [m.model_dump(exclude_none=True) for m in body.messages]  # fmt: skip

        calls = _choice_calls([messages], body.n, kwargs, llm.create_chat_completion)
        return await _answer(request, _choices(calls, body.n, body.stream, body.include_usage()), body.stream)

    def _native(result: dict[str, Any], n_prompt_default: int = 0) -> dict[str, Any]:
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        stats = result.get(STATS_KEY) or {}
        return {
            "content": choice["text"],
            "stop": True,
            "model": result["model"],
            "tokens_predicted": usage.get("completion_tokens", 0),
            "tokens_evaluated": usage.get("prompt_tokens", n_prompt_default),
            "stop_type": "limit" if choice["finish_reason"] == "length" else "eos",
            "timings": {
                "prompt_ms": 1e3 * float(stats.get("prefill_seconds", 0.0)),
                "predicted_ms": 1e3 * float(stats.get("decode_seconds", 0.0)),
                "predicted_per_second": float(stats.get("tokens_per_second", 0.0)),
            },
            STATS_KEY: stats,
        }

    def _native_chunks(chunks: Any) -> Any:
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                if choice["finish_reason"] is None:
                    yield {"content": choice["text"], "stop": False}
                else:
                    yield _native(chunk)
        finally:
            chunks.close()

    async def _native_completion(body: NativeCompletion, request: Request, infill: bool) -> Any:
        kwargs = body.generation_kwargs(default_max_tokens=limits.max_tokens)
        if body.n != 1:  # llama-server's native endpoints answer one completion
            raise ApiError(400, f"n must be 1 here (several choices: /v1/completions), got {body.n}", param="n")
        if body.n_probs:
            kwargs["logprobs"] = body.n_probs
        if body.input_extra:
            raise ApiError(400, "input_extra is not supported", param="input_extra")
        if infill:
            prefix = body.input_prefix or ""
            suffix = body.input_suffix or ""
            prompt: Any = prefix + (body.prompt if isinstance(body.prompt, str) else "")
            kwargs["suffix"] = suffix
        else:
            if body.input_prefix is not None or body.input_suffix is not None:
                raise ApiError(400, "input_prefix/input_suffix belong to /infill", param="input_prefix")
            prompt = body.prompt

        def call() -> Any:
            out = llm.create_completion(prompt, **kwargs)
            return _Closing(_native_chunks(out)) if body.stream else _native(out)

        return await _answer(request, call, body.stream)

    @app.post("/completion")
    @app.post("/completions")
    async def native_completion(body: NativeCompletion, request: Request) -> Any:
        return await _native_completion(body, request, infill=False)

    @app.post("/infill")
    async def infill(body: NativeCompletion, request: Request) -> Any:
        return await _native_completion(body, request, infill=True)

    class ApplyTemplateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        messages: list[ChatMessage]
        tools: list[dict[str, Any]] | None = None

    @app.post("/apply-template")
    async def apply_template(body: ApplyTemplateRequest) -> dict[str, Any]:
        """llama-server's: the chat template's text of a conversation, without generating."""
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        try:
            tools, _ = tool_mod.normalize(body.tools, None, token_id=llm.model.vocab.token_id)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="tools") from exc
        try:
            return {"prompt": llm.chat_prompt_text(messages, tools)}
        except InvalidRequestError as exc:
            raise _as_api_error(exc) from exc

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        ids = llm.model.tokenize(body.content, add_special=body.add_special, parse_special=True)
        if body.with_pieces:
            pieces = [{"id": t, "piece": llm.model.vocab.token_to_piece(t, True).decode("utf-8", "replace")}
                      for t in ids]  # fmt: skip
            return {"tokens": pieces}
        return {"tokens": ids}

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        bad = [t for t in body.tokens if not 0 <= t < llm.model.n_vocab]
        if bad:
            raise ApiError(400, f"token ids must be in [0, {llm.model.n_vocab}), got {bad[:5]}", param="tokens")
        return {"content": llm.model.detokenize(body.tokens)}

    @app.get("/props")
    async def props() -> dict[str, Any]:
        m = llm.model
        return {
            "default_generation_settings": {"n_ctx": m.n_ctx, "model": llm.model_alias, "temperature": 0.8,
                                            "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_last_n": 64,
                                            "repeat_penalty": 1.0},
            "total_slots": 1,
            "model_path": m.path,
            "chat_template": m.vocab.chat_template,
            "build_info": f"adadecode {__version__}",
        }  # fmt: skip

    def _embed_inputs(body: EmbeddingRequest) -> list[str]:
        given = body.input if body.input is not None else body.content
        if given is None:
            raise ApiError(400, "input is required", param="input")
        if body.encoding_format not in ("float", "base64"):
            raise ApiError(400, "encoding_format must be 'float' or 'base64'", param="encoding_format")
        if body.model not in served_names:
            raise ApiError(404, f"the model {body.model!r} does not exist", param="model", code="model_not_found")
        return [given] if isinstance(given, str) else list(given)

    @app.post("/v1/embeddings")
    @app.post("/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
        texts = _embed_inputs(body)

        def call() -> Any:
            out = llm.create_embedding(texts, model=body.model)
            if body.encoding_format == "base64":  # what the openai client asks for by default: float32 bytes
                for item in out["data"]:
                    v = item["embedding"]
                    item["embedding"] = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")
            return out

        return await _answer(request, call, False)

    @app.post("/embedding")
    async def native_embedding(body: EmbeddingRequest, request: Request) -> Any:
        texts = _embed_inputs(body)

        def call() -> Any:
            return [{"index": i, "embedding": v} for i, v in enumerate(llm.embed(texts))]

        return await _answer(request, call, False)

    return _Gate(app, limits.max_body_bytes, server.metrics, api_key)


# --------------------------------------------------------------------------------------------------------------------
# command line


def add_serve_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        parents=parents,
        formatter_class=HelpFormatter,
        help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve a model over HTTP with the OpenAI API: /v1/models, /v1/completions, /v1/chat/completions "
        "(streaming with server-sent events), /v1/embeddings; llama-server's /completion, /infill, /tokenize, "
        "/detokenize, /apply-template, /props and /embedding; /health and /metrics (Prometheus). Requests run one at "
        'a time in arrival order; responses carry the engine\'s statistics under the key "adadecode". Needs the server '
        "extra: pip install 'adadecode[server]'.",
        epilog="Example:\n  adadecode serve -m smollm2-135m --heads auto --port 8080\n"
        "  curl localhost:8080/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        '       -d \'{"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 32}\'',
    )
    p.add_argument(
        "-m",
        "--model",
        required=True,
        metavar="MODEL",
        help="GGUF file, or a known model name that is fetched on first use",
    )
    p.add_argument(
        "--heads",
        metavar="H",
        default=None,
        help="exit heads for adaptive layer-parallel decoding: a sidecar GGUF, a shipped heads name, or "
        "'auto' for the heads shipped for this model (default: none, standard decoding)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8080, help="TCP port to listen on")
    p.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on every request but /health (default: $ADADECODE_API_KEY, or none)",
    )
    p.add_argument(
        "-t", "--threads", type=int, default=None, metavar="N", help="CPU threads (default: one per core it may use)"
    )
    p.add_argument("-c", "--ctx-size", type=int, default=4096, metavar="N", help="context size in tokens")
    add_device_options(p)
    add_chat_format_option(p)
    p.add_argument(
        "--alias",
        default=None,
        metavar="NAME",
        help="model name reported by /v1/models and in responses (default: the file name)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=4096,
        metavar="N",
        help="largest max_tokens a request may ask for, also what chat requests without max_tokens get "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=None,
        metavar="N",
        help="longest prompt in tokens (default: context size - 1)",
    )
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, metavar="N", help="largest request body")
    p.add_argument(
        "--cache-ram",
        type=int,
        default=None,
        metavar="MiB",
        help="keep prompt states (KV caches) of earlier requests in up to this much memory, so that several "
        "conversations taking turns each skip their shared prefix (default: only the last request's is kept)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=64,
        metavar="N",
        help="requests waiting or running at once; more are answered 429",
    )
    p.add_argument(
        "--max-choices",
        type=int,
        default=16,
        metavar="N",
        help="choices one request may ask for (n, times the prompts of a /v1/completions batch); they run one after "
        "another",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn's log level",
    )
    p.set_defaults(func=cmd_serve)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def _check_listen(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UsageError(f"cannot resolve --host {host}: {exc.strerror or exc}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind(address)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def cmd_serve(args: argparse.Namespace) -> int:
    for flag, value, low in (
        ("--port", args.port, 0),
        ("-c/--ctx-size", args.ctx_size, 1),
        ("--max-tokens", args.max_tokens, 1),
        ("--max-body-bytes", args.max_body_bytes, 1),
        ("--max-queue", args.max_queue, 1),
        ("--max-choices", args.max_choices, 1),
    ):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}, got {value}")
    if args.port > 65535:
        raise UsageError(f"--port must be at most 65535, got {args.port}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"-t/--threads must be at least 1, got {args.threads}")
    if args.max_prompt_tokens is not None and args.max_prompt_tokens < 1:
        raise UsageError(f"--max-prompt-tokens must be at least 1, got {args.max_prompt_tokens}")
    if args.cache_ram is not None and args.cache_ram < 1:
        raise UsageError(f"--cache-ram must be at least 1 (MiB), got {args.cache_ram}")
    try:
        import uvicorn
    except ImportError as exc:
        raise UsageError(f"'adadecode serve' needs the server extra: pip install 'adadecode[server]' ({exc})") from exc
    _check_listen(args.host, args.port)  # before the model loads: a busy port is a one-line error, not a traceback
    cache = LlamaRAMCache(args.cache_ram << 20) if args.cache_ram is not None else None
    llm = Llama(args.model, model_alias=args.alias, cache=cache, chat_format=args.chat_format, **model_options(args))
    limits = Limits(
        max_tokens=args.max_tokens,
        max_prompt_tokens=args.max_prompt_tokens,
        max_body_bytes=args.max_body_bytes,
        max_queue=args.max_queue,
        max_choices=args.max_choices,
    )
    api_key = args.api_key or os.environ.get("ADADECODE_API_KEY") or None
    if not api_key and not _is_loopback(args.host):
        print(f"adadecode: warning: listening on {args.host} without --api-key: anyone who can reach this port can "
              "use the model", file=sys.stderr, flush=True)  # fmt: skip
    app = create_app(llm, limits, api_key)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=3)
    return EXIT_OK


__all__ = ["ApiError", "EngineWorker", "Limits", "Metrics", "add_serve_parser", "cmd_serve", "create_app"]
