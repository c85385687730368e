// ak_fill.cuh — the benchmarks' device input fills (apex4 bench gemm in ak_bench.cu, apex4 bench rho in
// ak_emul.cu): a counter hash of (index, seed), so inputs are reproducible and never all zero (the
// tensor cores and the epilogue do their full work). Benchmark inputs only, never numerics.
#ifndef APEX4_AK_FILL_CUH
#define APEX4_AK_FILL_CUH

#include <cuda_fp16.h>
#include <stdint.h>

namespace ak_fill {

__device__ __forceinline__ uint32_t hash32(uint64_t i, uint32_t seed) {
    uint32_t x = (uint32_t)i * 0x9E3779B1u ^ (uint32_t)(i >> 32) * 0x85EBCA77u ^ seed * 0xC2B2AE3Du;
    x ^= x >> 16; x *= 0x7FEB352Du; x ^= x >> 15; x *= 0x846CA68Bu; x ^= x >> 16;
    return x;
}

// Random bytes; a zero byte is replaced by 0x11 so that no code pair is all zero.
static __global__ void fill_bytes(uint8_t *p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint8_t b = (uint8_t)hash32(i, seed);
        p[i] = b ? b : 0x11;
    }
}
// Uniform fp16 in [lo, hi).
static __global__ void fill_half(__half *p, size_t n, uint32_t seed, float lo, float hi) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float u = (hash32(i, seed) >> 8) * (1.0f / 16777216.0f);
        p[i] = __float2half_rn(lo + (hi - lo) * u);
    }
}
// Sub-scales u in 1..15.
static __global__ void fill_sub(uint8_t *p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = (uint8_t)(1 + hash32(i, seed) % 15);
}

}  // namespace ak_fill

#endif
