"""Server part of the soak benchmark (bench/soak.py): ``adadecode serve`` under concurrent clients and malformed
requests, every response checked, the server's resident memory sampled throughout.

1. Start ``python -m adadecode serve`` on a free loopback port (the model, its heads, one thread).
2. References: each prompt once, alone, non-streaming, greedy standard decoding.
3. ``clients`` threads send ``requests`` requests each (completions and chat completions, streaming or not, greedy
   with the modes standard / adadecode / ngram / adadecode+ngram, some with a stop string cut out of the reference
   text) while another thread sends malformed requests (bad JSON, wrong types, unknown model, bad max_tokens, prompt
   over the context, invalid UTF-8, lone surrogates, invalid token ids, gamma outside [0, 1], oversized bodies, ...)
   and clients that leave mid-stream or while queued. A valid request must answer 200 with the reference's text
   (and finish reason); a malformed one the documented 4xx with OpenAI's error object naming the problem. Every
   request has a timeout, so a hang is a failure, not a stuck benchmark.
4. Afterwards /health must answer, /metrics must show an idle engine and no 5xx, and SIGINT must stop the server.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

COMPLETION_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "1, 2, 3, 4, 5,",
    "Once upon a time, in a small village,",
    "The three laws of thermodynamics are",
    "import numpy as np\n\n# compute the mean of each row\n",
    "Q: What is the boiling point of water?\nA:",
    "The quick brown fox",
]
CHAT_QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "What is 2 + 2?",
    "Write a haiku about the sea.",
    "Who wrote Hamlet?",
    "What do bees make?",
    "Say hello in Spanish.",
    "How many legs does a spider have?",
]
MODES = ["standard", "adadecode", "ngram", "adadecode+ngram"]
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"  # greedy SmolLM2 counts on: a long stream to walk away from
CTX = 512
MALFORMED_THREADS = 3  # malformed requests often wait in the queue too; several keep them coming
REQUEST_TIMEOUT = 600.0  # seconds; 32 queued generations on a loaded 2-core machine take minutes, a hang forever


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssSampler(threading.Thread):
    """VmRSS of the server every `every` seconds, with the phase (references, storm, idle) it was taken in."""

    def __init__(self, pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.phase = "start"
        self.samples: list[tuple[float, str, int]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.samples.append((round(time.monotonic() - self.t0, 1), self.phase, rss_of(self.pid)))
            self.stop.wait(self.every)


# --------------------------------------------------------------------------------------------------------------------
# valid requests


@dataclass
class Spec:
    """One valid request: what to send and what must come back."""

    model: str
    kind: str  # "completion" | "chat"
    index: int  # into COMPLETION_PROMPTS / CHAT_QUESTIONS
    stream: bool
    mode: str
    max_tokens: int
    stop: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "stream": self.stream,
            "mode": self.mode,
        }
        if self.kind == "completion":
            body["prompt"] = COMPLETION_PROMPTS[self.index]
        else:
            body["messages"] = [{"role": "user", "content": CHAT_QUESTIONS[self.index]}]
        if self.stop is not None:
            body["stop"] = [self.stop]
        return body

    @property
    def path(self) -> str:
        return "/v1/completions" if self.kind == "completion" else "/v1/chat/completions"


def _max_tokens(kind: str, index: int) -> int:
    return 8 + (index * 3 + (kind == "chat") * 5) % 9  # 8..16, fixed per prompt so that references apply


def _text_of(kind: str, choice: dict[str, Any], streamed: bool) -> str:
    if kind == "completion":
        return str(choice.get("text") or "")
    part = choice.get("delta" if streamed else "message") or {}
    return str(part.get("content") or "")


def send_valid(client: httpx.Client, spec: Spec) -> tuple[str, str | None]:
    """(text, finish_reason) of a valid request; raises AssertionError on anything malformed in the answer."""
    if not spec.stream:
        r = client.post(spec.path, json=spec.body())
        assert r.status_code == 200, f"status {r.status_code}: {r.text[:300]}"
        out = r.json()
        assert out["object"] == ("text_completion" if spec.kind == "completion" else "chat.completion"), out
        assert out["model"] == spec.model and len(out["choices"]) == 1, out
        assert 0 <= out["usage"]["completion_tokens"] <= spec.max_tokens, out["usage"]
        choice = out["choices"][0]
        return _text_of(spec.kind, choice, False), choice["finish_reason"]
    with client.stream("POST", spec.path, json=spec.body()) as r:
        assert r.status_code == 200, f"status {r.status_code}: {r.read()[:300]!r}"
        assert r.headers["content-type"].startswith("text/event-stream"), r.headers
        events = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", f"stream did not end with [DONE]: {events[-3:]}"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks and all("error" not in c for c in chunks), chunks
    text = "".join(_text_of(spec.kind, c["choices"][0], True) for c in chunks if c.get("choices"))
    last = chunks[-1]
    assert 0 <= last["usage"]["completion_tokens"] <= spec.max_tokens, last
    return text, last["choices"][0]["finish_reason"]


# --------------------------------------------------------------------------------------------------------------------
# malformed requests


@dataclass
class Bad:
    """A malformed request and the error it must get: status, and the error's param / code / a message needle."""

    name: str
    path: str
    status: int
    body: Any = None  # dict: sent as JSON; bytes: sent raw as application/json; Callable: a generator of chunks
    method: str = "POST"
    param: str | None = None
    code: str | None = None
    needle: str | None = None


