"""Reference tokenizers for the tokenizer tests: Hugging Face `tokenizers` objects built from a GGUF's metadata with
each model family's *real* tokenizer.json configuration (not the one transformers makes from a GGUF, which for
SmolLM2 drops the digit splitting and for Qwen2 the NFC normalizer). See docs/tokenizer.md.

  family (tokenizer.ggml.pre)  normalizer  pre_tokenizer                                             BPE option
  smollm / starcoder           -           Sequence[Digits(individual_digits=True), ByteLevel(regex)]  -
  qwen2                        NFC         Sequence[Split(QWEN2_PATTERN, isolated), ByteLevel(no regex)] -
  llama-bpe (Llama 3)          -           Sequence[Split(LLAMA3_PATTERN, isolated), ByteLevel(no regex)] ignore_merges
  gpt2 / default               -           ByteLevel(add_prefix_space=False, use_regex=True)          -

Added tokens: CONTROL -> special, USER_DEFINED -> not special; neither normalized. UNUSED ([PAD...]) tokens are not
in the Hugging Face vocabulary at all.

Also: write_vocab_gguf() writes a vocab-only GGUF (used to try other pre-tokenizers on a real vocabulary), and
build_spm_model() trains a small sentencepiece BPE model and converts it to a vocab-only GGUF.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


def cache_dir() -> Path:
    return Path(os.environ.get("ADADECODE_CACHE") or Path.home() / ".cache" / "adadecode")


def model_path(name: str) -> Path:
    return cache_dir() / "models" / f"{name}.gguf"


def read_vocab_metadata(path: str | Path) -> dict:
    """The tokenizer.* metadata of a GGUF as plain Python values."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(path))
    meta = {}
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        t = field.types[0]
        if t == GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == GGUFValueType.STRING:
                meta[key] = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                meta[key] = [field.parts[i].tolist()[0] for i in field.data]
        elif t == GGUFValueType.STRING:
            meta[key] = bytes(field.parts[field.data[0]]).decode("utf-8")
        else:
            meta[key] = field.parts[field.data[0]].tolist()[0]
    return meta


def family_of(meta: dict) -> str:
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre in ("smollm", "starcoder", "refact"):
        return "smollm"
    if pre in ("qwen2", "deepseek-r1-qwen", "megrez"):
        return "qwen2"
    if pre in ("llama-bpe", "llama3", "llama-v3", "smaug-bpe", "dbrx"):
        return "llama3"
    return "gpt2"


def build_bpe_tokenizer(meta: dict):
    """A tokenizers.Tokenizer equal to the family's real tokenizer.json, from GGUF metadata."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type", [TOKEN_NORMAL] * len(tokens))
    family = family_of(meta)
    vocab = {}
    for i, (t, ty) in enumerate(zip(tokens, types, strict=True)):
        # Added tokens are in the model vocabulary too, so that they keep their GGUF ids (SmolLM2's tokenizer.json
        # has them there; for Qwen2 they follow the model vocabulary, which comes to the same ids).
        if ty != TOKEN_UNUSED and t not in vocab:
            vocab[t] = i
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    model = models.BPE(vocab=vocab, merges=merges, ignore_merges=(family == "llama3"), fuse_unk=False,
                       byte_fallback=False)
    tok = Tokenizer(model)
    if family == "qwen2":
        tok.normalizer = normalizers.NFC()
    if family == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    elif family in ("qwen2", "llama3"):
        pattern = QWEN2_PATTERN if family == "qwen2" else LLAMA3_PATTERN
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    added = []
    for i, (t, ty) in enumerate(zip(tokens, types, strict=True)):
        if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN):
            added.append((i, AddedToken(t, special=(ty != TOKEN_USER_DEFINED), normalized=False)))
    # Added tokens get the ids of the GGUF: they follow the model vocabulary in the same order in these families.
    for i, a in sorted(added, key=lambda x: x[0]):
        tok.add_tokens([a]) if not a.special else tok.add_special_tokens([a])
        got = tok.token_to_id(a.content)
        if got != i:
            raise RuntimeError(f"added token {a.content!r} got id {got}, the GGUF says {i}")
    return tok


def build_spm_tokenizer(meta: dict):
    """The tokenizer.json transformers' LlamaConverter makes for a Llama/Mistral sentencepiece model (legacy mode,
    which is what the published Llama 2, Mistral and TinyLlama tokenizer.json files use): a Prepend("▁") + Replace
    normalizer, BPE with merges recovered from the scores, byte fallback, and the Replace/ByteFallback/Fuse/Strip
    decoder."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    tokens = meta["tokenizer.ggml.tokens"]
    scores = meta["tokenizer.ggml.scores"]
    types = meta["tokenizer.ggml.token_type"]
    vocab = {t: i for i, t in enumerate(tokens)}
    # Merges as transformers' SentencePieceExtractor derives them: every split of a piece into two pieces, ordered
    # by the merged piece's score, then by the ids of the parts.
    merges = []
    for piece, i in vocab.items():
        local = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                local.append((left, right, scores[i]))
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2], reverse=True)
    unk = tokens[meta.get("tokenizer.ggml.unknown_token_id", 0)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for a, b, _ in merges], unk_token=unk, fuse_unk=True,
                               byte_fallback=True))
    seq = []
    if meta.get("tokenizer.ggml.add_space_prefix", True):
        seq.append(normalizers.Prepend("▁"))
    seq.append(normalizers.Replace(" ", "▁"))
    tok.normalizer = normalizers.Sequence(seq)
    dec = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if meta.get("tokenizer.ggml.add_space_prefix", True):
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)
    for t, ty in zip(tokens, types, strict=True):
        if ty in (TOKEN_CONTROL, TOKEN_UNKNOWN):
            tok.add_special_tokens([AddedToken(t, special=True, normalized=False)])
        elif ty == TOKEN_USER_DEFINED:
            tok.add_tokens([AddedToken(t, special=False, normalized=False)])
    return tok


