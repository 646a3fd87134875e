"""A synthetic llama with K-quant weights (Q4_K and Q6_K, laid out like a Q4_K_M file, and Q5_0 and Q8_0 where
Qwen2.5-0.5B's Q4_K_M file has them) run through the whole engine.

The real models CI downloads (SmolLM2: Q4_1/Q8_0) hold no K-quants and no Q5_0, so without this file nothing in CI
would run the Q4_K/Q6_K/Q5_0 matmul kernels, or those weights packed by the model loader into 16-row interleaved
layouts on AVX-512 CPUs, end to end. The weights are random but valid blocks written as raw bytes (gguf-py cannot
quantize to K-quants), at shapes that meet the packing rule (rows a multiple of 16, n_in a multiple of 256). Checked:

- layer-parallel decoding (exit heads, γ = 0, n-gram drafts, both) gives standard decoding's tokens and bitwise its
  logits, for several prompts and window sizes;
- a row's logits do not depend on how many rows share its pass;
- the packed layout computes the same model as the file layout (close, not bitwise: another summation order).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiny_gguf import N_VOCAB, tiny_vocab, write_tiny_heads, write_tiny_model

gguf = pytest.importorskip("gguf")

N_LAYER = 4
N_EMBD = 256  # a multiple of 256: every K-quant matrix's n_in is a whole number of 256-value blocks
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = N_EMBD // N_HEAD
N_FF = 512  # ffn_down's n_in, also a multiple of 256
N_CTX = 256
EXITS = (1, 2, 3)
Q4_K = gguf.GGMLQuantizationType.Q4_K
Q6_K = gguf.GGMLQuantizationType.Q6_K
Q5_0 = gguf.GGMLQuantizationType.Q5_0
Q8_0 = gguf.GGMLQuantizationType.Q8_0

# Prompts as token ids: BOS, then words of the tiny vocabulary. (Text would not do: that vocabulary has no pieces
# to merge up to its words, so the tokenizer spells any text in byte-fallback tokens.) The last prompt repeats
# itself so that prompt-lookup drafts have something to copy.
_WORD_IDS = {piece: i for i, piece in enumerate(tiny_vocab()[0])}


def _ids(words: str) -> list[int]:
    return [1] + [_WORD_IDS["▁" + w] for w in words.split()]


PROMPTS = [
    _ids("the cat sat on the mat"),
    _ids("a dog ran to the cat and it sat"),
    _ids("the dog is on the mat and the cat is on the dog and the dog is on the mat and the cat is"),
]

RawTensor = tuple[np.ndarray, Any]


def _f16_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).view(np.uint8).reshape(-1, 2)


def _q4_k(rng: np.random.Generator, rows: int, cols: int, std: float) -> RawTensor:
    """Random Q4_K blocks (f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles): any bytes are
    valid; only d and dmin are set, so that values come out near `std` and centred on zero."""
    n_blocks = rows * cols // 256
    blocks = rng.integers(0, 256, (n_blocks, 144), dtype=np.uint8)
    # value = d·scale·q - dmin·min with scale, min ~ U{0..63} and q ~ U{0..15}: dmin = 7.5·d centres it, and the
    # standard deviation is then about 267·d (measured with gguf-py's dequantize). d varies by block so that a
    # kernel that applied one block's scales to another would show.
    d = std / 267 * rng.uniform(0.5, 1.5, n_blocks)
    blocks[:, 0:2] = _f16_bytes(d)
    blocks[:, 2:4] = _f16_bytes(7.5 * d)
    return blocks.reshape(rows, cols // 256 * 144), Q4_K  # gguf-py reads (rows, bytes per row) as (rows, cols)


def _q6_k(rng: np.random.Generator, rows: int, cols: int, std: float) -> RawTensor:
    """Random Q6_K blocks (128 bytes of low nibbles, 64 of high bits, 16 int8 scales, f16 d)."""
    n_blocks = rows * cols // 256
    blocks = rng.integers(0, 256, (n_blocks, 210), dtype=np.uint8)
    # value = d·scale·(q - 32), q ~ U{0..63}. Scales in [-32, 32) keep d a normal float16 at these magnitudes; the
    # standard deviation is then about 344·d.
    blocks[:, 192:208] = rng.integers(-32, 32, (n_blocks, 16)).astype(np.int8).view(np.uint8)
    blocks[:, 208:210] = _f16_bytes(std / 344 * rng.uniform(0.5, 1.5, n_blocks))
    return blocks.reshape(rows, cols // 256 * 210), Q6_K


def _q5_0(rng: np.random.Generator, rows: int, cols: int, std: float) -> RawTensor:
    """Random Q5_0 blocks (f16 d, 32 fifth bits, 16 bytes of nibbles): value = d·(q - 16) with q ~ U{0..31}, whose
    standard deviation is about 9.2·d."""
    n_blocks = rows * cols // 32
    blocks = rng.integers(0, 256, (n_blocks, 22), dtype=np.uint8)
    blocks[:, 0:2] = _f16_bytes(std / 9.2 * rng.uniform(0.5, 1.5, n_blocks))
    return blocks.reshape(rows, cols // 32 * 22), Q5_0


def _q8_0(rng: np.random.Generator, rows: int, cols: int, std: float) -> RawTensor:
    """Random Q8_0 blocks (f16 d, 32 int8): value = d·q with q ~ U{-128..127}, whose standard deviation is about
    74·d."""
    n_blocks = rows * cols // 32
    blocks = rng.integers(0, 256, (n_blocks, 34), dtype=np.uint8)
    blocks[:, 0:2] = _f16_bytes(std / 74 * rng.uniform(0.5, 1.5, n_blocks))
    return blocks.reshape(rows, cols // 32 * 34), Q8_0


def kquant_tensors(seed: int = 0) -> dict[str, np.ndarray | RawTensor]:
    """Every tensor of the model at the K-quant shapes: attention and FFN weights Q4_K, attn_v and ffn_down Q6_K
    (as llama.cpp's Q4_K_M picks), attn_k and ffn_gate Q5_0 (as in the Q4_K_M file of Qwen2.5-0.5B, whose 896 columns
    are no multiple of 256), attn_output Q8_0 (as that file's output matrix), the output matrix Q6_K (273 rows: not a
    multiple of 16, the unpacked edge)."""
    rng = np.random.default_rng(seed)
    dkv = N_HEAD_KV * HEAD_DIM

    def norm() -> np.ndarray:
        return (1 + 0.1 * rng.standard_normal(N_EMBD)).astype(np.float32)

    # Weight standard deviation 1/sqrt(n_in) keeps activations at unit scale through the layers; the output matrix
    # is 3x larger so that logits spread and greedy choices are not near-ties everywhere.
    t: dict[str, np.ndarray | RawTensor] = {
        "token_embd.weight": rng.standard_normal((N_VOCAB, N_EMBD)).astype(np.float32),
        "output_norm.weight": norm(),
        "output.weight": _q6_k(rng, N_VOCAB, N_EMBD, 3 / np.sqrt(N_EMBD)),
    }
    for il in range(N_LAYER):
        p = f"blk.{il}."
        t[p + "attn_norm.weight"] = norm()
        t[p + "attn_q.weight"] = _q4_k(rng, N_EMBD, N_EMBD, 1 / np.sqrt(N_EMBD))
        t[p + "attn_k.weight"] = _q5_0(rng, dkv, N_EMBD, 1 / np.sqrt(N_EMBD))
        t[p + "attn_v.weight"] = _q6_k(rng, dkv, N_EMBD, 1 / np.sqrt(N_EMBD))
        t[p + "attn_output.weight"] = _q8_0(rng, N_EMBD, N_EMBD, 1 / np.sqrt(N_EMBD))
        t[p + "ffn_norm.weight"] = norm()
        t[p + "ffn_gate.weight"] = _q5_0(rng, N_FF, N_EMBD, 1 / np.sqrt(N_EMBD))
        t[p + "ffn_up.weight"] = _q4_k(rng, N_FF, N_EMBD, 1 / np.sqrt(N_EMBD))
        t[p + "ffn_down.weight"] = _q6_k(rng, N_EMBD, N_FF, 1 / np.sqrt(N_FF))
    return t


def kquant_metadata() -> dict[str, Any]:
    return {
        "llama.block_count": N_LAYER,
        "llama.context_length": N_CTX,
        "llama.embedding_length": N_EMBD,
        "llama.feed_forward_length": N_FF,
        "llama.attention.head_count": N_HEAD,
        "llama.attention.head_count_kv": N_HEAD_KV,
        "llama.rope.dimension_count": HEAD_DIM,
    }


def cpu_packs() -> bool:
    """Whether the engine's packing can be on here: the packed kernels need AVX2, FMA and F16C (or AVX-512)."""
    if os.environ.get("ADADECODE_QMATMUL", "") in ("0", "off"):
        return False  # the kernel off
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # not Linux: cannot tell, so do not claim it
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return {"avx2", "fma", "f16c"} <= flags


