// ak_cuda.cu — host side of the CUDA kernels (kernels/ak.h): device discovery, shape/mode checks, the
// device context (stream, device facts, split-K workspace, error-check slots), device buffers and
// device-resident quantized tensors (ak_dqt), ak_quantize_x_dev / ak_gemm_dev, and the host-to-host
// wrappers ak_quantize_x / ak_gemm / ak_gemm_ex built on them. No contract math happens here: it is all
// in ak_quant.cu / ak_wquant.cu / ak_gemm.cu (+ ak_epilogue.cuh), checked against quant/ by apex4 check
// and tests/test_gpu.c.
#include "ak_internal.cuh"

#include <cstdio>
#include <cstdlib>
#include <cstring>

extern "C" int ak_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); return 0; }
    return n;
}

extern "C" void ak_device_describe(char *buf, size_t len) {
    int n = ak_device_count();
    if (n == 0) { snprintf(buf, len, "no CUDA device (no GPU or no driver visible to this process)"); return; }
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) { snprintf(buf, len, "no CUDA device: cannot query device 0"); return; }
    snprintf(buf, len, "%s, %d SMs, sm_%d%d, %.0f MiB", p.name, p.multiProcessorCount, p.major, p.minor,
             (double)p.totalGlobalMem / 1048576.0);
}

extern "C" int ak_supports(const aq_mode *m, int K, char *err) {
    if (!m || !aq_mode_is_integer(m)) {
        if (err) snprintf(err, AX_ERR_LEN, "mode '%s' has no integer GEMM (the GPU kernels need w4a4-*, w8a8, atom-*)",
                          m ? m->name : "(null)");
        return -1;
    }
    if (m->w.bits != m->x.bits || (m->w.bits != 4 && m->w.bits != 8)) {
        if (err) snprintf(err, AX_ERR_LEN, "mode '%s': the GPU kernels need equal weight/activation bits of 4 or 8 (got w%d a%d)",
                          m->name, m->w.bits, m->x.bits);
        return -1;
    }
    if (K < 32 || K > AK_MAX_K || K % 32) {
        if (err) snprintf(err, AX_ERR_LEN, "K = %d: the GPU kernels need K a multiple of 32 in 32..%d (mode '%s')",
                          K, AK_MAX_K, m->name);
        return -1;
    }
    const aq_operand *ops[2] = {&m->w, &m->x};
    for (const aq_operand *op : ops) {   // groups (and MIXED sub-scale groups); 0 = per row
        if (op->group % 32) {
            if (err) snprintf(err, AX_ERR_LEN, "mode '%s': the GPU kernels need a group size that is a multiple of 32 (got %d)",
                              m->name, op->group);
            return -1;
        }
    }
    if (m->outliers > 0) {
        if (m->outliers % 32 || K - m->outliers < 32) {
            if (err) snprintf(err, AX_ERR_LEN, "mode '%s', K = %d: the GPU kernels need the outlier count (%d) and "
                              "K - outliers (%d) to be multiples of 32, with K - outliers >= 32",
                              m->name, K, m->outliers, K - m->outliers);
            return -1;
        }
    }
    return 0;
}

namespace {

// 0, or -1 with "op: step: CUDA message" (clears the non-sticky error state).
int cu(cudaError_t e, const char *op, const char *step, char *err) {
    if (e == cudaSuccess) return 0;
    cudaGetLastError();
    if (err) snprintf(err, AX_ERR_LEN, "%s: %s: %s", op, step, cudaGetErrorString(e));
    return -1;
}

const char *nz(const char *what, const char *dflt) { return what && *what ? what : dflt; }

// Host check that perm [K] (host memory) is a permutation of 0..K-1; -1 with "op: what: ..." otherwise.
int perm_ok(const int32_t *perm, int K, const char *op, const char *what, char *err) {
    if (!perm) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: %s: atom mode needs a channel permutation perm [%d]", op, what, K);
        return -1;
    }
    unsigned char *seen = (unsigned char *)calloc((size_t)K, 1);
    if (!seen) { if (err) snprintf(err, AX_ERR_LEN, "%s: out of memory", op); return -1; }
    for (int i = 0; i < K; i++) {
        int32_t v = perm[i];
        if (v < 0 || v >= K || seen[v]) {
            if (err) snprintf(err, AX_ERR_LEN, "%s: %s: perm is not a permutation of 0..%d: perm[%d] = %d", op, what,
                              K - 1, i, (int)v);
            free(seen);
            return -1;
        }
        seen[v] = 1;
    }
    free(seen);
    return 0;
}

}  // namespace

// ---- context --------------------------------------------------------------------------------------

int ak_ctx_use(ak_ctx *c, const char *op, char *err) {
    if (!c) { if (err) snprintf(err, AX_ERR_LEN, "%s: NULL context", op); return -1; }
    return cu(cudaSetDevice(c->f.device), op, "cudaSetDevice", err);
}

