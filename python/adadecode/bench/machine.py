"""What machine a benchmark ran on: every speed figure names its CPU class (AVX-512 and AVX2-only CPUs of one machine
kind differ by up to 2x), so results carry the class, the CPU's name and its flags."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path

from .. import _core

_AVX512 = {"avx512f", "avx512bw", "avx512vl"}  # what our AVX-512 kernels need


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


def cpu_class(flags: set[str] | None = None) -> str:
    """"AVX-512", "AVX2" or "other": the kernel family our engine picks on this CPU."""
    flags = cpu_flags() if flags is None else flags
    return "AVX-512" if _AVX512 <= flags else "AVX2" if "avx2" in flags else "other"


def _cpuinfo_field(key: str) -> str | None:
    """The first /proc/cpuinfo line's value for key (None where there is no such file or line)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """GenuineIntel, AuthenticAMD, ... ("" where /proc/cpuinfo does not say)."""
    return _cpuinfo_field("vendor_id") or ""


def cpu_signature() -> str:
    """"GenuineIntel family 6 model 167 stepping 1" ("" where /proc/cpuinfo does not say, as on ARM). Under a
    hypervisor the model name alone does not tell CPUs apart: "Intel(R) Xeon(R) Processor" was two generations of Xeon
    here, "AMD EPYC" both Zen 3 and Zen 4, and kernel choices and their costs differ between them."""
    vendor, family, model = _cpuinfo_field("vendor_id"), _cpuinfo_field("cpu family"), _cpuinfo_field("model\t")
    if not (vendor and family and model):
        return ""
    stepping = _cpuinfo_field("stepping")
    return f"{vendor} family {family} model {model}" + (f" stepping {stepping}" if stepping else "")


def cache_kib(cpu_dir: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> dict[str, int]:
    """The first CPU's data or unified cache sizes in KiB by level ({"l2": 2048, "l3": 491520}; empty where sysfs does
    not say). L3 decides whether a matrix "in cache" in adadecode-kernelbench is in cache at all: one Xeon VM here had
    480 MiB, and streamed a 183 MiB matrix from it."""
    sizes: dict[str, int] = {}
    for index in sorted(cpu_dir.glob("index*")):
        try:
            level, kind, size = ((index / name).read_text().strip() for name in ("level", "type", "size"))
        except OSError:
            continue
        if kind != "Instruction" and size[:-1].isdigit():
            sizes.setdefault(f"l{level}", int(size[:-1]) * {"K": 1, "M": 1024, "G": 1 << 20}.get(size[-1], 0))
    return sizes


def cpu_detail_words(meta: Mapping[str, object]) -> str:
    """" (GenuineIntel family 6 model 167 stepping 1, L2 2 MiB, L3 480 MiB)" from a result's cpu_signature and
    cache_kib ("" for files written before they were recorded)."""
    parts = [str(meta["cpu_signature"])] if meta.get("cpu_signature") else []
    caches = meta.get("cache_kib")
    if isinstance(caches, Mapping):
        parts += [f"{level.upper()} {kib / 1024:g} MiB" for level, kib in caches.items() if level in ("l2", "l3")]
    return f" ({', '.join(parts)})" if parts else ""


def engine_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ADADECODE_* variables that change what the engine runs (kernel families, prefetching, ...), in `env`
    (default: this process's): a command that leaves them out does not reproduce the figures. ADADECODE_CACHE only
    says where files live."""
    env = os.environ if env is None else env
    return {k: v for k, v in sorted(env.items()) if k.startswith("ADADECODE_") and k != "ADADECODE_CACHE"}


def kernel_families() -> dict[str, str]:
    """The matmul and attention kernel families this process runs: the CPU's widest unless the environment names
    others, so the CPU class alone does not say which ran."""
    return {"matmul": _core.matmul_family(), "attention": _core.attention_family()}
