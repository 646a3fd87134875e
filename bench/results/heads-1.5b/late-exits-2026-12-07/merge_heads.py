"""Experiment only: the shipped heads file plus some layers of another file (the first file's vocabulary subset).

    python merge_heads.py BASE EXTRA OUT [LAYERS]    LAYERS: comma-separated layers of EXTRA (default: all)
"""

import sys

from adadecode.heads_format import read_heads, write_heads

base, extra, out = sys.argv[1:4]
a, b = read_heads(base), read_heads(extra)
assert (a.arch, a.n_layer, a.n_embd, a.n_vocab) == (b.arch, b.n_layer, b.n_embd, b.n_vocab)
wanted = [int(x) for x in sys.argv[4].split(",")] if len(sys.argv) > 4 else sorted(b.transforms)
t = dict(a.transforms)
t.update({layer: b.transforms[layer] for layer in wanted})
meta = dict(a.metadata)
meta["merged"] = f"{base} + layers {wanted} of {extra}"
write_heads(out, arch=a.arch, n_layer=a.n_layer, n_embd=a.n_embd, n_vocab=a.n_vocab, transforms=t, vocab=a.vocab,
            metadata=meta, dtype="f16")
print(out, sorted(t), len(a.vocab) if a.vocab is not None else None)
