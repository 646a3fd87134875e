"""``adadecode train-heads``: train the exit heads of a GGUF model by self-distillation, with our own engine.

Stages, each saved in the work directory and resumed with ``--resume``:

1. data      prompts of the target domain (``train_data``) -> greedy continuations by the engine -> sequences.jsonl
2. features  teacher-forced residual states at the exit layers and the last layer -> float16 .npy shards
3. vocab     (``--vocab-subset K``) the K most frequent tokens of the model's own outputs -> vocab.json
4. fit       one d x d transform per exit layer (torch), minimising KL(p_final || q_l) with the model's frozen final
             norm and output matrix; checkpointed; held-out figures before (identity = logit lens) and after
5. write     the heads sidecar GGUF (``heads_format.write_heads``) with the command, data and figures as metadata
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import shlex
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .collect_features import FeatureError, check_model, read_manifest
from .fetch import cache_root
from .heads_format import read_heads, write_heads
from .model import Model, default_threads
from .replay import load_curve
from .saving import cost_model, default_curve_path, model_bytes
from .train_data import (
    PromptRecord,
    append_jsonl,
    make_prompts,
    read_jsonl,
    record_ids,
    rewrite_jsonl,
)

SHARD_SEQS = 16
MAX_PROMPT_TOKENS = 1024
MAX_FORCED_TOKENS = 384
INIT_CHOICES = ("identity", "lstsq")  # --init besides a heads file


@dataclass
class DataConfig:
    """What the data and feature stages depend on: a resumed run must match it."""

    model: str
    layers: list[int]
    data: str
    n_prompts: int
    n_texts: int
    gen_tokens: int
    seed: int
    prompt_positions: int
    holdout_every: int


def log(workdir: Path, message: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {message}"
    print(line, file=sys.stderr, flush=True)
    with open(workdir / "train.log", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def auto_layers(n_layer: int) -> list[int]:
    """Exit layers after about 1/4, 1/2 and 3/4 of the depth."""
    return sorted({max(1, min(n_layer - 1, int(n_layer * k / 4 + 0.5))) for k in (1, 2, 3)})


def parse_layers(spec: str, n_layer: int) -> list[int]:
    if spec == "auto":
        return auto_layers(n_layer)
    try:
        layers = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--layers must be 'auto' or comma-separated integers, got '{spec}'") from None
    if not layers or layers[0] < 1 or layers[-1] >= n_layer:
        raise ValueError(f"--layers must lie in 1..{n_layer - 1}, got '{spec}'")
    return layers


# --------------------------------------------------------------------------------------------------------------------
# stage 1: prompts and the model's own continuations


def stage_data(model: Any, cfg: DataConfig, workdir: Path, cache: Path, progress: bool) -> list[dict[str, Any]]:
    from tqdm import tqdm

    prompts_file = workdir / "prompts.jsonl"
    if not prompts_file.exists():
        records = make_prompts(cfg.data, cfg.n_prompts, cfg.seed, cache, cfg.n_texts)
        rewrite_jsonl(prompts_file, [r.to_json() for r in records])
    prompts = [PromptRecord.from_json(r) for r in read_jsonl(prompts_file)]
    seq_file = workdir / "sequences.jsonl"
    done = read_jsonl(seq_file)
    rewrite_jsonl(seq_file, done)  # drop a torn last line before appending
    todo = range(len(done), len(prompts))
    if len(todo):
        log(workdir, f"data: {len(done)}/{len(prompts)} sequences done, generating {len(todo)} "
                     f"(greedy, up to {cfg.gen_tokens} tokens)")
    t0, n_gen = time.time(), 0
    for i in tqdm(todo, desc="generate", unit="seq", disable=not progress, initial=len(done), total=len(prompts)):
        rec = prompts[i]
        ids, prompt_len = record_ids(model, rec)
        gen: list[int] = []
        if rec.forced:
            ids, finish = ids[:MAX_FORCED_TOKENS], "forced"
            prompt_len = min(prompt_len, len(ids) - 1)
        else:
            ids = ids[-MAX_PROMPT_TOKENS:]
            prompt_len = len(ids)
            g = model.generate(ids, max_tokens=cfg.gen_tokens, temperature=0.0, mode="ngram")  # = standard, sooner
            gen, finish = list(g.tokens), g.finish_reason
            n_gen += len(gen)
        item = {"i": i, "source": rec.source, "prompt_len": prompt_len, "ids": ids + gen, "finish": finish}
        append_jsonl(seq_file, item)
        done.append(item)
    if len(todo):
        dt = time.time() - t0
        log(workdir, f"data: generated {n_gen} tokens in {dt:.0f} s ({n_gen / max(dt, 1e-9):.1f} tokens/s)")
    return done


# --------------------------------------------------------------------------------------------------------------------
# stage 2: teacher-forced hidden states


def common_prefix_len(seqs: list[dict[str, Any]]) -> int:
    """Length of the token prefix shared by all prompts (chat template, system prompt): not worth training on."""
    prompts = [s["ids"][: s["prompt_len"]] for s in seqs if s["prompt_len"] > 0]
    if len(prompts) < 2:
        return 1
    n = min(len(p) for p in prompts)
    for k in range(n):
        if any(p[k] != prompts[0][k] for p in prompts[1:]):
            return max(k, 1)
    return max(n - 1, 1)


def train_positions(seq: dict[str, Any], skip: int, n_prompt_pos: int, seed: int) -> np.ndarray:
    """Rows to train on: every position whose next token the model generated or the real answer holds (including
    the one predicting the end), plus up to `n_prompt_pos` prompt positions after the shared prefix; all positions
    of plain text."""
    n, p = len(seq["ids"]), seq["prompt_len"]
    if p == 0:
        return np.arange(min(2, n - 1), n, dtype=np.int64)
    gen = np.arange(p - 1, n, dtype=np.int64)
    pool = np.arange(min(skip, p - 1), p - 1, dtype=np.int64)
    rng = np.random.default_rng([seed, int(seq["i"])])
    pick = np.sort(rng.choice(pool, size=min(n_prompt_pos, len(pool)), replace=False)) if len(pool) else pool
    return np.concatenate([pick, gen])


def stage_features(model: Any, cfg: DataConfig, seqs: list[dict[str, Any]], workdir: Path, progress: bool) -> None:
    from tqdm import tqdm

    feat_dir = workdir / "features"
    feat_dir.mkdir(exist_ok=True)
    skip = common_prefix_len(seqs)
    layers = [*cfg.layers, model.n_layer]
    n_shards = math.ceil(len(seqs) / SHARD_SEQS)
    todo = [k for k in range(n_shards) if not (feat_dir / f"shard-{k:04d}.json").exists()]
    if todo:
        log(workdir, f"features: {n_shards - len(todo)}/{n_shards} shards done; layers {layers}, shared prefix {skip}")
    bar = tqdm(total=sum(len(seqs[k * SHARD_SEQS:(k + 1) * SHARD_SEQS]) for k in todo), desc="features", unit="seq",
               disable=not progress)
    for k in todo:
        chunk = seqs[k * SHARD_SEQS:(k + 1) * SHARD_SEQS]
        states, meta = [], []
        for seq in chunk:
            pos = train_positions(seq, skip, cfg.prompt_positions, cfg.seed)
            hs = model.hidden_states(seq["ids"], layers)  # [len(layers), n, d]
            states.append(hs[:, pos].astype(np.float16))
            n_ans = int((pos >= seq["prompt_len"] - 1).sum())
            meta.append({"i": seq["i"], "rows": len(pos), "answer_rows": n_ans, "source": seq["source"],
                         "forced": seq["finish"] == "forced"})
            bar.update(1)
        arr = np.concatenate(states, axis=1)
        np.save(feat_dir / f"shard-{k:04d}.npy", arr)
        tmp = feat_dir / f"shard-{k:04d}.json.tmp"
        tmp.write_text(json.dumps({"layers": layers, "seqs": meta}))
        os.replace(tmp, feat_dir / f"shard-{k:04d}.json")
    bar.close()


def load_features(workdir: Path, n_layers: int, holdout_every: int) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(train rows, held-out rows) as float16 arrays [n_layers, rows, d]; held-out = every `holdout_every`-th
    sequence, the sequences the model generated first, then the teacher-forced ones (counts["heldout_generated_rows"]
    tells where they end)."""
    train, held, held_forced = [], [], []
    counts = Counter()
    for meta_file in sorted((workdir / "features").glob("shard-*.json")):
        meta = json.loads(meta_file.read_text())
        arr = np.load(meta_file.with_suffix(".npy"), mmap_mode="r")
        assert arr.shape[0] == n_layers, f"{meta_file}: layers {meta['layers']} do not match this run"
        start = 0
        for s in meta["seqs"]:
            rows = np.asarray(arr[:, start:start + s["rows"]])
            start += s["rows"]
            is_held = holdout_every > 0 and s["i"] % holdout_every == holdout_every - 1
            (train if not is_held else held_forced if s.get("forced") else held).append(rows)
            if is_held and not s.get("forced"):
                counts["heldout_generated_rows"] += s["rows"]
            counts["heldout_rows" if is_held else "train_rows"] += s["rows"]
            counts["heldout_seqs" if is_held else "train_seqs"] += 1
            if not is_held:
                counts["train_forced_rows" if s.get("forced") else "train_generated_rows"] += s["rows"]
    if not train or not held:
        raise RuntimeError("too few sequences for a training and a held-out split: raise --n-prompts")
    return np.concatenate(train, axis=1), np.concatenate(held + held_forced, axis=1), dict(counts)


