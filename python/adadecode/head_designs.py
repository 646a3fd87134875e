"""Exit-head designs behind one interface: each maps the residual state h_l to the state the model's own final norm
and output matrix read (``logits = W_out[S] . rmsnorm(head(h_l)) * g``).

- ``dense``: ``T h`` with a d x d matrix T (the shipped format; the engine runs it).
- ``lowrank:R``: ``a * h + U (V h)``, a diagonal plus a rank-R update (2 d R + d parameters). It is a d x d matrix
  ``diag(a) + U V``, so it is written in the dense format and runs unchanged in the engine (at the dense cost; the
  cheaper native check is evaluated in Python only).
- ``mlp:R``: ``h + W2 gelu(W1 h)``, two layers with a nonlinearity (2 d R parameters). Not linear: the engine
  cannot run it yet, so it is trained and evaluated in Python only and not written to a heads file.

Every design starts at the identity (the logit lens) unless ``init_from`` gives it a least-squares start.
"""

from __future__ import annotations

import numpy as np
import torch

# Bytes per parameter of a head on the CPU engine (Q8_0, cpp/heads.cpp).
Q8_0_BYTES = 34 / 32


class HeadDesign(torch.nn.Module):
    spec: str = ""
    engine_runs: bool = True  # the C++ engine can load and run it (as a dense transform)

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
    engine_runs = False

    def __init__(self, d: int, rank: int, gen: torch.Generator) -> None:
        super().__init__()
        self.spec = f"mlp:{rank}"
        self.w1 = torch.nn.Parameter(torch.randn(rank, d, generator=gen) / d**0.5)
        self.w2 = torch.nn.Parameter(torch.zeros(d, rank))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # The residual states of these models have a few huge channels: normalise before the nonlinearity.
        x = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return h + torch.nn.functional.gelu(x @ self.w1.T) @ self.w2.T * h.pow(2).mean(-1, keepdim=True).sqrt()


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


def make_design(spec: str, d: int, gen: torch.Generator, init: np.ndarray | None = None) -> HeadDesign:
    name, _, rank = spec.partition(":")
    if name == "dense":
        return Dense(d, init)
    if name == "lowrank":
        return LowRankDiag(d, int(rank), gen, init)
    return TwoLayer(d, int(rank), gen)
