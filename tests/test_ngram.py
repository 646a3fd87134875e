"""Prompt-lookup (n-gram) drafts in the layer-parallel pipeline: the output stays that of standard decoding.

Greedy tokens and every token's final-layer logits must equal standard decoding's bitwise, in mode "ngram" and
"adadecode+ngram", on prompts where drafts are right (code that repeats its prompt) and prompts built so that long
drafts are wrong; the ends of generation (max_tokens, stop string, end token, context limit) fall inside drafts; the
sampling rule stays exact (chi-square on the first token when a draft proposes it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prompts import PARITY_PROMPTS

EXITS = (8, 15, 22)

# Code that the answer copies from, and prompts whose repeated parts invite long drafts that turn out wrong.
CODE_PROMPT = (
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n"
    "    return fibonacci(n - 1) + fibonacci(n - 2)\n\n"
    "# The same function written iteratively, with the same name and docstring:\n"
)
MISLEADING_PROMPTS = [
    # After "return" the earlier occurrence continues with " a + b", the model writes " a - b".
    "def add(a, b):\n    return a + b\n\ndef subtract(a, b):\n    return",
    # A list that repeats with one change: drafts copy the first copy.
    "red, green, blue, yellow, purple, orange, black, white.\nred, green, blue, yellow, pink,",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3,",
]


@pytest.fixture(scope="module")
def plain(engine: Any, smollm2_path: Path) -> Any:
    """SmolLM2 without exit heads."""
    return engine(smollm2_path, n_ctx=512, n_threads=2)


@pytest.fixture(scope="module")
def with_heads(engine: Any, smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """SmolLM2 with logit-lens (identity) heads, confident often enough to mix head rows with drafted rows."""
    pytest.importorskip("gguf")
    from adadecode.heads_format import write_heads

    model = engine(smollm2_path, n_ctx=512, n_threads=2)
    n = model.n_embd
    heads = write_heads(
        tmp_path_factory.mktemp("heads") / "identity.gguf", arch=model.arch, n_layer=model.n_layer, n_embd=n,
        n_vocab=model.n_vocab, transforms={layer: np.eye(n, dtype=np.float32) for layer in EXITS},
    )
    model.load_heads(heads)
    return model


def _assert_same(std: Any, other: Any) -> None:
    assert other.tokens == std.tokens
    assert other.text == std.text
    assert other.finish_reason == std.finish_reason
    assert std.logits is not None and other.logits is not None
    assert np.array_equal(other.logits, std.logits), "final-layer logits differ bitwise"


def _compare(model: Any, prompt: Any, mode: str, **kwargs: Any) -> tuple[Any, Any]:
    max_tokens = kwargs.pop("max_tokens", 64)
    std = model.generate(prompt, mode="standard", return_logits=True, max_tokens=max_tokens)
    other = model.generate(prompt, mode=mode, return_logits=True, max_tokens=max_tokens, **kwargs)
    return std, other


def test_ngram_parity_where_drafts_are_right(plain: Any) -> None:
    model = plain
    std, ng = _compare(model, CODE_PROMPT, "ngram", max_tokens=96)
    _assert_same(std, ng)
    s = ng.stats
    assert s["mode"] == "ngram"
    assert s["ngram_accepted"] > 10, s  # the answer copies from the prompt: drafts must have been used
    assert s["ngram_fraction"] == pytest.approx(s["ngram_accepted"] / s["n_generated"])
    assert s["early_exit_fraction"] == 0.0
    assert s["n_passes"] < s["n_generated"]  # fewer passes than tokens: drafts saved passes


@pytest.mark.parametrize("max_draft", [1, 2, 5, 8])
def test_ngram_parity_with_misleading_drafts(plain: Any, max_draft: int) -> None:
    model = plain
    drafted = rollbacks = 0
    for prompt in MISLEADING_PROMPTS:
        std, ng = _compare(model, prompt, "ngram", max_tokens=48, max_draft=max_draft)
        _assert_same(std, ng)
        assert max(r for r, c in enumerate(ng.stats["rows_per_pass"]) if c) <= max_draft + 1
        drafted += ng.stats["ngram_drafted"]
        rollbacks += ng.stats["rollbacks"]
    assert drafted > 0 and rollbacks > 0


@pytest.mark.parametrize("prompt", [CODE_PROMPT, *MISLEADING_PROMPTS, *PARITY_PROMPTS[:4]])
def test_adadecode_plus_ngram_parity(with_heads: Any, prompt: str) -> None:
    model = with_heads
    std, both = _compare(model, prompt, "adadecode+ngram", max_tokens=64, gamma=0.3, max_pending=4)
    _assert_same(std, both)
    s = both.stats
    assert s["mode"] == "adadecode+ngram"
    assert sum(s["accepted_per_layer"]) + s["ngram_accepted"] == s["n_accepted"]
    # Every token names its source; accepted provisional tokens past the end of the generation are not emitted.
    assert std.token_sources == "f" * len(std.tokens)
    assert len(both.token_sources) == len(both.tokens) and set(both.token_sources) <= set("fed")
    assert both.token_sources.count("e") <= sum(s["accepted_per_layer"])
    assert both.token_sources.count("d") <= s["ngram_accepted"]
    assert both.token_sources.count("f") >= len(both.tokens) - s["n_accepted"]


def test_adadecode_plus_ngram_gamma_zero_every_row_provisional(with_heads: Any) -> None:
    # γ = 0: every exit check emits, so head rows and drafted rows mix in every window.
    model = with_heads
    for prompt in (CODE_PROMPT, MISLEADING_PROMPTS[0]):
        std, both = _compare(
            model, prompt, "adadecode+ngram", max_tokens=48, gamma=0.0, max_pending=6, adaptive_exits=False
        )
        _assert_same(std, both)
        assert both.stats["n_verified"] > 0 and both.stats["rollbacks"] > 0


@pytest.mark.parametrize("mode", ["ngram", "adadecode+ngram"])
def test_max_tokens_inside_a_draft(with_heads: Any, mode: str) -> None:
    model = with_heads
    for n in (1, 2, 3, 5, 9):
        std = model.generate(CODE_PROMPT, mode="standard", max_tokens=n)
        other = model.generate(CODE_PROMPT, mode=mode, max_tokens=n, gamma=0.0, adaptive_exits=False)
        assert other.tokens == std.tokens and len(other.tokens) == n
        assert other.finish_reason == std.finish_reason == "length"


def test_stop_string_inside_a_draft(plain: Any) -> None:
    model = plain
    std = model.generate(CODE_PROMPT, mode="standard", max_tokens=60)
    stop = std.text[30:34]
    a = model.generate(CODE_PROMPT, mode="standard", max_tokens=60, stop=[stop])
    b = model.generate(CODE_PROMPT, mode="ngram", max_tokens=60, stop=[stop])
    assert a.text == b.text == std.text[: std.text.index(stop)]
    assert a.finish_reason == b.finish_reason == "stop"


def test_end_of_generation_inside_a_draft(with_heads: Any) -> None:
    model = with_heads
    # The chat answer repeats the prompt's text and ends with <|im_end|> long before max_tokens.
    text = model.apply_chat_template([{"role": "user", "content": "Repeat exactly: the cat sat on the mat."}])
    std = model.generate(text, mode="standard", max_tokens=64, return_logits=True)
    assert std.finish_reason == "stop" and len(std.tokens) < 64
    for mode in ("ngram", "adadecode+ngram"):
        _assert_same(
            std, model.generate(text, mode=mode, max_tokens=64, gamma=0.0, return_logits=True, adaptive_exits=False)
        )


def test_ngram_up_to_the_context_limit(engine: Any, smollm2_path: Path) -> None:
    small = engine(smollm2_path, n_ctx=96, n_threads=2)
    ids = small.tokenize(MISLEADING_PROMPTS[2])  # 70 tokens
    std = small.generate(ids, mode="standard", max_tokens=500, return_logits=True)
    ng = small.generate(ids, mode="ngram", max_tokens=500, return_logits=True)
    _assert_same(std, ng)
    assert ng.finish_reason == "length" and len(ids) + len(ng.tokens) == 96 + 1
    assert ng.stats["ngram_accepted"] > 0


def test_streaming_ngram_emits_only_verified_text(plain: Any) -> None:
    model = plain
    std = model.generate(MISLEADING_PROMPTS[0], mode="standard", max_tokens=40)
    pieces = list(model.generate_stream(MISLEADING_PROMPTS[0], mode="ngram", max_tokens=40, max_draft=8))
    assert "".join(pieces) == std.text
    assert model.last_generation.stats["rollbacks"] > 0


def test_ngram_mode_errors(plain: Any) -> None:
    model = plain
    with pytest.raises(ValueError, match="needs exit heads"):
        model.generate("hello", mode="adadecode+ngram")
    with pytest.raises(ValueError, match="max_draft"):
        model.generate("hello", mode="ngram", max_draft=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        model.generate("hello", mode="ngram-simple")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ngram", "adadecode+ngram"])
def test_sampling_with_drafts_is_exact(with_heads: Any, mode: str) -> None:
    """Chi-square goodness of fit of the first sampled token, which a draft proposes, against p."""
    scipy_stats = pytest.importorskip("scipy.stats")
    model = with_heads
    prompt = model.tokenize("the cat sat on the mat, the dog sat on the rug, the cat sat on the")
    sampling = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    logits = model.logits(prompt)[-1].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    n = 600
    runs = [model.generate(prompt, max_tokens=3, seed=s, mode=mode, gamma=0.0, **sampling) for s in range(n)]
    assert sum(r.stats["ngram_drafted"] for r in runs) >= n  # the first token came through a draft every time
    first = [r.tokens[0] for r in runs]
    top = np.argsort(-p)[:8]
    observed = np.array([sum(t == k for t in first) for k in top] + [sum(t not in top for t in first)], dtype=float)
    expected = np.append(p[top], 1 - p[top].sum()) * n
    keep = expected >= 5
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert scipy_stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3, (observed, expected)


def test_stats_show_the_pass_costs(plain: Any) -> None:
    """The curve that priced drafts is in the stats: one row costs 1, more rows never less, as many entries as the
    most rows a pass had; standard decoding timed one-row passes only, sampling none."""
    prompt = plain.tokenize(CODE_PROMPT)
    drafted = plain.generate(prompt, mode="ngram", max_tokens=64).stats
    costs = drafted["pass_costs"]
    assert costs[0] == 1.0 and len(costs) == max(k for k, n in enumerate(drafted["rows_per_pass"]) if n) >= 3
    assert all(b >= a for a, b in zip(costs, costs[1:], strict=False)), costs
    assert plain.generate(prompt, mode="standard", max_tokens=8).stats["pass_costs"] == [1.0]
    assert plain.generate(prompt, mode="ngram", max_tokens=8, temperature=0.8, seed=1).stats["pass_costs"] == []


def test_replay_of_a_recorded_output(plain: Any) -> None:
    """The engine's drafter replayed over standard decoding's output, as bench/ngram_oracle.py uses it."""
    from adadecode import Error, _core

    model = plain
    prompt = model.tokenize(CODE_PROMPT)
    output = model.generate(prompt, mode="standard", max_tokens=96).tokens
    cost = [1.0, 1.2, 1.35, 1.5, 1.65, 1.8, 1.95, 2.1, 2.25]
    r = _core.replay_ngram_drafts(prompt, output, cost)
    assert r["tokens"] == len(output) == r["passes"] + r["accepted"]
    assert r["accepted"] > 10 and r["accepted"] <= r["drafted"]  # the answer copies the prompt
    assert r["cost"] == pytest.approx(sum(n * cost[rows - 1] for rows, n in enumerate(r["rows_per_pass"]) if n))
    assert r["speedup"] == pytest.approx(r["tokens"] / r["cost"]) and r["speedup"] > 1.2
    assert len(r["rows_per_pass"]) == len(cost) + 1
    # max_draft caps the drafts; a curve that does not start at one row is refused.
    assert max(k for k, n in enumerate(_core.replay_ngram_drafts(prompt, output, cost, 2)["rows_per_pass"]) if n) <= 3
    with pytest.raises(Error, match="relative_cost"):
        _core.replay_ngram_drafts(prompt, output, [1.5, 2.0])
    with pytest.raises(Error, match="max_draft"):
        _core.replay_ngram_drafts(prompt, output, cost, 0)


# --------------------------------------------------------------------------------------------------------------------
# exit heads on the rows of a draft in flight (docs/design.md §1, "Exits and drafts")


def _exits_on_drafts(model: Any, prompts: list[Any], max_tokens: int, **kwargs: Any) -> int:
    """Parity of adadecode+ngram with heads checking while drafts are in flight, and with them held back; returns
    how many early tokens were emitted while a draft was in flight."""
    in_drafts = 0
    for prompt in prompts:
        std = model.generate(prompt, mode="standard", return_logits=True, max_tokens=max_tokens)
        both = model.generate(
            prompt, mode="adadecode+ngram", return_logits=True, max_tokens=max_tokens, exits_in_drafts=True, **kwargs
        )
        _assert_same(std, both)
        s = both.stats
        assert sum(s["accepted_per_layer"]) + s["ngram_accepted"] == s["n_accepted"]
        assert s["early_in_drafts"] <= sum(s["early_per_layer"])
        in_drafts += s["early_in_drafts"]
        held = model.generate(
            prompt, mode="adadecode+ngram", return_logits=True, max_tokens=max_tokens, exits_in_drafts=False, **kwargs
        )
        _assert_same(std, held)
        assert held.stats["early_in_drafts"] == 0
    return in_drafts


def _code_prompts(model: Any) -> list[Any]:
    chat = [model.apply_chat_template([{"role": "user", "content": p}]) for p in PARITY_PROMPTS[:3]]
    return [CODE_PROMPT, *MISLEADING_PROMPTS, *chat]


def test_exits_on_draft_rows_parity_shipped_heads(engine: Any, smollm2_path: Path) -> None:
    from adadecode.heads import shipped_heads

    heads = shipped_heads().get("smollm2-135m")
    if heads is None:
        pytest.skip("no shipped heads for smollm2-135m")
    model = engine(smollm2_path, n_ctx=512, n_threads=2, heads=heads)
    prompts = _code_prompts(model)
    # The policy off: every confident head emits, on drafts' rows too; then the shipped configuration.
    assert _exits_on_drafts(model, [prompts[0], prompts[1], prompts[4]], 48, adaptive_exits=False) > 0
    _exits_on_drafts(model, prompts[:1], 48)


def test_exits_on_draft_rows_parity_identity_heads_gamma_zero(with_heads: Any) -> None:
    # γ = 0: a head's token on the last row of every draft, drafts after it, rejections of both kinds.
    assert _exits_on_drafts(with_heads, [CODE_PROMPT, MISLEADING_PROMPTS[0]], 40, gamma=0.0, adaptive_exits=False) > 0


@pytest.mark.slow
def test_exits_on_draft_rows_parity_qwen(engine: Any, cache_dir: Path) -> None:
    from adadecode.heads import shipped_heads

    path = cache_dir / "models" / "qwen2.5-coder-0.5b.gguf"
    if not path.exists():
        pytest.skip(f"{path} not present (`adadecode fetch qwen2.5-coder-0.5b`)")
    heads = shipped_heads().get("qwen2.5-coder-0.5b")
    if heads is None:
        pytest.skip("no shipped heads for qwen2.5-coder-0.5b")
    model = engine(path, n_ctx=1024, n_threads=2, heads=heads)
    prompts = _code_prompts(model)[:1] + _code_prompts(model)[4:]
    assert _exits_on_drafts(model, prompts, 64, adaptive_exits=False) > 0
    _exits_on_drafts(model, prompts[:1], 64)
