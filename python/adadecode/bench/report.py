"""Figures of a benchmark run: per-prompt parity, the per-system summary, the JSON file and the Markdown tables.

Decode tokens/s = generated tokens / decode seconds (prefill excluded), summed over the prompts a system ran.
Parity compares generated token ids with a reference system (our standard decoding; llama.cpp greedy through
llama-cpp-python, and through its own llama-completion) token for token: `match` when identical, else
`first_mismatch` = the first position where they differ (or where the shorter one ends).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

from .llamacpp_bin import GREEDY as LLAMACPP_BIN
from .llamacpp_bin import SPEC_TYPES as LLAMACPP_BIN_LOOKUPS
from .machine import cpu_detail_words

PARITY_REFERENCES = ("standard", "llamacpp", "llamacpp-bin")
# Ratios a system reports per prompt: recomputed from the summed counts, never summed themselves.
_RATIO_SUFFIXES = ("_rate", "_fraction", "per_second")


def parity(tokens: list[int], reference: list[int]) -> dict[str, Any]:
    if tokens == reference:
        return {"match": True, "first_mismatch": None}
    n = min(len(tokens), len(reference))
    first = next((i for i in range(n) if tokens[i] != reference[i]), n)
    return {"match": False, "first_mismatch": first}


def add_parity(row: dict[str, Any]) -> None:
    """Parity of every system in a prompt's row against each reference system that ran on it."""
    systems = row["systems"]
    for name, result in systems.items():
        result["parity"] = {
            ref: parity(result["tokens"], systems[ref]["tokens"])
            for ref in PARITY_REFERENCES
            if ref in systems and ref != name
        }


def _add(total: Any, value: Any) -> Any:
    """Sum stats values: numbers, lists of numbers (elementwise), dicts (per key); None for anything else."""
    if isinstance(value, bool):
        return (total or 0) + int(value)
    if isinstance(value, (int, float)):
        return (total or 0) + value
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        # Histograms (rows_per_pass) grow with what a prompt needed: sum them padded with zeros.
        total = list(total or [])
        total += [0] * (len(value) - len(total))
        return [t + (value[i] if i < len(value) else 0) for i, t in enumerate(total)]
    if isinstance(value, dict):
        total = dict(total or {})
        for k, v in value.items():
            total[k] = _add(total.get(k), v)
        return total
    return None