# --------------------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def kquant_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(
        tmp_path_factory.mktemp("kquant") / "kquant.gguf", metadata=kquant_metadata(), tensors=kquant_tensors()
    )


@pytest.fixture(scope="module")
def heads_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("kquant-heads")
    rng = np.random.default_rng(7)
    random = rng.normal(0, 1 / np.sqrt(N_EMBD), (N_EMBD, N_EMBD)).astype(np.float32)
    return {
        # Logit lens: sometimes right on a model this shallow, so windows hold accepted and rejected tokens.
        "identity": write_tiny_heads(d / "identity.gguf", layers=EXITS, n_layer=N_LAYER, n_embd=N_EMBD),
        # Almost always wrong: a rollback after nearly every early token.
        "random": write_tiny_heads(d / "random.gguf", layers=EXITS, n_layer=N_LAYER, n_embd=N_EMBD, transform=random),
    }


@pytest.fixture(scope="module")
def model(engine: Any, kquant_path: Path) -> Any:
    return engine(kquant_path, n_ctx=N_CTX, n_threads=2)


# --------------------------------------------------------------------------------------------------------------------
# parity of layer-parallel decoding: on any CPU, packed or not


def _assert_identical(std: Any, other: Any, what: str) -> None:
    assert other.tokens == std.tokens, what
    assert other.text == std.text, what
    assert other.finish_reason == std.finish_reason, what
    assert std.logits is not None and other.logits is not None
    assert other.logits.shape == std.logits.shape, what
    assert np.array_equal(other.logits, std.logits), f"{what}: final-layer logits differ bitwise"