# --------------------------------------------------------------------------------------------------------------------
# stage 3: vocabulary subset


def stage_vocab(seqs: list[dict[str, Any]], k: int, n_vocab: int, holdout_every: int, workdir: Path) -> np.ndarray:
    """The `k` tokens the model itself generates most often (training sequences only); ties and the remainder are
    filled by frequency in the prompts, then by token id."""
    path = workdir / f"vocab-{k}.json"
    if path.exists():
        return np.asarray(json.loads(path.read_text()), dtype=np.int32)
    gen_count: Counter[int] = Counter()
    prompt_count: Counter[int] = Counter()
    for s in seqs:
        if holdout_every > 0 and s["i"] % holdout_every == holdout_every - 1:
            continue
        p = s["prompt_len"]
        (prompt_count if s["finish"] == "forced" else gen_count).update(s["ids"][p:])
        prompt_count.update(s["ids"][:p])
    order = sorted(range(n_vocab), key=lambda t: (-gen_count[t], -prompt_count[t], t))
    vocab = np.sort(np.asarray(order[:k], dtype=np.int32))
    path.write_text(json.dumps(vocab.tolist()))
    covered = sum(gen_count[int(t)] for t in vocab) / max(sum(gen_count.values()), 1)
    log(workdir, f"vocab: {k} tokens cover {covered:.4f} of the generated training tokens "
                 f"({len(gen_count)} distinct generated)")
    return vocab


