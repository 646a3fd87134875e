"""The server as a llama-server / OpenAI drop-in: the official ``openai`` client gets what ``Llama`` gives (JSON
mode, schemas, tools, logprobs, embeddings, usage in streams only when asked), llama-server's native endpoints, unknown
fields refused by name, and ``--api-key``. In process: the ASGI app behind Starlette's test client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from json_prefix import assert_json_object_or_cut

pytest.importorskip("fastapi")
pytest.importorskip("llguidance")
openai = pytest.importorskip("openai")

KEY = "sk-test"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 24}, "is_capital": {"type": "boolean"}},
    "required": ["city", "is_capital"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def llm(engine: Any, smollm2_path: Path) -> Any:
    from adadecode import Llama

    return Llama(str(smollm2_path), n_ctx=1024, n_threads=2)


@pytest.fixture(scope="module")
def http(llm: Any) -> Any:
    from fastapi.testclient import TestClient

    from adadecode.server import create_app

    with TestClient(create_app(llm, api_key=KEY), headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


@pytest.fixture(scope="module")
def client(http: Any) -> Any:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=http, max_retries=0)


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_api_key_is_required(http: Any) -> None:
    r = http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1}, headers={"Authorization": "Bearer x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert http.get("/health", headers={"Authorization": ""}).status_code == 200
    bad = openai.OpenAI(base_url="http://testserver/v1", api_key="wrong", http_client=http, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_unknown_field_is_refused_by_name(http: Any) -> None:
    r = http.post("/v1/chat/completions", json={"messages": _chat("Hi"), "max_tokens": 1, "frobnicate": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "frobnicate"
    r = http.post("/v1/chat/completions", json={"messages": _chat("Hi"), "max_tokens": 1, "user": "u1",
                                                "cache_prompt": True})  # fmt: skip
    assert r.status_code == 200


def test_openai_client_json_schema_and_json_mode(client: Any, llm: Any) -> None:
    out = client.chat.completions.create(
        model="smollm2-135m", messages=_chat("Describe Paris as JSON."), max_tokens=80, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}},
    )  # fmt: skip
    value = json.loads(out.choices[0].message.content)
    assert set(value) == {"city", "is_capital"} and type(value["is_capital"]) is bool
    ref = llm.create_chat_completion(_chat("Describe Paris as JSON."), max_tokens=80, temperature=0,
                                     response_format={"type": "json_object", "schema": SCHEMA})  # fmt: skip
    assert out.choices[0].message.content == ref["choices"][0]["message"]["content"]
    out = client.chat.completions.create(model="smollm2-135m", messages=_chat("Give me JSON."), max_tokens=300,
                                         response_format={"type": "json_object"})  # fmt: skip
    assert_json_object_or_cut(out.choices[0].message.content, out.choices[0].finish_reason)


def test_openai_client_tools(client: Any) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip
    out = client.chat.completions.create(model="smollm2-135m", messages=_chat("Weather in Oslo?"), tools=tools,
                                         tool_choice="required", max_tokens=60, temperature=0)  # fmt: skip
    assert out.choices[0].finish_reason == "tool_calls"
    call = out.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)


def test_openai_client_logprobs_penalties_and_embeddings(client: Any, llm: Any) -> None:
    out = client.chat.completions.create(model="smollm2-135m", messages=_chat("Hi"), max_tokens=4, temperature=0,
                                         logprobs=True, top_logprobs=3, frequency_penalty=0.5)  # fmt: skip
    content = out.choices[0].logprobs.content
    assert "".join(c.token for c in content) == out.choices[0].message.content
    assert all(len(c.top_logprobs) == 3 and c.logprob <= 0 for c in content)
    ref = llm.create_chat_completion(_chat("Hi"), max_tokens=4, temperature=0, frequency_penalty=0.5)
    assert out.choices[0].message.content == ref["choices"][0]["message"]["content"]
    # the client asks for base64 unless told otherwise, and decodes it then
    for emb in (
        client.embeddings.create(model="smollm2-135m", input=["one", "two"]),
        client.embeddings.create(model="smollm2-135m", input=["one", "two"], encoding_format="float"),
    ):
        assert [d.index for d in emb.data] == [0, 1]
        assert emb.data[0].embedding == pytest.approx(llm.embed("one"), abs=1e-6)


def test_stream_usage_only_when_asked(client: Any) -> None:
    chunks = list(client.chat.completions.create(model="smollm2-135m", messages=_chat("Hi"), max_tokens=3,
                                                 temperature=0, stream=True))  # fmt: skip
    assert all(c.usage is None for c in chunks)
    chunks = list(client.chat.completions.create(model="smollm2-135m", messages=_chat("Hi"), max_tokens=3,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))  # fmt: skip
    *rest, last = chunks
    assert last.choices == [] and last.usage.completion_tokens == 3
    assert all(c.usage is None for c in rest) and rest[-1].choices[0].finish_reason == "length"
    chunks = list(client.completions.create(model="smollm2-135m", prompt="Hi", max_tokens=3, stream=True,
                                            stream_options={"include_usage": True}))  # fmt: skip
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


def test_native_endpoints(http: Any, llm: Any) -> None:
    ids = http.post("/tokenize", json={"content": "Hello world"}).json()["tokens"]
    assert ids == llm.tokenize(b"Hello world", add_bos=False)
    assert http.post("/detokenize", json={"tokens": ids}).json()["content"] == "Hello world"
    assert http.get("/props").json()["default_generation_settings"]["n_ctx"] == 1024
    out = http.post("/completion", json={"prompt": "The capital of France is", "n_predict": 6, "temperature": 0,
                                         "repeat_last_n": 32, "cache_prompt": True}).json()  # fmt: skip
    ref = llm("The capital of France is", max_tokens=6, temperature=0)
    assert out["content"] == ref["choices"][0]["text"] and out["stop"] and out["tokens_predicted"] == 6
    stream = http.post("/completion", json={"prompt": "The capital of France is", "n_predict": 6, "temperature": 0,
                                            "stream": True}).text  # fmt: skip
    events = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith("data: {")]
    assert "".join(e["content"] for e in events) == out["content"] and events[-1]["stop"]
    grammar = http.post("/completion", json={"prompt": "Answer yes or no: is the sky blue?", "n_predict": 4,
                                             "grammar": 'root ::= "yes" | "no"'}).json()  # fmt: skip
    assert grammar["content"] in ("yes", "no")
    emb = http.post("/embedding", json={"content": "Hello"}).json()
    assert emb[0]["embedding"] == pytest.approx(llm.embed("Hello"), abs=1e-6)
    r = http.post("/infill", json={"input_prefix": "def f(", "input_suffix": "):", "n_predict": 2})
    assert r.status_code == 400 and "fill-in-the-middle" in r.json()["error"]["message"]  # SmolLM2 has no FIM


def test_non_loopback_host_without_key_warns() -> None:
    from adadecode.server import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("localhost") and _is_loopback("::1")
    assert not _is_loopback("0.0.0.0")


@pytest.mark.slow
def test_qwen_coder_infill_and_tools(engine: Any, cache_dir: Path) -> None:
    path = cache_dir / "models" / "qwen2.5-coder-0.5b.gguf"
    if not path.is_file():
        pytest.skip("Qwen2.5-Coder-0.5B is not in the cache")
    from adadecode import Llama

    llm = Llama(str(path), n_ctx=1024, n_threads=2)
    out = llm.create_completion("def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))\n", max_tokens=8,
                                temperature=0)  # fmt: skip
    assert "a + b" in out["choices"][0]["text"]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    out = llm.create_chat_completion(_chat("What is the weather in Paris?"), tools=tools, max_tokens=60,
                                     temperature=0)  # fmt: skip
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"city": "Paris"}