def test_model_loads_with_the_kquant_shapes(model: Any) -> None:
    assert (model.n_layer, model.n_embd, model.n_vocab) == (N_LAYER, N_EMBD, N_VOCAB)
    logits = model.logits(PROMPTS[2])
    assert np.isfinite(logits).all()
    # Not degenerate: logits spread over a few units, and the positions do not all pick one token.
    assert 0.5 < float(logits.std(axis=-1).mean()) < 50
    assert len(set(logits.argmax(-1).tolist())) > 1


@pytest.mark.parametrize("heads", ["identity", "random"])
@pytest.mark.parametrize("max_pending", [1, 3, 4, 6])
def test_adadecode_parity_gamma_zero(model: Any, heads_files: dict[str, Path], heads: str, max_pending: int) -> None:
    model.load_heads(heads_files[heads])
    verified = accepted = rollbacks = 0
    for prompt in PROMPTS:
        std = model.generate(prompt, mode="standard", max_tokens=40, return_logits=True)
        # γ = 0: every exit layer's token is taken; adaptive exits off so adversarial heads keep exiting.
        ada = model.generate(
            prompt, mode="adadecode", max_tokens=40, gamma=0.0, max_pending=max_pending, adaptive_exits=False,
            return_logits=True,
        )  # fmt: skip
        _assert_identical(std, ada, f"{heads} heads, max_pending={max_pending}, prompt {prompt}")
        verified += ada.stats["n_verified"]
        accepted += ada.stats["n_accepted"]
        rollbacks += ada.stats["rollbacks"]
    assert verified > 0, "no early token was ever verified: the test exercised nothing"
    assert rollbacks >= 10, rollbacks
    if heads == "identity":
        assert accepted > 0, "no early token was accepted: windows never mixed kept and rejected rows"