# --------------------------------------------------------------------------------------------------------------------
# stage 4: fit


@dataclass
class FitConfig:
    steps: int
    lr: float
    batch: int
    seed: int
    weight_decay: float
    init: str
    loss_vocab: str  # "subset": teacher restricted to the subset and renormalised; "full": full-vocabulary KL
    matmul: str  # "bf16" or "f32" for the big output-matrix products during training
    checkpoint_every: int


def fit_heads(
    readout: Any,
    layers: list[int],
    train: np.ndarray,
    held: np.ndarray,
    cfg: FitConfig,
    workdir: Path,
    progress: bool,
    stop_after: int = 0,
    held_generated_rows: int | None = None,
) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Train T_l for every exit layer at once (one teacher pass per batch); resumable from the checkpoint in
    `workdir`. `stop_after` > 0 ends this call after that many new steps (saved; a later call continues). The first
    `held_generated_rows` held-out rows come from generated sequences (all when None)."""
    import torch
    from tqdm import tqdm

    from .head_math import evaluate_layers, lstsq_init, torch_owned, warmup_cosine_lr

    torch.manual_seed(cfg.seed)
    n_exit = len(layers)
    d = train.shape[2]
    mm_dtype = torch.bfloat16 if cfg.matmul == "bf16" else torch.float32
    w_loss = (readout.w_sub if cfg.loss_vocab == "subset" else readout.w_out).to(mm_dtype)
    h_train = torch_owned(np.ascontiguousarray(train[:n_exit]))  # float16 [n_exit, rows, d]
    z_last = readout.normed(torch_owned(train[n_exit].astype(np.float32)))  # teacher inputs, [rows, d]
    n_rows = z_last.shape[0]

    # One checkpoint per setting: --resume continues the same run, another setting starts its own.
    tag = (f"v{readout.w_sub.shape[0]}-{cfg.loss_vocab}-{cfg.init}-steps{cfg.steps}-b{cfg.batch}-lr{cfg.lr:g}"
           f"-wd{cfg.weight_decay:g}-{cfg.matmul}-seed{cfg.seed}")
    ckpt = workdir / f"fit-{tag}.pt"
    report_file = workdir / f"fit-{tag}.report.json"
    held_h = {layer: torch.from_numpy(held[i].astype(np.float32)) for i, layer in enumerate(layers)}
    held_last = torch.from_numpy(held[n_exit].astype(np.float32))
    n_gen = held_generated_rows if held_generated_rows is not None else len(held_last)

    def held_figures(transforms: dict[int, torch.Tensor]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Figures over all held-out rows, and over the rows of generated sequences alone."""
        every = evaluate_layers(readout, held_h, held_last, transforms)
        gen = evaluate_layers(readout, {k: v[:n_gen] for k, v in held_h.items()}, held_last[:n_gen], transforms)
        return {str(k): v for k, v in every.items()}, {str(k): v for k, v in gen.items()}

    report: dict[str, Any] = json.loads(report_file.read_text()) if report_file.exists() else {}
    if "before" not in report:
        log(workdir, "fit: held-out figures of the identity start (logit lens)")
        report["before"], report["before_generated"] = held_figures({})

    if cfg.init == "lstsq":
        init = [lstsq_init(train[i].astype(np.float32), train[n_exit].astype(np.float32)) for i in range(n_exit)]
        weights = torch.nn.Parameter(torch_owned(np.stack(init)))
    else:
        weights = torch.nn.Parameter(torch.eye(d).repeat(n_exit, 1, 1))
    opt = torch.optim.AdamW([weights], lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["layers"] != layers:
            raise RuntimeError(f"{ckpt} was made for exit layers {state['layers']}, not {layers}")
        with torch.no_grad():
            weights.copy_(state["weights"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["rng"])
        step = int(state["step"])
        log(workdir, f"fit: resumed at step {step}/{cfg.steps}")

    def save() -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"weights": weights.detach().clone(), "opt": opt.state_dict(), "rng": gen.get_state(),
                    "step": step, "layers": layers}, tmp)
        os.replace(tmp, ckpt)

    bar = tqdm(total=cfg.steps, initial=step, desc="fit", unit="step", disable=not progress)
    t0 = time.time()
    losses: list[float] = []
    end = min(cfg.steps, step + stop_after) if stop_after > 0 else cfg.steps
    while step < end:
        idx = torch.randint(0, n_rows, (cfg.batch,), generator=gen)
        with torch.no_grad():
            logp = torch.log_softmax((z_last[idx].to(mm_dtype) @ w_loss.T).float(), -1)
            p = logp.exp()
        for g in opt.param_groups:
            g["lr"] = warmup_cosine_lr(step, cfg.steps, cfg.lr)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for i in range(n_exit):
            z = readout.normed(h_train[i, idx].float(), weights[i])
            logq = torch.log_softmax((z.to(mm_dtype) @ w_loss.T).float(), -1)
            loss = (p * (logp - logq)).sum(-1).mean()
            loss.backward()
            total += float(loss.detach())
        opt.step()
        step += 1
        losses.append(total / n_exit)
        bar.update(1)
        bar.set_postfix(kl=f"{losses[-1]:.3f}")
        if step % cfg.checkpoint_every == 0 or step == end:
            save()
            log(workdir, f"fit: step {step}/{cfg.steps} mean train KL {np.mean(losses[-cfg.checkpoint_every:]):.4f} "
                         f"({(time.time() - t0) / max(len(losses), 1):.2f} s/step)")
    bar.close()
    transforms = {layer: weights[i].detach().clone() for i, layer in enumerate(layers)}
    report["after"], report["after_generated"] = held_figures(transforms)
    if losses:
        report["fit_seconds"] = report.get("fit_seconds", 0.0) + (time.time() - t0)
    report["steps"] = step
    tmp = report_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, report_file)
    return {layer: t.numpy() for layer, t in transforms.items()}, report


