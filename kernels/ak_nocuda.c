/* ak_nocuda.c — the kernel API in a build without CUDA (make CUDA=0): no device, every call fails
 * with a clear message. */
#include "ak.h"
#include <stdio.h>

int ak_device_count(void) { return 0; }

void ak_device_describe(char *buf, size_t len) {
    snprintf(buf, len, "no CUDA device: apex4 was built without CUDA (make CUDA=0)");
}

static int nocuda(char *err) {
    if (err) snprintf(err, AX_ERR_LEN, "no CUDA device: apex4 was built without CUDA (make CUDA=0)");
    return -1;
}

int ak_quantize_x(const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                  aq_qtensor *out, char *err) {
    (void)m; (void)x; (void)M; (void)K; (void)perm; (void)out;
    return nocuda(err);
}

int ak_gemm(const aq_qtensor *qx, const aq_qtensor *qw, ak_path path, uint16_t *y, char *err) {
    (void)qx; (void)qw; (void)path; (void)y;
    return nocuda(err);
}
