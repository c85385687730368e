/* ax_util.c — data root, atomic files, JSON envelope, sha256, progress bar (see ax_util.h). */
#include "ax_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void ax_seterr(char *err, const char *fmt, ...) {
    if (!err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, AX_ERR_LEN, fmt, ap);
    va_end(ap);
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int root_ok(const char *root) {
    char p[AX_PATH_LEN];
    snprintf(p, sizeof p, "%.4000s/data", root);
    if (is_dir(p)) return 1;
    snprintf(p, sizeof p, "%.4000s/models", root);
    return is_dir(p);
}

int ax_data_root(char *buf, size_t len, char *err) {
    const char *env = getenv("APEX4_DATA");
    if (env && *env) {
        if (!is_dir(env)) {
            ax_seterr(err, "APEX4_DATA=%s is not a directory", env);
            return -1;
        }
        snprintf(buf, len, "%s", env);
        return 0;
    }
    char cand[3][AX_PATH_LEN];
    int nc = 0;
    snprintf(cand[nc++], AX_PATH_LEN, "../shared");
    snprintf(cand[nc++], AX_PATH_LEN, "../../shared");
    char exe[AX_PATH_LEN];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;   /* dir of the executable: <repo>/build */
        snprintf(cand[nc++], AX_PATH_LEN, "%.4000s/../../shared", exe);
    }
    for (int i = 0; i < nc; i++)
        if (root_ok(cand[i])) {
            char real[AX_PATH_LEN];
            snprintf(buf, len, "%s", realpath(cand[i], real) ? real : cand[i]);
            return 0;
        }
    ax_seterr(err, "no data root found: set APEX4_DATA to a folder holding data/ and models/ "
                "(looked in ../shared, ../../shared and next to the apex4 checkout); README.md "
                "'Data' says where to get the files");
    return -1;
}

int ax_data_file(const char *rel, const char *howto, char *buf, size_t len, char *err) {
    char root[AX_PATH_LEN];
    if (ax_data_root(root, sizeof root, err)) return -1;
    snprintf(buf, len, "%.3000s/%.1000s", root, rel);
    if (access(buf, R_OK) != 0) {
        ax_seterr(err, "%s: %s%s%s", buf, strerror(errno), howto ? "; " : "", howto ? howto : "");
        return -1;
    }
    return 0;
}

void ax_tmp_name(const char *path, char *tmp) {
    snprintf(tmp, AX_PATH_LEN, "%.4000s.tmp.%ld", path, (long)getpid());
}

int ax_rename_into(const char *tmp, const char *path, char *err) {
    if (rename(tmp, path) != 0) {
        ax_seterr(err, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

FILE *ax_atomic_open(const char *path, char *tmp, char *err) {
    ax_tmp_name(path, tmp);
    FILE *f = fopen(tmp, "wb");
    if (!f) ax_seterr(err, "cannot create %s: %s", tmp, strerror(errno));
    return f;
}

int ax_atomic_commit(FILE *f, const char *tmp, const char *path, char *err) {
    int bad = fflush(f) != 0 || ferror(f);
    if (!bad) bad = fsync(fileno(f)) != 0 && errno != EINVAL;
    if (fclose(f) != 0) bad = 1;
    if (bad) {
        ax_seterr(err, "cannot write %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return ax_rename_into(tmp, path, err);
}

void ax_atomic_abort(FILE *f, const char *tmp) {
    if (f) fclose(f);
    unlink(tmp);
}

int ax_write_json(const char *path, const cJSON *doc, char *err) {
    char *s = cJSON_Print(doc);
    if (!s) { ax_seterr(err, "%s: cannot serialise JSON (out of memory)", path); return -1; }
    char tmp[AX_PATH_LEN];
    FILE *f = ax_atomic_open(path, tmp, err);
    if (!f) { free(s); return -1; }
    fputs(s, f);
    fputc('\n', f);
    free(s);
    return ax_atomic_commit(f, tmp, path, err);
}

cJSON *ax_envelope_new(const char *kind) {
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "apex4_version", APEX4_VERSION);
    cJSON_AddStringToObject(d, "git_revision", APEX4_GIT_REV);
    char ts[32];
    time_t now = time(NULL);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    cJSON_AddStringToObject(d, "created_utc", ts);
    cJSON_AddStringToObject(d, "command", kind);
    char host[256] = "unknown";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = 0;
    cJSON_AddStringToObject(d, "host", host);
    return d;
}

/* ---- SHA-256 (FIPS 180-4) ---------------------------------------------------------------------- */
typedef struct { uint32_t h[8]; uint64_t len; uint8_t buf[64]; size_t n; } sha256_ctx;

static const uint32_t K256[64] = {
    0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
    0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
    0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
    0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
    0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
    0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
    0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
    0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static void sha256_block(sha256_ctx *c, const uint8_t *p) {
    uint32_t w[64], a, b, cc, d, e, f, g, h;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4*i] << 24 | (uint32_t)p[4*i+1] << 16 | (uint32_t)p[4*i+2] << 8 | p[4*i+3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i-15], 7) ^ ROR(w[i-15], 18) ^ (w[i-15] >> 3);
        uint32_t s1 = ROR(w[i-2], 17) ^ ROR(w[i-2], 19) ^ (w[i-2] >> 10);
        w[i] = w[i-16] + s0 + w[i-7] + s1;
    }
    a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3]; e = c->h[4]; f = c->h[5]; g = c->h[6]; h = c->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g; g = f; f = e; e = d + t1; d = cc; cc = b; b = a; a = t1 + t2;
    }
    c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d; c->h[4] += e; c->h[5] += f; c->h[6] += g; c->h[7] += h;
}

