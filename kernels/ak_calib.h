/* ak_calib.h — the Atom calibration's reduction on the GPU (prefix ak_ops_, on an ak_ops context):
 * per-column sums of squares of an fp16 activation matrix accumulated in double, for the channel
 * order of NUMERICS.md "Atom-style W4Ax" (Atom, Zhao et al. 2024, §4.1: channels reordered by Σx²
 * over calibration data). Implemented in kernels/ak_calib.cu; a build without CUDA (make CUDA=0)
 * links kernels/ak_calib_nocuda.c, where the call fails with "built without CUDA". */
#ifndef APEX4_AK_CALIB_H
#define APEX4_AK_CALIB_H

#include <stdint.h>
#include "ak_ops.h"

/* acc[c] += Σ_{t=0..T-1} x[t, c]² for c < width, x [T, ld] fp16 bits (DEVICE), acc [width] float64
 * (DEVICE). Each square is formed exactly (fp16 -> double, d·d: 22 significant bits) and added to a
 * double running sum that starts at acc[c], rows in order t = 0, 1, ..., T-1 (one thread per column,
 * no atomics): the result is the host loop `for t: acc[c] += (double)x[t,c] * (double)x[t,c]` bit
 * for bit, independent of the launch shape and of the GPU. Enqueued on ak_ops_stream(o) (in order
 * with the context's ops), returns without waiting; acc's device is made current first.
 * Errors (-1, err naming the argument): o / x / acc NULL, T < 1, width < 1, ld < width, a CUDA
 * launch failure; kernel execution errors surface at the next ak_ops_sync. */
int ak_ops_colsumsq(ak_ops *o, const uint16_t *x, int T, int ld, int width, double *acc, char *err);

#endif
