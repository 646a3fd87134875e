"""Greedy parity anchor: does our standard greedy decoding give llama.cpp's tokens, and where it does not, why?

For N prompts (chat-formatted HumanEval problems and MT-Bench first turns, plus a few plain-text prompts from
tests/prompts.py) both engines decode greedily on the same GGUF, prompt ids and thread count: ours in this process
(`Model.generate(mode="standard", return_logits=True)`), llama.cpp (llama-cpp-python) in the worker process of
`adadecode bench` (python/adadecode/bench/llamacpp_worker.py). Both record the logits that chose every token, so
at the first differing token the script shows each engine's top-2 there: the rows at that position were computed
from identical contexts (prompt + common prefix). It also teacher-forces prompt + common prefix through llama.cpp
with logits_all=True (batched, like a prompt) and through our engine, and reports

- per prompt: token match, the first differing position, both engines' top-2 logits at it (decode path and
  teacher-forced), max and mean |logit difference| over the common prefix (decode path and teacher-forced);
- a verdict: a mismatch is a **near-tie** when the change of the gap between the two tokens from one engine to the
  other (`flip` = our gap + llama.cpp's gap, each engine's margin for its own token) is at most twice the largest
  |logit difference| the engines showed on that prompt's common prefix: per-logit noise of that size can swap such
  a pair. Anything else is **unexplained** and needs a look (a real bug would show as a flip far beyond the noise,
  or as a large logit difference everywhere).

One command re-runs it (it writes MODEL.json and MODEL.md into the output folder and appends nothing):

    nice -n 19 python3 bench/llamacpp_greedy_parity.py -m smollm2-135m --prompts 20 -t 1 \\
        --llamacpp-python /work/venv-llama/bin/python
    nice -n 19 python3 bench/llamacpp_greedy_parity.py -m qwen2.5-coder-0.5b --prompts 10 -t 1 \\
        --llamacpp-python /work/venv-llama/bin/python

(`--llamacpp-python` defaults to $ADADECODE_LLAMACPP_PYTHON.) The JSON records which ggml library our extension
loaded (the prebuilt wheel or a source build), since kernels differ between them.

`--exact` (writes MODEL-exact.*) takes llama.cpp's batched kernels out of the comparison. llama.cpp then evaluates
the prompt one token at a time with weight repacking off, so every row goes through the one-row kernels our
engine uses. Against a build of ours on the same ggml tree and flags as llama.cpp's, the logits should then be
bitwise identical, and any difference is ours to explain. The near-tie verdict cannot catch a bug that raises the
noise everywhere; this mode can. Results and analysis: bench/results/llamacpp-parity/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from adadecode import Model  # noqa: E402
from adadecode.bench.runners import LLAMACPP_PYTHON_ENV, Worker, WorkerError  # noqa: E402
from adadecode.bench.tasks import load_prompts  # noqa: E402
from adadecode.fetch import cache_root, resolve_model  # noqa: E402
from prompts import PARITY_PROMPTS  # noqa: E402

WORKER = Path(__file__).resolve().parent.parent / "python" / "adadecode" / "bench" / "llamacpp_worker.py"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "llamacpp-parity"


def pick_prompts(model: Model, n: int) -> list[dict[str, Any]]:
    """n prompts: a fifth plain text (at most 4, at least 1), the rest HumanEval and MT-Bench in turn."""
    n_plain = max(1, min(4, n // 5))
    n_chat = n - n_plain
    n_he, n_mt = (n_chat + 1) // 2, n_chat // 2
    data = cache_root() / "data"
    out: list[dict[str, Any]] = []
    for task, k in (("humaneval", n_he), ("mtbench", n_mt)):
        if k:
            for p in load_prompts(model, task, data, k):
                out.append({"source": f"{task}[{p.index}]", "preview": p.preview, "ids": p.ids})
    for i, text in enumerate(PARITY_PROMPTS[:n_plain]):
        out.append({"source": f"plain[{i}]", "preview": " ".join(text.split())[:80], "ids": model.tokenize(text)})
    return out


def top2(row: np.ndarray) -> list[tuple[int, float]]:
    idx = np.argpartition(-row, 2)[:2]
    idx = idx[np.argsort(-row[idx])]
    return [(int(i), float(row[i])) for i in idx]


def first_mismatch(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def diff_stats(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    if len(a) == 0:
        return {"rows": 0, "max_abs": None, "mean_abs": None, "argmax_agree": None}
    d = np.abs(a - b)
    per_row = d.max(axis=1)
    return {
        "rows": len(a),
        "max_abs": float(per_row.max()),
        "max_abs_row": int(per_row.argmax()),
        "mean_abs": float(d.mean()),
        "argmax_agree": int((a.argmax(1) == b.argmax(1)).sum()),
    }


def at_position(model: Model, ours: np.ndarray, theirs: np.ndarray, tok_ours: int, tok_theirs: int) -> dict[str, Any]:
    """Both engines' view of one row where they chose different tokens."""

    def show(pairs: list[tuple[int, float]]) -> list[dict[str, Any]]:
        return [{"id": i, "text": model.detokenize([i], special=True), "logit": round(v, 4)} for i, v in pairs]

    gap_ours = float(ours[tok_ours] - ours[tok_theirs])  # >= 0: we chose tok_ours
    gap_theirs = float(theirs[tok_theirs] - theirs[tok_ours])  # >= 0: llama.cpp chose tok_theirs
    return {
        "ours_top2": show(top2(ours)),
        "llamacpp_top2": show(top2(theirs)),
        "ours_margin": round(gap_ours, 4),
        "llamacpp_margin": round(gap_theirs, 4),
        "flip": round(gap_ours + gap_theirs, 4),
        "rank_of_our_token_in_llamacpp": int((theirs > theirs[tok_ours]).sum()) + 1,
        "rank_of_llamacpp_token_in_ours": int((ours > ours[tok_theirs]).sum()) + 1,
        "row_max_abs_diff": float(np.abs(ours - theirs).max()),
    }


