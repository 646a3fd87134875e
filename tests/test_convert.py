"""``adadecode convert`` against references that are not ours: transformers (fp32 logits and greedy tokens of the same
checkpoint), the `gguf` package (reads the file back; its numpy Q8_0 quantizer), Hugging Face `tokenizers`, and the
original SmolLM2 GGUF's tokenizer metadata.

Fast tests build tiny randomly initialised Llama / Qwen2 / Qwen3 checkpoints with transformers (no download) and the
SmolLM2 vocabulary (its real tokenizer.json, rebuilt from the GGUF by tests/tokenizer_ref.py). The SmolLM2 round trip
(export the real GGUF to a Hugging Face checkpoint with transformers, convert it back) takes about a minute and runs
only with ADADECODE_SLOW=1.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tokenizer_corpus
import tokenizer_ref as ref
from prompts import PARITY_PROMPTS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from adadecode.convert import ConvertError, convert  # noqa: E402

# Measured |Δlogit| between the engine on the f32 conversion and transformers fp32, on the tiny models below (logits
# of std ~1.6, max ~9): 0.008-0.033. The engine keeps K/V in f16 as llama.cpp does (relative rounding 2^-11), which is
# what separates it from fp32; 0.1 leaves 3x headroom and is still far below what a wrong weight layout, rope mode
# or missing bias gives (O(1), checked by test_tolerance_catches_layout_errors).
LOGIT_TOL = 0.1

TEXT = (
    "The quick brown fox jumps over the lazy dog. def quicksort(arr):\n    return sorted(arr)  # 12345\n"
    "It was a bright cold day in April, and the clocks were striking thirteen. Winston Smith, his chin nuzzled "
    "into his breast in an effort to escape the vile wind, slipped quickly through the glass doors."
)

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
    "rope_theta": 10000.0,
}
YARN_ROPE = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "rope_theta": 10000.0}
LINEAR_ROPE = {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("Llama", {}),
    "llama-tied": ("Llama", {"tie_word_embeddings": True}),
    "llama-llama3-rope": ("Llama", {"rope_parameters": LLAMA3_ROPE}),
    "llama-linear-rope": ("Llama", {"rope_parameters": LINEAR_ROPE}),
    "qwen2": ("Qwen2", {}),
    "qwen2-yarn": ("Qwen2", {"rope_parameters": YARN_ROPE}),
    "qwen3": ("Qwen3", {"head_dim": 32}),
}


SMALL_VOCAB = 4096


@pytest.fixture(scope="module")
def smol_tokenizer(smollm2_path: Path) -> Any:
    return ref.reference_tokenizer(smollm2_path, "smollm2-135m")


@pytest.fixture(scope="module")
def small_tokenizer(smol_tokenizer: Any) -> Any:
    """SmolLM2's tokenizer cut to its first SMALL_VOCAB tokens (and the merges among them): still a consistent
    byte-level BPE of the smollm family, and it keeps the tiny models' files and GGUF reads small."""
    from tokenizers import Tokenizer

    data = json.loads(smol_tokenizer.to_str())
    vocab = {t: i for t, i in data["model"]["vocab"].items() if i < SMALL_VOCAB}
    data["model"]["vocab"] = vocab
    data["model"]["merges"] = [
        m for m in data["model"]["merges"] if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab
    ]
    return Tokenizer.from_str(json.dumps(data))


def _write_tokenizer(tok: Any, d: Path) -> None:
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<|im_start|>",
                "eos_token": "<|im_end|>",
                "pad_token": "<|im_end|>",
                "unk_token": "<|endoftext|>",
                "add_bos_token": False,
                "chat_template": "{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}",
            }
        )
    )


