"""llama.cpp anchors for ``adadecode bench``, run as a worker process in a Python that has ``llama_cpp``
(llama-cpp-python). It must not import adadecode: that Python usually does not have it.

    PYTHON llamacpp_worker.py '{"model": PATH, "threads": N, "n_ctx": N, "kind": "greedy"|"ngram"|"spec", ...}'

Answers one JSON line {"ready": true, "info": {...}} (or {"error": "..."}) and then, for each request line
{"ids": [...], "max_tokens": N, "eog": [...]}, one line {"tokens": [...], "prefill_seconds": s, "decode_seconds": s,
...}. Kinds:

- greedy: llama.cpp's own loop, eval the prompt, then argmax-sample and eval one token at a time.
- ngram:  ``Llama.generate`` with ``LlamaPromptLookupDecoding`` (prompt lookup: drafts copied from earlier text).
- spec:   ``Llama.generate`` with a draft *model*: llama-cpp-python only ships the prompt-lookup drafter, but its
          ``draft_model`` hook takes any ``LlamaDraftModel``, so ``ModelDraft`` below runs a second ``Llama`` on the
          draft GGUF greedily for ``n_draft`` tokens, reusing its KV cache across calls.

Every reply carries ``peak_rss_mib``, the worker's peak resident memory so far (``ru_maxrss``).

For parity checks (bench/llamacpp_greedy_parity.py) a greedy request may add ``"prefill_one_by_one": true`` (eval
the prompt one token at a time), ``"use_extra_bufts": false`` in the configuration turns weight repacking off, and
``"save_logits": PATH`` in a request asks for the logits
that chose each token (the prompt's last row, then one row per single-token eval; an end token that stopped the
generation included) are saved to PATH as a float32 array [n_rows, n_vocab]. With ``"logits_all": true`` in the
configuration, a request ``{"teacher_forced": [...ids...], "from": k, "save_logits": PATH}`` evaluates the ids in
batches like a prompt and saves the logits of rows k.. (row i predicts token i + 1).

Draft statistics (ngram, spec) are exact: each proposal is stored with its position and, once the output is known,
the tokens accepted are those of its longest prefix that the output repeats (greedy output does not depend on the
drafts, so a proposed token is accepted exactly when it equals the output token at its position).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any


def _accepted(proposals: list[tuple[int, list[int]]], out: list[int]) -> int:
    total = 0
    for pos, draft in proposals:
        for k, tok in enumerate(draft):
            if pos + k >= len(out) or out[pos + k] != tok:
                break
            total += 1
    return total


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS, where this worker is not used).
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    cfg: dict[str, Any] = json.loads(sys.argv[1])
    try:
        import llama_cpp
        import numpy as np
        from llama_cpp import Llama, __version__
        from llama_cpp.llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding
    except ImportError as exc:
        print(json.dumps({"error": f"cannot import llama_cpp in {sys.executable}: {exc}"}), flush=True)
        return

    kind = cfg.get("kind", "greedy")
    n_ctx, threads = int(cfg["n_ctx"]), int(cfg["threads"])
    proposals: list[tuple[int, list[int]]] = []
    state = {"prompt_len": 0}

    if cfg.get("use_extra_bufts") is False:
        # Weights stay in the mmapped file instead of being repacked into the CPU_REPACK buffer (other GEMV/GEMM
        # kernels for Q4_0/Q4_K/IQ4_NL). Llama() has no argument for it: it takes llama.cpp's default model
        # parameters, so hand it defaults with the flag off.
        defaults = llama_cpp.llama_cpp.llama_model_default_params

        def no_repack() -> Any:
            params = defaults()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_cpp.llama_model_default_params = no_repack

    def load(path: str, draft: Any = None) -> Any:
        return Llama(
            path,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=512,
            verbose=False,
            draft_model=draft,
            # With a draft model llama-cpp-python keeps logits for every position but sizes its score buffer from
            # this argument (n_batch rows when False): past position 512 a draft's logits would not fit.
            logits_all=bool(cfg.get("logits_all", False)) or draft is not None,
        )

    class Recorder(LlamaDraftModel):
        """Wraps a drafter and remembers what it proposed at which output position."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __call__(self, input_ids: Any, /, **kwargs: Any) -> Any:
            draft = self.inner(input_ids, **kwargs)
            proposals.append((len(input_ids) - state["prompt_len"], [int(t) for t in draft]))
            return draft

    class ModelDraft(LlamaDraftModel):
        def __init__(self, llm: Any, n_draft: int) -> None:
            self.llm = llm
            self.n_draft = n_draft
            self.eog: set[int] = set()

        def __call__(self, input_ids: Any, /, **kwargs: Any) -> Any:
            out: list[int] = []
            # reset=True keeps the longest common prefix of the draft model's KV cache.
            gen = self.llm.generate([int(t) for t in input_ids], temp=0.0, top_k=1, reset=True)
            for tok in gen:
                if tok in self.eog:
                    break
                out.append(int(tok))
                if len(out) >= self.n_draft or len(input_ids) + len(out) >= n_ctx - 1:
                    break
            gen.close()
            return np.array(out, dtype=np.intc)

    try:
        drafter: Any = None
        model_draft: ModelDraft | None = None
        if kind == "ngram":
            drafter = Recorder(
                LlamaPromptLookupDecoding(
                    max_ngram_size=int(cfg.get("ngram_size", 2)), num_pred_tokens=int(cfg.get("n_draft", 10))
                )
            )
        elif kind == "spec":
            model_draft = ModelDraft(load(cfg["draft_model"]), int(cfg.get("n_draft", 8)))
            drafter = Recorder(model_draft)
        elif kind != "greedy":
            raise ValueError(f"unknown kind {kind!r}")
        llm = load(cfg["model"], drafter)
    except Exception as exc:  # reported to the parent as the reason the anchor is skipped
        print(json.dumps({"error": f"llama_cpp could not load the model: {exc}"}), flush=True)
        return
    print(json.dumps({"ready": True, "info": {"llama_cpp_version": __version__, "kind": kind}}), flush=True)

    def last_logits() -> Any:
        # Without logits_all, llama-cpp-python keeps no scores: read the row of the batch's last token from llama.cpp.
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()

    for line in sys.stdin:
        req = json.loads(line)
        if "teacher_forced" in req:
            if not cfg.get("logits_all"):
                print(json.dumps({"error": "teacher_forced needs logits_all in the configuration"}), flush=True)
                continue
            tf = [int(t) for t in req["teacher_forced"]]
            llm.reset()
            llm.eval(tf)
            rows = np.asarray(llm.scores[int(req.get("from", 0)) : len(tf)], dtype=np.float32)
            np.save(req["save_logits"], rows)
            print(json.dumps({"n_rows": len(rows), "peak_rss_mib": _peak_rss_mib()}), flush=True)
            continue
        save = req.get("save_logits")
        saved: list[Any] = []
        ids, max_tokens, eog = [int(t) for t in req["ids"]], int(req["max_tokens"]), set(req.get("eog", []))
        proposals.clear()
        state["prompt_len"] = len(ids)
        llm.reset()
        out: list[int] = []
        t0 = time.perf_counter()
        if drafter is None:
            if req.get("prefill_one_by_one"):
                # One token per llama_decode: the prompt goes through the one-row kernels, as generated tokens do
                # (batches of 2 or more rows use other kernels: llamafile's tinyBLAS, repacked GEMMs).
                for t in ids:
                    llm.eval([t])
            else:
                llm.eval(ids)
            t1 = time.perf_counter()
            while len(out) < max_tokens:
                if save:
                    saved.append(last_logits())
                tok = int(llm.sample(temp=0.0, top_k=1))
                if tok in eog:
                    break
                out.append(tok)
                if len(out) == max_tokens or llm.n_tokens + 1 >= n_ctx:
                    break
                llm.eval([tok])
        else:
            if model_draft is not None:
                model_draft.eog = eog
                model_draft.llm.reset()
            t1 = t0
            gen = llm.generate(ids, temp=0.0, top_k=1, reset=True)
            for tok in gen:
                if not out:
                    t1 = time.perf_counter()  # the first token comes from the prompt's logits
                if int(tok) in eog:
                    break
                out.append(int(tok))
                if len(out) >= max_tokens or llm.n_tokens + 1 >= n_ctx:
                    break
            gen.close()
        t2 = time.perf_counter()
        reply: dict[str, Any] = {"tokens": out, "prefill_seconds": t1 - t0, "decode_seconds": t2 - t1}
        if save and drafter is None:
            np.save(save, np.stack(saved) if saved else np.zeros((0, llm.n_vocab()), dtype=np.float32))
        reply["peak_rss_mib"] = _peak_rss_mib()
        if drafter is not None:
            reply["n_draft_calls"] = len(proposals)
            reply["n_drafted"] = sum(len(d) for _, d in proposals)
            reply["n_draft_accepted"] = _accepted(proposals, out)
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