extern "C" int ak_ctx_new(int device, ak_ctx **out, char *err) {
    if (!out) { if (err) snprintf(err, AX_ERR_LEN, "ak_ctx_new: NULL output"); return -1; }
    *out = nullptr;
    const int n = ak_device_count();
    if (n < 1) { if (err) snprintf(err, AX_ERR_LEN, "ak_ctx_new: no CUDA device"); return -1; }
    if (device < 0 || device >= n) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_ctx_new: device %d out of range (%d CUDA device%s)", device, n, n == 1 ? "" : "s");
        return -1;
    }
    ak_ctx *c = (ak_ctx *)calloc(1, sizeof *c);
    if (!c) { if (err) snprintf(err, AX_ERR_LEN, "ak_ctx_new: out of memory"); return -1; }
    c->f.device = device;
    c->sync_checks = 1;
    const size_t fb = (size_t)AK_NSLOT * AK_SLOT_WORDS * sizeof(unsigned long long);
    int rc = cu(cudaSetDevice(device), "ak_ctx_new", "cudaSetDevice", err);
    if (!rc) rc = cu(cudaDeviceGetAttribute(&c->f.sms, cudaDevAttrMultiProcessorCount, device), "ak_ctx_new", "SM count", err);
    if (!rc) rc = cu(cudaDeviceGetAttribute(&c->f.cc_major, cudaDevAttrComputeCapabilityMajor, device), "ak_ctx_new", "compute capability", err);
    if (!rc) rc = cu(cudaDeviceGetAttribute(&c->f.cc_minor, cudaDevAttrComputeCapabilityMinor, device), "ak_ctx_new", "compute capability", err);
    if (!rc) rc = cu(cudaDeviceGetAttribute(&c->f.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "ak_ctx_new", "shared memory", err);
    c->f.cc = 10 * c->f.cc_major + c->f.cc_minor;
    size_t fr = 0;
    if (!rc) rc = cu(cudaMemGetInfo(&fr, &c->f.total_mem), "ak_ctx_new", "cudaMemGetInfo", err);
    if (!rc) rc = cu(cudaStreamCreateWithFlags(&c->own_st, cudaStreamNonBlocking), "ak_ctx_new", "cudaStreamCreate", err);
    c->st = c->own_st;
    if (!rc) rc = cu(cudaMalloc(&c->flags, fb), "ak_ctx_new", "cudaMalloc of the check flags", err);
    if (!rc) rc = cu(cudaMemsetAsync(c->flags, 0xFF, fb, c->st), "ak_ctx_new", "cudaMemset", err);
    if (!rc) rc = cu(cudaStreamSynchronize(c->st), "ak_ctx_new", "cudaStreamSynchronize", err);
    if (rc) { ak_ctx_free(c); return -1; }
    *out = c;
    return 0;
}

extern "C" void ak_ctx_free(ak_ctx *c) {
    if (!c) return;
    cudaSetDevice(c->f.device);
    if (c->st) cudaStreamSynchronize(c->st);
    cudaFree(c->ws);
    cudaFree(c->cnt);
    cudaFree(c->flags);
    if (c->own_st) cudaStreamDestroy(c->own_st);
    cudaGetLastError();
    free(c);
}

extern "C" void ak_ctx_set_sync_checks(ak_ctx *c, int on) { if (c) c->sync_checks = on ? 1 : 0; }

extern "C" const ak_ctx_facts *ak_ctx_info(const ak_ctx *c) { return c ? &c->f : nullptr; }

extern "C" void *ak_ctx_stream(const ak_ctx *c) { return c ? (void *)c->st : nullptr; }

