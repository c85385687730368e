/* aq_case.c — HDF5 GEMM cases for `apex4 gemm` (layout in aq_case.h and quant/CASE_FORMAT.md).
 * HDF5 1.10 C API (H5D/H5S/H5T/H5A); fp16 is an HDF5 IEEE float of 2 bytes built with H5Tset_fields
 * (the same type h5py writes for numpy.float16). */
#include "aq_case.h"
#include "aq_priv.h"
#include "ax_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__has_include)
#if !__has_include(<hdf5.h>)
#define AQ_NO_HDF5 1
#endif
#endif

#ifdef AQ_NO_HDF5
/* Built without the HDF5 headers (pkg-config hdf5-serial gave no include path): every HDF5 entry
 * point fails loudly instead of breaking the build of the rest of the tree. */
static int no_hdf5(char *err) {
    if (err) snprintf(err, AX_ERR_LEN, "apex4 was built without HDF5 headers (Makefile PKGS must name "
                      "hdf5-serial and pkg-config must find it)");
    return -1;
}
int aq_case_read_inputs(const char *path, const aq_mode *mode, int k_splits, aq_case *c, char *err) {
    (void)path; (void)mode; (void)k_splits; memset(c, 0, sizeof *c);
    return no_hdf5(err);
}
int aq_case_write(const char *path, const aq_case *c, char *err) { (void)path; (void)c; return no_hdf5(err); }
int aq_case_compare(const aq_case *c, const char *path, const aq_case *other, FILE *out, long *ndiff,
                    char *err) {
    (void)c; (void)path; (void)other; (void)out; *ndiff = 0;
    return no_hdf5(err);
}
#else
#include <hdf5.h>

enum { DT_F16, DT_I8, DT_U8, DT_I32 };

typedef struct {
    char        name[24];
    const void *data;
    int         rank;
    hsize_t     dims[2];
    int         dtype;
    int         bits;     /* codes: 4 or 8 (written as attribute "bits"); 0 otherwise */
} dsinfo;

#define MAX_DS 16

static size_t dt_size(int dt) { return dt == DT_F16 ? 2 : dt == DT_I32 ? 4 : 1; }
static const char *dt_name(int dt) {
    return dt == DT_F16 ? "fp16" : dt == DT_I8 ? "int8" : dt == DT_U8 ? "uint8" : "int32";
}

/* HDF5 type for a dtype; the fp16 type must be closed by the caller (H5Tclose), the others are
 * predefined (closing them is harmless to skip). */
static hid_t h5_type(int dt) {
    if (dt == DT_F16) {
        hid_t t = H5Tcopy(H5T_IEEE_F32LE);
        H5Tset_fields(t, 15, 10, 5, 0, 10);
        H5Tset_precision(t, 16);
        H5Tset_size(t, 2);
        H5Tset_ebias(t, 15);
        return t;
    }
    return dt == DT_I8 ? H5T_STD_I8LE : dt == DT_U8 ? H5T_STD_U8LE : H5T_STD_I32LE;
}
static void h5_type_close(int dt, hid_t t) { if (dt == DT_F16 && t >= 0) H5Tclose(t); }

