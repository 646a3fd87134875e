"""Bad input gets a clear adadecode.Error (or ValueError) naming the problem, never a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def model(engine: Any, smollm2_path: Path) -> Any:
    return engine(smollm2_path, n_ctx=256, n_threads=2)


def test_missing_file(engine: Any, tmp_path: Path) -> None:
    import adadecode

    with pytest.raises((adadecode.Error, FileNotFoundError, ValueError), match="no-such"):
        engine(tmp_path / "no-such.gguf")


def test_not_a_gguf(engine: Any, tmp_path: Path) -> None:
    import adadecode

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a model at all" * 10)
    with pytest.raises(adadecode.Error, match="not a GGUF"):
        engine(bad)


@pytest.mark.parametrize("keep", [8, 24, 1000, 1_000_000, 50_000_000])
def test_truncated_file(engine: Any, smollm2_path: Path, tmp_path: Path, keep: int) -> None:
    import adadecode

    cut = tmp_path / "cut.gguf"
    with open(smollm2_path, "rb") as f:
        cut.write_bytes(f.read(keep))
    with pytest.raises(adadecode.Error, match="cut.gguf"):
        engine(cut)


def test_unsupported_architecture(engine: Any, tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    import numpy as np

    import adadecode

    path = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(adadecode.Error, match="unsupported architecture 'gpt2'"):
        engine(path)


def test_invalid_token_ids(model: Any) -> None:
    import adadecode

    with pytest.raises(adadecode.Error, match="invalid token id"):
        model.generate([1, 2, model.n_vocab + 5], max_tokens=2)
    with pytest.raises(adadecode.Error, match="invalid token id"):
        model.generate([-3], max_tokens=2)
    with pytest.raises(adadecode.Error, match="invalid token id"):
        model.logits([10, 2**31 + 7])


def test_prompt_overflow(model: Any) -> None:
    import adadecode

    with pytest.raises(adadecode.Error, match="context"):
        model.generate(list(range(1000, 1300)), max_tokens=2)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": -0.1}, "min_p"),
        ({"gamma": 1.5}, "gamma"),
        ({"gamma": -0.1}, "gamma"),
        ({"max_pending": 0}, "max_pending"),
        ({"mode": "fast"}, "mode"),
        ({"mode": "adadecode"}, "heads"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_generation_arguments(model: Any, kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        model.generate("Hello", **kwargs)


def test_empty_prompt(model: Any) -> None:
    with pytest.raises(ValueError, match="empty"):
        model.generate("", max_tokens=2)
    with pytest.raises(ValueError, match="empty"):
        model.generate([], max_tokens=2)


@pytest.mark.parametrize("n_threads", [0, -2])
def test_bad_thread_count(engine: Any, smollm2_path: Path, n_threads: int) -> None:
    with pytest.raises(ValueError, match="n_threads"):
        engine(smollm2_path, n_threads=n_threads)


def test_bad_utf8_prompt(model: Any) -> None:
    import adadecode

    with pytest.raises((adadecode.Error, ValueError), match="UTF-8"):
        model.tokenize(b"abc\xff\xfe")


def test_model_usable_after_errors(model: Any) -> None:
    import adadecode

    before = model.generate("The sky is", max_tokens=8).tokens
    with pytest.raises(adadecode.Error, match="invalid token id"):
        model.generate([model.n_vocab], max_tokens=2)
    assert model.generate("The sky is", max_tokens=8).tokens == before
