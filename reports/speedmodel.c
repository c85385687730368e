/* speedmodel.c — GPU table loader and the rho speed model (reports/speedmodel.h). */
#include "speedmodel.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include "ax_util.h"

/* ---- GPU table ------------------------------------------------------------------------------- */

static int get_fig(const cJSON *row, const char *key, const char *path, const char *name, const ar_gpus *t,
                   int required, ar_fig *out, char *err) {
    out->v = NAN;
    out->src[0] = 0;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(row, key);
    if (!f) {
        if (!required) return 0;
        ax_seterr(err, "%s: GPU '%s': missing figure \"%s\"", path, name, key);
        return -1;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(f, "value"), *s = cJSON_GetObjectItemCaseSensitive(f, "src");
    if (!cJSON_IsObject(f) || !cJSON_IsString(s) || !(cJSON_IsNumber(v) || cJSON_IsNull(v))) {
        ax_seterr(err, "%s: GPU '%s': \"%s\" must be {\"value\": number or null, \"src\": key}", path, name, key);
        return -1;
    }
    int known = 0;
    for (int i = 0; i < t->nsrc; i++) known |= !strcmp(t->src_key[i], s->valuestring);
    if (!known || strlen(s->valuestring) >= sizeof out->src) {
        ax_seterr(err, "%s: GPU '%s': \"%s\" cites source '%s', which is not in \"sources\"", path, name, key, s->valuestring);
        return -1;
    }
    snprintf(out->src, sizeof out->src, "%s", s->valuestring);
    if (cJSON_IsNumber(v)) {
        if (!isfinite(v->valuedouble) || v->valuedouble <= 0) {
            ax_seterr(err, "%s: GPU '%s': \"%s\" must be positive, got %g", path, name, key, v->valuedouble);
            return -1;
        }
        out->v = v->valuedouble;
    } else if (required) {
        ax_seterr(err, "%s: GPU '%s': \"%s\" is required, got null", path, name, key);
        return -1;
    }
    return 0;
}

int ar_gpus_load(const char *path, ar_gpus *t, char *err) {
    memset(t, 0, sizeof *t);
    cJSON *doc = ax_json_read_file(path, err);
    if (!doc) return -1;
    int rc = -1;
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(doc, "schema"), *ver = cJSON_GetObjectItemCaseSensitive(doc, "version");
    if (!cJSON_IsString(schema) || strcmp(schema->valuestring, "apex4-gpus") || !cJSON_IsNumber(ver) || ver->valuedouble != 1) {
        ax_seterr(err, "%s: expected \"schema\": \"apex4-gpus\", \"version\": 1", path);
        goto out;
    }
    const cJSON *srcs = cJSON_GetObjectItemCaseSensitive(doc, "sources"), *s;
    if (!cJSON_IsObject(srcs)) { ax_seterr(err, "%s: missing object \"sources\"", path); goto out; }
    cJSON_ArrayForEach(s, srcs) {
        if (t->nsrc == 64 || !cJSON_IsString(s) || strlen(s->string) >= 8) {
            ax_seterr(err, "%s: \"sources\": entry '%s' must be a string with a key of < 8 characters (at most 64)", path, s->string);
            goto out;
        }
        snprintf(t->src_key[t->nsrc], 8, "%s", s->string);
        snprintf(t->src_text[t->nsrc], 320, "%s", s->valuestring);
        t->nsrc++;
    }
    const cJSON *gpus = cJSON_GetObjectItemCaseSensitive(doc, "gpus"), *r;
    if (!cJSON_IsArray(gpus) || cJSON_GetArraySize(gpus) < 1) { ax_seterr(err, "%s: missing array \"gpus\"", path); goto out; }
    cJSON_ArrayForEach(r, gpus) {
        if (t->n == AR_MAX_GPUS) { ax_seterr(err, "%s: more than %d GPUs", path, AR_MAX_GPUS); goto out; }
        ar_gpu *g = &t->g[t->n];
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(r, "name");
        if (!cJSON_IsString(nm) || !nm->valuestring[0] || strlen(nm->valuestring) >= AR_NAME_LEN) {
            ax_seterr(err, "%s: gpus[%d]: \"name\" must be a non-empty string", path, t->n);
            goto out;
        }
        snprintf(g->name, sizeof g->name, "%s", nm->valuestring);
        for (int i = 0; i < t->n; i++)
            if (!strcasecmp(t->g[i].name, g->name)) { ax_seterr(err, "%s: GPU '%s' listed twice", path, g->name); goto out; }
        const cJSON *al = cJSON_GetObjectItemCaseSensitive(r, "aliases"), *a;
        cJSON_ArrayForEach(a, al) {
            if (!cJSON_IsString(a) || g->naliases == 8 || strlen(a->valuestring) >= 64) {
                ax_seterr(err, "%s: GPU '%s': \"aliases\" must be at most 8 strings of < 64 characters", path, g->name);
                goto out;
            }
            snprintf(g->aliases[g->naliases++], 64, "%s", a->valuestring);
        }
        const cJSON *x;
        if (cJSON_IsString(x = cJSON_GetObjectItemCaseSensitive(r, "arch"))) snprintf(g->arch, sizeof g->arch, "%s", x->valuestring);
        if (cJSON_IsString(x = cJSON_GetObjectItemCaseSensitive(r, "compute_capability"))) snprintf(g->cc, sizeof g->cc, "%s", x->valuestring);
        if (cJSON_IsString(x = cJSON_GetObjectItemCaseSensitive(r, "note"))) snprintf(g->note, sizeof g->note, "%s", x->valuestring);
        if (get_fig(r, "sms", path, g->name, t, 1, &g->sms, err) || get_fig(r, "boost_mhz", path, g->name, t, 0, &g->boost_mhz, err) ||
            get_fig(r, "l2_mb", path, g->name, t, 0, &g->l2_mb, err) || get_fig(r, "dram_gbs", path, g->name, t, 1, &g->dram_gbs, err) ||
            get_fig(r, "fp32_tflops", path, g->name, t, 1, &g->fp32_tflops, err) ||
            get_fig(r, "tc_fp16_tflops", path, g->name, t, 1, &g->tc_fp16_tflops, err) ||
            get_fig(r, "tc_int8_tops", path, g->name, t, 1, &g->tc_int8_tops, err) ||
            get_fig(r, "tc_int4_tops", path, g->name, t, 0, &g->tc_int4_tops, err) ||
            get_fig(r, "tc_fp8_tflops", path, g->name, t, 0, &g->tc_fp8_tflops, err) ||
            get_fig(r, "i2f_tops", path, g->name, t, 0, &g->i2f_tops, err))
            goto out;
        g->rho_int4 = isfinite(g->tc_int4_tops.v);
        g->rho = (g->rho_int4 ? g->tc_int4_tops.v : g->tc_int8_tops.v) / g->fp32_tflops.v;
        t->n++;
    }
    rc = 0;
out:
    cJSON_Delete(doc);
    return rc;
}

const ar_gpu *ar_gpus_find(const ar_gpus *t, const char *s) {
    for (int i = 0; i < t->n; i++) {
        if (!strcasecmp(t->g[i].name, s)) return &t->g[i];
        for (int j = 0; j < t->g[i].naliases; j++)
            if (!strcasecmp(t->g[i].aliases[j], s)) return &t->g[i];
    }
    return NULL;
}

/* ---- mode cost rows -------------------------------------------------------------------------- */

int ar_mode_cost_of(const char *mode, ar_mode_cost *c, char *err) {
    memset(c, 0, sizeof *c);
    snprintf(c->mode, sizeof c->mode, "%s", mode);
    if (!strcmp(mode, "fp16")) { c->fp16 = 1; return 0; }
    aq_mode m;
    if (aq_mode_parse(mode, &m, err)) return -1;
    if (!aq_mode_is_integer(&m)) {
        ax_seterr(err, "mode '%s' has no integer GEMM kernel (no speed to model)", mode);
        return -1;
    }
    c->bits = m.x.bits;
    c->outliers = m.outliers;
    c->mixed = m.epilogue == AQ_EPI_MIXED;
    c->group = m.w.gran == AQ_GRAN_GROUP ? m.w.group : 0;
    if (c->mixed) { c->e_core = 2; c->e_cvt = 0; }
    else if (c->bits == 4) { c->e_core = 5; c->e_cvt = 0; }
    else { c->e_core = 2; c->e_cvt = 1; }
    return 0;
}

/* ---- the model ------------------------------------------------------------------------------- */

static double cvt_rate(const ar_gpu *g) {   /* conversions per second */
    return isfinite(g->i2f_tops.v) ? g->i2f_tops.v * 1e12 : g->fp32_tflops.v * 1e12 / 2.0 / 4.0;
}

/* Split-K count of the tile kernels (M > 16), after the launch planner kernels/ak_plan.cu: 128 x 128
 * tiles, or 64 x 128 when those give fewer than 2 blocks per SM, which are split along K up to ~2
 * blocks per SM (at most half the 128-byte k-tiles, at most G for multi-group modes). */
static double tile_splits(const ar_gpu *g, const ar_mode_cost *c, int M, int N, int K) {
    const double sms = g->sms.v;
    if (ceil(M / 128.0) * ceil(N / 128.0) >= 2 * sms) return 1;
    const double blocks = ceil(M / 64.0) * ceil(N / 128.0);
    if (blocks >= 2 * sms) return 1;
    double S = ceil(2 * sms / blocks);
    const double tiles = ceil((K - c->outliers) * c->bits / 8.0 / 128.0);
    if (S > floor(tiles / 2)) S = floor(tiles / 2);
    const double G = c->group > 0 ? ceil((double)(K - c->outliers) / c->group) : 1.0;
    if (!c->mixed && G > 1 && S > G) S = G;
    return S < 1 ? 1 : S;
}

double ar_predict(const ar_params *p, const ar_gpu *g, const ar_mode_cost *c, int M, int N, int K, double xops) {
    const double n = N, k = K, bw = g->dram_gbs.v * 1e9;
    if (c->fp16) {
        const double m = M;
        double tc = 2.0 * m * n * k / (g->tc_fp16_tflops.v * 1e12 * p->eta_f16);
        double mem = 2.0 * (m * k + n * k + m * n) / (bw * p->eta_mem);
        return p->t0_f16 + (tc > mem ? tc : mem);
    }
    /* the kernels compute whole mma tiles of 16 rows; tile kernels (M > 16) run in waves of blocks */
    const double m = 16.0 * ceil(M / 16.0);
    const double fill = (M > 16 && ceil(M / 128.0) * ceil(N / 128.0) < 2 * g->sms.v) ? p->mid : 1.0;
    const double o = c->outliers, km = k - o;
    const double ptc = (c->bits == 4 && isfinite(g->tc_int4_tops.v)) ? g->tc_int4_tops.v : g->tc_int8_tops.v;
    const double e8 = c->bits == 8 ? p->eta_tc8 : 1.0;
    /* M <= 16 kernel (gemv_kernel): a 64-byte span of codes is run once per group it holds */
    const double span = c->bits == 4 ? 128.0 : 64.0;
    const double rep = (M <= 16 && c->group > 0 && c->group < span) ? span / c->group : 1.0;
    double t_tc = rep * 2.0 * m * n * km / (ptc * 1e12 * p->eta_tc * e8);
    if (o > 0) t_tc += 2.0 * m * n * o / (g->tc_int8_tops.v * 1e12 * p->eta_tc * p->eta_tc8);
    const double F = g->fp32_tflops.v * 1e12 / 2.0, C = cvt_rate(g);
    const double G = c->group > 0 ? ceil(km / c->group) : 1.0;
    double per_out = G * ((c->e_core + xops) / F + c->e_cvt / C);
    if (o > 0) per_out += 2.0 / F + 1.0 / C;                 /* the INT8 outlier group */
    if (c->mixed) per_out += 2.0 / F + 1.0 / C;              /* float(P)·(sx·S) per output */
    const double t_core = m * n * per_out / p->eta_core;
    const double mr = M;
    double bytes = (mr + n) * km * c->bits / 8.0 + (mr + n) * o + 2.0 * mr * n;
    if (c->mixed) bytes += 2.0 * (mr + n) + n * G;
    else bytes += 2.0 * (mr + n) * G + (o > 0 ? 2.0 * (mr + n) : 0.0);
    const double t_mem = bytes / (bw * p->eta_mem);
    /* tensor-core and epilogue work overlap in part (other warps of the SM): the power mean
     * (T_tc^q + T_core^q)^(1/q), q = 1 + overlap (q = 1: serial sum, large q: full overlap) */
    const double q = 1.0 + p->overlap;
    const double comp = pow(pow(t_tc, q) + pow(t_core, q), 1.0 / q) * fill;
    /* split-K of the tile kernels: a second launch (combine) and the fp32/int32 partials written and read */
    const double S = M > 16 ? tile_splits(g, c, M, N, K) : 1.0;
    const double t_split = S > 1 ? p->t1 + 2.0 * S * mr * n * 4.0 / (bw * p->eta_mem) : 0.0;
    return (M > 16 ? p->t1 : p->t0) + (comp > t_mem ? comp : t_mem) + t_split;
}

double ar_emul_c(const ar_gpu *g, const ar_mode_cost *c) {
    const double F = g->fp32_tflops.v * 1e12 / 2.0;
    const double e = c->e_core + c->e_cvt * F / cvt_rate(g);
    return e > 0 ? 1.0 / e : 0.0;
}

/* Sum of squared log errors of parameters exp(x) (x [6] log parameters). */
typedef struct { const ar_point *pts; const int *idx; int n; const ar_gpu *gpu; const ar_mode_cost *cost; } fitctx;

static void unpack(const double *x, ar_params *p) {
    p->eta_tc = exp(x[0]); p->eta_core = exp(x[1]); p->eta_mem = exp(x[2]);
    p->t0 = exp(x[3]); p->eta_f16 = exp(x[4]); p->t0_f16 = exp(x[5]);
    p->eta_tc8 = exp(x[6]); p->t1 = exp(x[7]); p->mid = exp(x[8]); p->overlap = exp(x[9]);
}

static double objective(const fitctx *f, const double *x) {
    ar_params p;
    unpack(x, &p);
    double s = 0;
    for (int i = 0; i < f->n; i++) {
        const ar_point *q = &f->pts[f->idx[i]];
        const double r = log(ar_predict(&p, f->gpu, &f->cost[f->idx[i]], q->M, q->N, q->K, 0) / q->t);
        s += r * r;
    }
    return s;
}

/* Nelder-Mead (standard coefficients 1, 2, 0.5, 0.5) from x0 with initial steps `step`. */
static void nelder_mead(const fitctx *f, double *x0, double step, int iters) {
    enum { D = AR_NPARAMS };
    double s[D + 1][D], v[D + 1];
    for (int i = 0; i <= D; i++) {
        for (int j = 0; j < D; j++) s[i][j] = x0[j] + (i == j + 1 ? step : 0.0);
        v[i] = objective(f, s[i]);
    }
    for (int it = 0; it < iters; it++) {
        /* order: best first */
        for (int i = 1; i <= D; i++)
            for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
                double t = v[j]; v[j] = v[j - 1]; v[j - 1] = t;
                for (int d = 0; d < D; d++) { t = s[j][d]; s[j][d] = s[j - 1][d]; s[j - 1][d] = t; }
            }
        if (v[D] - v[0] < 1e-14 * (1.0 + v[0])) break;
        double c[D] = {0}, xr[D], xe[D], xc[D];
        for (int i = 0; i < D; i++)
            for (int d = 0; d < D; d++) c[d] += s[i][d] / D;
        for (int d = 0; d < D; d++) xr[d] = c[d] + (c[d] - s[D][d]);
        const double vr = objective(f, xr);
        if (vr < v[0]) {
            for (int d = 0; d < D; d++) xe[d] = c[d] + 2.0 * (c[d] - s[D][d]);
            const double ve = objective(f, xe);
            if (ve < vr) { memcpy(s[D], xe, sizeof xe); v[D] = ve; }
            else { memcpy(s[D], xr, sizeof xr); v[D] = vr; }
        } else if (vr < v[D - 1]) {
            memcpy(s[D], xr, sizeof xr); v[D] = vr;
        } else {
            const int out = vr < v[D];
            for (int d = 0; d < D; d++) xc[d] = out ? c[d] + 0.5 * (xr[d] - c[d]) : c[d] + 0.5 * (s[D][d] - c[d]);
            const double vc = objective(f, xc);
            if (vc < (out ? vr : v[D])) { memcpy(s[D], xc, sizeof xc); v[D] = vc; }
            else
                for (int i = 1; i <= D; i++) {
                    for (int d = 0; d < D; d++) s[i][d] = s[0][d] + 0.5 * (s[i][d] - s[0][d]);
                    v[i] = objective(f, s[i]);
                }
        }
    }
    int b = 0;
    for (int i = 1; i <= D; i++) if (v[i] < v[b]) b = i;
    memcpy(x0, s[b], sizeof s[b]);
}

