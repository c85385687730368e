// ak_calib.cu — per-column sums of squares in double of fp16 activations (kernels/ak_calib.h), the
// Atom calibration's reduction (NUMERICS.md "Atom-style W4Ax"). One thread per column loops over the
// rows in order: a fixed summation order, the same as the CPU runner's `ss[k] += (double)x * x`
// (eval/forward.c site_prepare), so the result never depends on the launch or the GPU.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

extern "C" {
#include "ak_calib.h"
}

#define CAL_ERR(...)                                     \
    do {                                                 \
        if (err) snprintf(err, AX_ERR_LEN, __VA_ARGS__); \
    } while (0)

// acc[c] += Σ_t x[t, c]²: the square of an fp16 value is exact in double (11-bit significands,
// exponents within range), each add is one IEEE double rounding (__dadd_rn: never contracted).
__global__ void colsumsq_kernel(const uint16_t *__restrict__ x, int T, long ld, int width, double *__restrict__ acc) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= width) return;
    const uint16_t *p = x + c;
    double s = acc[c];
#pragma unroll 8
    for (int t = 0; t < T; t++) {
        const double v = (double)__half2float(__ushort_as_half(p[(size_t)t * (size_t)ld]));
        s = __dadd_rn(s, __dmul_rn(v, v));
    }
    acc[c] = s;
}

extern "C" int ak_ops_colsumsq(ak_ops *o, const uint16_t *x, int T, int ld, int width, double *acc, char *err) {
    if (!o) { CAL_ERR("ak_ops_colsumsq: context is NULL (ak_ops_new first)"); return -1; }
    if (!x || !acc) { CAL_ERR("ak_ops_colsumsq: %s is NULL", !x ? "x" : "acc"); return -1; }
    if (T < 1 || width < 1 || ld < width) {
        CAL_ERR("ak_ops_colsumsq: need T >= 1, width >= 1 and ld >= width (got T %d, width %d, ld %d)", T, width, ld);
        return -1;
    }
    cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, acc);
    if (e != cudaSuccess || a.type != cudaMemoryTypeDevice) {
        cudaGetLastError();
        CAL_ERR("ak_ops_colsumsq: acc is not device memory (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "host pointer");
        return -1;
    }
    e = cudaSetDevice(a.device);
    if (e != cudaSuccess) { CAL_ERR("ak_ops_colsumsq: cudaSetDevice(%d) failed: %s", a.device, cudaGetErrorString(e)); return -1; }
    const int threads = 128;
    const int blocks = (width + threads - 1) / threads;
    colsumsq_kernel<<<blocks, threads, 0, (cudaStream_t)ak_ops_stream(o)>>>(x, T, (long)ld, width, acc);
    e = cudaGetLastError();
    if (e != cudaSuccess) { CAL_ERR("ak_ops_colsumsq: launching colsumsq_kernel failed: %s", cudaGetErrorString(e)); return -1; }
    return 0;
}
