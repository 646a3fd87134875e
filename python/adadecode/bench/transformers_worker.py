"""The Hugging Face transformers anchor for ``adadecode bench``, run as a worker process (so that torch's thread pool
and memory stay out of the process that times our engine).

    PYTHON transformers_worker.py '{"model": PATH, "threads": N}'

Loads the same GGUF with ``gguf_file=...`` (transformers dequantizes it to float32) and answers requests
{"ids": [...], "max_tokens": N, "eog": [...]} with greedy ``generate`` output and timings, as llamacpp_worker.py does.
Prefill time is the time to the first generated token (seen by a streamer); decode time is the rest.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any


def main() -> None:
    cfg: dict[str, Any] = json.loads(sys.argv[1])
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM
        from transformers.generation.streamers import BaseStreamer
    except ImportError as exc:
        print(json.dumps({"error": f"cannot import torch/transformers in {sys.executable}: {exc}"}), flush=True)
        return

    torch.set_num_threads(int(cfg["threads"]))
    path = os.path.abspath(cfg["model"])
    try:
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
        )
        model.eval()
    except Exception as exc:  # reported to the parent as the reason the anchor is skipped
        print(
            json.dumps({"error": f"transformers could not load the GGUF: {' '.join(str(exc).split())[:300]}"}),
            flush=True,
        )
        return

    class FirstToken(BaseStreamer):
        """Notes when the first generated token arrives (put() gets the prompt first, then each new token)."""

        def __init__(self) -> None:
            self.calls = 0
            self.first: float | None = None

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls == 2:
                self.first = time.perf_counter()

        def end(self) -> None:
            pass

    info = {"transformers_version": transformers.__version__, "torch_version": torch.__version__, "dtype": "float32"}
    print(json.dumps({"ready": True, "info": info}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        ids, max_tokens, eog = [int(t) for t in req["ids"]], int(req["max_tokens"]), [int(t) for t in req["eog"]]
        streamer = FirstToken()
        inputs = torch.tensor([ids])
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=max_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=eog or None,
                pad_token_id=eog[0] if eog else 0,
                streamer=streamer,
            )
        t2 = time.perf_counter()
        new = [int(t) for t in out[0, len(ids) :].tolist()]
        for i, tok in enumerate(new):  # generate() keeps the end token (and pads after it); our systems do not
            if tok in eog:
                new = new[:i]
                break
        t1 = streamer.first if streamer.first is not None else t2
        peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
        reply = {"tokens": new, "prefill_seconds": t1 - t0, "decode_seconds": t2 - t1, "peak_rss_mib": peak}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
