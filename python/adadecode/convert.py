"""``adadecode convert``: a Hugging Face checkpoint (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM) to a
GGUF file in llama.cpp's naming, loadable by this engine and by llama.cpp (docs/convert.md).

The file is streamed: the header and tensor directory are written first (every tensor's shape and type is known from
the checkpoint's headers), then each tensor is read, converted and written slab by slab, so memory stays at about one
slab whatever the model's size. Quantized types come from ggml's own ``ggml_quantize_chunk`` through ``_core``.
The output is written under a temporary name and renamed at the end: an interrupted run leaves no partial file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _core
from .convert_source import Checkpoint, CheckpointError
from .convert_vocab import KNOWN_PRE, TokenizerError, VocabMetadata, add_vocab_to_writer, read_vocab

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}

# --outtype -> (ggml type name, llama_ftype of general.file_type)
OUTTYPES = {
    "f32": ("F32", 0),
    "f16": ("F16", 1),
    "bf16": ("BF16", 32),
    "q8_0": ("Q8_0", 7),
    "q4_0": ("Q4_0", 2),
    "q4_1": ("Q4_1", 3),
    "q5_0": ("Q5_0", 8),
    "q5_1": ("Q5_1", 9),
}

SLAB_ELEMENTS = 1 << 22  # rows are converted this many values at a time (16 MiB of float32)


class ConvertError(ValueError):
    """The checkpoint cannot be converted; the message names the file, tensor or setting at fault."""


# --------------------------------------------------------------------------------------------------------------------
# configuration


@dataclass
class HParams:
    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx_train: int
    rms_eps: float
    rope_theta: float
    tied: bool | None  # None: config.json does not say; decided by whether the checkpoint has lm_head.weight
    explicit_head_dim: bool
    rope_scaling: dict[str, Any]
    config: dict[str, Any]


def _require(config: dict[str, Any], key: str) -> Any:
    value = config.get(key)
    if value is None:
        raise ConvertError(f"config.json lacks {key!r}")
    return value


def _positive_int(config: dict[str, Any], key: str, value: Any = None) -> int:
    value = _require(config, key) if value is None else value
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConvertError(f"config.json: {key} must be a positive integer, got {value!r}")
    return value


def _rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """transformers 5's ``rope_parameters`` (possibly per attention type) merged with 4.x ``rope_theta`` and
    ``rope_scaling``."""
    params = config.get("rope_parameters") or {}
    if params and all(isinstance(v, dict) for v in params.values()):
        kinds = {json.dumps(v, sort_keys=True) for v in params.values()}
        if len(kinds) > 1:
            raise ConvertError("config.json: per-layer-type rope_parameters that differ are not supported")
        params = next(iter(params.values()))
    merged = dict(config.get("rope_scaling") or {})
    merged.update(params)
    if "rope_theta" not in merged and config.get("rope_theta") is not None:
        merged["rope_theta"] = config["rope_theta"]
    return merged


def read_config(hf_dir: Path) -> HParams:
    path = hf_dir / "config.json"
    if not hf_dir.is_dir():
        raise ConvertError(f"{hf_dir} is not a directory (expected a Hugging Face model directory)")
    if not path.is_file():
        raise ConvertError(f"no config.json in {hf_dir} (expected a Hugging Face model directory)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConvertError(f"{path} is not valid JSON: {exc}") from exc
    archs = config.get("architectures") or []
    arch = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
    if arch is None:
        raise ConvertError(
            f"unsupported architecture {', '.join(archs) or config.get('model_type') or '(none given)'} "
            f"(supported: {', '.join(ARCHITECTURES)})"
        )
    n_embd = _positive_int(config, "hidden_size")
    n_head = _positive_int(config, "num_attention_heads")
    n_head_kv = _positive_int(config, "num_key_value_heads", config.get("num_key_value_heads") or n_head)
    if n_head % n_head_kv:
        raise ConvertError(
            f"config.json: num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_head_kv}"
        )
    explicit_head_dim = config.get("head_dim") is not None
    if explicit_head_dim:
        head_dim = _positive_int(config, "head_dim")
    elif n_embd % n_head:
        raise ConvertError(f"config.json: hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}")
    else:
        head_dim = n_embd // n_head
    if head_dim % 2:
        raise ConvertError(f"config.json: the head dimension {head_dim} is odd (rotary embeddings need it even)")
    if config.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConvertError("config.json: partial_rotary_factor is not supported")
    if config.get("mlp_bias"):
        raise ConvertError("config.json: mlp_bias is not supported (llama.cpp's llama architecture has no MLP biases)")
    if config.get("hidden_act", "silu") != "silu":
        raise ConvertError(f"config.json: hidden_act {config['hidden_act']!r} is not supported (only silu)")
    rope = _rope_parameters(config)
    theta = float(rope.get("rope_theta", 10000.0))
    if not (theta > 0 and math.isfinite(theta)):
        raise ConvertError(f"config.json: rope_theta must be a positive number, got {theta}")
    rms_eps = float(config.get("rms_norm_eps", 1e-6))
    return HParams(
        arch=arch,
        n_layer=_positive_int(config, "num_hidden_layers"),
        n_embd=n_embd,
        n_ff=_positive_int(config, "intermediate_size"),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_ctx_train=_positive_int(config, "max_position_embeddings", config.get("max_position_embeddings") or 4096),
        rms_eps=rms_eps,
        rope_theta=theta,
        tied=None if config.get("tie_word_embeddings") is None else bool(config["tie_word_embeddings"]),
        explicit_head_dim=explicit_head_dim,
        rope_scaling=rope,
        config=config,
    )


def _yarn_mscale(factor: float) -> float:
    return 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0


def rope_metadata(hp: HParams) -> tuple[dict[str, Any], np.ndarray | None]:
    """GGUF rope-scaling keys (without the arch prefix) and the ``rope_freqs`` factors (Llama 3 scaling) or None."""
    r = hp.rope_scaling
    kind = r.get("rope_type", r.get("type", "default")) or "default"
    if kind == "default":
        return {}, None
    factor = float(r.get("factor", 1.0))
    if not (factor > 0 and math.isfinite(factor)):
        raise ConvertError(f"config.json: rope scaling factor must be a positive number, got {factor}")
    if kind == "linear":
        # transformers divides the positions by the factor; ggml multiplies them by freq_scale = 1 / factor.
        return {"rope.scaling.type": "linear", "rope.scaling.factor": factor}, None
    if kind == "yarn":
        if r.get("mscale") is not None or r.get("mscale_all_dim") is not None:
            raise ConvertError("config.json: yarn with mscale/mscale_all_dim is not supported")
        if r.get("truncate") is False:
            raise ConvertError("config.json: yarn with truncate=false is not supported (ggml rounds the ranges)")
        keys: dict[str, Any] = {
            "rope.scaling.type": "yarn",
            "rope.scaling.factor": factor,
            "rope.scaling.original_context_length": int(
                r.get("original_max_position_embeddings")
                or hp.config.get("original_max_position_embeddings")
                or hp.n_ctx_train
            ),
        }
        if r.get("attention_factor") is not None:
            # transformers scales attention by attention_factor; ggml by attn_factor * (1 + 0.1 ln factor).
            keys["rope.scaling.attn_factor"] = float(r["attention_factor"]) / _yarn_mscale(factor)
        if r.get("beta_fast") is not None:
            keys["rope.scaling.yarn_beta_fast"] = float(r["beta_fast"])
        if r.get("beta_slow") is not None:
            keys["rope.scaling.yarn_beta_slow"] = float(r["beta_slow"])
        return keys, None
    if kind == "llama3":
        return {}, llama3_rope_factors(hp, r, factor)
    raise ConvertError(f"config.json: rope scaling type {kind!r} is not supported (supported: linear, yarn, llama3)")


def llama3_rope_factors(hp: HParams, r: dict[str, Any], factor: float) -> np.ndarray:
    """Llama 3.1 frequency scaling as per-dimension divisors of the rotary frequencies (ggml's ``rope_freqs``):
    long wavelengths are slowed by ``factor``, short ones kept, the band between interpolated."""
    low, high = float(r.get("low_freq_factor", 1.0)), float(r.get("high_freq_factor", 4.0))
    old_ctx = float(r.get("original_max_position_embeddings", 8192))
    if not high > low:
        raise ConvertError("config.json: llama3 rope scaling needs high_freq_factor > low_freq_factor")
    dims = np.arange(0, hp.head_dim, 2, dtype=np.float64)
    freqs = hp.rope_theta ** (-dims / hp.head_dim)
    wavelen = 2 * math.pi / freqs
    ratio = old_ctx / wavelen
    smooth = np.clip((ratio - low) / (high - low), 0.0, 1.0)
    # scaled frequency = freqs / factor on the slow side (smooth 0), freqs on the fast side (smooth 1)
    scaled = freqs * (smooth + (1.0 - smooth) / factor)
    return (freqs / scaled).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------------
# tensors


@dataclass
class TensorPlan:
    name: str  # GGUF name
    source: str | None  # checkpoint name, None for a computed tensor
    shape: tuple[int, ...]  # PyTorch order (rows first)
    ggml_type: str
    permute_head_dim: int = 0  # llama q/k: reorder each head's rows from halves to interleaved pairs
    values: np.ndarray | None = None  # a computed tensor


def _expected_tensors(hp: HParams, n_vocab: int, ckpt: Checkpoint) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(GGUF name, checkpoint name, shape, head_dim to permute by) of every tensor the file should hold."""
    d, dq, dkv, ff = hp.n_embd, hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim, hp.n_ff
    # ggml's llama rope rotates adjacent pairs (NORM mode); transformers rotates the two halves of each head
    # (NEOX-style). Qwen2/Qwen3 run NEOX mode in ggml, so only llama's q and k rows are reordered.
    perm = hp.head_dim if hp.arch == "llama" else 0
    out = [("token_embd.weight", "model.embed_tokens.weight", (n_vocab, d), 0)]
    for i in range(hp.n_layer):
        hf, g = f"model.layers.{i}.", f"blk.{i}."
        out += [
            (g + "attn_norm.weight", hf + "input_layernorm.weight", (d,), 0),
            (g + "attn_q.weight", hf + "self_attn.q_proj.weight", (dq, d), perm),
            (g + "attn_k.weight", hf + "self_attn.k_proj.weight", (dkv, d), perm),
            (g + "attn_v.weight", hf + "self_attn.v_proj.weight", (dkv, d), 0),
            (g + "attn_output.weight", hf + "self_attn.o_proj.weight", (d, dq), 0),
        ]
        for proj, gname, n, p in (
            ("q", "attn_q", dq, perm),
            ("k", "attn_k", dkv, perm),
            ("v", "attn_v", dkv, 0),
            ("o", "attn_output", d, 0),
        ):
            bias = hf + f"self_attn.{proj}_proj.bias"
            if bias in ckpt.entries:
                out.append((g + gname + ".bias", bias, (n,), p))
        if hp.arch == "qwen3" or hf + "self_attn.q_norm.weight" in ckpt.entries:
            out += [
                (g + "attn_q_norm.weight", hf + "self_attn.q_norm.weight", (hp.head_dim,), 0),
                (g + "attn_k_norm.weight", hf + "self_attn.k_norm.weight", (hp.head_dim,), 0),
            ]
        out += [
            (g + "ffn_norm.weight", hf + "post_attention_layernorm.weight", (d,), 0),
            (g + "ffn_gate.weight", hf + "mlp.gate_proj.weight", (ff, d), 0),
            (g + "ffn_up.weight", hf + "mlp.up_proj.weight", (ff, d), 0),
            (g + "ffn_down.weight", hf + "mlp.down_proj.weight", (d, ff), 0),
        ]
    out.append(("output_norm.weight", "model.norm.weight", (d,), 0))
    if not hp.tied:
        out.append(("output.weight", "lm_head.weight", (n_vocab, d), 0))
    return out


def _ignored(name: str) -> bool:
    return name.endswith("rotary_emb.inv_freq")


def _type_for(plan_shape: tuple[int, ...], outtype: str) -> str:
    """Norms, biases and other 1-D tensors stay float32 (as llama.cpp keeps them); a matrix whose rows do not split
    into whole blocks of a quantized type falls back to F16."""
    import gguf

    if len(plan_shape) < 2:
        return "F32"
    want = OUTTYPES[outtype][0]
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[want]][0]
    return want if plan_shape[-1] % block == 0 else "F16"


