// ak_ops.cu — LLaMA forward building blocks on the GPU (kernels/ak_ops.h): embeddings, RMSNorm, RoPE,
// KV cache with 4-bit fake-quant, GQA causal attention (a simple fp32 kernel and a FlashAttention-2
// style tensor-core kernel), SwiGLU, residual adds, cuBLAS linears, fp16 conversion and the
// perplexity reductions. Sources: HF transformers modeling_llama.py (eager fp16 path), llama2.c run.c,
// FlashAttention-2 (Dao 2023) for the attention tiling, eval/forward.c and eval/ppl.c for the CPU
// evaluator's exact operations (exp polynomial, llama3 inverse frequencies, KLD formula).
//
// Numerics are written with explicit IEEE intrinsics (__fmul_rn, __fadd_rn, __fdiv_rn, ...) wherever
// the result must match a CPU formula operation by operation: nvcc contracts a*b+c into an FMA by
// default, the CPU build uses -ffp-contract=off.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cublas_v2.h>

#include "ak_reduce.cuh"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

extern "C" {
#include "ak_ops.h"
}

// ---- errors -----------------------------------------------------------------------------------------

#define OPS_ERR(...)                                              \
    do {                                                          \
        if (err) snprintf(err, AX_ERR_LEN, __VA_ARGS__);          \
    } while (0)
// A CUDA runtime call inside public function `op`; `step` says what it was doing.
#define OPS_CUDA(op, step, call)                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            OPS_ERR("%s: %s failed: %s (%s)", op, step, cudaGetErrorString(e_), cudaGetErrorName(e_)); \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)
#define OPS_LAUNCHED(op, kernel) OPS_CUDA(op, "launching " kernel, cudaGetLastError())

struct ak_ops {
    int device;
    int sms;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *scratch;          // device scratch, grows on demand (stream-ordered reuse)
    size_t scratch_bytes;
    uint16_t *rope_cos;     // [rope_max_pos, rope_half] fp16
    uint16_t *rope_sin;
    int rope_max_pos, rope_half;
    cudaEvent_t slot_ev[2];  // ak_ops_upload_async: completion of the last copy from each staging slot
};

static int begin(ak_ops *o, const char *op, char *err) {
    if (!o) { OPS_ERR("%s: context is NULL (ak_ops_new first)", op); return -1; }
    OPS_CUDA(op, "cudaSetDevice", cudaSetDevice(o->device));
    return 0;
}

static int get_scratch(ak_ops *o, size_t bytes, void **p, const char *op, char *err) {
    if (bytes > o->scratch_bytes) {
        if (o->scratch) {
            cudaStreamSynchronize(o->stream);   // earlier ops may still read it
            cudaFree(o->scratch);
            o->scratch = nullptr;
            o->scratch_bytes = 0;
        }
        size_t nb = std::max(bytes, (size_t)1 << 20);
        cudaError_t e = cudaMalloc(&o->scratch, nb);
        if (e != cudaSuccess) {
            cudaGetLastError();
            o->scratch = nullptr;
            OPS_ERR("%s: out of device memory allocating %zu bytes of scratch (%s)", op, nb, cudaGetErrorString(e));
            return -1;
        }
        o->scratch_bytes = nb;
    }
    *p = o->scratch;
    return 0;
}

static unsigned grid_for(const ak_ops *o, size_t n, int block) {
    size_t g = (n + (size_t)block - 1) / (size_t)block;
    size_t cap = (size_t)o->sms * 32;
    if (g > cap) g = cap;
    if (g < 1) g = 1;
    return (unsigned)g;
}

// ---- device helpers ------------------------------------------------------------------------------

__device__ __forceinline__ float h2f(uint16_t b) { return __half2float(__ushort_as_half(b)); }
__device__ __forceinline__ uint16_t f2h(float f) { return __half_as_ushort(__float2half_rn(f)); }
// fp16 rounding of an fp32 value, back in fp32
__device__ __forceinline__ float r16(float f) { return __half2float(__float2half_rn(f)); }

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
    return v;
}
__device__ __forceinline__ float warp_max_f(float v) {
    for (int s = 16; s > 0; s >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, s));
    return v;
}

// Block-wide sums (blockDim.x a multiple of 32, <= 1024); every thread gets the result. fp32:
// ak_block_sum_f (ak_reduce.cuh, shared with the fused RMSNorm + quantizer).
__device__ double block_sum_d(double v, double *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    double t = lane < nw ? sh[lane] : 0.0;
    return warp_sum_d(t);
}
// (value, index) maximum with ties to the lowest index; NaN never wins (comparisons are false).
__device__ __forceinline__ void amax_combine(float &v, int &i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i) || (v != v && v2 == v2)) { v = v2; i = i2; }
}
__device__ void block_argmax(float &v, int &i, float *shv, int *shi) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int s = 16; s > 0; s >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, s);
        int i2 = __shfl_xor_sync(0xffffffffu, i, s);
        amax_combine(v, i, v2, i2);
    }
    __syncthreads();
    if (lane == 0) { shv[w] = v; shi[w] = i; }
    __syncthreads();
    v = lane < nw ? shv[lane] : -INFINITY;
    i = lane < nw ? shi[lane] : 0x7fffffff;
    for (int s = 16; s > 0; s >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, s);
        int i2 = __shfl_xor_sync(0xffffffffu, i, s);
        amax_combine(v, i, v2, i2);
    }
}

// ---- conversion --------------------------------------------------------------------------------------

__global__ void to_f16_kernel(int src_type, const void *src, size_t n, uint16_t *dst,
                              unsigned long long *first_bad) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint16_t h;
        if (src_type == AK_OPS_F16) {
            h = ((const uint16_t *)src)[i];
        } else {
            float f = src_type == AK_OPS_F32 ? ((const float *)src)[i]
                                             : __uint_as_float((uint32_t)((const uint16_t *)src)[i] << 16);
            h = f2h(f);   // RNE, overflow to inf, NaN stays NaN (aq_f32_to_f16)
        }
        if ((h & 0x7c00u) == 0x7c00u) atomicMin(first_bad, (unsigned long long)i);
        dst[i] = h;
    }
}

extern "C" int ak_ops_to_f16(ak_ops *o, ak_ops_dtype src_type, const void *src, size_t n, uint16_t *dst,
                             const char *what, char *err) {
    const char *op = "ak_ops_to_f16";
    if (begin(o, op, err)) return -1;
    if (!what) what = "tensor";
    if (src_type != AK_OPS_F32 && src_type != AK_OPS_BF16 && src_type != AK_OPS_F16) {
        OPS_ERR("%s: %s: unknown source dtype %d", op, what, (int)src_type);
        return -1;
    }
    if (n == 0) return 0;
    if (!src || !dst) { OPS_ERR("%s: %s: %s pointer is NULL", op, what, !src ? "source" : "destination"); return -1; }
    void *s;
    if (get_scratch(o, sizeof(unsigned long long), &s, op, err)) return -1;
    unsigned long long init = ~0ULL, bad = 0;
    OPS_CUDA(op, "writing the error flag", cudaMemcpyAsync(s, &init, sizeof init, cudaMemcpyHostToDevice, o->stream));
    to_f16_kernel<<<grid_for(o, n, 256), 256, 0, o->stream>>>((int)src_type, src, n, dst, (unsigned long long *)s);
    OPS_LAUNCHED(op, "to_f16_kernel");
    OPS_CUDA(op, "reading the error flag", cudaMemcpyAsync(&bad, s, sizeof bad, cudaMemcpyDeviceToHost, o->stream));
    OPS_CUDA(op, "synchronizing", cudaStreamSynchronize(o->stream));
    if (bad != ~0ULL) {
        OPS_ERR("%s: %s: value at flat index %llu is NaN/inf or overflows fp16 (|v| > 65504 after rounding)",
                op, what, bad);
        return -1;
    }
    return 0;
}

// ---- context -----------------------------------------------------------------------------------------

extern "C" int ak_ops_new(int device, ak_ops **out, char *err) {
    const char *op = "ak_ops_new";
    if (!out) { OPS_ERR("%s: out is NULL", op); return -1; }
    *out = nullptr;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        cudaGetLastError();
        OPS_ERR("%s: no CUDA device (%s)", op, e != cudaSuccess ? cudaGetErrorString(e) : "device count 0");
        return -1;
    }
    if (device < 0 || device >= n) { OPS_ERR("%s: device %d outside [0, %d)", op, device, n); return -1; }
    ak_ops *o = (ak_ops *)calloc(1, sizeof *o);
    if (!o) { OPS_ERR("%s: out of host memory", op); return -1; }
    o->device = device;
    e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&o->sms, cudaDevAttrMultiProcessorCount, device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&o->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&o->slot_ev[0], cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&o->slot_ev[1], cudaEventDisableTiming);
    if (e != cudaSuccess) {
        OPS_ERR("%s: device %d (stream / event creation): %s", op, device, cudaGetErrorString(e));
        for (int i = 0; i < 2; i++)
            if (o->slot_ev[i]) cudaEventDestroy(o->slot_ev[i]);
        if (o->stream) cudaStreamDestroy(o->stream);
        free(o);
        return -1;
    }
    cublasStatus_t bs = cublasCreate(&o->blas);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetStream(o->blas, o->stream);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        OPS_ERR("%s: cuBLAS initialisation failed: %s", op, cublasGetStatusString(bs));
        if (o->blas) cublasDestroy(o->blas);
        for (int i = 0; i < 2; i++) cudaEventDestroy(o->slot_ev[i]);
        cudaStreamDestroy(o->stream);
        free(o);
        return -1;
    }
    *out = o;
    return 0;
}

extern "C" void ak_ops_free(ak_ops *o) {
    if (!o) return;
    cudaSetDevice(o->device);
    cudaStreamSynchronize(o->stream);
    if (o->blas) cublasDestroy(o->blas);
    cudaFree(o->scratch);
    cudaFree(o->rope_cos);
    cudaFree(o->rope_sin);
    for (int i = 0; i < 2; i++)
        if (o->slot_ev[i]) cudaEventDestroy(o->slot_ev[i]);
    cudaStreamDestroy(o->stream);
    free(o);
}

extern "C" void *ak_ops_stream(const ak_ops *o) { return o ? (void *)o->stream : nullptr; }
extern "C" void *ak_ops_cublas(const ak_ops *o) { return o ? (void *)o->blas : nullptr; }

extern "C" int ak_ops_sync(ak_ops *o, char *err) {
    const char *op = "ak_ops_sync";
    if (begin(o, op, err)) return -1;
    OPS_CUDA(op, "cudaStreamSynchronize (an earlier op failed on the device)", cudaStreamSynchronize(o->stream));
    return 0;
}

