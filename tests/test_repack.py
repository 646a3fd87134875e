"""Weights repacked into ggml's CPU extra buffer types (multi-row kernels) keep decoding exact.

The Q4_K tensors of the Qwen2.5-Coder Q4_K_M files are the ones the repack type takes on x86; SmolLM2 (Q4_1) has
none. These tests run on the 0.5B Qwen model when it is in the cache (they never download it) and check what greedy
parity needs: a row's logits do not depend on how many rows share its pass, and layer-parallel decoding gives the
same tokens and bitwise the same logits as standard decoding, for every window size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prompts import PARITY_PROMPTS

MODEL = "qwen2.5-coder-0.5b"


@pytest.fixture(scope="module")
def qwen_path(cache_dir: Path) -> Path:
    path = cache_dir / "models" / f"{MODEL}.gguf"
    if not path.exists():
        pytest.skip(f"{path} not present (`adadecode fetch {MODEL}`)")
    return path


@pytest.fixture(scope="module")
def repacked(engine: Any, qwen_path: Path) -> Any:
    model = engine(qwen_path, n_ctx=512, n_threads=2, repack=True)
    if model.n_repacked == 0:
        pytest.skip("ggml has no repacked layout for this model's weights on this CPU")
    return model


@pytest.mark.slow
def test_repacked_logits_are_batch_invariant(repacked: Any) -> None:
    ids = repacked.tokenize(PARITY_PROMPTS[0])[:24]
    full = repacked.logits(ids)
    for n in (1, 2, 3, 5, 6, 7, 9, 13):
        assert np.array_equal(repacked.logits(ids[:n]), full[:n]), f"{n} rows"


@pytest.mark.slow
def test_repacked_close_to_mmapped(engine: Any, qwen_path: Path, repacked: Any) -> None:
    # Another kernel for the same quantized weights: not bitwise equal, but the same model.
    plain = engine(qwen_path, n_ctx=512, n_threads=2)
    assert plain.n_repacked == 0
    # Six prompts (about 60 positions): on a single short prompt one or two near-tie flips decide the rate.
    prompts = [repacked.tokenize(p)[:64] for p in PARITY_PROMPTS[:6]]
    a = np.concatenate([repacked.logits(ids) for ids in prompts])
    b = np.concatenate([plain.logits(ids) for ids in prompts])
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.9
    assert float(np.abs(a - b).mean()) < 0.1


@pytest.mark.slow
def test_repacked_layer_parallel_parity(repacked: Any, tmp_path: Path) -> None:
    from adadecode.heads_format import write_heads

    n = repacked.n_embd
    exits = (6, 12, 18)
    heads = write_heads(
        tmp_path / "identity.gguf",
        arch=repacked.arch,
        n_layer=repacked.n_layer,
        n_embd=n,
        n_vocab=repacked.n_vocab,
        transforms={layer: np.eye(n, dtype=np.float32) for layer in exits},
    )
    repacked.load_heads(heads)
    prompt = PARITY_PROMPTS[2]
    std = repacked.generate(prompt, mode="standard", max_tokens=24, return_logits=True)
    for max_pending in (1, 3, 4, 5, 8):
        ada = repacked.generate(
            prompt,
            mode="adadecode",
            max_tokens=24,
            gamma=0.0,
            max_pending=max_pending,
            return_logits=True,
            adaptive_exits=False,
        )
        assert ada.tokens == std.tokens, f"max_pending={max_pending}"
        assert np.array_equal(ada.logits, std.logits), f"max_pending={max_pending}: logits differ bitwise"
        assert ada.stats["n_verified"] > 0
