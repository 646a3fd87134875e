"""llama.cpp greedy decoding as a worker process for bench/compare.py (runs in a Python that has llama_cpp).

Reads JSON lines {"ids": [...], "max_tokens": N, "eog": [...]} on stdin, answers one JSON line each with the
generated ids, prefill and decode seconds. Decoding is llama.cpp's own greedy loop: eval, argmax sample, eval.
"""

import json
import sys
import time

from llama_cpp import Llama


def main() -> None:
    path, n_threads, n_ctx = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    llm = Llama(path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, n_batch=512, verbose=False)
    print(json.dumps({"ready": True, "system_info": llm.model_params.__class__.__name__}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        eog = set(req.get("eog", []))
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(req["ids"])
        t1 = time.perf_counter()
        out = []
        for _ in range(req["max_tokens"]):
            tok = llm.sample(temp=0.0, top_k=1)
            if tok in eog:
                break
            out.append(int(tok))
            if len(out) == req["max_tokens"] or llm.n_tokens + 1 >= n_ctx:
                break
            llm.eval([tok])
        t2 = time.perf_counter()
        print(json.dumps({"tokens": out, "prefill_seconds": t1 - t0, "decode_seconds": t2 - t1}), flush=True)


if __name__ == "__main__":
    main()