def compare_prompt(
    model: Model,
    greedy: Worker,
    forced: Worker,
    prompt: dict[str, Any],
    max_tokens: int,
    eog: list[int],
    tmp: Path,
    exact: bool = False,
) -> dict[str, Any]:
    ids = prompt["ids"]
    g = model.generate(ids, max_tokens=max_tokens, temperature=0.0, mode="standard", return_logits=True)
    ours_tokens = [int(t) for t in g.tokens]
    ours_dec = np.asarray(g.logits, dtype=np.float32)
    req = {"ids": ids, "max_tokens": max_tokens, "eog": eog, "save_logits": str(tmp / "dec.npy")}
    reply = greedy.request({**req, "prefill_one_by_one": exact})
    if "error" in reply:
        raise WorkerError(reply["error"])
    theirs_tokens = [int(t) for t in reply["tokens"]]
    theirs_dec = np.load(tmp / "dec.npy")

    m = first_mismatch(ours_tokens, theirs_tokens)
    common = ours_tokens if m is None else ours_tokens[:m]
    # Rows 0..len(common) were computed from identical contexts on both sides (where both have them).
    n_rows = min(len(common) + 1, len(ours_dec), len(theirs_dec))
    row: dict[str, Any] = {
        "source": prompt["source"],
        "preview": prompt["preview"],
        "n_prompt": len(ids),
        "n_ours": len(ours_tokens),
        "n_llamacpp": len(theirs_tokens),
        "match": m is None,
        "first_mismatch": m,
        "ours_tokens": ours_tokens,
        "llamacpp_tokens": theirs_tokens,
        "decode_prefix": diff_stats(ours_dec[: min(len(common), n_rows)], theirs_dec[: min(len(common), n_rows)]),
    }

    # Teacher-forced: prompt + common prefix in one batch on both sides; rows from the prompt's last one.
    tf_ids = ids + common
    reply = forced.request({"teacher_forced": tf_ids, "from": len(ids) - 1, "save_logits": str(tmp / "tf.npy")})
    if "error" in reply:
        raise WorkerError(reply["error"])
    theirs_tf = np.load(tmp / "tf.npy")
    ours_tf = np.asarray(model.logits(tf_ids)[len(ids) - 1 :], dtype=np.float32)
    row["forced_prefix"] = diff_stats(ours_tf[: len(common)], theirs_tf[: len(common)])
    # Each engine against itself: decode-path rows vs the batched teacher-forced rows of the same positions. Ours
    # is batch invariant (0); llama.cpp's prefill kernels differ from its one-row ones, which measures how far
    # kernel-level rounding alone moves the logits of this model.
    k = min(len(common), len(ours_dec), len(ours_tf))
    row["ours_decode_vs_forced"] = diff_stats(ours_dec[:k], ours_tf[:k])
    k = min(len(common), len(theirs_dec), len(theirs_tf))
    row["llamacpp_decode_vs_forced"] = diff_stats(theirs_dec[:k], theirs_tf[:k])

    if m is not None:
        eos = eog[0] if eog else -1
        tok_ours = ours_tokens[m] if m < len(ours_tokens) else eos  # the shorter side stopped with an end token
        tok_theirs = theirs_tokens[m] if m < len(theirs_tokens) else eos
        if m < len(ours_dec) and m < len(theirs_dec):
            # The end token that stopped a side is the argmax of its row: use it when the side ended at m.
            if m >= len(ours_tokens):
                tok_ours = int(ours_dec[m].argmax())
            if m >= len(theirs_tokens):
                tok_theirs = int(theirs_dec[m].argmax())
            row["at_mismatch_decode"] = at_position(model, ours_dec[m], theirs_dec[m], tok_ours, tok_theirs)
        row["at_mismatch_forced"] = at_position(model, ours_tf[m], theirs_tf[m], tok_ours, tok_theirs)
        row["llamacpp_forced_picks"] = (
            "ours" if int(theirs_tf[m].argmax()) == tok_ours else "its own" if int(theirs_tf[m].argmax()) == tok_theirs
            else "another"
        )  # fmt: skip
        noise = row["decode_prefix"]["max_abs"] or 0.0
        noise = max(noise, row["forced_prefix"]["max_abs"] or 0.0)
        at = row.get("at_mismatch_decode", row["at_mismatch_forced"])
        noise = max(noise, at["row_max_abs_diff"])
        row["noise_max_abs"] = noise
        row["verdict"] = "near-tie" if at["flip"] <= 2 * noise else "unexplained"
        row["context"] = {
            "common_tail": model.detokenize(common[-12:]),
            "ours_next": model.detokenize(ours_tokens[m : m + 8]),
            "llamacpp_next": model.detokenize(theirs_tokens[m : m + 8]),
        }
    else:
        row["verdict"] = "match"
    return row


