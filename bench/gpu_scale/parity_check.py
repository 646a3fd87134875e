#!/usr/bin/env python3
"""Bitwise parity of multi-row passes on a device, on a synthetic model (no real model fits a device call).

Identity exit heads at a quarter of the depth; then per prompt (one of them decoding across position 256, where
a row's attention length grows), standard decoding against adadecode with every exit
check emitting and up to 8 rows per pass, prompt lookup, and both: the tokens and every logit must be equal, bit for
bit. Random weights make the argmax margins small, so a changed bit anywhere in a pass shows. Exits 1 on a mismatch.

    python3 bench/gpu_scale/parity_check.py MODEL.gguf [--device gpu] [--tokens 48] [-o result.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

CASES = {
    "adadecode, every exit emits": {"mode": "adadecode", "gamma": 0.0, "max_pending": 7, "adaptive_exits": False},
    "ngram": {"mode": "ngram"},
    "adadecode+ngram": {"mode": "adadecode+ngram", "gamma": 0.0, "adaptive_exits": False},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--device", default="gpu")
    p.add_argument("--tokens", type=int, default=48)
    p.add_argument("-o", "--output", type=Path, default=None)
    args = p.parse_args(argv)
    from adadecode import Model
    from adadecode.heads_format import write_identity_heads

    heads = write_identity_heads(args.model, args.model.with_suffix(".identity-heads.gguf"))
    model = Model(str(args.model), n_ctx=512, n_threads=2, device=args.device, heads=str(heads))
    rng = np.random.default_rng(0)
    pattern = [int(t) for t in rng.integers(100, model.n_vocab, 12)]
    # "across": decoding crosses position 256, where a row's attention length (a multiple of 256) grows.
    prompts = {"random": [int(t) for t in rng.integers(100, model.n_vocab, 40)], "repeated": pattern * 4,
               "across": [int(t) for t in rng.integers(100, model.n_vocab, 256 - args.tokens // 2)]}  # fmt: skip
    results, ok = {}, True
    for name, ids in prompts.items():
        std = model.generate(ids, max_tokens=args.tokens, mode="standard", return_logits=True)
        for case, kw in CASES.items():
            other = model.generate(ids, max_tokens=args.tokens, return_logits=True, **kw)
            same_tokens = other.tokens == std.tokens
            a, b = std.logits, other.logits
            same_logits = bool(a is not None and b is not None and a.shape == b.shape
                               and np.array_equal(a.view(np.uint32), b.view(np.uint32)))  # fmt: skip
            rows = other.stats["rows_per_pass"]
            results[f"{name} / {case}"] = {"tokens_equal": same_tokens, "logits_bitwise_equal": same_logits,
                                           "rows_per_pass": rows, "rollbacks": other.stats.get("rollbacks"),
                                           "early_exit_fraction": other.stats.get("early_exit_fraction")}  # fmt: skip
            ok &= same_tokens and same_logits
            print(f"{name:8s} {case:28s} tokens {'equal' if same_tokens else 'DIFFER'}, logits "
                  f"{'bitwise equal' if same_logits else 'DIFFER'}, rows per pass {rows}", flush=True)  # fmt: skip
    doc = {"device": model.device, "model": args.model.name, "tokens": args.tokens, "parity": ok, "cases": results}
    if args.output:
        args.output.write_text(json.dumps(doc, indent=1) + "\n")
    print("parity:", "all equal" if ok else "BROKEN")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
