"""The logits-processor hook: every mode chooses from the processed final distribution, so a processor that
depends on the context (a penalty, a grammar) gives the same tokens and logits in every mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adadecode.model import MODES

PROMPT = "def fibonacci(n):\n    # return the n-th Fibonacci number\n"


@pytest.fixture(scope="module")
def model(engine: Any, smollm2_path: Path) -> Any:
    from adadecode.heads import shipped_heads

    heads = shipped_heads().get("smollm2-135m")
    if heads is None:
        pytest.skip("no shipped SmolLM2 heads")
    return engine(smollm2_path, n_ctx=512, n_threads=2, heads=heads)


def _no_repeat_of_recent(window: int) -> Any:
    """Forbids every token among the last `window` of the context: depends on the context at every position."""

    def processor(context: np.ndarray, logits: np.ndarray) -> None:
        assert context.dtype == np.int32 and logits.dtype == np.float32
        logits[context[-window:]] = -np.inf

    return processor


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_every_mode_chooses_from_the_processed_distribution(model: Any, temperature: float) -> None:
    plain = model.generate(PROMPT, max_tokens=48, mode="standard", temperature=temperature, seed=3)
    runs = {
        mode: model.generate(
            PROMPT, max_tokens=48, mode=mode, temperature=temperature, seed=3, return_logits=True,
            logits_processor=_no_repeat_of_recent(4), gamma=0.0 if mode.startswith("adadecode") else None,
            adaptive_exits=False,
        )
        for mode in MODES
    }  # fmt: skip
    std = runs["standard"]
    assert std.tokens != plain.tokens, "the processor changed nothing: the test would prove nothing"
    ids = model.tokenize(PROMPT) + std.tokens
    for pos in range(len(model.tokenize(PROMPT)), len(ids)):
        assert ids[pos] not in ids[pos - 4 : pos], f"a forbidden token was chosen at position {pos}"
    if temperature > 0:
        return  # sampling keeps the distribution, not the sample, across modes
    for mode, run in runs.items():
        assert run.tokens == std.tokens, mode
        assert np.array_equal(run.logits, std.logits), mode
    assert runs["adadecode"].stats["n_verified"] > 0, "no early token was verified against the processed logits"


def test_an_exception_in_the_processor_aborts_the_generation(model: Any) -> None:
    def failing(context: np.ndarray, logits: np.ndarray) -> None:
        raise ValueError("processor failed")

    with pytest.raises(ValueError, match="processor failed"):
        model.generate(PROMPT, max_tokens=8, logits_processor=failing)
    # the model stays usable
    assert model.generate(PROMPT, max_tokens=4).tokens == model.generate(PROMPT, max_tokens=4).tokens


def test_the_context_arrays_are_read_only_views(model: Any) -> None:
    def writes_context(context: np.ndarray, logits: np.ndarray) -> None:
        context[0] = 1

    with pytest.raises(ValueError, match="read-only"):
        model.generate(PROMPT, max_tokens=2, logits_processor=writes_context)
