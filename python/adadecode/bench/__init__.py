"""``adadecode bench``: reproducible speed and parity benchmarks of our decoding modes against llama.cpp and
transformers (see command.py), and a micro-benchmark of the building blocks (micro.py).

Modules: tasks (prompts), runners (our modes and the anchors' worker processes), report (parity, summary, JSON,
Markdown), plots (PNG), command (the subcommand), micro (building blocks), llamacpp_bin (llama.cpp's own programs as
anchors, one process per prompt); llamacpp_worker.py and
transformers_worker.py run in child processes and import nothing from adadecode.
"""