def malformed_cases(prompt_tokens_over: int, max_body: int) -> list[Bad]:
    c, ch = "/v1/completions", "/v1/chat/completions"
    hi = [{"role": "user", "content": "hi"}]
    big = "x" * (max_body + 1000)
    return [
        Bad("bad JSON", c, 400, b'{"prompt": "hi", "max_tokens": ', needle="not valid JSON"),
        Bad("JSON that is not an object", c, 400, b"[1, 2, 3]", needle="valid dictionary"),
        Bad("missing prompt", c, 400, {"max_tokens": 4}, param="prompt", needle="Field required"),
        Bad("max_tokens of the wrong type", c, 400, {"prompt": "hi", "max_tokens": "eight"}, param="max_tokens"),
        Bad("prompt of the wrong type", c, 400, {"prompt": {"a": 1}}, param="prompt"),
        Bad("temperature of the wrong type", c, 400, {"prompt": "hi", "temperature": "hot"}, param="temperature"),
        Bad("messages of the wrong type", ch, 400, {"messages": "hello"}, param="messages"),
        Bad("unknown role", ch, 400, {"messages": [{"role": "wizard", "content": "hi"}]}, param="messages"),
        Bad("unknown model", c, 404, {"model": "gpt-4", "prompt": "hi"}, param="model", code="model_not_found"),
        Bad(
            "unknown model (chat, streaming)",
            ch,
            404,
            {"model": "no-such", "messages": hi, "stream": True},
            param="model",
            code="model_not_found",
        ),
        Bad("max_tokens negative", c, 400, {"prompt": "hi", "max_tokens": -5}, param="max_tokens"),
        Bad("max_tokens zero", c, 400, {"prompt": "hi", "max_tokens": 0}, param="max_tokens"),
        Bad("max_tokens huge", c, 400, {"prompt": "hi", "max_tokens": 10**12}, param="max_tokens"),
        Bad(
            "max_completion_tokens negative", ch, 400, {"messages": hi, "max_completion_tokens": -1}, param="max_tokens"
        ),
        Bad(
            "prompt over the context",
            c,
            400,
            {"prompt": "word " * prompt_tokens_over, "max_tokens": 4},
            param="prompt",
            code="context_length_exceeded",
        ),
        Bad(
            "chat prompt over the context",
            ch,
            400,
            {"messages": [{"role": "user", "content": "word " * prompt_tokens_over}], "max_tokens": 4},
            param="messages",
            code="context_length_exceeded",
        ),
        Bad("invalid UTF-8 in the body", c, 400, b'{"prompt": "abc\xff\xfe", "max_tokens": 4}', needle="UTF-8"),
        Bad(
            "lone surrogate in the prompt",
            c,
            400,
            b'{"prompt": "abc\\udcff", "max_tokens": 4}',
            param="prompt",
            needle="surrogate",
        ),
        Bad(
            "lone surrogate in a message",
            ch,
            400,
            b'{"messages": [{"role": "user", "content": "\\ud800!"}], "max_tokens": 4}',
            param="messages",
            needle="surrogate",
        ),
        Bad("token id past the vocabulary", c, 400, {"prompt": [1, 2, 10**9], "max_tokens": 4}, param="prompt"),
        Bad("negative token id", c, 400, {"prompt": [-1], "max_tokens": 4}, param="prompt"),
        Bad("empty prompt", c, 400, {"prompt": "", "max_tokens": 4}, param="prompt", needle="empty"),
        Bad("empty token list", c, 400, {"prompt": [], "max_tokens": 4}, param="prompt", needle="empty"),
        Bad("gamma above 1", c, 400, {"prompt": "hi", "max_tokens": 4, "gamma": 1.5}, param="gamma"),
        Bad("gamma below 0", c, 400, {"prompt": "hi", "max_tokens": 4, "gamma": -0.1}, param="gamma"),
        Bad("gamma NaN", c, 400, b'{"prompt": "hi", "max_tokens": 4, "gamma": NaN}', param="gamma"),
        Bad("gamma outside [0, 1], streaming", c, 400, {"prompt": "hi", "stream": True, "gamma": 2}, param="gamma"),
        Bad("max_pending 0", c, 400, {"prompt": "hi", "max_tokens": 4, "max_pending": 0}, param="max_pending"),
        Bad("max_draft 0", c, 400, {"prompt": "hi", "mode": "ngram", "max_draft": 0}, param="max_draft"),
        Bad("unknown mode", c, 400, {"prompt": "hi", "max_tokens": 4, "mode": "fast"}, param="mode"),
        Bad("temperature negative", c, 400, {"prompt": "hi", "temperature": -1}, param="temperature"),
        Bad("temperature infinite", c, 400, b'{"prompt": "hi", "temperature": 1e999}', param="temperature"),
        Bad("top_p above 1", c, 400, {"prompt": "hi", "top_p": 2}, param="top_p"),
        Bad("seed too large", c, 400, {"prompt": "hi", "seed": 2**70}, param="seed"),
        Bad("n = 2", ch, 400, {"messages": hi, "n": 2}, param="n"),
        Bad("stop of the wrong type", c, 400, {"prompt": "hi", "stop": [1]}, param="stop"),
        Bad("oversized body", c, 413, {"prompt": big}, code="request_too_large"),
        Bad(
            "oversized body, chunked",
            c,
            413,
            lambda: iter([b'{"prompt": "', big.encode(), b'"}']),
            needle="larger than the limit",
        ),
        Bad("unknown path", "/v1/engines", 404, method="GET"),
        Bad("wrong method", c, 405, method="GET"),
    ]


