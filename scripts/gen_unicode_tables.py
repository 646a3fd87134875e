#!/usr/bin/env python3
# ruff: noqa: UP031  (%-formatting keeps the C++ templates readable; the --dump-nfc part also runs on Python 3.6)
r"""Generate cpp/unicode_tables.cpp from Python's own `unicodedata` (no tables copied from other projects).

What is generated, and why:
  * a run-length table of per-code-point flags: the general-category group (L, N, M, P, S, Z, C), the
    White_Space property (what `\\s` means in Oniguruma / Rust regex, which Hugging Face tokenizers use: it is
    Zs + Zl + Zp + U+0009..U+000D + U+0085, *not* Python's str.isspace(), which also counts U+001C..U+001F),
    and an "NFC inert" bit (the code point is unchanged by NFC and cannot combine with what precedes it, so a
    text made only of such code points is already in NFC);
  * canonical combining classes, full canonical decompositions and primary-composite pairs for NFC
    (Hangul syllables are handled algorithmically in C++ and are left out of the tables).

Unicode versions, chosen to match Hugging Face tokenizers 0.23 exactly (both checked code point by code point):
  * categories and White_Space: Unicode 16.0, what its Oniguruma uses (U+1E5D0, new in 16.0, is \p{L} there;
    U+323B0, new in 17.0, is not). Python 3.11-3.13's own unicodedata is 14.0-15.1, so the script uses the
    `unicodedata2` package when it is installed (`pip install unicodedata2==16.0.0`) and falls back to the
    interpreter's unicodedata otherwise;
  * NFC data: Unicode 9.0, what its NFC normalizer (the unicode-normalization-alignments crate) uses: it knows the
    combining classes of all 9.0 marks and of none added in 10.0 or later. Python 3.6's unicodedata is 9.0, so
    `--nfc-python /path/to/python3.6` runs this script under that interpreter (`--dump-nfc`) for the NFC part.

Usage (what made the committed file):
  python3 scripts/gen_unicode_tables.py --nfc-python ~/.pyenv/versions/3.6.15/bin/python > cpp/unicode_tables.cpp
"""

import json
import subprocess
import sys

if "--dump-nfc" in sys.argv:
    import unicodedata
else:
    try:
        import unicodedata2 as unicodedata
    except ImportError:  # pragma: no cover - the interpreter's tables are older
        import unicodedata

MAX_CP = 0x110000

F_LETTER, F_NUMBER, F_MARK, F_PUNCT, F_SYMBOL, F_SEPARATOR, F_OTHER = 1, 2, 4, 8, 16, 32, 64
F_WHITESPACE = 128
F_NFC_INERT = 256

GROUP = {"L": F_LETTER, "N": F_NUMBER, "M": F_MARK, "P": F_PUNCT, "S": F_SYMBOL, "Z": F_SEPARATOR, "C": F_OTHER}

S_BASE, L_BASE, V_BASE, T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
L_COUNT, V_COUNT, T_COUNT = 19, 21, 28
S_COUNT = L_COUNT * V_COUNT * T_COUNT


def is_white_space(cp, cat):
    return cat in ("Zs", "Zl", "Zp") or 0x09 <= cp <= 0x0D or cp == 0x85


def canonical_decomposition(cp):
    """Single-level canonical decomposition (None when there is none or it is a compatibility one)."""
    d = unicodedata.decomposition(chr(cp))
    if not d or d.startswith("<"):
        return None
    return [int(x, 16) for x in d.split()]


def full_decomposition(cp):
    d = canonical_decomposition(cp)
    if d is None:
        return [cp]
    out = []
    for c in d:
        out.extend(full_decomposition(c))
    return out


def nfc_data():
    """Combining classes, full canonical decompositions, primary composites and the NFC-inert code points, from the
    unicodedata imported above (the stdlib one under --dump-nfc)."""
    ccc = [0] * MAX_CP
    decomp = {}
    comp_pairs = []
    second_of_pair = set()
    for cp in range(MAX_CP):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        ccc[cp] = unicodedata.combining(ch)
        if S_BASE <= cp < S_BASE + S_COUNT:
            continue
        d = canonical_decomposition(cp)
        if d is not None:
            decomp[cp] = full_decomposition(cp)
            # A primary composite: a two-code-point canonical decomposition that NFC recomposes.
            if len(d) == 2 and unicodedata.normalize("NFC", ch) == ch:
                comp_pairs.append((d[0], d[1], cp))
                second_of_pair.add(d[1])
    # Hangul vowels and trailing consonants combine with what precedes them.
    second_of_pair.update(range(V_BASE, V_BASE + V_COUNT))
    second_of_pair.update(range(T_BASE + 1, T_BASE + T_COUNT))
    inert = [cp for cp in range(MAX_CP)
             if not 0xD800 <= cp <= 0xDFFF and ccc[cp] == 0 and cp not in second_of_pair
             and unicodedata.normalize("NFC", chr(cp)) == chr(cp)]
    return {"version": unicodedata.unidata_version, "python": sys.version.split()[0], "ccc": ccc, "decomp": decomp,
            "comp": comp_pairs, "inert": inert}


