"""Tabulates repeated `adadecode bench --micro` runs by their one-row pass time: on a VM whose memory speed moves
(other tenants), the k-row costs relative to one row move with it. Usage: python micro_states.py RUN.json ..."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path


def probes(folder: Path) -> str:
    """ccd_probe's round trip (ns) and 2-thread read (GB/s) before / after the run, where recorded."""
    got = []
    for name in ("probe-before.txt", "probe-after.txt"):
        f = folder / name
        m = re.search(r"roundtrip (\d+) ns .* 2 threads ([\d.]+) GB/s", f.read_text()) if f.exists() else None
        got.append(f"{m.group(1)} ns, {m.group(2)}" if m else "-")
    return " / ".join(got)


def main(paths: list[str]) -> None:
    runs = [(doc, doc["microbench"]) for doc in (json.load(open(path)) for path in paths)]
    rows = []
    for path, (doc, mb) in zip(paths, runs, strict=True):
        sec = [mb["rows"][str(k)]["seconds"] for k in range(1, 9)]
        cost = [mb["rows"][str(k)]["relative_cost"] for k in range(1, 9)]
        rows.append((sec[0], sec, cost, mb["read_gbs"], mb["int8_peak_gmacs"], doc["date"], probes(Path(path).parent)))
    rows.sort()
    print(f"# {len(rows)} microbench runs, fastest of {runs[0][0]['reps']} per row count, sorted by the one-row pass\n")
    print(f"CPU: {runs[0][1]['cpu_model']} ({runs[0][0]['cpu_signature']}); kernels {runs[0][1]['qmatmul_family']}; "
          f"{runs[0][0]['threads']} threads; `{runs[0][0]['command']}` repeated\n")
    print("| date | 1 row | GB/s of weights | read roof GB/s | int8 peak | 2 rows | 4 rows | 8 rows | 4 rows - 1 row | "
          "8 rows - 1 row | probe before / after (round trip, 2-thread read GB/s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    gb = runs[0][1]["weight_bytes_per_pass"] / 1e9
    for one, sec, cost, roof, peak, date, probe in rows:
        print(f"| {date[11:19]} | {one * 1e3:.1f} ms | {gb / one:.1f} | {roof:.1f} | {peak:.0f} | {cost[1]:.2f} | "
              f"{cost[3]:.2f} | {cost[7]:.2f} | {(sec[3] - one) * 1e3:.1f} ms | {(sec[7] - one) * 1e3:.1f} ms | "
              f"{probe} |")
    fast = [r for r in rows if r[0] <= statistics.median(r[0] for r in rows)]
    slow = [r for r in rows if r not in fast]
    for name, part in (("faster half", fast), ("slower half", slow)):
        if part:
            print(f"\n{name} ({len(part)} runs): median 1 row {statistics.median(r[0] for r in part) * 1e3:.1f} ms, "
                  f"4 rows {statistics.median(r[2][3] for r in part):.2f}x, "
                  f"8 rows {statistics.median(r[2][7] for r in part):.2f}x, "
                  f"8-row pass {statistics.median(r[1][7] for r in part) * 1e3:.1f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
