// ak_epilogue.cuh — the contract's GEMM epilogue, spelled once for every kernel of ak_gemm.cu (gemm_kernel,
// gemv_kernel with its in-kernel split combine, combine_kernel). C++ device code only.
// Source: NUMERICS.md "Integer GEMM with group scales" (acc = fmaf((float)p, float(sx)·float(sw), acc)
// per group in ascending K; y = fp16_rne(acc)), "Mixed granularity" (P = Σ u·p in int32, y =
// fp16_rne((float)P · (float(sx)·float(S)))), "Atom-style" (the outlier part is one more group), and
// quant/NUMERICS.md clarifications 3 (split-K: ((acc_0 + acc_1) + acc_2)…, empty splits skipped, the
// Atom outlier group in the last split) and 4 ((float)p is round-to-nearest: __int2float_rn).
// Every fp32 operation is an explicit _rn intrinsic (one rounding, never contracted).
#ifndef APEX4_AK_EPILOGUE_CUH
#define APEX4_AK_EPILOGUE_CUH

#include <cuda_fp16.h>

#define AK_EPI_DEVI __device__ __forceinline__

// Exact int -> float for |p| <= 2^22 (4-bit groups up to 65536 codes): bits(p + 0x4B400000) - 1.5·2^23,
// two full-rate ops instead of I2F. Equal to __int2float_rn(p) in that range (both exact).
AK_EPI_DEVI float ak_i2f_small(int p) { return __fsub_rn(__int_as_float(p + 0x4B400000), 12582912.0f); }

// One group of a GROUP/ATOM part: acc = fmaf(float(p), float(sx)·float(sw), acc), with pf = float(p)
// already converted (ak_epi_pf, or the caller's own branch on the code width).
AK_EPI_DEVI float ak_epi_group_f(float pf, float sx, float sw, float acc) { return __fmaf_rn(pf, __fmul_rn(sx, sw), acc); }
// float(p): b4 (4-bit codes, |p| <= 2^22): the exact magic conversion; 8-bit: __int2float_rn (RN also
// beyond 2^24).
AK_EPI_DEVI float ak_epi_pf(int p, bool b4) { return b4 ? ak_i2f_small(p) : __int2float_rn(p); }
AK_EPI_DEVI float ak_epi_group(int p, bool b4, float sx, float sw, float acc) {
    return ak_epi_group_f(ak_epi_pf(p, b4), sx, sw, acc);
}

// Single-group modes with the exact int32 split: the partial P is kept as raw int bits in the fp32
// accumulator register (no extra array): P += p.
AK_EPI_DEVI float ak_epi_isplit_add(float acc_bits, int p) { return __int_as_float(__float_as_int(acc_bits) + p); }

// MIXED: P += u·p (int32, exact).
AK_EPI_DEVI int ak_epi_mixed_add(int P, int u, int p) { return P + u * p; }

// Output of an exact int32 sum P with one scale pair: MIXED y = float(P)·(sx·S); single-group GROUP
// (an integer-split combine) y = fmaf(float(P), sx·sw, 0), which is the group epilogue from acc = 0.
AK_EPI_DEVI float ak_epi_int_out(int P, float sx, float sw, bool mixed) {
    const float sig = __fmul_rn(sx, sw);
    return mixed ? __fmul_rn(__int2float_rn(P), sig) : __fmaf_rn(__int2float_rn(P), sig, 0.0f);
}

// Group split: does split s (of S over G main groups) hold anything? Empty splits are skipped, except
// the last one when ATOM's outlier part (nparts > 1) lives there.
AK_EPI_DEVI bool ak_split_live(int s, int S, int G, int nparts) {
    const int c = (G + S - 1) / S;
    return s * c < G || (s == S - 1 && nparts > 1);
}

// Combine of group-split partials: y = y + acc_s in split order.
AK_EPI_DEVI float ak_split_add(float y, float acc_s) { return __fadd_rn(y, acc_s); }

// Benchmark-only rho emulation (apex4 bench rho, kernels/ak_emul.cu): XOPS extra dependent fp32
// operations on a group's accumulator, acc = fmaf(acc, one, -0.0f) each, with one == 1.0f known only
// at run time (ak_epi_one), so they are neither folded away nor change a bit (x·1 + (-0) == x for every
// x, ±0 included). XOPS = 0, the value of every production kernel, adds nothing.
template <int XOPS> AK_EPI_DEVI float ak_epi_extra(float acc, float one) {
#pragma unroll
    for (int i = 0; i < XOPS; i++) acc = __fmaf_rn(acc, one, -0.0f);
    return acc;
}
// 1.0f from a launch argument (M < 2^30 always), opaque to the compiler.
AK_EPI_DEVI float ak_epi_one(int M) { return __int_as_float(0x3f800000 + (M >> 30)); }

#endif
