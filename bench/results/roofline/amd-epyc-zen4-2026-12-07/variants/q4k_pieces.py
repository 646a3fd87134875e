"""Timing-only variants of the AVX-512 Q4_K kernel (their results are wrong): which piece of the per-block work costs.
Run from the root of a worktree, it rewrites ggml/ops/qmatmul_avx512.inc there; then build adadecode-kernelbench and
run `adadecode-kernelbench q4_k 1 1536 512 1 4000`.   python q4k_pieces.py nooffsets|noepilogue|noprefetch|noscale
"""

import sys
from pathlib import Path

EPILOGUE = """\
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[r]), _mm512_mul_ps(d, act_scale), acc[r]);
            acc[r] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(offsets[r]), _mm512_mul_ps(dmin, act_scale), acc[r]);"""
INTEGER_EPILOGUE = """\
            (void)act_scale; (void)d; (void)dmin;
            acc[r] = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(acc[r]),
                                                          _mm512_add_epi32(sums[r], offsets[r])));"""
SCALE = "sums[r] = _mm512_add_epi32(sums[r], _mm512_mullo_epi32(dots[r], scale32));"
REPLACEMENTS = {
    "nooffsets": ("offsets[r] = QM_MADD_ACC(offsets[r], mins, _mm512_set1_epi32(act_sums));",
                  "(void)act_sums; (void)mins;"),
    "noepilogue": (EPILOGUE, INTEGER_EPILOGUE),
    "noprefetch": ("if (NR >= packed_prefetch_min_rows) {\n                if (sub < 5)",
                   "if (NR >= 1000) {\n                if (sub < 5)"),
    "noscale": (SCALE, "sums[r] = _mm512_add_epi32(sums[r], dots[r]); (void)scale32;"),
}

path = Path("ggml/ops/qmatmul_avx512.inc")
old, new = REPLACEMENTS[sys.argv[1]]
text = path.read_text()
if old not in text:
    raise SystemExit(f"{sys.argv[1]}: the kernel no longer has the piece this variant replaces")
path.write_text(text.replace(old, new))
