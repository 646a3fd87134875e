"""Mutation fuzzing of model and exit-heads GGUF files (used by test_fuzz_gguf.py).

``layout(data)`` walks a GGUF header and records where every field lies (counts, string lengths, value types,
array lengths, scalar values, key and tensor names, tensor dims, types and offsets). ``mutate(case, index)`` makes
mutation number ``index`` of a base file from a generator seeded by (SEED, index), so any case is reproduced from
its number alone. The worker (``python gguf_fuzz.py worker ...``) loads mutations ``start..stop`` one by one,
printing ``B <i>`` before and ``E <i> <outcome> <message>`` after each, so the parent can tell exactly which
mutation killed it.
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

SEED = 20261122

# GGUF value types and their scalar sizes (the numbering is the file format's).
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "b", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass
class Field:
    """An integer (or float) field of the header: where it is, how it is encoded, what it means."""

    kind: str  # version, count, strlen, kvtype, arrtype, arrlen, value, ndims, dim, ttype, toffset
    pos: int
    fmt: str  # struct format of the field
    label: str


@dataclass
class Layout:
    fields: list[Field] = field(default_factory=list)
    elem_strlens: list[Field] = field(default_factory=list)  # lengths of strings inside string arrays
    keys: list[tuple[int, int, str]] = field(default_factory=list)  # (pos, length, key)
    names: list[tuple[int, int, str]] = field(default_factory=list)  # (pos, length, tensor name)
    header_end: int = 0  # end of the tensor directory


def layout(data: bytes) -> Layout:
    out = Layout()
    pos = 4

    def take(fmt: str) -> int | float:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def add(kind: str, fmt: str, label: str) -> int | float:
        out.fields.append(Field(kind, pos, fmt, label))
        return take(fmt)

    def string(kind_label: str, elem: bool = False) -> tuple[int, str]:
        nonlocal pos
        f = Field("strlen", pos, "Q", kind_label)
        (out.elem_strlens if elem else out.fields).append(f)
        n = int(take("Q"))
        start = pos
        pos += n
        return start, data[start : start + n].decode("utf-8", "replace")

    add("version", "I", "version")
    n_tensors = int(add("count", "q", "n_tensors"))
    n_kv = int(add("count", "q", "n_kv"))
    for _ in range(n_kv):
        start, key = string("key length")
        out.keys.append((start, len(key.encode()), key))
        vtype = int(add("kvtype", "I", f"type of {key}"))
        if vtype == _ARRAY:
            etype = int(add("arrtype", "I", f"element type of {key}"))
            n = int(add("arrlen", "Q", f"length of {key}"))
            if etype == _STRING:
                for _ in range(n):
                    string(f"element of {key}", elem=True)
            else:
                pos += n * struct.calcsize(_SCALAR[etype])
        elif vtype == _STRING:
            string(f"value of {key}")
        else:
            add("value", _SCALAR[vtype], key)
    for _ in range(n_tensors):
        start, name = string("tensor name length")
        out.names.append((start, len(name.encode()), name))
        n_dims = int(add("ndims", "I", f"n_dims of {name}"))
        for d in range(n_dims):
            add("dim", "q", f"dim {d} of {name}")
        add("ttype", "I", f"type of {name}")
        add("toffset", "Q", f"offset of {name}")
    out.header_end = pos
    return out


def _interesting_ints(old: int, fmt: str, rng: random.Random, file_size: int) -> list[int]:
    bits = struct.calcsize(fmt) * 8
    vals = [0, 1, 2, 3, old - 1, old + 1, old * 2, old + 32, old - 32, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
            2**63 - 1, 2**63, 2**64 - 1, -1, file_size, file_size + 1, rng.getrandbits(bits),
            rng.randrange(0, 4096), old ^ (1 << rng.randrange(bits))]  # fmt: skip
    mask = (1 << bits) - 1
    return [v & mask for v in vals]


def _pack(fmt: str, value: int | float) -> bytes:
    if fmt in "fd":
        return struct.pack("<" + fmt, value)
    bits = struct.calcsize(fmt) * 8
    raw = int(value) & ((1 << bits) - 1)
    unsigned = {"b": "B", "h": "H", "i": "I", "q": "Q"}.get(fmt, fmt)
    return struct.pack("<" + unsigned, raw)


def _set_field(data: bytearray, f: Field, rng: random.Random, file_size: int) -> str:
    size = struct.calcsize(f.fmt)
    (old,) = struct.unpack_from("<" + f.fmt, data, f.pos)
    if f.fmt in "fd":
        new: int | float = rng.choice([math.nan, math.inf, -math.inf, 0.0, -1.0, -old, 1e30, 1e-30, old * 1.5])
    else:
        new = rng.choice(_interesting_ints(int(old), f.fmt, rng, file_size))
    data[f.pos : f.pos + size] = _pack(f.fmt, new)
    return f"{f.label}: {old} -> {new}"


_KINDS = [
    ("count", 6), ("strlen", 8), ("elemstrlen", 3), ("kvtype", 6), ("arrtype", 4), ("arrlen", 5), ("value", 12),
    ("ndims", 5), ("dim", 8), ("ttype", 8), ("toffset", 8), ("version", 2), ("magic", 1), ("keyname", 8),
    ("tensorname", 6), ("flip", 14), ("truncate", 5), ("splice", 4),
]  # fmt: skip


def mutate(base: bytes, lay: Layout, rng: random.Random) -> tuple[bytes, str]:
    """One random mutation of `base` (whose header is described by `lay`): the new bytes and what was done."""
    kinds, weights = zip(*_KINDS, strict=True)
    kind = rng.choices(kinds, weights)[0]
    data = bytearray(base)
    size = len(base)
    if kind in ("count", "strlen", "kvtype", "arrtype", "arrlen", "value", "ndims", "dim", "ttype", "toffset",
                "version"):  # fmt: skip
        candidates = [f for f in lay.fields if f.kind == kind]
        if not candidates:
            kind = "flip"
        else:
            f = rng.choice(candidates)
            if kind in ("kvtype", "arrtype", "ttype") and rng.random() < 0.6:
                (old,) = struct.unpack_from("<I", data, f.pos)
                new = rng.randrange(0, 48)
                data[f.pos : f.pos + 4] = struct.pack("<I", new)
                return bytes(data), f"{kind} {f.label}: {old} -> {new}"
            desc = f"{kind} " + _set_field(data, f, rng, size)
            return bytes(data), desc
    if kind == "elemstrlen":
        if lay.elem_strlens:
            f = rng.choice(lay.elem_strlens)
            desc = "elemstrlen " + _set_field(data, f, rng, size)
            return bytes(data), desc
        kind = "flip"
    if kind == "magic":
        i = rng.randrange(4)
        data[i] ^= 1 << rng.randrange(8)
        return bytes(data), f"magic byte {i} flipped"
    if kind in ("keyname", "tensorname"):
        spans = lay.keys if kind == "keyname" else lay.names
        pos, n, name = rng.choice(spans)
        same_length = [s for s in spans if s[1] == n and s[0] != pos]
        if same_length and rng.random() < 0.4:
            other = rng.choice(same_length)
            data[pos : pos + n] = base[other[0] : other[0] + n]
            return bytes(data), f"{kind} {name!r} renamed to duplicate {other[2]!r}"
        if n:
            i = rng.randrange(n)
            data[pos + i] = rng.choice([0, 0xFF, 0x80, ord("x"), ord("."), rng.randrange(256)])
            return bytes(data), f"{kind} {name!r} byte {i} -> {data[pos + i]:#x}"
        kind = "flip"
    if kind == "truncate":
        cut = rng.randrange(0, size) if rng.random() < 0.3 else rng.randrange(0, max(1, lay.header_end))
        return bytes(data[:cut]), f"truncated to {cut} bytes"
    if kind == "splice":
        i = rng.randrange(4, max(5, lay.header_end))
        n = rng.choice([1, 2, 4, 8, rng.randrange(1, 64)])
        if rng.random() < 0.5:
            return bytes(data[:i] + data[i + n :]), f"deleted {n} bytes at {i}"
        return bytes(data[:i] + bytes(rng.randrange(256) for _ in range(n)) + data[i:]), f"inserted {n} bytes at {i}"
    # Random byte flips in the header region (where the parser works); a few land in the first bytes of data.
    n = rng.choice([1, 1, 2, 4, 8, 16])
    where = []
    for _ in range(n):
        i = rng.randrange(0, min(size, lay.header_end + 64))
        data[i] = rng.randrange(256) if rng.random() < 0.5 else data[i] ^ (1 << rng.randrange(8))
        where.append(i)
    return bytes(data), f"flip bytes at {sorted(where)}"


# --------------------------------------------------------------------------------------------------------------------
# cases: (kind of file, base bytes); mutation i uses case_of(i) and random.Random(f"{SEED}-{i}")


@dataclass
class Case:
    name: str  # "model", "heads" or "smollm2"
    base: bytes  # for smollm2 only the header; the rest of the file is a sparse region of zeros
    lay: Layout
    full_size: int


def load_cases(tiny_model: Path, tiny_heads: Path, smollm2: Path | None) -> dict[str, Case]:
    cases = {}
    for name, path in (("model", tiny_model), ("heads", tiny_heads)):
        data = path.read_bytes()
        cases[name] = Case(name, data, layout(data), len(data))
    if smollm2 is not None:
        with open(smollm2, "rb") as f:
            head = f.read(4 << 20)
        lay = layout(head)
        cases["smollm2"] = Case("smollm2", head[: lay.header_end + 64], lay, smollm2.stat().st_size)
    return cases


def case_of(index: int, n_smollm2: int, have_smollm2: bool) -> str:
    if index < n_smollm2 and have_smollm2:
        return "smollm2"
    return "heads" if index % 3 == 0 else "model"


def make_case(cases: dict[str, Case], index: int, n_smollm2: int, out: Path) -> tuple[str, str]:
    """Write mutation `index` to `out`; returns (case name, description)."""
    case = cases[case_of(index, n_smollm2, "smollm2" in cases)]
    rng = random.Random(f"{SEED}-{index}")
    data, desc = mutate(case.base, case.lay, rng)
    with open(out, "wb") as f:
        f.write(data)
        if case.name == "smollm2" and not desc.startswith("truncated"):
            # The tensor data as a hole of zeros: the file has the real size without writing 100 MB per case.
            f.truncate(case.full_size + len(data) - len(case.base))
    return case.name, desc


# --------------------------------------------------------------------------------------------------------------------
# worker


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def worker(args: list[str]) -> None:
    tiny_model, tiny_heads, smollm2, workdir = (Path(a) if a != "-" else None for a in args[:4])
    start, stop, n_smollm2 = (int(a) for a in args[4:7])
    assert tiny_model and tiny_heads and workdir
    import adadecode

    cases = load_cases(tiny_model, tiny_heads, smollm2)
    base_model = adadecode.Model(tiny_model, n_ctx=32, n_threads=1)
    prompt = [1, 259, 260, 261]
    reference = base_model.generate(prompt, max_tokens=6, mode="standard").tokens
    path = workdir / f"case-{os.getpid()}.gguf"
    for i in range(start, stop):
        name, desc = make_case(cases, i, n_smollm2, path)
        print(f"B {i} {name} {json.dumps(desc)}", flush=True)
        outcome, message = "accepted", ""
        try:
            if name == "heads":
                base_model.load_heads(path)
                # Accepted heads must still give exactly the standard greedy output (AdaDecode's guarantee).
                got = base_model.generate(prompt, max_tokens=6, mode="adadecode").tokens
                if got != reference:
                    outcome, message = "wrong-output", f"{got} != {reference}"
            else:
                m = adadecode.Model(path, n_ctx=32, n_threads=1)
                if name == "model":
                    try:
                        m.generate(prompt, max_tokens=3)
                    except (adadecode.Error, ValueError) as exc:  # e.g. a shrunken vocabulary: a clean error
                        message = f"generate: {type(exc).__name__}: {exc}"
                del m
        except (RuntimeError, ValueError) as exc:
            outcome = "rejected" if str(exc).strip() else "empty-message"
            message = f"{type(exc).__name__}: {exc}"
        except BaseException as exc:  # noqa: BLE001 - any other exception type is a finding, reported as such
            outcome, message = "other-exception", f"{type(exc).__name__}: {exc}"
        print(f"E {i} {outcome} {json.dumps(_one_line(message))}", flush=True)
    path.unlink(missing_ok=True)


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(sys.argv[2:])
    elif sys.argv[1] == "write":
        # Reproduce one case: gguf_fuzz.py write <tiny> <heads> <smollm2|-> <index> <out> <n_smollm2>
        tm, th, sm = (Path(a) if a != "-" else None for a in sys.argv[2:5])
        assert tm and th
        print(make_case(load_cases(tm, th, sm), int(sys.argv[5]), int(sys.argv[7]), Path(sys.argv[6])))