extern "C" int ak_ctx_set_stream(ak_ctx *c, void *stream) {
    if (!c || cudaSetDevice(c->f.device) != cudaSuccess || cudaStreamSynchronize(c->st) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    c->st = stream ? (cudaStream_t)stream : c->own_st;
    return 0;
}

namespace {

// Message for slot s (call number seq) with device words w. `live`: nothing ran after this call, so
// its input pointers can still be read for the value (the call's own synchronous check).
void slot_message(ak_ctx *c, const ak_slot_info &in, const unsigned long long *w, bool live, char *err) {
    if (!err) return;
    char tail[64] = "";
    if (!live) snprintf(tail, sizeof tail, " (deferred check of call #%llu)", in.seq);
    const unsigned long long K = (unsigned long long)(in.K > 0 ? in.K : 1);
    if (w[1] != ~0ull) {
        int32_t v = 0;
        if (live && in.perm && cudaMemcpy(&v, in.perm + w[1], 4, cudaMemcpyDeviceToHost) == cudaSuccess)
            snprintf(err, AX_ERR_LEN, "%s: %s: perm [%d] is not a permutation of 0..%d: perm[%llu] = %d (out of range or repeated)%s",
                     in.op, in.what, in.K, in.K - 1, w[1], (int)v, tail);
        else
            snprintf(err, AX_ERR_LEN, "%s: %s: perm [%d] is not a permutation of 0..%d: perm[%llu] is out of range or repeated%s",
                     in.op, in.what, in.K, in.K - 1, w[1], tail);
    } else if (w[0] != ~0ull) {
        uint16_t v = 0;
        if (live && in.x && cudaMemcpy(&v, in.x + w[0], 2, cudaMemcpyDeviceToHost) == cudaSuccess)
            snprintf(err, AX_ERR_LEN, "%s: %s: non-finite fp16 value (0x%04x) at [%llu, %llu]%s", in.op, in.what, v,
                     w[0] / K, w[0] % K, tail);
        else
            snprintf(err, AX_ERR_LEN, "%s: %s: non-finite fp16 value at [%llu, %llu]%s", in.op, in.what, w[0] / K, w[0] % K, tail);
    } else {
        snprintf(err, AX_ERR_LEN, "%s: %s: the dequantized value at [%llu, %llu] overflows fp16 (|q·s| >= 65520)%s", in.op,
                 in.what, w[2] / K, w[2] % K, tail);
    }
    cudaGetLastError();
    (void)c;
}

}  // namespace

extern "C" int ak_ctx_check(ak_ctx *c, char *err) {
    if (ak_ctx_use(c, "ak_ctx_check", err)) return -1;
    if (cu(cudaStreamSynchronize(c->st), "ak_ctx_check", "a queued kernel failed", err)) return -1;
    const unsigned long long n = c->seq - c->first_pending;   // <= AK_NSLOT (ak_slot_open)
    if (n == 0) return 0;
    static_assert(AK_SLOT_WORDS == 4, "slot layout");
    unsigned long long w[AK_NSLOT * AK_SLOT_WORDS];
    // The pending slots as at most two contiguous ranges of the ring.
    const int s0 = (int)(c->first_pending % AK_NSLOT);
    const int n0 = (int)(n < (unsigned long long)(AK_NSLOT - s0) ? n : (unsigned long long)(AK_NSLOT - s0));
    const int n1 = (int)n - n0;
    const size_t sw = AK_SLOT_WORDS * sizeof(unsigned long long);
    if (cu(cudaMemcpy(w + (size_t)s0 * AK_SLOT_WORDS, c->flags + (size_t)s0 * AK_SLOT_WORDS, (size_t)n0 * sw,
                      cudaMemcpyDeviceToHost), "ak_ctx_check", "download of the check flags", err) ||
        (n1 > 0 && cu(cudaMemcpy(w, c->flags, (size_t)n1 * sw, cudaMemcpyDeviceToHost), "ak_ctx_check",
                      "download of the check flags", err)) ||
        cu(cudaMemsetAsync(c->flags + (size_t)s0 * AK_SLOT_WORDS, 0xFF, (size_t)n0 * sw, c->st), "ak_ctx_check", "reset", err) ||
        (n1 > 0 && cu(cudaMemsetAsync(c->flags, 0xFF, (size_t)n1 * sw, c->st), "ak_ctx_check", "reset", err)))
        return -1;
    const unsigned long long first = c->first_pending;
    c->first_pending = c->seq;
    for (unsigned long long q = first; q < first + n; q++) {
        const int s = (int)(q % AK_NSLOT);
        const unsigned long long *ws = w + (size_t)s * AK_SLOT_WORDS;
        if (ws[0] != ~0ull || ws[1] != ~0ull || ws[2] != ~0ull) {
            slot_message(c, c->info[s], ws, q + 1 == c->seq, err);
            return -1;
        }
    }
    return 0;
}

extern "C" int ak_ctx_sync(ak_ctx *c, char *err) { return ak_ctx_check(c, err); }

int ak_slot_open(ak_ctx *c, const char *op, const char *what, int K, const uint16_t *x, const int32_t *perm,
                 char *err) {
    if (c->seq - c->first_pending >= AK_NSLOT && ak_ctx_check(c, err)) return -1;   // recycle the ring
    const int s = (int)(c->seq % AK_NSLOT);
    ak_slot_info &in = c->info[s];
    snprintf(in.op, sizeof in.op, "%s", op);
    snprintf(in.what, sizeof in.what, "%s", what);
    in.K = K; in.x = x; in.perm = perm; in.seq = c->seq;
    c->seq++;
    return s;
}

int ak_slot_close(ak_ctx *c, int slot, bool force_sync, char *err) {
    (void)slot;
    if (!c->sync_checks && !force_sync) return 0;
    return ak_ctx_check(c, err);
}

// ---- device buffers -------------------------------------------------------------------------------

extern "C" int ak_dmalloc(ak_ctx *c, size_t bytes, void **out, const char *what, char *err) {
    if (!out) { if (err) snprintf(err, AX_ERR_LEN, "ak_dmalloc: NULL output"); return -1; }
    *out = nullptr;
    if (ak_ctx_use(c, "ak_dmalloc", err)) return -1;
    cudaError_t e = cudaMalloc(out, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *out = nullptr;
        if (err) snprintf(err, AX_ERR_LEN, "ak_dmalloc: %s: cudaMalloc of %zu bytes failed: %s", nz(what, "buffer"), bytes,
                          cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

extern "C" void ak_dfree(ak_ctx *c, void *p) {
    if (!p || !c) return;
    cudaSetDevice(c->f.device);
    cudaStreamSynchronize(c->st);   // calls queued on the context may still use p
    cudaFree(p);
    cudaGetLastError();
}

extern "C" int ak_upload(ak_ctx *c, void *dst, const void *src, size_t bytes, const char *what, char *err) {
    if (ak_ctx_use(c, "ak_upload", err)) return -1;
    if (!bytes) return 0;
    if (!dst || !src) { if (err) snprintf(err, AX_ERR_LEN, "ak_upload: %s: NULL pointer", nz(what, "buffer")); return -1; }
    char step[160];
    snprintf(step, sizeof step, "%s: copy of %zu bytes to the device", nz(what, "buffer"), bytes);
    return cu(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->st), "ak_upload", step, err) ||
           cu(cudaStreamSynchronize(c->st), "ak_upload", step, err) ? -1 : 0;
}

extern "C" int ak_download(ak_ctx *c, void *dst, const void *src, size_t bytes, const char *what, char *err) {
    if (ak_ctx_use(c, "ak_download", err)) return -1;
    if (!bytes) return 0;
    if (!dst || !src) { if (err) snprintf(err, AX_ERR_LEN, "ak_download: %s: NULL pointer", nz(what, "buffer")); return -1; }
    char step[160];
    snprintf(step, sizeof step, "%s: copy of %zu bytes to the host", nz(what, "buffer"), bytes);
    return cu(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->st), "ak_download", step, err) ||
           cu(cudaStreamSynchronize(c->st), "ak_download", step, err) ? -1 : 0;
}

extern "C" int ak_dmemset(ak_ctx *c, void *dst, int value, size_t bytes, const char *what, char *err) {
    if (ak_ctx_use(c, "ak_dmemset", err)) return -1;
    if (!bytes) return 0;
    if (!dst) { if (err) snprintf(err, AX_ERR_LEN, "ak_dmemset: %s: NULL pointer", nz(what, "buffer")); return -1; }
    return cu(cudaMemsetAsync(dst, value, bytes, c->st), "ak_dmemset", nz(what, "buffer"), err);
}

// ---- device quantized tensors ---------------------------------------------------------------------

namespace {

size_t dq_scale_cols(const ak_dqmat *q) { return q->sub ? 1 : (size_t)q->ngroups; }

void dqmat_free(ak_dqmat *q) {
    cudaFree(q->codes); cudaFree(q->scales); cudaFree(q->sub);
    memset(q, 0, sizeof *q);
}

int dqmat_alloc(ak_dqmat *q, int rows, int cols, int bits, int group, bool sub, const char *what, char *err) {
    memset(q, 0, sizeof *q);
    q->rows = rows; q->cols = cols; q->bits = bits; q->group = group;
    q->ngroups = (cols + group - 1) / group;
    const size_t rb = dq_row_bytes(q), nsc = (size_t)rows * (sub ? 1 : (size_t)q->ngroups);
    // Scale and sub-scale arrays are padded to a multiple of 16 bytes: the GEMM kernels copy them in
    // 4-byte words with cp.async, clipping src-size at the array's end (never reading past it), but
    // compute-sanitizer memcheck counts the whole word of such a copy as read.
    const size_t pad16 = 15;
    cudaError_t e = cudaMalloc(&q->codes, (size_t)rows * rb);
    if (e == cudaSuccess) e = cudaMalloc(&q->scales, (nsc * 2 + pad16) & ~pad16);
    if (e == cudaSuccess && sub) e = cudaMalloc(&q->sub, ((size_t)rows * (size_t)q->ngroups + pad16) & ~pad16);
    if (e != cudaSuccess) {
        cudaGetLastError();
        dqmat_free(q);
        if (err) snprintf(err, AX_ERR_LEN, "ak_dqt_alloc: %s: cudaMalloc for %d x %d codes failed: %s", what, rows, cols,
                          cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

bool dqmat_is(const ak_dqmat *q, int cols, int bits, int group, bool sub) {
    return q->cols == cols && q->bits == bits && q->group == group && q->ngroups == (cols + group - 1) / group &&
           (q->sub != nullptr) == sub && q->codes && q->scales;
}

// Does t hold mode m's X (is_w = 0) or W layout for K channels?
bool dqt_is(const ak_dqt *t, const aq_mode *m, bool is_w, int K) {
    if (strcmp(t->mode.name, m->name) || !aq_mode_same(&t->mode, m) || t->K != K) return false;
    const qlayout L = layout_of(m, is_w, K);
    if (!dqmat_is(&t->main, L.cols[0], L.bits[0], L.group[0], L.sub)) return false;
    if (L.nparts > 1) return dqmat_is(&t->outl, L.cols[1], L.bits[1], L.group[1], false);
    return t->outl.codes == nullptr && (!m->permuted || t->perm);
}

}  // namespace

extern "C" void ak_dqt_free(ak_ctx *c, ak_dqt *t) {
    if (!t) return;
    if (c) { cudaSetDevice(c->f.device); cudaStreamSynchronize(c->st); }   // queued calls may still use t
    dqmat_free(&t->main);
    dqmat_free(&t->outl);
    cudaFree(t->perm);
    cudaGetLastError();
    memset(t, 0, sizeof *t);
}

extern "C" int ak_dqt_alloc(ak_ctx *c, const aq_mode *m, int is_weight, int cap, int K, ak_dqt *out,
                            const char *what, char *err) {
    if (!out) { if (err) snprintf(err, AX_ERR_LEN, "ak_dqt_alloc: NULL output"); return -1; }
    memset(out, 0, sizeof *out);
    what = nz(what, is_weight ? "W" : "X");
    if (ak_ctx_use(c, "ak_dqt_alloc", err)) return -1;
    if (!aq_mode_is_integer(m)) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_dqt_alloc: %s: mode '%s' has no integer GEMM (quantized tensors need an integer mode)",
                          what, m ? m->name : "(null)");
        return -1;
    }
    if (cap < 1 || K < 1 || K - m->outliers < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_dqt_alloc: %s: bad shape [%d, %d] for mode '%s'", what, cap, K, m->name);
        return -1;
    }
    const qlayout L = layout_of(m, is_weight != 0, K);
    out->mode = *m;
    out->cap = cap; out->K = K; out->rows = 0;
    for (int i = 0; i < L.nparts; i++)
        if (dqmat_alloc(i ? &out->outl : &out->main, cap, L.cols[i], L.bits[i], L.group[i], i == 0 && L.sub, what, err)) {
            ak_dqt_free(c, out);
            return -1;
        }
    if (m->permuted) {
        cudaError_t e = cudaMalloc(&out->perm, (size_t)K * 4);
        if (e != cudaSuccess) {
            ak_dqt_free(c, out);
            return cu(e, "ak_dqt_alloc", "cudaMalloc of perm", err);
        }
    }
    return 0;
}

extern "C" int ak_dqt_upload(ak_ctx *c, const aq_qtensor *src, ak_dqt *out, const char *what, char *err) {
    if (!out) { if (err) snprintf(err, AX_ERR_LEN, "ak_dqt_upload: NULL output"); return -1; }
    memset(out, 0, sizeof *out);
    what = nz(what, "tensor");
    if (!src || src->rows < 1 || src->K < 1 || !src->main.codes || !src->main.scales || !aq_mode_is_integer(&src->mode)) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_dqt_upload: %s: empty quantized tensor or non-integer mode", what);
        return -1;
    }
    const bool is_w = src->main.sub != nullptr;
    const qlayout L = layout_of(&src->mode, is_w, src->K);
    const aq_qmat *parts[2] = {&src->main, &src->outl};
    bool ok = (src->outl.rows > 0) == (L.nparts > 1) && (!src->mode.permuted || src->perm);
    for (int i = 0; ok && i < L.nparts; i++) {
        const aq_qmat *q = parts[i];
        ok = q->rows == src->rows && q->cols == L.cols[i] && q->bits == L.bits[i] && q->group == L.group[i] &&
             q->ngroups == (L.cols[i] + L.group[i] - 1) / L.group[i] && q->codes && q->scales;
    }
    if (!ok) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_dqt_upload: %s: the tensor's layout is not mode '%s''s %s layout for K = %d",
                          what, src->mode.name, is_w ? "weight" : "activation", src->K);
        return -1;
    }
    if (src->mode.permuted && perm_ok(src->perm, src->K, "ak_dqt_upload", what, err)) return -1;
    if (ak_dqt_alloc(c, &src->mode, is_w, src->rows, src->K, out, what, err)) return -1;
    int rc = 0;
    for (int i = 0; !rc && i < L.nparts; i++) {
        const aq_qmat *q = parts[i];
        ak_dqmat *d = i ? &out->outl : &out->main;
        rc = ak_upload(c, d->codes, q->codes, (size_t)q->rows * dq_row_bytes(d), what, err) ||
             ak_upload(c, d->scales, q->scales, (size_t)q->rows * dq_scale_cols(d) * 2, what, err) ||
             (d->sub && ak_upload(c, d->sub, q->sub, (size_t)q->rows * (size_t)d->ngroups, what, err));
    }
    if (!rc && out->perm) rc = ak_upload(c, out->perm, src->perm, (size_t)src->K * 4, what, err);
    if (rc) { ak_dqt_free(c, out); return -1; }
    out->rows = src->rows;
    return 0;
}

