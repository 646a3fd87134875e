"""How sure, and how right, is a model's own readout at each layer, on its greedy continuations of a task?

    python bench/logit_lens.py MODEL TASK N GEN_TOKENS LAYERS [--heads FILE] [--json-out FILE]

LAYERS: comma-separated, e.g. 21,24,26,27. For each layer the residual state goes through the model's final norm and
output matrix unchanged (the "logit lens": an exit head whose transform is the identity), over the full vocabulary
and over the vocabulary subset of a heads file (default: the model's shipped heads). Per layer: agreement of the
top token with the final layer's, and at confidence thresholds 0.5 / 0.75 / 0.9 the coverage (share of tokens that
sure) and precision (share of those that agree). A trained head at a layer does at least about as well as the lens
there; the lens says, without training anything, which layers are worth training a head for.

Continuations come from `eval_heads.continuations` (standard decoding), cached where eval-heads keeps them.
Needs torch (the `train` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from adadecode.eval_heads import continuation_cache, continuations, task_prompts
from adadecode.head_math import Readout, output_weights, rms_eps
from adadecode.heads import resolve_heads
from adadecode.heads_format import read_heads
from adadecode.model import Model

GAMMAS = (0.5, 0.75, 0.9)


def summary(conf: np.ndarray, hit: np.ndarray) -> dict[str, float]:
    out = {"agreement": float(hit.mean())}
    for g in GAMMAS:
        sure = conf >= g
        out[f"coverage@{g}"] = float(sure.mean())
        out[f"precision@{g}"] = float(hit[sure].mean()) if sure.any() else 0.0
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("task", help="humaneval, mtbench or a JSONL file of prompt records")
    p.add_argument("n", type=int, help="prompts")
    p.add_argument("gen_tokens", type=int, help="greedy tokens per prompt")
    p.add_argument("layers", help="comma-separated layers, e.g. 21,24,26,27")
    p.add_argument("--heads", default=None, help="heads file whose vocabulary subset to read out over")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    model = Model(args.model, n_ctx=2048, n_threads=args.threads)
    layers = [int(x) for x in args.layers.split(",")]
    if any(not 1 <= layer < model.n_layer for layer in layers):
        p.error(f"layers must lie in 1..{model.n_layer - 1}")
    heads = read_heads(args.heads or resolve_heads(args.model))
    if heads.vocab is None:
        p.error("the heads file has no vocabulary subset")
    records = task_prompts(args.task)[: args.n]
    seqs = continuations(
        model, records, args.gen_tokens, continuation_cache(model.path, args.task, args.gen_tokens), True
    )
    w_out, norm_w = output_weights(model)
    full = Readout(torch.from_numpy(w_out), torch.from_numpy(norm_w), rms_eps(model.path))
    subset = full.with_vocab(heads.vocab)
    found: dict[str, dict[int, tuple[list[np.ndarray], list[np.ndarray]]]] = {
        "full": {layer: ([], []) for layer in layers},
        "subset": {layer: ([], []) for layer in layers},
    }
    with torch.no_grad():
        for seq in seqs:
            hs = model.hidden_states(seq["ids"], [*layers, model.n_layer])
            positions = np.arange(seq["prompt_len"] - 1, len(seq["ids"]))
            h = torch.from_numpy(np.ascontiguousarray(hs[:, positions]))
            target = full.full_logits(h[-1]).argmax(-1)
            for k, layer in enumerate(layers):
                conf, token = torch.softmax(full.full_logits(h[k]), -1).max(-1)
                found["full"][layer][0].append(conf.numpy())
                found["full"][layer][1].append((token == target).numpy())
                conf, index = torch.softmax(subset.head_logits(h[k]), -1).max(-1)
                found["subset"][layer][0].append(conf.numpy())
                found["subset"][layer][1].append((subset.vocab[index] == target).numpy())
    result = {
        "model": Path(model.path).name,
        "task": args.task,
        "prompts": len(seqs),
        "gen_tokens": args.gen_tokens,
        "vocab_subset": len(heads.vocab),
        "layers": layers,
        "readouts": {},
    }
    for readout, per_layer in found.items():
        name = "full vocabulary" if readout == "full" else f"{len(heads.vocab)}-token subset"
        print(f"{name}:")
        result["readouts"][readout] = {}
        for layer, (confs, hits) in per_layer.items():
            s = summary(np.concatenate(confs), np.concatenate(hits))
            result["readouts"][readout][str(layer)] = s
            cells = "  ".join(f"cov@{g} {s[f'coverage@{g}']:.3f} prec {s[f'precision@{g}']:.3f}" for g in GAMMAS)
            print(f"  layer {layer:3d}: agreement {s['agreement']:.3f}  {cells}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