def stats_totals(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts in the systems' own stats summed over prompts; values that identify rather than count (exit layers, the
    thread count) are kept as they are when every prompt agrees."""
    totals: dict[str, Any] = {}
    for r in results:
        for key, value in r.get("stats", {}).items():
            if key.endswith(_RATIO_SUFFIXES) or key in ("n_prompt", "n_generated", "finish_reason"):
                continue
            if key in ("exit_layers", "threads"):
                totals[key] = value if totals.get(key, value) == value else None
                continue
            if key == "peak_rss_mib":  # a high-water mark: the largest, not the sum
                totals[key] = max(totals.get(key) or 0.0, value or 0.0)
                continue
            totals[key] = _add(totals.get(key), value)
    return {k: v for k, v in totals.items() if v is not None}


def _rate(num: float, den: float) -> float | None:
    return num / den if den else None


def summarize(rows: list[dict[str, Any]], systems: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in systems:
        results = [row["systems"][name] for row in rows if name in row["systems"]]
        if not results:
            continue
        tokens = sum(len(r["tokens"]) for r in results)
        decode = sum(r["decode_seconds"] for r in results)
        prefill = sum(r["prefill_seconds"] for r in results)
        n_prompt = sum(row["n_prompt"] for row in rows if name in row["systems"])
        s: dict[str, Any] = {
            "prompts": len(results),
            "tokens": tokens,
            "decode_seconds": decode,
            "prefill_seconds": prefill,
            "tokens_per_second": _rate(tokens, decode),
            "prefill_tokens_per_second": _rate(n_prompt, prefill),
        }
        for ref in PARITY_REFERENCES:
            checked = [r["parity"][ref]["match"] for r in results if ref in r.get("parity", {})]
            if checked:
                s[f"parity_vs_{ref}"] = {
                    "matched": sum(checked),
                    "compared": len(checked),
                    "rate": sum(checked) / len(checked),
                }
        totals = stats_totals(results)
        s["stats_totals"] = totals
        if totals.get("peak_rss_mib"):
            s["peak_rss_mib"] = totals["peak_rss_mib"]
        if "n_verified" in totals and "n_accepted" in totals:
            # Provisional tokens come from exit heads and, in the ngram modes, from prompt-lookup drafts.
            from_drafts = totals.get("ngram_accepted", 0)
            s["early_exit_fraction"] = _rate(totals["n_accepted"] - from_drafts, tokens)
            s["accept_rate"] = _rate(totals["n_accepted"], totals["n_verified"])
            if totals.get("early_per_layer"):
                s["exit_accept_rate"] = _rate(sum(totals["accepted_per_layer"]), sum(totals["early_per_layer"]))
            if totals.get("ngram_drafted"):
                s["drafted_fraction"] = _rate(from_drafts, tokens)
                s["draft_accept_rate"] = _rate(from_drafts, totals["ngram_drafted"])
        if "n_drafted" in totals and "n_draft_accepted" in totals:
            s["drafted_fraction"] = _rate(totals["n_draft_accepted"], tokens)
            s["draft_accept_rate"] = s["accept_rate"] = _rate(totals["n_draft_accepted"], totals["n_drafted"])
        summary[name] = s
    for ref in PARITY_REFERENCES:
        base = summary.get(ref, {}).get("tokens_per_second")
        if not base:
            continue
        for name, s in summary.items():
            if s["tokens_per_second"]:
                s[f"speedup_vs_{ref}"] = s["tokens_per_second"] / base
            ratios = [_prompt_speedup(row, name, ref) for row in rows]
            ratios = [x for x in ratios if x is not None]
            if ratios:
                s[f"median_prompt_speedup_vs_{ref}"] = statistics.median(ratios)
    return summary


def exit_draft_overlap(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What exit heads can add to prompt lookup: of the tokens the adadecode mode took from exit heads, how many sit
    where the ngram mode took a drafted token (greedy outputs are the same token for token, so positions match).
    Only early tokens outside the drafts can save time beyond prompt lookup; None without both modes' sources."""
    early = shared = tokens = prompts = 0
    for row in rows:
        ada, ngram = row["systems"].get("adadecode"), row["systems"].get("ngram")
        if not ada or not ngram or ada["tokens"] != ngram["tokens"]:
            continue
        sa, sn = ada.get("token_sources"), ngram.get("token_sources")
        if not sa or not sn or len(sa) != len(sn):
            continue
        prompts += 1
        tokens += len(sa)
        early += sa.count("e")
        shared += sum(1 for a, n in zip(sa, sn, strict=True) if a == "e" and n == "d")
    if not prompts:
        return None
    return {
        "prompts": prompts,
        "tokens": tokens,
        "adadecode_early": early,
        "also_drafted_by_ngram": shared,
        "shared_fraction_of_early": _rate(shared, early),
        "early_outside_drafts_fraction": _rate(early - shared, tokens),
    }


def _prompt_speedup(row: dict[str, Any], name: str, ref: str) -> float | None:
    a, b = row["systems"].get(name), row["systems"].get(ref)
    if not a or not b or not a["decode_seconds"] or not b["decode_seconds"] or not a["tokens"] or not b["tokens"]:
        return None
    return (len(a["tokens"]) / a["decode_seconds"]) / (len(b["tokens"]) / b["decode_seconds"])


def prompt_speedups(doc: dict[str, Any], name: str, ref: str = "standard") -> list[float]:
    out = [_prompt_speedup(row, name, ref) for row in doc["prompts"]]
    return [x for x in out if x is not None]


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Atomic: a run killed while writing leaves the previous file, which --resume continues from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------------------
# Markdown