extern "C" int ak_ops_alloc(ak_ops *o, size_t bytes, void **dptr, const char *what, char *err) {
    const char *op = "ak_ops_alloc";
    if (!dptr) { OPS_ERR("%s: dptr is NULL", op); return -1; }
    *dptr = nullptr;
    if (begin(o, op, err)) return -1;
    if (!what) what = "tensor";
    if (bytes == 0) { OPS_ERR("%s: %s: 0 bytes requested", op, what); return -1; }
    cudaError_t e = cudaMalloc(dptr, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *dptr = nullptr;
        OPS_ERR("%s: out of device memory allocating %zu bytes for %s (%s)", op, bytes, what, cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

extern "C" void ak_ops_dfree(ak_ops *o, void *dptr) {
    if (!o || !dptr) return;
    cudaSetDevice(o->device);
    cudaFree(dptr);   // implicitly waits for work using it
}

extern "C" int ak_ops_upload(ak_ops *o, void *dst, const void *src_host, size_t bytes, char *err) {
    const char *op = "ak_ops_upload";
    if (begin(o, op, err)) return -1;
    if (bytes == 0) return 0;
    if (!dst || !src_host) { OPS_ERR("%s: NULL %s", op, !dst ? "destination" : "source"); return -1; }
    OPS_CUDA(op, "cudaMemcpyAsync host->device", cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, o->stream));
    OPS_CUDA(op, "synchronizing", cudaStreamSynchronize(o->stream));
    return 0;
}

extern "C" int ak_ops_host_alloc(ak_ops *o, size_t bytes, void **p, const char *what, char *err) {
    const char *op = "ak_ops_host_alloc";
    if (!p) { OPS_ERR("%s: NULL result pointer", op); return -1; }
    *p = nullptr;
    if (begin(o, op, err)) return -1;
    if (bytes == 0) { OPS_ERR("%s: %s: 0 bytes", op, what ? what : "buffer"); return -1; }
    cudaError_t e = cudaHostAlloc(p, bytes, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *p = nullptr;
        OPS_ERR("%s: %s: cannot pin %zu bytes of host memory (%s)", op, what ? what : "buffer", bytes,
                cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

extern "C" void ak_ops_host_free(ak_ops *o, void *p) {
    if (!p) return;
    if (o) cudaSetDevice(o->device);
    cudaFreeHost(p);
}

extern "C" int ak_ops_upload_async(ak_ops *o, void *dst, const void *src_host, size_t bytes, int slot, char *err) {
    const char *op = "ak_ops_upload_async";
    if (begin(o, op, err)) return -1;
    if (slot < 0 || slot > 1) { OPS_ERR("%s: staging slot %d outside [0, 1]", op, slot); return -1; }
    if (bytes == 0) return 0;
    if (!dst || !src_host) { OPS_ERR("%s: NULL %s", op, !dst ? "destination" : "source"); return -1; }
    OPS_CUDA(op, "cudaMemcpyAsync host->device", cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, o->stream));
    OPS_CUDA(op, "cudaEventRecord", cudaEventRecord(o->slot_ev[slot], o->stream));
    return 0;
}

extern "C" int ak_ops_slot_wait(ak_ops *o, int slot, char *err) {
    const char *op = "ak_ops_slot_wait";
    if (begin(o, op, err)) return -1;
    if (slot < 0 || slot > 1) { OPS_ERR("%s: staging slot %d outside [0, 1]", op, slot); return -1; }
    OPS_CUDA(op, "cudaEventSynchronize", cudaEventSynchronize(o->slot_ev[slot]));
    return 0;
}

extern "C" int ak_ops_download(ak_ops *o, void *dst_host, const void *src, size_t bytes, char *err) {
    const char *op = "ak_ops_download";
    if (begin(o, op, err)) return -1;
    if (bytes == 0) return 0;
    if (!dst_host || !src) { OPS_ERR("%s: NULL %s", op, !dst_host ? "destination" : "source"); return -1; }
    OPS_CUDA(op, "cudaMemcpyAsync device->host", cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, o->stream));
    OPS_CUDA(op, "synchronizing", cudaStreamSynchronize(o->stream));
    return 0;
}

extern "C" int ak_ops_zero(ak_ops *o, void *dptr, size_t bytes, char *err) {
    const char *op = "ak_ops_zero";
    if (begin(o, op, err)) return -1;
    if (bytes == 0) return 0;
    if (!dptr) { OPS_ERR("%s: NULL pointer", op); return -1; }
    OPS_CUDA(op, "cudaMemsetAsync", cudaMemsetAsync(dptr, 0, bytes, o->stream));
    return 0;
}

// ---- embeddings --------------------------------------------------------------------------------------

__global__ void embed_kernel(const int32_t *tok, int T, const uint16_t *table, int dim, uint16_t *x) {
    for (int t = blockIdx.y; t < T; t += gridDim.y)
        for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < dim; d += gridDim.x * blockDim.x)
            x[(size_t)t * dim + d] = table[(size_t)tok[t] * dim + d];
}

extern "C" int ak_ops_embed(ak_ops *o, const int32_t *tokens, int T, const uint16_t *table, int vocab, int dim,
                            uint16_t *x, char *err) {
    const char *op = "ak_ops_embed";
    if (begin(o, op, err)) return -1;
    if (T < 1 || dim < 1 || vocab < 1) { OPS_ERR("%s: T = %d, dim = %d, vocab = %d: each must be >= 1", op, T, dim, vocab); return -1; }
    if (!tokens || !table || !x) { OPS_ERR("%s: NULL %s", op, !tokens ? "tokens" : !table ? "table" : "x"); return -1; }
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= vocab) {
            OPS_ERR("%s: token %d at index %d is outside the vocabulary [0, %d)", op, tokens[t], t, vocab);
            return -1;
        }
    void *s;
    if (get_scratch(o, (size_t)T * sizeof(int32_t), &s, op, err)) return -1;
    OPS_CUDA(op, "uploading tokens", cudaMemcpyAsync(s, tokens, (size_t)T * sizeof(int32_t), cudaMemcpyHostToDevice, o->stream));
    dim3 grid((unsigned)((dim + 255) / 256), (unsigned)(T < 65535 ? T : 65535));
    embed_kernel<<<grid, 256, 0, o->stream>>>((const int32_t *)s, T, table, dim, x);
    OPS_LAUNCHED(op, "embed_kernel");
    return 0;
}

// ---- RMSNorm -----------------------------------------------------------------------------------------

template <bool ADD>
__global__ void __launch_bounds__(256) rmsnorm_kernel(uint16_t *x, const uint16_t *r, const uint16_t *w, int dim,
                                                      float eps, uint16_t *out) {
    __shared__ float sh[32];
    size_t row = blockIdx.x;
    uint16_t *xr = x + row * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v;
        if (ADD) {
            uint16_t h = f2h(__fadd_rn(h2f(xr[i]), h2f(r[row * dim + i])));
            xr[i] = h;
            v = h2f(h);
        } else {
            v = h2f(xr[i]);
        }
        ss = __fadd_rn(ss, __fmul_rn(v, v));
    }
    ss = ak_block_sum_f(ss, sh);
    float var = __fdiv_rn(ss, (float)dim);
    float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));
    uint16_t *orow = out + row * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float y = r16(__fmul_rn(h2f(xr[i]), inv));
        orow[i] = f2h(__fmul_rn(h2f(w[i]), y));
    }
}

// 16-byte accesses (dim a multiple of 8, 16-byte aligned rows): thread i owns chunks i, i + 256, ... of
// 8 consecutive values; per element the same operations as rmsnorm_kernel, the sum of squares grouped
// by chunk (fp32, sequential within a thread, then the block tree).
template <bool ADD>
__global__ void __launch_bounds__(256) rmsnorm8_kernel(uint16_t *x, const uint16_t *r, const uint16_t *w, int dim,
                                                       float eps, uint16_t *out) {
    __shared__ float sh[32];
    size_t row = blockIdx.x;
    uint4 *xr = reinterpret_cast<uint4 *>(x + row * dim);
    const uint4 *rr = ADD ? reinterpret_cast<const uint4 *>(r + row * dim) : nullptr;
    const int n8 = dim / 8;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < n8; c += blockDim.x) {
        uint4 xv = xr[c];
        uint16_t *x16 = reinterpret_cast<uint16_t *>(&xv);
        if (ADD) {
            uint4 rv = rr[c];
            const uint16_t *r16p = reinterpret_cast<const uint16_t *>(&rv);
#pragma unroll
            for (int e = 0; e < 8; e++) x16[e] = f2h(__fadd_rn(h2f(x16[e]), h2f(r16p[e])));
            xr[c] = xv;
        }
#pragma unroll
        for (int e = 0; e < 8; e++) { float v = h2f(x16[e]); ss = __fadd_rn(ss, __fmul_rn(v, v)); }
    }
    ss = ak_block_sum_f(ss, sh);
    float var = __fdiv_rn(ss, (float)dim);
    float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));
    uint4 *orow = reinterpret_cast<uint4 *>(out + row * dim);
    const uint4 *wr = reinterpret_cast<const uint4 *>(w);
    for (int c = threadIdx.x; c < n8; c += blockDim.x) {
        uint4 xv = xr[c], wv = wr[c], ov;
        const uint16_t *x16 = reinterpret_cast<const uint16_t *>(&xv), *w16 = reinterpret_cast<const uint16_t *>(&wv);
        uint16_t *o16 = reinterpret_cast<uint16_t *>(&ov);
#pragma unroll
        for (int e = 0; e < 8; e++) o16[e] = f2h(__fmul_rn(h2f(w16[e]), r16(__fmul_rn(h2f(x16[e]), inv))));
        orow[c] = ov;
    }
}

static bool rms8_ok(const void *x, const void *r, const void *w, const void *out, int dim) {
    return dim % 8 == 0 && ((uintptr_t)x & 15) == 0 && ((uintptr_t)r & 15) == 0 && ((uintptr_t)w & 15) == 0 &&
           ((uintptr_t)out & 15) == 0;
}

static int rmsnorm_args(const char *op, const void *x, const void *w, const void *out, int T, int dim, float eps,
                        char *err) {
    if (T < 1 || dim < 1) { OPS_ERR("%s: T = %d, dim = %d: each must be >= 1", op, T, dim); return -1; }
    if (!x || !w || !out) { OPS_ERR("%s: NULL %s", op, !x ? "x" : !w ? "weight" : "out"); return -1; }
    if (!(eps >= 0.0f) || !std::isfinite(eps)) { OPS_ERR("%s: eps %g must be finite and >= 0", op, (double)eps); return -1; }
    return 0;
}

extern "C" int ak_ops_rmsnorm(ak_ops *o, const uint16_t *x, const uint16_t *w, int T, int dim, float eps,
                              uint16_t *out, char *err) {
    const char *op = "ak_ops_rmsnorm";
    if (begin(o, op, err) || rmsnorm_args(op, x, w, out, T, dim, eps, err)) return -1;
    if (rms8_ok(x, nullptr, w, out, dim))
        rmsnorm8_kernel<false><<<T, 256, 0, o->stream>>>(const_cast<uint16_t *>(x), nullptr, w, dim, eps, out);
    else
        rmsnorm_kernel<false><<<T, 256, 0, o->stream>>>(const_cast<uint16_t *>(x), nullptr, w, dim, eps, out);
    OPS_LAUNCHED(op, "rmsnorm_kernel");
    return 0;
}