@pytest.mark.parametrize("mode", ["ngram", "adadecode+ngram"])
@pytest.mark.parametrize("max_pending", [2, 5])
def test_ngram_parity(model: Any, heads_files: dict[str, Path], mode: str, max_pending: int) -> None:
    model.load_heads(heads_files["random"])
    drafted = 0
    for prompt in PROMPTS:
        std = model.generate(prompt, mode="standard", max_tokens=48, return_logits=True)
        other = model.generate(
            prompt, mode=mode, max_tokens=48, gamma=0.0, max_pending=max_pending, max_draft=6, adaptive_exits=False,
            return_logits=True,
        )  # fmt: skip
        _assert_identical(std, other, f"{mode}, max_pending={max_pending}, prompt {prompt}")
        drafted += other.stats["ngram_drafted"]
    # Only that drafts were made: how long they are, and so how many are kept, depends on pass times measured
    # during the run (the first draft is always tried).
    assert drafted > 0, "no n-gram draft was ever proposed: the test exercised nothing"


# --------------------------------------------------------------------------------------------------------------------
# batch invariance


def test_logits_are_batch_invariant(model: Any) -> None:
    ids = PROMPTS[2][:24]
    full = model.logits(ids)
    for n in (1, 2, 3, 4, 5, 7, 9, 13, 16, 17):
        assert np.array_equal(model.logits(ids[:n]), full[:n]), f"{n} rows"


# --------------------------------------------------------------------------------------------------------------------
# packed layout against file layout

# ADADECODE_QMATMUL_PACK is read once per process: each layout is computed in a process of its own.
_LOGITS_SCRIPT = """
import sys
import numpy as np
from adadecode import Model
model = Model(sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=1)
np.save(sys.argv[3], model.logits([int(i) for i in sys.argv[4].split(",")]))
"""


def _arrays_from_processes(script: str, args: Callable[[Path], list[str]], runs: dict[Any, dict[str, str]], out: Path,
                          timeout: float) -> tuple[dict[Any, np.ndarray], dict[Any, str]]:
    """`script` run with the arguments `args(npy_path)` once per entry of `runs`, side by side, each in a process of
    its own with that entry's variables added to this environment (kernel choices are made once per process): the
    array each saved to its npy_path, and what each printed."""
    procs = {}
    for key, overrides in runs.items():
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **overrides}  # this adadecode
        argv = [sys.executable, "-c", script, *args(out / f"{key}.npy")]
        procs[key] = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed = {}
    for key, proc in procs.items():
        printed[key], err = proc.communicate(timeout=timeout)
        settings = " ".join(f"{k}={v}" for k, v in runs[key].items())
        assert proc.returncode == 0, f"{settings}: {err}"
    return {key: np.load(out / f"{key}.npy") for key in runs}, printed


@pytest.fixture(scope="module")
def layouts(engine: Any, kquant_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, np.ndarray]:
    """Logits of all the prompts in one sequence (42 positions), with packing on (True) and off (False), from two
    processes run side by side. (`engine` only to skip where the engine is not built.)"""
    ids = ",".join(str(i) for prompt in PROMPTS for i in prompt)
    runs = {pack: {"ADADECODE_QMATMUL_PACK": "1" if pack else "0"} for pack in (True, False)}
    logits, _ = _arrays_from_processes(_LOGITS_SCRIPT, lambda npy: [str(kquant_path), str(N_CTX), str(npy), ids], runs,
                                       tmp_path_factory.mktemp("layouts"), timeout=120)
    return logits


