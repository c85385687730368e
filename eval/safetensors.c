/* safetensors.c — validated, memory-mapped safetensors reader and a streaming writer
 * (see safetensors.h; format: https://github.com/huggingface/safetensors "Format", validation as in
 * safetensors/src/tensor.rs Metadata::validate). */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include "aq.h"
#include "ax_util.h"

#define AE_ST_MAX_HEADER (100u * 1024u * 1024u)   /* safetensors' own limit (MAX_HEADER_SIZE) */


/* ---- dtypes ---------------------------------------------------------------------------------- */
static const struct { const char *name; ae_dtype dt; size_t size; } dtype_table[] = {
    {"F32", AE_DT_F32, 4}, {"F16", AE_DT_F16, 2}, {"BF16", AE_DT_BF16, 2},
};
/* dtypes the safetensors spec defines that apex4 does not load */
static const char *const dtype_unsupported[] = {
    "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F64", "F8_E4M3", "F8_E5M2",
    "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64", NULL,
};

int ae_dtype_parse(const char *s, ae_dtype *out, const char *what, char *err) {
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++)
        if (!strcmp(s, dtype_table[i].name)) { *out = dtype_table[i].dt; return 0; }
    for (int i = 0; dtype_unsupported[i]; i++)
        if (!strcmp(s, dtype_unsupported[i])) {
            ax_seterr(err, "%s: dtype %s is not supported (apex4 loads F32, F16 and BF16)", what, s);
            return -1;
        }
    ax_seterr(err, "%s: unknown dtype '%.40s' (apex4 loads F32, F16 and BF16)", what, s);
    return -1;
}
const char *ae_dtype_name(ae_dtype d) {
    return d == AE_DT_F32 ? "F32" : d == AE_DT_F16 ? "F16" : d == AE_DT_BF16 ? "BF16" : "?";
}
size_t ae_dtype_size(ae_dtype d) { return d == AE_DT_F32 ? 4 : 2; }

/* ---- reader ---------------------------------------------------------------------------------- */
void ae_st_close(ae_st_file *f) {
    if (!f) return;
    if (f->map) munmap((void *)f->map, f->size);
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    free(f->t);
    free(f);
}

/* What a JSON value is, for messages ("got a string"). */
static const char *json_kind(const cJSON *v) {
    return cJSON_IsString(v) ? "a string" : cJSON_IsNumber(v) ? "a number" : cJSON_IsBool(v) ? "a boolean"
         : cJSON_IsNull(v) ? "null" : cJSON_IsArray(v) ? "an array" : cJSON_IsObject(v) ? "an object" : "nothing";
}

/* A JSON number that is a non-negative integer exactly representable (<= 2^53). */
static int json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}
/* "got a string" / "got 2.5" for a value json_u64 rejected. */
static const char *got_of(const cJSON *v, char *buf, size_t len) {
    if (cJSON_IsNumber(v)) {   /* shortest of 15 or 17 digits that reads back exactly */
        snprintf(buf, len, "%.15g", v->valuedouble);
        if (strtod(buf, NULL) != v->valuedouble) snprintf(buf, len, "%.17g", v->valuedouble);
        return buf;
    }
    return json_kind(v);
}

