// ak_cuda.cu — placeholder until the kernels land: device discovery only.
#include <cuda_runtime.h>
#include <cstdio>
extern "C" {
#include "ak.h"
}

extern "C" int ak_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); return 0; }
    return n;
}

extern "C" void ak_device_describe(char *buf, size_t len) {
    int n = ak_device_count();
    if (n == 0) { snprintf(buf, len, "no CUDA device"); return; }
    cudaDeviceProp p;
    cudaGetDeviceProperties(&p, 0);
    snprintf(buf, len, "%s, %d SMs, sm_%d%d", p.name, p.multiProcessorCount, p.major, p.minor);
}

extern "C" int ak_quantize_x(const aq_mode *, const uint16_t *, int, int, const int32_t *,
                             aq_qtensor *, char *err) {
    if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: not implemented yet");
    return -1;
}

extern "C" int ak_gemm(const aq_qtensor *, const aq_qtensor *, ak_path, uint16_t *, char *err) {
    if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: not implemented yet");
    return -1;
}