extern "C" int ak_dqt_download(ak_ctx *c, const ak_dqt *src, aq_qtensor *out, char *err) {
    if (!out) { if (err) snprintf(err, AX_ERR_LEN, "ak_dqt_download: NULL output"); return -1; }
    memset(out, 0, sizeof *out);
    if (!src || src->rows < 1 || !src->main.codes) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_dqt_download: the device tensor holds no rows (quantize it first)");
        return -1;
    }
    const int R = src->rows;
    out->mode = src->mode; out->rows = R; out->K = src->K;
    const ak_dqmat *dp[2] = {&src->main, &src->outl};
    aq_qmat *hp[2] = {&out->main, &out->outl};
    int rc = 0;
    for (int i = 0; !rc && i < 2; i++) {
        const ak_dqmat *d = dp[i];
        if (!d->codes) continue;
        aq_qmat *h = hp[i];
        h->rows = R; h->cols = d->cols; h->bits = d->bits; h->group = d->group; h->ngroups = d->ngroups;
        const size_t nc = (size_t)R * dq_row_bytes(d), ns = (size_t)R * dq_scale_cols(d), nu = (size_t)R * d->ngroups;
        h->codes = (uint8_t *)calloc(nc ? nc : 1, 1);
        h->scales = (uint16_t *)calloc(ns ? ns : 1, 2);
        if (d->sub) h->sub = (uint8_t *)calloc(nu ? nu : 1, 1);
        if (!h->codes || !h->scales || (d->sub && !h->sub)) {
            if (err) snprintf(err, AX_ERR_LEN, "ak_dqt_download: out of host memory for %d x %d codes", R, d->cols);
            rc = -1;
            break;
        }
        rc = ak_download(c, h->codes, d->codes, nc, "codes", err) || ak_download(c, h->scales, d->scales, ns * 2, "scales", err) ||
             (d->sub && ak_download(c, h->sub, d->sub, nu, "sub-scales", err));
    }
    if (!rc && src->perm) {
        out->perm = (int32_t *)malloc((size_t)src->K * 4);
        if (!out->perm) { if (err) snprintf(err, AX_ERR_LEN, "ak_dqt_download: out of host memory"); rc = -1; }
        else rc = ak_download(c, out->perm, src->perm, (size_t)src->K * 4, "perm", err);
    }
    if (rc) { aq_qtensor_free(out); return -1; }
    return 0;
}

