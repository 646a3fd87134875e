"""The llama-cpp-python style API (adadecode.Llama) on SmolLM2: OpenAI-format results equal to what the engine
generates, streaming, finish reasons, stop strings, early stop of a stream, errors, and the chat prompt against
Hugging Face's rendering of the same GGUF's chat template."""

from __future__ import annotations

import pydoc
from pathlib import Path
from typing import Any

import pytest

import adadecode
from adadecode import InvalidRequestError, Llama
from adadecode.model import MODES

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def model(engine: Any, smollm2_path: Path) -> Any:
    return engine(smollm2_path, n_ctx=512, n_threads=1)


@pytest.fixture(scope="module")
def llm(model: Any) -> Llama:
    return Llama.from_model(model)


@pytest.fixture(scope="module")
def llm_heads(engine: Any, smollm2_path: Path) -> Llama:
    return Llama(smollm2_path, heads="auto", n_ctx=512, n_threads=1)


def test_completion_is_openai_format_and_equals_engine(llm: Llama, model: Any) -> None:
    out = llm(PROMPT, max_tokens=10, temperature=0)
    ref = model.generate(PROMPT, max_tokens=10)
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    assert out["model"] == "smollm2-135m" and isinstance(out["created"], int)
    (choice,) = out["choices"]
    assert choice["text"] == ref.text and choice["index"] == 0
    assert choice["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": len(model.tokenize(PROMPT)), "completion_tokens": 10,
                            "total_tokens": len(model.tokenize(PROMPT)) + 10}  # fmt: skip
    stats = out["adadecode"]
    assert stats["mode"] == "standard" and stats["n_generated"] == 10 and stats["tokens_per_second"] > 0


def test_adadecode_mode_same_text_with_statistics(llm: Llama, llm_heads: Llama) -> None:
    plain = llm(PROMPT, max_tokens=24, temperature=0)
    fast = llm_heads(PROMPT, max_tokens=24, temperature=0)
    assert fast["choices"][0]["text"] == plain["choices"][0]["text"]
    for mode in MODES:  # every decoding method, chosen per request, gives the same greedy text
        out = llm_heads(PROMPT, max_tokens=24, temperature=0, mode=mode)
        assert out["choices"][0]["text"] == plain["choices"][0]["text"] and out["adadecode"]["mode"] == mode
    stats = fast["adadecode"]
    assert stats["mode"] == "adadecode" and stats["exit_layers"]
    assert 0 <= stats["early_exit_fraction"] <= 1 and 0 <= stats["accept_rate"] <= 1
    assert stats["n_accepted"] <= stats["n_verified"] and stats["rollbacks"] >= 0


def test_stream_pieces_join_to_the_same_text(llm_heads: Llama) -> None:
    whole = llm_heads.create_completion(PROMPT, max_tokens=20, temperature=0)
    chunks = list(llm_heads.create_completion(PROMPT, max_tokens=20, temperature=0, stream=True))
    assert len(chunks) > 3  # streamed, not one piece
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "length"
    assert last["usage"]["completion_tokens"] == 20 and last["adadecode"]["mode"] == "adadecode"


def test_stop_string_and_echo(llm: Llama, model: Any) -> None:
    full = model.generate(PROMPT, max_tokens=10).text  # " Paris.\n\nThe ..." for this model
    stop = full[3:6]
    out = llm(PROMPT, max_tokens=10, temperature=0, stop=[stop], echo=True)
    assert out["choices"][0]["text"] == PROMPT + full[: full.index(stop)]
    assert out["choices"][0]["finish_reason"] == "stop"
    streamed = llm(PROMPT, max_tokens=10, temperature=0, stop=stop, stream=True)
    chunks = list(streamed)
    assert "".join(c["choices"][0]["text"] for c in chunks) == full[: full.index(stop)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_token_id_prompt_and_helpers(llm: Llama) -> None:
    ids = llm.tokenize(PROMPT.encode())
    assert llm.detokenize(ids) == PROMPT.encode()
    assert (
        llm(ids, max_tokens=6, temperature=0)["choices"][0]["text"]
        == llm(PROMPT, max_tokens=6, temperature=0)["choices"][0]["text"]
    )
    assert llm.n_ctx() == 512


@pytest.mark.slow  # loading the tokenizer with transformers takes ~10 s
def test_chat_prompt_matches_transformers_template(llm: Llama, smollm2_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "colour."}]},
    ]
    for messages in (CHAT, conversation):
        plain = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else "Name a colour."}
                 for m in messages]  # fmt: skip
        ref = tok.apply_chat_template(plain, add_generation_prompt=True, tokenize=True)
        ref_ids = list(ref["input_ids"] if hasattr(ref, "keys") else ref)
        assert llm.chat_prompt_ids(messages) == ref_ids


