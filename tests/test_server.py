"""The OpenAI-compatible server, as a user runs it: ``python -m adadecode serve`` on a free loopback port, talked to
with the official ``openai`` client (and httpx for raw requests). Greedy outputs are checked against the engine run
in this process without exit heads (the server decodes with them), so the server, its queue and the layer-parallel
decoder all have to agree with plain standard decoding."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

MAX_TOKENS = 512  # the server's --max-tokens
MAX_PROMPT_TOKENS = 200
MAX_BODY_BYTES = 20_000
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"  # greedy SmolLM2 goes on counting: no early end of text
QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "What is 2 + 2?",
    "Write a haiku about the sea.",
    "Who wrote Hamlet?",
    "What do bees make?",
    "Say hello in Spanish.",
    "How many legs does a spider have?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(engine: Any, smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    # One thread: with the CPU oversubscribed, ggml's spinning thread barrier makes 2 threads many times slower.
    cmd = [sys.executable, "-m", "adadecode", "serve", "-m", str(smollm2_path), "--heads", "auto", "-t", "1",
           "-c", "1024", "--port", str(port), "--max-tokens", str(MAX_TOKENS), "--max-prompt-tokens",
           str(MAX_PROMPT_TOKENS), "--max-body-bytes", str(MAX_BODY_BYTES), "--log-level", "warning"]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not come up in 120 s: {log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(server: str) -> Any:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def reference(engine: Any, smollm2_path: Path) -> Any:
    """Standard decoding in this process, no exit heads."""
    from adadecode import Llama

    return Llama(smollm2_path, n_ctx=1024, n_threads=1)


def _chat(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def _metrics(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def _stream_chat(client: Any, question: str, max_tokens: int) -> tuple[str, list[Any]]:
    chunks = list(client.chat.completions.create(model="smollm2-135m", messages=_chat(question),
                                                 max_tokens=max_tokens, temperature=0, stream=True))  # fmt: skip
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_health_and_models(server: str, client: Any) -> None:
    health = httpx.get(f"{server}/health", timeout=10).json()
    assert health["status"] == "ok"
    models = client.models.list()
    assert [m.id for m in models.data] == ["smollm2-135m"]
    assert models.data[0].model_extra["meta"]["exit_layers"]  # the shipped heads are loaded


def test_completion(client: Any, reference: Any) -> None:
    out = client.completions.create(model="smollm2-135m", prompt="The capital of France is", max_tokens=12,
                                    temperature=0)  # fmt: skip
    ref = reference("The capital of France is", max_tokens=12, temperature=0)
    assert out.choices[0].text == ref["choices"][0]["text"]
    assert out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == ref["usage"]["prompt_tokens"] and out.usage.completion_tokens == 12
    stats = out.model_extra["adadecode"]
    assert stats["mode"] == "adadecode" and 0 <= stats["early_exit_fraction"] <= 1


def test_apply_template_then_completion_is_the_chat_reply(server: str, client: Any, reference: Any) -> None:
    """llama-server's /apply-template: the chat template's text, which /completion then continues exactly as the chat
    endpoint answers."""
    messages = _chat(QUESTIONS[2])
    r = httpx.post(f"{server}/apply-template", json={"messages": messages}, timeout=30)
    assert r.status_code == 200, r.text
    prompt = r.json()["prompt"]
    ids = reference.model.tokenize(prompt, add_special=False, parse_special=True)
    assert ids == reference.chat_prompt_ids(messages)
    chat = client.chat.completions.create(model="smollm2-135m", messages=messages, max_tokens=12, temperature=0)
    done = httpx.post(f"{server}/completion", json={"prompt": prompt, "n_predict": 12, "temperature": 0}, timeout=60)
    assert done.json()["content"] == chat.choices[0].message.content
    for body, param in (({"messages": []}, "messages"), ({"messages": messages, "tools": [{"x": 1}]}, "tools"),
                        ({"messages": messages, "stream": True}, "stream")):  # fmt: skip
        bad = httpx.post(f"{server}/apply-template", json=body, timeout=30)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param, bad.text


def test_parallel_tool_calls_false_reaches_the_engine(client: Any) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    call = '"<tool_call>{\\"name\\": \\"f\\", \\"arguments\\": {}}</tool_call>"'
    for parallel, n_calls in ((None, 2), (False, 1)):
        extra = {"grammar": f"root ::= {call} {call}"}
        flag = {} if parallel is None else {"parallel_tool_calls": parallel}
        out = client.chat.completions.create(model="smollm2-135m", messages=_chat("Call f twice."), tools=[tool],
                                             max_tokens=80, temperature=0, extra_body=extra, **flag)  # fmt: skip
        assert len(out.choices[0].message.tool_calls) == n_calls


def test_body_is_json_whatever_its_content_type(server: str) -> None:
    """As llama-server: `curl -d` sends application/x-www-form-urlencoded, and some clients no Content-Type."""
    body = json.dumps({"content": "Hello world"}).encode()
    for headers in ({"content-type": "application/x-www-form-urlencoded"}, {"content-type": "text/plain"}, {}):
        r = httpx.post(f"{server}/tokenize", content=body, headers=headers, timeout=30)
        assert r.status_code == 200 and r.json()["tokens"] == [19556, 905], (headers, r.text)
    r = httpx.post(f"{server}/tokenize", content=b"content=hi", headers={"content-type": "text/plain"}, timeout=30)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_several_choices_and_prompts(client: Any, reference: Any) -> None:
    """n and a batch of prompts (OpenAI's list forms): every choice is what its own request answers, and the usage
    counts each prompt once."""
    prompts = ["The capital of France is", [504, 3458, 282, 4649, 314]]
    out = client.completions.create(model="smollm2-135m", prompt=prompts, n=2, max_tokens=8, temperature=0)
    refs = [reference(p, max_tokens=8, temperature=0) for p in prompts]
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    assert [c.text for c in out.choices] == [r["choices"][0]["text"] for r in refs for _ in range(2)]
    assert out.usage.prompt_tokens == sum(r["usage"]["prompt_tokens"] for r in refs)
    assert out.usage.completion_tokens == 4 * 8 and out.usage.total_tokens == out.usage.prompt_tokens + 32
    assert all(c.model_extra["adadecode"]["n_generated"] == 8 for c in out.choices)

    texts = ["1, 2, 3,", "a, b, c,"]
    batch = client.completions.create(model="smollm2-135m", prompt=texts, max_tokens=6, temperature=0)
    assert [c.text for c in batch.choices] == [reference(p, max_tokens=6, temperature=0)["choices"][0]["text"]
                                               for p in texts]  # fmt: skip

    # Sampling: a seed makes the response reproducible, and the choices differ from one another.
    def sampled() -> list[str | None]:
        r = client.chat.completions.create(model="smollm2-135m", messages=_chat(QUESTIONS[0]), n=3, max_tokens=12,
                                           temperature=1.0, seed=7)  # fmt: skip
        return [c.message.content for c in r.choices]

    first = sampled()
    assert first == sampled() and len(set(first)) > 1
    one = client.chat.completions.create(model="smollm2-135m", messages=_chat(QUESTIONS[0]), max_tokens=12,
                                         temperature=1.0, seed=7)  # fmt: skip
    assert one.choices[0].message.content == first[0]


def test_several_choices_streamed(server: str, client: Any, reference: Any) -> None:
    before = _metrics(server)
    chunks = list(client.chat.completions.create(model="smollm2-135m", messages=_chat(QUESTIONS[1]), n=2,
                                                 max_tokens=10, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))  # fmt: skip
    ref = reference.create_chat_completion(_chat(QUESTIONS[1]), max_tokens=10, temperature=0)
    texts = ["", ""]
    for c in chunks[:-1]:
        assert len(c.choices) == 1 and c.id == chunks[0].id
        texts[c.choices[0].index] += c.choices[0].delta.content or ""
    assert texts == [ref["choices"][0]["message"]["content"]] * 2
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2 * ref["usage"]["completion_tokens"]
    assert chunks[-1].usage.prompt_tokens == ref["usage"]["prompt_tokens"]
    assert _metrics(server)["adadecode_generations_total"] == before["adadecode_generations_total"] + 2


def test_streamed_chat_completion(client: Any, reference: Any) -> None:
    chunks = list(client.chat.completions.create(model="smollm2-135m", messages=_chat(QUESTIONS[0]), max_tokens=24,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ref = reference.create_chat_completion(_chat(QUESTIONS[0]), max_tokens=24, temperature=0)
    assert text == ref["choices"][0]["message"]["content"]
    assert len(chunks) > 3 and chunks[0].choices[0].delta.role == "assistant"
    *rest, usage = chunks  # OpenAI's format: usage alone in a last chunk without choices
    assert usage.choices == [] and usage.usage.completion_tokens == ref["usage"]["completion_tokens"]
    assert all(c.usage is None for c in rest)
    assert rest[-1].choices[0].finish_reason == ref["choices"][0]["finish_reason"]
    assert rest[-1].model_extra["adadecode"]["mode"] == "adadecode"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"this is not json", None),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"content": "no role"}]}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 0}, "n"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 17}, "n"),
        ({"prompt": ["a", "b", "c"], "n": 6}, "prompt"),
        ({"prompt": {"a": 1}}, "prompt"),
    ],
)
def test_malformed_requests_get_400(server: str, body: Any, param: str | None) -> None:
    path = "/v1/completions" if isinstance(body, dict) and "prompt" in body else "/v1/chat/completions"
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else {
        "json": body}  # fmt: skip
    r = httpx.post(f"{server}{path}", timeout=60, **kwargs)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert err["param"] == param


@pytest.mark.parametrize(
    ("path", "body", "param", "needle"),
    [
        ("/v1/completions", {"prompt": "Hi", "gamma": 1.5}, "gamma", "gamma must be in [0, 1], got 1.5"),
        ("/v1/completions", {"prompt": "Hi", "gamma": -0.1}, "gamma", "gamma must be in [0, 1]"),
        ("/v1/completions", b'{"prompt": "Hi", "gamma": NaN}', "gamma", "gamma must be in [0, 1], got nan"),
        ("/v1/completions", {"prompt": "Hi", "max_pending": 0}, "max_pending", "max_pending must be >= 1"),
        ("/v1/completions", {"prompt": "Hi", "max_tokens": -1}, "max_tokens", "max_tokens must be in [1, 512]"),
        ("/v1/completions", {"prompt": "Hi", "max_tokens": 10**15}, "max_tokens", "max_tokens must be in"),
        ("/v1/chat/completions", {"messages": _chat("Hi"), "max_completion_tokens": -3}, "max_tokens", "got -3"),
        ("/v1/completions", {"prompt": [1, 2, 10**9]}, "prompt", "token ids must be integers in [0, 49152)"),
        ("/v1/completions", {"prompt": [-7]}, "prompt", "token ids must be integers"),
        ("/v1/completions", {"prompt": ""}, "prompt", "the prompt is empty"),
        ("/v1/completions", b'{"prompt": "caf\xe9"}', None, "the request body is not valid UTF-8: byte 0xe9 at offset"),
        ("/v1/completions", b'{"prompt": "ab\\udcff"}', "prompt", "lone surrogate U+DCFF at position 2"),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
            "messages",
            "messages[0].content is not valid Unicode text",
        ),
        ("/v1/completions", {"prompt": "Hi", "mode": "ngram", "max_draft": 0}, "max_draft", "max_draft must be"),
        ("/v1/completions", {"prompt": "Hi", "adaptive_exits": "maybe"}, "adaptive_exits", "valid boolean"),
    ],
)
def test_bad_values_get_400_naming_them(server: str, path: str, body: Any, param: str | None, needle: str) -> None:
    for stream in (False, True):  # refused before a stream starts: a JSON error, not an event stream
        if isinstance(body, bytes):
            raw = body.replace(b"{", b'{"stream": %s, ' % (b"true" if stream else b"false"), 1)
            r = httpx.post(f"{server}{path}", content=raw, headers={"content-type": "application/json"}, timeout=60)
        else:
            r = httpx.post(f"{server}{path}", json={**body, "stream": stream}, timeout=60)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["param"] == param
        assert needle in err["message"], err["message"]


def test_unknown_model_is_404(server: str, client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="gpt-4", prompt="Hi", max_tokens=2)
    assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"
    assert "'gpt-4' does not exist" in info.value.body["message"] and "smollm2-135m" in info.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such", messages=_chat("Hi"), max_tokens=2, stream=True)
    # the alias /v1/models lists, the GGUF's file name, or no model at all are served
    for body in ({"model": "smollm2-135m"}, {"model": "smollm2-135m.gguf"}, {}):
        r = httpx.post(f"{server}/v1/completions", json={**body, "prompt": "Hi", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200, r.text


def test_stop_string_spanning_tokens(client: Any, reference: Any) -> None:
    ref = reference.model.generate("The capital of France is", max_tokens=24)
    pieces = [reference.model.detokenize(ref.tokens[: i + 1]) for i in range(len(ref.tokens))]
    boundary = next(i for i in range(2, len(pieces)) if len(pieces[i - 1]) - len(pieces[i - 2]) >= 2)
    cut = len(pieces[boundary - 1]) - 1  # one token's last character and the next one's first two
    stop = ref.text[cut : cut + 3]
    assert ref.text.find(stop) == cut and len(pieces[boundary]) >= cut + 3
    kwargs = {"model": "smollm2-135m", "prompt": "The capital of France is", "max_tokens": 24, "temperature": 0,
              "stop": ["never there", stop]}  # fmt: skip
    out = client.completions.create(**kwargs)
    assert out.choices[0].text == ref.text[:cut] and out.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(**kwargs, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == ref.text[:cut]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_max_tokens_past_the_context_stops_with_length(engine: Any, smollm2_path: Path) -> None:
    """In-process (the module's server keeps max_tokens inside its context): a request for more tokens than the
    context holds gets what fits and finish_reason "length", streaming or not."""
    from fastapi.testclient import TestClient

    from adadecode import Llama
    from adadecode.server import create_app

    llm = Llama(smollm2_path, n_ctx=24, n_threads=1)
    n_prompt = len(llm.tokenize(b"The capital of France is"))
    body = {"prompt": "The capital of France is", "max_tokens": 4000, "temperature": 0}
    with TestClient(create_app(llm)) as http:
        out = http.post("/v1/completions", json=body).json()
        assert out["choices"][0]["finish_reason"] == "length"
        assert out["usage"]["completion_tokens"] == 24 - n_prompt
        with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert "".join(c["choices"][0]["text"] for c in chunks) == out["choices"][0]["text"]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        # a prompt that fills the context leaves no room at all: an error, not an empty completion
        r = http.post("/v1/completions", json={**body, "prompt": "word " * 30})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        assert "but the context holds 24" in r.json()["error"]["message"]
        assert http.get("/health").json()["status"] == "ok"


def test_malformed_request_through_openai_client(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2-135m", messages=[{"role": "wizard", "content": "hi"}])
    assert info.value.status_code == 400 and "role" in str(info.value)


def test_requests_over_the_limits(server: str, client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="smollm2-135m", prompt="Hi", max_tokens=MAX_TOKENS + 1)
    assert info.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2-135m", messages=_chat("word " * 300), max_tokens=4)
    assert info.value.body["code"] == "context_length_exceeded" and "limit of 200" in info.value.body["message"]
    r = httpx.post(f"{server}/v1/completions", json={"prompt": "x" * MAX_BODY_BYTES}, timeout=60)
    assert r.status_code == 413 and "larger than the limit" in r.json()["error"]["message"]
    # the same without Content-Length (chunked upload)
    r = httpx.post(f"{server}/v1/completions", content=iter([b'{"prompt": "', b"x" * MAX_BODY_BYTES, b'"}']),
                   headers={"content-type": "application/json"}, timeout=60)  # fmt: skip
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"


def test_concurrent_streams_equal_requests_run_alone(server: str, client: Any) -> None:
    alone = [_stream_chat(client, q, 12)[0] for q in QUESTIONS]
    assert len(set(alone)) == len(QUESTIONS)  # different outputs, so any mix-up would show
    with concurrent.futures.ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(lambda q: _stream_chat(client, q, 12)[0], QUESTIONS))
    assert together == alone
    m = _metrics(server)
    assert m["adadecode_queued_requests"] == 0 and m["adadecode_generating"] == 0


def _wait_idle(server: str, generations: float) -> dict[str, float]:
    """/metrics once the engine is idle with `generations` run in all."""
    deadline = time.monotonic() + 30
    while True:
        m = _metrics(server)
        if m["adadecode_generations_total"] >= generations and m["adadecode_generating"] == 0:
            return m
        assert time.monotonic() < deadline, "the server is still generating for a client that left"
        time.sleep(0.1)


def test_disconnect_cancels_generation(server: str, reference: Any) -> None:
    n = 128
    # Uncancelled, this request generates all n tokens.
    assert reference(COUNTING, max_tokens=n, temperature=0)["choices"][0]["finish_reason"] == "length"
    before = _metrics(server)
    body = {"prompt": COUNTING, "max_tokens": n, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data: {")
            if seen == 3:
                break
    after = _wait_idle(server, before["adadecode_generations_total"] + 1)
    assert after["adadecode_generations_total"] == before["adadecode_generations_total"] + 1
    assert after["adadecode_generations_cancelled_total"] == before["adadecode_generations_cancelled_total"] + 1
    generated = after["adadecode_generated_tokens_total"] - before["adadecode_generated_tokens_total"]
    assert 3 <= generated < n // 2
    # and the engine is free for the next client
    r = httpx.post(f"{server}/v1/completions", json={"prompt": "Hello", "max_tokens": 2}, timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2


def test_client_leaving_while_queued_is_never_run(server: str) -> None:
    before = _metrics(server)
    body = {"prompt": COUNTING, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server}/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()  # kept referenced: a collected line iterator would close the stream
        next(line for line in lines if line.startswith("data: {"))  # the engine is busy with this one
        with pytest.raises(httpx.ReadTimeout):  # a second client waits in the queue, gives up and leaves
            httpx.post(f"{server}/v1/completions", json={"prompt": "Hello", "max_tokens": 4},
                       timeout=httpx.Timeout(60, read=0.5))  # fmt: skip
        time.sleep(1.0)  # the server notices within 0.25 s
        assert _metrics(server)["adadecode_generating"] == 1  # the first request still runs
    _wait_idle(server, before["adadecode_generations_total"] + 1)
    time.sleep(0.5)  # time for a wrongly started second generation to show
    after = _metrics(server)
    assert after["adadecode_generations_total"] == before["adadecode_generations_total"] + 1  # only the first
    assert after["adadecode_queued_requests"] == 0


def test_metrics(server: str) -> None:
    text = httpx.get(f"{server}/metrics", timeout=10).text
    for name in ("requests_total", "generated_tokens_total", "early_exit_fraction", "accept_rate",
                 "tokens_per_second"):  # fmt: skip
        assert f"# TYPE adadecode_{name} " in text
    m = _metrics(server)
    assert m['adadecode_requests_total{path="/v1/completions",code="200"}'] >= 1
    assert m['adadecode_requests_total{path="/v1/chat/completions",code="400"}'] >= 1
    httpx.get(f"{server}/no/such/path", timeout=10)
    m = _metrics(server)
    assert m['adadecode_requests_total{path="other",code="404"}'] >= 1
    assert not any("/no/such/path" in name for name in m)
    assert m["adadecode_generated_tokens_total"] > 0 and m["adadecode_tokens_per_second"] > 0
    assert 0 <= m["adadecode_early_exit_fraction"] <= 1 and 0 <= m["adadecode_accept_rate"] <= 1


def test_serve_without_the_server_extra_is_one_line_error(tmp_path: Path) -> None:
    # A stand-in uvicorn that fails to import, as on an install without the `server` extra.
    (tmp_path / "uvicorn.py").write_text("raise ImportError('No module named uvicorn')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "adadecode", "serve", "-m", "nonexistent.gguf"], capture_output=True,
                       text=True, env=env, timeout=120)  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "adadecode: error: 'adadecode serve' needs the server extra: pip install 'adadecode[server]' "
        "(No module named uvicorn)"
    ]


def test_busy_port_is_one_line_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "adadecode", "serve", "-m", "smollm2-135m", "--port", str(port)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"adadecode: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