extern "C" int ak_ops_add_rmsnorm(ak_ops *o, uint16_t *x, const uint16_t *r, const uint16_t *w, int T, int dim,
                                  float eps, uint16_t *out, char *err) {
    const char *op = "ak_ops_add_rmsnorm";
    if (begin(o, op, err) || rmsnorm_args(op, x, w, out, T, dim, eps, err)) return -1;
    if (!r) { OPS_ERR("%s: NULL residual r", op); return -1; }
    if ((const void *)out == (const void *)x || (const void *)out == (const void *)r) {
        OPS_ERR("%s: out must not alias x or r", op);
        return -1;
    }
    if (rms8_ok(x, r, w, out, dim))
        rmsnorm8_kernel<true><<<T, 256, 0, o->stream>>>(x, r, w, dim, eps, out);
    else
        rmsnorm_kernel<true><<<T, 256, 0, o->stream>>>(x, r, w, dim, eps, out);
    OPS_LAUNCHED(op, "rmsnorm_kernel");
    return 0;
}

// ---- RoPE ---------------------------------------------------------------------------------------------

__global__ void rope_table_kernel(const float *inv, int half, int max_pos, uint16_t *cosT, uint16_t *sinT) {
    size_t n = (size_t)max_pos * half;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int p = (int)(i / half), j = (int)(i % half);
        float a = __fmul_rn((float)p, inv[j]);
        cosT[i] = f2h(cosf(a));
        sinT[i] = f2h(sinf(a));
    }
}

extern "C" int ak_ops_rope_init(ak_ops *o, const ak_ops_rope_cfg *c, int max_pos, char *err) {
    const char *op = "ak_ops_rope_init";
    if (begin(o, op, err)) return -1;
    if (!c) { OPS_ERR("%s: cfg is NULL", op); return -1; }
    if (c->head_dim < 2 || c->head_dim > 512 || c->head_dim % 2) {
        OPS_ERR("%s: head_dim %d must be even in 2..512", op, c->head_dim);
        return -1;
    }
    if (!(c->theta > 0.0f) || !std::isfinite(c->theta)) { OPS_ERR("%s: rope_theta %g must be finite and > 0", op, (double)c->theta); return -1; }
    if (c->llama3) {
        if (!(c->factor > 0.0f) || !(c->low_freq_factor > 0.0f) || !(c->high_freq_factor > c->low_freq_factor) ||
            c->orig_max_pos < 1) {
            OPS_ERR("%s: llama3 rope_scaling needs factor > 0, high_freq_factor > low_freq_factor > 0 and "
                    "original_max_position_embeddings > 0 (got %g, %g, %g, %d)", op, (double)c->factor,
                    (double)c->low_freq_factor, (double)c->high_freq_factor, c->orig_max_pos);
            return -1;
        }
    }
    if (max_pos < 1 || max_pos > (1 << 20)) { OPS_ERR("%s: max_pos %d outside 1..%d", op, max_pos, 1 << 20); return -1; }
    int half = c->head_dim / 2;
    // inverse frequencies exactly as eval/forward.c rope_tables (fp32 powf; llama3 in double)
    std::vector<float> inv(half);
    for (int i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)c->head_dim;
        float f = 1.0f / powf(c->theta, e);
        if (c->llama3) {
            double lf = c->low_freq_factor, hf = c->high_freq_factor, fac = c->factor;
            double old = c->orig_max_pos;
            double low_wl = old / lf, high_wl = old / hf, wl = 2.0 * M_PI / f, v = f;
            if (wl < high_wl) v = f;
            else if (wl > low_wl) v = f / fac;
            else {
                double sm = (old / wl - lf) / (hf - lf);
                v = (1.0 - sm) * f / fac + sm * f;
            }
            f = (float)v;
        }
        inv[i] = f;
    }
    if (o->rope_cos) { cudaStreamSynchronize(o->stream); cudaFree(o->rope_cos); cudaFree(o->rope_sin); }
    o->rope_cos = o->rope_sin = nullptr;
    o->rope_max_pos = o->rope_half = 0;
    size_t nb = (size_t)max_pos * half * sizeof(uint16_t);
    void *cs = nullptr, *sn = nullptr, *dinv = nullptr;
    cudaError_t e = cudaMalloc(&cs, nb);
    if (e == cudaSuccess) e = cudaMalloc(&sn, nb);
    if (e == cudaSuccess) e = cudaMalloc(&dinv, (size_t)half * sizeof(float));
    if (e != cudaSuccess) {
        cudaGetLastError();
        cudaFree(cs); cudaFree(sn); cudaFree(dinv);
        OPS_ERR("%s: out of device memory for the cos/sin table (2 x %zu bytes)", op, nb);
        return -1;
    }
    o->rope_cos = (uint16_t *)cs;
    o->rope_sin = (uint16_t *)sn;
    e = cudaMemcpyAsync(dinv, inv.data(), (size_t)half * sizeof(float), cudaMemcpyHostToDevice, o->stream);
    if (e == cudaSuccess) {
        rope_table_kernel<<<grid_for(o, (size_t)max_pos * half, 256), 256, 0, o->stream>>>((const float *)dinv, half, max_pos,
                                                                                         o->rope_cos, o->rope_sin);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaStreamSynchronize(o->stream);
    cudaFree(dinv);
    if (e != cudaSuccess) { OPS_ERR("%s: building the cos/sin table: %s", op, cudaGetErrorString(e)); return -1; }
    o->rope_max_pos = max_pos;
    o->rope_half = half;
    return 0;
}

// grid: y over tokens, x over the (head, pair) items of a token (32-bit index arithmetic)
__global__ void rope_kernel(uint16_t *q, int q_ld, int nh, uint16_t *k, int k_ld, int nkv, int T, int pos0, int half,
                            const uint16_t *cosT, const uint16_t *sinT, const int32_t *seg) {
    const int per_t = (nh + nkv) * half;
    for (int t = blockIdx.y; t < T; t += gridDim.y)
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < per_t; i += gridDim.x * blockDim.x) {
        int hh = i / half, j = i - hh * half;
        uint16_t *x = hh < nh ? q + (size_t)t * q_ld + (size_t)hh * 2 * half : k + (size_t)t * k_ld + (size_t)(hh - nh) * 2 * half;
        size_t ti = (size_t)(seg ? t - seg[t] : pos0 + t) * half + j;
        float c = h2f(cosT[ti]), s = h2f(sinT[ti]);
        float x1 = h2f(x[j]), x2 = h2f(x[j + half]);
        // q*cos + rotate_half(q)*sin, rotate_half(x) = cat(-x2, x1); each product and the sum rounded to fp16
        float lo = __fadd_rn(r16(__fmul_rn(x1, c)), r16(__fmul_rn(-x2, s)));
        float hi = __fadd_rn(r16(__fmul_rn(x2, c)), r16(__fmul_rn(x1, s)));
        x[j] = f2h(lo);
        x[j + half] = f2h(hi);
    }
}

// Two adjacent rotation pairs (j, j+1) per thread with 4-byte accesses (half even, even strides,
// 4-byte aligned pointers); the operations per element are rope_kernel's.
__global__ void rope2_kernel(uint16_t *q, int q_ld, int nh, uint16_t *k, int k_ld, int nkv, int T, int pos0, int half,
                             const uint16_t *cosT, const uint16_t *sinT, const int32_t *seg) {
    const int hp = half / 2, per_t = (nh + nkv) * hp;
    for (int t = blockIdx.y; t < T; t += gridDim.y)
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < per_t; i += gridDim.x * blockDim.x) {
        int hh = i / hp, j = 2 * (i - hh * hp);
        uint16_t *x = hh < nh ? q + (size_t)t * q_ld + (size_t)hh * 2 * half : k + (size_t)t * k_ld + (size_t)(hh - nh) * 2 * half;
        size_t ti = (size_t)(seg ? t - seg[t] : pos0 + t) * half + j;
        uint32_t cc = *reinterpret_cast<const uint32_t *>(cosT + ti), ss = *reinterpret_cast<const uint32_t *>(sinT + ti);
        uint32_t a = *reinterpret_cast<const uint32_t *>(x + j), b = *reinterpret_cast<const uint32_t *>(x + j + half);
        uint16_t lo[2], hi[2];
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float c = h2f((uint16_t)(cc >> (16 * e))), s = h2f((uint16_t)(ss >> (16 * e)));
            float x1 = h2f((uint16_t)(a >> (16 * e))), x2 = h2f((uint16_t)(b >> (16 * e)));
            lo[e] = f2h(__fadd_rn(r16(__fmul_rn(x1, c)), r16(__fmul_rn(-x2, s))));
            hi[e] = f2h(__fadd_rn(r16(__fmul_rn(x2, c)), r16(__fmul_rn(x1, s))));
        }
        *reinterpret_cast<uint32_t *>(x + j) = (uint32_t)lo[0] | ((uint32_t)lo[1] << 16);
        *reinterpret_cast<uint32_t *>(x + j + half) = (uint32_t)hi[0] | ((uint32_t)hi[1] << 16);
    }
}

static int rope_impl(ak_ops *o, const char *op, uint16_t *q, int q_ld, int n_heads, uint16_t *k, int k_ld, int n_kv,
                     int T, int pos0, const int32_t *seg, char *err) {
    if (begin(o, op, err)) return -1;
    if (!o->rope_cos) { OPS_ERR("%s: no cos/sin table (call ak_ops_rope_init first)", op); return -1; }
    int hd = 2 * o->rope_half;
    if (!k) n_kv = 0;
    if (T < 1 || n_heads < 1 || n_kv < 0) { OPS_ERR("%s: T = %d, n_heads = %d, n_kv = %d out of range", op, T, n_heads, n_kv); return -1; }
    if (!q) { OPS_ERR("%s: q is NULL", op); return -1; }
    if ((long)q_ld < (long)n_heads * hd) { OPS_ERR("%s: q row stride %d < n_heads x head_dim = %d x %d", op, q_ld, n_heads, hd); return -1; }
    if (k && (long)k_ld < (long)n_kv * hd) { OPS_ERR("%s: k row stride %d < n_kv x head_dim = %d x %d", op, k_ld, n_kv, hd); return -1; }
    if (pos0 < 0 || (long)pos0 + T > o->rope_max_pos) {
        OPS_ERR("%s: positions %d..%ld outside the cos/sin table [0, %d) (ak_ops_rope_init max_pos)", op, pos0,
                (long)pos0 + T - 1, o->rope_max_pos);
        return -1;
    }
    const int per_t = (n_heads + n_kv) * o->rope_half;
    if (o->rope_half % 2 == 0 && q_ld % 2 == 0 && (!k || k_ld % 2 == 0) && ((uintptr_t)q & 3) == 0 &&
        ((uintptr_t)k & 3) == 0) {
        dim3 grid((unsigned)((per_t / 2 + 255) / 256), (unsigned)(T < 65535 ? T : 65535));
        rope2_kernel<<<grid, 256, 0, o->stream>>>(q, q_ld, n_heads, k, k_ld, n_kv, T, pos0, o->rope_half, o->rope_cos,
                                                  o->rope_sin, seg);
        OPS_LAUNCHED(op, "rope2_kernel");
        return 0;
    }
    dim3 grid((unsigned)((per_t + 255) / 256), (unsigned)(T < 65535 ? T : 65535));
    rope_kernel<<<grid, 256, 0, o->stream>>>(q, q_ld, n_heads, k, k_ld, n_kv, T, pos0, o->rope_half, o->rope_cos,
                                             o->rope_sin, seg);
    OPS_LAUNCHED(op, "rope_kernel");
    return 0;
}

