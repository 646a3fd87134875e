"""Cross-check of our tokenizer against llama.cpp's on the corpus (not a pytest module: llama-cpp-python lives in its
own venv). Two steps:

  /work/venv-llama/bin/python tests/tokenizer_llamacpp.py dump ids.json MODEL.gguf [MODEL2.gguf ...]
  python3 tests/tokenizer_llamacpp.py compare ids.json

`dump` writes llama.cpp's ids (Llama(path, vocab_only=True).tokenize(text, add_bos=False, special=...)) for both
parse_special modes; `compare` runs adadecode._core.Vocab on the same strings and sorts the differences into the
known causes (docs/tokenizer.md: NFC, Qwen's `</s>`, user-defined tokens without parse_special).
"""

from __future__ import annotations

import collections
import json
import sys
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import tokenizer_corpus  # noqa: E402


def dump(out: str, paths: list[str]) -> None:
    from llama_cpp import Llama

    corpus = tokenizer_corpus.build_corpus()
    result = {}
    for path in paths:
        try:
            m = Llama(path, vocab_only=True, verbose=False)
        except ValueError as e:  # e.g. a tokenizer.ggml.pre llama.cpp does not know ("gpt2"; its name is "gpt-2")
            print(f"llama.cpp cannot load {path}: {e}")
            continue
        result[path] = {str(ps): [m.tokenize(s.encode(), add_bos=False, special=ps) for s in corpus]
                        for ps in (True, False)}
    Path(out).write_text(json.dumps(result))


def compare(ids_file: str) -> None:
    from adadecode import _core

    corpus = tokenizer_corpus.build_corpus()
    for path, modes in json.loads(Path(ids_file).read_text()).items():
        v = _core.Vocab(path)
        added = [v.token_text(i) for i in range(v.n_tokens) if v.token_type(i) == 4]
        for ps, all_ids in modes.items():
            causes = collections.Counter()
            for s, theirs in zip(corpus, all_ids, strict=True):
                ours = v.tokenize(s, add_special=False, parse_special=ps == "True")
                if ours == theirs:
                    continue
                if "</s>" in s and v.token_id("</s>") >= 0 and v.token_type(v.token_id("</s>")) == 1:
                    causes["</s> (llama.cpp makes it a control token)"] += 1
                elif v.pre_tokenizer == "qwen2" and unicodedata.normalize("NFC", s) != s:
                    causes["NFC (llama.cpp does not normalize)"] += 1
                elif ps == "False" and any(t in s for t in added):
                    causes["user-defined token, parse_special=False"] += 1
                else:
                    causes["unexplained"] += 1
                    print("  unexplained:", repr(s[:80]), ours[:12], theirs[:12])
            print(f"{Path(path).name} parse_special={ps}: {sum(causes.values())} of {len(corpus)} differ",
                  dict(causes))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "dump":
        dump(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 3 and sys.argv[1] == "compare":
        compare(sys.argv[2])
    else:
        sys.exit(__doc__)
