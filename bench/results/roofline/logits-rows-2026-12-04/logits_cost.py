"""What k rows of logits cost: passes over the last layer with and without logits (README.md here).

    python logits_cost.py MODEL.gguf REPS
"""

import statistics
import sys

import adadecode

model = adadecode.Model(sys.argv[1], n_ctx=1024, n_threads=2)
engine, n_layer = model._engine, model.n_layer
times: dict[int, list[tuple[float, float]]] = {}
for _ in range(int(sys.argv[2])):
    for k in (1, 2, 3, 4, 8):
        without = engine.time_pass(n_layer - 1, n_layer, k, 300, logit_rows=0, head=False, reps=1)[0]
        with_logits = engine.time_pass(n_layer - 1, n_layer, k, 300, logit_rows=k, head=False, reps=1)[0]
        times.setdefault(k, []).append((without, with_logits))
for k, pairs in times.items():
    a, b = min(x for x, _ in pairs), min(y for _, y in pairs)
    diff = statistics.median(y - x for x, y in pairs)
    print(f"k={k}: last layer {a * 1e3:.3f} ms, with logits {b * 1e3:.3f} ms, "
          f"logits (min diff) {(b - a) * 1e3:.3f} ms, median diff {diff * 1e3:.3f}")