def main():
    nfc_python = None
    if "--nfc-python" in sys.argv:
        nfc_python = sys.argv[sys.argv.index("--nfc-python") + 1]
    if nfc_python:
        raw = subprocess.check_output([nfc_python, __file__, "--dump-nfc"])
        nfc = json.loads(raw.decode("utf-8"))
        nfc["decomp"] = {int(k): v for k, v in nfc["decomp"].items()}
    else:
        nfc = nfc_data()
        nfc["python"] = "%s %s" % (sys.version.split()[0], unicodedata.__name__)
    ccc = nfc["ccc"]
    decomp = nfc["decomp"]
    comp_pairs = [tuple(x) for x in nfc["comp"]]
    flags = []
    for cp in range(MAX_CP):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        f = GROUP[cat[0]]
        if is_white_space(cp, cat):
            f |= F_WHITESPACE
        flags.append(f)
    for cp in nfc["inert"]:
        flags[cp] |= F_NFC_INERT

    out = []
    w = out.append
    w("// Generated by scripts/gen_unicode_tables.py (Python %s): categories from %s (Unicode %s),"
      % (sys.version.split()[0], unicodedata.__name__, unicodedata.unidata_version))
    w("// NFC data from Python %s's unicodedata (Unicode %s). Do not edit." % (nfc["python"], nfc["version"]))
    w('#include "unicode.h"')
    w("")
    w("namespace adadecode {")
    w("namespace unicode_tables {")
    w("")
    w('const char *const k_unicode_version = "%s";' % unicodedata.unidata_version)
    w('const char *const k_nfc_unicode_version = "%s";' % nfc["version"])
    w("")
    runs = []
    prev = None
    for cp in range(MAX_CP):
        if flags[cp] != prev:
            runs.append((cp, flags[cp]))
            prev = flags[cp]
    w("// (first code point, flags) runs: the flags hold up to the next run's first code point.")
    w("const FlagRun k_flag_runs[] = {")
    for i in range(0, len(runs), 6):
        w("    " + " ".join("{0x%X, %d}," % r for r in runs[i:i + 6]))
    w("};")
    w("const size_t k_flag_runs_size = sizeof(k_flag_runs) / sizeof(k_flag_runs[0]);")
    w("")
    cruns = []
    prev = None
    for cp in range(MAX_CP):
        if ccc[cp] != prev:
            cruns.append((cp, ccc[cp]))
            prev = ccc[cp]
    w("// (first code point, canonical combining class) runs.")
    w("const FlagRun k_ccc_runs[] = {")
    for i in range(0, len(cruns), 6):
        w("    " + " ".join("{0x%X, %d}," % r for r in cruns[i:i + 6]))
    w("};")
    w("const size_t k_ccc_runs_size = sizeof(k_ccc_runs) / sizeof(k_ccc_runs[0]);")
    w("")
    pool = []
    entries = []
    for cp in sorted(decomp):
        entries.append((cp, len(pool), len(decomp[cp])))
        pool.extend(decomp[cp])
    w("// Full canonical decompositions (Hangul excluded), sorted by code point; text in k_decomp_pool.")
    w("const DecompEntry k_decomp[] = {")
    for i in range(0, len(entries), 5):
        w("    " + " ".join("{0x%X, %d, %d}," % e for e in entries[i:i + 5]))
    w("};")
    w("const size_t k_decomp_size = sizeof(k_decomp) / sizeof(k_decomp[0]);")
    w("const uint32_t k_decomp_pool[] = {")
    for i in range(0, len(pool), 10):
        w("    " + " ".join("0x%X," % c for c in pool[i:i + 10]))
    w("};")
    w("")
    comp_pairs.sort()
    w("// Primary composites (first, second, composed), sorted by (first, second); Hangul excluded.")
    w("const CompEntry k_comp[] = {")
    for i in range(0, len(comp_pairs), 4):
        w("    " + " ".join("{0x%X, 0x%X, 0x%X}," % e for e in comp_pairs[i:i + 4]))
    w("};")
    w("const size_t k_comp_size = sizeof(k_comp) / sizeof(k_comp[0]);")
    w("")
    w("}  // namespace unicode_tables")
    w("}  // namespace adadecode")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    if "--dump-nfc" in sys.argv:
        sys.stdout.write(json.dumps(nfc_data()))
    else:
        main()