# --------------------------------------------------------------------------------------------------------------------
# command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", required=True, metavar="MODEL", help="GGUF file or known model name")
    p.add_argument("-o", "--output", required=True, metavar="HEADS.gguf", help="heads file to write")
    p.add_argument("--layers", default="auto", help="exit layers: 'auto' (1/4, 1/2, 3/4 of the depth) or e.g. 8,15,22")
    p.add_argument("--data", default="mixed", help="code, chat, mixed or a JSONL file (messages/prompt/text records)")
    p.add_argument("--n-prompts", type=int, default=200, help="number of prompts to generate from")
    p.add_argument("--n-texts", type=int, default=0,
                   help="real answers teacher-forced besides (stdlib source for code requests, ShareGPT answers)")
    p.add_argument("--gen-tokens", type=int, default=160, help="greedy tokens generated per prompt")
    p.add_argument("--prompt-positions", type=int, default=16, help="prompt positions trained on per sequence")
    p.add_argument("--holdout-every", type=int, default=10, help="every N-th sequence is held out for evaluation")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, warm-up then cosine)")
    p.add_argument("--batch", type=int, default=256, help="rows per step")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    p.add_argument("--init", default="identity", metavar="identity|lstsq|HEADS.gguf",
                   help="start from the identity (logit lens), from a closed-form least-squares fit, or (with "
                        "--features, dense heads) from the transforms of a heads file for this model: fine-tuning")
    p.add_argument("--seed", type=int, default=0, help="seed for prompts, batches and initialisation")
    p.add_argument("--vocab-subset", type=int, default=0, metavar="K",
                   help="score the heads over the K tokens the model generates most often (0: whole vocabulary)")
    p.add_argument("--check-vocab", type=int, default=0, metavar="K",
                   help="with --features and --vocab-subset: the heads file checks only the K of the subset the model "
                        "predicts most often (the loss still covers the whole subset); a smaller check costs less per "
                        "token (0: the whole subset)")
    p.add_argument("--loss-vocab", choices=("subset", "full"), default="subset",
                   help="with --vocab-subset: KL against the teacher restricted to the subset, or full-vocabulary KL")
    p.add_argument("--matmul", choices=("bf16", "f32"), default="bf16", help="precision of the training matmuls")
    p.add_argument("--dtype", choices=("f16", "f32"), default="f16", help="storage type of the transforms")
    p.add_argument("--checkpoint-every", type=int, default=25, help="save the fit every N steps")
    p.add_argument("--stop-after", type=int, default=0, metavar="N",
                   help="end this run after N new optimiser steps and write the heads so far (--resume continues)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: one per core)")
    p.add_argument("--workdir", default=None, help="stage outputs (default: $ADADECODE_CACHE/train/<model-stem>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --workdir")
    p.add_argument("--fresh", action="store_true", help="discard what --workdir holds and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("training on collected features (adadecode collect-features)")
    g.add_argument("--features", metavar="DIR", default=None,
                   help="train on this feature directory instead of stages 1-2 (--layers: 'auto' = all it holds)")
    g.add_argument("--designs", default="dense",
                   help="head designs trained side by side: dense, lowrank:R, mlp:R (comma-separated)")
    g.add_argument("--curve", default="auto", metavar="FILE",
                   help="pass-cost curve (microbench JSON or replay curve) for the expected saving; 'auto': "
                        "bench/results/packed/microbench-<model>-t2.json")
    g.add_argument("--gamma", type=float, default=0.75, help="the runtime confidence threshold the saving assumes")
    g.add_argument("--heldout-rows", type=int, default=8192, help="held-out rows evaluated")
    g.add_argument("--max-exits", type=int, default=3, help="most exit layers in the written set")
    g.add_argument("--write-design", default="best",
                   help="design written: 'best' (the engine-runnable design with the largest expected saving) or a "
                        "spec from --designs")
    g.add_argument("--write-layers", default="best",
                   help="'best' (the set with the largest expected saving) or comma-separated layers")


def add_train_heads_parser(subparsers: Any, parents: list[argparse.ArgumentParser] | None = None) -> None:
    p = subparsers.add_parser(
        "train-heads",
        parents=parents or [],
        help="train exit heads for a GGUF model (self-distillation, needs torch)",
        description="Train the exit heads of a GGUF model on its own greedy continuations of code and chat "
        "prompts, and write them as a heads sidecar GGUF. Stages are saved in --workdir; --resume continues.",
    )
    add_arguments(p)
    p.set_defaults(func=run_train_heads)


def canonical_command(args: argparse.Namespace) -> str:
    """The command that reproduces these heads, with only the flags that shaped them: on collected features the
    generation stage does not run, so its flags (--data, --n-prompts, ...) are left out and the feature run's are in."""
    parts = ["adadecode", "train-heads", "-m", Path(args.model).name, "-o", Path(args.output).name,
             "--layers", args.layers]  # fmt: skip
    features = getattr(args, "features", None)
    if features:
        parts += ["--features", Path(features).name, "--designs", args.designs, "--gamma", str(args.gamma),
                  "--heldout-rows", str(args.heldout_rows), "--max-exits", str(args.max_exits)]  # fmt: skip
        if args.curve != "auto":
            parts += ["--curve", Path(args.curve).name]
        for flag, value in (("--write-design", args.write_design), ("--write-layers", args.write_layers)):
            if value != "best":
                parts += [flag, value]
    else:
        parts += ["--data", Path(args.data).name if os.path.isfile(args.data) else args.data,
                  "--n-prompts", str(args.n_prompts), "--n-texts", str(args.n_texts),
                  "--gen-tokens", str(args.gen_tokens)]  # fmt: skip
        if args.holdout_every != 10:
            parts += ["--holdout-every", str(args.holdout_every)]
        if args.prompt_positions != 16:
            parts += ["--prompt-positions", str(args.prompt_positions)]
    init = args.init if args.init in INIT_CHOICES else Path(args.init).name
    parts += ["--steps", str(args.steps), "--lr", str(args.lr), "--batch", str(args.batch), "--init", init,
              "--seed", str(args.seed)]  # fmt: skip
    if args.weight_decay:
        parts += ["--weight-decay", str(args.weight_decay)]
    if args.vocab_subset:
        parts += ["--vocab-subset", str(args.vocab_subset), "--loss-vocab", args.loss_vocab]
    if args.check_vocab:
        parts += ["--check-vocab", str(args.check_vocab)]
    if args.matmul != "bf16":
        parts += ["--matmul", args.matmul]
    return shlex.join(parts)


def _prepare_workdir(workdir: Path, cfg: DataConfig, resume: bool, fresh: bool) -> None:
    cfg_file = workdir / "config.json"
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if cfg_file.exists():
        old = json.loads(cfg_file.read_text())
        if not resume:
            raise ValueError(f"'{workdir}' already holds a run: pass --resume to continue it or --fresh to discard it")
        if old != asdict(cfg):
            diff = {k: (old.get(k), v) for k, v in asdict(cfg).items() if old.get(k) != v}
            raise ValueError(f"--resume: the data settings differ from the run in '{workdir}': {diff}")
    else:
        cfg_file.write_text(json.dumps(asdict(cfg), indent=1))


def start_transforms(init: str, model: Any, layers: list[int],
                     designs: list[str]) -> tuple[str, list[np.ndarray] | None, np.ndarray | None]:
    """(FeatureFitConfig.init, the dense start per layer, the start's vocabulary subset) for --init: identity and
    lstsq start inside the fit; a heads file gives its transforms, pinned in the config by the file's SHA-256 (a
    resumed fit must start from the same)."""
    if init in INIT_CHOICES:
        return init, None, None
    path = Path(init)
    if designs != ["dense"]:
        raise ValueError(f"--init {path.name}: a heads file starts dense heads only, not --designs {','.join(designs)}")
    heads = read_heads(path)
    if (heads.n_layer, heads.n_embd) != (model.n_layer, model.n_embd):
        raise ValueError(f"--init {path.name}: made for a model with {heads.n_layer} layers and d={heads.n_embd}, "
                         f"this one has {model.n_layer} and d={model.n_embd}")
    missing = [layer for layer in layers if layer not in heads.transforms]
    if missing:
        raise ValueError(f"--init {path.name} holds dense transforms at layers {sorted(heads.transforms)}, not at "
                         f"{missing}: pass --layers among those")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    start = [np.asarray(heads.transforms[layer], dtype=np.float32) for layer in layers]
    return f"heads:{digest}", start, heads.vocab


def load_costs(curve_arg: str, model: Any) -> Any:

    path = default_curve_path(model.path) if curve_arg == "auto" else Path(curve_arg)
    if path is None:
        raise ValueError("no pass-cost curve found for this model: pass --curve FILE (an adadecode-microbench JSON "
                         "or a replay curve)")
    if not path.is_file():
        raise ValueError(f"--curve: '{path}' does not exist")
    return cost_model(load_curve(path), model.n_layer, model.path), path


def train_from_features(args: argparse.Namespace, model: Any, threads: int) -> dict[str, Any]:
    from .fit_features import FeatureFitConfig, FeatureSet, fit_features, format_report, pick_vocab
    from .head_designs import file_parts, parse_designs
    from .head_math import Readout

    unused = [f"--{k.replace('_', '-')}" for k, default in (("data", "mixed"), ("n_prompts", 200), ("n_texts", 0),
              ("gen_tokens", 160), ("prompt_positions", 16)) if getattr(args, k) != default]
    if args.loss_vocab != "subset":
        unused.append("--loss-vocab full")
    if args.weight_decay:
        unused.append("--weight-decay")
    if unused:
        raise ValueError(f"{', '.join(unused)}: not used with --features (the data comes from the feature directory; "
                         "the loss is KL over the vocabulary subset)")
    if args.check_vocab and not 0 < args.check_vocab <= min(args.vocab_subset, model.n_vocab):
        raise ValueError(f"--check-vocab {args.check_vocab} needs --vocab-subset of at least that many tokens "
                         f"(got {args.vocab_subset})")
    feat_dir = Path(args.features)
    manifest = read_manifest(feat_dir)
    check_model(manifest, model, feat_dir)
    layers = list(manifest["layers"]) if args.layers == "auto" else parse_layers(args.layers, model.n_layer)
    # Checks the layers and shards before any heavy work; the vocabulary subset and the fit read the same shards.
    fs = FeatureSet(feat_dir, layers, args.holdout_every)
    designs = parse_designs(args.designs, model.n_embd)
    init, start, start_vocab = start_transforms(args.init, model, layers, designs)
    if start_vocab is not None and args.vocab_subset:
        raise ValueError(f"--vocab-subset with --init {Path(args.init).name}: the fine-tuned heads keep that file's "
                         f"{len(start_vocab)}-token subset")
    if not 0.0 < args.gamma < 1.0:
        raise ValueError(f"--gamma must lie in (0, 1), got {args.gamma}")
    if args.max_exits < 1:
        raise ValueError(f"--max-exits must be >= 1, got {args.max_exits}")
    costs, curve_path = load_costs(args.curve, model)
    stem = Path(model.path).name.removesuffix(".gguf")
    workdir = Path(args.workdir) if args.workdir else cache_root() / "train" / f"{stem}-features"
    if args.fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / "fit-features.pt").exists() and not args.resume:
        raise ValueError(f"'{workdir}' already holds a run: pass --resume to continue it or --fresh to discard it")

    def say(message: str) -> None:
        log(workdir, message)

    say(f"train-heads on features {feat_dir}: layers {layers}, designs {designs}, curve {curve_path} "
        f"({costs.source}); layer share {costs.layer_share:.3f}, marginal row {costs.marginal_row:.3f}")
    readout = Readout.of_model(model)
    vocab_k = len(start_vocab) if start_vocab is not None else min(args.vocab_subset, model.n_vocab)
    cfg = FeatureFitConfig(layers=layers, designs=designs, steps=args.steps, lr=args.lr, batch=args.batch,
                           seed=args.seed, init=init, holdout_every=args.holdout_every,
                           heldout_rows=args.heldout_rows, vocab_k=vocab_k,
                           matmul=args.matmul, checkpoint_every=args.checkpoint_every)
    def frequent_tokens(k: int) -> np.ndarray:
        """The `k` tokens pick_vocab ranks first (cached in the workdir: the ranking samples rows)."""
        vfile = workdir / f"vocab-{k}.json"
        if vfile.exists():
            return np.asarray(json.loads(vfile.read_text()), dtype=np.int32)
        picked = pick_vocab(fs, readout, k)
        vfile.write_text(json.dumps(picked.tolist()))
        return picked

    vocab = check_vocab = None
    if start_vocab is not None:
        vocab = np.asarray(start_vocab, dtype=np.int32)
        readout = readout.with_vocab(vocab)
    elif cfg.vocab_k:
        vocab = frequent_tokens(cfg.vocab_k)
        if args.check_vocab and args.check_vocab < len(vocab):
            # The same ranking's first K: a subset of the training vocabulary.
            check_vocab = frequent_tokens(args.check_vocab)
            if not set(check_vocab.tolist()) <= set(vocab.tolist()):
                raise FeatureError(f"internal: the {args.check_vocab} checked tokens are not all in the subset")
        readout = readout.with_vocab(vocab)
    _, row_bytes, _ = model_bytes(model.path)
    heads, report = fit_features(fs, readout, cfg, costs, row_bytes, workdir, not args.no_progress,
                                 args.stop_after, args.gamma, say, args.max_exits, start)
    print(format_report(report))
    designs_r = report["designs"]
    if args.write_design == "best":
        runnable = [s for s in designs if designs_r[s]["engine_runs"]]
        if not runnable:
            raise FeatureError("none of --designs can run in the engine: nothing to write")
        spec = max(runnable, key=lambda s: designs_r[s]["best_saving"])
    else:
        spec = args.write_design
        if spec not in designs:
            raise ValueError(f"--write-design {spec} is not one of --designs {designs}")
        if not designs_r[spec]["engine_runs"]:
            raise ValueError(f"--write-design {spec}: the engine cannot run this design; it is evaluated only")
    out_layers = designs_r[spec]["best_layers"] if args.write_layers == "best" else parse_layers(
        args.write_layers, model.n_layer)
    if not set(out_layers) <= set(layers):
        raise ValueError(f"--write-layers {out_layers} are not all among the trained layers {layers}")
    transforms, mlps = file_parts({layer: heads[spec][layer] for layer in out_layers})
    held = designs_r[spec]["layers"]
    metadata = {
        "command": canonical_command(args),
        "data": f"features {feat_dir.name}: {manifest['model']}, sources {','.join(manifest['sources'])}, "
                f"window {manifest['window']}, held-out package {manifest['heldout_package']}; every "
                f"{cfg.holdout_every}th window held out",
        "design": spec,
        "seed": str(args.seed),
        "steps": str(report["steps"]),
        "train_tokens": str(report["train_rows"]),
        "heldout_tokens": str(report["heldout_rows"]),
        "heldout_kl": ",".join(f"{held[str(la)]['kl']:.4f}" for la in out_layers),
        "agreement": ",".join(f"{held[str(la)]['agreement']:.4f}" for la in out_layers),
        "expected_saving": f"{designs_r[spec]['best_saving']:.4f} at gamma {args.gamma} on {curve_path.name}",
        "base_model": Path(model.path).name,
    }
    if start is not None:  # the start's name alone would not say which file it was
        metadata["init"] = f"{Path(args.init).name}, SHA-256 {init.removeprefix('heads:')}"
    if check_vocab is not None:
        metadata["vocab_subset"] = (f"{len(check_vocab)} tokens the model predicts most often on the training rows "
                                    f"(trained over {len(vocab)}; expected_saving is over those {len(vocab)})")
        vocab = check_vocab
    elif vocab is not None:
        metadata["vocab_subset"] = (f"{len(vocab)} tokens, those of {Path(args.init).name}" if start_vocab is not None
                                    else f"{len(vocab)} tokens the model predicts most often on the training rows")
    out, digest = write_heads_file(args, model, transforms, vocab, metadata, mlps)
    say(f"wrote {out} ({spec}, layers {out_layers}, sha256 {digest})")
    return {"output": str(out), "sha256": digest, "report": report, "metadata": metadata}