def test_packed_close_to_file_layout(layouts: dict[bool, np.ndarray]) -> None:
    packed, plain = layouts[True], layouts[False]
    assert packed.shape == plain.shape == (sum(map(len, PROMPTS)), N_VOCAB)
    assert np.isfinite(packed).all()
    # Not bitwise equal: another summation order, and once one activation rounds to another 8-bit value the rows
    # drift apart. Measured on these 42 positions (mean |diff| over the logit standard deviation, about 3.2):
    # packed vs file layout 0.8 %; the other correct kernels among themselves (ggml's, ours in AVX2, ours in
    # AVX-512) 0.6 to 1.4 %; each of them, packed included, against a float64 numpy forward pass 1.6 %. A packing
    # bug confined to one matrix (two rows of each 16-row group swapped, one sub-block's minimum lost), applied to
    # that reference, moved it by 7 to 18 %: the bound of 3 % lies between the two.
    rel = float(np.abs(packed - plain).mean()) / float(plain.std())
    assert rel < 0.03, f"mean |packed - file layout| is {rel:.1%} of the logit standard deviation"
    assert (packed.argmax(-1) == plain.argmax(-1)).mean() >= 0.9


_HEAD_SCRIPT = """
import sys
import numpy as np
from adadecode import Model
model = Model(sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=1, heads=sys.argv[3])
np.save(sys.argv[4], model.head_logits(0, np.load(sys.argv[5])))
"""


def test_heads_packed_with_the_model(engine: Any, kquant_path: Path, tmp_path: Path) -> None:
    """Where the model's weights are packed, so are its heads' Q8_0 transform and vocabulary subset of the Q6_K
    output matrix (256 of its 273 rows: a multiple of 16, unlike the whole matrix): the check then runs the packed
    kernels, whose sums differ from the file layout's in order (so the two cannot be bitwise equal) but not in
    accuracy. Head logits on the same states, packing on and off, in a process each."""
    if not cpu_packs():
        pytest.skip("packing needs AVX2, FMA and F16C; this CPU computes from the file layout")
    if os.environ.get("ADADECODE_QMATMUL_PACK", "") in ("0", "off") or os.environ.get("ADADECODE_QMATMUL"):
        pytest.skip("the environment chooses the matmul kernels")
    rng = np.random.default_rng(3)
    transform = (np.eye(N_EMBD) + 0.1 * rng.standard_normal((N_EMBD, N_EMBD))).astype(np.float32)
    heads = write_tiny_heads(
        tmp_path / "subset.gguf",
        layers=(2,),
        n_layer=N_LAYER,
        n_embd=N_EMBD,
        vocab=sorted(rng.permutation(N_VOCAB)[:256].tolist()),
        transform=transform,
    )
    np.save(tmp_path / "hidden.npy", rng.standard_normal((6, N_EMBD)).astype(np.float32))
    runs = {pack: {"ADADECODE_QMATMUL_PACK": "1" if pack else "0"} for pack in (True, False)}
    logits, _ = _arrays_from_processes(
        _HEAD_SCRIPT, lambda npy: [str(kquant_path), str(N_CTX), str(heads), str(npy), str(tmp_path / "hidden.npy")],
        runs, tmp_path, timeout=120)
    packed, plain = logits[True], logits[False]
    assert packed.shape == plain.shape == (6, 256)
    assert not np.array_equal(packed, plain), "the heads computed from the file layout although the model packs"
    rel = float(np.abs(packed - plain).mean()) / float(plain.std())
    assert rel < 0.03, f"mean |packed - file layout| is {rel:.1%} of the head logits' standard deviation"
    assert (packed.argmax(-1) == plain.argmax(-1)).mean() >= 5 / 6


