/* ak_calib_nocuda.c — kernels/ak_calib.h in a build without CUDA (make CUDA=0): the call fails with
 * "built without CUDA". */
#include "ak_calib.h"

#include <stdio.h>

int ak_ops_colsumsq(ak_ops *o, const uint16_t *x, int T, int ld, int width, double *acc, char *err) {
    (void)o; (void)x; (void)T; (void)ld; (void)width; (void)acc;
    if (err) snprintf(err, AX_ERR_LEN, "ak_ops_colsumsq: no CUDA device: apex4 was built without CUDA (make CUDA=0)");
    return -1;
}