extern "C" int ak_ops_rope(ak_ops *o, uint16_t *q, int q_ld, int n_heads, uint16_t *k, int k_ld, int n_kv, int T,
                           int pos0, char *err) {
    return rope_impl(o, "ak_ops_rope", q, q_ld, n_heads, k, k_ld, n_kv, T, pos0, nullptr, err);
}

extern "C" int ak_ops_rope_packed(ak_ops *o, uint16_t *q, int q_ld, int n_heads, uint16_t *k, int k_ld, int n_kv,
                                  int T, const int32_t *seg, char *err) {
    const char *op = "ak_ops_rope_packed";
    if (!seg) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: seg is NULL", op);
        return -1;
    }
    return rope_impl(o, op, q, q_ld, n_heads, k, k_ld, n_kv, T, 0, seg, err);
}

// ---- KV cache ------------------------------------------------------------------------------------------

// One warp: dst [n] = kv4 fake-quant of src [n] (fp16), the operations of quant/aq_quant.c
// aq_kv4_fakequant in the same order; src may equal dst (each lane rewrites only what it read).
__device__ void kv4_warp(const uint16_t *src, uint16_t *dst, int n, int lane) {
    float mn = INFINITY, mx = -INFINITY;
    int imn = 0x7fffffff, imx = 0x7fffffff, bad = 0;
    for (int i = lane; i < n; i += 32) {
        float h = h2f(src[i]);
        if (!isfinite(h)) bad = 1;
        if (h < mn) { mn = h; imn = i; }   // strict: the first in index order among equals (+0/-0)
        if (h > mx) { mx = h; imx = i; }
    }
    for (int s = 16; s > 0; s >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, mn, s), x2 = __shfl_xor_sync(0xffffffffu, mx, s);
        int i2 = __shfl_xor_sync(0xffffffffu, imn, s), j2 = __shfl_xor_sync(0xffffffffu, imx, s);
        if (m2 < mn || (m2 == mn && i2 < imn)) { mn = m2; imn = i2; }
        if (x2 > mx || (x2 == mx && j2 < imx)) { mx = x2; imx = j2; }
    }
    bad = __any_sync(0xffffffffu, bad);
    float s = 0.0f;
    if (!bad) {
        float range = __fsub_rn(mx, mn);
        s = r16(__fdiv_rn(range, 15.0f));
    }
    if (bad || s == 0.0f) {   // unchanged (the fp16 input is its own fp16 rounding)
        if (src != dst)
            for (int i = lane; i < n; i += 32) dst[i] = src[i];
        return;
    }
    double z = (double)rintf(__fdiv_rn(-mn, s));
    for (int i = lane; i < n; i += 32) {
        double q = (double)rintf(__fdiv_rn(h2f(src[i]), s)) + z;
        if (q < 0.0) q = 0.0;
        if (q > 15.0) q = 15.0;
        dst[i] = f2h(__fmul_rn(__double2float_rn(q - z), s));
    }
}

__global__ void kv4_kernel(uint16_t *x, int rows, int n) {
    long w = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (w >= rows) return;
    kv4_warp(x + (size_t)w * n, x + (size_t)w * n, n, threadIdx.x & 31);
}

__global__ void kv_store_kernel(const uint16_t *k, const uint16_t *v, int ld, int T, int pos0, int nkv, int hd, int kv4,
                                uint16_t *kc, uint16_t *vc) {
    long w = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    long nvec = (long)T * nkv;
    if (w >= 2 * nvec) return;
    int which = w >= nvec;
    long r = which ? w - nvec : w;
    int t = (int)(r / nkv), h = (int)(r % nkv);
    const uint16_t *src = (which ? v : k) + (size_t)t * ld + (size_t)h * hd;
    uint16_t *dst = (which ? vc : kc) + ((size_t)(pos0 + t) * nkv + h) * hd;
    int lane = threadIdx.x & 31;
    if (kv4) kv4_warp(src, dst, hd, lane);
    else if (hd % 8 == 0 && ((uintptr_t)src & 15) == 0 && ((uintptr_t)dst & 15) == 0)   // 16-byte copies
        for (int i = lane; i < hd / 8; i += 32) reinterpret_cast<uint4 *>(dst)[i] = reinterpret_cast<const uint4 *>(src)[i];
    else
        for (int i = lane; i < hd; i += 32) dst[i] = src[i];
}

extern "C" int ak_ops_kv4_fakequant(ak_ops *o, uint16_t *x, int rows, int n, char *err) {
    const char *op = "ak_ops_kv4_fakequant";
    if (begin(o, op, err)) return -1;
    if (rows < 1 || n < 1 || n > 4096) { OPS_ERR("%s: rows = %d (>= 1), n = %d (1..4096) out of range", op, rows, n); return -1; }
    if (!x) { OPS_ERR("%s: x is NULL", op); return -1; }
    kv4_kernel<<<(unsigned)((rows + 3) / 4), 128, 0, o->stream>>>(x, rows, n);
    OPS_LAUNCHED(op, "kv4_kernel");
    return 0;
}

extern "C" int ak_ops_kv_store(ak_ops *o, const uint16_t *k, const uint16_t *v, int ld, int T, int pos0, int n_kv,
                               int head_dim, int kv4, uint16_t *k_cache, uint16_t *v_cache, int max_seq, char *err) {
    const char *op = "ak_ops_kv_store";
    if (begin(o, op, err)) return -1;
    if (T < 1 || n_kv < 1 || head_dim < 1 || head_dim > 4096) {
        OPS_ERR("%s: T = %d, n_kv = %d (>= 1), head_dim = %d (1..4096) out of range", op, T, n_kv, head_dim);
        return -1;
    }
    if (!k || !v || !k_cache || !v_cache) {
        OPS_ERR("%s: NULL %s", op, !k ? "k" : !v ? "v" : !k_cache ? "k_cache" : "v_cache");
        return -1;
    }
    if ((long)ld < (long)n_kv * head_dim) { OPS_ERR("%s: k/v row stride %d < n_kv x head_dim = %d x %d", op, ld, n_kv, head_dim); return -1; }
    if (pos0 < 0 || (long)pos0 + T > max_seq) {
        OPS_ERR("%s: positions %d..%ld exceed the cache's max_seq %d", op, pos0, (long)pos0 + T - 1, max_seq);
        return -1;
    }
    long warps = 2L * T * n_kv;
    kv_store_kernel<<<(unsigned)((warps + 3) / 4), 128, 0, o->stream>>>(k, v, ld, T, pos0, n_kv, head_dim, kv4 != 0,
                                                                        k_cache, v_cache);
    OPS_LAUNCHED(op, "kv_store_kernel");
    return 0;
}

// ---- attention: simple reference kernel ------------------------------------------------------------------

#define SIMPLE_MAX_D 256

// One warp per (query t, head h); 32 keys at a time: lane j scores key j0 + j (fp32 dot in d order),
// chunk max by shuffles, online rescale, then P·V with lane owning dims lane, lane+32, ...
__global__ void __launch_bounds__(128) attn_simple_kernel(const uint16_t *q, int q_ld, const uint16_t *kc,
                                                          const uint16_t *vc, int T, int pos0, int nh, int nkv, int hd,
                                                          float scale, uint16_t *out, const int32_t *seg, int kv_ld) {
    __shared__ float sq[4][SIMPLE_MAX_D];
    int wib = threadIdx.x >> 5, lane = threadIdx.x & 31;
    long w = (long)blockIdx.x * 4 + wib;
    if (w >= (long)T * nh) return;
    int t = (int)(w / nh), h = (int)(w % nh), kvh = h / (nh / nkv);
    const uint16_t *qr = q + (size_t)t * q_ld + (size_t)h * hd;
    for (int d = lane; d < hd; d += 32) sq[wib][d] = h2f(qr[d]);
    __syncwarp();
    float acc[SIMPLE_MAX_D / 32];
#pragma unroll
    for (int i = 0; i < SIMPLE_MAX_D / 32; i++) acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    int nk = pos0 + t + 1;
    size_t kstride = (size_t)kv_ld;
    const uint16_t *kb = kc + (size_t)kvh * hd, *vb = vc + (size_t)kvh * hd;
    if (seg) {   // packed: keys seg[t] .. t of the query's own sequence (pos0 == 0)
        kb += (size_t)seg[t] * kstride;
        vb += (size_t)seg[t] * kstride;
        nk = t - seg[t] + 1;
    }
    for (int j0 = 0; j0 < nk; j0 += 32) {
        int j = j0 + lane;
        float s = -INFINITY;
        if (j < nk) {
            const uint16_t *kr = kb + (size_t)j * kstride;
            float dot = 0.0f;
            for (int d = 0; d < hd; d++) dot = __fadd_rn(dot, __fmul_rn(sq[wib][d], h2f(kr[d])));
            s = __fmul_rn(dot, scale);
        }
        float mnew = fmaxf(m, warp_max_f(s));           // finite: key j0 <= pos0 + t is always valid
        float corr = expf(m - mnew);                     // 0 on the first chunk (m = -inf)
        float p = j < nk ? expf(s - mnew) : 0.0f;
        l = __fadd_rn(__fmul_rn(l, corr), ak_warp_sum_f(p));
#pragma unroll
        for (int i = 0; i < SIMPLE_MAX_D / 32; i++) acc[i] = __fmul_rn(acc[i], corr);
        int cnt = min(32, nk - j0);
        for (int jj = 0; jj < cnt; jj++) {
            float pj = __shfl_sync(0xffffffffu, p, jj);
            const uint16_t *vr = vb + (size_t)(j0 + jj) * kstride;
#pragma unroll
            for (int i = 0; i < SIMPLE_MAX_D / 32; i++) {
                int d = lane + 32 * i;
                if (d < hd) acc[i] = __fadd_rn(acc[i], __fmul_rn(pj, h2f(vr[d])));
            }
        }
        m = mnew;
    }
    float inv = __fdiv_rn(1.0f, l);
    uint16_t *orow = out + (size_t)t * nh * hd + (size_t)h * hd;
#pragma unroll
    for (int i = 0; i < SIMPLE_MAX_D / 32; i++) {
        int d = lane + 32 * i;
        if (d < hd) orow[d] = f2h(__fmul_rn(acc[i], inv));
    }
}

