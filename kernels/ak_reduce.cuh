// ak_reduce.cuh — the fp32 warp and block sums shared by ak_ops.cu (rmsnorm8_kernel, the row sums of
// the forward's ops) and ak_quant.cu (the fused RMSNorm + quantizer): one definition, because the fused
// kernel's normalized row must be rmsnorm8_kernel's bytes, which depend on this order of additions
// (__fadd_rn, xor-shuffle tree 16, 8, 4, 2, 1; then the per-warp partials by warp 0's lanes in the same
// tree). blockDim.x a multiple of 32, <= 1024; every thread gets the result; sh holds >= 32 floats.
#pragma once
#include <cuda_runtime.h>

static __device__ __forceinline__ float ak_warp_sum_f(float v) {
    for (int s = 16; s > 0; s >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, s));
    return v;
}
static __device__ float ak_block_sum_f(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = ak_warp_sum_f(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    float t = lane < nw ? sh[lane] : 0.0f;
    return ak_warp_sum_f(t);
}