static void sha256_init(sha256_ctx *c) {
    static const uint32_t h0[8] = {0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19};
    memcpy(c->h, h0, sizeof h0);
    c->len = 0; c->n = 0;
}

static void sha256_update(sha256_ctx *c, const uint8_t *p, size_t n) {
    c->len += n;
    while (n) {
        size_t k = 64 - c->n < n ? 64 - c->n : n;
        memcpy(c->buf + c->n, p, k);
        c->n += k; p += k; n -= k;
        if (c->n == 64) { sha256_block(c, c->buf); c->n = 0; }
    }
}

static void sha256_final(sha256_ctx *c, uint8_t out[32]) {
    uint64_t bits = c->len * 8;
    uint8_t pad = 0x80;
    sha256_update(c, &pad, 1);
    uint8_t z = 0;
    while (c->n != 56) sha256_update(c, &z, 1);
    uint8_t l[8];
    for (int i = 0; i < 8; i++) l[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(c, l, 8);
    for (int i = 0; i < 8; i++) {
        out[4*i] = (uint8_t)(c->h[i] >> 24); out[4*i+1] = (uint8_t)(c->h[i] >> 16);
        out[4*i+2] = (uint8_t)(c->h[i] >> 8); out[4*i+3] = (uint8_t)c->h[i];
    }
}

int ax_sha256_file(const char *path, char out[65], char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) { ax_seterr(err, "%s: %s", path, strerror(errno)); return -1; }
    sha256_ctx c;
    sha256_init(&c);
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) sha256_update(&c, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) { ax_seterr(err, "%s: read error", path); return -1; }
    uint8_t d[32];
    sha256_final(&c, d);
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
    return 0;
}

double ax_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- progress bar ------------------------------------------------------------------------------ */
void ax_progress_start(ax_progress *p, const char *label, long total, const char *unit) {
    memset(p, 0, sizeof *p);
    p->label = label; p->unit = unit; p->total = total;
    p->t0 = p->last = ax_now();
    const char *force = getenv("APEX4_PROGRESS");
    p->tty = isatty(fileno(stderr)) ? 1 : (force && !strcmp(force, "1") ? 2 : 0);
    p->last_decile = -1;
}

static void progress_draw(ax_progress *p, long done, int final) {
    double now = ax_now(), el = now - p->t0;
    double rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 && p->total > done ? (double)(p->total - done) / rate : 0;
    int width = 30, fill = p->total > 0 ? (int)((double)width * (double)done / (double)p->total) : 0;
    if (fill > width) fill = width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "%s%s [%s] %ld/%ld  %.1f %s/s  %s %02d:%02d%s", p->tty == 1 ? "\r" : "", p->label,
            bar, done, p->total, rate, p->unit, final ? "took" : "ETA",
            (int)((final ? el : eta) / 60), (int)(final ? el : eta) % 60,
            (p->tty == 1 && !final) ? "" : "\n");
    fflush(stderr);
}

void ax_progress_update(ax_progress *p, long done) {
    if (!p->tty) return;
    double now = ax_now();
    if (p->tty == 1) {
        if (now - p->last < 0.2) return;
        p->last = now;
        progress_draw(p, done, 0);
    } else {
        int dec = p->total > 0 ? (int)(10 * done / p->total) : 0;
        if (dec == p->last_decile) return;
        p->last_decile = dec;
        progress_draw(p, done, 0);
    }
}

void ax_progress_end(ax_progress *p, long done) {
    if (!p->tty) return;
    progress_draw(p, done, 1);
}

