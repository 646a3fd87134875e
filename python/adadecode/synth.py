"""Synthetic GGUF models of real shapes: random but valid weights, the hyper-parameters of a real model.

For measuring what a pass costs at the model sizes layer parallelism is made for (bench/gpu_scale/) where the real
files cannot be carried: the cost of a pass depends on the shapes and the weight types, not on the values. The
hyper-parameters are those of the models' Hugging Face configs; the tensors are those llama.cpp's converter writes
for them (q/k/v biases for Qwen2, rope frequency factors for Llama 3.1's "llama3" rope scaling; an output matrix of
its own even for Qwen2.5-1.5B, whose embeddings are tied, as in the published Q4_K_M files).

Quantised blocks are drawn directly (random quants under fixed scales chosen so that a matrix's values have mean 0
and standard deviation 1/sqrt(columns)) instead of quantising float weights: gguf-py cannot quantise the k-quants
(``gguf.quants.quantize`` has no Q4_K/Q6_K), and drawing bytes is what makes an 8B file quick to write. Tensors are
generated and written in chunks, so memory stays at one chunk whatever the model size.

The tokenizer section is a sentencepiece ("llama") vocabulary of the model's full size: <unk> <s> </s>, the 256
byte tokens, then filler pieces "▁w<i>" (llama.cpp sizes the embedding by the token list, so the list must be full).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

CHUNK_BYTES = 64 << 20  # written per chunk; bounds the memory of a tensor in flight


@dataclass(frozen=True)
class Shape:
    """A model's hyper-parameters (from its Hugging Face config.json)."""

    name: str
    arch: str  # GGUF architecture: llama or qwen2
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    rope_theta: float
    rms_eps: float
    n_ctx_train: int
    qkv_bias: bool = False
    # Llama 3.1's rope_scaling {"rope_type": "llama3"}: factor, low_freq_factor, high_freq_factor, original context
    llama3_rope: tuple[float, float, float, int] | None = None

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


SHAPES: dict[str, Shape] = {
    # Qwen/Qwen2.5-1.5B-Instruct config.json
    "qwen2.5-1.5b": Shape("Qwen2.5-1.5B", "qwen2", 28, 1536, 12, 2, 8960, 151936, 1e6, 1e-6, 32768, qkv_bias=True),
    # Qwen/Qwen2.5-7B-Instruct config.json
    "qwen2.5-7b": Shape("Qwen2.5-7B", "qwen2", 28, 3584, 28, 4, 18944, 152064, 1e6, 1e-6, 32768, qkv_bias=True),
    # meta-llama/Llama-3.1-8B-Instruct config.json
    "llama-3.1-8b": Shape(
        "Llama-3.1-8B", "llama", 32, 4096, 32, 8, 14336, 128256, 500000.0, 1e-5, 131072,
        llama3_rope=(8.0, 1.0, 4.0, 8192),
    ),  # fmt: skip
}

QUANTS = ("q4_k_m", "q8_0", "f16")
_FILE_TYPE = {"q4_k_m": 15, "q8_0": 7, "f16": 1}  # llama.cpp's LLAMA_FTYPE_MOSTLY_*


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as e:  # pragma: no cover - gguf is a dependency of the test and train extras
        raise SystemExit("adadecode synth needs the gguf package: pip install gguf") from e
    return gguf


def _more_bits(il: int, n_layer: int) -> bool:
    """Q4_K_M's rule for attn_v and ffn_down: Q6_K in the first and last eighth of the layers and every third
    layer between them, Q4_K elsewhere."""
    eighth = n_layer // 8
    return il < eighth or il >= 7 * n_layer // 8 or (il - eighth) % 3 == 2


def weight_type(quant: str, name: str, n_layer: int) -> str:
    """The type of matrix `name` (GGUF tensor name) in a file of quantisation mix `quant`."""
    if quant not in QUANTS:
        raise ValueError(f"unknown quantisation {quant!r} (known: {', '.join(QUANTS)})")
    if quant == "q8_0":
        return "Q8_0"
    if quant == "f16":
        return "F16"
    if name == "output.weight":
        return "Q6_K"
    if name.endswith(("attn_v.weight", "ffn_down.weight")) and _more_bits(int(name.split(".")[1]), n_layer):
        return "Q6_K"
    return "Q4_K"


