"""adadecode with two rows through each kernel width, side by side in one process: 9 HumanEval chat prompts of the
bench, 256 tokens, 2 threads, greedy; per prompt standard, then adadecode with width 2 and width 3 (order alternating
by prompt). Prints the width in use at load (`chose`: with the load-time choice of the first version of this
change, since removed, the faster one over whole two-row passes), the one-row pass time (which kind of process this
is) and the summed decode times; tokens must equal standard decoding's for both widths.

    python bench/results/roofline/two-row-kernel-2026-12-06/e2e_widths.py [MODEL=qwen2.5-coder-1.5b] [LIMIT=9]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from adadecode import Model, _core
from adadecode.bench.tasks import load_prompts
from adadecode.fetch import model_path

name = sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-coder-1.5b"
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 9
model = Model(str(model_path(name)), n_threads=2, n_ctx=2048, heads="auto")
chosen = _core.two_row_kernel()
one_row = statistics.median(model._engine.time_pass(0, model.n_layer, 1, 200, 1, False, 7))
seconds = {"standard": 0.0, "w2": 0.0, "w3": 0.0}
early = {"w2": 0, "w3": 0}
for i, prompt in enumerate(load_prompts(model, "humaneval", Path.home() / ".cache" / "adadecode", limit=limit)):
    text = prompt.ids
    std = model.generate(text, mode="standard", max_tokens=256)
    seconds["standard"] += std.stats["decode_seconds"]
    for width in (2, 3) if i % 2 == 0 else (3, 2):
        _core.set_two_row_kernel(width)
        r = model.generate(text, mode="adadecode", max_tokens=256)
        assert r.tokens == std.tokens, f"prompt {i}: width {width} differs from standard decoding"
        seconds[f"w{width}"] += r.stats["decode_seconds"]
        early[f"w{width}"] += r.stats["n_accepted"]
    _core.set_two_row_kernel(chosen)
print(
    f"{name}: chose {chosen}, one row {one_row * 1e3:.1f} ms; adadecode / standard: width 2 "
    f"{seconds['standard'] / seconds['w2']:.3f}, width 3 {seconds['standard'] / seconds['w3']:.3f}; "
    f"width 3 / width 2 {seconds['w2'] / seconds['w3']:.3f}; accepted early {early['w2']} / {early['w3']}"
)
