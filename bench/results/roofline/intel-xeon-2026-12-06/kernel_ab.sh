#!/bin/bash
# usage: kb.sh BIN_DIR N TYPE n_in n_out threads fam1 fam2 ...  -> best GMAC/s per rows per family
BIN=$1; N=$2; TY=$3; NIN=$4; NOUT=$5; TH=$6; shift 6
out=/tmp/kb.$$; rm -f $out
for i in $(seq $N); do for fam in "$@"; do
  ADADECODE_QMATMUL=$fam $BIN/adadecode-kernelbench $TY 1 $NIN $NOUT $TH 100 2>&1 | awk -v f=$fam '/^rows/{gsub(":","",$2); print f, $2, $9}' >> $out
done; done
python3 - "$out" <<'P'
import sys, collections
best = collections.defaultdict(float)
for line in open(sys.argv[1]):
    f, r, g = line.split(); best[(f, int(r))] = max(best[(f, int(r))], float(g))
fams = sorted({f for f, _ in best}, key=lambda f: list(best).index((f, 1)))
print("family  " + " ".join(f"{r:>6}" for r in range(1, 10)))
for f in fams: print(f"{f:8}" + " ".join(f"{best[(f, r)]:6.1f}" for r in range(1, 10)))
P
