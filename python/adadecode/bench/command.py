"""``adadecode bench``: speed and parity of our decoding modes against llama.cpp and transformers, prompt by prompt.

Every system runs on the same prompts (token ids from the model's chat template), the same GGUF and thread count,
greedy. After a warm-up, each prompt is run by every system in turn, the order rotating from prompt to prompt so
that no system always runs first (or right after the same neighbour). The JSON file is rewritten atomically after
each prompt, which is what ``--resume`` continues from.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from .._version import __version__
from ..cli_common import add_tensor_split_option
from ..fetch import cache_root, resolve_model
from ..heads import shipped_heads
from ..model import Model, default_threads
from . import report
from .errors import WorkerError
from .llamacpp_bin import expand
from .machine import cache_kib, cpu_class, cpu_name, cpu_signature, engine_environment, kernel_families
from .micro import run_micro
from .plots import make_plots
from .report import collection_markdown
from .runners import ANCHORS, EngineMode, Skipped, start_anchor
from .tasks import load_prompts, task_name

DOC_KIND = "adadecode-bench"
DEFAULT_ANCHORS = "llamacpp,llamacpp-ngram,llamacpp-spec,transformers"
# Settings a resumed run must share with the file it continues.
_RESUME_KEYS = (
    "model",
    "heads",
    "task",
    "max_tokens",
    "threads",
    "modes",
    "anchors",
    "gamma",
    "max_pending",
    "draft_model",
    "draft_tokens",
)


def add_bench_parser(subparsers: Any, parents: list[argparse.ArgumentParser] | None = None) -> None:
    p = subparsers.add_parser(
        "bench",
        parents=parents or [],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="benchmark decoding modes against llama.cpp and transformers (speed, parity, exits)",
        description=__doc__.split("\n\n", 1)[1].strip()
        + " Writes OUT/MODEL-TASK.json (every per-prompt figure), .md (summary table) and .png plots, and "
        "OUT/summary.md over all runs in OUT. With --micro: the building blocks instead (batched layer passes of "
        "1..8 rows, exit-check cost, tokenizer throughput vs Hugging Face tokenizers).",
    )
    p.add_argument("-m", "--model", required=True, metavar="MODEL", help="GGUF file or known model name")
    p.add_argument(
        "--heads",
        metavar="H",
        default=None,
        help="exit heads (file or shipped name; default: the heads shipped for the model, if any)",
    )
    p.add_argument(
        "--rpc",
        default=None,
        metavar="HOST:PORT[,...]",
        help="run our modes on the devices of `adadecode rpc-server` processes (several, or --tensor-split: split "
        "across the local CPU and them; docs/rpc.md); anchors stay local",
    )
    add_tensor_split_option(p)
    p.add_argument("--task", default="humaneval", help="humaneval, mtbench, or a JSONL file of prompt records")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="first N prompts of the task (0: all)")
    p.add_argument("--max-tokens", type=int, default=256, metavar="N", help="new tokens per prompt at most")
    p.add_argument(
        "--modes",
        default="standard,adadecode",
        help="our decoding modes, comma-separated (any mode Model.generate accepts)",
    )
    p.add_argument(
        "--anchors",
        default=DEFAULT_ANCHORS,
        help="comma-separated, of llamacpp, llamacpp-ngram, llamacpp-spec, transformers (llama.cpp through "
        "llama-cpp-python and transformers), llamacpp-bin (llama.cpp's llama-completion, greedy), llamacpp-bin-ngram "
        "(llama-speculative-simple prompt lookup: stands for llamacpp-bin-ngram-simple, -ngram-mod and -ngram-map-k, "
        "each also by itself); 'none' for none",
    )
    p.add_argument(
        "--llamacpp-bin",
        metavar="DIR",
        default=None,
        help="folder of llama.cpp's programs for the llamacpp-bin anchors (default: $ADADECODE_LLAMACPP_BIN, else "
        "~/.cache/adadecode/llamacpp-bin/bin, where bench/build_llamacpp.sh puts them)",
    )
    p.add_argument("--draft-model", metavar="M", default=None, help="draft GGUF for llamacpp-spec")
    p.add_argument(
        "--draft-tokens",
        type=int,
        default=None,
        metavar="K",
        help="tokens per draft for llamacpp-spec and llamacpp-ngram (default: 8 and 10)",
    )
    p.add_argument(
        "--llamacpp-python",
        metavar="PATH",
        default=None,
        help="a Python with llama-cpp-python installed, for the llama.cpp anchors "
        "(default: $ADADECODE_LLAMACPP_PYTHON, else this Python)",
    )
    p.add_argument(
        "-t",
        "--threads",
        type=int,
        default=default_threads(),
        metavar="N",
        help="CPU threads for every system; the default is one per core this process may use",
    )
    p.add_argument("-c", "--ctx-size", type=int, default=4096, metavar="N", help="context size of our engine")
    p.add_argument("--gamma", type=float, default=None, help="exit confidence threshold (default: the engine's)")
    p.add_argument("--max-pending", type=int, default=None, help="deferred tokens at most (default: the engine's)")
    p.add_argument("-o", "--out", default="bench-results", metavar="DIR", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT/MODEL-TASK.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    micro = p.add_argument_group("micro-benchmark (--micro)")
    micro.add_argument("--micro", action="store_true", help="benchmark the building blocks instead")
    micro.add_argument(
        "--microbench-bin",
        metavar="PATH",
        default=None,
        help="the adadecode-microbench executable (default: installed one, build/, or PATH)",
    )
    micro.add_argument("--reps", type=int, default=30, help="repetitions per measurement (median)")
    p.set_defaults(func=run_bench)


def _list(text: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    return [] if items == ["none"] else items


def _check_args(args: argparse.Namespace) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ValueError(message)

    need(args.limit >= 0, f"--limit must be >= 0, got {args.limit}")
    need(args.max_tokens >= 1, f"--max-tokens must be >= 1, got {args.max_tokens}")
    need(args.threads >= 1, f"-t/--threads must be >= 1, got {args.threads}")
    need(args.ctx_size >= 16, f"-c/--ctx-size must be >= 16, got {args.ctx_size}")
    need(args.reps >= 1, f"--reps must be >= 1, got {args.reps}")
    need(args.draft_tokens is None or args.draft_tokens >= 1, "--draft-tokens must be >= 1")
    if args.gamma is not None:
        need(0 <= args.gamma <= 1, f"--gamma must be in [0, 1], got {args.gamma}")
    if args.max_pending is not None:
        need(args.max_pending >= 1, f"--max-pending must be >= 1, got {args.max_pending}")
    modes = _list(args.modes)
    need(len(set(modes)) == len(modes), f"--modes lists a mode twice: {args.modes}")

    anchors = _list(args.anchors)
    unknown = [a for a in anchors if a not in ANCHORS]
    need(not unknown, f"unknown anchor(s) {', '.join(unknown)} in --anchors (known: {', '.join(ANCHORS)}, none)")
    need(len(set(anchors)) == len(anchors), f"--anchors lists an anchor twice: {args.anchors}")
    need(
        args.llamacpp_bin is None or any(a.startswith("llamacpp-bin") for a in anchors),
        "--llamacpp-bin is only for the llamacpp-bin anchors, and --anchors names none",
    )
    if args.llamacpp_bin is not None:
        need(Path(args.llamacpp_bin).expanduser().is_dir(), f"--llamacpp-bin {args.llamacpp_bin}: no such folder")
    need(bool(modes or anchors), "nothing to run: --modes and --anchors are both empty")


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (every setting that matters, spelled out)."""
    parts = ["adadecode", "bench", "-m", args.model]
    if args.heads:
        parts += ["--heads", args.heads]
    parts += ["--task", args.task]
    if args.limit:
        parts += ["--limit", str(args.limit)]
    parts += ["--max-tokens", str(args.max_tokens), "--modes", args.modes, "--anchors", args.anchors]
    for flag, value in (
        ("--draft-model", args.draft_model),
        ("--draft-tokens", args.draft_tokens),
        ("--llamacpp-python", args.llamacpp_python),
        ("--llamacpp-bin", args.llamacpp_bin),
        ("--gamma", args.gamma),
        ("--max-pending", args.max_pending),
    ):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["-t", str(args.threads), "-o", args.out]
    return shlex.join([f"{k}={v}" for k, v in engine_environment().items()] + parts)


