/* tokenizer.c — Hugging Face tokenizer.json, BPE model with byte fallback (see tokenizer.h).
 *
 * Follows huggingface/tokenizers (tokenizers/src): normalizers/{strip,prepend,replace}.rs,
 * models/bpe/{model,word}.rs (merge_word + Word::merge_all), decoders/{byte_fallback,fuse,strip}.rs
 * and normalizers/replace.rs for the Replace decoder.
 *
 * Encoding = normalizer sequence on the whole text, then BPE on the normalized string as ONE word
 * (there is no pre-tokenizer in the LLaMA-2 / SentencePiece-style files): every character becomes a
 * symbol (vocab piece, else its UTF-8 bytes as <0xXX> byte-fallback pieces, else <unk>), then merges
 * are applied lowest rank first (ties: leftmost), with a binary heap, exactly as Word::merge_all
 * does. This is O(n log n) in the text length, so no pre-splitting is needed (and none is done:
 * the ids are those of the whole-string algorithm by construction).
 *
 * Not supported (rejected at load with a message naming the feature): pre-tokenizers (ByteLevel,
 * Metaspace, Split …: LLaMA-3 style byte-level BPE is a later step), normalizers other than
 * Prepend / Replace / Strip (and Sequence of them), decoders other than Replace / ByteFallback /
 * Fuse / Strip, continuing_subword_prefix, end_of_word_suffix, BPE dropout, non-BPE models.
 * Deliberate difference from HF: added tokens ("<s>", "</s>", "<unk>") occurring in the text are not
 * split out; the text is taken literally (what lm-eval feeds a LLaMA model). */
#include "tokenizer.h"

#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>
#include "aq.h"
#include "ax_util.h"


/* ---- small growable byte buffer ------------------------------------------------------------- */
typedef struct { char *p; size_t n, cap; } sbuf;