def llama3_rope_factors(shape: Shape) -> np.ndarray:
    """Per rotary frequency, the divisor of Llama 3.1's "llama3" rope scaling (what GGUF stores as rope_freqs):
    1 for short wavelengths, the scale factor for long ones, and a smooth blend between."""
    assert shape.llama3_rope is not None
    factor, low_ff, high_ff, n_orig = shape.llama3_rope
    dim = shape.head_dim
    freqs = 1.0 / (shape.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    wavelen = 2 * math.pi / freqs
    low_wavelen, high_wavelen = n_orig / low_ff, n_orig / high_ff
    smooth = (n_orig / wavelen - low_ff) / (high_ff - low_ff)
    blended = 1.0 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < high_wavelen, 1.0, np.where(wavelen > low_wavelen, factor, blended))
    return out.astype(np.float32)


def tensor_plan(shape: Shape, quant: str) -> list[tuple[str, tuple[int, ...], str]]:
    """(GGUF name, ggml shape (ne0 first), type) of every tensor, in file order."""
    d, v, ff = shape.n_embd, shape.n_vocab, shape.n_ff
    dkv = shape.n_head_kv * shape.head_dim
    plan: list[tuple[str, tuple[int, ...], str]] = [
        ("token_embd.weight", (d, v), weight_type(quant, "token_embd.weight", shape.n_layer)),
        ("output_norm.weight", (d,), "F32"),
        ("output.weight", (d, v), weight_type(quant, "output.weight", shape.n_layer)),
    ]
    if shape.llama3_rope is not None:
        plan.append(("rope_freqs.weight", (shape.head_dim // 2,), "F32"))
    for il in range(shape.n_layer):
        p = f"blk.{il}."
        mats = [("attn_q", d, d), ("attn_k", d, dkv), ("attn_v", d, dkv), ("attn_output", d, d),
                ("ffn_gate", d, ff), ("ffn_up", d, ff), ("ffn_down", ff, d)]  # fmt: skip
        plan.append((p + "attn_norm.weight", (d,), "F32"))
        for stem, ne0, ne1 in mats:
            plan.append((p + stem + ".weight", (ne0, ne1), weight_type(quant, p + stem + ".weight", shape.n_layer)))
            if shape.qkv_bias and stem in ("attn_q", "attn_k", "attn_v"):
                plan.append((p + stem + ".bias", (ne1,), "F32"))
        plan.append((p + "ffn_norm.weight", (d,), "F32"))
    return plan


# Bytes per block and values per block of the types drawn here.
_BLOCKS = {"Q8_0": (34, 32), "Q4_K": (144, 256), "Q6_K": (210, 256), "F16": (2, 1), "F32": (4, 1)}


def _f16_bytes(x: float) -> np.ndarray:
    return np.frombuffer(np.float16(x).tobytes(), dtype=np.uint8)


def _q4_k_scales() -> np.ndarray:
    """The 12 packed scale bytes of a Q4_K block whose 8 sub-blocks all have scale 8 and min 60: values
    d*8*q - dmin*60 for q in 0..15, mean 0 when dmin == d."""
    sc, mn = 8, 60
    out = np.empty(12, dtype=np.uint8)
    out[0:4] = sc | ((sc >> 4) << 6)
    out[4:8] = mn | ((mn >> 4) << 6)
    out[8:12] = (sc & 0xF) | ((mn & 0xF) << 4)
    return out


class _RandomBlocks:
    """A tensor's data drawn block by block; quacks like the numpy array GGUFWriter.write_tensor_data expects
    (nbytes, tofile), but never holds more than one chunk."""

    def __init__(self, rng: np.random.Generator, qtype: str, ne: tuple[int, ...], value: str) -> None:
        self.rng, self.qtype, self.ne, self.value = rng, qtype, ne, value
        block_bytes, block_values = _BLOCKS[qtype]
        n = math.prod(ne)
        if n % block_values:
            raise ValueError(f"{n} values are not a whole number of {qtype} blocks")
        self.n_blocks = n // block_values
        self.nbytes = self.n_blocks * block_bytes
        self.std = 1.0 / math.sqrt(ne[0])  # of a matrix's values: unit-variance outputs for unit-variance inputs
        self.shape = (self.nbytes,)
        self.dtype = np.dtype(np.uint8)

    def byteswap(self, inplace: bool = False) -> _RandomBlocks:  # pragma: no cover - only on big-endian hosts
        raise ValueError("synthetic models are written little-endian only")

    def chunks(self) -> Iterator[np.ndarray]:
        block_bytes, _ = _BLOCKS[self.qtype]
        per_chunk = max(1, CHUNK_BYTES // block_bytes)
        for start in range(0, self.n_blocks, per_chunk):
            yield self._draw(min(per_chunk, self.n_blocks - start))

    def tofile(self, fout: Any) -> None:
        for chunk in self.chunks():
            chunk.tofile(fout)

    def _bytes(self, n: int) -> np.ndarray:
        # The bit generator's raw 64-bit words: several times faster than Generator.bytes.
        words = self.rng.bit_generator.random_raw((n + 7) // 8)
        return words.view(np.uint8)[:n]

    def _draw(self, nb: int) -> np.ndarray:
        q = self.qtype
        if q == "F32":
            if self.value == "ones":  # norm weights
                return np.ones(nb, dtype=np.float32).view(np.uint8)
            if self.value == "rope":
                raise AssertionError("rope factors are written from their array")
            return (self.rng.standard_normal(nb, dtype=np.float32) * np.float32(0.1)).view(np.uint8)  # biases
        if q == "F16":
            # 256 normal quantiles, picked by random bytes: a normal-looking matrix at a byte per value.
            levels = (_normal_quantiles() * self.std).astype(np.float16)
            return levels[self._bytes(nb)].view(np.uint8)
        block_bytes, _ = _BLOCKS[q]
        # Random bytes everywhere, then the few bytes of scales per block overwritten: one pass over the chunk.
        out = self._bytes(nb * block_bytes).reshape(nb, block_bytes)
        if q == "Q8_0":  # d, then 32 int8 quants uniform on -128..127 (standard deviation 73.9)
            out[:, 0:2] = _f16_bytes(self.std / 73.9)
        elif q == "Q4_K":  # d, dmin, 12 scale bytes, 128 bytes of 4-bit quants (value std 8*d*4.61)
            out[:, 0:2] = _f16_bytes(self.std / 36.9)
            out[:, 2:4] = _f16_bytes(self.std / 36.9)
            out[:, 4:16] = _q4_k_scales()
        elif q == "Q6_K":  # 128 bytes low bits, 64 bytes high bits, 16 int8 scales, d (value std 16*d*18.5)
            out[:, 192:208] = 16
            out[:, 208:210] = _f16_bytes(self.std / 295.5)
        else:  # pragma: no cover - _BLOCKS lists what is drawn
            raise AssertionError(q)
        return out.reshape(-1)


_QUANTILES: np.ndarray | None = None


def _normal_quantiles() -> np.ndarray:
    global _QUANTILES
    if _QUANTILES is None:
        nd = NormalDist()
        _QUANTILES = np.array([nd.inv_cdf((i + 0.5) / 256) for i in range(256)], dtype=np.float32)
    return _QUANTILES


def vocab(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """A sentencepiece vocabulary of exactly n_vocab tokens (tokens, scores, types)."""
    n_fill = n_vocab - 3 - 256
    if n_fill < 0:
        raise ValueError(f"n_vocab {n_vocab} is below the 259 tokens a byte-fallback vocabulary needs")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [f"▁w{i}" for i in range(n_fill)]
    scores = [0.0] * 259 + [-float(i) for i in range(n_fill)]
    types = [2, 3, 3] + [6] * 256 + [1] * n_fill  # unknown, control, byte, normal
    return tokens, scores, types


def resolve_shape(model: str, layers: int | None = None) -> Shape:
    if model not in SHAPES:
        raise ValueError(f"unknown model shape {model!r} (known: {', '.join(SHAPES)})")
    shape = SHAPES[model]
    if layers is not None:
        if not 1 <= layers <= 1024:
            raise ValueError(f"--layers must be in 1..1024, got {layers}")
        shape = replace(shape, n_layer=layers)
    return shape


def write_synthetic(
    path: str | Path,
    model: str,
    quant: str,
    *,
    layers: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Write the synthetic model `model` (a key of SHAPES) in quantisation mix `quant` (QUANTS) to `path`, with
    `layers` layers instead of the model's when given. Deterministic for a seed. Written to a temporary name, then
    renamed, so an interrupted run leaves no half-written model."""
    gguf = _gguf()
    shape = resolve_shape(model, layers)
    plan = tensor_plan(shape, quant)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    a = shape.arch
    w = gguf.GGUFWriter(str(tmp), a)
    w.add_name(f"synthetic {shape.name} ({quant}, random weights)")
    w.add_bool("adadecode.synthetic", True)
    w.add_string("adadecode.synthetic.model", model)
    w.add_uint32("general.file_type", _FILE_TYPE[quant])
    w.add_uint32("general.quantization_version", 2)
    w.add_uint32(f"{a}.block_count", shape.n_layer)
    w.add_uint32(f"{a}.context_length", shape.n_ctx_train)
    w.add_uint32(f"{a}.embedding_length", shape.n_embd)
    w.add_uint32(f"{a}.feed_forward_length", shape.n_ff)
    w.add_uint32(f"{a}.attention.head_count", shape.n_head)
    w.add_uint32(f"{a}.attention.head_count_kv", shape.n_head_kv)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", shape.rms_eps)
    w.add_float32(f"{a}.rope.freq_base", shape.rope_theta)
    w.add_uint32(f"{a}.rope.dimension_count", shape.head_dim)
    w.add_uint32(f"{a}.vocab_size", shape.n_vocab)
    tokens, scores, types = vocab(shape.n_vocab)
    w.add_string("tokenizer.ggml.model", "llama")
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_array("tokenizer.ggml.scores", scores)
    w.add_array("tokenizer.ggml.token_type", types)
    w.add_uint32("tokenizer.ggml.unknown_token_id", 0)
    w.add_uint32("tokenizer.ggml.bos_token_id", 1)
    w.add_uint32("tokenizer.ggml.eos_token_id", 2)
    qtypes = gguf.GGMLQuantizationType
    for name, ne, qtype in plan:
        nbytes = math.prod(ne) // _BLOCKS[qtype][1] * _BLOCKS[qtype][0]
        # GGUFWriter takes numpy's shape order (reversed ggml) and the byte count of the data.
        w.add_tensor_info(name, tuple(reversed(ne)), np.dtype(np.float32), nbytes, raw_dtype=qtypes[qtype])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    root = np.random.SeedSequence(seed)
    start = time.monotonic()
    total = sum(math.prod(ne) // _BLOCKS[q][1] * _BLOCKS[q][0] for _, ne, q in plan)
    done, shown = 0, 0.0
    for (name, ne, qtype), child in zip(plan, root.spawn(len(plan)), strict=True):
        rng = np.random.default_rng(child)
        if name == "rope_freqs.weight":
            data: Any = llama3_rope_factors(shape)
        else:
            value = "ones" if name.endswith("norm.weight") else "random"
            data = _RandomBlocks(rng, qtype, ne, value)
        w.write_tensor_data(data)
        done += data.nbytes
        if progress and (time.monotonic() - shown > 0.5 or done == total):
            shown = time.monotonic()
            rate = done / max(time.monotonic() - start, 1e-9) / 1e9
            print(f"\r{done / 1e9:6.2f} / {total / 1e9:.2f} GB  {rate:.2f} GB/s  {name:<28}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    w.close()
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="synth_gguf",
        description="Write a GGUF model of a real model's shape with random but valid weights (for speed tests).",
    )
    p.add_argument("model", choices=sorted(SHAPES), help="whose shape")
    p.add_argument("quant", choices=QUANTS, help="weight types: q4_k_m (Q4_K + Q6_K), q8_0 or f16")
    p.add_argument("-o", "--output", required=True, type=Path, help="GGUF file to write")
    p.add_argument("--layers", type=int, default=None, help="this many layers instead of the model's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    args = p.parse_args(argv)
    try:
        start = time.monotonic()
        out = write_synthetic(args.output, args.model, args.quant, layers=args.layers, seed=args.seed,
                              progress=not args.quiet)  # fmt: skip
    except (ValueError, OSError) as e:
        print(f"synth_gguf: error: {e}", file=sys.stderr)
        return 2
    size = out.stat().st_size
    print(f"{out}  {size / 1e9:.2f} GB in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