def send_bad(client: httpx.Client, case: Bad) -> None:
    """Raises AssertionError unless the server answers `case` with its documented error."""
    kwargs: dict[str, Any] = {}
    if isinstance(case.body, dict):
        kwargs["json"] = case.body
    elif isinstance(case.body, bytes):
        kwargs.update(content=case.body, headers={"content-type": "application/json"})
    elif callable(case.body):
        kwargs.update(content=case.body(), headers={"content-type": "application/json"})
    r = client.request(case.method, case.path, **kwargs)
    assert r.status_code == case.status, f"status {r.status_code}, expected {case.status}: {r.text[:300]}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"], err
    assert err["type"] == "invalid_request_error", err
    if case.param is not None:
        assert err["param"] == case.param, err
    if case.code is not None:
        assert err["code"] == case.code, err
    if case.needle is not None:
        assert case.needle in err["message"], err


def leave_mid_stream(client: httpx.Client) -> str:
    """Open a long stream, read one chunk, go away."""
    body = {"prompt": COUNTING, "max_tokens": 200, "temperature": 0, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200, r.status_code
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: {"))
        assert json.loads(first[6:])["choices"], first
    return "left after the first chunk"


def leave_while_queued(url: str) -> str:
    """A request whose client gives up after 0.5 s, normally still queued behind other clients' requests."""
    try:
        r = httpx.post(
            f"{url}/v1/completions",
            json={"prompt": COUNTING, "max_tokens": 64, "temperature": 0},
            timeout=httpx.Timeout(30, read=0.5),
        )
    except httpx.ReadTimeout:
        return "gave up after 0.5 s"
    assert r.status_code == 200, r.text[:300]
    return "answered within 0.5 s"


# --------------------------------------------------------------------------------------------------------------------
# the soak


@contextlib.contextmanager
def running_server(cmd: list[str], log_path: str) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: {open(log_path).read()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer /health within {seconds:.0f} s")
        time.sleep(0.25)


def metrics(url: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def _wait_idle(url: str, seconds: float) -> dict[str, float]:
    """/metrics once nothing is queued or generating."""
    deadline = time.monotonic() + seconds
    while (m := metrics(url))["adadecode_queued_requests"] or m["adadecode_generating"]:
        assert time.monotonic() < deadline, f"the engine is still busy {seconds:.0f} s after the last client"
        time.sleep(0.5)
    return m


def _stop_inside(text: str, rng: random.Random) -> str | None:
    """A 3-character stop string from inside `text` (after its first character), first occurring there."""
    starts = [i for i in range(1, len(text) - 3) if text.find(text[i : i + 3]) == i and text[i : i + 3].strip()]
    return text[(i := rng.choice(starts)) : i + 3] if starts else None


def soak_server(
    model: str, heads: str | None, clients: int, requests: int, rounds: int, threads: int, log_path: str
) -> dict[str, Any]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    alias = Path(model).name.removesuffix(".gguf")  # what the server calls the model
    cmd = [
        sys.executable,
        "-m",
        "adadecode",
        "serve",
        "-m",
        model,
        "-t",
        str(threads),
        "-c",
        str(CTX),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ] + (["--heads", heads] if heads else [])
    max_body = 1 << 20  # the server's default --max-body-bytes
    failures: list[dict[str, Any]] = []
    fail_lock = threading.Lock()

    def fail(what: str, exc: BaseException) -> None:
        with fail_lock:
            failures.append({"request": what, "error": f"{type(exc).__name__}: {exc}"[:500]})
        print(f"soak server: FAILED {what}: {type(exc).__name__}: {exc}"[:400], file=sys.stderr, flush=True)

    start = time.perf_counter()
    with running_server(cmd, log_path) as proc:
        _wait_healthy(url, proc, log_path, 180)
        sampler = RssSampler(proc.pid, every=1.0)
        sampler.start()
        modes = MODES if heads else ["standard", "ngram"]

        # References: one client, one request at a time, standard decoding.
        sampler.phase = "references"
        refs: dict[tuple[str, int], tuple[str, str]] = {}
        with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as client:
            for kind, prompts in (("completion", COMPLETION_PROMPTS), ("chat", CHAT_QUESTIONS)):
                for i in range(len(prompts)):
                    spec = Spec(alias, kind, i, False, "standard", _max_tokens(kind, i))
                    text, finish = send_valid(client, spec)
                    refs[(kind, i)] = (text, str(finish))
        rss_before_storm = rss_of(proc.pid)

        # The storm, `rounds` times: clients x requests valid requests, malformed ones and leaving clients alongside.
        counts = {"valid_ok": 0, "valid_failed": 0, "stop_string_requests": 0, "streaming": 0}
        per_mode = dict.fromkeys(modes, 0)
        lock = threading.Lock()
        cases = malformed_cases(prompt_tokens_over=CTX + 100, max_body=max_body)
        bad_counts: dict[str, dict[str, int]] = {b.name: {"ok": 0, "failed": 0} for b in cases}
        leaving: dict[str, int] = {}

        def client_run(c: int, seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as client:
                for j in range(requests):
                    kind = rng.choice(["completion", "chat"])
                    i = rng.randrange(len(COMPLETION_PROMPTS if kind == "completion" else CHAT_QUESTIONS))
                    ref_text, ref_finish = refs[(kind, i)]
                    stop = _stop_inside(ref_text, rng) if rng.random() < 0.25 else None
                    spec = Spec(alias, kind, i, rng.random() < 0.5, rng.choice(modes), _max_tokens(kind, i), stop)
                    want = (ref_text[: ref_text.find(stop)], "stop") if stop else (ref_text, ref_finish)
                    try:
                        got = send_valid(client, spec)
                        assert got == want, f"got {got!r}, expected {want!r}"
                        ok = True
                    except Exception as exc:  # every failure is recorded; the soak goes on
                        fail(f"client {c} request {j}: {spec}", exc)
                        ok = False
                    with lock:
                        counts["valid_ok" if ok else "valid_failed"] += 1
                        counts["stop_string_requests"] += stop is not None
                        counts["streaming"] += spec.stream
                        per_mode[spec.mode] += 1

        def malformed_run(first: int, done: threading.Event) -> None:
            n = 0
            with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as client:
                # At least one full pass, then on until the clients are done.
                while n < len(cases) or not done.is_set():
                    case = cases[(first + n) % len(cases)]
                    try:
                        send_bad(client, case)
                        outcome = "ok"
                    except Exception as exc:
                        outcome = "failed"
                        fail(f"malformed: {case.name}", exc)
                    with lock:
                        bad_counts[case.name][outcome] += 1
                    n += 1
                    if n % 8 == 0:  # a client that walks away, mid-stream or from the queue
                        for what, run in (
                            ("mid-stream", lambda: leave_mid_stream(client)),
                            ("while queued", lambda: leave_while_queued(url)),
                        ):
                            try:
                                left = f"{what}: {run()}"
                            except Exception as exc:
                                left = f"{what}: failed"
                                fail(f"disconnect {what}", exc)
                            with lock:
                                leaving[left] = leaving.get(left, 0) + 1

        storm_seconds: list[float] = []
        rss_after_round: list[int] = []
        for r in range(rounds):
            sampler.phase = f"storm {r + 1}"
            storm_start = time.perf_counter()
            done = threading.Event()
            bad_threads = [
                threading.Thread(target=malformed_run, args=(k * len(cases) // MALFORMED_THREADS, done))
                for k in range(MALFORMED_THREADS)
            ]
            workers = [threading.Thread(target=client_run, args=(c, 1000 * r + c)) for c in range(clients)]
            for t in bad_threads + workers:
                t.start()
            for w in workers:
                w.join()
            done.set()
            for t in bad_threads:
                t.join()
            storm_seconds.append(time.perf_counter() - storm_start)
            sampler.phase = f"idle {r + 1}"
            _wait_idle(url, 120)
            time.sleep(3)
            rss_after_round.append(rss_of(proc.pid))
            print(
                f"soak server: round {r + 1}/{rounds} in {storm_seconds[-1]:.0f} s, {counts['valid_ok']} valid ok, "
                f"{len(failures)} failures, RSS {rss_after_round[-1] / 1024:.1f} MiB",
                file=sys.stderr,
                flush=True,
            )

        # After the storm: idle, healthy, nothing answered 5xx; then a clean stop.
        sampler.phase = "after"
        end: dict[str, Any] = {}
        try:
            m = _wait_idle(url, 120)
            health = httpx.get(f"{url}/health", timeout=10)
            assert health.status_code == 200 and health.json()["status"] == "ok", health.text
            end["health"] = health.json()
            by_status: dict[str, float] = {}
            for name, value in m.items():
                if name.startswith("adadecode_requests_total{"):
                    status = name.split('code="')[1].split('"')[0]
                    by_status[status] = by_status.get(status, 0) + value
            end["requests_by_status"] = dict(sorted(by_status.items()))
            end["server_5xx"] = sum(v for s, v in by_status.items() if s.startswith("5"))
            assert end["server_5xx"] == 0, f"the server answered 5xx: {by_status}"
            for key in (
                "generations_total",
                "generations_cancelled_total",
                "generated_tokens_total",
                "early_exit_fraction",
                "accept_rate",
                "ngram_fraction",
            ):
                end[key] = m[f"adadecode_{key}"]
        except Exception as exc:
            fail("after the storm", exc)
        sampler.stop.set()
        sampler.join()
        proc.send_signal(signal.SIGINT)
        try:
            end["exit_code_after_sigint"] = proc.wait(timeout=30)
        except subprocess.TimeoutExpired as exc:
            fail("SIGINT did not stop the server within 30 s", exc)
    storm = [rss for _, phase, rss in sampler.samples if phase.startswith("storm")]
    return {
        "command": cmd,
        "clients": clients,
        "requests_per_client": requests,
        "rounds": rounds,
        "valid_requests": clients * requests * rounds,
        **counts,
        "requests_per_mode": per_mode,
        "malformed_requests": sum(v["ok"] + v["failed"] for v in bad_counts.values()),
        "malformed_failed": sum(v["failed"] for v in bad_counts.values()),
        "malformed_by_case": bad_counts,
        "leaving_clients": leaving,
        "storm_seconds": storm_seconds,
        "seconds": time.perf_counter() - start,
        "failures": failures,
        "end": end,
        "rss_before_storm_kib": rss_before_storm,
        "rss_storm_max_kib": max(storm) if storm else None,
        "rss_after_round_kib": rss_after_round,
        # Round 1 warms up (threads, connection buffers, allocator arenas); a leak grows RSS round after round.
        "rss_growth_after_first_round_percent": 100.0 * (rss_after_round[-1] - rss_after_round[0]) / rss_after_round[0]
        if rss_after_round
        else None,
        "rss_samples": sampler.samples,
    }


def markdown(s: dict[str, Any], mib: Callable[[float], str]) -> list[str]:
    end = s["end"]
    rounds = s["rounds"]
    after = s["rss_after_round_kib"]
    growth = s["rss_growth_after_first_round_percent"]
    lines = [
        "",
        "## Server",
        "",
        f"`adadecode {' '.join(s['command'][3:])}`, then {rounds} x {s['clients']} concurrent clients x "
        f"{s['requests_per_client']} greedy requests of 8-16 tokens (completions and chat, streaming or not, modes "
        f"{', '.join(f'{k} {v}' for k, v in s['requests_per_mode'].items())}; {s['streaming']} streamed, "
        f"{s['stop_string_requests']} with a stop string cut from the reference text), each compared with the same "
        f"prompt's reference run alone beforehand; alongside them {s['malformed_requests']} malformed requests "
        f"({len(s['malformed_by_case'])} kinds, listed below) and clients leaving mid-stream or while queued.",
        "",
        "| | result |",
        "|---|---|",
        f"| valid requests answered 200 with the reference's text and finish reason | {s['valid_ok']} / "
        f"{s['valid_requests']} |",
        f"| malformed requests answered their documented 4xx error object | "
        f"{s['malformed_requests'] - s['malformed_failed']} / {s['malformed_requests']} |",
        f"| clients that left | {', '.join(f'{k} x{v}' for k, v in sorted(s['leaving_clients'].items()))} |",
        f"| generations cancelled by a leaving client (/metrics) | {end.get('generations_cancelled_total', 'n/a')} |",
        f"| answers by status (/metrics) | {end.get('requests_by_status', 'n/a')} |",
        f"| 5xx answers | {end.get('server_5xx', 'n/a')} |",
        f"| /health after the storm | {end.get('health', 'no answer')} |",
        f"| exit status after SIGINT | {end.get('exit_code_after_sigint', 'did not stop')} |",
        f"| storm duration per round | {', '.join(f'{t:.0f} s' for t in s['storm_seconds'])} |",
        f"| server RSS before the first round / max during the rounds (MiB) | {mib(s['rss_before_storm_kib'])} / "
        f"{mib(s['rss_storm_max_kib'] or 0)} |",
        f"| server RSS idle after each round (MiB) | {' / '.join(mib(k) for k in after)}"
        + (f" ({growth:+.2f}% after the first) |" if growth is not None else " |"),
        "",
        "Malformed kinds (answered as documented / sent): "
        + "; ".join(f"{k} ({v['ok']}/{v['ok'] + v['failed']})" for k, v in s["malformed_by_case"].items())
        + ".",
        "",
        "All responses as documented."
        if not s["failures"]
        else f"**{len(s['failures'])} failures**, the first: {s['failures'][:3]}",
    ]
    return lines
