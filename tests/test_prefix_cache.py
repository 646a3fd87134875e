"""Prefix reuse across generations, prompt states and the prompt-state caches.

A generation keeps the KV entries of its prompt's longest common prefix with what the cache holds and prefills only
the rest. On the CPU the kernels are batch-invariant, so every generation here must give the same tokens and
bitwise the same final-layer logits as the same generation from an empty cache (a second model, reset first).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adadecode.model import MODES

PROMPT = "def fibonacci(n):\n    # return the n-th Fibonacci number\n"
CHAT = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is"


@pytest.fixture(scope="module")
def heads() -> Any:
    from adadecode.heads import shipped_heads

    h = shipped_heads().get("smollm2-135m")
    if h is None:
        pytest.skip("no shipped SmolLM2 heads")
    return h


@pytest.fixture(scope="module")
def model(engine: Any, smollm2_path: Path, heads: Any) -> Any:
    return engine(smollm2_path, n_ctx=512, n_threads=1, heads=heads)


@pytest.fixture(scope="module")
def ref(engine: Any, smollm2_path: Path, heads: Any) -> Any:
    """The same model with its own cache: reset before each generation, it gives the fresh-cache result."""
    return engine(smollm2_path, n_ctx=512, n_threads=1, heads=heads)


def _fresh(ref: Any, ids: list[int], **kw: Any) -> Any:
    ref.reset()
    out = ref.generate(ids, return_logits=True, **kw)
    assert out.stats["n_prompt_reused"] == 0
    return out


def _check(model: Any, ref: Any, ids: list[int], **kw: Any) -> Any:
    """Generates on `model` (reusing what its cache holds) and checks tokens and logits against a fresh cache."""
    got = model.generate(ids, return_logits=True, **kw)
    want = _fresh(ref, ids, **kw)
    assert got.tokens == want.tokens
    assert got.finish_reason == want.finish_reason
    assert got.logits is not None and want.logits is not None
    assert np.array_equal(got.logits, want.logits), "logits differ from a fresh cache's"
    # The cache holds only what is valid: a prefix of the prompt followed by the generated tokens.
    assert model.cached_tokens == (ids + got.tokens)[: len(model.cached_tokens)]
    return got


def test_shared_prefix_is_reused(model: Any, ref: Any) -> None:
    model.reset()
    ids = model.tokenize(CHAT)
    first = _check(model, ref, ids, max_tokens=8, mode="standard")
    assert first.stats["n_prompt_reused"] == 0
    assert len(model.cached_tokens) == len(ids) + len(first.tokens) - 1  # the last token was never run
    more = ids + first.tokens + model.tokenize(" The capital of Spain is", add_special=False)
    second = _check(model, ref, more, max_tokens=8, mode="standard")
    assert second.stats["n_prompt_reused"] == len(ids) + len(first.tokens) - 1
    # The same prompt again: everything but its last token.
    again = _check(model, ref, more, max_tokens=8, mode="standard")
    assert again.stats["n_prompt_reused"] == len(more) - 1


def test_divergence_inside_the_prompt(model: Any, ref: Any) -> None:
    model.reset()
    ids = model.tokenize(CHAT)
    _check(model, ref, ids, max_tokens=4)
    for k in (1, 5, len(ids) // 2, len(ids) - 2):
        other = ids[:k] + model.tokenize(" Rome is the capital of", add_special=False)
        assert other[k] != ids[k]
        out = _check(model, ref, other, max_tokens=4)
        assert out.stats["n_prompt_reused"] == k
        _check(model, ref, ids, max_tokens=4)  # back to the first prompt: only the common part is kept


def test_divergence_inside_generated_text(model: Any, ref: Any) -> None:
    model.reset()
    ids = model.tokenize(PROMPT)
    first = _check(model, ref, ids, max_tokens=24, mode="adadecode", gamma=0.0, adaptive_exits=False)
    for j in (0, 3, 11, 23):
        model.reset()
        model.generate(ids, max_tokens=24, mode="adadecode", gamma=0.0, adaptive_exits=False)
        bad = (first.tokens[j] + 1) % model.n_vocab
        out = _check(model, ref, ids + first.tokens[:j] + [bad], max_tokens=6, mode="standard")
        assert out.stats["n_prompt_reused"] == len(ids) + j


@pytest.mark.parametrize("mode", MODES)
def test_stop_where_rows_were_in_flight(model: Any, ref: Any, mode: str) -> None:
    """Each max_tokens ends a generation inside a pending window or a draft (gamma 0: every check exits; a
    repetitive prompt: long drafts); the next prompt then continues with a token the provisional rows did not
    have, so whatever the cache held for those rows must not be reused."""
    ids = model.tokenize("a b c d e f g a b c d e f g a b c d e f g a b c")
    kw: dict[str, Any] = {"mode": mode, "adaptive_exits": False}
    if mode.startswith("adadecode"):
        kw["gamma"] = 0.0
    full = _fresh(ref, ids, max_tokens=16, **kw)
    assert full.stats["rollbacks"] > 0 or mode == "standard" or full.stats["n_accepted"] > 0
    for n in range(1, 12, 2):
        model.reset()
        cut = model.generate(ids, max_tokens=n, **kw)
        assert cut.tokens == full.tokens[:n]
        # A token other than the one that followed: it differs from any provisional row at that position.
        follow = ids + cut.tokens + [(full.tokens[n] + 7) % model.n_vocab]
        out = _check(model, ref, follow, max_tokens=4, **kw)
        assert len(ids) + n - 1 <= out.stats["n_prompt_reused"] <= len(ids) + n


def test_rollbacks_then_continuation(model: Any, ref: Any) -> None:
    """A generation with many rejected early tokens (rolled back), then the conversation goes on."""
    model.reset()
    ids = model.tokenize(PROMPT)
    kw = {"mode": "adadecode+ngram", "gamma": 0.0, "adaptive_exits": False}
    first = _check(model, ref, ids, max_tokens=32, **kw)
    assert first.stats["rollbacks"] > 0, "no rollback happened: the test proves nothing"
    nxt = ids + first.tokens + model.tokenize("\n\ndef factorial(n):\n", add_special=False)
    out = _check(model, ref, nxt, max_tokens=16, **kw)
    assert out.stats["n_prompt_reused"] >= len(ids) + len(first.tokens) - 1


def test_modes_and_heads_switched_between_calls(model: Any, ref: Any, heads: Any) -> None:
    model.reset()
    ids = model.tokenize(PROMPT)
    for i, mode in enumerate(["adadecode", "standard", "ngram", "adadecode+ngram", "standard", "adadecode"]):
        out = _check(model, ref, ids, max_tokens=8, mode=mode)
        if i:
            assert out.stats["n_prompt_reused"] > 0
        ids = ids + out.tokens + model.tokenize(f"\n# step {i}\n", add_special=False)
    model.load_heads(heads)  # new heads do not touch the KV cache
    out = _check(model, ref, ids, max_tokens=8, mode="adadecode")
    assert out.stats["n_prompt_reused"] > 0


@pytest.mark.parametrize("mode", ["standard", "adadecode+ngram"])
def test_sampling_with_a_seed(model: Any, ref: Any, mode: str) -> None:
    model.reset()
    ids = model.tokenize(CHAT)
    kw = {"temperature": 0.9, "seed": 11, "mode": mode}
    first = _check(model, ref, ids, max_tokens=12, **kw)
    out = _check(model, ref, ids + first.tokens + model.tokenize(" Next:", add_special=False), max_tokens=12, **kw)
    assert out.stats["n_prompt_reused"] > len(ids)


def test_stop_string_and_max_tokens_inside_the_reused_region(model: Any, ref: Any) -> None:
    model.reset()
    ids = model.tokenize(PROMPT)
    long = _check(model, ref, ids, max_tokens=24)
    # The same prompt with a shorter budget, then with a stop string inside the text generated before.
    short = _check(model, ref, ids, max_tokens=3)
    assert short.tokens == long.tokens[:3]
    stop = long.text[10:14]
    stopped = _check(model, ref, ids, max_tokens=24, stop=stop)
    assert stopped.text == long.text[: long.text.find(stop)]
    assert _check(model, ref, ids, max_tokens=24).tokens == long.tokens


def _stream_and_cancel(model: Any, ids: list[int], n: int, **kw: Any) -> None:
    stream = model.generate_stream(ids, max_tokens=64, **kw)
    for i, _ in enumerate(stream):
        if i + 1 == n:
            break
    stream.close()


class _Boom(Exception):
    pass


def _raise_after(n: int, exc: BaseException) -> Any:
    calls = [0]

    def processor(_context: np.ndarray, _logits: np.ndarray) -> None:
        calls[0] += 1
        if calls[0] > n:
            raise exc

    return processor


@pytest.mark.parametrize("mode", ["standard", "adadecode+ngram"])
def test_after_a_cancellation(model: Any, ref: Any, mode: str) -> None:
    ids = model.tokenize(PROMPT)
    kw: dict[str, Any] = {"mode": mode, "adaptive_exits": False}
    if mode.startswith("adadecode"):
        kw["gamma"] = 0.0
    full = _fresh(ref, ids, max_tokens=30, **kw)
    how: list[Any] = [
        lambda: _stream_and_cancel(model, ids, 5, **kw),  # the consumer stops early (a client going away)
        lambda: model.generate(ids, max_tokens=30, _on_text=lambda _piece: False, **kw),  # callback says stop
    ]

    def raising_callback() -> None:
        def on_text(_piece: str) -> bool:
            raise _Boom

        with pytest.raises(_Boom):
            model.generate(ids, max_tokens=30, _on_text=on_text, **kw)

    how.append(raising_callback)
    for exc in (_Boom(), KeyboardInterrupt()):

        def raising_processor(exc: BaseException = exc) -> None:
            with pytest.raises(type(exc)):
                model.generate(ids, max_tokens=30, logits_processor=_raise_after(7, exc), **kw)

        how.append(raising_processor)
    for stop_it in how:
        model.reset()
        model.generate(ids, max_tokens=3, **kw)  # the cache holds a prompt and a little more
        stop_it()
        cached = model.cached_tokens
        assert cached == (ids + full.tokens)[: len(cached)], "the cache claims tokens that were not run"
        out = _check(model, ref, ids + full.tokens[:20] + model.tokenize(" x", add_special=False), max_tokens=6, **kw)
        assert out.stats["n_prompt_reused"] >= len(ids) - 1


def test_context_nearly_full(engine: Any, smollm2_path: Path) -> None:
    small = engine(smollm2_path, n_ctx=48, n_threads=1)
    small_ref = engine(smollm2_path, n_ctx=48, n_threads=1)
    ids = small.tokenize(PROMPT)
    first = _check(small, small_ref, ids, max_tokens=100)
    # The last token is chosen at the position past the context; every position ran.
    assert first.finish_reason == "length" and len(ids) + len(first.tokens) == 49
    assert len(small.cached_tokens) == 48
    for keep in (47, 46, 30):
        out = _check(small, small_ref, (ids + first.tokens)[:keep], max_tokens=100)
        assert out.stats["n_prompt_reused"] == keep - 1
        assert len(out.tokens) == 49 - keep


# --- prompt states ----------------------------------------------------------------------------------------------


def test_save_and_load_state(model: Any, ref: Any) -> None:
    model.reset()
    a = model.tokenize(PROMPT)
    first = model.generate(a, max_tokens=10)
    state = model.save_state()
    assert list(state.tokens) == model.cached_tokens and state.n_tokens == len(a) + 9
    assert state.nbytes == len(bytes(state)) > 0
    model.generate(model.tokenize(CHAT), max_tokens=4)  # another conversation replaces the cache
    model.load_state(state)
    assert model.cached_tokens == list(state.tokens)
    out = _check(model, ref, a + first.tokens + model.tokenize("\n", add_special=False), max_tokens=8)
    assert out.stats["n_prompt_reused"] == state.n_tokens
    # From bytes, e.g. a file.
    model.reset()
    model.load_state(bytes(state))
    assert model.cached_tokens == list(state.tokens)


def test_bad_states_are_refused(model: Any, engine: Any, smollm2_path: Path, tmp_path: Path) -> None:
    from adadecode import Error, PromptState

    model.reset()
    model.generate(model.tokenize(PROMPT), max_tokens=4)
    state = model.save_state()
    data = bytes(state)
    model.reset()
    model.generate(model.tokenize(CHAT), max_tokens=2)
    before = model.cached_tokens

    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x40
    cases = {
        "checksum": bytes(flipped),
        "truncated": data[: len(data) - 100],
        "magic": b"NOTSTATE" + data[8:],
        "too short": data[:20],
        "empty": b"",
    }
    for name, bad in cases.items():
        with pytest.raises((Error, ValueError), match="corrupt|truncated|magic|not an adadecode"):
            model.load_state(bad)
        assert model.cached_tokens == before, name
    with pytest.raises(TypeError):
        model.load_state("a string")

    other_ctx = engine(smollm2_path, n_ctx=256, n_threads=1)
    with pytest.raises(Error, match="n_ctx 512.*n_ctx 256"):
        other_ctx.load_state(state)
    with pytest.raises(Error, match="n_ctx"):  # the engine checks too, whatever the Python header says
        other_ctx._engine.load_state(data)

    from tiny_gguf import write_tiny_model

    tiny = engine(write_tiny_model(tmp_path / "tiny.gguf"), n_ctx=512, n_threads=1)
    with pytest.raises(Error, match="another model"):
        tiny.load_state(state)
    with pytest.raises(Error, match="another model"):
        tiny._engine.load_state(data)
    fine_tuned = engine(write_tiny_model(tmp_path / "tiny2.gguf", seed=1), n_ctx=512, n_threads=1)
    assert fine_tuned.fingerprint != tiny.fingerprint  # same shapes, other weights
    with pytest.raises(ValueError, match="not an adadecode"):
        PromptState.from_bytes(b"x" * 100)


# --- prompt-state caches ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llm(model: Any) -> Any:
    from adadecode import Llama

    return Llama.from_model(model)


def test_ram_cache_keeps_two_conversations(llm: Any, ref: Any) -> None:
    from adadecode import LlamaRAMCache

    cache = LlamaRAMCache(capacity_bytes=64 << 20)
    llm.set_cache(cache)
    try:
        llm.reset()
        convs: list[list[dict[str, str]]] = [
            [{"role": "system", "content": "You are a helpful geography assistant. Answer briefly."}],
            [{"role": "system", "content": "You write Python code and explain it in one sentence."}],
        ]
        questions = [["What is the capital of France?", "And of Spain?"], ["Reverse a list.", "Sort it."]]
        for turn in range(2):
            for c in range(2):
                convs[c].append({"role": "user", "content": questions[c][turn]})
                ids = llm.chat_prompt_ids(convs[c])
                out = llm.create_chat_completion(convs[c], max_tokens=6, temperature=0)
                stats = out["adadecode"]
                if turn == 1:  # the other conversation ran in between; its state came back from the cache
                    assert stats["n_prompt_reused"] > len(llm.chat_prompt_ids(convs[c][:2])) - 1
                want = _fresh(ref, ids, max_tokens=6, temperature=0)
                assert out["choices"][0]["message"]["content"] == want.text
                convs[c].append({"role": "assistant", "content": out["choices"][0]["message"]["content"]})
        assert len(cache) == 2 and 0 < cache.cache_size <= cache.capacity_bytes
    finally:
        llm.set_cache(None)


def test_cache_budget(llm: Any) -> None:
    from adadecode import LlamaRAMCache

    for bad in (0, -5):
        with pytest.raises(ValueError, match="capacity_bytes must be positive"):
            LlamaRAMCache(capacity_bytes=bad)
    with pytest.raises(TypeError):
        llm.set_cache("not a cache")
    tiny = LlamaRAMCache(capacity_bytes=1000)  # no state of this model fits: nothing cached, no error
    llm.set_cache(tiny)
    try:
        llm("Hello", max_tokens=2, temperature=0)
        assert len(tiny) == 0 and tiny.cache_size == 0
    finally:
        llm.set_cache(None)
    one = llm.save_state()
    small = LlamaRAMCache(capacity_bytes=int(one.nbytes * 2.5))
    for i in range(5):  # unrelated keys: the least recently used go
        small[[10_000 + i]] = one
        assert small.cache_size <= small.capacity_bytes
    assert len(small) == 2 and [10_004] in small and [10_000] not in small


def test_disk_cache(llm: Any, ref: Any, tmp_path: Path) -> None:
    from adadecode import LlamaDiskCache

    llm.set_cache(LlamaDiskCache(tmp_path / "states", capacity_bytes=64 << 20))
    try:
        llm.reset()
        llm(PROMPT, max_tokens=6, temperature=0)
        assert len(list((tmp_path / "states").glob("*.state"))) == 1
        llm.reset()
        # A new cache object (a new process) finds the state in the folder.
        llm.set_cache(LlamaDiskCache(tmp_path / "states", capacity_bytes=64 << 20))
        out = llm(PROMPT, max_tokens=12, temperature=0)
        assert out["adadecode"]["n_prompt_reused"] == len(llm.tokenize(PROMPT.encode())) - 1
        assert out["choices"][0]["text"] == _fresh(ref, llm.tokenize(PROMPT.encode()), max_tokens=12).text
    finally:
        llm.set_cache(None)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def tiny_llm(engine: Any, tmp_path: Path) -> Iterator[Any]:
    from adadecode import Llama
    from tiny_gguf import write_tiny_model

    yield Llama(write_tiny_model(tmp_path / "tiny.gguf"), n_ctx=128, n_threads=1)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
def test_memory_is_flat_over_many_conversations(tiny_llm: Any) -> None:
    from adadecode import LlamaRAMCache

    cache = LlamaRAMCache(capacity_bytes=256 << 10)
    tiny_llm.set_cache(cache)
    rng = np.random.default_rng(0)
    n_vocab = tiny_llm.n_vocab()
    convs: list[list[int]] = [[1] for _ in range(6)]
    reused = 0
    rss_after_warmup = 0
    for turn in range(1000):
        c = turn % len(convs)
        if len(convs[c]) > 100:
            convs[c] = [1, int(rng.integers(3, n_vocab))]  # a new conversation in this slot
        convs[c] = convs[c] + rng.integers(3, n_vocab, size=3).tolist()
        out = tiny_llm(convs[c], max_tokens=2, temperature=0)
        reused += out["adadecode"]["n_prompt_reused"]
        assert cache.cache_size <= cache.capacity_bytes
        if turn == 199:
            rss_after_warmup = _rss_bytes()
    assert reused > 0
    assert 0 < len(cache) <= 60
    grown = _rss_bytes() - rss_after_warmup
    assert grown < 16 << 20, f"RSS grew by {grown >> 20} MiB over 800 conversation turns"


def test_stream_closed_early_keeps_a_usable_cache(llm: Any, ref: Any) -> None:
    from adadecode import LlamaRAMCache

    llm.set_cache(LlamaRAMCache(capacity_bytes=64 << 20))
    try:
        llm.reset()
        messages = [{"role": "user", "content": "Count from one to twenty in words."}]
        chunks = llm.create_chat_completion(messages, max_tokens=40, temperature=0, stream=True)
        for i, _ in enumerate(chunks):
            if i == 4:
                break
        chunks.close()  # the client went away
        ids = llm.chat_prompt_ids(messages)
        assert len(llm.cache) == 1
        cached = llm.model.cached_tokens
        want = _fresh(ref, ids, max_tokens=40, temperature=0)
        assert cached == (ids + want.tokens)[: len(cached)] and len(cached) >= len(ids)
        out = llm.create_chat_completion(messages, max_tokens=40, temperature=0)
        assert out["adadecode"]["n_prompt_reused"] == len(ids) - 1
        assert out["choices"][0]["message"]["content"] == want.text
    finally:
        llm.set_cache(None)


def test_server_reuses_the_conversation(smollm2_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from adadecode import Llama, LlamaRAMCache
    from adadecode.server import create_app

    llm = Llama(smollm2_path, n_ctx=512, n_threads=1, cache=LlamaRAMCache(capacity_bytes=32 << 20))
    messages = [
        {"role": "system", "content": "You are a helpful assistant who answers in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ]

    def metrics(client: Any, generations: int) -> dict[str, float]:
        """/metrics once the worker has counted `generations` (it counts after answering)."""
        import time

        deadline = time.monotonic() + 60
        while True:
            lines = client.get("/metrics").text.splitlines()
            m = {k: float(v) for k, v in (line.rsplit(" ", 1) for line in lines if line and line[0] != "#")}
            if m["adadecode_generations_total"] >= generations or time.monotonic() > deadline:
                return m
            time.sleep(0.05)

    with TestClient(create_app(llm)) as client:
        first = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 8, "temperature": 0})
        assert first.status_code == 200, first.text
        m1 = metrics(client, 1)
        assert m1["adadecode_prompt_tokens_reused_total"] == 0
        assert m1["adadecode_prompt_tokens_computed_total"] == first.json()["usage"]["prompt_tokens"]
        messages += [
            {"role": "assistant", "content": first.json()["choices"][0]["message"]["content"]},
            {"role": "user", "content": "And of Germany?"},
        ]
        second = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 8, "temperature": 0})
        assert second.status_code == 200, second.text
        m2 = metrics(client, 2)
        reused = m2["adadecode_prompt_tokens_reused_total"]
        computed = m2["adadecode_prompt_tokens_computed_total"] - m1["adadecode_prompt_tokens_computed_total"]
        assert reused >= first.json()["usage"]["prompt_tokens"], "turn 2 prefilled turn 1 again"
        assert reused + computed == second.json()["usage"]["prompt_tokens"]
        assert second.json()["adadecode"]["n_prompt_reused"] == reused


def test_serve_refuses_a_bad_cache_budget(smollm2_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "adadecode", "serve", "-m", str(smollm2_path), "--cache-ram", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0 and "--cache-ram must be at least 1" in proc.stderr
