"""Exit-head arithmetic in torch, the same as the engine's (cpp/heads.cpp), and the per-layer quality figures.

head logits at exit layer l: ``W_out[subset] @ (rmsnorm(T_l @ h_l) * output_norm_weight)``; confidence: the largest
softmax probability of those logits (over the subset when there is one). The reference is the model's own
next-token choice: the argmax of the final layer's logits over the whole vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from .gguf_meta import read_metadata

GAMMAS = (0.5, 0.75, 0.9)


class WeightSource(Protocol):
    path: str

    @property
    def arch(self) -> str: ...

    def tensor(self, name: str) -> np.ndarray: ...

    def tensor_names(self) -> list[str]: ...


def rms_eps(model_path: str) -> float:
    """The model's RMS-norm epsilon from its GGUF metadata (1e-6 when absent, as the engine assumes)."""
    meta = read_metadata(model_path)  # the header only: gguf.GGUFReader would parse the whole vocabulary too
    value = meta.get(f"{meta.get('general.architecture', '')}.attention.layer_norm_rms_epsilon")
    return float(value) if value is not None else 1e-6


def output_weights(model: WeightSource) -> tuple[np.ndarray, np.ndarray]:
    """(W_out [n_vocab, n_embd], final norm weight [n_embd]) dequantized to float32; tied embeddings handled."""
    name = "output.weight" if "output.weight" in model.tensor_names() else "token_embd.weight"
    return model.tensor(name), model.tensor("output_norm.weight")