static int fit_idx(const ar_point *pts, const int *idx, int n, const ar_gpu *gpu, ar_params *p, double *rms, char *err) {
    if (n < AR_NPARAMS) { ax_seterr(err, "speed model: %d points, need at least %d to fit", n, AR_NPARAMS); return -1; }
    int maxi = 0;
    for (int i = 0; i < n; i++) if (idx[i] > maxi) maxi = idx[i];
    ar_mode_cost *cost = calloc((size_t)maxi + 1, sizeof *cost);
    if (!cost) { ax_seterr(err, "speed model: out of memory"); return -1; }
    for (int i = 0; i < n; i++) {
        const ar_point *q = &pts[idx[i]];
        if (!(q->t > 0) || !isfinite(q->t) || q->M < 1 || q->N < 1 || q->K < 1) {
            ax_seterr(err, "speed model: point %s M=%d N=%d K=%d has a non-positive time or shape", q->mode, q->M, q->N, q->K);
            free(cost);
            return -1;
        }
        if (ar_mode_cost_of(q->mode, &cost[idx[i]], err)) { free(cost); return -1; }
    }
    fitctx f = {pts, idx, n, gpu, cost};
    /* start: typical efficiencies; then restarts from the best point with shrinking steps */
    double x[AR_NPARAMS] = {log(0.3), log(0.1), log(0.7), log(8e-6), log(0.7), log(8e-6), log(0.8), log(8e-6), log(1.2), log(0.3)};
    nelder_mead(&f, x, 1.0, 4000);
    nelder_mead(&f, x, 0.3, 4000);
    nelder_mead(&f, x, 0.1, 4000);
    nelder_mead(&f, x, 0.03, 4000);
    unpack(x, p);
    if (rms) *rms = sqrt(objective(&f, x) / n);
    free(cost);
    return 0;
}

