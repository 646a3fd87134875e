"""``adadecode bench --micro``: the building blocks the layer-parallel scheduler rests on.

- ``adadecode-microbench`` (cpp/cli/microbench.cpp, installed in adadecode/bin): one batched pass over all layers for
  1..8 rows relative to one row, and the cost of one exit check (head transform + output matrix) relative to a token;
  the roofline under those passes (the weights at the machine's streaming read rate, each row's multiply-accumulates
  at the int8 dot-product peak) and how close each row count comes to it; the CPU and the matmul kernel family.
- Tokenizer throughput: our tokenizer against Hugging Face ``tokenizers`` (the tokenizer transformers builds from the
  same GGUF), one text at a time on the task's request texts, best-of-N wall time each, alternating; plus how many
  texts both tokenize to the same ids.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..eval_heads import task_prompts
from ..model import Model
from .machine import cache_kib, cpu_detail_words, cpu_signature
from .report import write_json

MICROBENCH = "adadecode-microbench"


def find_microbench(explicit: str | None) -> tuple[str | None, str]:
    """(path, or None, and where it was looked for)."""
    if explicit:
        return (explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None), explicit
    package = Path(__file__).resolve().parents[1]
    candidates = [package / "bin" / MICROBENCH, package.parents[1] / "build" / MICROBENCH]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c), str(c)
    on_path = shutil.which(MICROBENCH)
    looked = ", ".join(str(c) for c in candidates) + ", PATH"
    return on_path, looked


def run_microbench(binary: str, model_path: str, threads: int, reps: int) -> dict[str, Any]:
    proc = subprocess.run([binary, model_path, str(threads), str(reps)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{binary} exited with status {proc.returncode}: {' '.join(proc.stderr.split())[-300:]}")
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"{binary} printed no JSON ({exc}): {' '.join(proc.stdout.split())[:200]!r}") from exc
    missing = [k for k in ("setups", "rows", "read_gbs", "int8_peak_gmacs", "qmatmul_family") if k not in doc]
    if missing:
        raise RuntimeError(f"{binary} is from another version of adadecode: its JSON lacks {', '.join(missing)}")
    return doc


def _texts(model_path: str, task: str, limit: int) -> list[str]:
    records = task_prompts(task)[: limit or None]
    return [r.messages[-1]["content"] if r.messages else (r.prompt or r.text or "") for r in records]


def _best_time(fn: Any, texts: list[str], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for t in texts:
            fn(t)
        best = min(best, time.perf_counter() - t0)
    return best


def tokenizer_throughput(model: Any, texts: list[str], reps: int) -> dict[str, Any]:
    """Ours vs Hugging Face tokenizers on the same texts (no special tokens added, none parsed)."""
    from transformers import AutoTokenizer

    path = Path(model.path)
    hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name).backend_tokenizer
    ours = model.vocab

    def ours_encode(t: str) -> list[int]:
        return ours.tokenize(t, False, False)

    def hf_encode(t: str) -> list[int]:
        return hf.encode(t, add_special_tokens=False).ids

    same = sum(ours_encode(t) == hf_encode(t) for t in texts)
    ours_s, hf_s = float("inf"), float("inf")
    for _ in range(max(1, reps // 5)):  # alternate, so that both see the same machine state
        ours_s = min(ours_s, _best_time(ours_encode, texts, 5))
        hf_s = min(hf_s, _best_time(hf_encode, texts, 5))
    chars = sum(len(t) for t in texts)
    tokens = sum(len(ours_encode(t)) for t in texts)
    return {
        "texts": len(texts),
        "characters": chars,
        "tokens": tokens,
        "same_ids": same,
        "adadecode_seconds": ours_s,
        "hf_tokenizers_seconds": hf_s,
        "adadecode_tokens_per_second": tokens / ours_s,
        "hf_tokenizers_tokens_per_second": tokens / hf_s,
        "speedup_vs_hf": hf_s / ours_s,
    }


def floor_relative_cost(rows: dict[str, dict[str, float]], k: str) -> float:
    """The least a pass over k rows can cost relative to the measured one-row pass: its memory or arithmetic floor."""
    row = rows[k]
    return max(row["memory_floor_seconds"], row["arithmetic_floor_seconds"]) / rows["1"]["seconds"]


def _prefetch_words(min_rows: int | None) -> str:
    """How the packed kernels prefetched their weights in that run (None: a build from before 2026-12-06)."""
    if min_rows is None:
        return "weight prefetch not recorded"
    if min_rows == 0:
        return "no software prefetch of the weights"
    return f"weights prefetched from {min_rows} row{'s' if min_rows > 1 else ''} (ADADECODE_QMATMUL_PREFETCH_ROWS)"


def _q4_k_scale_words(scale: str | None) -> str:
    """How the AVX-512 VNNI Q4_K kernel applied its scales in that run ("" or None: another family, or an older
    build)."""
    return f"; Q4_K scales by {scale} (ADADECODE_QMATMUL_Q4K_SCALE)" if scale else ""


def _q4_k_high_nibbles_words(how: str | None) -> str:
    """How the VNNI Q4_K kernels took the weights' high nibbles in that run ("" or None: another family, or an older
    build)."""
    return f"; Q4_K high nibbles by {how} (ADADECODE_QMATMUL_GFNI)" if how else ""


def _read_samples_words(samples: list[float] | None) -> str:
    """The read rates measured before, amid and after the passes, of which read_gbs is the highest (None: an older
    build, one measurement)."""
    if not samples or len(samples) < 2:
        return ""
    return f" (the highest of {', '.join(f'{x:.1f}' for x in samples)}: before, amid and after the passes)"


def micro_markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Micro-benchmark: {Path(doc['model']).name}, {doc['threads']} threads", "", f"`{doc['command']}`", ""]
    mb = doc.get("microbench")
    if mb:
        rows = mb["rows"]
        ks = list(rows)
        lines += [
            f"CPU: {mb['cpu_model']}{cpu_detail_words(doc)}; matmul kernel family: {mb['qmatmul_family']}; "
            f"attention kernel: {mb.get('attention_family', 'not recorded')}; two rows through the "
            f"{mb.get('two_row_kernel', 2)}-row kernel (ADADECODE_QMATMUL_TWO_ROWS); "
            f"{_prefetch_words(mb.get('prefetch_min_rows'))}{_q4_k_scale_words(mb.get('q4_k_scale'))}"
            f"{_q4_k_high_nibbles_words(mb.get('q4_k_high_nibbles'))}; streaming read "
            f"{mb['read_gbs']:.1f} GB/s{_read_samples_words(mb.get('read_gbs_samples'))}, "
            f"int8 dot-product peak {mb['int8_peak_gmacs']:.0f} GMAC/s "
            f"(both on {mb['threads']} threads); a pass reads {mb['weight_bytes_per_pass'] / 1e6:.1f} MB of weights "
            f"and does {mb['macs_per_row'] / 1e6:.1f} M multiply-accumulates per row.",
            "",
            f"Full pass with logits over k rows ({mb['setups'][0]} setup, fastest of {mb['reps']}); roofline = "
            "max(weight bytes / read rate, k × MACs / peak) / seconds:",
            "",
            "| rows | " + " | ".join(ks) + " |",
            "|---" * (len(ks) + 1) + "|",
            "| seconds | " + " | ".join(f"{rows[k]['seconds'] * 1e3:.1f} ms" for k in ks) + " |",
            "| relative cost | " + " | ".join(f"{rows[k]['relative_cost']:.2f}" for k in ks) + " |",
            "| GB/s of weights | " + " | ".join(f"{rows[k]['gbs']:.1f}" for k in ks) + " |",
            "| roofline fraction | " + " | ".join(f"{rows[k]['roofline_fraction']:.2f}" for k in ks) + " |",
            "| roofline floor, relative | " + " | ".join(f"{floor_relative_cost(rows, k):.2f}" for k in ks) + " |",
            "",
            "The floor row is the least a k-row pass could cost relative to the measured one-row pass: the larger of "
            "its two roofline floors over the one-row seconds. A relative-cost target below it cannot be met on "
            "this machine at this thread count.",
            "",
        ]
        for name in mb["setups"]:
            st = mb[name]
            lines += [
                f"Setup {name}: batched pass over all layers without logits (deferred layers), cost relative to "
                "one row with logits (median):",
                "",
                "| rows | " + " | ".join(st["relative_cost"]) + " |",
                "|---" * (len(st["relative_cost"]) + 1) + "|",
                "| relative cost | " + " | ".join(f"{v:.2f}" for v in st["relative_cost"].values()) + " |",
                "",
                f"Exit check (head + output matrix, one row): {st['exit_check_seconds'] * 1e3:.2f} ms = "
                f"{st['exit_check_relative_to_token']:.3f} of a token's full pass.",
                "",
            ]
    tk = doc.get("tokenizer")
    if tk:
        lines += [
            f"Tokenizer on {tk['texts']} {doc['task']} texts ({tk['characters']} characters, {tk['tokens']} "
            f"tokens), one text at a time:",
            "",
            "| tokenizer | tokens/s |",
            "|---|---|",
            f"| adadecode | {tk['adadecode_tokens_per_second']:,.0f} |",
            f"| HF tokenizers | {tk['hf_tokenizers_tokens_per_second']:,.0f} |",
            "",
            f"Ours is {tk['speedup_vs_hf']:.2f}× HF tokenizers; identical ids on {tk['same_ids']}/{tk['texts']} "
            "texts (the HF tokenizer is the one transformers builds from the GGUF); best of repeated passes over "
            "the same texts, so both tokenizers' caches are warm.",
            "",
        ]
    for name, why in doc.get("skipped", {}).items():
        lines.append(f"**{name}: skipped** — {why}\n")
    return "\n".join(lines) + "\n"


def run_micro(model_path: str, args: argparse.Namespace) -> int:
    doc: dict[str, Any] = {
        "kind": "adadecode-microbench",
        "model": model_path,
        "threads": args.threads,
        "reps": args.reps,
        "task": args.task,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average": round(os.getloadavg()[0], 2),
        "cpu_signature": cpu_signature(),
        "cache_kib": cache_kib(),
        "skipped": {},
        "command": f"adadecode bench --micro -m {args.model} --task {args.task} -t {args.threads} --reps {args.reps}"
        + (f" --limit {args.limit}" if args.limit else "")
        + (f" --microbench-bin {args.microbench_bin}" if args.microbench_bin else "")
        + f" -o {args.out}",
    }
    binary, looked = find_microbench(args.microbench_bin)
    if binary is None:
        raise ValueError(
            f"--micro needs the {MICROBENCH} executable and there is none (looked at {looked}); it is installed "
            "with the package (adadecode/bin) unless the build turned ADADECODE_BUILD_CLI off: reinstall, or build "
            "the C++ targets (cmake) and pass --microbench-bin PATH"
        )
    try:
        doc["microbench"] = run_microbench(binary, model_path, args.threads, args.reps)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValueError(f"{binary}: {exc}") from exc
    except RuntimeError as exc:
        raise ValueError(str(exc)) from exc
    model = Model(model_path, n_ctx=256, n_threads=args.threads)
    try:
        texts = _texts(model_path, args.task, args.limit)
        doc["tokenizer"] = tokenizer_throughput(model, texts, args.reps)
    except ImportError as exc:
        doc["skipped"]["tokenizer"] = f"Hugging Face transformers/tokenizers not installed: {exc}"
    except (OSError, ValueError, RuntimeError) as exc:
        doc["skipped"]["tokenizer"] = " ".join(str(exc).split())[:300]
    stem = f"micro-{Path(model_path).name.removesuffix('.gguf')}"
    out_json, out_md = Path(args.out) / f"{stem}.json", Path(args.out) / f"{stem}.md"
    write_json(out_json, doc)
    md = micro_markdown(doc)
    out_md.write_text(md, encoding="utf-8")
    print(md)
    print(f"adadecode bench: wrote {out_json} and {out_md}", file=sys.stderr)
    return 0