def reference_tokenizer(gguf_path: str | Path, name: str | None = None):
    """The reference tokenizer for a GGUF, cached as $ADADECODE_CACHE/ref/<name>.tokenizer.json."""
    from tokenizers import Tokenizer

    name = name or Path(gguf_path).stem
    ref = cache_dir() / "ref" / f"{name}.tokenizer.json"
    src = Path(gguf_path)
    if ref.exists() and ref.stat().st_mtime >= src.stat().st_mtime:
        return Tokenizer.from_file(str(ref))
    tok = build_bpe_tokenizer(read_vocab_metadata(src))
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_suffix(f".tmp{os.getpid()}")
    tok.save(str(tmp))
    os.replace(tmp, ref)
    return tok


def write_vocab_gguf(meta: dict, out: str | Path, **overrides) -> Path:
    """Writes a GGUF holding only tokenizer metadata (meta with `overrides`, e.g. pre='llama-bpe')."""
    import gguf

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(meta)
    for k, v in overrides.items():
        meta["tokenizer.ggml." + k] = v
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    w = gguf.GGUFWriter(str(tmp), arch="llama")
    for key, value in meta.items():
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
            w.add_array(key, value)
        elif key == "tokenizer.ggml.token_type":
            w.add_key_value(key, [int(x) for x in value], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32)
        elif key == "tokenizer.ggml.scores":
            w.add_key_value(key, [float(x) for x in value], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out)
    return out


def build_spm_model(workdir: str | Path, training_text: str, vocab_size: int = 2000):
    """Trains a small Llama-style sentencepiece BPE model (identity normalization, dummy prefix, byte fallback)
    and converts it to a vocab-only GGUF with tokenizer.ggml.model = "llama". Returns (spm_model_path, gguf_path)."""
    import sentencepiece as spm

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model_file = workdir / "spm.model"
    gguf_file = workdir / "spm-vocab.gguf"
    if model_file.exists() and gguf_file.exists():
        return model_file, gguf_file
    text = workdir / "train.txt"
    text.write_text(training_text, encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(workdir / "spm"), vocab_size=vocab_size, model_type="bpe",
        character_coverage=0.9995, byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=True, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, max_sentence_length=1 << 16, num_threads=1, minloglevel=2,
        user_defined_symbols=["<|im_start|>", "<|im_end|>"])
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    user_defined = {"<|im_start|>", "<|im_end|>"}
    types = []
    for i in range(sp.get_piece_size()):
        if sp.is_unknown(i):
            types.append(TOKEN_UNKNOWN)
        elif sp.is_control(i):
            types.append(TOKEN_CONTROL)
        elif sp.is_byte(i):
            types.append(TOKEN_BYTE)
        elif sp.is_unused(i):
            types.append(TOKEN_UNUSED)
        elif sp.id_to_piece(i) in user_defined:
            types.append(TOKEN_USER_DEFINED)
        else:
            types.append(TOKEN_NORMAL)
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(sp.get_piece_size())],
        "tokenizer.ggml.scores": [sp.get_score(i) for i in range(sp.get_piece_size())],
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_space_prefix": True,
    }
    write_vocab_gguf(meta, gguf_file)
    return model_file, gguf_file


if __name__ == "__main__":
    import sys

    tok = reference_tokenizer(sys.argv[1])
    print(json.dumps(json.loads(tok.to_str())["pre_tokenizer"]))
