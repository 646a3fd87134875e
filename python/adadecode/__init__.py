"""adadecode: faster decoding of GGUF models with adaptive layer parallelism (AdaDecode), identical output.

Quick start::

    import adadecode
    m = adadecode.Model("smollm2-135m")               # fetched into ~/.cache/adadecode on first use
    print(m.generate("Write a haiku about the sea.", max_tokens=64).text)

llama-cpp-python style (OpenAI-format dicts; statistics under the key "adadecode")::

    llm = adadecode.Llama(model_path="smollm2-135m", heads="auto")
    llm("The capital of France is", max_tokens=8, temperature=0)["choices"][0]["text"]
    llm.create_chat_completion([{"role": "user", "content": "Hi!"}], stream=True)  # chunk iterator

Command line: ``adadecode run``, ``adadecode chat`` (interactive), ``adadecode serve`` (OpenAI-compatible HTTP
server, needs the ``server`` extra); ``adadecode --help`` lists them all.
"""

from ._version import __version__
from .api import InvalidRequestError, Llama, LlamaTokenizer
from .fetch import fetch, known_models, resolve_model
from .grammar import LlamaGrammar
from .model import Error, Generation, Model, PromptState, list_devices
from .prompt_cache import LlamaDiskCache, LlamaRAMCache

__all__ = [
    "Error",
    "Generation",
    "InvalidRequestError",
    "Llama",
    "LlamaGrammar",
    "LlamaDiskCache",
    "LlamaRAMCache",
    "LlamaTokenizer",
    "Model",
    "PromptState",
    "__version__",
    "fetch",
    "known_models",
    "list_devices",
    "resolve_model",
]