int ax_read_file(const char *path, char **data, size_t *len, char *err) {
    *data = NULL; *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) { ax_seterr(err, "%s: %s", path, strerror(errno)); return -1; }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (!b) { fclose(f); ax_seterr(err, "%s: out of memory", path); return -1; }
    size_t r;
    while ((r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            char *nb = realloc(b, cap * 2);
            if (!nb) { free(b); fclose(f); ax_seterr(err, "%s: out of memory", path); return -1; }
            b = nb; cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(b); ax_seterr(err, "%s: read error", path); return -1; }
    b[n] = 0;
    *data = b; *len = n;
    return 0;
}

/* ---- strict input parsing ---------------------------------------------------------------------- */

#include <ctype.h>
#include <limits.h>
#include <math.h>

/* Walk the raw text once, checking what cJSON accepts but Python/safetensors do not: NUL bytes and
 * \u0000 escapes inside strings. Returns the offending offset or -1. */
static long json_scan_nul(const char *t, size_t len, const char **why) {
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c == 0) { *why = "NUL byte"; return (long)i; }
        if (!in_str) { if (c == '"') in_str = 1; continue; }
        if (c == '"') { in_str = 0; continue; }
        if (c == '\\' && i + 1 < len) {
            if (t[i + 1] == 'u' && i + 5 < len && t[i + 2] == '0' && t[i + 3] == '0' &&
                t[i + 4] == '0' && t[i + 5] == '0') { *why = "\\u0000 escape inside a string"; return (long)i; }
            i++;   /* skip the escaped character (handles \" and \\) */
        }
    }
    return -1;
}

static int key_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Duplicate keys: sort the object's key pointers (O(n log n): a hostile 100 MiB header with a
 * million keys stays cheap), then compare neighbours. */
static int json_check_tree(const cJSON *node, int depth, const char *parent, const char *what, char *err) {
    if (depth > 256) { ax_seterr(err, "%s: JSON nested deeper than 256 levels", what); return -1; }
    if (cJSON_IsObject(node)) {
        size_t n = 0;
        for (const cJSON *a = node->child; a; a = a->next) n++;
        if (n > 1) {
            const char **keys = malloc(n * sizeof *keys);
            if (!keys) { ax_seterr(err, "%s: out of memory checking %zu keys", what, n); return -1; }
            size_t i = 0;
            for (const cJSON *a = node->child; a; a = a->next) keys[i++] = a->string ? a->string : "";
            qsort(keys, n, sizeof *keys, key_cmp);
            for (i = 1; i < n; i++)
                if (!strcmp(keys[i - 1], keys[i])) {
                    ax_seterr(err, "%s: duplicate key \"%.200s\" (in %s)", what, keys[i],
                              parent ? parent : "the top-level object");
                    free(keys);
                    return -1;
                }
            free(keys);
        }
    }
    for (const cJSON *c = node->child; c; c = c->next) {
        char where[256];
        if (c->string) snprintf(where, sizeof where, "\"%.200s\"", c->string);
        else snprintf(where, sizeof where, "%s", parent ? parent : "the top-level array");
        if (json_check_tree(c, depth + 1, where, what, err)) return -1;
    }
    return 0;
}

cJSON *ax_json_parse_strict(const char *text, size_t len, const char *what, char *err) {
    if (!text) { ax_seterr(err, "%s: no JSON text", what); return NULL; }
    const char *why = NULL;
    long bad = json_scan_nul(text, len, &why);
    if (bad >= 0) { ax_seterr(err, "%s: %s (byte %ld)", what, why, bad); return NULL; }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        long off = (e && e >= text && e <= text + len) ? (long)(e - text) : -1;
        ax_seterr(err, "%s: not valid JSON (byte %ld)", what, off);
        return NULL;
    }
    for (const char *p = end; p && p < text + len; p++)
        if (!(*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
            ax_seterr(err, "%s: trailing data after the JSON value (byte %ld)", what, (long)(p - text));
            cJSON_Delete(root);
            return NULL;
        }
    if (json_check_tree(root, 0, NULL, what, err)) { cJSON_Delete(root); return NULL; }
    return root;
}