def _default_heads(model_path: str) -> str | None:
    stem = Path(model_path).name.removesuffix(".gguf")
    return stem if stem in shipped_heads() else None



def _load_resume(path: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot resume from {path}: {exc}") from exc
    old = doc.get("meta", {})
    if old.get("kind") != DOC_KIND:
        raise ValueError(f"cannot resume from {path}: not an adadecode bench file")
    differ = [k for k in _RESUME_KEYS if old.get(k) != meta.get(k)]
    if "kernels" in old and old["kernels"] != meta["kernels"]:  # files from before it was recorded resume as before
        differ.append("kernels")
    if differ:
        raise ValueError(
            f"cannot resume from {path}: the run differs in {', '.join(differ)} "
            f"(e.g. {differ[0]} was {old.get(differ[0])!r}, now {meta.get(differ[0])!r})"
        )
    # The run started when the file did; each resumption is noted with the load it met.
    meta["resumed"] = [*old.get("resumed", []), {"date": meta["date"], "load_average": meta["load_average"]}]
    meta["date"], meta["load_average"] = old.get("date"), old.get("load_average")
    return list(doc.get("prompts", []))


def run_bench(args: argparse.Namespace) -> int:
    _check_args(args)

    model_path = str(resolve_model(args.model))
    if args.micro:
        if args.rpc or args.tensor_split:
            raise ValueError(
                "--rpc and --tensor-split apply to the decoding benchmark, not to --micro (local building blocks)"
            )
        return run_micro(model_path, args)

    from tqdm import tqdm

    modes, anchor_names = _list(args.modes), _list(args.anchors)
    heads = args.heads or (_default_heads(model_path) if any("adadecode" in m for m in modes) else None)
    draft = str(resolve_model(args.draft_model)) if args.draft_model and "llamacpp-spec" in anchor_names else None
    model = Model(model_path, n_ctx=args.ctx_size, n_threads=args.threads, heads=heads, rpc_servers=args.rpc,
                  tensor_split=args.tensor_split)
    prompts = load_prompts(model, args.task, cache_root() / "data", args.limit)
    longest = max(len(p.ids) for p in prompts)
    if longest + args.max_tokens > args.ctx_size:
        raise ValueError(
            f"a prompt of {longest} tokens plus --max-tokens {args.max_tokens} exceeds --ctx-size {args.ctx_size}"
        )
    n_ctx = min(args.ctx_size, longest + args.max_tokens + 16)

    name = task_name(args.task)
    stem = f"{Path(model_path).name.removesuffix('.gguf')}-{name}"
    out_json = Path(args.out) / f"{stem}.json"
    meta: dict[str, Any] = {
        "kind": DOC_KIND,
        "command": _command(args),
        "adadecode_version": __version__,
        "model": model_path,
        "model_name": Path(model_path).name,
        "model_bytes": os.path.getsize(model_path),
        "n_layer": model.n_layer,
        "heads": heads,
        "exit_layers": model.exit_layers,
        "task": name if args.task in ("humaneval", "mtbench") else str(Path(args.task).resolve()),
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "modes": modes,
        "anchors": anchor_names,
        "gamma": args.gamma,
        "max_pending": args.max_pending,
        "draft_model": draft,
        "draft_tokens": args.draft_tokens,
        "n_ctx_anchors": n_ctx,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average": round(os.getloadavg()[0], 2),
        "cpu": cpu_name(), "cpu_signature": cpu_signature(), "cache_kib": cache_kib(), "cpu_class": cpu_class(),
        "kernels": kernel_families(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "skipped": {},
        "anchor_info": {},
    }
    meta["task_name"] = name
    rows = _load_resume(out_json, meta) if args.resume else []
    done = {row["index"] for row in rows}
    for row in rows:
        p = next((q for q in prompts if q.index == row["index"]), None)
        if p is not None and p.preview != row["preview"]:
            raise ValueError(f"cannot resume from {out_json}: prompt {row['index']} is not the same prompt")

    vocab = model.vocab
    eog = [i for i in range(vocab.n_tokens) if vocab.is_eog(i)]
    systems: list[Any] = []
    for mode in modes:
        runner = EngineMode(model, mode, args.gamma, args.max_pending)
        try:
            runner.generate(prompts[0].ids[:32], 1)
        except ValueError as exc:  # a mode this model cannot run (no exit heads): shown as skipped
            if "heads" not in str(exc):
                raise ValueError(f"--modes: {exc}") from exc
            meta["skipped"][mode] = str(exc)
            continue
        systems.append(runner)
    progress = not args.no_progress
    for anchor_name in expand(anchor_names):
        if progress:
            print(f"adadecode bench: starting anchor {anchor_name} ...", file=sys.stderr, flush=True)
        anchor = start_anchor(
            anchor_name,
            model_path,
            args.threads,
            n_ctx,
            eog,
            llamacpp_python=args.llamacpp_python,
            draft_model=draft,
            n_draft=args.draft_tokens,
            llamacpp_bin_dir=args.llamacpp_bin,
            vocab=vocab,
        )
        if isinstance(anchor, Skipped):
            meta["skipped"][anchor_name] = anchor.reason
        else:
            meta["anchor_info"][anchor_name] = anchor.info
            systems.append(anchor)
    if not systems:
        raise ValueError("no system could run: " + "; ".join(f"{k}: {v}" for k, v in meta["skipped"].items()))
    names = [s.name for s in systems]

    def document() -> dict[str, Any]:
        doc = {"meta": meta, "summary": report.summarize(rows, names), "prompts": rows}
        overlap = report.exit_draft_overlap(rows)
        if overlap:
            doc["exit_draft_overlap"] = overlap
        return doc

    try:
        todo = [p for p in prompts if p.index not in done]
        if todo:
            for s in list(systems):  # warm-up: page the weights in, start the threads
                try:
                    s.generate(prompts[0].ids[:32], 16)
                except WorkerError as exc:
                    meta["skipped"][s.name] = f"failed in the warm-up: {exc}"
                    systems.remove(s)
        for p in tqdm(todo, desc=f"bench {stem}", unit="prompt", disable=not progress):
            k = p.index % len(systems)
            order = systems[k:] + systems[:k]
            row: dict[str, Any] = {
                "index": p.index,
                "source": p.source,
                "preview": p.preview,
                "n_prompt": len(p.ids),
                "order": [s.name for s in order],
                "systems": {},
            }
            for s in order:
                try:
                    r = s.generate(p.ids, args.max_tokens)
                except WorkerError as exc:  # an anchor died: keep what it did, say why it stopped
                    meta["skipped"][s.name] = f"failed at prompt {p.index}: {exc}"
                    systems.remove(s)
                    continue
                r["n_generated"] = len(r["tokens"])
                r["tokens_per_second"] = r["n_generated"] / r["decode_seconds"] if r["decode_seconds"] else None
                row["systems"][s.name] = r
            report.add_parity(row)
            rows.append(row)
            rows.sort(key=lambda r: r["index"])
            report.write_json(out_json, document())
            if not systems:
                break
    finally:
        for s in systems:
            s.close()

    doc = document()
    prefix = out_json.with_suffix("")
    try:
        meta["plots"] = [p.name for p in make_plots(doc, prefix)]
    except ImportError as exc:
        meta["plots_skipped"] = f"matplotlib is not installed (pip install 'adadecode[bench]'): {exc}"
        meta["plots"] = []
        print(f"adadecode bench: note: no PNG plots written: {meta['plots_skipped']}", file=sys.stderr, flush=True)
    report.write_json(out_json, doc)
    markdown = report.run_markdown(doc)
    out_json.with_suffix(".md").write_text(markdown, encoding="utf-8")
    write_collection(Path(args.out))
    print(markdown)
    print(f"adadecode bench: wrote {out_json} and {out_json.with_suffix('.md')}", file=sys.stderr)
    return 0


def write_collection(folder: Path) -> Path:
    """OUT/summary.md: one table over every run in the folder."""
    docs = []
    for path in sorted(folder.glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(doc, dict) and doc.get("meta", {}).get("kind") == DOC_KIND:
            docs.append(doc)
    out = folder / "summary.md"
    out.write_text(collection_markdown(docs), encoding="utf-8")
    return out
