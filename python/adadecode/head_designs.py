"""Exit-head designs behind one interface: each maps the residual state h_l to the state the model's own final norm
and output matrix read (``logits = W_out[S] . rmsnorm(head(h_l)) * g``).

- ``dense``: ``T h`` with a d x d matrix T (the shipped format; the engine runs it).
- ``lowrank:R``: ``a * h + U (V h)``, a diagonal plus a rank-R update (2 d R + d parameters). It is a d x d matrix
  ``diag(a) + U V``, so it is written in the dense format and runs unchanged in the engine (at the dense cost; the
  cheaper native check is evaluated in Python only).
- ``mlp:R``: ``h + rms(h) W2 gelu(W1 (h / rms(h)))``, two layers with a nonlinearity (2 d R parameters). Not
  linear: written as its two matrices (heads format version 2, design tag "mlp"), which the engine runs with ggml's
  ops in float16 (cpp/forward.cpp: the same formula, erf GELU, epsilon heads_format.MLP_EPS).

Every design starts at the identity (the logit lens) unless ``init_from`` gives it a least-squares start.
"""

from __future__ import annotations

import numpy as np
import torch

from .heads_format import MLP_EPS, HeadsFile

# Bytes per parameter of a head on the CPU engine: dense transforms are converted to Q8_0 (cpp/heads.cpp), mlp
# heads run from their float16 matrices.
Q8_0_BYTES = 34 / 32
F16_BYTES = 2.0


class HeadDesign(torch.nn.Module):
    spec: str = ""
    engine_runs: bool = True  # the C++ engine can load and run it
    bytes_per_param: float = Q8_0_BYTES  # what one parameter costs a check in the engine

    def check_params(self) -> int:
        """Parameters one check reads natively (besides the output rows)."""
        return sum(p.numel() for p in self.parameters())

    def dense(self) -> np.ndarray | None:
        """The head as a d x d matrix, when it is linear."""
        return None


class Dense(HeadDesign):
    def __init__(self, d: int, init: np.ndarray | None = None) -> None:
        super().__init__()
        self.spec = "dense"
        w = torch.eye(d) if init is None else torch.from_numpy(np.asarray(init, dtype=np.float32))
        self.weight = torch.nn.Parameter(w.clone())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.weight.T

    def dense(self) -> np.ndarray:
        return self.weight.detach().numpy().copy()


class LowRankDiag(HeadDesign):
    def __init__(self, d: int, rank: int, gen: torch.Generator, init: np.ndarray | None = None) -> None:
        super().__init__()
        self.spec = f"lowrank:{rank}"
        if init is None:
            a = torch.ones(d)
            u = torch.zeros(d, rank)
            v = torch.randn(rank, d, generator=gen) / d**0.5
        else:  # the diagonal of a least-squares T plus the best rank-R approximation of the rest
            t = torch.from_numpy(np.asarray(init, dtype=np.float32))
            a = torch.diagonal(t).clone()
            uu, ss, vv = torch.linalg.svd(t - torch.diag(a))
            root = ss[:rank].sqrt()
            u, v = uu[:, :rank] * root, root[:, None] * vv[:rank]
        self.diag = torch.nn.Parameter(a)
        self.u = torch.nn.Parameter(u.contiguous())
        self.v = torch.nn.Parameter(v.contiguous())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.diag + (h @ self.v.T) @ self.u.T

    def dense(self) -> np.ndarray:
        with torch.no_grad():
            return (torch.diag(self.diag) + self.u @ self.v).numpy().copy()


class TwoLayer(HeadDesign):
    bytes_per_param = F16_BYTES

    def __init__(self, d: int, rank: int, gen: torch.Generator | None = None,
                 weights: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        super().__init__()
        self.spec = f"mlp:{rank}"
        if weights is None:
            w1, w2 = torch.randn(rank, d, generator=gen) / d**0.5, torch.zeros(d, rank)
        else:
            w1, w2 = (torch.from_numpy(np.asarray(w, dtype=np.float32)).clone() for w in weights)
        self.w1 = torch.nn.Parameter(w1)
        self.w2 = torch.nn.Parameter(w2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # The residual states of these models have a few huge channels: normalise before the nonlinearity.
        x = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + MLP_EPS)
        return h + torch.nn.functional.gelu(x @ self.w1.T) @ self.w2.T * h.pow(2).mean(-1, keepdim=True).sqrt()

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(w1 [R, d], w2 [d, R]) as the heads file stores them."""
        return self.w1.detach().numpy().copy(), self.w2.detach().numpy().copy()


def parse_designs(spec: str, d: int) -> list[str]:
    """'dense,lowrank:128,mlp:256' -> checked specs; ranks default to d/8."""
    out = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        name, _, rank = part.partition(":")
        if name not in ("dense", "lowrank", "mlp"):
            raise ValueError(f"unknown head design '{part}': use dense, lowrank:R or mlp:R")
        if name == "dense":
            if rank:
                raise ValueError("the dense design takes no rank")
            out.append("dense")
            continue
        try:
            r = int(rank) if rank else max(1, d // 8)
        except ValueError:
            raise ValueError(f"head design '{part}': the rank must be an integer") from None
        if not 1 <= r < d:
            raise ValueError(f"head design '{part}': the rank must lie in 1..{d - 1}")
        out.append(f"{name}:{r}")
    if not out:
        raise ValueError("no head design given")
    return out


def from_heads_file(heads: HeadsFile, layer: int) -> HeadDesign:
    """The head a heads file holds at `layer`, as a module."""
    if layer in heads.mlps:
        w1, w2 = heads.mlps[layer]
        return TwoLayer(heads.n_embd, w1.shape[0], weights=(w1, w2))
    return Dense(heads.n_embd, heads.transforms[layer])


def file_parts(heads: dict[int, HeadDesign]) -> tuple[dict[int, np.ndarray], dict[int, tuple[np.ndarray, np.ndarray]]]:
    """(dense transforms, mlp weights) of trained heads, as write_heads takes them."""
    transforms: dict[int, np.ndarray] = {}
    mlps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for layer, h in heads.items():
        if isinstance(h, TwoLayer):
            mlps[layer] = h.weights()
        else:
            dense = h.dense()
            if dense is None:
                raise ValueError(f"the {h.spec} head of layer {layer} has no file form")
            transforms[layer] = dense
    return transforms, mlps


def make_design(spec: str, d: int, gen: torch.Generator, init: np.ndarray | None = None) -> HeadDesign:
    name, _, rank = spec.partition(":")
    if name == "dense":
        return Dense(d, init)
    if name == "lowrank":
        return LowRankDiag(d, int(rank), gen, init)
    return TwoLayer(d, int(rank), gen)
