"""Train exit heads of several designs at several layers on a feature directory (``adadecode collect-features``),
online: shards are read one or two at a time, so the data may be far larger than memory. Resumable from a
checkpoint: the batch order is a pure function of (seed, step), so a resumed run makes the same steps.

Per (design, layer): held-out KL, agreement, coverage/precision at gamma and the expected time saved per token
(``saving.py``) alone and, per design, for the best set of layers. Used by ``adadecode train-heads --features``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .collect_features import FeatureError, complete_shards, load_shard, read_manifest
from .head_designs import HeadDesign, make_design
from .head_math import GAMMAS, LayerStats, Readout, lstsq_init, torch_owned, warmup_cosine_lr
from .saving import CostModel, best_layer_set, expected_saving


@dataclass
class FeatureFitConfig:
    layers: list[int]
    designs: list[str]
    steps: int
    lr: float
    batch: int
    seed: int
    init: str  # identity | lstsq | heads:<SHA-256 of the heads file the dense heads start from>
    holdout_every: int
    heldout_rows: int
    vocab_k: int
    matmul: str
    checkpoint_every: int


class FeatureSet:
    """The shards of a feature directory with a held-out split by window (every `holdout_every`-th window)."""

    def __init__(self, feat_dir: Path, layers: list[int], holdout_every: int) -> None:
        self.dir = Path(feat_dir)
        self.manifest = read_manifest(self.dir)
        stored = [*self.manifest["layers"], self.manifest["n_layer"]]
        missing = [layer for layer in layers if layer not in stored[:-1]]
        if missing:
            raise FeatureError(f"'{feat_dir}' holds the layers {stored[:-1]}, not {missing}")
        self.layer_index = [stored.index(layer) for layer in layers] + [len(stored) - 1]
        self.shards = complete_shards(self.dir)
        if not self.shards:
            raise FeatureError(f"'{feat_dir}' holds no complete shard")
        self.holdout_every = holdout_every
        self.train_rows: list[np.ndarray] = []
        for meta in self.shards:
            rows = np.load(self.dir / f"shard-{meta['shard']:05d}.rows.npy")
            self.train_rows.append(np.flatnonzero(~self.is_held(rows[:, 0])))
        self._cache: dict[int, np.ndarray] = {}

    def keep_first(self, n_shards: int) -> None:
        """Read only the first `n_shards` shards (a fit resumed while the collection went on)."""
        if len(self.shards) < n_shards:
            raise FeatureError(f"'{self.dir}' holds {len(self.shards)} complete shards, fewer than the {n_shards} "
                               "this fit started with; collect them again or use --fresh")
        self.shards, self.train_rows = self.shards[:n_shards], self.train_rows[:n_shards]
        self._cache.clear()

    def is_held(self, window: np.ndarray) -> np.ndarray:
        if self.holdout_every <= 0:
            return np.zeros(len(window), dtype=bool)
        return window % self.holdout_every == self.holdout_every - 1

    def shard(self, k: int) -> np.ndarray:
        """float16 [n_exit + 1, rows, d] of shard k (the two most recent are kept in memory)."""
        if k not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[k] = load_shard(self.dir, self.shards[k], self.layer_index)[0]
        return self._cache[k]

    def heldout(self, limit: int) -> tuple[np.ndarray, int]:
        """float16 [n_exit + 1, rows, d] of the first `limit` held-out rows."""
        parts, n = [], 0
        for meta in self.shards:
            rows = np.load(self.dir / f"shard-{meta['shard']:05d}.rows.npy")
            idx = np.flatnonzero(self.is_held(rows[:, 0]))[: max(0, limit - n)]
            if len(idx):
                parts.append(load_shard(self.dir, meta, self.layer_index, mmap=True)[0][:, idx].astype(np.float16))
                n += len(idx)
            if n >= limit:
                break
        if not parts:
            raise FeatureError(f"'{self.dir}' has no held-out rows: collect more windows or lower --holdout-every")
        return np.concatenate(parts, axis=1), n

    def epoch_order(self, seed: int, epoch: int) -> list[tuple[int, np.ndarray]]:
        """Shards in a seeded order, each with its training rows permuted."""
        rng = np.random.default_rng([seed, epoch])
        return [(int(k), rng.permutation(self.train_rows[k])) for k in rng.permutation(len(self.shards))]

    @property
    def n_train(self) -> int:
        return int(sum(len(r) for r in self.train_rows))

    def batch(self, seed: int, step: int, size: int) -> np.ndarray:
        """float32 [n_exit + 1, size, d] of training step `step` (a pure function of seed and step)."""
        per_epoch = self.n_train // size
        if per_epoch < 1:
            raise FeatureError(f"{self.n_train} training rows are fewer than one batch of {size}")
        epoch, b = divmod(step, per_epoch)
        key = (seed, epoch)
        if getattr(self, "_order_key", None) != key:
            self._order = self.epoch_order(seed, epoch)
            self._offsets = np.cumsum([0] + [len(r) for _, r in self._order])
            self._order_key = key
        lo, hi = b * size, (b + 1) * size
        parts = []
        first = int(np.searchsorted(self._offsets, lo, side="right") - 1)
        for j in range(first, len(self._order)):
            s0 = int(self._offsets[j])
            if s0 >= hi:
                break
            k, rows = self._order[j]
            sel = rows[max(lo - s0, 0): hi - s0]
            if len(sel):
                parts.append(self.shard(k)[:, np.sort(sel)])
        return np.concatenate(parts, axis=1).astype(np.float32)


def pick_vocab(fs: FeatureSet, readout: Readout, k: int, sample: int = 16384) -> np.ndarray:
    """The `k` tokens the model itself predicts most often (final-layer argmax over a sample of training rows, then
    the text's next tokens by frequency, then token id)."""
    argmax: Counter[int] = Counter()
    text: Counter[int] = Counter()
    n = 0
    for meta, train in zip(fs.shards, fs.train_rows, strict=True):
        rows = np.load(fs.dir / f"shard-{meta['shard']:05d}.rows.npy")
        text.update(int(t) for t in rows[train, 2] if t >= 0)
        if n < sample:
            take = train[: sample - n]
            last = torch.from_numpy(fs.shard(meta["shard"])[-1][take].astype(np.float32))
            with torch.no_grad():
                for s in range(0, len(last), 1024):
                    argmax.update(readout.full_logits(last[s:s + 1024]).argmax(-1).tolist())
            n += len(take)
    n_vocab = readout.w_out.shape[0]
    order = sorted(range(n_vocab), key=lambda t: (-argmax[t], -text[t], t))
    return np.sort(np.asarray(order[:k], dtype=np.int32))


def lstsq_start(fs: FeatureSet, n_exit: int, seed: int, rows: int = 16384, ridge: float = 1e-2) -> list[np.ndarray]:
    got = []
    n = 0
    for k, sel in fs.epoch_order(seed, -1 % (2**31)):
        take = sel[: rows - n]
        got.append(fs.shard(k)[:, np.sort(take)].astype(np.float32))
        n += len(take)
        if n >= rows:
            break
    x = np.concatenate(got, axis=1)
    return [lstsq_init(x[i], x[n_exit], ridge) for i in range(n_exit)]


def check_bytes(head: HeadDesign | None, vocab_k: int, row_bytes: int) -> float:
    return (0.0 if head is None else head.check_params() * head.bytes_per_param) + vocab_k * row_bytes


def fit_features(fs: FeatureSet, readout: Readout, cfg: FeatureFitConfig, costs: CostModel, row_bytes: int,
                 workdir: Path, progress: bool = True, stop_after: int = 0, gamma: float = 0.75,
                 log: Any = print, max_exits: int = 3, start: list[np.ndarray] | None = None,
                 ) -> tuple[dict[str, dict[int, HeadDesign]], dict[str, Any]]:
    """Train every (design, layer) head at once on `fs` (read with cfg.layers); returns the heads and a report with
    held-out figures. `start`: the dense heads' first transforms per layer when cfg.init names a heads file."""
    from tqdm import tqdm

    workdir.mkdir(parents=True, exist_ok=True)
    tag = json.dumps(asdict(cfg), sort_keys=True)
    ckpt = workdir / "fit-features.pt"
    state = torch.load(ckpt, weights_only=False) if ckpt.exists() else None
    if state is not None and state["config"] != tag:
        raise FeatureError(f"'{ckpt}' belongs to a run with other settings; use another --workdir or --fresh")
    # The collection may still be growing: a resumed fit reads the shards it started with, so that it ends with the
    # heads an uninterrupted run makes (checkpoints from before n_shards was kept read every shard).
    if state is not None and state.get("n_shards") is not None:
        fs.keep_first(int(state["n_shards"]))
    d = int(fs.manifest["n_embd"])
    n_exit = len(cfg.layers)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.init.startswith("heads:") and (start is None or len(start) != n_exit):
        raise ValueError(f"init {cfg.init} needs one start transform per layer of {cfg.layers}")
    fresh_lstsq = cfg.init == "lstsq" and state is None  # a resumed fit loads its heads: no start to compute
    inits = lstsq_start(fs, n_exit, cfg.seed) if fresh_lstsq else start if start is not None else [None] * n_exit
    heads: dict[str, dict[int, HeadDesign]] = {
        spec: {layer: make_design(spec, d, gen, inits[i] if not spec.startswith("mlp") else None)
               for i, layer in enumerate(cfg.layers)} for spec in cfg.designs}
    params = [p for per in heads.values() for h in per.values() for p in h.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    step = 0
    if state is not None:
        for spec, per in heads.items():
            for layer, h in per.items():
                h.load_state_dict(state["heads"][spec][layer])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        log(f"fit: resumed at step {step}/{cfg.steps}")

    mm = torch.bfloat16 if cfg.matmul == "bf16" else torch.float32
    w_loss = readout.w_sub.to(mm)

    def save() -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"config": tag, "step": step, "n_shards": len(fs.shards), "opt": opt.state_dict(),
                    "heads": {s: {la: h.state_dict() for la, h in per.items()} for s, per in heads.items()}}, tmp)
        os.replace(tmp, ckpt)

    end = min(cfg.steps, step + stop_after) if stop_after > 0 else cfg.steps
    bar = tqdm(total=cfg.steps, initial=step, desc="fit", unit="step", disable=not progress)
    t0, losses = time.time(), []
    while step < end:
        x = torch_owned(fs.batch(cfg.seed, step, cfg.batch))
        with torch.no_grad():
            logp = torch.log_softmax((readout.normed(x[n_exit]).to(mm) @ w_loss.T).float(), -1)
            p = logp.exp()
        for g in opt.param_groups:
            g["lr"] = warmup_cosine_lr(step, cfg.steps, cfg.lr)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for per in heads.values():
            for i, layer in enumerate(cfg.layers):
                z = readout.normed(per[layer](x[i]))
                logq = torch.log_softmax((z.to(mm) @ w_loss.T).float(), -1)
                loss = (p * (logp - logq)).sum(-1).mean()
                loss.backward()
                total += float(loss.detach())
        opt.step()
        step += 1
        losses.append(total / (n_exit * len(heads)))
        bar.update(1)
        bar.set_postfix(kl=f"{losses[-1]:.3f}")
        if step % cfg.checkpoint_every == 0 or step == end:
            save()
            log(f"fit: step {step}/{cfg.steps}, mean train KL {np.mean(losses[-cfg.checkpoint_every:]):.4f}, "
                f"{(time.time() - t0) / len(losses):.2f} s/step")
    bar.close()
    report = evaluate_heads(fs, readout, heads, cfg, costs, row_bytes, gamma, max_exits)
    report["steps"] = step
    report["train_rows"] = fs.n_train
    report["fit_seconds"] = time.time() - t0
    (workdir / "fit-features.report.json").write_text(json.dumps(report, indent=1))
    return heads, report


