"""Does the engine's choice of two-row kernel at load (engine.cpp, choose_two_row_kernel) pick the one whose
two-row passes are faster? Loads the 1.5B (which chooses), then times full passes at position 200: one row, and two
rows (two logit rows) with each kernel width, alternating, 8 rounds; prints the choice and the medians relative to
one row. Run it in fresh processes: `for i in $(seq 12); do python validate_choice.py; done`.
"""
from __future__ import annotations

import os
import statistics

from adadecode import Model, _core

model = Model(os.path.expanduser("~/.cache/adadecode/models/qwen2.5-coder-1.5b.gguf"), n_threads=2, n_ctx=512)
engine = model._engine
chosen = _core.two_row_kernel()
seconds: dict[int, list[float]] = {1: [], 2: [], 3: []}
for r in range(8):
    seconds[1].append(engine.time_pass(0, 28, 1, 200, 1, False, 1)[0])
    for width in (2, 3) if r % 2 == 0 else (3, 2):
        _core.set_two_row_kernel(width)
        seconds[width].append(engine.time_pass(0, 28, 2, 200, 2, False, 1)[0])
one = statistics.median(seconds[1])
print(
    f"chosen {chosen} one row {one * 1e3:.1f} ms 2 rows: width2 {statistics.median(seconds[2]) / one:.2f} "
    f"width3 {statistics.median(seconds[3]) / one:.2f}"
)