def _num(x: float | None, fmt: str = "{:.2f}", suffix: str = "") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x) + suffix


def _parity_cell(s: dict[str, Any], ref: str) -> str:
    p = s.get(f"parity_vs_{ref}")
    return f"{p['matched']}/{p['compared']}" if p else "–"


def llamacpp_reference(summary: dict[str, Any]) -> str:
    """The llama.cpp anchor the "× llama.cpp" columns compare with: llama.cpp's own greedy program where it ran,
    else llama-cpp-python."""
    return LLAMACPP_BIN if LLAMACPP_BIN in summary else "llamacpp"


def _system_cells(s: dict[str, Any], llamacpp: str) -> list[str]:
    return [
        _num(s["tokens_per_second"]),
        _num(s.get("speedup_vs_standard"), "{:.2f}", "×"),
        _num(s.get("median_prompt_speedup_vs_standard"), "{:.2f}", "×"),
        _num(s.get(f"speedup_vs_{llamacpp}"), "{:.2f}", "×"),
        _parity_cell(s, "standard"),
        _parity_cell(s, llamacpp),
        _num(s.get("early_exit_fraction"), "{:.1%}"),
        _num(s.get("drafted_fraction"), "{:.1%}"),
        _num(s.get("accept_rate"), "{:.1%}"),
    ]


_HEADER = [
    "tok/s",
    "× standard",
    "median ×/prompt",
    "× llama.cpp",
    "parity vs standard",
    "parity vs llama.cpp",
    "early exit",
    "drafted",
    "accept",
]


def _sources(s: dict[str, Any]) -> str | None:
    """Where a mode's tokens came from, when it has more than one source of provisional tokens."""
    if s.get("drafted_fraction") is None or s.get("early_exit_fraction") is None:
        return None
    heads, drafts = s["early_exit_fraction"], s["drafted_fraction"]
    parts = [f"exit heads {heads:.1%}", f"n-gram drafts {drafts:.1%}", f"last layer {1 - heads - drafts:.1%}"]
    for key, label in (("exit_accept_rate", "exit heads"), ("draft_accept_rate", "drafts")):
        if s.get(key) is not None:
            parts.append(f"{label} accepted {s[key]:.1%}")
    return ", ".join(parts)


def _kernels_note(meta: dict[str, Any]) -> str:
    """The CPU and the kernel families our modes ran (files written before they were recorded: the CPU only)."""
    note = f" · {meta['cpu']}{cpu_detail_words(meta)} ({meta.get('cpu_class', '?')})" if meta.get("cpu") else ""
    if kernels := meta.get("kernels"):
        note += f" · kernels: matmul {kernels['matmul']}, attention {kernels['attention']}"
    return note


def _ratio_words(doc: dict[str, Any], name: str, ref: str, what: str) -> str | None:
    summary = doc["summary"]
    ours, theirs = summary.get(name, {}).get("tokens_per_second"), summary[ref]["tokens_per_second"]
    ratios = prompt_speedups(doc, name, ref)
    if not ours or not ratios:
        return None
    return (f"{name} {ours / theirs:.2f}× {what} (`{ref}`, {theirs:.2f} tok/s; per prompt median "
            f"{statistics.median(ratios):.2f}×, {min(ratios):.2f}-{max(ratios):.2f}×)")


def against_llamacpp_programs(doc: dict[str, Any]) -> str | None:
    """Issue 23's two decode checks, where llama.cpp's own programs ran: standard decoding against llama-completion's
    greedy decoding, and prompt lookup against the fastest of llama.cpp's prompt-lookup types."""
    summary = doc["summary"]
    parts = []
    if summary.get(LLAMACPP_BIN, {}).get("tokens_per_second"):
        parts.append(_ratio_words(doc, "standard", LLAMACPP_BIN, "llama.cpp greedy"))
    lookups = [name for name in LLAMACPP_BIN_LOOKUPS if summary.get(name, {}).get("tokens_per_second")]
    if lookups:
        best = max(lookups, key=lambda name: summary[name]["tokens_per_second"])
        what = "llama.cpp's fastest prompt lookup"
        parts += [_ratio_words(doc, name, best, what) for name in ("ngram", "adadecode+ngram")]
    words = [p for p in parts if p]
    return "Against llama.cpp's own programs: " + "; ".join(words) + "." if words else None


