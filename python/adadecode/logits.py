"""Logits processors on the engine's hook (``Model.generate(logits_processor=...)``): llama.cpp's repetition
penalties, OpenAI's ``logit_bias``, llama-cpp-python style user processors, and OpenAI-format log-probabilities.

Every processor here is a pure function of the context it is given, which is what lets the scheduler call it for
provisional positions and throw the result away on a rollback: the output is the same in every decoding mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Processor = Callable[[np.ndarray, np.ndarray], None]


class Penalties:
    """llama.cpp's ``penalties`` sampler: over the last ``last_n`` tokens of the context (prompt included, as
    llama-server feeds the prompt to its sampler), a token seen ``c`` times gets its logit divided by
    ``repeat_penalty`` (multiplied when the logit is negative), then ``c * frequency_penalty + presence_penalty``
    subtracted. ``last_n`` 0 turns them off, -1 means the whole context."""

    def __init__(self, repeat_penalty: float = 1.0, frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                 last_n: int = 64) -> None:  # fmt: skip
        self.repeat = float(repeat_penalty)
        self.frequency = float(frequency_penalty)
        self.presence = float(presence_penalty)
        self.last_n = int(last_n)

    @property
    def active(self) -> bool:
        no_op = self.repeat == 1.0 and self.frequency == 0.0 and self.presence == 0.0
        return self.last_n != 0 and not no_op

    def __call__(self, context: np.ndarray, logits: np.ndarray) -> None:
        window = context if self.last_n < 0 else context[-self.last_n :]
        tokens, counts = np.unique(window, return_counts=True)
        values = logits[tokens]
        if self.repeat != 1.0:
            values = np.where(values <= 0, values * self.repeat, values / self.repeat)
        values = values - (counts * self.frequency + self.presence).astype(np.float32)
        logits[tokens] = values.astype(np.float32)


class LogitBias:
    """OpenAI's ``logit_bias``: a number added to the logit of each listed token (-100 bans it, 100 forces it)."""

    def __init__(self, bias: Mapping[Any, float], n_vocab: int) -> None:
        ids: list[int] = []
        values: list[float] = []
        for key, value in bias.items():
            try:
                token = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}") from None
            if not 0 <= token < n_vocab:
                raise ValueError(f"logit_bias: token id {token} is not in [0, {n_vocab})")
            if not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"logit_bias[{token}] must be a finite number, got {value!r}")
            ids.append(token)
            values.append(float(value))
        self.ids = np.asarray(ids, dtype=np.int64)
        self.values = np.asarray(values, dtype=np.float32)

    def __call__(self, context: np.ndarray, logits: np.ndarray) -> None:
        logits[self.ids] += self.values


class UserProcessors:
    """llama-cpp-python's ``LogitsProcessorList``: callables ``(input_ids, scores) -> scores``, applied in order."""

    def __init__(self, processors: Sequence[Callable[[np.ndarray, np.ndarray], Any]]) -> None:
        self.processors = list(processors)
        for p in self.processors:
            if not callable(p):
                raise ValueError(f"logits_processor must be a list of callables, got {p!r}")

    def __call__(self, context: np.ndarray, logits: np.ndarray) -> None:
        for p in self.processors:
            out = p(context, logits)
            if out is not None and out is not logits:
                logits[:] = np.asarray(out, dtype=np.float32)


def chain(processors: Sequence[Processor | None]) -> Processor | None:
    """One processor applying ``processors`` (the None ones left out) in order; None when there are none."""
    active = [p for p in processors if p is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]

    def run(context: np.ndarray, logits: np.ndarray) -> None:
        for p in active:
            p(context, logits)

    return run


# --------------------------------------------------------------------------------------------------------------------
# log-probabilities


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    return (x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))).astype(np.float32)


def _top(row: np.ndarray, k: int) -> list[int]:
    if k <= 0:
        return []
    k = min(k, row.shape[0])
    idx = np.argpartition(-row, k - 1)[:k]
    return [int(i) for i in idx[np.argsort(-row[idx], kind="stable")]]


def _lp(x: float) -> float:
    return float(x) if np.isfinite(x) else -9999.0  # JSON has no -inf; OpenAI reports very unlikely tokens so


def token_logprobs(
    logits: np.ndarray, tokens: Sequence[int], top_k: int, piece: Callable[[int], bytes]
) -> list[tuple[int, float, list[tuple[int, float]]]]:
    """For each generated token: (id, its log-probability, the ``top_k`` most likely (id, log-probability))."""
    out = []
    for i, token in enumerate(tokens):
        row = log_softmax(logits[i])
        out.append((int(token), _lp(row[token]), [(t, _lp(row[t])) for t in _top(row, top_k)]))
    return out


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def completion_logprobs(
    entries: list[tuple[int, float, list[tuple[int, float]]]], piece: Callable[[int], bytes], offset: int
) -> dict[str, Any]:
    """OpenAI's (legacy) completion ``logprobs`` object; ``offset`` is the text offset of the first token."""
    tokens, offsets, lps, tops = [], [], [], []
    for token, lp, top in entries:
        text = _text(piece(token))
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        lps.append(lp)
        top_map = {_text(piece(t)): v for t, v in top}
        top_map.setdefault(text, lp)  # llama-cpp-python lists the chosen token too
        tops.append(top_map)
    return {"tokens": tokens, "text_offset": offsets, "token_logprobs": lps, "top_logprobs": tops}


def chat_logprobs(
    entries: list[tuple[int, float, list[tuple[int, float]]]], piece: Callable[[int], bytes]
) -> dict[str, Any]:
    """OpenAI's chat ``logprobs`` object: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``."""
    content = []
    for token, lp, top in entries:
        data = piece(token)
        content.append(
            {
                "token": _text(data),
                "logprob": lp,
                "bytes": list(data),
                "top_logprobs": [{"token": _text(piece(t)), "logprob": v, "bytes": list(piece(t))} for t, v in top],
            }
        )
    return {"content": content, "refusal": None}
