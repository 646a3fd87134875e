"""adadecode: faster decoding of GGUF models with adaptive layer parallelism (AdaDecode), identical output.

Quick start::

    import adadecode
    m = adadecode.Model("smollm2-135m")               # fetched into ~/.cache/adadecode on first use
    print(m.generate("Write a haiku about the sea.", max_tokens=64).text)
"""

from ._version import __version__
from .fetch import fetch, known_models, resolve_model
from .model import Error, Generation, Model

__all__ = ["Error", "Generation", "Model", "__version__", "fetch", "known_models", "resolve_model"]
