import sys, statistics
import adadecode
m = adadecode.Model(sys.argv[1], n_ctx=1024, n_threads=2)
e = m._engine; L = m.n_layer
res = {}
for rep in range(int(sys.argv[2])):
    for k in (1, 2, 3, 4, 8):
        a = e.time_pass(L - 1, L, k, 300, logit_rows=0, head=False, reps=1)[0]
        b = e.time_pass(L - 1, L, k, 300, logit_rows=k, head=False, reps=1)[0]
        res.setdefault(k, []).append((a, b))
for k, v in res.items():
    a = min(x for x, _ in v); b = min(y for _, y in v)
    d = sorted(y - x for x, y in v)
    print(f"k={k}: last layer {a*1e3:.3f} ms, with logits {b*1e3:.3f} ms, logits (min diff) {(b-a)*1e3:.3f} ms, median diff {statistics.median(d)*1e3:.3f}")