/* Silence HDF5's own error printing for the duration of a public call (restored on return). */
typedef struct { H5E_auto2_t fn; void *data; } h5_quiet;
static h5_quiet quiet_on(void) {
    h5_quiet q = {0};
    H5Eget_auto2(H5E_DEFAULT, &q.fn, &q.data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return q;
}
static void quiet_off(h5_quiet q) { H5Eset_auto2(H5E_DEFAULT, q.fn, q.data); }

static void add(dsinfo *l, int *n, const char *name, const void *data, int rank, hsize_t d0, hsize_t d1,
                int dt, int bits) {
    dsinfo *d = &l[(*n)++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->data = data; d->rank = rank; d->dims[0] = d0; d->dims[1] = d1; d->dtype = dt; d->bits = bits;
}

static void add_qmat(dsinfo *l, int *n, const char *prefix, const aq_qmat *q) {
    char nm[24];
    if (!q->codes || !q->scales) return;   /* not computed on this side (device results: qx only) */
    snprintf(nm, sizeof nm, "%s_codes", prefix);
    add(l, n, nm, q->codes, 2, (hsize_t)q->rows, aq_qmat_row_bytes(q), q->bits == 4 ? DT_U8 : DT_I8, q->bits);
    snprintf(nm, sizeof nm, "%s_scales", prefix);
    add(l, n, nm, q->scales, 2, (hsize_t)q->rows, (hsize_t)aq_qmat_scale_cols(q), DT_F16, 0);
    if (q->sub) {
        snprintf(nm, sizeof nm, "%s_sub", prefix);
        add(l, n, nm, q->sub, 2, (hsize_t)q->rows, (hsize_t)q->ngroups, DT_U8, 0);
    }
}

/* The datasets of a case: inputs (with_inputs) then results (if have_q). */
static int case_datasets(const aq_case *c, int with_inputs, dsinfo *l) {
    int n = 0;
    if (with_inputs && c->x && c->w) {
        add(l, &n, "X", c->x, 2, (hsize_t)c->M, (hsize_t)c->K, DT_F16, 0);
        add(l, &n, "W", c->w, 2, (hsize_t)c->N, (hsize_t)c->K, DT_F16, 0);
        if (c->perm) add(l, &n, "perm", c->perm, 1, (hsize_t)c->K, 0, DT_I32, 0);
    }
    if (c->have_q) {
        add_qmat(l, &n, "qx", &c->qx.main);
        add_qmat(l, &n, "qw", &c->qw.main);
        if (c->qx.outl.rows) add_qmat(l, &n, "qx_outl", &c->qx.outl);
        if (c->qw.outl.rows) add_qmat(l, &n, "qw_outl", &c->qw.outl);
        add(l, &n, "Y", c->y, 2, (hsize_t)c->M, (hsize_t)c->N, DT_F16, 0);
    }
    return n;
}

static size_t ds_bytes(const dsinfo *d) {
    size_t n = dt_size(d->dtype);
    for (int i = 0; i < d->rank; i++) n *= (size_t)d->dims[i];
    return n;
}

/* ---- reading --------------------------------------------------------------------------------- */

/* Read dataset `name` of dtype dt and rank `rank` into a malloc'd buffer; dims out. -1 with err. */
static int read_ds(hid_t f, const char *path, const char *name, int dt, int rank, hsize_t *dims,
                   void **out, char *err) {
    *out = NULL;
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0) {
        snprintf(err, AX_ERR_LEN, "%.300s: dataset '%s' is missing", path, name);
        return -1;
    }
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) { snprintf(err, AX_ERR_LEN, "%.300s: '%s' is not a readable dataset", path, name); return -1; }
    hid_t ft = H5Dget_type(d), sp = H5Dget_space(d);
    int rc = -1;
    H5T_class_t cls = H5Tget_class(ft);
    size_t sz = H5Tget_size(ft);
    int ok_type = dt == DT_F16 ? (cls == H5T_FLOAT && sz == 2)
                               : (cls == H5T_INTEGER && sz == dt_size(dt) &&
                                  (H5Tget_sign(ft) == H5T_SGN_2) == (dt != DT_U8));
    int r = H5Sget_simple_extent_ndims(sp);
    if (!ok_type) {
        snprintf(err, AX_ERR_LEN, "%.300s: dataset '%s' has dtype %s%zu, expected %s", path, name,
                 cls == H5T_FLOAT ? "float" : cls == H5T_INTEGER ? "int" : "class", sz * 8, dt_name(dt));
    } else if (r != rank) {
        snprintf(err, AX_ERR_LEN, "%.300s: dataset '%s' has rank %d, expected %d", path, name, r, rank);
    } else {
        H5Sget_simple_extent_dims(sp, dims, NULL);
        size_t n = dt_size(dt);
        int bad = 0;
        for (int i = 0; i < rank; i++) {
            if (dims[i] < 1 || dims[i] > (hsize_t)(1 << 30)) bad = 1;
            n *= (size_t)dims[i];
        }
        if (bad) {
            snprintf(err, AX_ERR_LEN, "%.300s: dataset '%s' has an empty or huge dimension", path, name);
        } else if (!(*out = malloc(n))) {
            snprintf(err, AX_ERR_LEN, "%.300s: out of memory reading '%s' (%zu bytes)", path, name, n);
        } else {
            hid_t mt = h5_type(dt);
            if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0) {
                snprintf(err, AX_ERR_LEN, "%.300s: cannot read dataset '%s' (truncated or corrupt file?)", path, name);
                free(*out);
                *out = NULL;
            } else {
                rc = 0;
            }
            h5_type_close(dt, mt);
        }
    }
    H5Tclose(ft); H5Sclose(sp); H5Dclose(d);
    return rc;
}

