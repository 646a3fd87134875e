"""Prompt processing (prefill) speed: our engine against llama.cpp's llama-bench (pp), same GGUF, same threads.

Each repetition runs, one after the other, our prefill of N prompt tokens (a fresh process: the model loaded, one
short warm-up prompt, then the timed prompt, read from the generation's prefill_seconds) and llama-bench's pp test
for each flash-attention setting (-p N -n 0 -r 1, its own warm-up included), so that all see the same machine load;
the report gives the median tokens per second of each and the ratio ours / llama.cpp (against each -fa setting and
against llama.cpp's faster one).

    python bench/prefill_bench.py -m qwen2.5-coder-0.5b qwen2.5-coder-1.5b -t 2 -p 512 -r 5

writes prefill-<label>.json and .md into bench/results/prefill/ (-o to change; --label names the CPU class).
--family runs our kernel family of that name (ADADECODE_QMATMUL: avx2, avxvnni, avx512, avx512vnni) and
--no-own-attention ggml's attention (ADADECODE_ATTENTION=0), as on a CPU without AVX-512; --llama-bench points at
another build of llama.cpp (e.g. one without AVX-512, to compare like with like).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adadecode.bench.llamacpp_bin import default_bin_dir
from adadecode.bench.machine import cpu_class, cpu_flags, cpu_name, engine_environment
from adadecode.fetch import resolve_model

# One timed prefill in a process of its own: prints the seconds the engine reports for the prompt pass.
_OURS_SCRIPT = """
import sys
from adadecode import Model
path, n_tokens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = Model(path, n_ctx=n_tokens + 64, n_threads=threads)
vocab = model.n_vocab
ids = [100 + (i * 7919) % (vocab - 200) for i in range(n_tokens + 1)]
model.generate(ids[:33], max_tokens=1, mode="standard")  # warm-up: pages in the weights, sizes the buffers
model.reset()
gen = model.generate(ids, max_tokens=1, mode="standard")  # the last id runs as the first decode step, not timed
print(gen.stats["prefill_seconds"])
"""



def run_ours(model: str, n_tokens: int, threads: int, env: dict[str, str]) -> float:
    cmd = [sys.executable, "-c", _OURS_SCRIPT, model, str(n_tokens), str(threads)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"our prefill failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return n_tokens / float(proc.stdout.strip().splitlines()[-1])


def run_llama_bench(exe: Path, model: str, n_tokens: int, threads: int, fa: int) -> float:
    cmd = [str(exe), "-m", model, "-p", str(n_tokens), "-n", "0", "-t", str(threads), "-r", "1", "-fa", str(fa)]
    cmd += ["-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"llama-bench failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    rows = json.loads(proc.stdout)
    if len(rows) != 1 or "avg_ts" not in rows[0]:
        raise SystemExit(f"llama-bench printed an unexpected report: {proc.stdout[:500]}")
    return float(rows[0]["avg_ts"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--models", nargs="+", required=True, help="GGUF paths or known model names")
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens (llama-bench's -p)")
    p.add_argument("-r", "--reps", type=int, default=5, help="repetitions, alternating ours and llama.cpp")
    p.add_argument("--fa", default="0,1", help="llama-bench flash-attention settings to run (comma-separated)")
    p.add_argument("--llama-bench", help="llama-bench executable (default: bench/build_llamacpp.sh's)")
    p.add_argument(
        "--family", choices=["avx2", "avxvnni", "avx512", "avx512vnni"], help="our kernel family (ADADECODE_QMATMUL)"
    )
    p.add_argument("--no-own-attention", action="store_true", help="ggml's attention (ADADECODE_ATTENTION=0)")
    p.add_argument("--label", default="native", help="names the run (CPU class, build) in the file names")
    p.add_argument("-o", "--out", default=str(Path(__file__).parent / "results" / "prefill"))
    args = p.parse_args(argv)
    if args.threads < 1 or args.n_prompt < 1 or args.reps < 1:
        p.error("--threads, --n-prompt and --reps must be at least 1")
    try:
        fa_values = [int(v) for v in args.fa.split(",")]
    except ValueError:
        p.error(f"--fa takes comma-separated 0/1 values, got {args.fa!r}")
    if not fa_values or any(v not in (0, 1) for v in fa_values):
        p.error(f"--fa takes comma-separated 0/1 values, got {args.fa!r}")
    if args.llama_bench:
        exe = Path(args.llama_bench)
    else:
        bin_dir, _ = default_bin_dir()
        exe = bin_dir / "llama-bench"
    if not exe.is_file():
        p.error(f"no llama-bench at {exe}: build it with bench/build_llamacpp.sh or pass --llama-bench")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in sys.path if x)  # the same adadecode as this process
    if args.family:
        env["ADADECODE_QMATMUL"] = args.family
    if args.no_own_attention:
        env["ADADECODE_ATTENTION"] = "0"

    results: list[dict[str, Any]] = []
    for name in args.models:
        path = str(resolve_model(name))
        ours: list[float] = []
        theirs: dict[int, list[float]] = {fa: [] for fa in fa_values}
        for rep in range(args.reps):
            ours.append(run_ours(path, args.n_prompt, args.threads, env))
            for fa in fa_values:
                theirs[fa].append(run_llama_bench(exe, path, args.n_prompt, args.threads, fa))
            line = ", ".join(f"llama.cpp fa={fa} {theirs[fa][-1]:.1f}" for fa in fa_values)
            print(f"{Path(path).name} rep {rep + 1}/{args.reps}: ours {ours[-1]:.1f} t/s, {line}", flush=True)
        ours_median = statistics.median(ours)
        theirs_median = {fa: statistics.median(v) for fa, v in theirs.items()}
        results.append(
            {
                "model": Path(path).name,
                "ours_tps": ours,
                "llamacpp_tps": {str(fa): v for fa, v in theirs.items()},
                "ours_median_tps": ours_median,
                "llamacpp_median_tps": {str(fa): v for fa, v in theirs_median.items()},
                "ratio_vs_fa": {str(fa): ours_median / v for fa, v in theirs_median.items()},
                "ratio_vs_best": ours_median / max(theirs_median.values()),
            }
        )

    flags = cpu_flags()
    doc = {
        "label": args.label,
        "cpu_model": cpu_name(),
        "cpu_class": cpu_class(flags),
        "avx512_vnni": "avx512_vnni" in flags,
        "threads": args.threads,
        "n_prompt": args.n_prompt,
        "reps": args.reps,
        "family": args.family or "default (widest)",
        "own_attention": not args.no_own_attention,
        "llama_bench": str(exe),
        "adadecode_env": engine_environment(env),
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"prefill-{args.label}.json").write_text(json.dumps(doc, indent=1) + "\n")
    fa_cols = " | ".join(f"llama.cpp fa={fa} t/s" for fa in fa_values)
    ratio_cols = " | ".join(f"ours / fa={fa}" for fa in fa_values)
    lines = [
        f"# Prefill pp{args.n_prompt}: ours vs llama-bench ({args.label})",
        "",
        f"CPU: {doc['cpu_model']} ({doc['cpu_class']}{', VNNI' if doc['avx512_vnni'] else ''}); {args.threads} threads;"
        f" our kernel family: {doc['family']}; our attention: {'ours' if doc['own_attention'] else 'ggml'};"
        f" environment: {' '.join(f'{k}={v}' for k, v in doc['adadecode_env'].items()) or 'no ADADECODE_ settings'};"
        f" llama-bench: `{exe}`; {args.reps} repetitions alternating, medians; load average at the end"
        f" {doc['load_average'][0]:.1f} (a shared machine: the ratios, measured side by side, are what to read).",
        "",
        f"    python {doc['command']}",
        "",
        f"| model | ours t/s | {fa_cols} | {ratio_cols} | ours / best |",
        "|---|---:|" + "---:|" * (2 * len(fa_values) + 1),
    ]
    for r in results:
        fa_vals = " | ".join(f"{r['llamacpp_median_tps'][str(fa)]:.1f}" for fa in fa_values)
        ratios = " | ".join(f"{r['ratio_vs_fa'][str(fa)]:.2f}x" for fa in fa_values)
        best = f"{r['ratio_vs_best']:.2f}x"
        lines.append(f"| {r['model']} | {r['ours_median_tps']:.1f} | {fa_vals} | {ratios} | {best} |")
    (out / f"prefill-{args.label}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