// ---- activation quantization ----------------------------------------------------------------------

// Shared by ak_quantize_x_dev and ak_rmsnorm_quantize_x_dev (ak_quant.cu); declared in ak_internal.cuh.
int ak_quant_begin(ak_ctx *c, const char *op, const char *what, const aq_mode *m, const uint16_t *x,
                   const uint16_t *slot_x, int M, int K, const int32_t *perm, ak_dqt *out, ak_quant_args *ap,
                   char *err) {
    if (ak_supports(m, K, err)) return -1;
    if (m->permuted ? !perm : perm != nullptr) {
        if (err) snprintf(err, AX_ERR_LEN, m->permuted ? "%s: %s: atom mode '%s' needs a channel permutation perm [%d]"
                                                                   : "%s: %s: a channel permutation is only used by atom modes, not '%s' (K = %d)",
                          op, what, m->name, K);
        return -1;
    }
    if (!dqt_is(out, m, false, K) || (m->permuted && !out->perm) || out->cap < M) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: %s: the output tensor is not mode '%s''s activation layout for K = %d with >= %d rows "
                          "(it has mode '%s', K = %d, %d rows)", op, what, m->name, K, M, out->mode.name, out->K, out->cap);
        return -1;
    }
    const int o = m->outliers, Km = K - o;
    const int g = aq_operand_group(&m->x, Km);
    ak_quant_args &a = *ap;
    memset(&a, 0, sizeof a);
    a.M = M; a.K = K;
    a.x = reinterpret_cast<const __half *>(x);
    a.nparts = o > 0 ? 2 : 1;
    // The quantizer works on g as the group length; a group longer than the part is the part.
    a.p[0] = ak_qpart{0, Km, m->x.bits, g < Km ? g : Km, out->main.ngroups, m->x.clip, out->main.codes,
                      (int)dq_row_bytes(&out->main), reinterpret_cast<__half *>(out->main.scales)};
    if (o > 0)
        a.p[1] = ak_qpart{Km, o, m->outl.bits, o, 1, m->outl.clip, out->outl.codes, (int)dq_row_bytes(&out->outl),
                          reinterpret_cast<__half *>(out->outl.scales)};
    const int slot = ak_slot_open(c, op, what, K, slot_x, perm, err);
    if (slot < 0) return -1;
    unsigned long long *fl = c->flags + (size_t)slot * AK_SLOT_WORDS;
    a.bad = fl;
    if (perm) {
        if (ak_launch_perm_check(perm, K, fl + 1, c->st, err)) return -1;
        if (cu(cudaMemcpyAsync(out->perm, perm, (size_t)K * 4, cudaMemcpyDeviceToDevice, c->st), op, "copy of perm", err))
            return -1;
        a.perm = perm;
        a.perm_bad = fl + 1;
    }
    return slot;
}