def plan_tensors(hp: HParams, ckpt: Checkpoint, outtype: str, rope_factors: np.ndarray | None) -> list[TensorPlan]:
    embd = ckpt.entries.get("model.embed_tokens.weight")
    if embd is None:
        raise ConvertError("the checkpoint has no model.embed_tokens.weight")
    n_vocab = embd.shape[0]
    if hp.tied is None:
        hp.tied = "lm_head.weight" not in ckpt.entries
    expected = _expected_tensors(hp, n_vocab, ckpt)
    wanted = {src for _, src, _, _ in expected}
    if hp.tied:
        wanted.add("lm_head.weight")  # some tied checkpoints store the shared matrix twice; token_embd serves both
    unexpected = sorted(n for n in ckpt.entries if n not in wanted and not _ignored(n))
    if unexpected:
        more = f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""
        raise ConvertError(
            f"the checkpoint has tensor(s) a plain {hp.arch} model does not: {', '.join(unexpected[:5])}{more}"
        )
    plans: list[TensorPlan] = []
    for gname, src, shape, perm in expected:
        entry = ckpt.entries.get(src)
        if entry is None:
            raise ConvertError(f"the checkpoint lacks tensor {src!r} (needed for {gname})")
        if entry.shape != shape:
            raise ConvertError(f"tensor {src!r} has shape {list(entry.shape)}, expected {list(shape)} from config.json")
        plans.append(TensorPlan(gname, src, shape, _type_for(shape, outtype), perm))
    if rope_factors is not None:
        plans.insert(1, TensorPlan("rope_freqs.weight", None, rope_factors.shape, "F32", values=rope_factors))
    return plans


