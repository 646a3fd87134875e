// A quantized matrix multiplication of our own for the few rows a decoding pass carries (1 to ~16), as a ggml
// custom op on the CPU backend.
//
// Why: the layer-parallel scheduler is only worth running if a pass over k rows costs little more than a pass over
// one. ggml's CPU matmul computes every (weight row, activation row) dot product on its own and so unpacks each
// quantized weight block once per activation row; on a 2-core machine that unpacking, not memory, bounds decoding.
// This kernel unpacks a weight block once and multiplies it with up to 8 activation rows (4 with AVX2 or NEON) while it
// sits in registers.
//
// Exactness: every output element is computed by the same sequence of operations whatever the number of rows, the
// grouping of rows or the number of threads, so a row's result is bitwise independent of the batch it travels in.
// That is what lets layer-parallel decoding reproduce standard decoding's logits bit for bit.
#pragma once

#include <memory>
#include <vector>

#include "ggml.h"

namespace adadecode {

// True when qmatmul can multiply a weight of this tensor's type on this CPU (x86-64 with AVX2, FMA and F16C, or any
// aarch64 CPU; the types Q4_1, Q5_0, Q8_0, Q4_K and Q6_K). ADADECODE_QMATMUL=0 in the environment turns the kernel
// off.
bool qmatmul_supports(const ggml_tensor *w);

// How the threads of one qmatmul op divide its weight tiles. Without one (nullptr), each thread takes an equal
// contiguous share. With one, each thread starts on the same share, but a thread that finishes early takes tiles
// from the end of a slower thread's share, so that a thread slowed by something else on the machine does not hold
// the others at the barrier after the op. The results are the same bits either way: which thread computes a tile does
// not change how it is computed. One TileShare per op of a graph, for the thread count the graph runs with (an op
// run with more threads divides its tiles the static way); it resets itself when the op ends, so the same op in
// the next run of the graph, or an op of the next graph, can use it again, but never two ops at once. Decode passes
// only: prefill batches (more than 64 rows) always divide statically.
class TileShare {
public:
    explicit TileShare(int n_threads);
    ~TileShare();
    TileShare(const TileShare &) = delete;
    TileShare &operator=(const TileShare &) = delete;
    struct State;
    State *state() const { return state_.get(); }

private:
    std::unique_ptr<State> state_;
};

// Whether new Forward passes hand their matmuls a TileShare: ADADECODE_QMATMUL_SHARE=0 in the environment turns it
// off (read once).
bool qmatmul_tile_sharing_default();

// w [n_in, n_out] (quantized, contiguous rows) times x [n_in, n_rows] (f32) -> [n_out, n_rows] f32, like
// ggml_mul_mat(w, x). Activations are quantized to 8 bits per row (blocks of 32 with an f32 scale, or of 256 for the
// K-quants), as ggml does. Only for weights with qmatmul_supports(w).
// With `packed` (a tensor holding qmatmul_pack's output for w), the kernel reads that instead of w's data.
ggml_tensor *qmatmul(ggml_context *ctx, ggml_tensor *w, ggml_tensor *x, ggml_tensor *packed = nullptr,
                     TileShare *share = nullptr);

// Several weights that multiply the same x (a layer's Q, K and V; its FFN gate and up), as one op: x [n_in, n_rows]
// -> [sum of the weights' n_out, n_rows], each output row holding the first weight's outputs, then the second's, and
// so on. Each output is bitwise what qmatmul gives for its weight alone; what it saves is quantizing x once per op
// rather than once per weight, and the threads' synchronisation between the products. 1 to 4 weights, each with
// qmatmul_supports, the same n_in, and its packed copy or nullptr in `packed`; x 2-d.
ggml_tensor *qmatmul_fused(ggml_context *ctx, const std::vector<ggml_tensor *> &weights, ggml_tensor *x,
                           const std::vector<ggml_tensor *> &packed, TileShare *share = nullptr);

// Multiply-accumulates per second that the integer dot-product instruction of the chosen kernel family sustains on
// one core (measured when called, ~0.1 s; 0 where the kernel is off). A batched pass cannot cost less per extra row
// than the row's multiply-accumulates at this rate: the floor under the layer-parallel scheduler's batches.
double qmatmul_peak_macs_per_second();

// The kernel family this process multiplies with: "avx512vnni", "avx512", "avxvnni" (AVX2 with AVX-VNNI), "avx2"
// (x86-64), "neondot" (aarch64 with the ARMv8.2 dot product), "neon" (any aarch64), or "off" (ggml's matmul: another
// architecture, x86-64 without AVX2, or ADADECODE_QMATMUL=0). Chosen once at start-up, the widest the CPU has unless
// ADADECODE_QMATMUL names one. (A weight an AVX-512 family cannot take, e.g. rows of an odd number of blocks, still
// goes to the AVX2 kernel.)
const char *qmatmul_family();

// Two activation rows go through the two-row kernel (2, the default) or through the three-row one with the second
// row repeated (3): the same bits either way (see Exactness), but which is faster depends on the machine. In the
// 1.5B's whole pass on Zen 4 under KVM (adadecode-microbench, 2 threads) a process's one-row pass took ~29 ms
// (weights streamed at ~34 GB/s) or ~20 ms (~50 GB/s) from one run to the next; two rows cost 1.03-1.07 of one row
// with the two-row kernel in the first kind of process and 1.13-1.22 in the second, the three-row kernel the other
// way round (1.11-1.14, 1.02-1.08). But two-row passes are a small part of adadecode's decoding (most passes are
// one-row segments up to an exit check), and end to end the widths came out within the run-to-run noise (width 3
// over width 2: 0.986-1.038 in four processes, bench/results/roofline/two-row-kernel-2026-12-06), so 2 is the
// default and no time is spent choosing; ADADECODE_QMATMUL_TWO_ROWS=3 in the environment (read once) or
// qmatmul_set_two_row_kernel picks the other. Returns the width in use (always 2 where the kernel is off).
int qmatmul_two_row_kernel();

// Sets the width (2 or 3; anything else throws std::invalid_argument). No effect where the kernel is off.
void qmatmul_set_two_row_kernel(int width);

// From how many activation rows the x86 packed kernels prefetch their weights ahead of the stream: 1 on Intel CPUs,
// 3 on others (on Zen 4 the hardware prefetcher serves one row at full speed and software prefetches slowed it; on
// an Intel Xeon one and two rows were a third slower without them). ADADECODE_QMATMUL_PREFETCH_ROWS=N (1-9) in the
// environment sets it, read once. 0 where no kernel of ours prefetches this way (aarch64, the kernel off).
int qmatmul_prefetch_min_rows();

// How the AVX-512 VNNI Q4_K kernel applies the sub-block scales: "dpwssd" (the default on Intel CPUs) or "mulld"
// (elsewhere); ADADECODE_QMATMUL_Q4K_SCALE=dpwssd|mulld in the environment sets it, read once. The results are the
// same bits either way. "" where that kernel is not the one in use.
const char *qmatmul_q4_k_scale();

// How the VNNI Q4_K kernels (AVX-512 and AVX-VNNI) take the high nibbles of the weights: "gfni" (one instruction; the
// default on Intel CPUs with GFNI) or "shift" (a shift and a mask); ADADECODE_QMATMUL_GFNI=1|0 in the environment sets
// it, read once. The same bits either way. "" where neither kernel is in use.
const char *qmatmul_q4_k_high_nibbles();

// Packing: Q4_K, Q6_K, Q5_0, Q8_0 and Q4_1 weights multiply faster from layouts of our own that interleave 16 weight
// rows (AVX-512: Q4_K about 1.5x for one row, 3 % larger than the file's layout; Q6_K: 2x for several rows; Q5_0:
// 4-5x for one row or several; Q8_0: 1.8x for 4-8 rows; all but Q4_K the file's size exactly. AVX2, measured on Zen 4
// running the AVX2 family, 4-8 rows: Q5_0 1.85x, Q4_K and Q6_K 1.7x, Q8_0 1.2-1.4x; one row 1.2-2.3x). The model
// loader copies those weights into them once. qmatmul_packs(w): w can be packed here (one of those types, rows a
// multiple of 16, a kernel family other than off, and ADADECODE_QMATMUL_PACK is not 0). qmatmul_pack writes
// qmatmul_packed_size(w) bytes to dst from w's bytes in the file layout. Results are bitwise the same for any batch, as
// with the file layout (but not equal to it), and the same in every family: the AVX2 packed kernels do the AVX-512
// ones' exact integer sums and float operations on 8 of the 16 rows at a time, the NEON ones on 4 (qmatmul_neon.inc).
// In the file layout the NEON families equal the AVX2 one bitwise (test_qmatmul checks both against x86 checksums).
bool qmatmul_packs(const ggml_tensor *w);
size_t qmatmul_packed_size(const ggml_tensor *w);
void qmatmul_pack(const ggml_tensor *w, const void *file_data, void *dst);

}  // namespace adadecode