static int cmp_offsets(const void *a, const void *b) {
    const ae_st_tensor *x = *(const ae_st_tensor *const *)a, *y = *(const ae_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}
static int cmp_names(const void *a, const void *b) {
    return strcmp((*(const ae_st_tensor *const *)a)->name, (*(const ae_st_tensor *const *)b)->name);
}

/* One header entry {"dtype": str, "shape": [int...], "data_offsets": [int, int]} into t. */
static int parse_entry(const ae_st_file *f, const cJSON *e, ae_st_tensor *t, uint64_t data_len, char *err) {
    char what[AX_PATH_LEN + 600], got[64];
    snprintf(what, sizeof what, "%.4000s: tensor '%.500s'", f->path, t->name);
    if (!cJSON_IsObject(e)) {
        ax_seterr(err, "%s: header entry must be an object {dtype, shape, data_offsets}, got %s", what, json_kind(e));
        return -1;
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) {
        ax_seterr(err, "%s: \"dtype\" must be a string, got %s", what, dt ? json_kind(dt) : "nothing (missing)");
        return -1;
    }
    if (ae_dtype_parse(dt->valuestring, &t->dtype, what, err)) return -1;
    if (!cJSON_IsArray(sh)) {
        ax_seterr(err, "%s: \"shape\" must be an array of non-negative integers, got %s", what,
                  sh ? json_kind(sh) : "nothing (missing)");
        return -1;
    }
    int nd = cJSON_GetArraySize(sh);
    if (nd > AE_ST_MAX_DIMS) { ax_seterr(err, "%s has %d dimensions (max %d)", what, nd, AE_ST_MAX_DIMS); return -1; }
    t->ndim = nd;
    size_t numel = 1;
    int i = 0;
    for (const cJSON *d = sh->child; d; d = d->next, i++) {
        uint64_t v;
        if (json_u64(d, &v)) {
            ax_seterr(err, "%s: shape[%d] must be a non-negative integer (<= 2^53), got %s", what, i,
                      got_of(d, got, sizeof got));
            return -1;
        }
        t->shape[i] = (int64_t)v;
        char w2[AX_PATH_LEN + 640];
        snprintf(w2, sizeof w2, "%s: shape (element count)", what);
        if (ax_mul_size(numel, (size_t)v, &numel, w2, err)) return -1;
    }
    t->numel = numel;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2) {
        ax_seterr(err, "%s: \"data_offsets\" must be [begin, end] (2 non-negative integers), got %s", what,
                  !off ? "nothing (missing)" : cJSON_IsArray(off) ? "an array of another length" : json_kind(off));
        return -1;
    }
    if (json_u64(off->child, &t->begin) || json_u64(off->child->next, &t->end)) {
        const cJSON *b = json_u64(off->child, &t->begin) ? off->child : off->child->next;
        ax_seterr(err, "%s: \"data_offsets\" must hold 2 non-negative integers (<= 2^53), got %s", what,
                  got_of(b, got, sizeof got));
        return -1;
    }
    if (t->end < t->begin) {
        ax_seterr(err, "%s: data_offsets [%llu, %llu) has end < begin", what, (unsigned long long)t->begin,
                  (unsigned long long)t->end);
        return -1;
    }
    if (t->end > data_len) {
        ax_seterr(err, "%s: data_offsets [%llu, %llu) exceed the data section (%llu bytes; file size %zu)", what,
                  (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)data_len, f->size);
        return -1;
    }
    size_t bytes;
    char w3[AX_PATH_LEN + 640];
    snprintf(w3, sizeof w3, "%s: shape x dtype size (bytes)", what);
    if (ax_mul_size(numel, ae_dtype_size(t->dtype), &bytes, w3, err)) return -1;
    if ((uint64_t)bytes != t->end - t->begin) {
        ax_seterr(err, "%s: shape has %zu elements of %s (%zu bytes) but data_offsets [%llu, %llu) span %llu bytes",
                  what, numel, ae_dtype_name(t->dtype), bytes, (unsigned long long)t->begin,
                  (unsigned long long)t->end, (unsigned long long)(t->end - t->begin));
        return -1;
    }
    return 0;
}

