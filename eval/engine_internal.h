/* engine_internal.h — the backend table behind eval/engine.h (not a public interface). */
#ifndef APEX4_AE_ENGINE_INTERNAL_H
#define APEX4_AE_ENGINE_INTERNAL_H

#include "engine.h"

/* One backend = one row of function pointers (ggml's backend interface in miniature). */
typedef struct {
    const char *name;
    int  (*build)(ae_engine *e, const ae_calib *calib, char *err);
    void (*destroy)(ae_engine *e);
    int  (*forward)(ae_engine *e, const int *tokens, int T, int pos, int logits_from, float *logits,
                    char *err);
    void (*truncate)(ae_engine *e, int pos);
    int  (*refstore_alloc)(ae_engine *e, ae_refstore *rs, char *err);
    void (*refstore_release)(ae_refstore *rs);
    int  (*score)(ae_engine *e, const int *tokens, int T, ae_refstore *rs, long window, int store,
                  double *nll, double *kld, int *same, char *err);
    void (*describe)(const ae_engine *e, char *buf, size_t len);
    /* NULL: ae_engine_loglik_packed runs sequence by sequence through forward */
    int  (*loglik_packed)(ae_engine *e, const int *tokens, const int *offsets, int n_seqs,
                          const int *targets, double *logp, int *greedy, char *err);
    int  (*probe)(ae_engine *e, int layer, int proj, const uint16_t *x, int T, uint16_t *y, char *err);
    /* NULL: ae_engine_score_windows calls score window by window */
    int  (*score_windows)(ae_engine *e, const int *tokens, int n, int T, ae_refstore *rs, long window0, int store,
                          double *nll, double *kld, int *same, char *err);
    /* 1 when the engine streams its layers (layer-major), else 0 (NULL: never) */
    int  (*layer_major)(const ae_engine *e);
    /* ae_engine_calib_sumsq after its checks (NULL: not available on the backend) */
    int  (*calib_sumsq)(ae_engine *e, const int *tokens, int n, int T, ae_calib *c, char *err);
} ae_backend;

struct ae_engine {
    const ae_model   *m;
    ae_engine_opts    o;
    const ae_backend *be;
    int               pos;        /* cached positions                                           */
    ae_runner        *runner;     /* cpu                                                        */
    void             *dev;        /* cuda: backend state (eval/engine_cuda.c)                   */
    size_t            peak_bytes; /* cuda: peak device bytes allocated by this engine           */
    int              *last_seq;   /* the last sequence run by loglik_packed (prefix reuse)      */
    int               last_len, last_cap;
};

struct ae_refstore {
    const ae_backend *be; /* the backend whose memory holds it (outlives the engine that made it) */
    int        device;    /* cuda: device index                                                 */
    int        n_windows, seqlen, vocab;
    float     *host;      /* cpu: [n_windows, seqlen-1, vocab] log-probs                         */
    void      *dev;       /* cuda: device buffer of the same layout                              */
    int       *argmax;    /* cpu: [n_windows, seqlen-1]                                          */
    void      *dev_argmax;/* cuda                                                               */
};

extern const ae_backend ae_backend_cpu;
extern const ae_backend ae_backend_cuda;

#endif