static hid_t open_h5(const char *path, char *err) {
    if (access(path, R_OK) != 0) {
        snprintf(err, AX_ERR_LEN, "%.300s: cannot open (no such file or not readable)", path);
        return -1;
    }
    if (H5Fis_hdf5(path) <= 0) {
        snprintf(err, AX_ERR_LEN, "%.300s: not an HDF5 file (or truncated)", path);
        return -1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) snprintf(err, AX_ERR_LEN, "%.300s: HDF5 cannot open the file (truncated or corrupt?)", path);
    return f;
}

static int check_fp16(const uint16_t *h, size_t n, size_t cols, const char *path, const char *name, char *err) {
    for (size_t i = 0; i < n; i++)
        if ((h[i] & 0x7c00u) == 0x7c00u) {
            snprintf(err, AX_ERR_LEN, "%.300s: dataset '%s' has a non-finite value (0x%04x) at [%zu, %zu]", path,
                     name, h[i], i / cols, i % cols);
            return -1;
        }
    return 0;
}

int aq_case_read_inputs(const char *path, const aq_mode *mode, int k_splits, aq_case *c, char *err) {
    char e[AX_ERR_LEN];
    if (!err) err = e;
    memset(c, 0, sizeof *c);
    c->mode = *mode;
    c->k_splits = k_splits;
    snprintf(c->source, sizeof c->source, "reference");
    h5_quiet q = quiet_on();
    hid_t f = open_h5(path, err);
    if (f < 0) { quiet_off(q); return -1; }
    hsize_t dx[2], dw[2], dp[1];
    void *x = NULL, *w = NULL, *p = NULL;
    int rc = -1;
    if (read_ds(f, path, "X", DT_F16, 2, dx, &x, err) || read_ds(f, path, "W", DT_F16, 2, dw, &w, err)) goto done;
    if (dx[1] != dw[1]) {
        snprintf(err, AX_ERR_LEN, "%.300s: K mismatch: X is [%llu, %llu] but W is [%llu, %llu] (both must be [*, K])",
                 path, (unsigned long long)dx[0], (unsigned long long)dx[1], (unsigned long long)dw[0],
                 (unsigned long long)dw[1]);
        goto done;
    }
    c->M = (int)dx[0]; c->K = (int)dx[1]; c->N = (int)dw[0];
    if ((double)c->M * c->K > 1e10 || (double)c->N * c->K > 1e10) {
        snprintf(err, AX_ERR_LEN, "%.300s: X or W too large", path);
        goto done;
    }
    if (check_fp16(x, (size_t)c->M * c->K, (size_t)c->K, path, "X", err) ||
        check_fp16(w, (size_t)c->N * c->K, (size_t)c->K, path, "W", err))
        goto done;
    if (H5Lexists(f, "perm", H5P_DEFAULT) > 0 && mode->kind == AQ_KIND_ATOM) {
        if (read_ds(f, path, "perm", DT_I32, 1, dp, &p, err)) goto done;
        if ((int)dp[0] != c->K) {
            snprintf(err, AX_ERR_LEN, "%.300s: dataset 'perm' has %llu entries, expected K = %d", path,
                     (unsigned long long)dp[0], c->K);
            goto done;
        }
        char pe[AX_ERR_LEN];
        if (aq_check_perm(p, c->K, "perm", pe)) { snprintf(err, AX_ERR_LEN, "%.300s: %.200s", path, pe); goto done; }
    } else if (mode->kind == AQ_KIND_ATOM) {
        if (!(p = malloc((size_t)c->K * sizeof(int32_t)))) { snprintf(err, AX_ERR_LEN, "out of memory"); goto done; }
        aq_case_perm_sumsq(x, c->M, c->K, p);
    }
    c->x = x; c->w = w; c->perm = p;
    x = w = p = NULL;
    rc = 0;
done:
    free(x); free(w); free(p);
    H5Fclose(f);
    quiet_off(q);
    if (rc) aq_case_free(c);
    return rc;
}