def train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from .head_math import Readout, format_table

    if args.init not in INIT_CHOICES and not Path(args.init).is_file():
        raise ValueError(f"--init must be identity, lstsq or a heads file; '{args.init}' is none of these")
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    progress = not args.no_progress
    t_start = time.time()
    model = Model(args.model, n_ctx=2048, n_threads=threads)
    if args.features:
        return train_from_features(args, model, threads)
    if args.check_vocab:
        raise ValueError("--check-vocab needs --features (a feature collection); without it, use --vocab-subset")
    if args.init not in INIT_CHOICES:
        raise ValueError(f"--init {args.init}: starting from a heads file needs --features; without it, use "
                         "identity or lstsq")
    layers = parse_layers(args.layers, model.n_layer)
    stem = Path(model.path).name.removesuffix(".gguf")
    workdir = Path(args.workdir) if args.workdir else cache_root() / "train" / stem
    data = str(Path(args.data).resolve()) if os.path.isfile(args.data) else args.data
    cfg = DataConfig(model=Path(model.path).name, layers=layers, data=data, n_prompts=args.n_prompts,
                     n_texts=args.n_texts, gen_tokens=args.gen_tokens, seed=args.seed,
                     prompt_positions=args.prompt_positions, holdout_every=args.holdout_every)
    _prepare_workdir(workdir, cfg, args.resume, args.fresh)
    log(workdir, f"train-heads: {model.path} ({model.arch}, {model.n_layer} layers, d={model.n_embd}), "
                 f"exit layers {layers}, workdir {workdir}")

    seqs = stage_data(model, cfg, workdir, cache_root() / "data", progress)
    stage_features(model, cfg, seqs, workdir, progress)
    train_rows, held_rows, counts = load_features(workdir, len(layers) + 1, cfg.holdout_every)
    n_gen_tokens = sum(len(s["ids"]) - s["prompt_len"] for s in seqs if s["finish"] != "forced")
    log(workdir, f"features: {counts}; {n_gen_tokens} generated tokens in {len(seqs)} sequences")

    readout = Readout.of_model(model)
    vocab = None
    if args.vocab_subset:
        vocab = stage_vocab(seqs, min(args.vocab_subset, model.n_vocab), model.n_vocab, cfg.holdout_every, workdir)
        readout = readout.with_vocab(vocab)
    fit_cfg = FitConfig(steps=args.steps, lr=args.lr, batch=args.batch, seed=args.seed,
                        weight_decay=args.weight_decay, init=args.init,
                        loss_vocab=args.loss_vocab if vocab is not None else "full", matmul=args.matmul,
                        checkpoint_every=args.checkpoint_every)
    transforms, report = fit_heads(readout, layers, train_rows, held_rows, fit_cfg, workdir, progress,
                                   args.stop_after, counts.get("heldout_generated_rows", 0))
    print(format_table({int(k): v for k, v in report["before"].items()}, title="held-out, identity (logit lens):"))
    print(format_table({int(k): v for k, v in report["after"].items()}, title="held-out, trained heads:"))
    print(format_table({int(k): v for k, v in report["after_generated"].items()},
                       title="held-out generated sequences only, trained heads:"))

    after = {int(k): v for k, v in report["after"].items()}
    metadata = {
        "command": canonical_command(args),
        "data": f"{args.data}: {args.n_prompts} prompts with greedy continuations of up to {args.gen_tokens} tokens "
                f"by the model itself ({n_gen_tokens} tokens), {args.n_texts} teacher-forced real answers; every "
                f"{cfg.holdout_every}th sequence held out",
        "seed": str(args.seed),
        "steps": str(report["steps"]),
        "train_tokens": str(counts.get("train_rows", 0)),
        "heldout_tokens": str(counts.get("heldout_rows", 0)),
        "heldout_kl": ",".join(f"{after[lay]['kl']:.4f}" for lay in layers),
        "agreement": ",".join(f"{after[lay]['agreement']:.4f}" for lay in layers),
        "agreement_generated": ",".join(f"{report['after_generated'][str(lay)]['agreement']:.4f}" for lay in layers),
        "agreement_identity": ",".join(f"{report['before'][str(lay)]['agreement']:.4f}"
                                       if str(lay) in report["before"] else "" for lay in layers),
        "base_model": Path(model.path).name,
    }
    if vocab is not None:
        metadata["vocab_subset"] = f"{len(vocab)} most frequent generated tokens; loss {fit_cfg.loss_vocab}"
    out, digest = write_heads_file(args, model, transforms, vocab, metadata)
    log(workdir, f"wrote {out} ({out.stat().st_size} bytes, sha256 {digest}) in {time.time() - t_start:.0f} s total")
    return {"output": str(out), "sha256": digest, "report": report, "counts": counts, "metadata": metadata}


def write_heads_file(args: argparse.Namespace, model: Any, transforms: Any, vocab: Any,
                     metadata: dict[str, str], mlps: Any = None) -> tuple[Path, str]:
    """The sidecar heads file for `model` at args.output (args.dtype), and its SHA-256."""
    out = write_heads(args.output, arch=model.arch, n_layer=model.n_layer, n_embd=model.n_embd,
                      n_vocab=model.n_vocab, transforms=transforms, vocab=vocab, metadata=metadata, dtype=args.dtype,
                      mlps=mlps)
    return out, hashlib.sha256(out.read_bytes()).hexdigest()


def require_train_extra(command: str) -> None:
    """torch and gguf come with the `train` extra; say so in one line when they are missing."""
    missing = [m for m in ("torch", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"{command} needs {' and '.join(missing)}: pip install 'adadecode[train]'")


def run_train_heads(args: argparse.Namespace) -> int:
    require_train_extra("train-heads")
    result = train(args)
    print(f"wrote {result['output']} (sha256 {result['sha256']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m adadecode.train_heads", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run_train_heads(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