def torch_owned(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    """`a` in memory torch allocated (64-byte aligned), copied when it is not. MKL's GEMM (torch's CPU matmul) may
    round differently with its operands' alignment unless its CNR mode is on, and numpy's buffers start at any
    16-byte boundary: training reads its data through this so that a fit resumed from a checkpoint makes the same
    bits as one that ran through. (On an Intel Xeon, model 167, before this: 3 of 26 resumed fits differed from the
    uninterrupted one by an ulp, 0 of 17 with MKL_CBWR=AUTO,STRICT. On AMD's Zen 4 a 256 x 576 x 576 product gave
    the same bits at every offset.)"""
    t = torch.from_numpy(a) if isinstance(a, np.ndarray) else a
    return t if t.data_ptr() % 64 == 0 else t.clone()


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


@dataclass
class Readout:
    """The frozen final norm and output matrix (optionally restricted to a vocabulary subset)."""

    w_out: torch.Tensor  # [n_vocab, d] float32
    norm_w: torch.Tensor  # [d]
    eps: float
    vocab: torch.Tensor | None = None  # [K] int64 token ids, or None for the whole vocabulary
    w_sub: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.w_out, self.norm_w = torch_owned(self.w_out), torch_owned(self.norm_w)
        self.w_sub = self.w_out if self.vocab is None else self.w_out[self.vocab].contiguous()

    @classmethod
    def of_model(cls, model: WeightSource) -> Readout:
        """The model's own readout. The dequantized arrays are dropped once torch_owned has its copy: a caller that
        kept them would hold the output matrix twice (0.9 GB for the 1.5B)."""
        w_out, norm_w = output_weights(model)
        return cls(torch.from_numpy(w_out), torch.from_numpy(norm_w), rms_eps(model.path))

    def with_vocab(self, vocab: np.ndarray | Sequence[int] | None) -> Readout:
        ids = None if vocab is None else torch.as_tensor(np.asarray(vocab), dtype=torch.int64)
        return Readout(self.w_out, self.norm_w, self.eps, ids)

    def normed(self, h: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
        if transform is not None:
            h = h @ transform.T
        return rmsnorm(h, self.norm_w, self.eps)

    def full_logits(self, h: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
        return self.normed(h, transform) @ self.w_out.T

    def head_logits(self, h: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
        return self.normed(h, transform) @ self.w_sub.T


@dataclass
class LayerStats:
    """Running totals for one exit layer: agreement, KL, coverage and precision at each gamma."""

    gammas: tuple[float, ...] = GAMMAS
    n: int = 0
    agree: int = 0
    kl_sum: float = 0.0
    subset_mass_sum: float = 0.0
    in_subset: int = 0  # positions whose final-layer token the subset holds: agreement can be no higher
    covered: dict[float, int] = field(default_factory=dict)
    correct: dict[float, int] = field(default_factory=dict)

    def add(self, final_logits: torch.Tensor, head_logits: torch.Tensor, vocab: torch.Tensor | None) -> None:
        """final_logits: [n, n_vocab] of the last layer; head_logits: [n, K] of the head (K = n_vocab or subset)."""
        target = final_logits.argmax(-1)
        logq = torch.log_softmax(head_logits.float(), -1)
        conf, idx = logq.max(-1)
        conf = conf.exp()
        pred = idx if vocab is None else vocab[idx]
        hit = pred == target
        logp_full = torch.log_softmax(final_logits.float(), -1)
        if vocab is None:
            logp = logp_full
            mass = torch.ones(len(target))
        else:
            logp_sub = logp_full[:, vocab]
            mass = logp_sub.exp().sum(-1)
            logp = logp_sub - mass.log().unsqueeze(-1)  # the teacher restricted to the subset, renormalised
        kl = (logp.exp() * (logp - logq)).sum(-1)
        self.n += len(target)
        self.agree += int(hit.sum())
        self.kl_sum += float(kl.sum())
        self.subset_mass_sum += float(mass.sum())
        self.in_subset += len(target) if vocab is None else int(torch.isin(target, vocab).sum())
        for g in self.gammas:
            sel = conf >= g
            self.covered[g] = self.covered.get(g, 0) + int(sel.sum())
            self.correct[g] = self.correct.get(g, 0) + int((hit & sel).sum())

    def summary(self) -> dict[str, Any]:
        n = max(self.n, 1)
        out: dict[str, Any] = {"n": self.n, "agreement": self.agree / n, "kl": self.kl_sum / n,
                               "subset_mass": self.subset_mass_sum / n, "in_subset": self.in_subset / n}
        for g in self.gammas:
            cov = self.covered.get(g, 0)
            out[f"coverage@{g}"] = cov / n
            out[f"precision@{g}"] = self.correct.get(g, 0) / cov if cov else float("nan")
        return out


def evaluate_layers(
    readout: Readout,
    hidden: dict[int, torch.Tensor],
    final_hidden: torch.Tensor,
    transforms: dict[int, torch.Tensor | None],
    chunk: int = 512,
    gammas: tuple[float, ...] = GAMMAS,
) -> dict[int, dict[str, Any]]:
    """Per exit layer figures over all rows: `hidden[l]` [n, d] states after layer l, `final_hidden` [n, d] the last
    layer's output (before the final norm); `transforms[l]` the head's T (None: identity, the logit lens)."""
    stats = {layer: LayerStats(gammas) for layer in hidden}
    with torch.no_grad():
        for s in range(0, len(final_hidden), chunk):
            final = readout.full_logits(final_hidden[s:s + chunk].float())
            for layer, h in hidden.items():
                stats[layer].add(final, readout.head_logits(h[s:s + chunk].float(), transforms.get(layer)),
                                 readout.vocab)
    return {layer: st.summary() for layer, st in stats.items()}


def format_table(results: dict[int, dict[str, Any]], gammas: tuple[float, ...] = GAMMAS, title: str = "") -> str:
    """A plain-text table: one row per exit layer."""
    head = f"{'layer':>5} {'n':>7} {'agree':>6} {'KL':>6}" + "".join(
        f" {'cov@' + str(g):>8} {'prec@' + str(g):>9}" for g in gammas)
    lines = [title] if title else []
    lines.append(head)
    for layer in sorted(results):
        r = results[layer]
        row = f"{layer:>5} {r['n']:>7} {r['agreement']:>6.3f} {r['kl']:>6.3f}"
        row += "".join(f" {r[f'coverage@{g}']:>8.3f} {r[f'precision@{g}']:>9.3f}" for g in gammas)
        lines.append(row)
    return "\n".join(lines)


def lstsq_init(h: np.ndarray, h_last: np.ndarray, ridge: float = 1e-2) -> np.ndarray:
    """T minimising ||T x - y||^2 + ridge ||T - I||^2 over RMS-normalised states x (exit layer) and y (last
    layer): a cheap closed-form start (the final norm makes the head blind to the scale of T x)."""
    x = h.astype(np.float64)
    y = h_last.astype(np.float64)
    x /= np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6)
    y /= np.sqrt((y * y).mean(-1, keepdims=True) + 1e-6)
    d = x.shape[1]
    lam = ridge * len(x)
    a = x.T @ x + lam * np.eye(d)
    b = x.T @ y + lam * np.eye(d)
    return np.linalg.solve(a, b).T.astype(np.float32)


def warmup_cosine_lr(step: int, steps: int, lr: float) -> float:
    """The trainers' learning rate at `step` of `steps`: linear warm-up over the first 5 %, then a cosine to 0."""
    warm = max(1, steps // 20)
    if step < warm:
        return lr * (step + 1) / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
