/* ak_emul_nocuda.c — the rho-emulation API in a build without CUDA (make CUDA=0): every call fails. */
#include "ak_emul.h"
#include <stdio.h>

const int ak_emul_xops[AK_EMUL_NXOPS] = {0, 1, 2, 4, 8, 16};

static int nocuda(char *err) {
    if (err) snprintf(err, AX_ERR_LEN, "rho emulation: no CUDA device: apex4 was built without CUDA (make CUDA=0)");
    return -1;
}

int ak_emul_new(ak_emul **out, char *err) {
    *out = NULL;
    return nocuda(err);
}

void ak_emul_free(ak_emul *e) { (void)e; }

int ak_emul_gemm(ak_emul *e, const aq_mode *mode, int M, int N, int K, int xops, int warmup, int runs,
                 double *ms_median, double *ms_min, double *ms_max, char *err) {
    (void)e; (void)mode; (void)M; (void)N; (void)K; (void)xops; (void)warmup; (void)runs;
    (void)ms_median; (void)ms_min; (void)ms_max;
    return nocuda(err);
}