def _tiny_model(kind: str, extra: dict[str, Any], seed: int = 0) -> Any:
    torch.manual_seed(seed)
    cfg = dict(
        vocab_size=SMALL_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        rms_norm_eps=1e-5,
    )
    cfg.update(extra)
    model = getattr(transformers, f"{kind}ForCausalLM")(getattr(transformers, f"{kind}Config")(**cfg)).eval()
    with torch.no_grad():  # norms and biases start as ones/zeros: randomise them so a dropped one shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.2 * torch.randn_like(p) if "norm" in name else 0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, small_tokenizer: Any) -> dict[str, tuple[Any, Path, Path]]:
    """name -> (transformers model, checkpoint dir, f32 GGUF)."""
    out = {}
    root = tmp_path_factory.mktemp("convert")
    for name, (kind, extra) in CASES.items():
        model = _tiny_model(kind, extra)
        d = root / name
        # one case sharded, to read an index with several safetensors files
        model.save_pretrained(d, max_shard_size="2MB" if name == "llama" else "1GB")
        assert (d / "model.safetensors.index.json").exists() == (name == "llama")
        _write_tokenizer(small_tokenizer, d)
        out[name] = (model, d, convert(d, root / f"{name}.gguf", "f32", progress=False))
    return out


def _hf_logits(model: Any, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_tiny_logits_match_transformers(engine: Any, tiny: dict[str, tuple[Any, Path, Path]], name: str) -> None:
    model, _, path = tiny[name]
    m = engine(path, n_ctx=256, n_threads=1)
    assert m.arch == {"Llama": "llama", "Qwen2": "qwen2", "Qwen3": "qwen3"}[CASES[name][0]]
    ids = m.tokenize(TEXT)
    assert len(ids) > 64  # beyond the scaled models' original context of 32
    ours, want = m.logits(ids), _hf_logits(model, ids)
    assert ours.shape == want.shape
    err = np.abs(ours - want).max()
    assert err < LOGIT_TOL, f"max |Δlogit| {err}"
    gaps = np.diff(np.sort(want, -1)[:, -2:], axis=-1)[:, 0]
    clear = gaps > 2 * LOGIT_TOL
    assert (ours.argmax(-1) == want.argmax(-1))[clear].all()


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3"])
def test_tiny_greedy_matches_transformers(engine: Any, tiny: dict[str, tuple[Any, Path, Path]], name: str) -> None:
    model, _, path = tiny[name]
    m = engine(path, n_ctx=256, n_threads=1)
    prompt = m.tokenize("Once upon a time, in a small village by the mountains,")
    ours = m.generate(prompt, max_tokens=48).tokens
    # Random weights have near-ties, where fp32 against an f16 KV cache is a coin flip, so the check runs along our
    # own path: at every step transformers (teacher-forced on that path) must pick our token, unless its top-2
    # margin is within the tolerance, and then our token must be one of its near-best.
    want = _hf_logits(model, prompt + ours)[len(prompt) - 1 : -1]
    best = want.max(-1)
    chosen = want[np.arange(len(ours)), ours]
    assert (best - chosen <= 2 * LOGIT_TOL).all()
    exact = want.argmax(-1) == np.array(ours)
    gaps = np.diff(np.sort(want, -1)[:, -2:], axis=-1)[:, 0]
    assert exact[gaps > 2 * LOGIT_TOL].all()
    assert exact.mean() >= 0.75
    with torch.no_grad():  # and transformers' own greedy loop agrees up to its first near-tie
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=48,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            eos_token_id=None,
            pad_token_id=0,
        )
    hf = out.sequences[0, len(prompt) :].tolist()
    n = next((i for i, s in enumerate(out.scores) if float(s[0].topk(2).values.diff().abs()) < 2 * LOGIT_TOL), len(hf))
    assert ours[:n] == hf[:n]