int ax_parse_long(const char *s, long lo, long hi, const char *what, long *out, char *err) {
    const char *p = s;
    if (p && (*p == '-' || *p == '+')) p++;
    int ok = p && *p;
    for (const char *q = p; ok && *q; q++) if (!isdigit((unsigned char)*q)) ok = 0;
    long v = 0;
    if (ok) {
        errno = 0;
        char *e;
        v = strtol(s, &e, 10);
        if (errno == ERANGE || *e) ok = 0;
    }
    if (!ok || v < lo || v > hi) {
        ax_seterr(err, "%s: expected an integer in [%ld, %ld], got '%.80s'", what, lo, hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

int ax_parse_u64(const char *s, const char *what, uint64_t *out, char *err) {
    int ok = s && *s && isdigit((unsigned char)*s);
    int base = 10;
    const char *digits = s;
    if (ok && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) { base = 16; digits = s + 2; ok = *digits != 0; }
    for (const char *q = digits; ok && *q; q++)
        if (!(base == 16 ? isxdigit((unsigned char)*q) : isdigit((unsigned char)*q))) ok = 0;
    unsigned long long v = 0;
    if (ok) {
        errno = 0;
        char *e;
        v = strtoull(s, &e, base);
        if (errno == ERANGE || *e) ok = 0;
    }
    if (!ok) {
        ax_seterr(err, "%s: expected an unsigned 64-bit integer (decimal or 0x hex), got '%.80s'", what, s ? s : "");
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int ax_parse_double(const char *s, double lo, double hi, const char *what, double *out, char *err) {
    int ok = s && *s && !isspace((unsigned char)*s);
    double v = 0;
    if (ok) {
        errno = 0;
        char *e;
        v = strtod(s, &e);
        if (*e || !isfinite(v)) ok = 0;
    }
    if (!ok || !(v >= lo && v <= hi)) {
        ax_seterr(err, "%s: expected a number in [%g, %g], got '%.80s'", what, lo, hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

int ax_mul_size(size_t a, size_t b, size_t *out, const char *what, char *err) {
    if (a && b > SIZE_MAX / a) {
        ax_seterr(err, "%s: size %zu x %zu overflows", what, a, b);
        return -1;
    }
    *out = a * b;
    return 0;
}

int ax_mul3_size(size_t a, size_t b, size_t c, size_t *out, const char *what, char *err) {
    size_t ab;
    if (ax_mul_size(a, b, &ab, what, err)) return -1;
    if (ab && c > SIZE_MAX / ab) {
        ax_seterr(err, "%s: size %zu x %zu x %zu overflows", what, a, b, c);
        return -1;
    }
    *out = ab * c;
    return 0;
}

int ax_check_out_path(const char *path, const char *opt, char *err) {
    if (!path || !*path) { ax_seterr(err, "%s: empty path", opt); return -1; }
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        ax_seterr(err, "%s '%s': is a directory", opt, path);
        return -1;
    }
    size_t n = strlen(path);
    if (path[n - 1] == '/') { ax_seterr(err, "%s '%s': names a directory, not a file", opt, path); return -1; }
    char dir[AX_PATH_LEN];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path < AX_PATH_LEN - 1 ? slash - path : AX_PATH_LEN - 1), path);
    if (stat(dir, &st) != 0) { ax_seterr(err, "%s '%s': directory '%s' does not exist", opt, path, dir); return -1; }
    if (!S_ISDIR(st.st_mode)) { ax_seterr(err, "%s '%s': '%s' is not a directory", opt, path, dir); return -1; }
    if (access(dir, W_OK | X_OK) != 0) {
        ax_seterr(err, "%s '%s': directory '%s' is not writable (%s)", opt, path, dir, strerror(errno));
        return -1;
    }
    return 0;
}

int ax_parse_size(const char *s, const char *what, double lo, double hi, size_t *out, char *err) {
    static const struct { const char *u; double f; } units[] = {
        {"", 1}, {"B", 1}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0},
        {"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
    };
    if (!s || !*s) { ax_seterr(err, "%s: empty size (e.g. 8GiB)", what); return -1; }
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    int plain = s[0] >= '0' && s[0] <= '9';   /* decimal digits first: no sign, space, hex, inf/nan */
    for (const char *c = s; plain && c < end; c++)
        if (!((*c >= '0' && *c <= '9') || *c == '.' || *c == 'e' || *c == 'E' || *c == '+' || *c == '-')) plain = 0;
    if (end == s || !plain || errno || !isfinite(v)) {
        ax_seterr(err, "%s: '%.40s' is not a size (a number with an optional unit, e.g. 8GiB)", what, s);
        return -1;
    }
    for (size_t k = 0; k < sizeof units / sizeof units[0]; k++)
        if (!strcmp(end, units[k].u)) {
            double b = floor(v * units[k].f);
            if (!(b >= lo && b <= hi)) {
                ax_seterr(err, "%s: %.40s is outside [%.0f, %.0f] bytes", what, s, lo, hi);
                return -1;
            }
            *out = (size_t)b;
            return 0;
        }
    ax_seterr(err, "%s: unknown unit in '%.40s' (use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB)", what, s);
    return -1;
}

cJSON *ax_json_read_file(const char *path, char *err) {
    char *text = NULL;
    size_t len = 0;
    if (ax_read_file(path, &text, &len, err)) return NULL;
    cJSON *doc = ax_json_parse_strict(text, len, path, err);
    free(text);
    return doc;
}