static int parse_header(ae_st_file *f, const char *hdr, size_t hlen, uint64_t data_len, char *err) {
    const char *P = f->path;
    if (hlen == 0 || hdr[0] != '{') {
        ax_seterr(err, "%s: header does not start with '{' (not a safetensors file?)", P);
        return -1;
    }
    /* strict: NUL bytes, \u0000 escapes, duplicate names and anything but the space padding after
     * the object are errors (as safetensors' serde_json parse) */
    char what[AX_PATH_LEN + 16];
    snprintf(what, sizeof what, "%s: header", P);
    cJSON *root = ax_json_parse_strict(hdr, hlen, what, err);
    if (!root) return -1;
    int rc = -1;
    if (!cJSON_IsObject(root)) { ax_seterr(err, "%s: header is not a JSON object", P); goto out; }
    int n = 0;
    for (const cJSON *e = root->child; e; e = e->next)
        if (strcmp(e->string, "__metadata__")) n++;
    f->t = calloc((size_t)(n ? n : 1), sizeof *f->t);
    if (!f->t) { ax_seterr(err, "%s: out of memory", P); goto out; }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) {
                ax_seterr(err, "%s: \"__metadata__\" must be an object of strings, got %s", P, json_kind(e));
                goto out;
            }
            for (const cJSON *m = e->child; m; m = m->next)
                if (!cJSON_IsString(m)) {
                    ax_seterr(err, "%s: \"__metadata__\" value \"%.200s\" must be a string, got %s", P, m->string,
                              json_kind(m));
                    goto out;
                }
            continue;
        }
        ae_st_tensor *t = &f->t[f->n];
        if (!(t->name = strdup(e->string))) { ax_seterr(err, "%s: out of memory", P); goto out; }
        f->n++;
        if (parse_entry(f, e, t, data_len, err)) goto out;
    }
    /* duplicate names, then the tiling of the data section */
    ae_st_tensor **ord = malloc((size_t)(f->n ? f->n : 1) * sizeof *ord);
    if (!ord) { ax_seterr(err, "%s: out of memory", P); goto out; }
    for (int i = 0; i < f->n; i++) ord[i] = &f->t[i];
    qsort(ord, (size_t)f->n, sizeof *ord, cmp_names);
    for (int i = 1; i < f->n; i++)
        if (!strcmp(ord[i]->name, ord[i - 1]->name)) {
            ax_seterr(err, "%s: tensor '%s' appears twice in the header", P, ord[i]->name);
            free(ord);
            goto out;
        }
    qsort(ord, (size_t)f->n, sizeof *ord, cmp_offsets);
    uint64_t pos = 0;
    for (int i = 0; i < f->n; i++) {
        const ae_st_tensor *t = ord[i];
        if (t->begin < pos) {
            ax_seterr(err, "%s: tensor '%s' data_offsets [%llu, %llu) overlap tensor '%s'", P, t->name,
                   (unsigned long long)t->begin, (unsigned long long)t->end, ord[i - 1]->name);
            free(ord);
            goto out;
        }
        if (t->begin > pos) {
            ax_seterr(err, "%s: bytes [%llu, %llu) of the data section belong to no tensor (before '%s')", P,
                   (unsigned long long)pos, (unsigned long long)t->begin, t->name);
            free(ord);
            goto out;
        }
        pos = t->end;
    }
    free(ord);
    if (pos != data_len) {
        ax_seterr(err, "%s: the data section has %llu bytes but the tensors cover %llu (trailing bytes)", P,
               (unsigned long long)data_len, (unsigned long long)pos);
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

int ae_st_open(const char *path, ae_st_file **out, char *err) {
    *out = NULL;
    ae_st_file *f = calloc(1, sizeof *f);
    if (!f) { ax_seterr(err, "%s: out of memory", path); return -1; }
    if (!*path) { ax_seterr(err, "safetensors file: empty path"); free(f); return -1; }
    if (strlen(path) >= sizeof f->path) {
        ax_seterr(err, "%.200s...: path is %zu bytes, longer than the %zu supported", path, strlen(path),
                  sizeof f->path - 1);
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);   /* O_NONBLOCK: a FIFO must not hang us */
    if (fd < 0) { ax_seterr(err, "%s: %s", path, strerror(errno)); free(f); return -1; }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        ax_seterr(err, "%s: not a regular file", path);
        close(fd); free(f);
        return -1;
    }
    f->size = (size_t)st.st_size;
    if (f->size < 8) {
        ax_seterr(err, "%s: %zu bytes, too short for the 8-byte header length (truncated?)", path, f->size);
        close(fd); free(f);
        return -1;
    }
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) { ax_seterr(err, "%s: mmap: %s", path, strerror(errno)); free(f); return -1; }
    f->map = m;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | f->map[i];   /* little-endian u64 */
    if (hl > AE_ST_MAX_HEADER) {
        ax_seterr(err, "%s: header length %llu is larger than safetensors' limit of %u bytes (corrupt file?)",
               path, (unsigned long long)hl, AE_ST_MAX_HEADER);
        ae_st_close(f);
        return -1;
    }
    if (hl > f->size - 8) {
        ax_seterr(err, "%s: header length %llu exceeds the file size %zu (truncated?)", path,
               (unsigned long long)hl, f->size);
        ae_st_close(f);
        return -1;
    }
    f->data_off = 8 + (size_t)hl;
    if (parse_header(f, (const char *)f->map + 8, (size_t)hl, (uint64_t)(f->size - f->data_off), err)) {
        ae_st_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

const ae_st_tensor *ae_st_find(const ae_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

int ae_st_read_f32(const ae_st_file *f, const ae_st_tensor *t, float *dst, char *err) {
    const uint8_t *p = f->map + f->data_off + t->begin;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case AE_DT_F32:
        memcpy(dst, p, n * 4);   /* little-endian host (x86-64, aarch64); may be unaligned */
        break;
    case AE_DT_F16:
        for (size_t i = 0; i < n; i++) dst[i] = aq_f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        break;
    case AE_DT_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = aq_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        break;
    }
    for (size_t i = 0; i < n; i++)
        if (!isfinite(dst[i])) {
            ax_seterr(err, "%s: tensor '%s' holds a non-finite value (%s) at flat index %zu", f->path, t->name,
                   isnan(dst[i]) ? "NaN" : "inf", i);
            return -1;
        }
    return 0;
}

/* ---- model.safetensors.index.json ----------------------------------------------------------- */
void ae_st_index_free(ae_st_index *x) {
    if (!x) return;
    for (int i = 0; i < x->n_files; i++) free(x->files[i]);
    for (int i = 0; i < x->n; i++) free(x->names[i]);
    free(x->files); free(x->names); free(x->file);
    free(x);
}

/* Sort tensor i by name, carrying file[i] along. */
typedef struct { char *name; int file; } idx_item;
static int cmp_idx(const void *a, const void *b) { return strcmp(((const idx_item *)a)->name, ((const idx_item *)b)->name); }
/* Group entries by shard file name without a quadratic scan: sort (file name, entry order). */
typedef struct { const char *fn; int i; } fn_item;
static int cmp_fn(const void *a, const void *b) {
    const fn_item *x = a, *y = b;
    int c = strcmp(x->fn, y->fn);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}
static int cmp_first(const void *a, const void *b) {
    const fn_item *x = a, *y = b;
    return (x->i > y->i) - (x->i < y->i);
}

int ae_st_index_load(const char *path, ae_st_index **out, char *err) {
    *out = NULL;
    if (!path || !*path) { ax_seterr(err, "safetensors index: empty path"); return -1; }
    if (strlen(path) >= sizeof ((ae_st_index *)0)->path) {
        ax_seterr(err, "%.200s...: path is %zu bytes, longer than the %d supported", path, strlen(path), 4095);
        return -1;
    }
    cJSON *root = ax_json_read_file(path, err);
    if (!root) return -1;
    ae_st_index *x = calloc(1, sizeof *x);
    idx_item *items = NULL;
    fn_item *fi = NULL, *groups = NULL;
    int *gid = NULL, n = 0, rc = -1;
    if (!x) { ax_seterr(err, "%s: out of memory", path); goto out; }
    if (!cJSON_IsObject(root)) { ax_seterr(err, "%s: must be a JSON object, got %s", path, json_kind(root)); goto out; }
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
    if (meta && !cJSON_IsNull(meta) && !cJSON_IsObject(meta)) {
        ax_seterr(err, "%s: \"metadata\" must be an object, got %s", path, json_kind(meta));
        goto out;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm) || !wm->child) {
        ax_seterr(err, "%s: \"weight_map\" must be a non-empty object {tensor name: shard file name}, got %s", path,
                  !wm ? "nothing (missing)" : cJSON_IsObject(wm) ? "an empty object" : json_kind(wm));
        goto out;
    }
    n = cJSON_GetArraySize(wm);
    x->files = calloc((size_t)n, sizeof *x->files);
    x->names = calloc((size_t)n, sizeof *x->names);
    x->file = calloc((size_t)n, sizeof *x->file);
    items = calloc((size_t)n, sizeof *items);
    fi = calloc((size_t)n, sizeof *fi);
    groups = calloc((size_t)n, sizeof *groups);
    gid = calloc((size_t)n, sizeof *gid);
    if (!x->files || !x->names || !x->file || !items || !fi || !groups || !gid) {
        ax_seterr(err, "%s: out of memory", path);
        goto out;
    }
    int i = 0;
    for (const cJSON *e = wm->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e)) {
            ax_seterr(err, "%s: weight_map[\"%.200s\"] must be a shard file name (a string), got %s", path, e->string,
                      json_kind(e));
            goto out;
        }
        const char *fn = e->valuestring;
        /* a plain file name in the checkpoint folder: nothing that climbs out of it or into a
         * subfolder (NUL bytes were already rejected by the strict parse) */
        if (!*fn || strchr(fn, '/') || !strcmp(fn, ".") || !strcmp(fn, "..")) {
            ax_seterr(err, "%s: weight_map[\"%.200s\"] = \"%.200s\" is not a file name in the checkpoint folder "
                      "(empty, '.', '..' or containing '/')", path, e->string, fn);
            goto out;
        }
        fi[i].fn = fn;
        fi[i].i = i;
        if (!(items[i].name = strdup(e->string))) { ax_seterr(err, "%s: out of memory", path); goto out; }
    }
    /* distinct shard names, numbered in order of first use, in O(n log n) (a hostile index may
     * list millions of entries): sort by (name, order); each group's first entry has its smallest
     * order; number the groups by that order */
    qsort(fi, (size_t)n, sizeof *fi, cmp_fn);
    int ng = 0;
    for (int j = 0; j < n; j++)
        if (j == 0 || strcmp(fi[j].fn, fi[j - 1].fn)) groups[ng++] = fi[j];
    qsort(groups, (size_t)ng, sizeof *groups, cmp_first);
    for (int g = 0; g < ng; g++) {
        if (!(x->files[g] = strdup(groups[g].fn))) { ax_seterr(err, "%s: out of memory", path); goto out; }
        x->n_files = g + 1;
        gid[groups[g].i] = g;   /* file id, kept at the group's first entry */
    }
    for (int j = 0, first = 0; j < n; j++) {
        if (j > 0 && strcmp(fi[j].fn, fi[j - 1].fn)) first = j;
        items[fi[j].i].file = gid[fi[first].i];
    }
    qsort(items, (size_t)n, sizeof *items, cmp_idx);
    for (i = 0; i < n; i++) { x->names[i] = items[i].name; x->file[i] = items[i].file; items[i].name = NULL; }
    x->n = n;
    snprintf(x->path, sizeof x->path, "%s", path);
    rc = 0;