def test_tolerance_catches_layout_errors(
    engine: Any, tiny: dict[str, tuple[Any, Path, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checks above would prove nothing if a conversion error stayed within LOGIT_TOL. Two errors it must catch:
    # rope scaling ignored (the scaled checkpoints against their unscaled twins, at these positions) ...
    for name in ("llama-llama3-rope", "llama-linear-rope", "qwen2-yarn"):
        model, _, path = tiny[name]
        cfg = model.config.to_dict()
        cfg.pop("rope_scaling", None)
        cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
        plain = type(model)(type(model.config)(**cfg)).eval()
        plain.load_state_dict(model.state_dict())
        ids = engine(path, n_ctx=256, n_threads=1).tokenize(TEXT)
        assert np.abs(_hf_logits(plain, ids) - _hf_logits(model, ids)).max() > 5 * LOGIT_TOL, name
    # ... and llama's q/k rows left in transformers' order.
    import adadecode.convert as conv

    monkeypatch.setattr(conv, "_interleave_halves", lambda rows, head_dim: rows)
    model, d, _ = tiny["llama"]
    m = engine(conv.convert(d, tmp_path / "unpermuted.gguf", "f32", progress=False), n_ctx=256, n_threads=1)
    ids = m.tokenize(TEXT)
    assert np.abs(m.logits(ids) - _hf_logits(model, ids)).max() > 5 * LOGIT_TOL


def test_gguf_package_reads_the_file(tiny: dict[str, tuple[Any, Path, Path]]) -> None:
    model, _, path = tiny["qwen2"]
    r = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in r.tensors}
    # per layer: 2 norms, 7 matrices, q/k/v biases; plus token_embd, output_norm, output
    assert len(tensors) == 2 * 12 + 3
    sd = model.state_dict()
    for gname, hname in (
        ("blk.1.attn_v.bias", "model.layers.1.self_attn.v_proj.bias"),
        ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
        ("output.weight", "lm_head.weight"),
    ):
        assert tensors[gname].tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(np.asarray(tensors[gname].data), sd[hname].numpy())
    f = r.fields
    assert f["general.architecture"].contents() == "qwen2"
    assert f["qwen2.block_count"].contents() == 2
    assert f["qwen2.embedding_length"].contents() == 64
    assert f["qwen2.attention.head_count"].contents() == 4
    assert f["qwen2.attention.head_count_kv"].contents() == 2
    assert f["qwen2.feed_forward_length"].contents() == 128
    assert f["qwen2.rope.freq_base"].contents() == pytest.approx(model.config.rope_parameters["rope_theta"])
    assert f["tokenizer.ggml.pre"].contents() == "smollm"
    tied = {t.name for t in gguf.GGUFReader(str(tiny["llama-tied"][2])).tensors}
    assert "output.weight" not in tied and "token_embd.weight" in tied
    qwen3 = gguf.GGUFReader(str(tiny["qwen3"][2]))
    assert qwen3.fields["qwen3.attention.key_length"].contents() == 32
    assert {t.name for t in qwen3.tensors} >= {"blk.1.attn_q_norm.weight", "blk.1.attn_k_norm.weight"}
    scaled = {t.name: t for t in gguf.GGUFReader(str(tiny["llama-llama3-rope"][2])).tensors}
    factors = np.asarray(scaled["rope_freqs.weight"].data)
    assert factors.shape == (8,) and factors[0] == 1.0 and factors[-1] == pytest.approx(8.0)
    yarn = gguf.GGUFReader(str(tiny["qwen2-yarn"][2])).fields
    assert yarn["qwen2.rope.scaling.type"].contents() == "yarn"
    assert yarn["qwen2.rope.scaling.factor"].contents() == 4.0
    assert yarn["qwen2.rope.scaling.original_context_length"].contents() == 32


def test_q8_0_matches_gguf_reference_and_generates(
    engine: Any, tiny: dict[str, tuple[Any, Path, Path]], tmp_path: Path
) -> None:
    model, d, f32_path = tiny["qwen3"]
    path = convert(d, tmp_path / "q8.gguf", "q8_0", progress=False)
    tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    assert tensors["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    for name in ("blk.0.attn_norm.weight", "blk.0.attn_q_norm.weight", "output_norm.weight"):
        assert tensors[name].tensor_type == gguf.GGMLQuantizationType.F32
    # ggml's quantizer (through our binding) against the gguf package's own numpy Q8_0: byte for byte
    w = model.state_dict()["model.layers.0.mlp.up_proj.weight"].numpy()
    want = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
    assert np.array_equal(np.asarray(tensors["blk.0.ffn_up.weight"].data).reshape(-1), want.reshape(-1))
    q8, f32 = engine(path, n_ctx=256, n_threads=1), engine(f32_path, n_ctx=256, n_threads=1)
    ids = f32.tokenize(TEXT)
    a, b = q8.logits(ids), f32.logits(ids)
    assert np.abs(a - b).max() < 0.5  # 8-bit weights: measured 0.05-0.1 here
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.9
    gen = q8.generate("Once upon a time", max_tokens=16)
    assert len(gen.tokens) == 16 and gen.text


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q4_0"])
def test_other_outtypes_load(
    engine: Any, tiny: dict[str, tuple[Any, Path, Path]], tmp_path: Path, outtype: str
) -> None:
    model, d, f32_path = tiny["llama"]
    path = convert(d, tmp_path / f"{outtype}.gguf", outtype, progress=False)
    want = {"f16": "F16", "bf16": "BF16", "q4_0": "Q4_0"}[outtype]
    tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    assert tensors["blk.1.attn_k.weight"].tensor_type == gguf.GGMLQuantizationType[want]
    m = engine(path, n_ctx=256, n_threads=1)
    if outtype == "q4_0":  # too coarse for logits of a 64-wide random model to stay close; check the blocks instead
        w = model.state_dict()["model.layers.1.mlp.up_proj.weight"].numpy()
        want_q = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q4_0).reshape(-1)
        assert np.array_equal(np.asarray(tensors["blk.1.ffn_up.weight"].data).reshape(-1), want_q)
        assert len(m.generate("Once upon a time", max_tokens=8).tokens) == 8
        return
    ref_m = engine(f32_path, n_ctx=256, n_threads=1)
    ids = m.tokenize(TEXT)
    a, b = m.logits(ids), ref_m.logits(ids)
    assert np.abs(a - b).max() < (0.1 if outtype == "f16" else 0.5)
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.95


def test_pytorch_bin_checkpoint(
    engine: Any, tiny: dict[str, tuple[Any, Path, Path]], tmp_path: Path, small_tokenizer: Any
) -> None:
    model, d, f32_path = tiny["qwen2"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(d / "config.json", bin_dir)
    _write_tokenizer(small_tokenizer, bin_dir)
    torch.save({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, bin_dir / "pytorch_model.bin")
    path = convert(bin_dir, tmp_path / "bin.gguf", "f32", progress=False)
    m = engine(path, n_ctx=256, n_threads=1)
    w = m.tensor("blk.0.ffn_gate.weight")
    np.testing.assert_array_equal(
        w, model.state_dict()["model.layers.0.mlp.gate_proj.weight"].to(torch.bfloat16).to(torch.float32).numpy()
    )
    st = bin_dir.parent / "st-bf16"
    model.to(torch.bfloat16).save_pretrained(st)
    model.to(torch.float32)
    _write_tokenizer(small_tokenizer, st)
    st_path = convert(st, tmp_path / "st-bf16.gguf", "f32", progress=False)
    np.testing.assert_array_equal(engine(st_path, n_ctx=64, n_threads=1).tensor("blk.0.ffn_gate.weight"), w)


# --------------------------------------------------------------------------------------------------------------------
# tokenizer


def _vocab_dir(tmp: Path, tok: Any, n_vocab: int) -> Path:
    d = tmp / "vocab"
    d.mkdir(exist_ok=True)
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "vocab_size": n_vocab,
    }
    (d / "config.json").write_text(json.dumps(cfg))
    tok.save(str(d / "tokenizer.json"))
    return d


def test_vocab_only_round_trips_smollm2_metadata(smollm2_path: Path, smol_tokenizer: Any, tmp_path: Path) -> None:
    # GGUF -> tokenizer.json (tests/tokenizer_ref.py) + the original special tokens and template -> our converter:
    # every tokenizer key must come back as the original file has it.
    orig = ref.read_vocab_metadata(smollm2_path)
    d = _vocab_dir(tmp_path, smol_tokenizer, len(orig["tokenizer.ggml.tokens"]))
    toks = orig["tokenizer.ggml.tokens"]
    (d / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": toks[orig["tokenizer.ggml.bos_token_id"]],
                "eos_token": toks[orig["tokenizer.ggml.eos_token_id"]],
                "unk_token": toks[orig["tokenizer.ggml.unknown_token_id"]],
                "pad_token": {"content": toks[orig["tokenizer.ggml.padding_token_id"]]},
            }
        )
    )
    (d / "chat_template.jinja").write_text(orig["tokenizer.chat_template"])
    out = convert(d, tmp_path / "vocab.gguf", vocab_only=True, progress=False)
    got = ref.read_vocab_metadata(out)
    with open(out, "rb") as f:
        assert f.read(4) == b"GGUF" and int.from_bytes(f.read(12)[4:], "little") == 0  # version, then 0 tensors
    for key, value in orig.items():
        if key == "tokenizer.ggml.add_space_prefix":  # an SPM key llama.cpp writes for every model; unused for BPE
            continue
        assert got.get(key) == value, key
    assert set(got) - set(orig) == {"tokenizer.ggml.add_eos_token"}


def test_converted_tokenizer_matches_hf(engine: Any, tiny: dict[str, tuple[Any, Path, Path]]) -> None:
    from tokenizers import Tokenizer

    from adadecode import _core

    _, d, path = tiny["llama"]
    hf = Tokenizer.from_file(str(d / "tokenizer.json"))
    vocab = _core.Vocab(str(path))
    corpus = tokenizer_corpus.build_corpus()
    bad = [t for t in corpus if vocab.tokenize(t, False, True) != hf.encode(t, add_special_tokens=False).ids]
    assert not bad, f"{len(bad)} of {len(corpus)} strings differ, e.g. {bad[:3]!r}"


@pytest.mark.parametrize("family", ["qwen2", "llama-bpe", "gpt-2"])
def test_pre_tokenizer_family_is_recognised(small_tokenizer: Any, tmp_path: Path, family: str) -> None:
    # Other families' splitting rules on the SmolLM2 vocabulary: the converter names the family, and the engine then
    # tokenizes the corpus exactly as Hugging Face does with that tokenizer.json.
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers

    from adadecode import _core

    tok = Tokenizer.from_str(small_tokenizer.to_str())
    if family == "gpt-2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        pattern = ref.QWEN2_PATTERN if family == "qwen2" else ref.LLAMA3_PATTERN
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        if family == "qwen2":
            tok.normalizer = normalizers.NFC()
    d = _vocab_dir(tmp_path, tok, tok.get_vocab_size())
    if family == "llama-bpe":
        data = json.loads((d / "tokenizer.json").read_text())
        data["model"]["ignore_merges"] = True
        (d / "tokenizer.json").write_text(json.dumps(data))
        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    out = convert(d, tmp_path / "v.gguf", vocab_only=True, progress=False)
    vocab = _core.Vocab(str(out))
    assert vocab.pre == family
    corpus = tokenizer_corpus.build_corpus()[::4]
    bad = [t for t in corpus if vocab.tokenize(t, False, True) != tok.encode(t, add_special_tokens=False).ids]
    assert not bad, f"{len(bad)} of {len(corpus)} strings differ, e.g. {bad[:3]!r}"


@pytest.mark.slow
def test_qwen_vocab_round_trip(tmp_path: Path) -> None:
    if not os.environ.get("ADADECODE_SLOW"):
        pytest.skip("reading Qwen's 151k-token vocabulary with the gguf package takes ~30 s: set ADADECODE_SLOW=1")
    path = ref.model_path("qwen2.5-coder-0.5b")
    if not path.exists():
        pytest.skip(f"{path} not cached")
    orig = ref.read_vocab_metadata(path)
    tok = ref.reference_tokenizer(path)
    d = _vocab_dir(tmp_path, tok, len(orig["tokenizer.ggml.tokens"]))
    toks = orig["tokenizer.ggml.tokens"]
    (d / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "eos_token": toks[orig["tokenizer.ggml.eos_token_id"]],
                "pad_token": toks[orig["tokenizer.ggml.padding_token_id"]],
                "bos_token": None,
                "add_bos_token": orig.get("tokenizer.ggml.add_bos_token", False),
                "chat_template": orig["tokenizer.chat_template"],
            }
        )
    )
    cfg = json.loads((d / "config.json").read_text())
    cfg["bos_token_id"] = orig["tokenizer.ggml.bos_token_id"]
    (d / "config.json").write_text(json.dumps(cfg))
    got = ref.read_vocab_metadata(convert(d, tmp_path / "qwen-vocab.gguf", vocab_only=True, progress=False))
    for key in (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.chat_template",
        "tokenizer.ggml.model",
    ):
        assert got[key] == orig[key], key


