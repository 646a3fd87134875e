"""Does llama.cpp load a GGUF made by ``adadecode convert``, and decode it greedily as our engine does?

Converts a Hugging Face directory (or takes GGUF files), then for each file and prompt runs our greedy decoding and
llama.cpp's (bench/llamacpp_worker.py in a Python that has llama-cpp-python) on the same prompt ids, and reports how
many prompts give identical tokens and where the first difference lies.

    python3 bench/convert_llamacpp_check.py --hf /tmp/smollm2-hf --outtype f32 q8_0 --workdir /tmp/convert-check \\
        --llama-python /work/venv-llama/bin/python -n 64 -t 2

To make the SmolLM2 Hugging Face directory, see tests/test_convert.py (fixture ``smollm2_hf``) or docs/convert.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from adadecode import Model  # noqa: E402
from adadecode.convert import convert  # noqa: E402
from prompts import PARITY_PROMPTS  # noqa: E402


def check(path: Path, llama_python: str, prompts: list[str], n: int, threads: int) -> dict:
    ours = Model(path, n_ctx=2048, n_threads=threads)
    eog = [i for i in range(ours.n_vocab) if ours.vocab.is_eog(i)]
    worker = Path(__file__).resolve().parent / "llamacpp_worker.py"
    proc = subprocess.Popen(
        [llama_python, str(worker), str(path), str(threads), "2048"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    ready = proc.stdout.readline()
    if not ready:
        raise SystemExit(f"llama.cpp could not load {path}")
    rows = []
    for prompt in prompts:
        ids = ours.tokenize(prompt)
        a = ours.generate(ids, max_tokens=n).tokens
        proc.stdin.write(json.dumps({"ids": ids, "max_tokens": n, "eog": eog}) + "\n")
        proc.stdin.flush()
        b = json.loads(proc.stdout.readline())["tokens"]
        tail = None if len(a) == len(b) else min(len(a), len(b))
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), tail)
        rows.append({"prompt": prompt, "equal": a == b, "first_difference": first, "n_ours": len(a), "n_llama": len(b)})
    proc.stdin.close()
    proc.wait()
    return {"file": str(path), "equal": sum(r["equal"] for r in rows), "prompts": len(rows), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf", help="Hugging Face model directory to convert first")
    ap.add_argument("--outtype", nargs="+", default=["f32", "q8_0"], help="types to convert to (with --hf)")
    ap.add_argument("--gguf", nargs="*", default=[], help="GGUF files to check as they are")
    ap.add_argument("--workdir", default="/tmp/convert-check", help="where converted files go")
    ap.add_argument("--llama-python", default="/work/venv-llama/bin/python")
    ap.add_argument("-n", type=int, default=64, help="tokens per prompt")
    ap.add_argument("--prompts", type=int, default=10, help="how many of tests/prompts.py PARITY_PROMPTS")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-o", "--out", help="write the JSON report here")
    args = ap.parse_args()
    files = [Path(p) for p in args.gguf]
    if args.hf:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
        for t in args.outtype:
            files.append(convert(args.hf, work / f"{Path(args.hf).name}-{t}.gguf", t, progress=False))
    report = [check(f, args.llama_python, PARITY_PROMPTS[: args.prompts], args.n, args.threads) for f in files]
    for r in report:
        diffs = [row["first_difference"] for row in r["rows"] if not row["equal"]]
        print(
            f"{r['file']}: llama.cpp loads it; greedy equal on {r['equal']}/{r['prompts']} prompts x {args.n} "
            f"tokens" + (f"; first differences at tokens {diffs}" if diffs else "")
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