out:
    if (items) for (int j = 0; j < n; j++) free(items[j].name);
    free(items); free(fi); free(groups); free(gid);
    cJSON_Delete(root);
    if (rc) ae_st_index_free(x);
    else *out = x;
    return rc;
}

const char *ae_st_index_file(const ae_st_index *x, const char *tensor) {
    int lo = 0, hi = x->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(x->names[mid], tensor);
        if (!c) return x->files[x->file[mid]];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

/* ---- writer ---------------------------------------------------------------------------------- */
struct ae_st_writer {
    FILE     *fp;
    char      tmp[AX_PATH_LEN], path[AX_PATH_LEN];
    int       n, next;
    char    **names;     /* (n) */
    ae_dtype *dt;        /* (n) */
    uint64_t *numel;     /* (n) */
    uint8_t  *buf; size_t buf_cap;
};

static void writer_free(ae_st_writer *w) {
    if (!w) return;
    if (w->names) for (int i = 0; i < w->n; i++) free(w->names[i]);
    free(w->names); free(w->dt); free(w->numel); free(w->buf);
    free(w);
}

void ae_st_write_abort(ae_st_writer *w) {
    if (!w) return;
    if (w->fp) ax_atomic_abort(w->fp, w->tmp);
    writer_free(w);
}

/* fp32 -> bf16 bits, round to nearest even (finite inputs; overflow rounds to inf). */
static uint16_t f32_to_bf16_rne(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

int ae_st_write_begin(const char *path, int n, const char *const *names, const ae_dtype *dtypes,
                      const int *ndims, const int64_t *const *shapes, ae_st_writer **out, char *err) {
    *out = NULL;
    ae_st_writer *w = calloc(1, sizeof *w);
    cJSON *hdr = cJSON_CreateObject();
    char *txt = NULL;
    if (!w || !hdr) goto oom;
    snprintf(w->path, sizeof w->path, "%s", path);
    w->n = n;
    w->names = calloc((size_t)(n ? n : 1), sizeof *w->names);
    w->dt = calloc((size_t)(n ? n : 1), sizeof *w->dt);
    w->numel = calloc((size_t)(n ? n : 1), sizeof *w->numel);
    if (!w->names || !w->dt || !w->numel) goto oom;
    cJSON *meta = cJSON_AddObjectToObject(hdr, "__metadata__");
    if (!meta || !cJSON_AddStringToObject(meta, "format", "pt")) goto oom;
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < ndims[i]; d++) numel *= (uint64_t)shapes[i][d];
        uint64_t bytes = numel * ae_dtype_size(dtypes[i]);
        cJSON *t = cJSON_AddObjectToObject(hdr, names[i]);
        if (!t || !cJSON_AddStringToObject(t, "dtype", ae_dtype_name(dtypes[i]))) goto oom;
        cJSON *sh = cJSON_AddArrayToObject(t, "shape");
        cJSON *of = cJSON_AddArrayToObject(t, "data_offsets");
        if (!sh || !of) goto oom;
        for (int d = 0; d < ndims[i]; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)shapes[i][d]));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
        if (!(w->names[i] = strdup(names[i]))) goto oom;
        w->dt[i] = dtypes[i];
        w->numel[i] = numel;
    }
    txt = cJSON_PrintUnformatted(hdr);
    if (!txt) goto oom;
    size_t hl = strlen(txt), padded = (hl + 7) / 8 * 8;
    if (!(w->fp = ax_atomic_open(path, w->tmp, err))) { free(txt); cJSON_Delete(hdr); writer_free(w); return -1; }
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int bad = fwrite(le, 1, 8, w->fp) != 8 || fwrite(txt, 1, hl, w->fp) != hl;
    for (size_t i = hl; i < padded && !bad; i++) bad = fputc(' ', w->fp) == EOF;
    free(txt);
    cJSON_Delete(hdr);
    if (bad) { ax_seterr(err, "%s: write error", w->tmp); ae_st_write_abort(w); return -1; }
    *out = w;
    return 0;
