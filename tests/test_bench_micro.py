"""``adadecode bench --micro`` on SmolLM2 with one repetition: the installed adadecode-microbench runs, its roofline
figures are there and consistent with each other, ADADECODE_QMATMUL picks the kernel family it reports, and a missing
binary is a clear error. Speed is not asserted."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from adadecode import cli
from adadecode.bench.machine import cpu_vendor
from adadecode.bench.micro import MICROBENCH, find_microbench, floor_relative_cost

FAMILIES = ("avx512vnni", "avx512", "avxvnni", "avx2", "neondot", "neon", "off")


@pytest.fixture(scope="module")
def microbench() -> str:
    binary, looked = find_microbench(None)
    if binary is None:
        pytest.fail(f"{MICROBENCH} is not installed with the package (looked at {looked})")
    return binary


def _run_one_rep(microbench: str, model: Path) -> tuple[dict[str, Any], str]:
    """The microbench on one thread with one repetition, in the environment the test set: its JSON and stderr."""
    proc = subprocess.run([microbench, str(model), "1", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def _check_roofline(mb: dict[str, Any]) -> None:
    assert mb["cpu_model"]
    assert mb["qmatmul_family"] in FAMILIES
    assert mb["read_bytes"] >= 1 << 30
    assert mb["read_gbs"] > 0
    # one repetition: read before and after the passes (amid them from two); the roof is the highest
    assert len(mb["read_gbs_samples"]) == (2 if mb["reps"] == 1 else 3)
    assert mb["read_gbs"] == max(mb["read_gbs_samples"])
    assert mb["macs_per_row"] > 0
    assert mb["weight_bytes_per_pass"] > 0
    assert list(mb["rows"]) == [str(k) for k in range(1, 9)]
    peak = mb["int8_peak_gmacs"] * 1e9
    assert (peak > 0) == (mb["qmatmul_family"] != "off")
    one = mb["rows"]["1"]["seconds"]
    for k, row in mb["rows"].items():
        assert row["seconds"] > 0
        assert row["relative_cost"] == pytest.approx(row["seconds"] / one, rel=2e-3, abs=2e-3)
        assert row["gbs"] == pytest.approx(mb["weight_bytes_per_pass"] / row["seconds"] / 1e9, rel=1e-2, abs=1e-2)
        memory = mb["weight_bytes_per_pass"] / (mb["read_gbs"] * 1e9)
        arithmetic = int(k) * mb["macs_per_row"] / peak if peak else 0.0
        assert row["memory_floor_seconds"] == pytest.approx(memory, rel=1e-2)
        assert row["arithmetic_floor_seconds"] == pytest.approx(arithmetic, rel=1e-2, abs=1e-6)
        assert row["roofline_fraction"] == pytest.approx(max(memory, arithmetic) / row["seconds"], rel=1e-2, abs=2e-3)
    # The first setup's figures are the top-level ones.
    first = mb[mb["setups"][0]]
    assert first["rows"] == mb["rows"]
    assert first["weight_bytes_per_pass"] == mb["weight_bytes_per_pass"]


def _lscpu() -> tuple[dict[str, str], dict[str, int]]:
    """util-linux's view of the CPU: its fields (nested ones flattened) and the data or unified caches' sizes in KiB
    by level ("l2", "l3")."""
    fields: dict[str, str] = {}

    def flatten(entries: list[dict[str, Any]]) -> None:
        for e in entries:
            fields[e["field"].rstrip(":")] = e["data"]
            flatten(e.get("children", []))

    flatten(json.loads(subprocess.run(["lscpu", "-J"], capture_output=True, text=True, check=True).stdout)["lscpu"])
    table = subprocess.run(["lscpu", "-C=LEVEL,TYPE,ONE-SIZE", "-B"], capture_output=True, text=True).stdout
    sizes = {f"l{level}": int(size) // 1024 for level, kind, size in (line.split() for line in table.splitlines()[1:])
             if kind != "Instruction"}
    return fields, sizes


def _check_cpu_fields(doc: dict[str, Any], md: str) -> None:
    """The CPU's signature and caches, against lscpu where it runs on x86 (ARM's /proc/cpuinfo has no family)."""
    if not shutil.which("lscpu") or platform.machine() not in ("x86_64", "AMD64"):
        return
    fields, sizes = _lscpu()
    if not {"Vendor ID", "CPU family", "Model"} <= set(fields):
        return
    signature = f"{fields['Vendor ID']} family {fields['CPU family']} model {fields['Model']}"
    if "Stepping" in fields:
        signature += f" stepping {fields['Stepping']}"
    assert doc["cpu_signature"] == signature
    assert {level: doc["cache_kib"][level] for level in sizes} == sizes
    assert signature in md


def test_micro_command(
    engine: Any, smollm2_path: Path, microbench: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = tmp_path / "texts.jsonl"
    task.write_text(
        "".join(json.dumps({"prompt": t}) + "\n" for t in ("def add(a, b):\n    return a + b", "Hello, world!")),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    code = cli.main(
        ["bench", "--micro", "-m", str(smollm2_path), "--task", str(task), "-t", "1", "--reps", "1"] + ["-o", str(out)]
    )
    _, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads((out / "micro-smollm2-135m.json").read_text(encoding="utf-8"))
    assert doc["skipped"] == {} or set(doc["skipped"]) == {"tokenizer"}, doc["skipped"]
    mb = doc["microbench"]
    assert mb["threads"] == 1 and mb["setups"] == ["mmap"]
    _check_roofline(mb)
    md = (out / "micro-smollm2-135m.md").read_text(encoding="utf-8")
    assert "roofline fraction" in md and mb["qmatmul_family"] in md
    _check_cpu_fields(doc, md)
    eight = mb["rows"]["8"]
    floor = max(eight["memory_floor_seconds"], eight["arithmetic_floor_seconds"]) / mb["rows"]["1"]["seconds"]
    assert floor_relative_cost(mb["rows"], "8") == pytest.approx(floor)
    assert "| roofline floor, relative | " in md and f"{floor:.2f} |" in md


def test_forced_kernel_family(smollm2_path: Path, microbench: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADADECODE_QMATMUL", "avx2")
    mb, _ = _run_one_rep(microbench, smollm2_path)
    expected = "avx2" if mb["int8_peak_gmacs"] > 0 else "off"  # "off": a CPU without AVX2
    assert mb["qmatmul_family"] == expected
    _check_roofline(mb)


def test_missing_microbench_is_a_clear_error(
    engine: Any, smollm2_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-microbench"
    code = cli.main(
        ["bench", "--micro", "-m", str(smollm2_path), "--microbench-bin", str(missing), "-o", str(tmp_path)]
    )
    _, err = capsys.readouterr()
    assert code != 0
    assert MICROBENCH in err and str(missing) in err
    assert not list(tmp_path.glob("micro-*.json"))


@pytest.mark.parametrize("setting", ["", "2", "nine"])
def test_prefetch_rows_setting(
    smollm2_path: Path, microbench: str, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """The packed kernels prefetch from 1 row on Intel and 3 elsewhere unless ADADECODE_QMATMUL_PREFETCH_ROWS says
    otherwise; a value that is not 1-9 is named on stderr and the CPU's default used. The microbench reports it."""
    monkeypatch.setenv("ADADECODE_QMATMUL_PREFETCH_ROWS", setting)
    mb, stderr = _run_one_rep(microbench, smollm2_path)
    if mb["qmatmul_family"] in ("off", "neon", "neondot"):
        assert mb["prefetch_min_rows"] == 0
        return
    default = 1 if cpu_vendor() == "GenuineIntel" else 3
    assert mb["prefetch_min_rows"] == (2 if setting == "2" else default)
    assert ("ADADECODE_QMATMUL_PREFETCH_ROWS='nine' is not 1-9" in stderr) == (setting == "nine")


