#!/usr/bin/env python3
"""Write a GGUF of a real model's shape with random but valid weights (python/adadecode/synth.py):

    python3 bench/synth_gguf.py llama-3.1-8b q8_0 -o /tmp/llama8b-q8_0.gguf [--layers N] [--seed S]

Models: qwen2.5-1.5b, qwen2.5-7b, llama-3.1-8b; quantisation: q4_k_m (Q4_K + Q6_K), q8_0, f16. Needs numpy and gguf
(gguf-py of the llama.cpp tree works: PYTHONPATH=.../vendor/llama.cpp/gguf-py). Runs from a source checkout
without installing adadecode: the module is loaded from python/adadecode/synth.py by path.
"""

import importlib.util
import sys
from pathlib import Path

_SYNTH = Path(__file__).resolve().parent.parent / "python" / "adadecode" / "synth.py"


def _load():  # type: ignore[no-untyped-def]
    # By path, not `import adadecode`: the package's __init__ needs the compiled engine, this script does not.
    spec = importlib.util.spec_from_file_location("adadecode_synth", _SYNTH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(_load().main())
