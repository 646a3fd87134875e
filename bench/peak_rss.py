"""Peak resident memory of one greedy generation: our engine (`adadecode run --json`, and the C++ `adadecode-cli`
when built) against llama.cpp (llama-cpp-python, the `adadecode bench` worker), same GGUF, same n_ctx, same prompt.

Each measurement runs in a fresh process whose peak RSS is read from the kernel when it exits (`os.wait4`,
ru_maxrss), next to what the model should take: the file (mmapped: every weight is read once a pass has run, so all
its pages are resident) plus the f16 KV cache for n_ctx positions (both engines allocate and clear it up front). The
interpreters' own footprint is measured too (a Python that imports only the bindings), so the rest can be read as
engine memory: file + KV + compute buffers.

    nice -n 19 python3 bench/peak_rss.py -m smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b \\
        --llamacpp-python /work/venv-llama/bin/python --cli build/adadecode-cli

writes peak-rss.json and peak-rss.md into bench/results/llamacpp-parity/ (-o to change).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adadecode.bench.runners import LLAMACPP_PYTHON_ENV
from adadecode.fetch import resolve_model

WORKER = Path(__file__).resolve().parent.parent / "python" / "adadecode" / "bench" / "llamacpp_worker.py"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "llamacpp-parity"
PROMPT = (
    "Write a Python function `merge_intervals(intervals)` that merges overlapping closed intervals given as a list "
    "of (start, end) pairs and returns them sorted by start. Explain the algorithm briefly, then give the code and "
    "two test cases."
)
MIB = 2**20


def run_measured(argv: list[str], stdin: str | None = None) -> tuple[str, float]:
    """Run argv to completion; (stdout, its peak RSS in MiB as the kernel accounted it)."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()  # the worker answers the request and exits at the end of its input
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)  # not proc.wait(): wait4 also gives this child's resource usage
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited with {proc.returncode}")
    return out, usage.ru_maxrss / 1024  # KiB on Linux


def kv_mib(path: str, n_ctx: int) -> float:
    """Both engines' K and V caches: f16, n_layer x n_ctx x n_head_kv x head_dim each."""
    import gguf

    fields = gguf.GGUFReader(path).fields

    def get(key: str) -> int:
        f = fields[key]
        return int(f.parts[f.data[0]][0])

    arch = bytes(fields["general.architecture"].parts[fields["general.architecture"].data[0]]).decode()
    n_embd, n_head = get(f"{arch}.embedding_length"), get(f"{arch}.attention.head_count")
    n_head_kv = get(f"{arch}.attention.head_count_kv") if f"{arch}.attention.head_count_kv" in fields else n_head
    head_dim = get(f"{arch}.attention.key_length") if f"{arch}.attention.key_length" in fields else n_embd // n_head
    return 2 * 2 * n_ctx * get(f"{arch}.block_count") * n_head_kv * head_dim / MIB


