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