extern "C" int ak_quantize_x_dev(ak_ctx *c, const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                                 ak_dqt *out, const char *what, char *err) {
    static const char *op = "ak_quantize_x_dev";
    what = nz(what, "X");
    if (ak_ctx_use(c, op, err)) return -1;
    if (!m || !x || !out || M < 1 || K < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: %s: bad shape [%d, %d] or NULL data/mode/output", op, what, M, K);
        return -1;
    }
    ak_quant_args a;
    const int slot = ak_quant_begin(c, op, what, m, x, x, M, K, perm, out, &a, err);
    if (slot < 0) return -1;
    if (ak_launch_quant(a, c->st, err)) return -1;
    out->rows = M;
    return ak_slot_close(c, slot, false, err);
}

// ---- GEMM -----------------------------------------------------------------------------------------

namespace {

int layouts_match(const ak_dqt *qx, const ak_dqt *qw, char *err) {
    const ak_dqmat *xm = &qx->main, *wm = &qw->main;
    const bool mixed = qx->mode.epilogue == AQ_EPI_MIXED;
    const bool xo = qx->outl.codes != nullptr, wo = qw->outl.codes != nullptr;
    const char *why = nullptr;
    if (strcmp(qx->mode.name, qw->mode.name) || !aq_mode_same(&qx->mode, &qw->mode)) why = "X and W modes differ";
    else if (qx->K != qw->K) why = "X and W have different K";
    else if (!xm->codes || !wm->codes || !xm->scales || !wm->scales) why = "missing codes or scales";
    else if (qx->rows < 1 || qw->rows < 1) why = "an operand holds no rows (quantize it first)";
    else if (xm->cols != wm->cols) why = "main parts have different shapes";
    else if (xm->bits != wm->bits || xm->bits != qx->mode.x.bits || wm->bits != qx->mode.w.bits) why = "code widths differ from the mode";
    else if (mixed && (!wm->sub || xm->sub || xm->ngroups != 1)) why = "mixed mode needs per-token X and W sub-scales";
    else if (!mixed && (xm->group != wm->group || xm->ngroups != wm->ngroups || xm->sub || wm->sub)) why = "group layouts differ";
    else if (xo != wo) why = "only one operand has outlier channels";
    else if (xo && (qx->outl.cols != qw->outl.cols || qx->outl.bits != qx->mode.outl.bits || qw->outl.bits != qx->mode.outl.bits)) why = "outlier parts do not match";
    else if (xm->cols + (xo ? qx->outl.cols : 0) != qx->K) why = "main + outlier channels != K";
    if (why) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: %s (mode '%s' / '%s', K = %d / %d)", why, qx->mode.name, qw->mode.name,
                          qx->K, qw->K);
        return -1;
    }
    return 0;
}