/* ---- writing --------------------------------------------------------------------------------- */

static int attr_str(hid_t loc, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, t, v) < 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp); H5Tclose(t);
    return rc ? -1 : 0;
}
static int attr_int(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, mtype, v) < 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc ? -1 : 0;
}
static int attr_i32(hid_t loc, const char *name, int v) {
    int32_t x = v;
    return attr_int(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT32, &x);
}

static int write_ds(hid_t f, const dsinfo *d) {
    hid_t sp = H5Screate_simple(d->rank, d->dims, NULL);
    hid_t t = h5_type(d->dtype);
    hid_t ds = H5Dcreate2(f, d->name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = ds < 0 || H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, d->data) < 0;
    if (!rc && d->bits) rc = attr_i32(ds, "bits", d->bits);
    if (ds >= 0) H5Dclose(ds);
    h5_type_close(d->dtype, t);
    H5Sclose(sp);
    return rc ? -1 : 0;
}

int aq_case_write(const char *path, const aq_case *c, char *err) {
    char e[AX_ERR_LEN], tmp[AX_PATH_LEN];
    if (!err) err = e;
    ax_tmp_name(path, tmp);
    h5_quiet q = quiet_on();
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        quiet_off(q);
        snprintf(err, AX_ERR_LEN, "%.300s: cannot create the output file (directory missing or not writable?)", path);
        return -1;
    }
    dsinfo l[MAX_DS];
    int n = case_datasets(c, 1, l), rc = 0;
    for (int i = 0; i < n && !rc; i++)
        if (write_ds(f, &l[i])) {
            snprintf(err, AX_ERR_LEN, "%.300s: cannot write dataset '%.24s' (disk full?)", path, l[i].name);
            rc = -1;
        }
    if (!rc) {
        int group = c->have_q ? c->qx.main.group : (c->mode.group ? c->mode.group : c->K);
        rc = attr_str(f, "format", "apex4-gemm-case") || attr_i32(f, "version", 1) ||
             attr_str(f, "mode", c->mode.name) || attr_i32(f, "M", c->M) || attr_i32(f, "N", c->N) ||
             attr_i32(f, "K", c->K) || attr_i32(f, "k_splits", c->k_splits) || attr_i32(f, "group", group) ||
             attr_i32(f, "outliers", c->mode.outliers) || attr_str(f, "source", c->source);
        if (!rc && c->dist[0])
            rc = attr_int(f, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &c->seed) || attr_str(f, "dist", c->dist);
        if (rc) snprintf(err, AX_ERR_LEN, "%.300s: cannot write the file attributes", path);
    }
    if (H5Fclose(f) < 0 && !rc) {
        snprintf(err, AX_ERR_LEN, "%.300s: error closing the HDF5 file (disk full?)", path);
        rc = -1;
    }
    quiet_off(q);
    if (rc) { unlink(tmp); return -1; }
    if (ax_rename_into(tmp, path, err)) { unlink(tmp); return -1; }
    return 0;
}

/* ---- comparing ------------------------------------------------------------------------------- */

static long diff_bytes(const void *a, const void *b, size_t n) {
    const unsigned char *x = a, *y = b;
    long d = 0;
    for (size_t i = 0; i < n; i++) d += x[i] != y[i];
    return d;
}