static int sb_reserve(sbuf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) return -1;
    b->p = np; b->cap = cap;
    return 0;
}
static int sb_add(sbuf *b, const char *s, size_t n) {
    if (sb_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

/* ---- UTF-8 ----------------------------------------------------------------------------------- */
/* Length of the valid UTF-8 sequence at s[0..n) (1..4) and its code point, or 0 if invalid
 * (overlong forms, surrogates and > U+10FFFF are invalid, as in Rust's str). */
static int utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    int len;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0) { len = 2; v = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; v = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* Rust char::is_whitespace (Unicode White_Space property). */
static int is_unicode_ws(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* ---- hash maps ------------------------------------------------------------------------------- */
static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h;
}
static uint64_t mix64(uint64_t x) {   /* splitmix64 finalizer */
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27; x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

typedef struct { int32_t rank, new_id; } merge_val;

typedef enum { NORM_PREPEND, NORM_REPLACE_STR, NORM_REPLACE_REGEX, NORM_STRIP } norm_kind;
typedef struct {
    norm_kind kind;
    char     *a;          /* prepend text / pattern string                                       */
    char     *b;          /* replacement content                                                 */
    int       left, right;/* Strip sides                                                         */
    regex_t   re;         /* NORM_REPLACE_REGEX                                                  */
    int       re_ok;
} norm_step;

typedef enum { DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP } dec_kind;
typedef struct {
    dec_kind kind;
    char    *a, *b;       /* Replace pattern / content; Strip: a = content char (UTF-8)          */
    int      start, stop; /* Strip                                                               */
} dec_step;

struct ae_tokenizer {
    int        n_vocab;       /* max id + 1 over the model vocab and the added tokens           */
    char     **piece;         /* (n_vocab) NUL-terminated pieces; NULL for holes                 */
    uint32_t  *piece_len;     /* (n_vocab) byte lengths                                          */
    uint8_t   *special;       /* (n_vocab) 1 for added tokens marked special                     */
    /* vocab map: open addressing, piece -> id (model vocab only, as in BPE::vocab)              */
    int32_t   *vmap; size_t vcap;
    /* merges map: (id_a, id_b) -> (rank, new_id)                                                */
    uint64_t  *mkey; merge_val *mval; size_t mcap;
    int32_t    byte_id[256];  /* id of "<0xXX>" or -1                                            */
    int        unk_id;        /* -1 if none                                                      */
    int        byte_fallback, fuse_unk, ignore_merges;
    int        bos_id, eos_id;
    norm_step *norm; int n_norm;
    dec_step  *dec; int n_dec; int has_decoder;
};

static int vmap_find(const ae_tokenizer *t, const char *s, size_t n) {
    size_t mask = t->vcap - 1;
    for (size_t i = fnv1a(s, n) & mask;; i = (i + 1) & mask) {
        int32_t id = t->vmap[i];
        if (id < 0) return -1;
        if (t->piece_len[id] == n && !memcmp(t->piece[id], s, n)) return id;
    }
}
static void vmap_insert(ae_tokenizer *t, int id) {
    size_t mask = t->vcap - 1;
    size_t i = fnv1a(t->piece[id], t->piece_len[id]) & mask;
    while (t->vmap[i] >= 0) i = (i + 1) & mask;
    t->vmap[i] = id;
}
static const merge_val *mmap_find(const ae_tokenizer *t, int a, int b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t mask = t->mcap - 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (t->mkey[i] == UINT64_MAX) return NULL;
        if (t->mkey[i] == key) return &t->mval[i];
    }
}
/* Returns 1 if inserted, 0 if the key was already present (HF keeps the first: lower rank). */
static int mmap_insert(ae_tokenizer *t, int a, int b, merge_val v) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t mask = t->mcap - 1;
    size_t i = mix64(key) & mask;
    for (; t->mkey[i] != UINT64_MAX; i = (i + 1) & mask)
        if (t->mkey[i] == key) return 0;
    t->mkey[i] = key; t->mval[i] = v;
    return 1;
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

void ae_tokenizer_free(ae_tokenizer *t) {
    if (!t) return;
    if (t->piece) for (int i = 0; i < t->n_vocab; i++) free(t->piece[i]);
    free(t->piece); free(t->piece_len); free(t->special);
    free(t->vmap); free(t->mkey); free(t->mval);
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a); free(t->norm[i].b);
        if (t->norm[i].re_ok) regfree(&t->norm[i].re);
    }
    free(t->norm);
    for (int i = 0; i < t->n_dec; i++) { free(t->dec[i].a); free(t->dec[i].b); }
    free(t->dec);
    free(t);
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* ---- loading --------------------------------------------------------------------------------- */
static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
static int jnull(const cJSON *o, const char *key) {   /* absent or null */
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return !v || cJSON_IsNull(v);
}

/* The regex Replace normalizer: HF compiles the pattern with Oniguruma; we use POSIX ERE, which
 * agrees on the subset accepted here (literal characters, bracket lists, ( ) and the repetition
 * operators * + ? {m,n}). Alternation and backslash escapes (\s, \d, …) are rejected because their
 * meaning or match choice (leftmost-longest vs leftmost-first) can differ. */
static int regex_supported(const char *p) {
    if (!*p) return 0;
    for (; *p; p++)
        if (*p == '\\' || *p == '|') return 0;
    return 1;
}

static int load_normalizer(ae_tokenizer *t, const cJSON *n, const char *path, char *err) {
    if (!n || cJSON_IsNull(n)) return 0;
    const cJSON *list = NULL;
    const char *type = jstr(n, "type");
    if (!type) { ax_seterr(err, "%s: normalizer has no \"type\"", path); return -1; }
    int count = 1;
    if (!strcmp(type, "Sequence")) {
        list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list)) { ax_seterr(err, "%s: normalizer Sequence without a \"normalizers\" array", path); return -1; }
        count = cJSON_GetArraySize(list);
    }
    t->norm = calloc((size_t)(count ? count : 1), sizeof *t->norm);
    if (!t->norm) { ax_seterr(err, "%s: out of memory", path); return -1; }
    for (int i = 0; i < count; i++) {
        const cJSON *s = list ? cJSON_GetArrayItem(list, i) : n;
        const char *ty = jstr(s, "type");
        norm_step *st = &t->norm[t->n_norm];
        if (!ty) { ax_seterr(err, "%s: normalizer %d has no \"type\"", path, i); return -1; }
        if (!strcmp(ty, "Prepend")) {
            const char *p = jstr(s, "prepend");
            if (!p) { ax_seterr(err, "%s: normalizer Prepend without \"prepend\"", path); return -1; }
            st->kind = NORM_PREPEND;
            if (!(st->a = xstrdup(p))) { ax_seterr(err, "%s: out of memory", path); return -1; }
        } else if (!strcmp(ty, "Replace")) {
            const cJSON *pat = cJSON_GetObjectItemCaseSensitive(s, "pattern");
            const char *content = jstr(s, "content");
            const char *ps = jstr(pat, "String"), *pr = jstr(pat, "Regex");
            if (!content || (!ps && !pr)) {
                ax_seterr(err, "%s: normalizer Replace needs \"pattern\" {String|Regex} and \"content\"", path);
                return -1;
            }
            if (ps && !*ps) { ax_seterr(err, "%s: normalizer Replace with an empty pattern", path); return -1; }
            st->kind = ps ? NORM_REPLACE_STR : NORM_REPLACE_REGEX;
            st->a = xstrdup(ps ? ps : pr);
            st->b = xstrdup(content);
            if (!st->a || !st->b) { ax_seterr(err, "%s: out of memory", path); return -1; }
            if (pr) {
                if (!regex_supported(pr)) {
                    ax_seterr(err, "%s: normalizer Replace regex '%s' is not supported (only literal "
                                "characters, [..], (..), *, +, ?, {m,n}; no alternation or backslash escapes)",
                           path, pr);
                    t->n_norm++;
                    return -1;
                }
                if (regcomp(&st->re, pr, REG_EXTENDED)) {
                    ax_seterr(err, "%s: normalizer Replace regex '%s' does not compile", path, pr);
                    t->n_norm++;
                    return -1;
                }
                st->re_ok = 1;
            }
        } else if (!strcmp(ty, "Strip")) {
            const cJSON *l = cJSON_GetObjectItemCaseSensitive(s, "strip_left");
            const cJSON *r = cJSON_GetObjectItemCaseSensitive(s, "strip_right");
            st->kind = NORM_STRIP;
            st->left = l ? cJSON_IsTrue(l) : 1;
            st->right = r ? cJSON_IsTrue(r) : 1;
        } else {
            ax_seterr(err, "%s: normalizer '%s' is not supported (supported: Prepend, Replace, Strip, "
                        "Sequence of them)", path, ty);
            return -1;
        }
        t->n_norm++;
    }
    return 0;
}