// Grow the context's split-K workspace (partials, and the gemv counters, zeroed when allocated).
int ws_reserve(ak_ctx *c, size_t part_bytes, size_t ncnt, char *err) {
    if (part_bytes > c->ws_bytes) {
        const size_t want = (part_bytes + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
        if (cu(cudaStreamSynchronize(c->st), "ak_gemm", "a queued kernel failed", err)) return -1;
        cudaFree(c->ws);
        c->ws = nullptr; c->ws_bytes = 0;
        if (cu(cudaMalloc(&c->ws, want), "ak_gemm", "cudaMalloc of the split-K workspace", err)) return -1;
        c->ws_bytes = want;
    }
    if (ncnt > c->cnt_n) {
        const size_t want = (ncnt + 1023) & ~(size_t)1023;
        if (cu(cudaStreamSynchronize(c->st), "ak_gemm", "a queued kernel failed", err)) return -1;
        cudaFree(c->cnt);
        c->cnt = nullptr; c->cnt_n = 0;
        if (cu(cudaMalloc(&c->cnt, want * 4), "ak_gemm", "cudaMalloc of the split-K counters", err) ||
            cu(cudaMemsetAsync(c->cnt, 0, want * 4, c->st), "ak_gemm", "cudaMemset of the split-K counters", err))
            return -1;
        c->cnt_n = want;
    }
    return 0;
}

}  // namespace

extern "C" int ak_gemm_dev_ex(ak_ctx *c, const ak_dqt *qx, const ak_dqt *qw, ak_path path, int k_splits, uint16_t *y,
                              char *err) {
    if (ak_ctx_use(c, "ak_gemm", err)) return -1;
    if (k_splits < 0 || k_splits > 65535) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: k_splits = %d must be 1..65535 (0 = the planner's)", k_splits);
        return -1;
    }
    if (!qx || !qw || !y) { if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: NULL operand or output"); return -1; }
    if (path != AK_PATH_INT8 && path != AK_PATH_INT4 && path != AK_PATH_WGMMA && path != AK_PATH_WGMMA_SYNC) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: path %d (%s) is not a GEMM path (int8, int4, wgmma, wgmma-sync)", (int)path,
                          ak_path_name(path));
        return -1;
    }
    if (layouts_match(qx, qw, err)) return -1;
    if (ak_supports(&qx->mode, qx->K, err)) return -1;
    const int M = qx->rows, N = qw->rows;
    ak_plan pl;
    if (ak_gemm_plan_ex(&qx->mode, M, N, qx->K, c->f.sms, c->f.cc, path, k_splits, &pl)) {
        if (ak_path_is_wgmma(path)) {
            if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: the %s path does not serve mode '%s' at K = %d on this GPU (compute "
                              "capability %d.%d): it needs compute capability 9.x, no outlier part, equal code widths of 4 "
                              "or 8, and groups of 32, 64, a multiple of 128 codes or the whole row", ak_path_name(path),
                              qx->mode.name, qx->K, c->f.cc_major, c->f.cc_minor);
        } else if (err) {
            snprintf(err, AX_ERR_LEN, "ak_gemm: no launch plan for mode '%s', M = %d, N = %d, K = %d", qx->mode.name, M, N, qx->K);
        }
        return -1;
    }
    const bool mixed = qx->mode.epilogue == AQ_EPI_MIXED;
    ak_gemm_args a;
    memset(&a, 0, sizeof a);
    a.M = M; a.N = N;
    a.epi = ak_epi_of(&qx->mode);
    a.nparts = qx->outl.codes ? 2 : 1;
    for (int i = 0; i < a.nparts; i++) {
        const ak_dqmat *xm = i ? &qx->outl : &qx->main, *wm = i ? &qw->outl : &qw->main;
        ak_gpart &P = a.p[i];
        const int kb = (int)dq_row_bytes(xm);
        const int glen = mixed ? wm->group : (xm->group < xm->cols ? xm->group : xm->cols);
        P.kb = kb;
        P.lda = P.ldb = kb;
        P.bits = xm->bits;
        P.gch = (xm->bits == 4 ? glen / 2 : glen) / 16;
        P.G = wm->ngroups;
        P.A = xm->codes; P.B = wm->codes;
        P.sa = reinterpret_cast<const __half *>(xm->scales);
        P.sb = reinterpret_cast<const __half *>(wm->scales);
        P.u = mixed ? wm->sub : nullptr;
    }
    a.Y = reinterpret_cast<__half *>(y);
    a.cfg = pl.cfg;
    a.splits = pl.splits;
    a.split_mode = pl.split_kind;
    if (a.splits > 1) {
        if (ws_reserve(c, ak_ws_part_bytes(a.splits, M, N), pl.cfg == AK_CFG_GEMV ? ak_ws_cnt_count(N) : 0, err)) return -1;
        a.ws = c->ws;
        a.cnt = c->cnt;
    }
    return ak_launch_gemm_path(a, path, c->st, err);
}

