"""Compatibility entry point: ``PYTHON bench/llamacpp_worker.py MODEL THREADS N_CTX`` starts the llama.cpp greedy
worker of ``adadecode bench`` (python/adadecode/bench/llamacpp_worker.py; same JSON-lines requests and replies).
Scripts under bench/ that cross-check against llama.cpp use it; ``adadecode bench`` itself runs the package worker.
"""

import json
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    model, threads, n_ctx = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    worker = Path(__file__).resolve().parent.parent / "python" / "adadecode" / "bench" / "llamacpp_worker.py"
    config = {"model": model, "threads": threads, "n_ctx": n_ctx, "kind": "greedy"}
    os.execv(sys.executable, [sys.executable, str(worker), json.dumps(config)])