def measure(path: str, args: argparse.Namespace, prompt_file: Path) -> dict[str, Any]:
    from types import SimpleNamespace

    from adadecode import _core
    from adadecode.chat import render_chat_template

    vocab = _core.Vocab(path)
    # The request in the model's chat template (an instruct model answers it instead of ending at once); both
    # engines get the same text and ids.
    text = render_chat_template(SimpleNamespace(vocab=vocab, path=path), [{"role": "user", "content": PROMPT}])
    prompt_file.write_text(text, encoding="utf-8")
    ids = vocab.tokenize(text, add_special=True, parse_special=True)
    common = ["-n", str(args.max_tokens), "-t", str(args.threads), "-c", str(args.ctx_size)]
    row: dict[str, Any] = {
        "model": Path(path).name,
        "file_mib": os.path.getsize(path) / MIB,
        "kv_mib": kv_mib(path, args.ctx_size),
        "n_prompt": len(ids),
    }
    out, peak = run_measured([sys.executable, "-m", "adadecode", "run", "-m", path, "-f", str(prompt_file), *common,
                              "--json"])  # fmt: skip
    stats = json.loads(out)["stats"]
    row["ours_python"] = {"peak_rss_mib": peak, "reported_peak_rss_mib": stats.get("peak_rss_mib"),
                          "n_generated": stats["n_generated"]}  # fmt: skip
    if args.cli:
        out, peak = run_measured([args.cli, "-m", path, "-f", str(prompt_file), *common, "--json"])
        row["ours_cli"] = {"peak_rss_mib": peak, "n_generated": json.loads(out)["stats"]["n_generated"]}
    if args.llamacpp_python:
        cfg = {"model": path, "threads": args.threads, "n_ctx": args.ctx_size, "kind": "greedy"}
        eog = [i for i in range(vocab.n_tokens) if vocab.is_eog(i)]
        request = json.dumps({"ids": ids, "max_tokens": args.max_tokens, "eog": eog}) + "\n"
        out, peak = run_measured([args.llamacpp_python, str(WORKER), json.dumps(cfg)], stdin=request)
        replies = [json.loads(line) for line in out.splitlines() if line.strip()]
        if "error" in replies[0]:
            raise RuntimeError(replies[0]["error"])
        row["llamacpp"] = {"peak_rss_mib": peak, "n_generated": len(replies[-1]["tokens"])}
    return row


def markdown(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    base = meta["baselines_mib"]
    lines = [
        "# Peak RSS of one greedy generation",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"{meta['date']}; n_ctx {meta['n_ctx']}, prompt of ~{doc['rows'][0]['n_prompt']} tokens, "
        f"{meta['max_tokens']} new tokens, {meta['threads']} thread(s). Peak RSS (ru_maxrss of a fresh process, MiB). "
        f"Interpreter baselines: our Python importing `adadecode.cli` and `adadecode.model` "
        f"{base['ours_python']:.0f} MiB"
        + (f", llama-cpp-python importing `llama_cpp` {base['llamacpp']:.0f} MiB" if "llamacpp" in base else "")
        + "; `engine` = peak − that baseline.",
        "",
        "| model | file | KV (f16) | file + KV | ours `adadecode run` (engine) | ours `adadecode-cli` "
        "| llama.cpp (engine) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        ours = r["ours_python"]["peak_rss_mib"]
        cells = [
            r["model"],
            f"{r['file_mib']:.0f}",
            f"{r['kv_mib']:.0f}",
            f"{r['file_mib'] + r['kv_mib']:.0f}",
            f"{ours:.0f} ({ours - base['ours_python']:.0f})",
            f"{r['ours_cli']['peak_rss_mib']:.0f}" if "ours_cli" in r else "–",
            f"{r['llamacpp']['peak_rss_mib']:.0f} ({r['llamacpp']['peak_rss_mib'] - base['llamacpp']:.0f})"
            if "llamacpp" in r
            else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--models", nargs="+", required=True, help="GGUF paths or fetch names")
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("-c", "--ctx-size", type=int, default=4096, help="n_ctx for both (default 4096, run's default)")
    ap.add_argument("--cli", default=None, help="adadecode-cli binary to measure too")
    ap.add_argument("--llamacpp-python", default=os.environ.get(LLAMACPP_PYTHON_ENV), help="Python with llama_cpp")
    ap.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    base = {"ours_python": run_measured([sys.executable, "-c", "import adadecode.cli, adadecode.model"])[1]}
    if args.llamacpp_python:
        base["llamacpp"] = run_measured([args.llamacpp_python, "-c", "import llama_cpp"])[1]
    rows = []
    prompt_file = args.out / ".peak-rss-prompt.txt"
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for name in args.models:
            rows.append(measure(str(resolve_model(name)), args, prompt_file))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        prompt_file.unlink(missing_ok=True)
    meta = {
        "command": shlex.join(["python3", "bench/peak_rss.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "n_ctx": args.ctx_size,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "baselines_mib": base,
    }
    doc = {"meta": meta, "rows": rows}
    (args.out / "peak-rss.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / "peak-rss.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