# --------------------------------------------------------------------------------------------------------------------
# errors


def _copy(d: Path, tmp: Path) -> Path:
    dst = tmp / "copy"
    shutil.copytree(d, dst)
    return dst


def _edit_config(d: Path, **changes: Any) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def test_errors_name_the_problem(tiny: dict[str, tuple[Any, Path, Path]], tmp_path: Path) -> None:
    _, d, _ = tiny["qwen2"]
    out = tmp_path / "out.gguf"
    cases = []

    def expect(src: Path, pattern: str, **kw: Any) -> None:
        with pytest.raises(ConvertError, match=pattern):
            convert(src, out, progress=False, **kw)
        assert not out.exists()
        assert [p.name for p in out.parent.iterdir() if p.name.startswith(".out.gguf")] == []
        cases.append(pattern)

    expect(tmp_path / "nowhere", "not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    expect(empty, "no config.json")
    c = _copy(d, tmp_path)
    _edit_config(c, architectures=["GPT2LMHeadModel"])
    expect(c, "unsupported architecture GPT2LMHeadModel")
    _edit_config(c, architectures=["Qwen2ForCausalLM"], intermediate_size=96)
    expect(c, r"tensor 'model.layers.0.mlp.gate_proj.weight' has shape \[128, 64\], expected \[96, 64\]")
    _edit_config(c, intermediate_size=128, num_hidden_layers=3)
    expect(c, "lacks tensor 'model.layers.2.input_layernorm.weight'")
    _edit_config(c, num_hidden_layers=1)
    expect(c, "tensor.s. a plain qwen2 model does not: model.layers.1")
    _edit_config(c, num_hidden_layers=2, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4})
    expect(c, "rope scaling type 'dynamic' is not supported")
    _edit_config(c, rope_parameters={"rope_type": "default", "rope_theta": 1e4})
    expect(c, "unknown output type", outtype="q3_k")
    (c / "tokenizer.json").rename(c / "tok.json")
    expect(c, "no tokenizer.json")
    data = json.loads((c / "tok.json").read_text())
    data["pre_tokenizer"] = {"type": "Whitespace"}
    (c / "tokenizer.json").write_text(json.dumps(data))
    expect(c, "pre-tokenizer .Whitespace.* is not one the engine implements")
    # ... which --tokenizer-pre overrides
    convert(c, out, vocab_only=True, tokenizer_pre="gpt-2", progress=False)
    out.unlink()
    (c / "tok.json").rename(c / "tokenizer.json")
    for f in c.glob("*.safetensors"):
        f.unlink()
    expect(c, "no weights in")
    assert len(cases) == 11


