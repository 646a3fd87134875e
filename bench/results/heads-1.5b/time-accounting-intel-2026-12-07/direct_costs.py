"""What the trace fit cannot separate, timed directly (Engine.time_pass, fastest of ROUNDS rounds, shapes interleaved):
an exit check (the same layers with and without the head) and the logits of k rows (layers 21-28 with and without).

    python direct_costs.py [ROUNDS]      (ADADECODE_QMATMUL / ADADECODE_ATTENTION pick the kernel family)
"""

import sys

import adadecode
from adadecode import _core

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
model = adadecode.Model("qwen2.5-coder-1.5b", n_ctx=512, n_threads=2, heads="auto")
engine = model._engine
checks = [(0, 7), (7, 21), (0, 21)]
ks = [1, 2, 3, 4, 5, 8, 9]
best: dict[tuple, float] = {}


def timed(key: tuple, *args, **kwargs) -> None:
    best[key] = min(best.get(key, 1e9), *engine.time_pass(*args, 200, reps=1, **kwargs))


for _ in range(rounds):
    for a, b in checks:
        for head in (False, True):
            timed(("check", a, b, head), a, b, 1, head=head)
    for k in ks:
        for logits in (0, k):
            timed(("logits", k, logits), 21, 28, k, logit_rows=logits)
    timed(("full",), 0, 28, 1, logit_rows=1)
print(f"kernels: {_core.matmul_family()} / {_core.attention_family()}; exit layers {model.exit_layers}")
full = best[("full",)]
print(f"one-row pass with logits: {1e3 * full:.2f} ms")
for a, b in checks:
    plain, with_head = best[("check", a, b, False)], best[("check", a, b, True)]
    print(
        f"layers {a}-{b}: {1e3 * plain:.2f} ms, with the check {1e3 * with_head:.2f} ms: "
        f"check {1e3 * (with_head - plain):.2f} ms = {(with_head - plain) / full:.3f} of a pass"
    )
one = best[("logits", 1, 1)] - best[("logits", 1, 0)]
for k in ks:
    logits = best[("logits", k, k)] - best[("logits", k, 0)]
    print(
        f"{k} rows: layers 21-28 {1e3 * best[('logits', k, 0)]:.2f} ms, logits {1e3 * logits:.2f} ms "
        f"({logits / one:.2f}x one row's)"
    )