def test_packing_is_used(model: Any, kquant_path: Path) -> None:
    if not cpu_packs():
        pytest.skip("packing needs AVX2, FMA and F16C; this CPU computes from the file layout")
    if os.environ.get("ADADECODE_QMATMUL_PACK", "") in ("0", "off"):
        pytest.skip("ADADECODE_QMATMUL_PACK turns packing off in this environment")
    # Every quantized matmul weight whose row count is a multiple of 16 is packed (all but the 273-row output
    # matrix). Q4_K takes 2368 bytes per 16 rows and block of 256 where the file has 16 x 144; Q6_K, Q5_0 and Q8_0
    # exactly the file's size.
    tensors = gguf.GGUFReader(kquant_path).tensors
    q4_k_bytes = sum(int(t.n_bytes) for t in tensors if t.tensor_type == Q4_K)
    q6_k_bytes = sum(int(t.n_bytes) for t in tensors if t.tensor_type == Q6_K and int(t.shape[1]) % 16 == 0)
    same_size = sum(int(t.n_bytes) for t in tensors if t.tensor_type in (Q5_0, Q8_0))
    assert q6_k_bytes > 0 and any(t.tensor_type == Q6_K and int(t.shape[1]) % 16 for t in tensors)
    assert {Q5_0, Q8_0} <= {t.tensor_type for t in tensors}
    assert model.packed_bytes == q4_k_bytes * 2368 // (16 * 144) + q6_k_bytes + same_size


def test_tied_output_is_packed(engine: Any, smollm2_path: Path) -> None:
    """SmolLM2 multiplies by its token embeddings (Q8_0) for the logits: that matrix is packed too, while the
    embedding lookup keeps the file's layout. Its Q4_1 matrices are packed as well."""
    if not cpu_packs():
        pytest.skip("packing needs AVX2, FMA and F16C; this CPU computes from the file layout")
    if os.environ.get("ADADECODE_QMATMUL_PACK", "") in ("0", "off"):
        pytest.skip("ADADECODE_QMATMUL_PACK turns packing off in this environment")
    tensors = gguf.GGUFReader(smollm2_path).tensors
    names = {t.name for t in tensors}
    assert "output.weight" not in names  # tied
    embd = next(t for t in tensors if t.name == "token_embd.weight")
    assert embd.tensor_type == Q8_0
    q4_1 = sum(int(t.n_bytes) for t in tensors if t.tensor_type == gguf.GGMLQuantizationType.Q4_1)
    model = engine(smollm2_path, n_ctx=64, n_threads=2)
    assert model.packed_bytes == q4_1 + int(embd.n_bytes)
    # The lookup still reads the file layout: a prompt's logits come out as finite, spread values.
    logits = model.logits(model.tokenize("The capital of France is"))
    assert np.isfinite(logits).all() and float(logits.std()) > 1.0


def _cpu_flags() -> set[str]:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


def _families_here() -> list[str]:
    """The kernel families this CPU can run (ADADECODE_QMATMUL's values), narrowest first."""
    flags = _cpu_flags()
    families = []
    if {"avx2", "fma", "f16c"} <= flags:
        families.append("avx2")
        if "avx_vnni" in flags:
            families.append("avxvnni")
        if {"avx512f", "avx512bw", "avx512vl"} <= flags:
            families.append("avx512")
            if "avx512_vnni" in flags:
                families.append("avx512vnni")
    return families


def test_packed_kernels_agree_across_families(engine: Any, smollm2_path: Path, tmp_path: Path) -> None:
    """Every SmolLM2 matmul weight is packed (rows multiples of 16), and the packed kernels of every family do the
    same exact integer sums and the same float operations per output: the logits are bitwise equal whether the AVX2,
    AVX-512 or AVX-512 VNNI kernels compute them. (The family is chosen once per process: one process each.)"""
    if os.environ.get("ADADECODE_QMATMUL_PACK", "") in ("0", "off") or os.environ.get("ADADECODE_QMATMUL"):
        pytest.skip("the environment fixes the kernel family or turns packing off")
    families = _families_here()
    if len(families) < 2:
        pytest.skip(f"this CPU runs only the kernel families {families}: nothing to compare")
    probe = engine(smollm2_path, n_ctx=64, n_threads=1)
    ids = ",".join(str(i) for i in probe.tokenize("def add(a, b):\n    return a + b\n\nprint(add(2, 3))"))
    runs = {family: {"ADADECODE_QMATMUL": family} for family in families}
    logits, _ = _arrays_from_processes(_LOGITS_SCRIPT, lambda npy: [str(smollm2_path), "64", str(npy), ids], runs,
                                       tmp_path, timeout=300)
    for family in families[1:]:
        assert np.array_equal(logits[family], logits[families[0]]), f"{family} differs from {families[0]}"