def ggml_libraries() -> list[str]:
    """The ggml shared libraries this process mapped (which ggml build our extension runs on)."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    libs = {line.split()[-1] for line in maps if "ggml" in line.split()[-1]}
    return sorted(x for x in libs if x.endswith(".so") or ".so." in x)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def values(key: str, sub: str) -> list[float]:
        return [r[key][sub] for r in rows if r[key][sub] is not None]

    dec, forced = values("decode_prefix", "max_abs"), values("forced_prefix", "max_abs")
    self_max = values("llamacpp_decode_vs_forced", "max_abs")

    def mean(key: str) -> float | None:
        pairs = [(r[key]["mean_abs"], r[key]["rows"]) for r in rows if r[key]["rows"]]
        n = sum(w for _, w in pairs)
        return sum(v * w for v, w in pairs) / n if n else None

    return {
        "prompts": len(rows),
        "matched": sum(r["match"] for r in rows),
        "near_ties": sum(r["verdict"] == "near-tie" for r in rows),
        "unexplained": sum(r["verdict"] == "unexplained" for r in rows),
        "decode_max_abs_diff": max(dec, default=None),
        "decode_median_prompt_max_abs_diff": float(np.median(dec)) if dec else None,
        "forced_max_abs_diff": max(forced, default=None),
        "forced_median_prompt_max_abs_diff": float(np.median(forced)) if forced else None,
        "decode_mean_abs_diff": mean("decode_prefix"),
        "forced_mean_abs_diff": mean("forced_prefix"),
        "llamacpp_self_max_abs_diff": max(self_max, default=None),
        "llamacpp_self_mean_abs_diff": mean("llamacpp_decode_vs_forced"),
        "ours_self_max_abs_diff": max(values("ours_decode_vs_forced", "max_abs"), default=None),
        "llamacpp_forced_picks_ours": sum(r.get("llamacpp_forced_picks") == "ours" for r in rows),
        "tokens_compared": sum(r["decode_prefix"]["rows"] for r in rows),
    }


def _fmt(x: float | None, f: str = "{:.3f}") -> str:
    return "–" if x is None else f.format(x)


def _top(t: list[dict[str, Any]]) -> str:
    return ", ".join(f"{json.dumps(e['text'])} {e['logit']:.3f}" for e in t)


def markdown(doc: dict[str, Any]) -> str:
    meta, s = doc["meta"], doc["summary"]
    lines = [
        f"# Greedy parity with llama.cpp: {meta['model_name']}" + (" (exact mode)" if meta.get("exact") else ""),
        "",
        "llama.cpp evaluates the prompt one token at a time and does not repack weights (`--exact`): every row "
        "goes through the one-row kernels our engine uses."
        if meta.get("exact")
        else "llama.cpp as it comes: the prompt in one batch (llamafile tinyBLAS kernels for batches of 2+ rows), "
        "weights repacked where ggml can (CPU_REPACK).",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"{meta['date']}, llama-cpp-python {meta['llama_cpp_version']}, {meta['threads']} thread(s), "
        f"{meta['max_tokens']} tokens max, n_ctx {meta['n_ctx']}, load average {meta['load_average']}; our ggml: "
        f"{', '.join(meta['ggml_libraries']) or 'linked statically'}.",
        "",
        f"**{s['matched']}/{s['prompts']} prompts identical**; mismatches: {s['near_ties']} near-tie(s), "
        f"{s['unexplained']} unexplained. Max |Δlogit| over common prefixes: decode path "
        f"{_fmt(s['decode_max_abs_diff'])} (median per prompt {_fmt(s['decode_median_prompt_max_abs_diff'])}), "
        f"teacher-forced {_fmt(s['forced_max_abs_diff'])} (median {_fmt(s['forced_median_prompt_max_abs_diff'])}), "
        f"over {s['tokens_compared']} positions; mean |Δlogit| {_fmt(s['decode_mean_abs_diff'])} (decode), "
        f"{_fmt(s['forced_mean_abs_diff'])} (teacher-forced).",
        "",
        f"llama.cpp against itself (its one-token decode rows vs its batched teacher-forced rows, same positions): "
        f"max |Δlogit| {_fmt(s['llamacpp_self_max_abs_diff'])}, mean {_fmt(s['llamacpp_self_mean_abs_diff'])}; ours "
        f"against itself: max {_fmt(s['ours_self_max_abs_diff'])} (batch invariant). At "
        f"{s['llamacpp_forced_picks_ours']} of the mismatches llama.cpp's own teacher-forced pass picks our token.",
        "",
        "Near-tie: `flip` (our margin for our token + llama.cpp's margin for its token, i.e. how much the gap between "
        "the two tokens moved from one engine to the other) ≤ 2 × the largest |Δlogit| seen on that prompt.",
        "",
        "| prompt | n_prompt | result | first diff | max \\|Δ\\| decode | max \\|Δ\\| forced | ours top-2 at diff "
        "| llama.cpp top-2 at diff | flip | llama.cpp forced picks |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["prompts"]:
        at = r.get("at_mismatch_decode") or r.get("at_mismatch_forced")
        lines.append(
            "| "
            + " | ".join(
                [
                    r["source"],
                    str(r["n_prompt"]),
                    r["verdict"],
                    "–" if r["first_mismatch"] is None else str(r["first_mismatch"]),
                    _fmt(r["decode_prefix"]["max_abs"]),
                    _fmt(r["forced_prefix"]["max_abs"]),
                    _top(at["ours_top2"]).replace("|", "\\|") if at else "",
                    _top(at["llamacpp_top2"]).replace("|", "\\|") if at else "",
                    _fmt(at["flip"]) if at else "",
                    r.get("llamacpp_forced_picks", ""),
                ]
            )
            + " |"
        )
    lines += ["", "Per mismatch (decode path; teacher-forced in the JSON):", ""]
    for r in doc["prompts"]:
        if r["match"]:
            continue
        at, c = r.get("at_mismatch_decode") or r["at_mismatch_forced"], r["context"]
        lines.append(
            f"- {r['source']} at {r['first_mismatch']}: after {json.dumps(c['common_tail'])} we continue "
            f"{json.dumps(c['ours_next'])}, llama.cpp {json.dumps(c['llamacpp_next'])}; margins "
            f"{at['ours_margin']:.3f} (ours) / {at['llamacpp_margin']:.3f} (llama.cpp), flip {at['flip']:.3f} vs "
            f"noise {r['noise_max_abs']:.3f}; the other engine's token ranks {at['rank_of_llamacpp_token_in_ours']} "
            f"in ours, ours {at['rank_of_our_token_in_llamacpp']} in llama.cpp's."
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True, help="GGUF path or fetch name")
    ap.add_argument("--prompts", type=int, default=20, help="number of prompts (default 20)")
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("-c", "--ctx-size", type=int, default=2048)
    ap.add_argument("--llamacpp-python", default=os.environ.get(LLAMACPP_PYTHON_ENV), help="Python with llama_cpp")
    ap.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--exact",
        action="store_true",
        help="llama.cpp evaluates the prompt one token at a time and does not repack weights, so every row goes "
        "through the one-row kernels our engine uses: the logits should then be identical (MODEL-exact.*)",
    )
    args = ap.parse_args()
    if not args.llamacpp_python:
        ap.error(f"pass --llamacpp-python or set ${LLAMACPP_PYTHON_ENV} to a Python with llama-cpp-python")

    path = str(resolve_model(args.model))
    model = Model(path, n_ctx=args.ctx_size, n_threads=args.threads)
    prompts = pick_prompts(model, args.prompts)
    too_long = [p["source"] for p in prompts if len(p["ids"]) + args.max_tokens > args.ctx_size]
    if too_long:
        raise SystemExit(f"prompts {too_long} plus {args.max_tokens} tokens exceed --ctx-size {args.ctx_size}")
    eog = [i for i in range(model.n_vocab) if model.vocab.is_eog(i)]
    config = {"model": path, "threads": args.threads, "n_ctx": args.ctx_size, "kind": "greedy"}
    if args.exact:
        config["use_extra_bufts"] = False
    greedy = Worker("llamacpp", args.llamacpp_python, WORKER, config)
    forced = Worker("llamacpp-forced", args.llamacpp_python, WORKER, {**config, "logits_all": True})
    cmd = " ".join(shlex.quote(a) for a in ["python3", "bench/llamacpp_greedy_parity.py", *sys.argv[1:]])
    meta = {
        "kind": "adadecode-llamacpp-greedy-parity",
        "command": cmd,
        "model": path,
        "model_name": Path(path).name,
        "exact": args.exact,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "n_ctx": args.ctx_size,
        "llama_cpp_version": greedy.info.get("llama_cpp_version"),
        "ggml_libraries": ggml_libraries(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average": round(os.getloadavg()[0], 2),
    }
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="adadecode-parity-") as tmp:
            for i, p in enumerate(prompts):
                row = compare_prompt(model, greedy, forced, p, args.max_tokens, eog, Path(tmp), args.exact)
                rows.append(row)
                at = row.get("at_mismatch_decode") or row.get("at_mismatch_forced")
                print(
                    f"[{i + 1}/{len(prompts)}] {row['source']}: {row['verdict']}"
                    + (f" at {row['first_mismatch']}, flip {at['flip']:.3f}" if at else "")
                    + f", max |Δ| decode {_fmt(row['decode_prefix']['max_abs'])}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        greedy.close()
        forced.close()
    doc = {"meta": meta, "summary": summarize(rows), "prompts": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = Path(path).name.removesuffix(".gguf") + ("-exact" if args.exact else "")
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(doc))
    s = doc["summary"]
    print(
        f"{stem}: {s['matched']}/{s['prompts']} identical, {s['near_ties']} near-ties, {s['unexplained']} unexplained"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
