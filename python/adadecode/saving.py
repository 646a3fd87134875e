"""Expected time saved per token by a set of exit heads, on a measured pass-cost curve (docs/heads_format.md).

The model is the runtime exit policy's (cpp/exit_policy.h, which prices the logits with the layers' m), priced
with a curve (replay.py: a microbench JSON or a pass-cost curve). Per generated token the heads are checked in layer
order; the first whose confidence is >= gamma emits the token early (a cascade, as the engine runs them). With L
layers, e the exit layer, t1 the seconds of one layer for one row, m the extra seconds of a second row in the same
pass (t2 - t1), T a standard token (one row through all layers plus the logits), lower(e) = e t1 / T the share of a
token spent in the layers below e, upper(e) = (L - e) t1 / T the share in the layers above it, o the share of the
logits and m_o the extra cost of a second row in the logits product relative to the first (dearer than a layer's:
on the 1.5B, AVX-512, 0.20 measured directly against 0.005-0.07; the curve's own figure is the difference of two
full passes and noisy: 0.49 in bench/results/roofline/after-merges-2026-12-03e):

- an accepted early token saves gain(e) = upper(e) (1 - m / t1) + o (1 - m_o): its upper layers and its logits
  ride along in the next pass;
- a rejected one costs loss(e) = lower(e) + upper(e) m / t1 + o m_o: the successor's pass is thrown away;
- every check costs c_l, whatever its outcome.

saving per token S = mean over tokens of [ - sum of c_l over the layers checked + gain(e) if the early token is
the final layer's argmax, - loss(e) if not ]; the speed-up it implies is 1 / (1 - S). Assumptions: decoding is one
token per pass otherwise (no n-gram drafts), an early token's upper layers join exactly one later pass (a two-row
pass; longer runs of early tokens batch more rows and save more, so S is a lower estimate there), the policy keeps
every given layer open, and a check costs in proportion to the bytes it reads (head parameters plus output rows).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Bytes per parameter of a transform on the CPU engine (stored as Q8_0: 34 bytes per 32 values, cpp/heads.cpp).
Q8_0_BYTES = 34 / 32


@dataclass
class CostModel:
    """The pass-cost figures S needs, as fractions of a standard token."""

    n_layer: int  # depth of the model the heads are for
    layer_share: float  # share of a standard token's time spent in the layers (the rest: logits and fixed cost)
    marginal_row: float  # m / t1: extra cost of a second row in a pass, per layer, relative to the first
    check_per_byte: float  # a check's cost per byte read, as a fraction of a standard token
    source: str = ""
    logits_share: float = 0.0  # o: share of a standard token spent on the logits
    logits_marginal_row: float = 0.0  # m_o: extra cost of a second row's logits, relative to the first's

    def gain(self, e: int) -> float:
        upper = self.layer_share * (self.n_layer - e) / self.n_layer
        return upper * (1.0 - self.marginal_row) + self.logits_share * (1.0 - self.logits_marginal_row)

    def loss(self, e: int) -> float:
        upper = self.layer_share * (self.n_layer - e) / self.n_layer
        lower = self.layer_share * e / self.n_layer
        return lower + upper * self.marginal_row + self.logits_share * self.logits_marginal_row

    def check_cost(self, check_bytes: float) -> float:
        return self.check_per_byte * check_bytes


def model_bytes(model_path: str) -> tuple[int, int, int]:
    """(bytes one decoding pass reads, bytes of one output-matrix row, n_vocab) from a GGUF file: every tensor but
    the token embedding (unless it doubles as the output matrix)."""
    path = os.fspath(model_path)
    st = os.stat(path)
    return _model_bytes(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _model_bytes(model_path: str, mtime_ns: int, size: int) -> tuple[int, int, int]:
    # gguf.GGUFReader parses every metadata array (a vocabulary: seconds); once per file and version, not per call.
    import gguf

    reader = gguf.GGUFReader(model_path)
    sizes = {t.name: int(t.n_bytes) for t in reader.tensors}
    out_name = "output.weight" if "output.weight" in sizes else "token_embd.weight"
    total = sum(v for k, v in sizes.items() if k != "token_embd.weight") + (
        sizes["token_embd.weight"] if out_name == "token_embd.weight" else 0)
    out_t = next(t for t in reader.tensors if t.name == out_name)
    n_vocab = int(out_t.shape[1])
    return total, sizes[out_name] // n_vocab, n_vocab


def cost_model(curve: dict[str, Any], n_layer: int, model_path: str) -> CostModel:
    """The cost model from a pass-cost curve (replay.load_curve) for a model of `n_layer` layers at `model_path`."""
    rows = curve["rows"]
    one, two = rows["1"], rows.get("2")
    if two is None:
        raise ValueError("the pass-cost curve needs entries for 1 and 2 rows")
    lc = int(curve["n_layer"])
    t1, t2 = float(one["layer_seconds"]), float(two["layer_seconds"])
    token = float(one.get("full_pass_with_logits_seconds") or (one["base_seconds"] + lc * t1 +
                                                               curve["logits_seconds"].get("1", 0.0)))
    pass_bytes, row_bytes, n_vocab = model_bytes(model_path)
    head = curve.get("head_seconds")
    if curve.get("source") == "adadecode-microbench" and head:
        # adadecode-microbench times one check with a d x d head over the whole output matrix: calibrate on it.
        d = int(curve.get("n_embd") or 0) or None
        full_check = n_vocab * row_bytes + (d * d * Q8_0_BYTES if d else 0)
        per_byte = float(head) / token / full_check
        source = "check cost calibrated on the microbench's full-vocabulary exit check"
    elif head and curve.get("head_check_bytes"):
        per_byte = float(head) / token / float(curve["head_check_bytes"])
        source = "check cost calibrated on the curve's own exit checks"
    else:
        per_byte = (lc * t1 + float(one["base_seconds"])) / token / pass_bytes
        source = "check cost = bytes read / bytes of a pass"
    logits = {k: float(v) for k, v in curve.get("logits_seconds", {}).items()}
    o1, o2 = logits.get("1", 0.0), logits.get("2", 0.0)
    return CostModel(n_layer=n_layer, layer_share=lc * t1 / token, marginal_row=max(0.0, (t2 - t1) / t1),
                     check_per_byte=per_byte, source=source, logits_share=o1 / token,
                     logits_marginal_row=min(1.0, max(0.0, (o2 - o1) / o1)) if o1 > 0 and o2 > 0 else 1.0)


def default_curve_path(model_path: str, search: Sequence[Path] = ()) -> Path | None:
    """The repository's microbench result for this model (bench/results/packed/microbench-<stem>-t2.json), looked
    for below the given directories and the current one."""
    stem = Path(model_path).name.removesuffix(".gguf")
    for base in [*search, Path.cwd(), Path(__file__).resolve().parents[2]]:
        p = base / "bench" / "results" / "packed" / f"microbench-{stem}-t2.json"
        if p.is_file():
            return p
    return None


def expected_saving(conf: np.ndarray, hit: np.ndarray, layers: Sequence[int], gamma: float, costs: CostModel,
                    check_bytes: Sequence[float]) -> dict[str, Any]:
    """S for the cascade of `layers` (increasing) over tokens: conf/hit [n_layers, n] per layer (confidence, and
    whether the head's token is the final layer's argmax). Also the share of tokens exiting at each layer and their
    precision."""
    conf, hit = np.asarray(conf), np.asarray(hit, dtype=bool)
    n = conf.shape[1]
    undecided = np.ones(n, dtype=bool)
    total = 0.0
    per_layer = []
    for i, e in enumerate(layers):
        total -= costs.check_cost(check_bytes[i]) * int(undecided.sum())
        ex = undecided & (conf[i] >= gamma)
        ok = int((ex & hit[i]).sum())
        bad = int(ex.sum()) - ok
        total += ok * costs.gain(e) - bad * costs.loss(e)
        per_layer.append({"layer": int(e), "exit": float(ex.sum() / max(n, 1)),
                          "precision": ok / int(ex.sum()) if ex.any() else float("nan")})
        undecided &= ~ex
    s = total / max(n, 1)
    return {"saving": s, "speedup": 1.0 / (1.0 - s) if s < 1 else math.inf, "per_layer": per_layer, "n": int(n)}


def best_layer_set(conf: np.ndarray, hit: np.ndarray, layers: Sequence[int], gamma: float, costs: CostModel,
                   check_bytes: Sequence[float], max_exits: int = 3) -> tuple[list[int], dict[str, Any]]:
    """The subset of `layers` (at most `max_exits`) with the largest expected saving."""
    best: tuple[list[int], dict[str, Any]] | None = None
    for k in range(1, min(max_exits, len(layers)) + 1):
        for combo in itertools.combinations(range(len(layers)), k):
            idx = list(combo)
            r = expected_saving(conf[idx], hit[idx], [layers[i] for i in idx], gamma, costs,
                                [check_bytes[i] for i in idx])
            if best is None or r["saving"] > best[1]["saving"]:
                best = ([layers[i] for i in idx], r)
    assert best is not None
    return best