def test_chat_completion_and_stream(llm: Llama, model: Any) -> None:
    ref = model.generate(llm.chat_prompt_ids(CHAT), max_tokens=16)
    out = llm.create_chat_completion(CHAT, max_tokens=16, temperature=0)
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"] == {"role": "assistant", "content": ref.text}
    assert out["choices"][0]["finish_reason"] == ("length" if ref.finish_reason == "length" else "stop")
    chunks = list(llm.create_chat_completion(CHAT, max_tokens=16, temperature=0, stream=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == ref.text
    assert chunks[-1]["choices"][0]["finish_reason"] == out["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"] == out["usage"]


def test_end_of_turn_gives_finish_stop(llm: Llama) -> None:
    out = llm.create_chat_completion([{"role": "user", "content": "Say just the word yes."}], max_tokens=64,
                                     temperature=0)  # fmt: skip
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["completion_tokens"] < 64 and "<|im_end|>" not in out["choices"][0]["message"]["content"]


def test_closing_a_stream_stops_the_engine(llm: Llama, model: Any) -> None:
    stream = llm.create_completion("1, 2, 3, 4, 5,", max_tokens=200, temperature=0, stream=True)
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    stream.close()  # type: ignore[union-attr]
    gen = model.last_generation
    assert gen is not None and len(gen.tokens) < 10  # stopped at the next token, not after 200
    # and the model is free for the next request
    assert llm(PROMPT, max_tokens=3, temperature=0)["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": [1, 2, 10**9]}, "prompt"),
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": -0.1}, "min_p"),
        ({"top_k": -1}, "top_k"),
        ({"seed": -3}, "seed"),
        ({"mode": "fast"}, "mode"),
        ({"mode": "adadecode"}, "mode"),  # no heads loaded
        ({"mode": "adadecode+ngram"}, "mode"),
        ({"max_draft": 0}, "max_draft"),
        ({"gamma": 1.5}, "gamma"),
        ({"gamma": -0.1}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"max_pending": 0}, "max_pending"),
        ({"max_pending": -4}, "max_pending"),
        ({"adaptive_exits": "no"}, "adaptive_exits"),
        ({"prompt": b"caf\xe9"}, "prompt"),  # Latin-1 bytes: not UTF-8
        ({"prompt": "ab\udcff"}, "prompt"),  # a lone surrogate, as JSON's \udcff escape gives
        ({"prompt": "word " * 600}, "prompt"),  # longer than n_ctx=512
    ],
)
def test_bad_arguments_raise_before_streaming(llm: Llama, kwargs: dict[str, Any], param: str) -> None:
    args = {"prompt": PROMPT, "max_tokens": 4, **kwargs}
    for stream in (False, True):
        with pytest.raises(InvalidRequestError) as info:
            llm.create_completion(**args, stream=stream)
        assert info.value.param == param


@pytest.mark.parametrize(
    "messages",
    [
        [],
        "hello",
        [{"role": "wizard", "content": "hi"}],
        [{"role": "user", "content": [{"type": "image_url"}]}],
        [{"role": "user", "content": "\ud800 unpaired"}],
    ],
)
def test_bad_chat_messages(llm: Llama, messages: Any) -> None:
    with pytest.raises(InvalidRequestError, match="messages"):
        llm.create_chat_completion(messages, stream=True)


