"""Parity of layer-parallel decoding (AdaDecode) with standard decoding, token for token and logit for logit.

Greedy output must be identical and, on the CPU backend, every generated token's final-layer logits bitwise equal.
Heads: the shipped SmolLM2 heads when present, plus adversarial ones made here (logit-lens identity heads,
random heads that are almost always wrong), γ = 0 (every check exits), every max_pending from 1 to 8, and the
ends of generation (end token, stop string, max_tokens, context limit) falling inside a pending window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prompts import PARITY_PROMPTS

EXITS = (8, 15, 22)


def _write(path: Path, model: Any, transforms: dict[int, np.ndarray], vocab: Any = None) -> Path:
    from adadecode.heads_format import write_heads

    return write_heads(
        path, arch=model.arch, n_layer=model.n_layer, n_embd=model.n_embd, n_vocab=model.n_vocab,
        transforms=transforms, vocab=vocab,
    )


@pytest.fixture(scope="module")
def model(engine: Any, smollm2_path: Path) -> Any:
    return engine(smollm2_path, n_ctx=512, n_threads=2)


@pytest.fixture(scope="module")
def heads_files(model: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("gguf")
    from adadecode.heads import shipped_heads

    d = tmp_path_factory.mktemp("heads")
    rng = np.random.default_rng(7)
    n = model.n_embd
    files = {
        "identity": _write(d / "identity.gguf", model, {layer: np.eye(n, dtype=np.float32) for layer in EXITS}),
        "random": _write(
            d / "random.gguf", model,
            {layer: rng.normal(0, 1 / np.sqrt(n), (n, n)).astype(np.float32) for layer in EXITS},
        ),
        "subset": _write(
            d / "subset.gguf", model, {layer: np.eye(n, dtype=np.float32) for layer in EXITS},
            vocab=np.arange(0, model.n_vocab, 3),
        ),
    }
    shipped = shipped_heads().get("smollm2-135m")
    if shipped is not None:
        files["shipped"] = shipped
    return files


def _pair(model: Any, prompt: Any, **kwargs: Any) -> tuple[Any, Any]:
    # Adversarial heads must keep exiting to be adversarial: the exit policy would soon retire them.
    kwargs.setdefault("adaptive_exits", False)
    std = model.generate(prompt, mode="standard", return_logits=True, **kwargs)
    ada = model.generate(prompt, mode="adadecode", return_logits=True, **kwargs)
    return std, ada


def _assert_identical(std: Any, ada: Any) -> None:
    assert ada.tokens == std.tokens
    assert ada.text == std.text
    assert ada.finish_reason == std.finish_reason
    assert std.logits is not None and ada.logits is not None
    assert ada.logits.shape == std.logits.shape
    assert np.array_equal(ada.logits, std.logits), "final-layer logits differ bitwise"


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "n_prompts"), [("shipped", 20), ("identity", 8)])
def test_parity_on_real_prompts(model: Any, heads_files: dict[str, Path], kind: str, n_prompts: int) -> None:
    if kind not in heads_files:
        pytest.skip("no shipped heads for smollm2-135m yet")
    model.load_heads(heads_files[kind])
    early = 0
    for prompt in PARITY_PROMPTS[:n_prompts]:
        text = model.apply_chat_template([{"role": "user", "content": prompt}])
        std, ada = _pair(
            model, text, max_tokens=128, gamma=0.75 if kind == "shipped" else 0.5, adaptive_exits=kind == "shipped"
        )
        _assert_identical(std, ada)
        early += ada.stats["n_accepted"]
    assert early > 0, "no token was ever emitted early: the test exercised nothing"


@pytest.mark.parametrize("max_pending", range(1, 9))
def test_parity_every_max_pending_gamma_zero(model: Any, heads_files: dict[str, Path], max_pending: int) -> None:
    model.load_heads(heads_files["identity"])
    std, ada = _pair(model, PARITY_PROMPTS[2], max_tokens=48, gamma=0.0, max_pending=max_pending)
    _assert_identical(std, ada)
    hist = ada.stats["rows_per_pass"]
    assert len(hist) - 1 == max_pending + 1 or max_pending > 3, hist  # windows really fill up
    assert ada.stats["n_verified"] > 0


def test_parity_random_heads_many_rollbacks(model: Any, heads_files: dict[str, Path]) -> None:
    model.load_heads(heads_files["random"])
    for prompt in PARITY_PROMPTS[:3]:
        std, ada = _pair(model, prompt, max_tokens=40, gamma=0.0, max_pending=5)
        _assert_identical(std, ada)
        assert ada.stats["rollbacks"] >= 10


def test_parity_vocabulary_subset_heads(model: Any, heads_files: dict[str, Path]) -> None:
    model.load_heads(heads_files["subset"])
    std, ada = _pair(model, PARITY_PROMPTS[3], max_tokens=48, gamma=0.2)
    _assert_identical(std, ada)
    assert ada.stats["n_verified"] > 0


def test_parity_with_a_subset_of_exit_layers(model: Any, heads_files: dict[str, Path]) -> None:
    model.load_heads(heads_files["identity"])
    for layers in ([15], [8, 22]):
        std = model.generate(PARITY_PROMPTS[5], mode="standard", max_tokens=32)
        ada = model.generate(
            PARITY_PROMPTS[5], mode="adadecode", max_tokens=32, gamma=0.0, exit_layers=layers, adaptive_exits=False
        )
        assert ada.tokens == std.tokens
        assert ada.stats["exit_layers"] == layers


def test_max_tokens_inside_a_pending_window(model: Any, heads_files: dict[str, Path]) -> None:
    model.load_heads(heads_files["identity"])
    for n in (1, 2, 3, 7, 13):
        std, ada = _pair(model, PARITY_PROMPTS[18], max_tokens=n, gamma=0.0, max_pending=8)
        _assert_identical(std, ada)
        assert len(ada.tokens) == n


def test_stop_string_inside_a_pending_window(model: Any, heads_files: dict[str, Path]) -> None:
    model.load_heads(heads_files["identity"])
    std = model.generate(PARITY_PROMPTS[18], mode="standard", max_tokens=40)
    stop = std.text[12:15]
    a = model.generate(PARITY_PROMPTS[18], mode="standard", max_tokens=40, stop=[stop])
    b = model.generate(
        PARITY_PROMPTS[18], mode="adadecode", max_tokens=40, stop=[stop], gamma=0.0, max_pending=8, adaptive_exits=False
    )
    assert a.text == b.text == std.text[: std.text.index(stop)]
    assert a.finish_reason == b.finish_reason == "stop"


def test_end_of_generation_inside_a_pending_window(model: Any, heads_files: dict[str, Path]) -> None:
    # A chat answer that ends with <|im_end|> well before max_tokens.
    model.load_heads(heads_files["identity"])
    text = model.apply_chat_template([{"role": "user", "content": "Say just the word yes."}])
    std, ada = _pair(model, text, max_tokens=64, gamma=0.0, max_pending=8)
    assert std.finish_reason == "stop" and len(std.tokens) < 64
    _assert_identical(std, ada)


def test_generation_up_to_the_context_limit(engine: Any, smollm2_path: Path, heads_files: dict[str, Path]) -> None:
    small = engine(smollm2_path, n_ctx=64, n_threads=2, heads=heads_files["identity"])
    ids = small.tokenize(PARITY_PROMPTS[18])
    std, ada = _pair(small, ids, max_tokens=500, gamma=0.0, max_pending=8)
    _assert_identical(std, ada)
    assert ada.finish_reason == "length"
    assert len(ids) + len(ada.tokens) == 64 + 1


def test_streaming_emits_only_verified_text(model: Any, heads_files: dict[str, Path]) -> None:
    model.load_heads(heads_files["random"])
    std = model.generate(PARITY_PROMPTS[0], mode="standard", max_tokens=32)
    pieces = list(
        model.generate_stream(PARITY_PROMPTS[0], mode="adadecode", max_tokens=32, gamma=0.0, adaptive_exits=False)
    )
    assert "".join(pieces) == std.text  # a rejected early token never reaches the stream
    assert model.last_generation.stats["rollbacks"] > 0


def test_statistics_are_consistent(model: Any, heads_files: dict[str, Path]) -> None:
    model.load_heads(heads_files["identity"])
    ada = model.generate(PARITY_PROMPTS[1], mode="adadecode", max_tokens=64, gamma=0.3)
    s = ada.stats
    assert s["exit_layers"] == list(EXITS)
    # Every early token is verified unless an earlier mismatch in its window discarded it.
    assert sum(s["early_per_layer"]) >= s["n_verified"] > 0
    assert sum(s["accepted_per_layer"]) == s["n_accepted"] <= s["n_verified"]
    assert s["rollbacks"] <= s["n_verified"] - s["n_accepted"]
    assert 0.0 <= s["accept_rate"] <= 1.0 and 0.0 <= s["early_exit_fraction"] <= 1.0
    assert s["early_exit_fraction"] == pytest.approx(s["n_accepted"] / s["n_generated"])
    assert sum(s["rows_per_pass"]) == s["n_passes"]
    assert max(r for r, c in enumerate(s["rows_per_pass"]) if c) >= 2


@pytest.mark.slow
def test_sampling_distribution_is_exact(model: Any, heads_files: dict[str, Path]) -> None:
    """Chi-square goodness of fit of the first two sampled tokens against the exact distribution p."""
    scipy_stats = pytest.importorskip("scipy.stats")
    model.load_heads(heads_files["identity"])
    prompt = model.tokenize("My favourite animal is the")
    sampling = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    logits = model.logits(prompt)[-1].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    n = 600
    first = [model.generate(prompt, max_tokens=1, seed=s, mode="adadecode", gamma=0.0, **sampling).tokens[0]
             for s in range(n)]
    top = np.argsort(-p)[:8]
    observed = np.array([sum(t == k for t in first) for k in top] + [sum(t not in top for t in first)], dtype=float)
    expected = np.append(p[top], 1 - p[top].sum()) * n
    keep = expected >= 5
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    p_value = scipy_stats.chi2.sf(chi2, keep.sum() - 1)
    assert p_value > 1e-3, (observed, expected, p_value)


def test_exit_policy_retires_heads_that_fail_verification(model: Any, heads_files: dict[str, Path]) -> None:
    # Random heads at γ = 0 propose a wrong token at every check: with the exit policy on, the layers are retired
    # after a few rejections (and probed now and then), so far fewer rollbacks; the output is the same either way.
    model.load_heads(heads_files["random"])
    fixed = model.generate(PARITY_PROMPTS[4], mode="adadecode", max_tokens=64, gamma=0.0, adaptive_exits=False)
    adaptive = model.generate(PARITY_PROMPTS[4], mode="adadecode", max_tokens=64, gamma=0.0)
    std = model.generate(PARITY_PROMPTS[4], mode="standard", max_tokens=64)
    assert fixed.tokens == adaptive.tokens == std.tokens
    assert fixed.stats["rollbacks"] >= 32
    assert 0 < adaptive.stats["rollbacks"] <= fixed.stats["rollbacks"] // 2


@pytest.mark.parametrize("width", [2, 3])
def test_parity_with_either_two_row_kernel(model: Any, heads_files: dict[str, Path], width: int) -> None:
    # Two rows through the two-row kernel or the three-row one (ADADECODE_QMATMUL_TWO_ROWS): the same bits.
    from adadecode import _core

    chosen = _core.two_row_kernel()
    model.load_heads(heads_files["identity"])
    try:
        _core.set_two_row_kernel(width)
        std, ada = _pair(model, PARITY_PROMPTS[6], max_tokens=48, gamma=0.0, max_pending=1)
        rows_per_pass = ada.stats["rows_per_pass"]
        assert len(rows_per_pass) > 2 and rows_per_pass[2] > 0, rows_per_pass
        _assert_identical(std, ada)
    finally:
        _core.set_two_row_kernel(chosen)


def test_two_row_kernel_from_the_environment(smollm2_path: Path) -> None:
    import os
    import subprocess
    import sys

    from adadecode import _core

    code = (
        "import sys; from adadecode import Model, _core; "
        "Model(sys.argv[1], n_ctx=64, n_threads=2); print(_core.two_row_kernel())"
    )

    def run(value: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "ADADECODE_QMATMUL_TWO_ROWS": value}
        return subprocess.run([sys.executable, "-c", code, str(smollm2_path)], env=env, capture_output=True,
                              text=True, check=True)

    assert run("3").stdout.strip() == "3"
    assert run("2").stdout.strip() == "2"
    bad = run("7")
    assert bad.stdout.strip() == "2"
    assert "ADADECODE_QMATMUL_TWO_ROWS='7' is not 2 or 3" in bad.stderr
    with pytest.raises(ValueError, match="must be 2 or 3"):
        _core.set_two_row_kernel(4)