// ---- attention: tensor-core kernel (FlashAttention-2 style) ------------------------------------------------
//
// Block = 4 warps of one head, 16·MT query rows per warp (MT = 1: 64 rows, MT = 2: 128 rows); loops
// over 64-key tiles of the cache. Shared memory: Q [64·MT][D+8], K [64][D+8], V [64][D+8] fp16 (8
// halves of padding per row make the 8 rows of every ldmatrix 8x8 fall in distinct 16-byte bank
// groups). MT = 1 keeps the Q fragments in registers; MT = 2 reloads them from shared memory for
// every 16-wide k step (registers go to the two m16 tiles' accumulators) and uses every K and V
// fragment it loads for two mma (half the shared-memory traffic per mma, as FlashAttention-2's
// kBlockM = 128 with 4 warps). A warp skips the mma of a key tile that none of its rows sees (past
// its last row; before its first row's sequence start when packed): the tile is fully masked for it.
// Per tile: V load (cp.async) overlaps S = QKᵀ and the softmax; the next K load overlaps P·V.
// mma.m16n8k16 fragments (PTX ISA "Matrix Fragments for mma.m16n8k16"), g = lane/4, c = lane%4:
//   A (16x16 row): a0 (g, 2c..2c+1), a1 (g+8, 2c..), a2 (g, 2c+8..), a3 (g+8, 2c+8..)
//   B (16x8 col):  b0 (k = 2c..2c+1, n = g), b1 (k = 2c+8.., n = g)
//   C (16x8 f32):  c0,c1 (g, 2c..2c+1), c2,c3 (g+8, 2c..2c+1)
// The S accumulators of key tiles 2kc, 2kc+1 are exactly the A fragment of P for key chunk kc.

#define TC_BC 64

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
__device__ __forceinline__ void ldsm_x4(uint32_t *r, const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t *r, const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_h2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);   // .x (low 16 bits) = lo
    return *reinterpret_cast<uint32_t *>(&h);
}

// rows [r0, r0 + ROWS) of a [*, stride] fp16 tensor into s [ROWS][D+8]; rows >= rmax zero (128 threads).
template <int D, int ROWS>
__device__ __forceinline__ void tc_load_tile(uint16_t *s, const uint16_t *g, size_t stride, int r0, int rmax, int tid) {
    constexpr int CH = D / 8, LDS = D + 8;
    for (int c = tid; c < ROWS * CH; c += 128) {
        int r = c / CH, cc = c % CH;
        uint16_t *dst = s + r * LDS + cc * 8;
        if (r0 + r < rmax) cp_async16(dst, g + (size_t)(r0 + r) * stride + cc * 8);
        else *reinterpret_cast<uint4 *>(dst) = make_uint4(0, 0, 0, 0);
    }
}

template <int D, int MT>
__global__ void __launch_bounds__(128) attn_tc_kernel(const uint16_t *q, int q_ld, const uint16_t *kc, const uint16_t *vc,
                                                      int T, int pos0, int nh, int nkv, float scale_log2, uint16_t *out,
                                                      const int32_t *seg, int kv_ld) {
    constexpr int BR = 64 * MT, LDS = D + 8, KD = D / 16, ND = D / 8, NS = TC_BC / 8;
    constexpr bool QREG = MT == 1;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    uint16_t *sQ = reinterpret_cast<uint16_t *>(smem_raw);
    uint16_t *sK = sQ + BR * LDS;
    uint16_t *sV = sK + TC_BC * LDS;
    int ntq = (T + BR - 1) / BR;
    int qt = ntq - 1 - (int)blockIdx.x;   // the longest (last) query tiles first
    int h = blockIdx.y, kvh = h / (nh / nkv);
    int t0 = qt * BR;
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int wr0 = warp * 16 * MT;             // the warp's first row in the block
    size_t kstride = (size_t)kv_ld;
    const uint16_t *kbase = kc + (size_t)kvh * D, *vbase = vc + (size_t)kvh * D;
    int nkeys = pos0 + T;
    int kmax = min(pos0 + t0 + BR - 1, nkeys - 1);   // last key any row of the block needs
    int nkt = kmax / TC_BC + 1;
    // packed sequences (seg != nullptr, pos0 == 0): row t sees keys seg[t] .. t; seg is non-decreasing,
    // so the block's first key tile is that of its first row's sequence start
    int jfirst = seg ? seg[t0] / TC_BC : 0;
    int wfirst = pos0 + t0 + wr0, wlast = wfirst + 16 * MT - 1;   // positions of the warp's rows
    int wstart = seg ? seg[min(t0 + wr0, T - 1)] : 0;               // earliest key any of them sees

    tc_load_tile<D, BR>(sQ, q + (size_t)h * D, (size_t)q_ld, t0, T, tid);
    tc_load_tile<D, TC_BC>(sK, kbase, kstride, jfirst * TC_BC, nkeys, tid);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();

    uint32_t qf[QREG ? KD : 1][4];
    if (QREG) {
#pragma unroll
        for (int kk = 0; kk < KD; kk++) ldsm_x4(qf[kk], sQ + (wr0 + (lane & 15)) * LDS + kk * 16 + (lane >> 4) * 8);
    }

    float o[MT][ND][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int n = 0; n < ND; n++) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
    float mrow[MT][2], lrow[MT][2];
    int rstart[MT][2];                    // first key of rows g, g+8 of each m tile (packed sequences)
    int g = lane >> 2, c4 = lane & 3;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mrow[mt][r] = -INFINITY;
            lrow[mt][r] = 0.0f;
            rstart[mt][r] = seg ? seg[min(t0 + wr0 + mt * 16 + g + r * 8, T - 1)] : 0;
        }

    for (int j = jfirst; j < nkt; j++) {
        tc_load_tile<D, TC_BC>(sV, vbase, kstride, j * TC_BC, nkeys, tid);
        cp_async_commit();
        // warp-uniform: does any row of this warp see a key of tile j?
        const bool act = j * TC_BC <= wlast && (j + 1) * TC_BC > wstart;
        uint32_t pa[MT][TC_BC / 16][4];
        if (act) {
            float s[MT][NS][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int n = 0; n < NS; n++) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KD; kk++) {
                uint32_t a[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    if (QREG) {
                        a[mt][0] = qf[QREG ? kk : 0][0]; a[mt][1] = qf[QREG ? kk : 0][1];
                        a[mt][2] = qf[QREG ? kk : 0][2]; a[mt][3] = qf[QREG ? kk : 0][3];
                    } else {
                        ldsm_x4(a[mt], sQ + (wr0 + mt * 16 + (lane & 15)) * LDS + kk * 16 + (lane >> 4) * 8);
                    }
                }
#pragma unroll
                for (int jj = 0; jj < NS / 2; jj++) {
                    uint32_t b[4];
                    ldsm_x4(b, sK + (jj * 16 + (lane >> 4) * 8 + (lane & 7)) * LDS + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        mma16816(s[mt][2 * jj], a[mt], b[0], b[1]);
                        mma16816(s[mt][2 * jj + 1], a[mt], b[2], b[3]);
                    }
                }
            }
            // causal mask where the tile reaches past the warp's first row
            if ((j + 1) * TC_BC - 1 > wfirst || seg) {
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int n = 0; n < NS; n++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            int key = j * TC_BC + n * 8 + 2 * c4 + (e & 1);
                            int rp = wfirst + mt * 16 + g + (e >> 1) * 8;
                            if (key > rp || key < rstart[mt][e >> 1]) s[mt][n][e] = -INFINITY;
                        }
            }
            // online softmax, rows g (e = 0, 1) and g + 8 (e = 2, 3) of each m tile
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float mx = mrow[mt][r];
#pragma unroll
                    for (int n = 0; n < NS; n++) mx = fmaxf(mx, fmaxf(s[mt][n][2 * r], s[mt][n][2 * r + 1]));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                    float msc = mx == -INFINITY ? 0.0f : mx * scale_log2;
                    float corr = exp2f(mrow[mt][r] * scale_log2 - msc);
                    mrow[mt][r] = mx;
                    lrow[mt][r] *= corr;
#pragma unroll
                    for (int n = 0; n < ND; n++) { o[mt][n][2 * r] *= corr; o[mt][n][2 * r + 1] *= corr; }
#pragma unroll
                    for (int n = 0; n < NS; n++) {
                        float p0 = exp2f(fmaf(s[mt][n][2 * r], scale_log2, -msc));
                        float p1 = exp2f(fmaf(s[mt][n][2 * r + 1], scale_log2, -msc));
                        s[mt][n][2 * r] = p0;
                        s[mt][n][2 * r + 1] = p1;
                        lrow[mt][r] += p0 + p1;
                    }
                }
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int kc2 = 0; kc2 < TC_BC / 16; kc2++) {
                    pa[mt][kc2][0] = pack_h2(s[mt][2 * kc2][0], s[mt][2 * kc2][1]);
                    pa[mt][kc2][1] = pack_h2(s[mt][2 * kc2][2], s[mt][2 * kc2][3]);
                    pa[mt][kc2][2] = pack_h2(s[mt][2 * kc2 + 1][0], s[mt][2 * kc2 + 1][1]);
                    pa[mt][kc2][3] = pack_h2(s[mt][2 * kc2 + 1][2], s[mt][2 * kc2 + 1][3]);
                }
        }
        cp_async_wait_all();   // V_j landed
        __syncthreads();       // ... for every thread; and every warp is done reading K_j
        if (j + 1 < nkt) tc_load_tile<D, TC_BC>(sK, kbase, kstride, (j + 1) * TC_BC, nkeys, tid);
        cp_async_commit();
        if (act) {
#pragma unroll
            for (int kc2 = 0; kc2 < TC_BC / 16; kc2++) {
#pragma unroll
                for (int np = 0; np < ND / 2; np++) {
                    uint32_t b[4];
                    ldsm_x4_t(b, sV + (kc2 * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDS + np * 16 + (lane >> 4) * 8);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        mma16816(o[mt][2 * np], pa[mt][kc2], b[0], b[1]);
                        mma16816(o[mt][2 * np + 1], pa[mt][kc2], b[2], b[3]);
                    }
                }
            }
        }
        cp_async_wait_all();   // K_{j+1} landed
        __syncthreads();       // ... and every warp is done reading V_j
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float l = lrow[mt][r];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            int t = t0 + wr0 + mt * 16 + g + r * 8;
            if (t < T) {
                float inv = 1.0f / l;
                uint16_t *orow = out + (size_t)t * nh * D + (size_t)h * D;
#pragma unroll
                for (int n = 0; n < ND; n++)
                    *reinterpret_cast<uint32_t *>(orow + n * 8 + 2 * c4) =
                        pack_h2(o[mt][n][2 * r] * inv, o[mt][n][2 * r + 1] * inv);
            }
        }
}

template <int D, int MT>
static size_t tc_smem() { return (size_t)(64 * MT + 2 * TC_BC) * (D + 8) * sizeof(uint16_t); }

template <int D, int MT>
static cudaError_t tc_launch(cudaStream_t st, const uint16_t *q, int q_ld, const uint16_t *kc, const uint16_t *vc, int T,
                             int pos0, int nh, int nkv, float scale_log2, uint16_t *out, const int32_t *seg, int kv_ld) {
    size_t sm = tc_smem<D, MT>();
    cudaError_t e = cudaFuncSetAttribute(attn_tc_kernel<D, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)((T + 64 * MT - 1) / (64 * MT)), (unsigned)nh);
    attn_tc_kernel<D, MT><<<grid, 128, sm, st>>>(q, q_ld, kc, vc, T, pos0, nh, nkv, scale_log2, out, seg, kv_ld);
    return cudaGetLastError();
}

