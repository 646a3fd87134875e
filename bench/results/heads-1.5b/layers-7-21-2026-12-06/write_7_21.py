"""The shipped 1.5B heads file of 2026-12-06: layers 7 and 21 of the 2026-12-05 file (7 / 14 / 21), bit for bit.

train-heads fits each exit layer on its own loss (no shared clipping, batches drawn from the seed and step alone),
so the 2026-12-05 command with --write-layers 7,21 writes these same two transforms; this script takes them from the
three-layer file instead of refitting (the 1.1 M-row collection it was fitted on is no longer on this machine).

    python write_7_21.py OLD.heads.gguf NEW.heads.gguf
"""

from __future__ import annotations

import sys

from adadecode.heads_format import read_heads, write_heads

KEEP = (7, 21)


def main(src: str, dst: str) -> None:
    old = read_heads(src)
    if old.layers != [7, 14, 21]:
        raise SystemExit(f"{src}: expected the 7/14/21 file, found layers {old.layers}")
    index = [old.layers.index(layer) for layer in KEEP]
    meta = dict(old.metadata)
    meta["command"] = meta["command"].replace("--write-layers 7,14,21", "--write-layers 7,21")
    for key in ("heldout_kl", "agreement"):
        values = meta[key].split(",")
        meta[key] = ",".join(values[i] for i in index)
    meta["expected_saving"] = (
        "0.2255 on HumanEval (eval-heads --limit 12 --gen-tokens 96) on the decode-fitted curve "
        "bench/results/heads-1.5b/time-accounting-2026-12-06/curve-humaneval.json (7/14/21: 0.2012)"
    )
    write_heads(dst, arch=old.arch, n_layer=old.n_layer, n_embd=old.n_embd, n_vocab=old.n_vocab,
                transforms={layer: old.transforms[layer] for layer in KEEP}, vocab=old.vocab, metadata=meta,
                dtype="f16")  # fmt: skip
    new = read_heads(dst)
    assert new.layers == list(KEEP) and all((new.transforms[k] == old.transforms[k]).all() for k in KEEP)
    assert (new.vocab == old.vocab).all()


if __name__ == "__main__":
    main(*sys.argv[1:3])