def test_interrupted_convert_leaves_no_file(tiny: dict[str, tuple[Any, Path, Path]], tmp_path: Path) -> None:
    model, d, _ = tiny["llama"]
    c = tmp_path / "nan"
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["model.layers.1.mlp.up_proj.weight"][3, 5] = float("nan")
    model.save_pretrained(c, state_dict=sd)
    shutil.copy(d / "tokenizer.json", c)
    out = tmp_path / "nan.gguf"
    with pytest.raises(ConvertError, match="up_proj.weight' holds NaN"):
        convert(c, out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan"]


def test_cli_convert(
    tiny: dict[str, tuple[Any, Path, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from adadecode.cli import main

    _, d, _ = tiny["qwen3"]
    out = tmp_path / "cli.gguf"
    assert main(["convert", str(d), "-o", str(out), "--outtype", "q8_0", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert gguf.GGUFReader(str(out)).fields["general.file_type"].contents() == 7
    assert main(["convert", str(tmp_path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("adadecode: error: no config.json in") and err.count("\n") == 1


# --------------------------------------------------------------------------------------------------------------------
# Real checkpoints round trip (slow: ADADECODE_SLOW=1)

ROUND_TRIP = {  # model -> (its tokenizer_config.json special tokens, layers)
    "smollm2-135m": ({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}, 30),
    "qwen2.5-coder-0.5b": ({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, 24),
}


@pytest.fixture(scope="module", params=list(ROUND_TRIP))
def real_hf(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any, Path]:
    """A real GGUF exported to a Hugging Face checkpoint: transformers dequantizes it to fp32 (DESIGN.md section 3),
    with the family's real tokenizer.json (transformers' GGUF tokenizer export drops SmolLM2's digit splitting and
    Qwen2's NFC)."""
    name = request.param
    if not os.environ.get("ADADECODE_SLOW"):
        pytest.skip("real-model round trips take minutes: set ADADECODE_SLOW=1")
    pytest.importorskip("accelerate")
    gguf_path = ref.model_path(name)
    if not gguf_path.exists():
        pytest.skip(f"{gguf_path} not cached")
    d = tmp_path_factory.mktemp(f"{name}-hf")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):  # the dequantized weights are plain fp32; save them as such
        del cfg.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    model.load_state_dict(loaded.state_dict())
    del loaded
    model.save_pretrained(d)
    ref.reference_tokenizer(gguf_path).save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps(ROUND_TRIP[name][0]))
    return name, model, d


@pytest.mark.slow
def test_real_model_round_trip(engine: Any, real_hf: tuple[str, Any, Path], tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    name, model, d = real_hf
    path = convert(d, tmp_path / f"{name}-f32.gguf", "f32", progress=False)
    m = engine(path, n_ctx=1024, n_threads=1)
    assert m.n_layer == ROUND_TRIP[name][1]
    same = agree = total = 0
    for prompt in PARITY_PROMPTS[:10]:
        ids = m.tokenize(prompt)
        ours = m.generate(ids, max_tokens=64).tokens
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]), max_new_tokens=64, do_sample=False, eos_token_id=None, pad_token_id=0
            )
        hf = out[0, len(ids) :].tolist()
        # our generate stops at an end-of-generation token; transformers was told to go on
        same += ours == hf or (len(ours) < len(hf) and ours == hf[: len(ours)] and m.vocab.is_eog(hf[len(ours)]))
        seq = ids + hf
        a, b = m.logits(seq), _hf_logits(model, seq)
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += len(seq)
    print(
        f"\n{name} f32 round trip: greedy equal on {same}/10 prompts x 64 tokens, teacher-forced top-1 "
        f"{agree}/{total} = {agree / total:.4f}"
    )
    assert same >= 9
    assert agree / total >= 0.995
    hf_tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    corpus = tokenizer_corpus.build_corpus()
    bad = [t for t in corpus if m.tokenize(t, add_special=False) != hf_tok.encode(t, add_special_tokens=False).ids]
    assert not bad, f"{len(bad)} of {len(corpus)} strings differ, e.g. {bad[:3]!r}"
