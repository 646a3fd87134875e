"""Does llama.cpp load a GGUF made by ``adadecode convert``, and decode it greedily as our engine does?

Converts a Hugging Face directory (or takes GGUF files), then for each file and prompt runs our greedy decoding and
llama.cpp's (bench/llamacpp_worker.py in a Python that has llama-cpp-python) on the same prompt ids, and reports how
many prompts give identical tokens and where the first difference lies. With --hf and both f32 and a quantized
type, it also has llama.cpp's own quantizer (llama_model_quantize) quantize our f32 file and compares every tensor
with our quantized conversion byte for byte.

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


QUANTIZE = """
import sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3])
p.nthread = 1
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))
"""


def compare_with_llama_quantize(f32: Path, ours: Path, outtype: str, llama_python: str) -> str:
    import gguf
    import numpy as np

    theirs = ours.with_name(ours.stem + "-by-llama.cpp.gguf")
    subprocess.run([llama_python, "-c", QUANTIZE, str(f32), str(theirs), outtype.upper()], check=True)
    a = {t.name: t for t in gguf.GGUFReader(str(ours)).tensors}
    b = {t.name: t for t in gguf.GGUFReader(str(theirs)).tensors}
    differ = [
        n
        for n in a
        if n not in b
        or a[n].tensor_type != b[n].tensor_type
        or not np.array_equal(np.asarray(a[n].data), np.asarray(b[n].data))
    ]
    return (
        f"{ours.name}: {len(a) - len(differ)}/{len(a)} tensors byte-identical to llama.cpp's own {outtype} "
        f"quantization of the f32 file" + (f" (differ: {differ[:5]})" if differ else "")
    )


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
    lines = []
    if args.hf and "f32" in args.outtype:
        f32 = next(f for f in files if f.name.endswith("-f32.gguf"))
        for t, f in zip(args.outtype, files[len(args.gguf) :], strict=True):
            if t not in ("f32", "f16", "bf16"):
                lines.append(compare_with_llama_quantize(f32, f, t, args.llama_python))
    report = [check(f, args.llama_python, PARITY_PROMPTS[: args.prompts], args.n, args.threads) for f in files]
    for r in report:
        diffs = [row["first_difference"] for row in r["rows"] if not row["equal"]]
        print(
            f"{r['file']}: llama.cpp loads it; greedy equal on {r['equal']}/{r['prompts']} prompts x {args.n} "
            f"tokens" + (f"; first differences at tokens {diffs}" if diffs else "")
        )
    for line in lines:
        print(line)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
