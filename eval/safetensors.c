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

/* A JSON number that is a non-negative integer exactly representable (< 2^53). */
static int json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
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

static int parse_header(ae_st_file *f, const char *hdr, size_t hlen, uint64_t data_len, char *err) {
    const char *P = f->path;
    const char *end = NULL;
    if (hlen == 0 || hdr[0] != '{') {
        ax_seterr(err, "%s: header does not start with '{' (not a safetensors file?)", P);
        return -1;
    }
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, hlen, &end, 0);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        ax_seterr(err, "%s: header is not valid JSON (near header byte %ld)", P, e ? (long)(e - hdr) : -1L);
        return -1;
    }
    int rc = -1;
    if (!cJSON_IsObject(root)) { ax_seterr(err, "%s: header is not a JSON object", P); goto out; }
    for (const char *q = end; q && q < hdr + hlen; q++)   /* only padding may follow the object */
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r' && *q != 0) {
            ax_seterr(err, "%s: junk after the header's JSON object (header byte %ld)", P, (long)(q - hdr));
            goto out;
        }
    int n = 0;
    for (const cJSON *e = root->child; e; e = e->next)
        if (strcmp(e->string, "__metadata__")) n++;
    f->t = calloc((size_t)(n ? n : 1), sizeof *f->t);
    if (!f->t) { ax_seterr(err, "%s: out of memory", P); goto out; }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) { ax_seterr(err, "%s: __metadata__ is not an object", P); goto out; }
            for (const cJSON *m = e->child; m; m = m->next)
                if (!cJSON_IsString(m)) {
                    ax_seterr(err, "%s: __metadata__ value '%s' is not a string", P, m->string);
                    goto out;
                }
            continue;
        }
        ae_st_tensor *t = &f->t[f->n];
        if (!(t->name = strdup(e->string))) { ax_seterr(err, "%s: out of memory", P); goto out; }
        f->n++;
        char what[AX_PATH_LEN + 600];
        snprintf(what, sizeof what, "%.4000s: tensor '%.500s'", P, t->name);
        if (!cJSON_IsObject(e)) { ax_seterr(err, "%s is not an object", what); goto out; }
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(dt)) { ax_seterr(err, "%s has no \"dtype\" string", what); goto out; }
        if (ae_dtype_parse(dt->valuestring, &t->dtype, what, err)) goto out;
        if (!cJSON_IsArray(sh)) { ax_seterr(err, "%s has no \"shape\" array", what); goto out; }
        t->ndim = cJSON_GetArraySize(sh);
        if (t->ndim > AE_ST_MAX_DIMS) { ax_seterr(err, "%s has %d dimensions (max %d)", what, t->ndim, AE_ST_MAX_DIMS); goto out; }
        uint64_t numel = 1;
        int i = 0;
        for (const cJSON *d = sh->child; d; d = d->next, i++) {
            uint64_t v;
            if (json_u64(d, &v) || v > (uint64_t)INT64_MAX) {
                ax_seterr(err, "%s: shape[%d] is not a non-negative integer", what, i); goto out;
            }
            t->shape[i] = (int64_t)v;
            if (v && numel > UINT64_MAX / v) { ax_seterr(err, "%s: shape overflows", what); goto out; }
            numel *= v;
        }
        t->numel = numel;
        if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || json_u64(off->child, &t->begin) ||
            json_u64(off->child->next, &t->end)) {
            ax_seterr(err, "%s: \"data_offsets\" is not [begin, end] with non-negative integers", what);
            goto out;
        }
        if (t->end < t->begin) {
            ax_seterr(err, "%s: data_offsets [%llu, %llu) has end < begin", what,
                   (unsigned long long)t->begin, (unsigned long long)t->end);
            goto out;
        }
        if (t->end > data_len) {
            ax_seterr(err, "%s: data_offsets [%llu, %llu) exceed the data section (%llu bytes; file size %zu)",
                   what, (unsigned long long)t->begin, (unsigned long long)t->end,
                   (unsigned long long)data_len, f->size);
            goto out;
        }
        size_t es = ae_dtype_size(t->dtype);
        if (numel > UINT64_MAX / es || numel * es != t->end - t->begin) {
            ax_seterr(err, "%s: shape has %llu elements of %s (%llu bytes) but data_offsets [%llu, %llu) span %llu bytes",
                   what, (unsigned long long)numel, ae_dtype_name(t->dtype),
                   (unsigned long long)(numel * es), (unsigned long long)t->begin,
                   (unsigned long long)t->end, (unsigned long long)(t->end - t->begin));
            goto out;
        }
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
    snprintf(f->path, sizeof f->path, "%s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
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