static int load_decoder(ae_tokenizer *t, const cJSON *d, const char *path, char *err) {
    if (!d || cJSON_IsNull(d)) return 0;
    t->has_decoder = 1;
    const cJSON *list = NULL;
    const char *type = jstr(d, "type");
    if (!type) { ax_seterr(err, "%s: decoder has no \"type\"", path); return -1; }
    int count = 1;
    if (!strcmp(type, "Sequence")) {
        list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
        if (!cJSON_IsArray(list)) { ax_seterr(err, "%s: decoder Sequence without a \"decoders\" array", path); return -1; }
        count = cJSON_GetArraySize(list);
    }
    t->dec = calloc((size_t)(count ? count : 1), sizeof *t->dec);
    if (!t->dec) { ax_seterr(err, "%s: out of memory", path); return -1; }
    for (int i = 0; i < count; i++) {
        const cJSON *s = list ? cJSON_GetArrayItem(list, i) : d;
        const char *ty = jstr(s, "type");
        dec_step *st = &t->dec[t->n_dec];
        if (!ty) { ax_seterr(err, "%s: decoder %d has no \"type\"", path, i); return -1; }
        if (!strcmp(ty, "Replace")) {
            const cJSON *pat = cJSON_GetObjectItemCaseSensitive(s, "pattern");
            const char *ps = jstr(pat, "String"), *content = jstr(s, "content");
            if (!ps || !*ps || !content) {
                ax_seterr(err, "%s: decoder Replace is supported with a non-empty String pattern only", path);
                return -1;
            }
            st->kind = DEC_REPLACE;
            st->a = xstrdup(ps); st->b = xstrdup(content);
            if (!st->a || !st->b) { ax_seterr(err, "%s: out of memory", path); return -1; }
        } else if (!strcmp(ty, "ByteFallback")) {
            st->kind = DEC_BYTEFALLBACK;
        } else if (!strcmp(ty, "Fuse")) {
            st->kind = DEC_FUSE;
        } else if (!strcmp(ty, "Strip")) {
            const char *c = jstr(s, "content");
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(s, "start");
            const cJSON *b = cJSON_GetObjectItemCaseSensitive(s, "stop");
            uint32_t cp;
            if (!c || !*c || utf8_next((const unsigned char *)c, strlen(c), &cp) != (int)strlen(c) ||
                !cJSON_IsNumber(a) || !cJSON_IsNumber(b) || a->valuedouble < 0 || b->valuedouble < 0) {
                ax_seterr(err, "%s: decoder Strip needs one \"content\" character and \"start\"/\"stop\" >= 0", path);
                return -1;
            }
            st->kind = DEC_STRIP;
            st->a = xstrdup(c);
            if (!st->a) { ax_seterr(err, "%s: out of memory", path); return -1; }
            st->start = a->valueint; st->stop = b->valueint;
        } else {
            ax_seterr(err, "%s: decoder '%s' is not supported (supported: Replace, ByteFallback, Fuse, "
                        "Strip, Sequence of them)", path, ty);
            return -1;
        }
        t->n_dec++;
    }
    return 0;
}

static int set_piece(ae_tokenizer *t, int id, const char *s, const char *path, char *err) {
    if (t->piece[id]) {
        if (strcmp(t->piece[id], s)) {
            ax_seterr(err, "%s: id %d is given to two pieces ('%s' and '%s')", path, id, t->piece[id], s);
            return -1;
        }
        return 0;
    }
    if (!(t->piece[id] = xstrdup(s))) { ax_seterr(err, "%s: out of memory", path); return -1; }
    t->piece_len[id] = (uint32_t)strlen(s);
    return 0;
}