_PREFIX_LOGITS_SCRIPT = """
import sys
import numpy as np
from adadecode import Model
from adadecode._core import q4_k_high_nibbles, q4_k_scale
model = Model(sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=1)
ids = [int(i) for i in sys.argv[4].split(",")]
print(q4_k_scale(), q4_k_high_nibbles())
np.save(sys.argv[3], np.concatenate([model.logits(ids[:n]) for n in (*range(1, 10), len(ids))]))
"""


SCALES = ("dpwssd", "mulld")


def test_q4_k_scale_choices_agree(engine: Any, kquant_path: Path, tmp_path: Path) -> None:
    """The AVX-512 VNNI Q4_K kernel multiplies its sub-block sums by their scales with vpdpwssd (Intel's default) or
    vpmulld: the integer sums and so the logits are the same bits, for 1-9 rows in a pass and a 42-row prefill."""
    if "avx512vnni" not in _families_here():
        pytest.skip("no AVX-512 VNNI on this CPU: the choice does not arise")
    if os.environ.get("ADADECODE_QMATMUL_PACK", "") in ("0", "off"):
        pytest.skip("packing is off: the packed Q4_K kernel does not run")
    ids = ",".join(str(i) for prompt in PROMPTS for i in prompt)
    runs = {scale: {"ADADECODE_QMATMUL": "avx512vnni", "ADADECODE_QMATMUL_Q4K_SCALE": scale} for scale in SCALES}
    logits, printed = _arrays_from_processes(_PREFIX_LOGITS_SCRIPT, lambda npy: [str(kquant_path), str(N_CTX), str(npy),
                                             ids], runs, tmp_path, timeout=300)
    for scale, out in printed.items():
        assert out.split()[0] == scale, f"asked for {scale}, the kernel used {out.strip()!r}"
    assert np.isfinite(logits["dpwssd"]).all() and np.array_equal(logits["dpwssd"], logits["mulld"])


@pytest.mark.parametrize("family", ["avx512vnni", "avxvnni"])
def test_q4_k_high_nibble_choices_agree(engine: Any, kquant_path: Path, tmp_path: Path, family: str) -> None:
    """The VNNI Q4_K kernels take the weights' high nibbles with GFNI (Intel's default where the CPU has it) or with a
    shift and a mask: the same bytes, so the logits are the same bits, for 1-9 rows in a pass and a 42-row prefill."""
    if family not in _families_here() or "gfni" not in _cpu_flags():
        pytest.skip(f"this CPU lacks the {family} family or GFNI: the choice does not arise")
    if os.environ.get("ADADECODE_QMATMUL_PACK", "") in ("0", "off"):
        pytest.skip("packing is off: the packed Q4_K kernel does not run")
    ids = ",".join(str(i) for prompt in PROMPTS for i in prompt)
    runs = {how: {"ADADECODE_QMATMUL": family, "ADADECODE_QMATMUL_GFNI": "1" if how == "gfni" else "0"}
            for how in ("gfni", "shift")}  # fmt: skip
    logits, printed = _arrays_from_processes(_PREFIX_LOGITS_SCRIPT, lambda npy: [str(kquant_path), str(N_CTX), str(npy),
                                             ids], runs, tmp_path, timeout=300)
    for how, out in printed.items():
        assert out.split()[-1] == how, f"asked for {how}, the kernel used {out.strip()!r}"
    assert np.isfinite(logits["gfni"]).all() and np.array_equal(logits["gfni"], logits["shift"])