def evaluate_heads(fs: FeatureSet, readout: Readout, heads: dict[str, dict[int, HeadDesign]],
                   cfg: FeatureFitConfig, costs: CostModel, row_bytes: int, gamma: float,
                   max_exits: int = 3) -> dict[str, Any]:
    """Held-out figures per (design, layer) and the expected saving alone, of all layers and of the best subset;
    "identity" is the logit lens over the same vocabulary subset."""
    held, n_held = fs.heldout(cfg.heldout_rows)
    n_exit = len(cfg.layers)
    k = readout.w_sub.shape[0]
    gammas = tuple(sorted({*GAMMAS, gamma}))
    specs: list[tuple[str, dict[int, HeadDesign] | None]] = [("identity", None), *heads.items()]
    stats = {(spec, la): LayerStats(gammas) for spec, _ in specs for la in cfg.layers}
    confs: dict[tuple[str, int], list[np.ndarray]] = {key: [] for key in stats}
    hits: dict[tuple[str, int], list[np.ndarray]] = {key: [] for key in stats}
    with torch.no_grad():
        for s in range(0, n_held, 512):
            final = torch.from_numpy(held[n_exit, s:s + 512].astype(np.float32))
            fl = readout.full_logits(final)  # once per chunk for every head: the full-vocabulary product dominates
            target = fl.argmax(-1)
            for i, layer in enumerate(cfg.layers):
                h = torch.from_numpy(held[i, s:s + 512].astype(np.float32))
                for spec, per in specs:
                    hl = readout.head_logits(h if per is None else per[layer](h))
                    stats[(spec, layer)].add(fl, hl, readout.vocab)
                    c, idx = torch.softmax(hl, -1).max(-1)
                    tok = idx if readout.vocab is None else readout.vocab[idx]
                    confs[(spec, layer)].append(c.numpy())
                    hits[(spec, layer)].append((tok == target).numpy())
    report: dict[str, Any] = {"heldout_rows": n_held, "gamma": gamma, "cost_model": asdict(costs), "designs": {}}
    for spec, per in specs:
        rows: dict[str, Any] = {}
        conf = np.stack([np.concatenate(confs[(spec, la)]) for la in cfg.layers])
        hit = np.stack([np.concatenate(hits[(spec, la)]) for la in cfg.layers])
        cbytes = [check_bytes(None if per is None else per[la], k, row_bytes) for la in cfg.layers]
        for i, layer in enumerate(cfg.layers):
            alone = expected_saving(conf[i:i + 1], hit[i:i + 1], [layer], gamma, costs, [cbytes[i]])
            rows[str(layer)] = {**stats[(spec, layer)].summary(), "saving": alone["saving"],
                                "check_cost": costs.check_cost(cbytes[i])}
        every = expected_saving(conf, hit, cfg.layers, gamma, costs, cbytes)
        best, best_r = best_layer_set(conf, hit, cfg.layers, gamma, costs, cbytes, max_exits)
        report["designs"][spec] = {"layers": rows, "all_layers_saving": every["saving"],
                                   "all_layers_cascade": every["per_layer"], "best_layers": best,
                                   "best_saving": best_r["saving"], "best_speedup": best_r["speedup"],
                                   "engine_runs": per is None or next(iter(per.values())).engine_runs}
    return report


def format_report(report: dict[str, Any]) -> str:
    g = report["gamma"]
    lines = [f"held-out rows {report['heldout_rows']}, gamma {g}; expected saving S per token (fraction of a "
             f"standard token) on the pass-cost curve",
             f"{'design':>12} {'layer':>5} {'agree':>6} {'KL':>6} {'cov@' + str(g):>9} {'prec@' + str(g):>10} "
             f"{'check':>6} {'S alone':>8}"]
    for spec, r in report["designs"].items():
        for layer, v in r["layers"].items():
            lines.append(f"{spec:>12} {layer:>5} {v['agreement']:>6.3f} {v['kl']:>6.3f} {v[f'coverage@{g}']:>9.3f} "
                         f"{v[f'precision@{g}']:>10.3f} {v['check_cost']:>6.3f} {v['saving']:>8.4f}")
        lines.append(f"{spec:>12}   all layers S {r['all_layers_saving']:.4f}; best set {r['best_layers']} "
                     f"S {r['best_saving']:.4f} (~{r['best_speedup']:.3f}x)"
                     + ("" if r["engine_runs"] else "  [Python only: the engine cannot run this design]"))
    return "\n".join(lines)