static int load_json(ae_tokenizer *t, const cJSON *root, const char *path, char *err) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) { ax_seterr(err, "%s: no \"model\" object", path); return -1; }
    const char *mtype = jstr(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (mtype && strcmp(mtype, "BPE")) {
        ax_seterr(err, "%s: model type '%s' is not supported (only BPE)", path, mtype);
        return -1;
    }
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        ax_seterr(err, "%s: model is not a BPE model with \"vocab\" and \"merges\"", path);
        return -1;
    }
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (pre && !cJSON_IsNull(pre)) {
        const char *pt = jstr(pre, "type");
        ax_seterr(err, "%s: pre_tokenizer '%s' is not supported: byte-level BPE (LLaMA-3 style, regex "
                    "pre-tokenizer) and Metaspace tokenizers are a later step; only SentencePiece-style "
                    "BPE files with no pre-tokenizer (LLaMA-2) are supported", path, pt ? pt : "?");
        return -1;
    }
    if (!jnull(model, "continuing_subword_prefix") || !jnull(model, "end_of_word_suffix")) {
        ax_seterr(err, "%s: BPE continuing_subword_prefix / end_of_word_suffix are not supported", path);
        return -1;
    }
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (drop && !cJSON_IsNull(drop) && !(cJSON_IsNumber(drop) && drop->valuedouble == 0.0)) {
        ax_seterr(err, "%s: BPE dropout is not supported (encoding must be deterministic)", path);
        return -1;
    }
    t->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    t->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));
    t->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));

    /* ids: model vocab and added tokens */
    int max_id = -1, nv = 0;
    for (const cJSON *e = vocab->child; e; e = e->next, nv++) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 1e8 ||
            e->valuedouble != (double)e->valueint) {
            ax_seterr(err, "%s: vocab entry '%s' has no valid id", path, e->string ? e->string : "?");
            return -1;
        }
        if (e->valueint > max_id) max_id = e->valueint;
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added)) {
        ax_seterr(err, "%s: \"added_tokens\" is not an array", path); return -1;
    }
    for (const cJSON *e = added ? added->child : NULL; e; e = e->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 1e8 || !jstr(e, "content")) {
            ax_seterr(err, "%s: an added token has no valid \"id\" / \"content\"", path); return -1;
        }
        if (id->valueint > max_id) max_id = id->valueint;
    }
    if (max_id < 0) { ax_seterr(err, "%s: empty vocab", path); return -1; }
    int n_added = added ? cJSON_GetArraySize(added) : 0;
    if ((long)max_id >= 4L * (nv + n_added) + 1024) {   /* guards the id -> piece table's size */
        ax_seterr(err, "%s: ids are not dense (largest id %d for %d pieces)", path, max_id, nv + n_added);
        return -1;
    }
    t->n_vocab = max_id + 1;
    t->piece = calloc((size_t)t->n_vocab, sizeof *t->piece);
    t->piece_len = calloc((size_t)t->n_vocab, sizeof *t->piece_len);
    t->special = calloc((size_t)t->n_vocab, 1);
    t->vcap = pow2_at_least((size_t)nv * 2 + 1);
    t->vmap = malloc(t->vcap * sizeof *t->vmap);
    if (!t->piece || !t->piece_len || !t->special || !t->vmap) { ax_seterr(err, "%s: out of memory", path); return -1; }
    memset(t->vmap, 0xFF, t->vcap * sizeof *t->vmap);
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int id = e->valueint;
        if (t->piece[id]) {
            ax_seterr(err, "%s: vocab id %d is given to two pieces ('%s' and '%s')", path, id, t->piece[id], e->string);
            return -1;
        }
        if (set_piece(t, id, e->string, path, err)) return -1;
        if (vmap_find(t, e->string, strlen(e->string)) >= 0) {
            ax_seterr(err, "%s: vocab piece '%s' appears twice", path, e->string); return -1;
        }
        vmap_insert(t, id);
    }
    for (const cJSON *e = added ? added->child : NULL; e; e = e->next) {
        int id = cJSON_GetObjectItemCaseSensitive(e, "id")->valueint;
        if (set_piece(t, id, jstr(e, "content"), path, err)) return -1;
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"))) t->special[id] = 1;
    }

    /* unk, byte pieces */
    t->unk_id = -1;
    const char *unk = jstr(model, "unk_token");
    if (unk) {
        t->unk_id = vmap_find(t, unk, strlen(unk));
        if (t->unk_id < 0) { ax_seterr(err, "%s: unk_token '%s' is not in the vocab", path, unk); return -1; }
    }
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        t->byte_id[b] = vmap_find(t, s, 6);
    }

    /* merges: ["a b", …] (older files) or [["a", "b"], …]; rank = index; new piece a+b must be in
     * the vocab (HF: MergeTokenOutOfVocabulary). */
    int nm = cJSON_GetArraySize(merges);
    t->mcap = pow2_at_least((size_t)nm * 2 + 1);
    t->mkey = malloc(t->mcap * sizeof *t->mkey);
    t->mval = malloc(t->mcap * sizeof *t->mval);
    if (!t->mkey || !t->mval) { ax_seterr(err, "%s: out of memory", path); return -1; }
    memset(t->mkey, 0xFF, t->mcap * sizeof *t->mkey);
    sbuf cat = {0};
    int rank = 0, rc = 0;
    for (const cJSON *e = merges->child; e; e = e->next, rank++) {
        const char *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;
        if (cJSON_IsString(e)) {
            const char *sp = strchr(e->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                ax_seterr(err, "%s: merge %d '%s' is not two pieces separated by one space", path, rank, e->valuestring);
                rc = -1; break;
            }
            a = e->valuestring; la = (size_t)(sp - a); b = sp + 1; lb = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            a = e->child->valuestring; la = strlen(a);
            b = e->child->next->valuestring; lb = strlen(b);
        } else {
            ax_seterr(err, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", path, rank);
            rc = -1; break;
        }
        int ia = vmap_find(t, a, la), ib = vmap_find(t, b, lb);
        cat.n = 0;
        if (sb_add(&cat, a, la) || sb_add(&cat, b, lb)) { ax_seterr(err, "%s: out of memory", path); rc = -1; break; }
        int inew = vmap_find(t, cat.p, cat.n);
        if (ia < 0 || ib < 0 || inew < 0) {
            ax_seterr(err, "%s: merge %d ('%.*s' + '%.*s') uses a piece that is not in the vocab", path, rank,
                   (int)la, a, (int)lb, b);
            rc = -1; break;
        }
        mmap_insert(t, ia, ib, (merge_val){rank, inew});
    }
    free(cat.p);
    if (rc) return rc;

    if (load_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path, err)) return -1;
    if (load_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), path, err)) return -1;

    /* BOS: the leading special token of the post-processor's single template (what HF adds with
     * add_special_tokens=True), else "<s>"; EOS: "</s>" when present. */
    t->bos_id = -1;
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const cJSON *single = pp ? cJSON_GetObjectItemCaseSensitive(pp, "single") : NULL;
    if (cJSON_IsArray(single) && single->child) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(single->child, "SpecialToken");
        const char *name = st ? jstr(st, "id") : NULL;
        if (name) {
            for (int i = 0; i < t->n_vocab; i++)
                if (t->piece[i] && !strcmp(t->piece[i], name)) { t->bos_id = i; break; }
        }
    }
    t->eos_id = -1;
    for (int i = 0; i < t->n_vocab; i++) {
        if (!t->piece[i]) continue;
        if (t->bos_id < 0 && !strcmp(t->piece[i], "<s>")) t->bos_id = i;
        if (t->eos_id < 0 && !strcmp(t->piece[i], "</s>")) t->eos_id = i;
    }
    return 0;
}