def test_invalid_text_errors_name_the_problem(llm: Llama) -> None:
    with pytest.raises(InvalidRequestError, match=r"the prompt is not valid UTF-8: byte 0xe9 at offset 3"):
        llm(b"caf\xe9", max_tokens=2)
    with pytest.raises(InvalidRequestError, match=r"lone surrogate U\+DCFF at position 2"):
        llm("ab\udcff", max_tokens=2)
    with pytest.raises(InvalidRequestError, match=r"messages\[1\]\.content .* lone surrogate U\+D800"):
        llm.create_chat_completion([CHAT[0], {"role": "user", "content": "\ud800"}], max_tokens=2)


def test_bytes_prompt_is_utf8_text_not_token_ids(llm: Llama) -> None:
    text = "Le café est"
    as_text = llm(text, max_tokens=6, temperature=0)
    as_bytes = llm(text.encode(), max_tokens=6, temperature=0)
    assert as_bytes["choices"][0]["text"] == as_text["choices"][0]["text"]
    assert as_bytes["usage"] == as_text["usage"]


def test_max_tokens_past_the_context_stops_with_length(engine: Any, smollm2_path: Path) -> None:
    small = Llama(smollm2_path, n_ctx=24, n_threads=1)
    n_prompt = len(small.tokenize(PROMPT.encode()))
    for max_tokens in (10**9, None, 0):  # past the context; None and <= 0 mean "until the context is full"
        out = small(PROMPT, max_tokens=max_tokens, temperature=0)
        assert out["choices"][0]["finish_reason"] == "length"
        assert out["usage"]["completion_tokens"] == 24 - n_prompt
    chunks = list(small(PROMPT, max_tokens=10**9, temperature=0, stream=True))
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(c["choices"][0]["text"] for c in chunks) == out["choices"][0]["text"]


def test_stop_string_spanning_tokens(llm: Llama, model: Any) -> None:
    full = model.generate(PROMPT, max_tokens=24)
    pieces = [model.detokenize(full.tokens[: i + 1]) for i in range(len(full.tokens))]
    boundary = next(i for i in range(2, len(pieces)) if len(pieces[i - 1]) - len(pieces[i - 2]) >= 2)
    cut = len(pieces[boundary - 1]) - 1  # the stop string starts with one token's last character
    stop = full.text[cut : cut + 3]
    assert full.text.find(stop) == cut and len(pieces[boundary]) >= cut + 3
    out = llm(PROMPT, max_tokens=24, temperature=0, stop=["never there", stop])
    assert out["choices"][0]["text"] == full.text[:cut] and out["choices"][0]["finish_reason"] == "stop"
    chunks = list(llm(PROMPT, max_tokens=24, temperature=0, stop=stop, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == full.text[:cut]


def test_prompt_token_limit(llm: Llama) -> None:
    limited = Llama.from_model(llm.model)
    limited.max_prompt_tokens = 3
    with pytest.raises(InvalidRequestError, match="more than the limit of 3"):
        limited(PROMPT, max_tokens=2)


def test_help_documents_the_api() -> None:
    text = pydoc.render_doc(adadecode, renderer=pydoc.plaintext)
    for name in ("Llama", "create_completion", "create_chat_completion", "adadecode serve", "adadecode chat"):
        assert name in text, name
    assert "finish_reason" in (Llama.create_completion.__doc__ or "")


def test_a_second_generation_while_one_runs_is_refused(llm: Llama) -> None:
    # The engine is not reentrant: an unfinished stream keeps it busy, and a second request must not run on it.
    stream = llm.create_completion("1, 2, 3, 4, 5,", max_tokens=200, temperature=0, stream=True)
    next(stream)  # type: ignore[call-overload]
    with pytest.raises(adadecode.Error, match="already generating"):
        llm(PROMPT, max_tokens=2, temperature=0)
    stream.close()  # type: ignore[union-attr]
    assert llm(PROMPT, max_tokens=2, temperature=0)["usage"]["completion_tokens"] == 2