int ar_fit(const ar_point *pts, int n, const ar_gpu *gpu, ar_params *p, double *rms, char *err) {
    int *idx = malloc((size_t)(n > 0 ? n : 1) * sizeof *idx);
    if (!idx) { ax_seterr(err, "speed model: out of memory"); return -1; }
    for (int i = 0; i < n; i++) idx[i] = i;
    int rc = fit_idx(pts, idx, n, gpu, p, rms, err);
    free(idx);
    return rc;
}

typedef struct { const char *mode; int N, K, M, i; } sortkey;
static int cmp_keys(const void *a, const void *b) {
    const sortkey *x = a, *y = b;
    int c = strcmp(x->mode, y->mode);
    if (c) return c;
    if (x->N != y->N) return x->N < y->N ? -1 : 1;
    if (x->K != y->K) return x->K < y->K ? -1 : 1;
    if (x->M != y->M) return x->M < y->M ? -1 : 1;
    return x->i - y->i;
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int ar_validate(const ar_point *pts, int n, const ar_gpu *gpu, ar_params *p, double *median_err, double *max_err,
                int *nfit, int *nheld, char *err) {
    int *idx = malloc((size_t)(n > 0 ? n : 1) * sizeof *idx), *fi = malloc((size_t)(n > 0 ? n : 1) * sizeof *fi);
    double *e = malloc((size_t)(n > 0 ? n : 1) * sizeof *e);
    int rc = -1, nf = 0, nh = 0;
    if (!idx || !fi || !e) { ax_seterr(err, "speed model: out of memory"); goto out; }
    sortkey *keys = malloc((size_t)(n > 0 ? n : 1) * sizeof *keys);
    if (!keys) { ax_seterr(err, "speed model: out of memory"); goto out; }
    for (int i = 0; i < n; i++) keys[i] = (sortkey){pts[i].mode, pts[i].N, pts[i].K, pts[i].M, i};
    qsort(keys, (size_t)n, sizeof *keys, cmp_keys);
    for (int i = 0; i < n; i++) idx[i] = keys[i].i;
    free(keys);
    for (int i = 0; i < n; i += 2) fi[nf++] = idx[i];
    if (fit_idx(pts, fi, nf, gpu, p, NULL, err)) goto out;
    for (int i = 1; i < n; i += 2) {
        const ar_point *q = &pts[idx[i]];
        ar_mode_cost c;
        if (ar_mode_cost_of(q->mode, &c, err)) goto out;
        e[nh++] = fabs(ar_predict(p, gpu, &c, q->M, q->N, q->K, 0) / q->t - 1.0);
    }
    if (nh < 1) { ax_seterr(err, "speed model: no held-out points (%d points)", n); goto out; }
    qsort(e, (size_t)nh, sizeof *e, cmp_dbl);
    *median_err = nh % 2 ? e[nh / 2] : 0.5 * (e[nh / 2 - 1] + e[nh / 2]);
    if (max_err) *max_err = e[nh - 1];
    if (nfit) *nfit = nf;
    if (nheld) *nheld = nh;
    rc = 0;
out:
    free(idx); free(fi); free(e);
    return rc;
}