int ae_tokenizer_load(const char *path, ae_tokenizer **out, char *err) {
    *out = NULL;
    char *data = NULL;
    size_t len = 0;
    char dirpath[AX_PATH_LEN];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {   /* a model folder: its tokenizer.json */
        snprintf(dirpath, sizeof dirpath, "%.4000s/tokenizer.json", path);
        path = dirpath;
    }
    if (ax_read_file(path, &data, &len, err)) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (!root) {
        long off = end ? (long)(end - data) : -1;
        if (!end) { const char *e = cJSON_GetErrorPtr(); off = e ? (long)(e - data) : -1; }
        ax_seterr(err, "%s: not valid JSON (near byte %ld)", path, off);
        free(data);
        return -1;
    }
    ae_tokenizer *t = calloc(1, sizeof *t);
    if (!t) { cJSON_Delete(root); free(data); ax_seterr(err, "%s: out of memory", path); return -1; }
    int rc = load_json(t, root, path, err);
    cJSON_Delete(root);
    free(data);
    if (rc) { ae_tokenizer_free(t); return -1; }
    *out = t;
    return 0;
}

int ae_tokenizer_vocab_size(const ae_tokenizer *t) { return t->n_vocab; }
int ae_tokenizer_bos(const ae_tokenizer *t) { return t->bos_id; }
int ae_tokenizer_eos(const ae_tokenizer *t) { return t->eos_id; }

const char *ae_token_piece(const ae_tokenizer *t, int id) {
    if (!t || id < 0 || id >= t->n_vocab) return NULL;
    return t->piece[id];
}