@pytest.mark.parametrize("setting", ["", "mulld", "vpmul"])
def test_q4_k_scale_setting(
    smollm2_path: Path, microbench: str, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """The AVX-512 VNNI Q4_K kernel applies its scales by vpdpwssd on Intel and by vpmulld elsewhere unless
    ADADECODE_QMATMUL_Q4K_SCALE says otherwise; a value that is neither is named on stderr and the CPU's default used.
    The microbench reports the choice, or "" where another kernel family runs."""
    monkeypatch.setenv("ADADECODE_QMATMUL_Q4K_SCALE", setting)
    mb, stderr = _run_one_rep(microbench, smollm2_path)
    if mb["qmatmul_family"] != "avx512vnni":
        assert mb["q4_k_scale"] == ""
        return
    default = "dpwssd" if cpu_vendor() == "GenuineIntel" else "mulld"
    assert mb["q4_k_scale"] == (setting if setting == "mulld" else default)
    assert ("ADADECODE_QMATMUL_Q4K_SCALE='vpmul' is not dpwssd or mulld" in stderr) == (setting == "vpmul")


def test_unknown_kernel_family_is_named(smollm2_path: Path, microbench: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADADECODE_QMATMUL", "avx1024")
    mb, stderr = _run_one_rep(microbench, smollm2_path)
    if mb["qmatmul_family"] in ("off", "neon", "neondot"):
        pytest.skip("no x86 kernel family here (aarch64, or x86 without AVX2)")
    assert "ADADECODE_QMATMUL='avx1024' is not 0, avx2, avxvnni, avx512 or avx512vnni" in stderr


def test_static_setup_times_passes_without_tile_sharing(smollm2_path: Path, microbench: str) -> None:
    """Setup `static` is `mmap` with each thread kept to its own share of a matmul's tiles (no TileShare), timed in
    the same process for A/B; an unknown setup is named, with the list of known ones."""
    proc = subprocess.run([microbench, str(smollm2_path), "2", "1", "200", "mmap,static"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    mb = json.loads(proc.stdout)
    assert mb["setups"] == ["mmap", "static"]
    for name in mb["setups"]:
        assert list(mb[name]["rows"]) == [str(k) for k in range(1, 9)]
        assert all(row["seconds"] > 0 for row in mb[name]["rows"].values())
    assert mb["static"]["weight_bytes_per_pass"] == mb["mmap"]["weight_bytes_per_pass"]
    bad = subprocess.run([microbench, str(smollm2_path), "2", "1", "200", "mmap,halves"], capture_output=True,
                         text=True, timeout=600)
    assert bad.returncode != 0
    assert "unknown setup 'halves' (expected mmap, static, file, ggml, repack or gpu)" in bad.stderr


@pytest.mark.parametrize("setting", ["", "0", "yes"])
def test_q4_k_high_nibbles_setting(
    smollm2_path: Path, microbench: str, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """The VNNI Q4_K kernels take the weights' high nibbles by GFNI on Intel CPUs that have it and by a shift and a
    mask elsewhere, unless ADADECODE_QMATMUL_GFNI says otherwise; a value other than 0 or 1 is named on stderr and the
    CPU's default used. The microbench reports the choice, or "" where neither family runs."""
    monkeypatch.setenv("ADADECODE_QMATMUL_GFNI", setting)
    mb, stderr = _run_one_rep(microbench, smollm2_path)
    if mb["qmatmul_family"] not in ("avx512vnni", "avxvnni"):
        assert mb["q4_k_high_nibbles"] == ""
        return
    flags = Path("/proc/cpuinfo").read_text().split()
    default = "gfni" if cpu_vendor() == "GenuineIntel" and "gfni" in flags else "shift"
    assert mb["q4_k_high_nibbles"] == ("shift" if setting == "0" else default)
    assert ("ADADECODE_QMATMUL_GFNI='yes' is not 0 or 1" in stderr) == (setting == "yes")