int aq_case_compare(const aq_case *c, const char *path, const aq_case *other, FILE *out, long *ndiff,
                    char *err) {
    char e[AX_ERR_LEN];
    if (!err) err = e;
    *ndiff = 0;
    dsinfo l[MAX_DS], lo[MAX_DS];
    int n = case_datasets(c, 1, l), no = 0;
    hid_t f = -1;
    h5_quiet q = {0};
    if (path) {
        q = quiet_on();
        if ((f = open_h5(path, err)) < 0) { quiet_off(q); return -1; }
    } else {
        no = case_datasets(other, 1, lo);
    }
    for (int i = 0; i < n; i++) {
        const dsinfo *d = &l[i];
        size_t nb = ds_bytes(d);
        long diff = (long)nb;
        const char *note = "";
        int is_input = !strcmp(d->name, "X") || !strcmp(d->name, "W") || !strcmp(d->name, "perm");
        if (path) {
            hsize_t dims[2];
            void *buf = NULL;
            if (H5Lexists(f, d->name, H5P_DEFAULT) <= 0) {
                if (is_input) continue;     /* a result file need not repeat the inputs */
                note = " (missing in the other file)";
            } else if (read_ds(f, path, d->name, d->dtype, d->rank, dims, &buf, err)) {
                note = " (other file: dtype or rank differs)";
            } else if (dims[0] != d->dims[0] || (d->rank == 2 && dims[1] != d->dims[1])) {
                note = " (shape differs)";
            } else {
                diff = diff_bytes(d->data, buf, nb);
            }
            free(buf);
        } else {
            int j = 0;
            while (j < no && strcmp(lo[j].name, d->name)) j++;
            if (j == no) {
                if (is_input || (d->name[0] == 'q' && d->name[1] == 'w')) continue; /* W: reference only */
                note = " (missing on the other side)";
            } else if (lo[j].dtype != d->dtype || lo[j].rank != d->rank || lo[j].dims[0] != d->dims[0] ||
                       lo[j].dims[1] != d->dims[1]) {
                note = " (shape or dtype differs)";
            } else {
                diff = diff_bytes(d->data, lo[j].data, nb);
            }
        }
        if (out) fprintf(out, "  %-15s %ld of %zu bytes differ%s\n", d->name, diff, nb, note);
        *ndiff += diff;
    }
    if (path) {
        /* result datasets present only in the other file also count */
        const char *names[] = {"qx_codes", "qx_scales", "qw_codes", "qw_scales", "qw_sub", "qx_outl_codes",
                               "qx_outl_scales", "qw_outl_codes", "qw_outl_scales", "Y"};
        for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
            int mine = 0;
            for (int i = 0; i < n; i++) mine |= !strcmp(l[i].name, names[k]);
            if (!mine && H5Lexists(f, names[k], H5P_DEFAULT) > 0) {
                if (out) fprintf(out, "  %-15s present only in %s\n", names[k], path);
                *ndiff += 1;
            }
        }
        H5Fclose(f);
        quiet_off(q);
    }
    return 0;
}

#endif /* AQ_NO_HDF5 */

void aq_case_free(aq_case *c) {
    if (!c) return;
    free(c->x); free(c->w); free(c->perm); free(c->y);
    aq_qtensor_free(&c->qx);
    aq_qtensor_free(&c->qw);
    memset(c, 0, sizeof *c);
}