/* ---- normalization --------------------------------------------------------------------------- */
/* Apply one step to in[0..n) into out (reset). */
static int norm_apply(const norm_step *st, const char *in, size_t n, sbuf *out) {
    out->n = 0;
    if (sb_reserve(out, n)) return -1;
    out->p[0] = 0;
    switch (st->kind) {
    case NORM_PREPEND:   /* HF: only a non-empty string gets the prefix */
        if (n && sb_add(out, st->a, strlen(st->a))) return -1;
        return sb_add(out, in, n);
    case NORM_STRIP: {
        const unsigned char *s = (const unsigned char *)in;
        size_t a = 0, b = n;
        uint32_t cp;
        if (st->left)
            while (a < b) {
                int l = utf8_next(s + a, b - a, &cp);
                if (!l || !is_unicode_ws(cp)) break;
                a += (size_t)l;
            }
        if (st->right)
            while (b > a) {   /* step back to the start of the last character */
                size_t p = b - 1;
                while (p > a && (s[p] & 0xC0) == 0x80) p--;
                int l = utf8_next(s + p, b - p, &cp);
                if (!l || (size_t)l != b - p || !is_unicode_ws(cp)) break;
                b = p;
            }
        return sb_add(out, in + a, b - a);
    }
    case NORM_REPLACE_STR: {
        size_t pl = strlen(st->a), cl = strlen(st->b), i = 0;
        while (i < n) {
            const char *hit = (n - i >= pl) ? memmem(in + i, n - i, st->a, pl) : NULL;
            if (!hit) return sb_add(out, in + i, n - i);
            if (sb_add(out, in + i, (size_t)(hit - (in + i))) || sb_add(out, st->b, cl)) return -1;
            i = (size_t)(hit - in) + pl;
        }
        return 0;
    }
    case NORM_REPLACE_REGEX: {
        /* glibc REG_STARTEND: the subject is in[0..n) (no NUL terminator needed, NULs allowed),
         * matching starts at rm_so and `^` still means the start of the whole text. */
        size_t cl = strlen(st->b), j = 0;
        while (j <= n) {
            regmatch_t m = {.rm_so = (regoff_t)j, .rm_eo = (regoff_t)n};
            if (regexec(&st->re, in, 1, &m, REG_STARTEND)) break;
            size_t ms = (size_t)m.rm_so, me = (size_t)m.rm_eo;
            if (sb_add(out, in + j, ms - j) || sb_add(out, st->b, cl)) return -1;
            if (me == ms) {   /* empty match: keep one byte and move on */
                if (ms < n && sb_add(out, in + ms, 1)) return -1;
                me = ms + 1;
            }
            j = me;
        }
        if (j < n && sb_add(out, in + j, n - j)) return -1;
        return 0;
    }
    }
    return -1;
}

/* ---- BPE (models/bpe/word.rs) ---------------------------------------------------------------- */
typedef struct { uint64_t key; int32_t new_id; } heap_ent;   /* key = rank << 32 | pos */

static void heap_push(heap_ent *h, size_t *n, heap_ent e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].key <= e.key) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}
static heap_ent heap_pop(heap_ent *h, size_t *n) {
    heap_ent top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1].key < h[c].key) c++;
        if (last.key <= h[c].key) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