def _interleave_halves(rows: np.ndarray, head_dim: int) -> np.ndarray:
    """Within each head's block of ``head_dim`` rows, order them x0, x_h, x1, x_{h+1}, ... (h = head_dim / 2):
    transformers pairs dimension i with i + h, ggml's NORM rope pairs 2i with 2i + 1."""
    half = head_dim // 2
    order = np.empty(head_dim, dtype=np.int64)
    order[0::2] = np.arange(half)
    order[1::2] = np.arange(half) + half
    heads = rows.reshape(-1, head_dim, *rows.shape[1:])
    return heads[:, order].reshape(rows.shape)


def _nbytes(shape: tuple[int, ...], ggml_type: str) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]]
    n = int(np.prod(shape, dtype=np.int64))
    return n // block * size


def _encoder(ggml_type: str, n_threads: int) -> Callable[[np.ndarray], bytes | np.ndarray]:
    if ggml_type == "F32":
        return lambda x: np.ascontiguousarray(x, dtype="<f4")
    if ggml_type == "F16":
        return lambda x: np.ascontiguousarray(x, dtype="<f2")
    import gguf

    type_id = int(gguf.GGMLQuantizationType[ggml_type])
    return lambda x: _core.quantize(x.reshape(-1, x.shape[-1]), type_id, n_threads)


