"""The table of per_process.sh and avxvnni-intel-2026-12-07/families.sh: from DIR/LABEL-I.json (adadecode-microbench
output, I = 1..N), per label the median one-row time and, per row count, the median and range over the processes of
its time over the one-row time within each process.   python3 per_process_table.py DIR N LABEL...
"""

import json
import statistics
import sys

directory, n, labels = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| build | 1 row (median ms) | " + " | ".join(f"{k} rows" for k in range(2, 9)) + " |")
print("|---" * 9 + "|")
for label in labels:
    runs = [json.load(open(f"{directory}/{label}-{i}.json")) for i in range(1, n + 1)]
    cells = []
    for k in range(2, 9):
        v = [r["rows"][str(k)]["seconds"] / r["rows"]["1"]["seconds"] for r in runs]
        cells.append(f"{statistics.median(v):.3f} ({min(v):.2f}-{max(v):.2f})")
    one = statistics.median(r["rows"]["1"]["seconds"] * 1e3 for r in runs)
    print(f"| {label} | {one:.1f} | " + " | ".join(cells) + " |")