int ae_tokenize(const ae_tokenizer *t, const char *text, size_t len, int add_bos, int **ids,
                size_t *n, char *err) {
    *ids = NULL; *n = 0;
    if (add_bos && t->bos_id < 0) { ax_seterr(err, "tokenizer has no BOS token"); return -1; }
    /* the input must be UTF-8 (HF takes a Rust str) */
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int l = utf8_next((const unsigned char *)text + i, len - i, &cp);
        if (!l) { ax_seterr(err, "text is not valid UTF-8 at byte offset %zu", i); return -1; }
        i += (size_t)l;
    }
    sbuf a = {0}, b = {0};
    if (sb_add(&a, text, len)) { ax_seterr(err, "out of memory"); return -1; }
    for (int k = 0; k < t->n_norm; k++) {
        if (norm_apply(&t->norm[k], a.p, a.n, &b)) { free(a.p); free(b.p); ax_seterr(err, "out of memory"); return -1; }
        sbuf tmp = a; a = b; b = tmp;
    }
    free(b.p);
    const char *s = a.p ? a.p : "";
    size_t sl = a.n;
    if (sl >= 0xFFFFFFFFu) {   /* heap entries carry 32-bit positions */
        free(a.p);
        ax_seterr(err, "text too long (%zu bytes after normalization; at most 4 GiB - 1)", sl);
        return -1;
    }

    /* symbols: at most one per byte (byte fallback), plus BOS */
    int32_t *sym = malloc((sl + 1) * sizeof *sym);
    int32_t *prv = malloc((sl + 1) * sizeof *prv);
    int32_t *nxt = malloc((sl + 1) * sizeof *nxt);
    int *res = malloc((sl + 2) * sizeof *res);
    heap_ent *heap = NULL;
    size_t ns = 0, nres = 0;
    int rc = 0;
    if (!sym || !prv || !nxt || !res) { ax_seterr(err, "out of memory"); rc = -1; goto done; }
    if (add_bos) res[nres++] = t->bos_id;
    if (sl == 0) goto done;
    if (t->ignore_merges) {
        int id = vmap_find(t, s, sl);
        if (id >= 0) { res[nres++] = id; goto done; }
    }
    int prev_unk = 0;
    for (size_t i = 0; i < sl;) {
        uint32_t cp;
        int l = utf8_next((const unsigned char *)s + i, sl - i, &cp);
        if (!l) { ax_seterr(err, "normalized text is not valid UTF-8"); rc = -1; goto done; }
        int id = vmap_find(t, s + i, (size_t)l);
        if (id >= 0) { sym[ns++] = id; prev_unk = 0; i += (size_t)l; continue; }
        if (t->byte_fallback) {
            int ok = 1;
            for (int k = 0; k < l; k++) if (t->byte_id[(unsigned char)s[i + (size_t)k]] < 0) ok = 0;
            if (ok) {
                for (int k = 0; k < l; k++) sym[ns++] = t->byte_id[(unsigned char)s[i + (size_t)k]];
                prev_unk = 0; i += (size_t)l;
                continue;
            }
        }
        if (t->unk_id < 0) {
            ax_seterr(err, "character U+%04X at normalized byte %zu is not in the vocab and there is no unk_token", cp, i);
            rc = -1; goto done;
        }
        if (!(t->fuse_unk && prev_unk)) sym[ns++] = t->unk_id;
        prev_unk = 1;
        i += (size_t)l;
    }
    for (size_t i = 0; i < ns; i++) { prv[i] = (int32_t)i - 1; nxt[i] = i + 1 < ns ? (int32_t)i + 1 : -1; }
    /* heap capacity: initial pairs (ns) + at most 2 pushes per merge (< ns merges) */
    heap = malloc((3 * ns + 1) * sizeof *heap);
    if (!heap) { ax_seterr(err, "out of memory"); rc = -1; goto done; }
    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        const merge_val *m = mmap_find(t, sym[i], sym[i + 1]);
        if (m) heap_push(heap, &nh, (heap_ent){((uint64_t)(uint32_t)m->rank << 32) | i, m->new_id});
    }
    while (nh) {
        heap_ent top = heap_pop(heap, &nh);
        size_t pos = (size_t)(top.key & 0xFFFFFFFFu);
        if (sym[pos] < 0) continue;             /* merged away */
        int32_t r = nxt[pos];
        if (r < 0) continue;
        const merge_val *m = mmap_find(t, sym[pos], sym[r]);
        if (!m || m->new_id != top.new_id) continue;   /* stale */
        sym[pos] = top.new_id;
        sym[r] = -1;
        nxt[pos] = nxt[r];
        if (nxt[r] >= 0) prv[nxt[r]] = (int32_t)pos;
        if (prv[pos] >= 0) {
            int32_t p = prv[pos];
            const merge_val *mp = mmap_find(t, sym[p], sym[pos]);
            if (mp) heap_push(heap, &nh, (heap_ent){((uint64_t)(uint32_t)mp->rank << 32) | (uint32_t)p, mp->new_id});
        }
        if (nxt[pos] >= 0) {
            const merge_val *mn = mmap_find(t, sym[pos], sym[nxt[pos]]);
            if (mn) heap_push(heap, &nh, (heap_ent){((uint64_t)(uint32_t)mn->rank << 32) | pos, mn->new_id});
        }
    }
    for (int32_t i = ns ? 0 : -1; i >= 0; i = nxt[i]) res[nres++] = sym[i];
done:
    free(sym); free(prv); free(nxt); free(heap); free(a.p);
    if (rc) { free(res); return rc; }
    *ids = res;
    *n = nres;
    return 0;
}

/* ---- decoding (decoders/{replace,byte_fallback,fuse,strip}.rs, decode_chain on a list of token strings) ----------------------- */
typedef struct { char **s; size_t n, cap; } strlist;

static int sl_push(strlist *l, char *s) {
    if (!s) return -1;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **np = realloc(l->s, cap * sizeof *np);
        if (!np) { free(s); return -1; }
        l->s = np; l->cap = cap;
    }
    l->s[l->n++] = s;
    return 0;
}
static void sl_free(strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    l->s = NULL; l->n = l->cap = 0;
}
static char *dupn(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) { memcpy(d, s, n); d[n] = 0; }
    return d;
}
static int hexv(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}
static int valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = utf8_next(s + i, n - i, &cp);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