extern "C" int ak_gemm_dev(ak_ctx *c, const ak_dqt *qx, const ak_dqt *qw, uint16_t *y, char *err) {
    if (ak_ctx_use(c, "ak_gemm", err)) return -1;
    ak_plan pl;
    const ak_path path = qx && !ak_gemm_plan_ex(&qx->mode, qx->rows, qw ? qw->rows : 1, qx->K, c->f.sms, c->f.cc,
                                                AK_PATH_AUTO, 0, &pl) ? pl.path : AK_PATH_INT8;
    return ak_gemm_dev_ex(c, qx, qw, path, 0, y, err);
}

// ---- host-to-host wrappers (apex4 check, tests) ----------------------------------------------------

namespace {

// Everything one host-wrapper call holds on the device, released together.
struct hostcall {
    ak_ctx *c = nullptr;
    void *buf[4] = {nullptr, nullptr, nullptr, nullptr};
    ak_dqt t[2];
    hostcall() { memset(t, 0, sizeof t); }
    ~hostcall() {
        if (!c) return;
        for (void *p : buf) ak_dfree(c, p);
        ak_dqt_free(c, &t[0]);
        ak_dqt_free(c, &t[1]);
        ak_ctx_free(c);
    }
};

}  // namespace

extern "C" int ak_quantize_x(const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                             aq_qtensor *out, char *err) {
    if (!out) { if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: NULL output"); return -1; }
    memset(out, 0, sizeof *out);
    if (!m || !x || M < 1 || K < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: X: bad shape [%d, %d] or NULL data/mode", M, K);
        return -1;
    }
    if (ak_supports(m, K, err)) return -1;
    if (m->permuted) {
        if (perm_ok(perm, K, "ak_quantize_x", "X", err)) return -1;
    } else if (perm) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: X: a channel permutation is only used by atom modes, not '%s'", m->name);
        return -1;
    }
    if (ak_device_count() < 1) { if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: no CUDA device"); return -1; }
    hostcall h;
    const size_t xb = (size_t)M * (size_t)K * 2;
    if (ak_ctx_new(0, &h.c, err) || ak_dmalloc(h.c, xb, &h.buf[0], "X", err) || ak_upload(h.c, h.buf[0], x, xb, "X", err))
        return -1;
    if (perm && (ak_dmalloc(h.c, (size_t)K * 4, &h.buf[1], "perm", err) ||
                 ak_upload(h.c, h.buf[1], perm, (size_t)K * 4, "perm", err)))
        return -1;
    if (ak_dqt_alloc(h.c, m, 0, M, K, &h.t[0], "X", err) ||
        ak_quantize_x_dev(h.c, m, (const uint16_t *)h.buf[0], M, K, (const int32_t *)h.buf[1], &h.t[0], "X", err) ||
        ak_ctx_sync(h.c, err) || ak_dqt_download(h.c, &h.t[0], out, err))
        return -1;
    return 0;
}

extern "C" int ak_gemm(const aq_qtensor *qx, const aq_qtensor *qw, ak_path path, uint16_t *y, char *err) {
    return ak_gemm_ex(qx, qw, path, 1, y, err);
}

extern "C" int ak_gemm_ex(const aq_qtensor *qx, const aq_qtensor *qw, ak_path path, int k_splits, uint16_t *y,
                          char *err) {
    if (k_splits < 1 || k_splits > 65535) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: k_splits = %d must be 1..65535", k_splits);
        return -1;
    }
    if (!qx || !qw || !y || qx->rows < 1 || qw->rows < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: NULL or empty operand");
        return -1;
    }
    if (path != AK_PATH_INT8 && path != AK_PATH_INT4 && path != AK_PATH_WGMMA && path != AK_PATH_WGMMA_SYNC) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: path %d (%s) is not a GEMM path (int8, int4, wgmma, wgmma-sync)", (int)path,
                          ak_path_name(path));
        return -1;
    }
    if (strcmp(qx->mode.name, qw->mode.name) || !aq_mode_same(&qx->mode, &qw->mode)) {   // before any device work
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: X and W modes differ ('%s' / '%s')", qx->mode.name, qw->mode.name);
        return -1;
    }
    if (ak_supports(&qx->mode, qx->K, err)) return -1;
    if (ak_device_count() < 1) { if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: no CUDA device"); return -1; }
    hostcall h;
    const size_t yb = (size_t)qx->rows * (size_t)qw->rows * 2;
    if (ak_ctx_new(0, &h.c, err) || ak_dqt_upload(h.c, qx, &h.t[0], "X", err) || ak_dqt_upload(h.c, qw, &h.t[1], "W", err) ||
        ak_dmalloc(h.c, yb, &h.buf[0], "Y", err) ||
        ak_gemm_dev_ex(h.c, &h.t[0], &h.t[1], path, k_splits, (uint16_t *)h.buf[0], err) || ak_ctx_sync(h.c, err) ||
        ak_download(h.c, y, h.buf[0], yb, "Y", err))
        return -1;
    return 0;
}