def _slabs(ckpt: Checkpoint, plan: TensorPlan) -> Iterator[np.ndarray]:
    if plan.values is not None:
        yield plan.values
        return
    assert plan.source is not None
    if len(plan.shape) == 1:
        data = ckpt.rows(plan.source)
        yield _interleave_halves(data, plan.permute_head_dim) if plan.permute_head_dim else data
        return
    rows, cols = plan.shape
    step = max(1, SLAB_ELEMENTS // cols)
    if plan.permute_head_dim:
        step = max(plan.permute_head_dim, step // plan.permute_head_dim * plan.permute_head_dim)
    for start in range(0, rows, step):
        data = ckpt.rows(plan.source, start, min(rows, start + step))
        if not np.isfinite(data).all():
            raise ConvertError(f"tensor {plan.source!r} holds NaN or infinite values")
        yield _interleave_halves(data, plan.permute_head_dim) if plan.permute_head_dim else data


# --------------------------------------------------------------------------------------------------------------------
# writing


def _add_metadata(
    writer: Any, hp: HParams, vocab: VocabMetadata, outtype: str, name: str, n_vocab: int, rope_keys: dict[str, Any]
) -> None:
    a = hp.arch
    writer.add_type("model")
    writer.add_name(name)
    writer.add_uint32(f"{a}.block_count", hp.n_layer)
    writer.add_uint32(f"{a}.context_length", hp.n_ctx_train)
    writer.add_uint32(f"{a}.embedding_length", hp.n_embd)
    writer.add_uint32(f"{a}.feed_forward_length", hp.n_ff)
    writer.add_uint32(f"{a}.attention.head_count", hp.n_head)
    writer.add_uint32(f"{a}.attention.head_count_kv", hp.n_head_kv)
    writer.add_float32(f"{a}.attention.layer_norm_rms_epsilon", hp.rms_eps)
    writer.add_float32(f"{a}.rope.freq_base", hp.rope_theta)
    writer.add_uint32(f"{a}.rope.dimension_count", hp.head_dim)
    if hp.explicit_head_dim:
        writer.add_uint32(f"{a}.attention.key_length", hp.head_dim)
        writer.add_uint32(f"{a}.attention.value_length", hp.head_dim)
    writer.add_uint32(f"{a}.vocab_size", n_vocab)
    for key, value in rope_keys.items():
        if isinstance(value, str):
            writer.add_string(f"{a}.{key}", value)
        elif isinstance(value, int):
            writer.add_uint32(f"{a}.{key}", value)
        else:
            writer.add_float32(f"{a}.{key}", value)
    writer.add_uint32("general.file_type", OUTTYPES[outtype][1])
    if OUTTYPES[outtype][0] not in ("F32", "F16", "BF16"):
        writer.add_uint32("general.quantization_version", 2)
    add_vocab_to_writer(writer, vocab)


def convert(
    hf_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    outtype: str = "f32",
    vocab_only: bool = False,
    tokenizer_pre: str | None = None,
    progress: bool = True,
    n_threads: int | None = None,
) -> Path:
    """Converts the Hugging Face model directory ``hf_dir`` to the GGUF file ``out`` and returns its path."""
    try:
        import gguf
    except ImportError as exc:
        raise ConvertError('converting needs the gguf package: pip install "adadecode[convert]"') from exc

    src, dst = Path(hf_dir), Path(out)
    if outtype not in OUTTYPES:
        raise ConvertError(f"unknown output type {outtype!r} (choose from {', '.join(OUTTYPES)})")
    if dst.is_dir():
        raise ConvertError(f"the output {dst} is a directory; give a file name such as {dst / 'model.gguf'}")
    if not dst.parent.is_dir():
        raise ConvertError(f"the output directory {dst.parent} does not exist")
    hp = read_config(src)
    try:
        ckpt = None if vocab_only else Checkpoint(src)
        n_vocab = (
            ckpt.entries["model.embed_tokens.weight"].shape[0]
            if ckpt and "model.embed_tokens.weight" in ckpt.entries
            else _positive_int(hp.config, "vocab_size")
        )
        vocab = read_vocab(src, hp.config, n_vocab, tokenizer_pre)
    except (CheckpointError, TokenizerError) as exc:
        raise ConvertError(str(exc)) from exc
    rope_keys, rope_factors = rope_metadata(hp)
    plans = [] if ckpt is None else plan_tensors(hp, ckpt, outtype, rope_factors)

    writer = gguf.GGUFWriter(path=None, arch=hp.arch)
    name = hp.config.get("_name_or_path") or src.resolve().name
    _add_metadata(writer, hp, vocab, outtype, str(name), n_vocab, rope_keys)
    for p in plans:
        writer.add_tensor_info(
            p.name,
            p.shape,
            np.dtype(np.float32),
            _nbytes(p.shape, p.ggml_type),
            raw_dtype=gguf.GGMLQuantizationType[p.ggml_type],
        )

    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    threads = n_threads or os.cpu_count() or 1
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        fout = writer.fout[0]
        total = sum(_nbytes(p.shape, p.ggml_type) for p in plans)
        from tqdm import tqdm

        with tqdm(
            total=total, unit="B", unit_scale=True, desc="convert", disable=not progress or not plans, file=sys.stderr
        ) as bar:
            for p in plans:
                encode = _encoder(p.ggml_type, threads)
                writer.write_padding(fout, fout.tell())
                written = 0
                for slab in _slabs(ckpt, p):  # type: ignore[arg-type]
                    data = encode(slab)
                    fout.write(data.tobytes() if isinstance(data, np.ndarray) else data)
                    n = data.nbytes if isinstance(data, np.ndarray) else len(data)
                    written += n
                    bar.update(n)
                if written != _nbytes(p.shape, p.ggml_type):
                    raise ConvertError(f"{p.name}: wrote {written} bytes, expected {_nbytes(p.shape, p.ggml_type)}")
                writer.write_padding(fout, written)
        writer.close()
        os.replace(tmp, dst)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return dst


# --------------------------------------------------------------------------------------------------------------------
# command line


def add_convert_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "convert",
        parents=parents,
        help="convert a Hugging Face checkpoint to GGUF",
        description="Convert a Hugging Face model directory (config.json, safetensors or pytorch_model*.bin "
        f"weights, tokenizer.json) of a {', '.join(ARCHITECTURES)} model to a GGUF file that this engine and "
        "llama.cpp load. Norms and biases stay float32; quantized types use ggml's own quantization.",
    )
    p.add_argument("hf_dir", metavar="HF_DIR", help="the Hugging Face model directory")
    p.add_argument("-o", "--out", required=True, metavar="OUT.gguf", help="the GGUF file to write")
    p.add_argument(
        "--outtype", choices=tuple(OUTTYPES), default="f16", help="type of the weight matrices (default: f16)"
    )
    p.add_argument("--vocab-only", action="store_true", help="write only the metadata and the tokenizer")
    p.add_argument(
        "--tokenizer-pre",
        choices=KNOWN_PRE,
        default=None,
        help="the pre-tokenizer family to record when it cannot be recognised from tokenizer.json",
    )
    p.add_argument("-t", "--threads", type=int, default=None, metavar="N", help="threads for quantization")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        raise ConvertError(f"-t/--threads must be at least 1, got {args.threads}")
    path = convert(
        args.hf_dir,
        args.out,
        outtype=args.outtype,
        vocab_only=args.vocab_only,
        tokenizer_pre=args.tokenizer_pre,
        progress=not args.no_progress,
        n_threads=args.threads,
    )
    print(path, flush=True)
    return 0