template <int D>
static cudaError_t tc_launch_mt(int mt, cudaStream_t st, const uint16_t *q, int q_ld, const uint16_t *kc,
                                const uint16_t *vc, int T, int pos0, int nh, int nkv, float scale_log2, uint16_t *out,
                                const int32_t *seg, int kv_ld) {
    return mt == 2 ? tc_launch<D, 2>(st, q, q_ld, kc, vc, T, pos0, nh, nkv, scale_log2, out, seg, kv_ld)
                   : tc_launch<D, 1>(st, q, q_ld, kc, vc, T, pos0, nh, nkv, scale_log2, out, seg, kv_ld);
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

extern "C" int ak_ops_attention_tc_ok(int head_dim, int q_ld, const void *q, const void *k_cache, const void *v_cache,
                                      const void *out) {
    if (head_dim != 32 && head_dim != 64 && head_dim != 96 && head_dim != 128) return 0;
    if (q_ld % 8) return 0;
    return aligned16(q) && aligned16(k_cache) && aligned16(v_cache) && aligned16(out);
}

static int attention_impl(ak_ops *o, const char *op, ak_attn_impl impl, const uint16_t *q, int q_ld,
                          const uint16_t *k_cache, const uint16_t *v_cache, int max_seq, int T, int pos0, int n_heads,
                          int n_kv, int head_dim, uint16_t *out, const int32_t *seg, int kv_ld, char *err) {
    if (begin(o, op, err)) return -1;
    if (kv_ld == 0) kv_ld = n_kv * head_dim;
    if ((long)kv_ld < (long)n_kv * head_dim || (kv_ld % 8 && impl >= AK_ATTN_TC)) {
        OPS_ERR("%s: K/V row stride %d < n_kv x head_dim = %d x %d (or not a multiple of 8 for the TC kernel)", op,
                kv_ld, n_kv, head_dim);
        return -1;
    }
    if (impl != AK_ATTN_AUTO && impl != AK_ATTN_SIMPLE && impl != AK_ATTN_TC && impl != AK_ATTN_TC64 &&
        impl != AK_ATTN_TC128) {
        OPS_ERR("%s: unknown implementation %d", op, (int)impl);
        return -1;
    }
    if (T < 1 || n_heads < 1 || n_kv < 1 || head_dim < 1) {
        OPS_ERR("%s: T = %d, n_heads = %d, n_kv = %d, head_dim = %d: each must be >= 1", op, T, n_heads, n_kv, head_dim);
        return -1;
    }
    if (n_heads % n_kv) { OPS_ERR("%s: n_heads %d is not a multiple of n_kv %d (GQA)", op, n_heads, n_kv); return -1; }
    if (!q || !k_cache || !v_cache || !out) {
        OPS_ERR("%s: NULL %s", op, !q ? "q" : !k_cache ? "k_cache" : !v_cache ? "v_cache" : "out");
        return -1;
    }
    if ((long)q_ld < (long)n_heads * head_dim) {
        OPS_ERR("%s: q row stride %d < n_heads x head_dim = %d x %d", op, q_ld, n_heads, head_dim);
        return -1;
    }
    if (pos0 < 0 || (long)pos0 + T > max_seq) {
        OPS_ERR("%s: query positions %d..%ld exceed the cache's max_seq %d", op, pos0, (long)pos0 + T - 1, max_seq);
        return -1;
    }
    int tc_ok = ak_ops_attention_tc_ok(head_dim, q_ld, q, k_cache, v_cache, out) && kv_ld % 8 == 0;
    if (impl >= AK_ATTN_TC && !tc_ok) {
        OPS_ERR("%s: the tensor-core kernel needs head_dim in {32, 64, 96, 128} (got %d), q row stride %% 8 == 0 "
                "(got %d) and 16-byte aligned q, k_cache, v_cache, out", op, head_dim, q_ld);
        return -1;
    }
    float scale = (float)(1.0 / sqrt((double)head_dim));
    int tc_impl = impl == AK_ATTN_TC || impl == AK_ATTN_TC64 || impl == AK_ATTN_TC128;
    if (tc_impl || (impl == AK_ATTN_AUTO && tc_ok)) {
        float sl2 = scale * 1.4426950408889634f;
        // 128-row blocks when there are enough query rows to fill them (prefill), 64 otherwise
        int mt = impl == AK_ATTN_TC64 ? 1 : impl == AK_ATTN_TC128 ? 2 : T >= AK_ATTN_TC128_MIN_T ? 2 : 1;
        cudaError_t e;
        switch (head_dim) {
        case 32: e = tc_launch_mt<32>(mt, o->stream, q, q_ld, k_cache, v_cache, T, pos0, n_heads, n_kv, sl2, out, seg, kv_ld); break;
        case 64: e = tc_launch_mt<64>(mt, o->stream, q, q_ld, k_cache, v_cache, T, pos0, n_heads, n_kv, sl2, out, seg, kv_ld); break;
        case 96: e = tc_launch_mt<96>(mt, o->stream, q, q_ld, k_cache, v_cache, T, pos0, n_heads, n_kv, sl2, out, seg, kv_ld); break;
        default: e = tc_launch_mt<128>(mt, o->stream, q, q_ld, k_cache, v_cache, T, pos0, n_heads, n_kv, sl2, out, seg, kv_ld); break;
        }
        OPS_CUDA(op, "launching attn_tc_kernel", e);
        return 0;
    }
    if (head_dim > SIMPLE_MAX_D) {
        OPS_ERR("%s: head_dim %d > %d: not taken by the simple kernel", op, head_dim, SIMPLE_MAX_D);
        return -1;
    }
    long warps = (long)T * n_heads;
    attn_simple_kernel<<<(unsigned)((warps + 3) / 4), 128, 0, o->stream>>>(q, q_ld, k_cache, v_cache, T, pos0, n_heads,
                                                                           n_kv, head_dim, scale, out, seg, kv_ld);
    OPS_LAUNCHED(op, "attn_simple_kernel");
    return 0;
}

extern "C" int ak_ops_attention(ak_ops *o, ak_attn_impl impl, const uint16_t *q, int q_ld, const uint16_t *k_cache,
                                const uint16_t *v_cache, int max_seq, int T, int pos0, int n_heads, int n_kv,
                                int head_dim, uint16_t *out, char *err) {
    return attention_impl(o, "ak_ops_attention", impl, q, q_ld, k_cache, v_cache, max_seq, T, pos0, n_heads, n_kv,
                          head_dim, out, nullptr, 0, err);
}

extern "C" int ak_ops_attention_packed(ak_ops *o, ak_attn_impl impl, const uint16_t *q, int q_ld,
                                       const uint16_t *k_cache, const uint16_t *v_cache, int max_seq, int T,
                                       const int32_t *seg, int n_heads, int n_kv, int head_dim, uint16_t *out,
                                       char *err) {
    const char *op = "ak_ops_attention_packed";
    if (!seg) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: seg is NULL", op);
        return -1;
    }
    return attention_impl(o, op, impl, q, q_ld, k_cache, v_cache, max_seq, T, 0, n_heads, n_kv, head_dim, out, seg,
                          0, err);
}

extern "C" int ak_ops_attention_prefill(ak_ops *o, ak_attn_impl impl, const uint16_t *q, int q_ld, const uint16_t *k,
                                        const uint16_t *v, int kv_ld, int T, const int32_t *seg, int n_heads, int n_kv,
                                        int head_dim, uint16_t *out, char *err) {
    return attention_impl(o, "ak_ops_attention_prefill", impl, q, q_ld, k, v, T, T, 0, n_heads, n_kv, head_dim, out, seg,
                          kv_ld, err);
}

__global__ void gather_rows_kernel(const uint16_t *src, int ld, const int32_t *rows, int n, int width, uint16_t *dst) {
    size_t total = (size_t)n * width;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / width, c = i % width;
        dst[i] = src[(size_t)rows[r] * ld + c];
    }
}

extern "C" int ak_ops_gather_rows(ak_ops *o, const uint16_t *src, int ld, const int32_t *rows, int n, int width,
                                  uint16_t *dst, char *err) {
    const char *op = "ak_ops_gather_rows";
    if (begin(o, op, err)) return -1;
    if (n < 1 || width < 1 || ld < width) { OPS_ERR("%s: n %d, width %d, ld %d out of range", op, n, width, ld); return -1; }
    if (!src || !rows || !dst) { OPS_ERR("%s: NULL pointer", op); return -1; }
    gather_rows_kernel<<<grid_for(o, (size_t)n * width, 256), 256, 0, o->stream>>>(src, ld, rows, n, width, dst);
    OPS_LAUNCHED(op, "gather_rows_kernel");
    return 0;
}

__global__ void fill_random_kernel(uint16_t *x, size_t n, uint64_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = seed + (uint64_t)i * 0x9e3779b97f4a7c15ULL;   // splitmix64 finaliser
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        x[i] = f2h((float)(z >> 40) * 0x1p-22f - 2.0f);   // [-2, 2)
    }
}

// ---- seeded virtual weights (eval/make_model.c ae_gen_normal on the device) -----------------------------

__device__ __forceinline__ uint64_t splitmix64_dev(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// One thread per Box–Muller pair p (samples 2p, 2p+1), state seed + 2p·γ, the operations of
// ae_gen_normal in double with explicit roundings (no contraction), then (float), then fp16 RNE.
__global__ void gen_normal_kernel(uint64_t seed, double stdv, size_t first, size_t n, uint16_t *dst) {
    const double two_pi = 6.283185307179586476925286766559;
    size_t p0 = first / 2, np = (first + n - 1) / 2 - p0 + 1;
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < np; k += (size_t)gridDim.x * blockDim.x) {
        size_t p = p0 + k;
        uint64_t st = seed + (uint64_t)p * 2u * 0x9E3779B97F4A7C15ull;
        double u1 = __dmul_rn(__dadd_rn((double)(splitmix64_dev(&st) >> 11), 1.0), 1.0 / 9007199254740992.0);
        double u2 = __dmul_rn(__dadd_rn((double)(splitmix64_dev(&st) >> 11), 1.0), 1.0 / 9007199254740992.0);
        double r = sqrt(__dmul_rn(-2.0, log(u1))), th = __dmul_rn(two_pi, u2);
        size_t i = 2 * p;
        if (i >= first && i < first + n) dst[i - first] = f2h((float)__dmul_rn(__dmul_rn(stdv, r), cos(th)));
        if (i + 1 >= first && i + 1 < first + n) dst[i + 1 - first] = f2h((float)__dmul_rn(__dmul_rn(stdv, r), sin(th)));
    }
}

__global__ void fill_const_kernel(uint16_t *dst, size_t n, uint16_t v) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) dst[i] = v;
}