/* ---- generated inputs ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double unit_open(uint64_t *s) { return ((double)(splitmix64(s) >> 11) + 0.5) * 0x1p-53; } /* (0,1) */
static double normal(uint64_t *s) {   /* Box-Muller, one draw per call */
    double u1 = unit_open(s), u2 = unit_open(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
static double draw(uint64_t *s, int heavy) {
    double z = normal(s);
    if (!heavy) return z;
    double a = normal(s), b = normal(s), d = normal(s);
    return z / sqrt((a * a + b * b + d * d) / 3.0);   /* Student-t, 3 degrees of freedom */
}
static uint16_t to_f16_clamped(double v) {
    if (v > 60000.0) v = 60000.0;
    if (v < -60000.0) v = -60000.0;
    return aq_f32_to_f16((float)v);
}

typedef struct { double key; int idx; } keyidx;
static int cmp_keyidx(const void *a, const void *b) {
    const keyidx *x = a, *y = b;
    if (x->key < y->key) return -1;
    if (x->key > y->key) return 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

void aq_case_perm_sumsq(const uint16_t *x, int M, int K, int32_t *perm) {
    keyidx *k = calloc((size_t)K, sizeof *k);
    if (!k) { for (int i = 0; i < K; i++) perm[i] = i; return; }
    for (int j = 0; j < K; j++) k[j].idx = j;
    for (int m = 0; m < M; m++)
        for (int j = 0; j < K; j++) {
            double v = aq_f16_to_f32(x[(size_t)m * K + j]);
            k[j].key += v * v;
        }
    qsort(k, (size_t)K, sizeof *k, cmp_keyidx);
    for (int j = 0; j < K; j++) perm[j] = k[j].idx;
    free(k);
}

int aq_case_random(const aq_mode *mode, int M, int N, int K, int k_splits, uint64_t seed,
                   const char *dist, int perm_random, aq_case *c, char *err) {
    char e[AX_ERR_LEN];
    if (!err) err = e;
    memset(c, 0, sizeof *c);
    int heavy;
    if (!strcmp(dist, "normal")) heavy = 0;
    else if (!strcmp(dist, "heavy")) heavy = 1;
    else { snprintf(err, AX_ERR_LEN, "--dist: unknown distribution '%s' (valid: normal, heavy)", dist); return -1; }
    if (M < 1 || N < 1 || K < 1 || (double)M * K > 1e10 || (double)N * K > 1e10) {
        snprintf(err, AX_ERR_LEN, "--random: bad shape M=%d N=%d K=%d (each >= 1)", M, N, K);
        return -1;
    }
    c->mode = *mode; c->M = M; c->N = N; c->K = K; c->k_splits = k_splits; c->seed = seed;
    snprintf(c->dist, sizeof c->dist, "%s", dist);
    snprintf(c->source, sizeof c->source, "reference");
    c->x = malloc((size_t)M * K * 2);
    c->w = malloc((size_t)N * K * 2);
    if (mode->kind == AQ_KIND_ATOM) c->perm = malloc((size_t)K * sizeof *c->perm);
    if (!c->x || !c->w || (mode->kind == AQ_KIND_ATOM && !c->perm)) {
        aq_case_free(c);
        snprintf(err, AX_ERR_LEN, "out of memory for M=%d N=%d K=%d", M, N, K);
        return -1;
    }
    uint64_t s = seed;
    double ws = 1.0 / sqrt((double)K);
    for (size_t i = 0; i < (size_t)M * K; i++) c->x[i] = to_f16_clamped(draw(&s, heavy));
    for (size_t i = 0; i < (size_t)N * K; i++) c->w[i] = to_f16_clamped(draw(&s, heavy) * ws);
    if (c->perm) {
        if (perm_random) {
            for (int i = 0; i < K; i++) c->perm[i] = i;
            for (int i = K - 1; i > 0; i--) {
                int j = (int)(splitmix64(&s) % (uint64_t)(i + 1));
                int32_t t = c->perm[i]; c->perm[i] = c->perm[j]; c->perm[j] = t;
            }
        } else {
            aq_case_perm_sumsq(c->x, M, K, c->perm);
        }
    }
    return 0;
}

int aq_case_run(aq_case *c, int nthreads, char *err) {
    if (c->have_q) return 0;
    if (aq_quantize_x(&c->mode, c->x, c->M, c->K, c->perm, &c->qx, err)) return -1;
    if (aq_quantize_w(&c->mode, c->w, c->N, c->K, c->perm, &c->qw, err)) return -1;
    if (!(c->y = malloc((size_t)c->M * c->N * 2))) {
        snprintf(err, AX_ERR_LEN, "out of memory for Y [%d, %d]", c->M, c->N);
        return -1;
    }
    if (aq_gemm(&c->qx, &c->qw, c->k_splits, c->y, nthreads, err)) return -1;
    c->have_q = 1;
    return 0;
}

