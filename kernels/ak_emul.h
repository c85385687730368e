/* ak_emul.h — benchmark-only rho emulation (apex4 bench rho; kernels/ak_emul.cu). Never used for results.
 *
 * The integer GEMM with k extra dependent fp32 operations per group in its epilogue (each
 * acc = fmaf(acc, 1, -0), Y unchanged bit for bit): the epilogue's CUDA-core work grows from e0 to
 * e0 + k operations per group and output while the tensor-core work stays, which is what a GPU with
 * rho' = rho·(1 + k/e0) would see (reports/speedmodel.h gives e0 per mode). Prefix ak_emul_. */
#ifndef APEX4_AK_EMUL_H
#define APEX4_AK_EMUL_H

#include "aq.h"

/* The extra-operation counts built into the kernels (INT8 path, M > 16 tile configurations). */
#define AK_EMUL_NXOPS 6
extern const int ak_emul_xops[AK_EMUL_NXOPS];   /* {0, 1, 2, 4, 8, 16} */

/* Opaque context (stream, events). Owners in pairs. Errors: no CUDA device / built without CUDA. */
typedef struct ak_emul ak_emul;
int  ak_emul_new(ak_emul **out, char *err);
void ak_emul_free(ak_emul *e);

/* Time Y [M,N] = X [M,K]·W [N,K]^T of mode (an integer GROUP or MIXED mode; the launch planner's tile
 * configuration and split for device 0, INT8 path) with xops extra fp32 operations per group:
 * `warmup` untimed runs, then `runs` runs each between CUDA events; random non-zero inputs rotated
 * over copies totalling >= 3x the L2 (as ak_bench_gemm). Writes median, min, max in ms. Errors:
 * M <= 16 with xops > 0, xops not in ak_emul_xops, ATOM modes (two parts: not emulated), unsupported
 * shape (ak_supports), out of memory, CUDA failure; "built without CUDA" in a CUDA=0 build. */
int ak_emul_gemm(ak_emul *e, const aq_mode *mode, int M, int N, int K, int xops, int warmup, int runs,
                 double *ms_median, double *ms_min, double *ms_max, char *err);

#endif