extern "C" int ak_ops_gen_normal_f16(ak_ops *o, uint64_t tensor_seed, double stdv, size_t first, size_t n, uint16_t *dst,
                                     char *err) {
    const char *op = "ak_ops_gen_normal_f16";
    if (begin(o, op, err)) return -1;
    if (!dst || n == 0 || !(stdv >= 0) || stdv > 1e4) { OPS_ERR("%s: bad arguments (n %zu, std %g)", op, n, stdv); return -1; }
    size_t np = (first + n - 1) / 2 - first / 2 + 1;
    gen_normal_kernel<<<grid_for(o, np, 256), 256, 0, o->stream>>>(tensor_seed, stdv, first, n, dst);
    OPS_LAUNCHED(op, "gen_normal_kernel");
    return 0;
}

extern "C" int ak_ops_fill_f16(ak_ops *o, uint16_t value, size_t n, uint16_t *dst, char *err) {
    const char *op = "ak_ops_fill_f16";
    if (begin(o, op, err)) return -1;
    if (!dst || n == 0) { OPS_ERR("%s: bad arguments", op); return -1; }
    fill_const_kernel<<<grid_for(o, n, 256), 256, 0, o->stream>>>(dst, n, value);
    OPS_LAUNCHED(op, "fill_const_kernel");
    return 0;
}

extern "C" int ak_ops_bench_attention(ak_ops *o, ak_attn_impl impl, int T, int n_heads, int n_kv, int head_dim,
                                      int warmup, int runs, double *ms_median, char *err) {
    const char *op = "ak_ops_bench_attention";
    if (begin(o, op, err)) return -1;
    if (T < 1 || n_heads < 1 || n_kv < 1 || head_dim < 1 || runs < 1 || warmup < 0 || !ms_median) {
        OPS_ERR("%s: bad arguments (T %d, heads %d, kv %d, head_dim %d, warmup %d, runs %d)", op, T, n_heads, n_kv,
                head_dim, warmup, runs);
        return -1;
    }
    size_t nq = (size_t)T * n_heads * head_dim, nk = (size_t)T * n_kv * head_dim;
    uint16_t *q = nullptr, *k = nullptr, *v = nullptr, *out = nullptr;
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    std::vector<float> ms;
    int rc = -1;
    char e2[AX_ERR_LEN] = "";
    if (ak_ops_alloc(o, nq * 2, (void **)&q, "q", err) || ak_ops_alloc(o, nk * 2, (void **)&k, "k_cache", err) ||
        ak_ops_alloc(o, nk * 2, (void **)&v, "v_cache", err) || ak_ops_alloc(o, nq * 2, (void **)&out, "out", err))
        goto done;
    fill_random_kernel<<<grid_for(o, nq, 256), 256, 0, o->stream>>>(q, nq, 1);
    fill_random_kernel<<<grid_for(o, nk, 256), 256, 0, o->stream>>>(k, nk, 2);
    fill_random_kernel<<<grid_for(o, nk, 256), 256, 0, o->stream>>>(v, nk, 3);
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) {
        OPS_ERR("%s: cudaEventCreate failed", op);
        goto done;
    }
    for (int i = 0; i < warmup + runs; i++) {
        cudaEventRecord(e0, o->stream);
        if (ak_ops_attention(o, impl, q, n_heads * head_dim, k, v, T, T, 0, n_heads, n_kv, head_dim, out, e2)) {
            OPS_ERR("%s: %s", op, e2);
            goto done;
        }
        cudaEventRecord(e1, o->stream);
        if (cudaEventSynchronize(e1) != cudaSuccess) {
            OPS_ERR("%s: kernel failed: %s", op, cudaGetErrorString(cudaGetLastError()));
            goto done;
        }
        float t = 0;
        cudaEventElapsedTime(&t, e0, e1);
        if (i >= warmup) ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    *ms_median = ms[ms.size() / 2];
    rc = 0;
done:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    ak_ops_dfree(o, q); ak_ops_dfree(o, k); ak_ops_dfree(o, v); ak_ops_dfree(o, out);
    return rc;
}

// ---- SwiGLU and residual --------------------------------------------------------------------------------

// grid: y over tokens, x over the hidden columns (32-bit index arithmetic)
__global__ void swiglu_kernel(const uint16_t *gate, const uint16_t *up, int ld_in, int T, int hidden, uint16_t *out) {
    for (int t = blockIdx.y; t < T; t += gridDim.y)
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < hidden; c += gridDim.x * blockDim.x) {
        float g = h2f(gate[(size_t)t * ld_in + c]), u = h2f(up[(size_t)t * ld_in + c]);
        float silu = r16(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))));   // PyTorch silu on fp16: fp32 inside
        out[(size_t)t * hidden + c] = f2h(__fmul_rn(silu, u));
    }
}

// 8 columns per thread with 16-byte loads and stores (hidden, ld_in multiples of 8, 16-byte aligned
// pointers); every element computed with exactly the operations of swiglu_kernel.
__global__ void swiglu8_kernel(const uint16_t *gate, const uint16_t *up, int ld_in, int T, int hidden, uint16_t *out) {
    const int h8 = hidden / 8;
    for (int t = blockIdx.y; t < T; t += gridDim.y)
    for (int c8 = blockIdx.x * blockDim.x + threadIdx.x; c8 < h8; c8 += gridDim.x * blockDim.x) {
        uint4 gv = reinterpret_cast<const uint4 *>(gate + (size_t)t * ld_in)[c8];
        uint4 uv = reinterpret_cast<const uint4 *>(up + (size_t)t * ld_in)[c8];
        const uint16_t *g16 = reinterpret_cast<const uint16_t *>(&gv), *u16 = reinterpret_cast<const uint16_t *>(&uv);
        uint4 ov;
        uint16_t *o16 = reinterpret_cast<uint16_t *>(&ov);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float g = h2f(g16[e]), u = h2f(u16[e]);
            float silu = r16(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))));
            o16[e] = f2h(__fmul_rn(silu, u));
        }
        reinterpret_cast<uint4 *>(out + (size_t)t * hidden)[c8] = ov;
    }
}

extern "C" int ak_ops_swiglu(ak_ops *o, const uint16_t *gate, const uint16_t *up, int ld_in, int T, int hidden,
                             uint16_t *out, char *err) {
    const char *op = "ak_ops_swiglu";
    if (begin(o, op, err)) return -1;
    if (T < 1 || hidden < 1 || ld_in < hidden) {
        OPS_ERR("%s: T = %d, hidden = %d (>= 1), row stride %d (>= hidden) out of range", op, T, hidden, ld_in);
        return -1;
    }
    if (!gate || !up || !out) { OPS_ERR("%s: NULL %s", op, !gate ? "gate" : !up ? "up" : "out"); return -1; }
    if (out == up) { OPS_ERR("%s: out must not alias up", op); return -1; }
    if (out == gate && ld_in != hidden) { OPS_ERR("%s: in place (out == gate) needs row stride == hidden", op); return -1; }
    if (hidden % 8 == 0 && ld_in % 8 == 0 && ((uintptr_t)gate & 15) == 0 && ((uintptr_t)up & 15) == 0 &&
        ((uintptr_t)out & 15) == 0 && out != gate) {
        dim3 grid((unsigned)((hidden / 8 + 127) / 128), (unsigned)(T < 65535 ? T : 65535));
        swiglu8_kernel<<<grid, 128, 0, o->stream>>>(gate, up, ld_in, T, hidden, out);
        OPS_LAUNCHED(op, "swiglu8_kernel");
        return 0;
    }
    dim3 grid((unsigned)((hidden + 255) / 256), (unsigned)(T < 65535 ? T : 65535));
    swiglu_kernel<<<grid, 256, 0, o->stream>>>(gate, up, ld_in, T, hidden, out);
    OPS_LAUNCHED(op, "swiglu_kernel");
    return 0;
}

__global__ void add_kernel(uint16_t *x, const uint16_t *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = f2h(__fadd_rn(h2f(x[i]), h2f(y[i])));
}

extern "C" int ak_ops_add(ak_ops *o, uint16_t *x, const uint16_t *y, size_t n, char *err) {
    const char *op = "ak_ops_add";
    if (begin(o, op, err)) return -1;
    if (n < 1) { OPS_ERR("%s: n = 0", op); return -1; }
    if (!x || !y) { OPS_ERR("%s: NULL %s", op, !x ? "x" : "y"); return -1; }
    add_kernel<<<grid_for(o, n, 256), 256, 0, o->stream>>>(x, y, n);
    OPS_LAUNCHED(op, "add_kernel");
    return 0;
}

// ---- linears ----------------------------------------------------------------------------------------------

// Row-major y [T, N] = x [T, K] · W [N, K]ᵀ is column-major yᵀ [N, T] = W(col-major [K, N])ᵀ · xᵀ(col-major [K, T]).
static int linear_impl(ak_ops *o, const char *op, const uint16_t *x, int T, int K, const uint16_t *w, int N, void *y,
                       cudaDataType_t ytype, char *err) {
    if (begin(o, op, err)) return -1;
    if (T < 1 || K < 1 || N < 1) { OPS_ERR("%s: T = %d, K = %d, N = %d: each must be >= 1", op, T, K, N); return -1; }
    if (!x || !w || !y) { OPS_ERR("%s: NULL %s", op, !x ? "x" : !w ? "W" : "y"); return -1; }
    const float alpha = 1.0f, beta = 0.0f;
    cublasStatus_t s = cublasGemmEx(o->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &alpha, w, CUDA_R_16F, K, x, CUDA_R_16F,
                                    K, &beta, y, ytype, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) {
        OPS_ERR("%s: cublasGemmEx (T %d, N %d, K %d) failed: %s", op, T, N, K, cublasGetStatusString(s));
        return -1;
    }
    return 0;
}

extern "C" int ak_ops_linear(ak_ops *o, const uint16_t *x, int T, int K, const uint16_t *w, int N, uint16_t *y,
                             char *err) {
    return linear_impl(o, "ak_ops_linear", x, T, K, w, N, y, CUDA_R_16F, err);
}

extern "C" int ak_ops_linear_f32(ak_ops *o, const uint16_t *x, int T, int K, const uint16_t *w, int N, float *y,
                                 char *err) {
    return linear_impl(o, "ak_ops_linear_f32", x, T, K, w, N, y, CUDA_R_32F, err);
}

// ---- perplexity reductions ----------------------------------------------------------------------------------

// eval/forward.c exp_scalar (ae_exp_shifted), operation for operation (no FMA): bit-identical per element.
#define EXP_HI 88.7228317f
#define EXP_LO (-87.3365479f)
#define EXP_LOG2E 1.44269504088896341f
#define EXP_C1 0.693359375f
#define EXP_C2 (-2.12194440e-4f)
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

__device__ __forceinline__ float ae_exp_dev(float y) {
    if (y > EXP_HI) return INFINITY;
    if (y < EXP_LO) return 0.0f;
    float n = rintf(__fmul_rn(y, EXP_LOG2E));
    float r = __fsub_rn(y, __fmul_rn(n, EXP_C1));
    r = __fsub_rn(r, __fmul_rn(n, EXP_C2));
    float z = __fmul_rn(r, r);
    float p = __fadd_rn(__fmul_rn(EXP_P0, r), EXP_P1);
    p = __fadd_rn(__fmul_rn(p, r), EXP_P2);
    p = __fadd_rn(__fmul_rn(p, r), EXP_P3);
    p = __fadd_rn(__fmul_rn(p, r), EXP_P4);
    p = __fadd_rn(__fmul_rn(p, r), EXP_P5);
    p = __fadd_rn(__fmul_rn(p, z), r);
    p = __fadd_rn(p, 1.0f);
    if (p != p) return p;                 // NaN input
    int e = (int)n + 127;
    if (e >= 255) { e -= 1; p = __fmul_rn(p, 2.0f); }
    return __fmul_rn(p, __int_as_float(e << 23));
}