def run_markdown(doc: dict[str, Any]) -> str:
    meta, summary = doc["meta"], doc["summary"]
    lines = [
        f"# {meta['model_name']} · {meta['task']} · {len(doc['prompts'])} prompts × ≤{meta['max_tokens']} new tokens"
        f" · {meta['threads']} threads · greedy",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['date']} · load average at start {meta.get('load_average', '?')} · heads {meta.get('heads') or '–'}"
        + _kernels_note(meta),
        "",
        "| system | " + " | ".join(_HEADER) + " |",
        "|---" * (len(_HEADER) + 1) + "|",
    ]
    llamacpp = llamacpp_reference(summary)
    for name, s in summary.items():
        lines.append(f"| {name} | " + " | ".join(_system_cells(s, llamacpp)) + " |")
    lines.append("")
    lines.append(
        f"Decode tokens/s (prefill excluded), summed over prompts; × = ratio of tokens/s (× llama.cpp: to {llamacpp})"
        "; parity = prompts "
        "whose tokens equal the reference's token for token; early exit = tokens accepted from an exit "
        "head / all tokens; drafted = tokens accepted from n-gram or draft-model drafts / all tokens; accept = "
        "provisional tokens (early or drafted) that verification kept / all it checked."
    )
    programs = against_llamacpp_programs(doc)
    if programs:
        lines.append(f"\n{programs}")
    rss = [f"{name} {s['peak_rss_mib']:.0f}" for name, s in summary.items() if s.get("peak_rss_mib")]
    if rss:
        lines.append(
            f"\nPeak RSS (MiB, ru_maxrss): {', '.join(rss)}. Our modes share the benchmark's process (the model, "
            "every mode, Python), so theirs is one figure; each anchor runs in a worker process of its own."
        )
    for name, s in summary.items():
        src = _sources(s)
        if src:
            lines.append(f"\n{name} token sources: {src}")
    overlap = doc.get("exit_draft_overlap")
    if overlap and overlap["adadecode_early"]:
        lines.append(
            f"\nExits and drafts overlap: of adadecode's {overlap['adadecode_early']} early tokens, "
            f"{overlap['shared_fraction_of_early']:.1%} sit where ngram drafted the same token; the rest, "
            f"{overlap['early_outside_drafts_fraction']:.1%} of all tokens, is what exits can add to prompt lookup."
        )
    for name, why in meta.get("skipped", {}).items():
        lines.append(f"\n**{name}: skipped** — {why}")
    for name in meta.get("plots", []):
        lines.append(f"\n![{name}]({name})")
    return "\n".join(lines) + "\n"


def collection_markdown(docs: list[dict[str, Any]]) -> str:
    """One table over several runs (model × task), for a results folder."""
    lines = [
        "# Benchmark summary",
        "",
        "| model | task | prompts | system | " + " | ".join(_HEADER) + " |",
        "|---" * (len(_HEADER) + 4) + "|",
    ]
    for doc in docs:
        meta = doc["meta"]
        llamacpp = llamacpp_reference(doc["summary"])
        for name, s in doc["summary"].items():
            lines.append(
                f"| {meta['model_name']} | {meta['task']} | {s['prompts']} | {name} | "
                + " | ".join(_system_cells(s, llamacpp))
                + " |"
            )
        for name, why in meta.get("skipped", {}).items():
            lines.append(
                f"| {meta['model_name']} | {meta['task']} | – | {name} | skipped: {why} |" + " |" * (len(_HEADER) - 1)
            )
    lines.append("")
    lines.append("Per-run details, commands and plots: the `.md` file of each run.")
    return "\n".join(lines) + "\n"