oom:
    free(txt);
    cJSON_Delete(hdr);
    writer_free(w);
    ax_seterr(err, "%s: out of memory", path);
    return -1;
}

int ae_st_write_tensor(ae_st_writer *w, const float *data, char *err) {
    if (w->next >= w->n) { ax_seterr(err, "%s: more tensors written than declared (%d)", w->path, w->n); return -1; }
    int i = w->next++;
    size_t n = (size_t)w->numel[i], es = ae_dtype_size(w->dt[i]);
    const char *name = w->names[i];
    for (size_t k = 0; k < n; k++)
        if (!isfinite(data[k])) {
            ax_seterr(err, "%s: tensor '%s' value at flat index %zu is not finite", w->path, name, k);
            return -1;
        }
    const size_t chunk = 1u << 16;
    if (!w->buf) {
        if (!(w->buf = malloc(chunk * 4))) { ax_seterr(err, "%s: out of memory", w->path); return -1; }
    }
    for (size_t s = 0; s < n; s += chunk) {
        size_t m = n - s < chunk ? n - s : chunk;
        for (size_t k = 0; k < m; k++) {
            float v = data[s + k];
            if (w->dt[i] == AE_DT_F32) {
                uint32_t u;
                memcpy(&u, &v, 4);
                for (int b = 0; b < 4; b++) w->buf[4 * k + (size_t)b] = (uint8_t)(u >> (8 * b));
            } else {
                uint16_t h = w->dt[i] == AE_DT_F16 ? aq_f32_to_f16(v) : f32_to_bf16_rne(v);
                if ((h & 0x7FFFu) >= (w->dt[i] == AE_DT_F16 ? 0x7C00u : 0x7F80u)) {
                    ax_seterr(err, "%s: tensor '%s' value %g at flat index %zu overflows %s", w->path, name,
                           (double)v, s + k, ae_dtype_name(w->dt[i]));
                    return -1;
                }
                w->buf[2 * k] = (uint8_t)h;
                w->buf[2 * k + 1] = (uint8_t)(h >> 8);
            }
        }
        if (fwrite(w->buf, es, m, w->fp) != m) { ax_seterr(err, "%s: write error", w->tmp); return -1; }
    }
    return 0;
}

int ae_st_write_end(ae_st_writer *w, char *err) {
    if (w->next != w->n) {
        ax_seterr(err, "%s: %d of %d tensors written", w->path, w->next, w->n);
        ae_st_write_abort(w);
        return -1;
    }
    int rc = ax_atomic_commit(w->fp, w->tmp, w->path, err);
    w->fp = NULL;
    writer_free(w);
    return rc;
}