/* ByteFallback: runs of "<0xXX>" tokens become their bytes when those form valid UTF-8, else one
 * U+FFFD per byte (decoders/byte_fallback.rs). */
static int flush_bytes(strlist *out, sbuf *bytes) {
    int rc = 0;
    if (!bytes->n) return 0;
    if (valid_utf8((const unsigned char *)bytes->p, bytes->n)) rc = sl_push(out, dupn(bytes->p, bytes->n));
    else
        for (size_t i = 0; i < bytes->n && !rc; i++) rc = sl_push(out, dupn("\xEF\xBF\xBD", 3));
    bytes->n = 0;
    return rc;
}

static int dec_apply(const dec_step *st, strlist *in, strlist *out) {
    switch (st->kind) {
    case DEC_REPLACE: {
        size_t pl = strlen(st->a), cl = strlen(st->b);
        for (size_t k = 0; k < in->n; k++) {
            sbuf b = {0};
            const char *s = in->s[k];
            size_t n = strlen(s), i = 0;
            if (sb_add(&b, "", 0)) return -1;
            while (i < n) {
                const char *hit = memmem(s + i, n - i, st->a, pl);
                if (!hit) { if (sb_add(&b, s + i, n - i)) { free(b.p); return -1; } break; }
                if (sb_add(&b, s + i, (size_t)(hit - (s + i))) || sb_add(&b, st->b, cl)) { free(b.p); return -1; }
                i = (size_t)(hit - s) + pl;
            }
            if (sl_push(out, b.p)) return -1;
        }
        return 0;
    }
    case DEC_BYTEFALLBACK: {
        sbuf bytes = {0};
        int rc = 0;
        for (size_t k = 0; k < in->n && !rc; k++) {
            const char *s = in->s[k];
            int h1, h0;
            if (strlen(s) == 6 && !strncmp(s, "<0x", 3) && s[5] == '>' && (h1 = hexv(s[3])) >= 0 &&
                (h0 = hexv(s[4])) >= 0) {
                char c = (char)(h1 * 16 + h0);
                rc = sb_add(&bytes, &c, 1);
            } else {
                rc = flush_bytes(out, &bytes);
                if (!rc) rc = sl_push(out, xstrdup(s));
            }
        }
        if (!rc) rc = flush_bytes(out, &bytes);
        free(bytes.p);
        return rc;
    }
    case DEC_FUSE: {
        sbuf b = {0};
        if (sb_add(&b, "", 0)) return -1;
        for (size_t k = 0; k < in->n; k++)
            if (sb_add(&b, in->s[k], strlen(in->s[k]))) { free(b.p); return -1; }
        return sl_push(out, b.p);
    }
    case DEC_STRIP: {
        size_t cl = strlen(st->a);
        for (size_t k = 0; k < in->n; k++) {
            const char *s = in->s[k];
            size_t n = strlen(s), a = 0, e = n;
            for (int i = 0; i < st->start && n - a >= cl && !memcmp(s + a, st->a, cl); i++) a += cl;
            /* HF counts the `stop` cut in characters from the end, never past the start cut */
            for (int i = 0; i < st->stop && e - a >= cl && !memcmp(s + e - cl, st->a, cl); i++) e -= cl;
            if (sl_push(out, dupn(s + a, e - a))) return -1;
        }
        return 0;
    }
    }
    return -1;
}

char *ae_detokenize(const ae_tokenizer *t, const int *ids, size_t n) {
    strlist a = {0}, b = {0};
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_vocab || !t->piece[id] || t->special[id]) continue;   /* skip_special_tokens */
        if (sl_push(&a, xstrdup(t->piece[id]))) { sl_free(&a); return NULL; }
    }
    if (!t->has_decoder) {   /* HF default: tokens joined by a space */
        sbuf r = {0};
        if (sb_add(&r, "", 0)) { sl_free(&a); return NULL; }
        for (size_t i = 0; i < a.n; i++)
            if ((i && sb_add(&r, " ", 1)) || sb_add(&r, a.s[i], strlen(a.s[i]))) { free(r.p); sl_free(&a); return NULL; }
        sl_free(&a);
        return r.p;
    }
    for (int k = 0; k < t->n_dec; k++) {
        if (dec_apply(&t->dec[k], &a, &b)) { sl_free(&a); sl_free(&b); return NULL; }
        sl_free(&a);
        a = b;
        b = (strlist){0};
    }
    sbuf r = {0};
    if (sb_add(&r, "", 0)) { sl_free(&a); return NULL; }
    for (size_t i = 0; i < a.n; i++)
        if (sb_add(&r, a.s[i], strlen(a.s[i]))) { free(r.p); sl_free(&a); return NULL; }
    sl_free(&a);
    return r.p;
}
