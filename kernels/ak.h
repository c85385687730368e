/* ak.h — apex4 CUDA kernels, host-side C API (prefix ak_). Implemented in kernels/*.cu when the
 * build has CUDA (make CUDA=1, the default when nvcc is found), by kernels/ak_nocuda.c otherwise.
 *
 * The kernels implement NUMERICS.md bit-exactly; they never re-implement the contract on the host:
 * results come back in the CPU reference's layout (quant/aq.h) so they can be compared byte for byte.
 * Errors: 0 on success, non-zero with a message in err (AX_ERR_LEN bytes) otherwise.
 */
#ifndef APEX4_AK_H
#define APEX4_AK_H

#include "aq.h"

/* Number of usable CUDA devices; 0 when the build has no CUDA or no device/driver is present. */
int ak_device_count(void);
/* One-line description of device 0 (name, SMs, compute capability), or a reason it is unavailable. */
void ak_device_describe(char *buf, size_t len);

/* GEMM implementation paths. */
typedef enum {
    AK_PATH_INT8 = 0,   /* int4 codes widened to int8 into mma.sync.m16n8k32.s8 (Hopper and all) */
    AK_PATH_INT4 = 1    /* native mma.sync.m16n8k64.s4 (sm_80/86/89; emulated on sm_90)          */
} ak_path;

/* Activation quantization on the GPU: x [M,K] fp16 (host) -> out in aq_quantize_x's layout (host,
 * caller frees with aq_qtensor_free). perm as in aq_quantize_x (ATOM). */
int ak_quantize_x(const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                  aq_qtensor *out, char *err);

/* GEMM on the GPU from host-side quantized operands (aq_quantize_* layout): y [M,N] fp16 (host). */
int ak_gemm(const aq_qtensor *qx, const aq_qtensor *qw, ak_path path, uint16_t *y, char *err);

#endif