#define SCORE_BLOCK 512

// max/first argmax and lse of one row (block-wide; every thread gets the results)
__device__ void row_lse(const float *l, int V, float *shv, int *shi, double *shd, float *mx_out, int *am_out, double *lse_out) {
    float mx = -INFINITY;
    int am = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        if (l[i] > mx || (am == 0x7fffffff && l[i] == l[i])) { mx = l[i]; am = i; }
    block_argmax(mx, am, shv, shi);
    if (am == 0x7fffffff) am = 0;   // all NaN: the CPU's max_arg keeps index 0
    double s = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += (double)ae_exp_dev(__fsub_rn(l[i], mx));
    s = block_sum_d(s, shd);
    *mx_out = mx;
    *am_out = am;
    *lse_out = (double)mx + log(s);
}

__global__ void __launch_bounds__(SCORE_BLOCK) score_kernel(const float *lg, long ld, int V, const int32_t *tgt,
                                                            const float *ref, long ref_ld, int ref_logp, double *nll,
                                                            double *kld, int32_t *amax, int32_t *same, double *lse_out,
                                                            double *ref_lse_out) {
    __shared__ float shv[32];
    __shared__ int shi[32];
    __shared__ double shd[32];
    size_t row = blockIdx.x;
    const float *l = lg + row * ld;
    float mx;
    int am;
    double lse;
    row_lse(l, V, shv, shi, shd, &mx, &am, &lse);
    if (threadIdx.x == 0) {
        lse_out[row] = lse;
        amax[row] = am;
        nll[row] = tgt ? lse - (double)l[tgt[row]] : 0.0;
    }
    if (!ref) return;
    const float *a = ref + row * ref_ld;
    float rmx;
    int ram;
    double rlse = 0.0;
    if (ref_logp) {
        rmx = -INFINITY;
        ram = 0x7fffffff;
        for (int i = threadIdx.x; i < V; i += blockDim.x)
            if (a[i] > rmx || (ram == 0x7fffffff && a[i] == a[i])) { rmx = a[i]; ram = i; }
        block_argmax(rmx, ram, shv, shi);
        if (ram == 0x7fffffff) ram = 0;
    } else {
        row_lse(a, V, shv, shi, shd, &rmx, &ram, &rlse);
    }
    double psum = 0.0, dd = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        if (ref_logp) {
            float p = ae_exp_dev(a[i]);
            psum += (double)p;
            dd += (double)p * ((double)a[i] - ((double)l[i] - lse));
        } else {
            float lp = __double2float_rn((double)a[i] - rlse);   // eval/ppl.c ref_rows: p = exp((float)(a - lse))
            float p = ae_exp_dev(lp);
            psum += (double)p;
            dd += (double)__fmul_rn(p, __fsub_rn(a[i], l[i]));   // dot_diff: fp32 difference and product
        }
    }
    psum = block_sum_d(psum, shd);
    dd = block_sum_d(dd, shd);
    if (threadIdx.x == 0) {
        kld[row] = ref_logp ? dd : dd + (lse - rlse) * psum;
        same[row] = am == ram;
        ref_lse_out[row] = ref_logp ? psum : rlse;   // checked for finiteness on the host
    }
}

__global__ void __launch_bounds__(SCORE_BLOCK) logp_kernel(const float *lg, long ld, int V, float *logp, long logp_ld,
                                                           int32_t *amax, double *lse_out) {
    __shared__ float shv[32];
    __shared__ int shi[32];
    __shared__ double shd[32];
    size_t row = blockIdx.x;
    const float *l = lg + row * ld;
    float mx;
    int am;
    double lse;
    row_lse(l, V, shv, shi, shd, &mx, &am, &lse);
    float *out = logp + row * logp_ld;
    for (int i = threadIdx.x; i < V; i += blockDim.x) out[i] = __double2float_rn((double)l[i] - lse);
    if (threadIdx.x == 0) {
        amax[row] = am;
        lse_out[row] = lse;
    }
}

static int score_args(const char *op, const float *logits, long ld, int T, int V, char *err) {
    if (T < 1 || V < 2) { OPS_ERR("%s: T = %d (>= 1), V = %d (>= 2) out of range", op, T, V); return -1; }
    if (!logits) { OPS_ERR("%s: logits is NULL", op); return -1; }
    if (ld < V) { OPS_ERR("%s: logits row stride %ld < V = %d", op, ld, V); return -1; }
    return 0;
}

extern "C" int ak_ops_score(ak_ops *o, const float *logits, long ld, int T, int V, const int32_t *targets,
                            const float *ref, long ref_ld, ak_ops_ref_kind ref_kind, double *nll, int32_t *argmax,
                            double *kld, int32_t *same, char *err) {
    const char *op = "ak_ops_score";
    if (begin(o, op, err) || score_args(op, logits, ld, T, V, err)) return -1;
    if (ref && ref_ld < V) { OPS_ERR("%s: reference row stride %ld < V = %d", op, ref_ld, V); return -1; }
    if (ref && ref_kind != AK_OPS_REF_LOGITS && ref_kind != AK_OPS_REF_LOGP) {
        OPS_ERR("%s: unknown reference kind %d", op, (int)ref_kind);
        return -1;
    }
    if ((kld || same) && !ref) { OPS_ERR("%s: kld/same requested without reference logits", op); return -1; }
    if (nll && !targets) { OPS_ERR("%s: nll requested without targets", op); return -1; }
    if (targets)
        for (int t = 0; t < T; t++)
            if (targets[t] < 0 || targets[t] >= V) {
                OPS_ERR("%s: target %d at index %d is outside the vocabulary [0, %d)", op, targets[t], t, V);
                return -1;
            }
    // scratch: nll, kld, lse, ref_lse (double) | targets, amax, same (int32)
    size_t Tz = (size_t)T;
    void *s;
    if (get_scratch(o, Tz * (4 * sizeof(double) + 3 * sizeof(int32_t)), &s, op, err)) return -1;
    double *d_nll = (double *)s, *d_kld = d_nll + Tz, *d_lse = d_kld + Tz, *d_rlse = d_lse + Tz;
    int32_t *d_tgt = (int32_t *)(d_rlse + Tz), *d_am = d_tgt + Tz, *d_same = d_am + Tz;
    if (targets)
        OPS_CUDA(op, "uploading targets", cudaMemcpyAsync(d_tgt, targets, Tz * sizeof(int32_t), cudaMemcpyHostToDevice, o->stream));
    score_kernel<<<T, SCORE_BLOCK, 0, o->stream>>>(logits, ld, V, targets ? d_tgt : nullptr, ref, ref_ld,
                                                   ref_kind == AK_OPS_REF_LOGP, d_nll, d_kld, d_am, d_same, d_lse, d_rlse);
    OPS_LAUNCHED(op, "score_kernel");
    std::vector<double> lse(Tz), rlse(Tz), h_kld(Tz);
    OPS_CUDA(op, "reading results", cudaMemcpyAsync(lse.data(), d_lse, Tz * sizeof(double), cudaMemcpyDeviceToHost, o->stream));
    if (ref) {
        OPS_CUDA(op, "reading results", cudaMemcpyAsync(rlse.data(), d_rlse, Tz * sizeof(double), cudaMemcpyDeviceToHost, o->stream));
        OPS_CUDA(op, "reading results", cudaMemcpyAsync(h_kld.data(), d_kld, Tz * sizeof(double), cudaMemcpyDeviceToHost, o->stream));
    }
    if (nll) OPS_CUDA(op, "reading results", cudaMemcpyAsync(nll, d_nll, Tz * sizeof(double), cudaMemcpyDeviceToHost, o->stream));
    if (argmax) OPS_CUDA(op, "reading results", cudaMemcpyAsync(argmax, d_am, Tz * sizeof(int32_t), cudaMemcpyDeviceToHost, o->stream));
    if (same) OPS_CUDA(op, "reading results", cudaMemcpyAsync(same, d_same, Tz * sizeof(int32_t), cudaMemcpyDeviceToHost, o->stream));
    OPS_CUDA(op, "synchronizing (score_kernel)", cudaStreamSynchronize(o->stream));
    for (int t = 0; t < T; t++) {
        if (!std::isfinite(lse[t])) { OPS_ERR("%s: non-finite logits in row %d (log-sum-exp %g)", op, t, lse[t]); return -1; }
        if (ref && (!std::isfinite(rlse[t]) || !std::isfinite(h_kld[t]))) {
            OPS_ERR("%s: non-finite reference %s in row %d", op, ref_kind == AK_OPS_REF_LOGP ? "log-probs" : "logits", t);
            return -1;
        }
    }
    if (kld) memcpy(kld, h_kld.data(), Tz * sizeof(double));
    return 0;
}

extern "C" int ak_ops_logprobs(ak_ops *o, const float *logits, long ld, int T, int V, float *logp, long logp_ld,
                               int32_t *argmax, char *err) {
    const char *op = "ak_ops_logprobs";
    if (begin(o, op, err) || score_args(op, logits, ld, T, V, err)) return -1;
    if (!logp) { OPS_ERR("%s: logp is NULL", op); return -1; }
    if (logp_ld < V) { OPS_ERR("%s: logp row stride %ld < V = %d", op, logp_ld, V); return -1; }
    if (logp == logits && logp_ld != ld) { OPS_ERR("%s: in place needs the same row stride", op); return -1; }
    size_t Tz = (size_t)T;
    void *s;
    if (get_scratch(o, Tz * (sizeof(double) + sizeof(int32_t)), &s, op, err)) return -1;
    double *d_lse = (double *)s;
    int32_t *d_am = (int32_t *)(d_lse + Tz);
    logp_kernel<<<T, SCORE_BLOCK, 0, o->stream>>>(logits, ld, V, logp, logp_ld, d_am, d_lse);
    OPS_LAUNCHED(op, "logp_kernel");
    std::vector<double> lse(Tz);
    OPS_CUDA(op, "reading results", cudaMemcpyAsync(lse.data(), d_lse, Tz * sizeof(double), cudaMemcpyDeviceToHost, o->stream));
    if (argmax) OPS_CUDA(op, "reading results", cudaMemcpyAsync(argmax, d_am, Tz * sizeof(int32_t), cudaMemcpyDeviceToHost, o->stream));
    OPS_CUDA(op, "synchronizing (logp_kernel)", cudaStreamSynchronize(o->stream));
    for (int t = 0; t < T; t++)
        if (!std::isfinite(lse[t])) { OPS_ERR("%s: non-finite logits in row %d (log-sum-exp %g)", op, t, lse[t]); return -1; }
    return 0;
}
