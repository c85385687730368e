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
 * The file is read as hostile input: it must be UTF-8 and strict JSON (ax_json_parse_strict: no
 * duplicate keys, nothing after the top-level value), every field used has its JSON type checked
 * (ids are integers in range, flags are booleans, …), and every size taken from it is checked
 * before it sizes an allocation. Regex patterns (Replace normalizer) are translated from the
 * Oniguruma (Ruby syntax) subset that both engines read alike into PCRE2 (UTF mode, code points),
 * with bounds on the pattern's length, its compiled size and the work of each match.
 *
 * Not supported (rejected at load with a message naming the feature): pre-tokenizers (ByteLevel,
 * Metaspace, Split …: LLaMA-3 style byte-level BPE is a later step), normalizers other than
 * Prepend / Replace / Strip (and Sequence of them), decoders other than Replace / ByteFallback /
 * Fuse / Strip, continuing_subword_prefix, end_of_word_suffix, BPE dropout, non-BPE models.
 * Deliberate difference from HF: added tokens ("<s>", "</s>", "<unk>") occurring in the text are not
 * split out; the text is taken literally (what lm-eval feeds a LLaMA model). */
#include "tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <limits.h>
#include <math.h>
#include <pcre2.h>
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
    char     *a;          /* prepend text / pattern string (as written in the file)              */
    char     *b;          /* replacement content                                                 */
    int       left, right;/* Strip sides                                                         */
    pcre2_code          *re;    /* NORM_REPLACE_REGEX: the translated pattern, compiled          */
    pcre2_match_context *mctx;  /* its match / depth / heap limits                               */
} norm_step;

typedef enum { DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP } dec_kind;
typedef struct {
    dec_kind kind;
    char    *a, *b;       /* Replace pattern / content; Strip: a = content char (UTF-8)          */
    int      start, stop; /* Strip                                                               */
} dec_step;

struct ae_tokenizer {
    char      *path;          /* the tokenizer.json read (for messages)                          */
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

/* Hash table capacity: the least power of two >= 2n + 1 (load factor <= 1/2), or 0 if that
 * would overflow size_t. */
static size_t table_cap(size_t n) {
    if (n > SIZE_MAX / 4) return 0;
    size_t c = 16;
    while (c < 2 * n + 1) c *= 2;
    return c;
}

void ae_tokenizer_free(ae_tokenizer *t) {
    if (!t) return;
    if (t->piece) for (int i = 0; i < t->n_vocab; i++) free(t->piece[i]);
    free(t->piece); free(t->piece_len); free(t->special);
    free(t->vmap); free(t->mkey); free(t->mval);
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a); free(t->norm[i].b);
        pcre2_code_free(t->norm[i].re);
        pcre2_match_context_free(t->norm[i].mctx);
    }
    free(t->norm);
    for (int i = 0; i < t->n_dec; i++) { free(t->dec[i].a); free(t->dec[i].b); }
    free(t->dec);
    free(t->path);
    free(t);
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* ---- typed JSON fields (every field used is checked; messages name file, key, expectation) ---- */
static const char *jtype(const cJSON *v) {
    if (!v) return "nothing (the key is missing)";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}
static const cJSON *jget(const cJSON *o, const char *key) {
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}
/* The string at o[key] (*out = NULL when absent or null and !required). */
static int jstring(const cJSON *o, const char *key, int required, const char *path, const char *where,
                   const char **out, char *err) {
    const cJSON *v = jget(o, key);
    *out = NULL;
    if ((!v || cJSON_IsNull(v)) && !required) return 0;
    if (!cJSON_IsString(v)) {
        ax_seterr(err, "%s: %s\"%s\": expected a string, got %s", path, where, key, jtype(v));
        return -1;
    }
    *out = v->valuestring;
    return 0;
}
/* The boolean at o[key]; absent or null gives `dflt`. */
static int jbool(const cJSON *o, const char *key, int dflt, const char *path, const char *where, int *out,
                 char *err) {
    const cJSON *v = jget(o, key);
    *out = dflt;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) {
        ax_seterr(err, "%s: %s\"%s\": expected true or false, got %s", path, where, key, jtype(v));
        return -1;
    }
    *out = cJSON_IsTrue(v);
    return 0;
}
/* An integer in [lo, hi] held by v (a JSON number with no fractional part). `what` names it. */
static int jint_value(const cJSON *v, long lo, long hi, const char *path, const char *what, long *out,
                      char *err) {
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble < (double)lo || v->valuedouble > (double)hi) {
        if (cJSON_IsNumber(v))
            ax_seterr(err, "%s: %s: expected an integer in [%ld, %ld], got %.17g", path, what, lo, hi, v->valuedouble);
        else
            ax_seterr(err, "%s: %s: expected an integer in [%ld, %ld], got %s", path, what, lo, hi, jtype(v));
        return -1;
    }
    *out = (long)v->valuedouble;
    return 0;
}

/* ---- the regex Replace normalizer ----------------------------------------------------------------
 * HF compiles the pattern with Oniguruma (Ruby syntax, UTF-8, code points). We translate the subset
 * on which Oniguruma and PCRE2 agree into a PCRE2 pattern and match it in UTF mode:
 *   literal characters; \ + ASCII punctuation; \t \n \r \f; \s (spelt out as Oniguruma's 25
 *   white-space code points: PCRE2 would add U+180E) and \S outside [..]; . (any code point but
 *   \n); ^ and $ (line anchors in Ruby: PCRE2_MULTILINE with LF newlines); [..] and [^..] of
 *   characters, ranges and the escapes above; ( ), (?: ), (?= ), (?! ); |; * + ? with an optional
 *   lazy ? or possessive +; {n}, {n,}, {n,m} (n, m <= 65535) with an optional lazy ? ({n,} and
 *   {n,m} only).
 * Rejected, naming the construct: \d \w \b \p{..} (Unicode-version dependent: PCRE2 10.42 has
 * Unicode 14, tokenizers' Oniguruma Unicode 16), \h \v \x \u \R \X \A \z and other escapes (other
 * meanings or byte semantics), (?m) and other groups (Ruby's (?m) is PCRE2's (?s)), nested [ ] and
 * && in classes, {n}? and {..}+ (an optional / repeated interval in Ruby, lazy / possessive in
 * PCRE2), {,n}, stacked quantifiers, unescaped { } ] outside a quantifier or class, a repeated group
 * that can match the empty string ((a*)+, (^a|b)*: the engines end such loops differently; found
 * by comparing random patterns of the subset against tokenizers).
 * Bounds: the pattern is at most AE_RE_MAX_PATTERN bytes; the estimated compiled size (repeats of
 * groups are copied by PCRE2: `(ab){1,30000}` is 30000 copies) at most AE_RE_MAX_UNITS items and the
 * compiled code at most AE_RE_MAX_CODE bytes; each pcre2_match call is limited in backtracking steps,
 * depth and heap, and a call that reaches a limit fails the encoding with a message naming the
 * pattern (never a silently different output). */
#define AE_RE_MAX_PATTERN 1024
#define AE_RE_MAX_UNITS   20000.0
#define AE_RE_MAX_CODE    ((size_t)1 << 20)
#define AE_RE_MAX_REPEAT  65535L
#define AE_RE_MAX_NEST    32
#define AE_RE_MATCH_LIMIT 1000000u
#define AE_RE_DEPTH_LIMIT 10000u
#define AE_RE_HEAP_KIB    65536u

/* Oniguruma's \s for UTF-8 (Unicode White_Space): checked against tokenizers 0.23.3 over every code
 * point with Replace(Regex("\\s"), ...) on a string of all of them. */
#define RE_WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

typedef struct {
    const char *p, *end;   /* cursor in the pattern                                           */
    sbuf       *out;       /* PCRE2 pattern being written                                     */
    char        why[200];  /* reason for a rejection                                          */
    int         depth;
    int         oom;
} rx_state;

static int rx_fail(rx_state *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rx_fail(rx_state *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
    return -1;
}
static int rx_emit(rx_state *r, const char *s, size_t n) {
    if (sb_add(r->out, s, n)) { r->oom = 1; return rx_fail(r, "out of memory"); }
    return 0;
}
static int rx_emits(rx_state *r, const char *s) { return rx_emit(r, s, strlen(s)); }

static int is_ascii_punct(unsigned char c) {
    return c > 0x20 && c < 0x7F && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
}

/* One escape after '\' (r->p points at the escaped character). in_class: inside [..].
 * *single = 1 when it stands for one character (may end a range). */
static int rx_escape(rx_state *r, int in_class, int *single) {
    if (r->p >= r->end) return rx_fail(r, "the pattern ends with a lone backslash");
    unsigned char c = (unsigned char)*r->p++;
    char lit[3] = {'\\', (char)c, 0};
    *single = 1;
    if (is_ascii_punct(c) || c == 't' || c == 'n' || c == 'r' || c == 'f') return rx_emits(r, lit);
    *single = 0;
    if (c == 's') return rx_emits(r, in_class ? RE_WS : "[" RE_WS "]");
    if (c == 'S' && !in_class) return rx_emits(r, "[^" RE_WS "]");
    if (c == 'S') return rx_fail(r, "\\S inside [..] is not supported");
    if (c == 'd' || c == 'D' || c == 'w' || c == 'W' || c == 'p' || c == 'P' || c == 'b' || c == 'B')
        return rx_fail(r, "\\%c is not supported (its Unicode tables differ between PCRE2 here and "
                          "tokenizers' Oniguruma)", c);
    if (c >= 0x20 && c < 0x7F)
        return rx_fail(r, "\\%c is not supported (supported escapes: \\ + punctuation, \\t \\n \\r \\f \\s \\S)", c);
    return rx_fail(r, "a backslash before a non-ASCII or control character is not supported");
}

/* One literal character (UTF-8) at r->p, copied. */
static int rx_literal(rx_state *r) {
    uint32_t cp;
    int l = utf8_next((const unsigned char *)r->p, (size_t)(r->end - r->p), &cp);
    if (!l) return rx_fail(r, "not valid UTF-8");
    if (cp < 0x20 || cp == 0x7F) {   /* control characters: written as \x{..} */
        char b[16];
        snprintf(b, sizeof b, "\\x{%X}", cp);
        r->p += l;
        return rx_emits(r, b);
    }
    if (rx_emit(r, r->p, (size_t)l)) return -1;
    r->p += l;
    return 0;
}

/* [..] starting at r->p (just after '['). */
static int rx_class(rx_state *r) {
    if (rx_emits(r, "[")) return -1;
    if (r->p < r->end && *r->p == '^') { r->p++; if (rx_emits(r, "^")) return -1; }
    if (r->p < r->end && *r->p == ']') return rx_fail(r, "']' first in a class is not supported (write \\])");
    int members = 0, prev_single = 0, prev_range = 0;
    for (;;) {
        if (r->p >= r->end) return rx_fail(r, "unterminated [..]");
        char c = *r->p;
        if (c == ']') { r->p++; break; }
        if (c == '[') return rx_fail(r, "'[' inside [..] (nested classes, [:name:]) is not supported (write \\[)");
        if (c == '&' && r->p + 1 < r->end && r->p[1] == '&')
            return rx_fail(r, "'&&' (class intersection) is not supported");
        if (c == '-') {
            int last = r->p + 1 < r->end && r->p[1] == ']';
            if (members == 0 || last) { r->p++; if (rx_emits(r, "\\-")) return -1; members++; prev_single = 0; continue; }
            if (!prev_single || prev_range) return rx_fail(r, "'-' inside [..] must form a range a-b, or stand first or last");
            r->p++;
            if (r->p >= r->end) return rx_fail(r, "unterminated [..]");
            if (rx_emits(r, "-")) return -1;
            int single = 1;
            if (*r->p == '\\') { r->p++; if (rx_escape(r, 1, &single)) return -1; }
            else if (*r->p == '[' || *r->p == ']') return rx_fail(r, "a range a-b needs a character after '-'");
            else if (rx_literal(r)) return -1;
            if (!single) return rx_fail(r, "a range a-b must end in a single character");
            prev_range = 1; prev_single = 0; members++;
            continue;
        }
        int single = 1;
        if (c == '\\') { r->p++; if (rx_escape(r, 1, &single)) return -1; }
        else if (c == '^') { r->p++; if (rx_emits(r, "\\^")) return -1; }
        else if (rx_literal(r)) return -1;
        prev_single = single; prev_range = 0; members++;
    }
    return rx_emits(r, "]");
}

static int rx_alt(rx_state *r, double *units, int *nullable);

/* A decimal repeat count at r->p (at most AE_RE_MAX_REPEAT); -1 if none. */
static long rx_count(rx_state *r) {
    long v = -1;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        v = (v < 0 ? 0 : v) * 10 + (*r->p++ - '0');
        if (v > 10 * AE_RE_MAX_REPEAT) v = 10 * AE_RE_MAX_REPEAT;   /* saturate; rejected below */
    }
    return v;
}

/* A sequence of items up to '|', ')' or the end. *nullable: it can match the empty string. */
static int rx_seq(rx_state *r, double *units, int *nullable) {
    *units = 0;
    *nullable = 1;
    while (r->p < r->end && *r->p != '|' && *r->p != ')') {
        char c = *r->p;
        double u = 1;
        int quantifiable = 1, group = 0, item_nullable = 0;
        if (c == '(') {
            r->p++;
            const char *kind = "(";
            if (r->p < r->end && *r->p == '?') {
                if (r->end - r->p >= 2 && (r->p[1] == ':' || r->p[1] == '=' || r->p[1] == '!')) {
                    kind = r->p[1] == ':' ? "(?:" : r->p[1] == '=' ? "(?=" : "(?!";
                    if (r->p[1] != ':') quantifiable = 0;
                    r->p += 2;
                } else
                    return rx_fail(r, "'(?' groups other than (?: ), (?= ), (?! ) are not supported "
                                      "(options such as (?m) mean different things in Ruby and PCRE2)");
            }
            if (++r->depth > AE_RE_MAX_NEST) return rx_fail(r, "groups nested deeper than %d", AE_RE_MAX_NEST);
            if (rx_emits(r, kind) || rx_alt(r, &u, &item_nullable)) return -1;
            if (!quantifiable) item_nullable = 1;   /* a look-ahead consumes nothing */
            r->depth--;
            if (r->p >= r->end || *r->p != ')') return rx_fail(r, "unbalanced '('");
            r->p++;
            if (rx_emits(r, ")")) return -1;
            group = 1;
        } else if (c == '[') {
            r->p++;
            if (rx_class(r)) return -1;
        } else if (c == '.') {
            r->p++;
            if (rx_emits(r, ".")) return -1;
        } else if (c == '^' || c == '$') {
            r->p++;
            if (rx_emit(r, &c, 1)) return -1;
            quantifiable = 0;
            item_nullable = 1;
        } else if (c == '\\') {
            int single;
            r->p++;
            if (rx_escape(r, 0, &single)) return -1;
        } else if (c == '*' || c == '+' || c == '?') {
            return rx_fail(r, "'%c' has nothing to repeat (write \\%c for the character)", c, c);
        } else if (c == '{' || c == '}' || c == ']') {
            return rx_fail(r, "'%c' outside a quantifier or class is not supported (write \\%c)", c, c);
        } else if (rx_literal(r)) {
            return -1;
        }
        /* quantifier */
        if (r->p < r->end && (*r->p == '*' || *r->p == '+' || *r->p == '?' || *r->p == '{')) {
            if (!quantifiable) return rx_fail(r, "a quantifier after an anchor or a look-ahead is not supported");
            char q = *r->p++;
            double times;
            long min_count = q == '+' ? 1 : 0;
            if (group && item_nullable)
                return rx_fail(r, "a repeated group that can match the empty string is not supported (Oniguruma "
                                  "and PCRE2 end such loops differently)");
            if (q == '{') {
                long n = rx_count(r), m;
                int comma = 0;
                if (r->p < r->end && *r->p == ',') { comma = 1; r->p++; }
                m = comma ? rx_count(r) : n;
                if (n < 0 || r->p >= r->end || *r->p != '}')
                    return rx_fail(r, "only the intervals {n}, {n,} and {n,m} are supported (write \\{ for the "
                                      "character; Ruby reads {,n} as {0,n}, PCRE2 10.42 as text)");
                r->p++;
                if (n > AE_RE_MAX_REPEAT || m > AE_RE_MAX_REPEAT)
                    return rx_fail(r, "a repeat count above %ld", AE_RE_MAX_REPEAT);
                if (m >= 0 && m < n) return rx_fail(r, "the interval {%ld,%ld} has its bounds out of order", n, m);
                char b[48];
                if (!comma) snprintf(b, sizeof b, "{%ld}", n);
                else if (m < 0) snprintf(b, sizeof b, "{%ld,}", n);
                else snprintf(b, sizeof b, "{%ld,%ld}", n, m);
                if (rx_emits(r, b)) return -1;
                times = m >= 0 ? (double)m : (double)n + 1;
                min_count = n;
                if (r->p < r->end && *r->p == '+')
                    return rx_fail(r, "'+' after an interval is not supported (Ruby repeats the interval, PCRE2 "
                                      "makes it possessive)");
                if (r->p < r->end && *r->p == '?') {
                    if (!comma) return rx_fail(r, "{n}? is not supported (Ruby makes the interval optional, PCRE2 lazy)");
                    r->p++;
                    if (rx_emits(r, "?")) return -1;
                }
            } else {
                if (rx_emit(r, &q, 1)) return -1;
                times = 2;
                if (r->p < r->end && (*r->p == '?' || *r->p == '+')) { if (rx_emit(r, r->p, 1)) return -1; r->p++; }
            }
            if (r->p < r->end && (*r->p == '*' || *r->p == '+' || *r->p == '?' || *r->p == '{'))
                return rx_fail(r, "stacked quantifiers are not supported (group the repeated item: (?:a*)*)");
            if (group) u *= times > 1 ? times : 1;   /* PCRE2 copies a repeated group's code */
            else u += 1;
            if (min_count == 0) item_nullable = 1;
        }
        if (!item_nullable) *nullable = 0;
        *units += u;
        if (*units > AE_RE_MAX_UNITS)
            return rx_fail(r, "it would compile to more than %.0f items (repeats of groups are copied)", AE_RE_MAX_UNITS);
    }
    return 0;
}

static int rx_alt(rx_state *r, double *units, int *nullable) {
    *units = 0;
    *nullable = 0;
    for (;;) {
        double u;
        int nb;
        if (rx_seq(r, &u, &nb)) return -1;
        *nullable |= nb;
        *units += u;
        if (*units > AE_RE_MAX_UNITS)
            return rx_fail(r, "it would compile to more than %.0f items (repeats of groups are copied)", AE_RE_MAX_UNITS);
        if (r->p < r->end && *r->p == '|') { r->p++; if (rx_emits(r, "|")) return -1; continue; }
        return 0;
    }
}

/* Translate and compile `pat`; on failure -1 with err "<path>: normalizer Replace regex '<pat>': <why>". */
static int regex_compile(norm_step *st, const char *pat, const char *path, char *err) {
    size_t len = strlen(pat);
    if (len > AE_RE_MAX_PATTERN) {
        ax_seterr(err, "%s: normalizer Replace regex '%.60s…' (%zu bytes) is longer than %d bytes", path, pat,
                  len, AE_RE_MAX_PATTERN);
        return -1;
    }
    if (!len) { ax_seterr(err, "%s: normalizer Replace regex is empty", path); return -1; }
    sbuf out = {0};
    rx_state r = {.p = pat, .end = pat + len, .out = &out};
    double units = 0;
    int nullable = 0;
    if (rx_alt(&r, &units, &nullable) == 0 && r.p < r.end) rx_fail(&r, "unbalanced ')'");
    if (r.why[0]) {
        ax_seterr(err, "%s: normalizer Replace regex '%s': %s", path, pat, r.why);
        free(out.p);
        return -1;
    }
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) { free(out.p); ax_seterr(err, "%s: out of memory", path); return -1; }
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    pcre2_set_max_pattern_length(cc, 64 * AE_RE_MAX_PATTERN);
    pcre2_set_parens_nest_limit(cc, 2 * AE_RE_MAX_NEST);
    int ecode = 0;
    PCRE2_SIZE eoff = 0;
    st->re = pcre2_compile((PCRE2_SPTR)out.p, out.n, PCRE2_UTF | PCRE2_MULTILINE | PCRE2_NEVER_BACKSLASH_C,
                           &ecode, &eoff, cc);
    pcre2_compile_context_free(cc);
    free(out.p);
    if (!st->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        ax_seterr(err, "%s: normalizer Replace regex '%s' does not compile: %s", path, pat, (const char *)msg);
        return -1;
    }
    size_t size = 0;
    pcre2_pattern_info(st->re, PCRE2_INFO_SIZE, &size);
    if (size > AE_RE_MAX_CODE) {
        ax_seterr(err, "%s: normalizer Replace regex '%s' compiles to %zu bytes (at most %zu)", path, pat, size,
                  AE_RE_MAX_CODE);
        return -1;
    }
    if (!(st->mctx = pcre2_match_context_create(NULL))) { ax_seterr(err, "%s: out of memory", path); return -1; }
    pcre2_set_match_limit(st->mctx, AE_RE_MATCH_LIMIT);
    pcre2_set_depth_limit(st->mctx, AE_RE_DEPTH_LIMIT);
    pcre2_set_heap_limit(st->mctx, AE_RE_HEAP_KIB);
    return 0;
}

/* ---- loading --------------------------------------------------------------------------------- */
/* A normalizer / decoder list: a Sequence's array (*list) or the single object itself. */
static int step_list(const cJSON *n, const char *seq_key, const char *what, const char *path,
                     const cJSON **list, int *count, char *err) {
    const char *type;
    if (!cJSON_IsObject(n)) { ax_seterr(err, "%s: \"%s\": expected an object or null, got %s", path, what, jtype(n)); return -1; }
    if (jstring(n, "type", 1, path, what[0] == 'n' ? "normalizer " : "decoder ", &type, err)) return -1;
    *list = NULL;
    *count = 1;
    if (!strcmp(type, "Sequence")) {
        *list = jget(n, seq_key);
        if (!cJSON_IsArray(*list)) {
            ax_seterr(err, "%s: %s Sequence \"%s\": expected an array, got %s", path, what, seq_key, jtype(*list));
            return -1;
        }
        *count = cJSON_GetArraySize(*list);
    }
    return 0;
}

static int load_normalizer(ae_tokenizer *t, const cJSON *n, const char *path, char *err) {
    if (!n || cJSON_IsNull(n)) return 0;
    const cJSON *list;
    int count;
    if (step_list(n, "normalizers", "normalizer", path, &list, &count, err)) return -1;
    t->norm = calloc((size_t)(count ? count : 1), sizeof *t->norm);
    if (!t->norm) { ax_seterr(err, "%s: out of memory", path); return -1; }
    for (int i = 0; i < count; i++) {
        const cJSON *s = list ? cJSON_GetArrayItem(list, i) : n;
        char where[64];
        snprintf(where, sizeof where, "normalizer %d ", i);
        const char *ty;
        if (!cJSON_IsObject(s)) { ax_seterr(err, "%s: normalizer %d: expected an object, got %s", path, i, jtype(s)); return -1; }
        if (jstring(s, "type", 1, path, where, &ty, err)) return -1;
        norm_step *st = &t->norm[t->n_norm];
        if (!strcmp(ty, "Prepend")) {
            const char *p;
            if (jstring(s, "prepend", 1, path, where, &p, err)) return -1;
            st->kind = NORM_PREPEND;
            if (!(st->a = xstrdup(p))) { ax_seterr(err, "%s: out of memory", path); return -1; }
        } else if (!strcmp(ty, "Replace")) {
            const cJSON *pat = jget(s, "pattern");
            const char *content, *ps = NULL, *pr = NULL;
            if (jstring(s, "content", 1, path, where, &content, err)) return -1;
            if (!cJSON_IsObject(pat) || cJSON_GetArraySize(pat) != 1 ||
                (!(ps = jget(pat, "String") ? jget(pat, "String")->valuestring : NULL) &&
                 !(pr = jget(pat, "Regex") ? jget(pat, "Regex")->valuestring : NULL))) {
                ax_seterr(err, "%s: normalizer %d Replace \"pattern\": expected {\"String\": s} or {\"Regex\": s}",
                          path, i);
                return -1;
            }
            if (ps && !*ps) { ax_seterr(err, "%s: normalizer Replace with an empty pattern", path); return -1; }
            st->kind = ps ? NORM_REPLACE_STR : NORM_REPLACE_REGEX;
            st->a = xstrdup(ps ? ps : pr);
            st->b = xstrdup(content);
            t->n_norm++;   /* from here on ae_tokenizer_free releases the step */
            if (!st->a || !st->b) { ax_seterr(err, "%s: out of memory", path); return -1; }
            if (pr && regex_compile(st, pr, path, err)) return -1;
            continue;
        } else if (!strcmp(ty, "Strip")) {
            st->kind = NORM_STRIP;
            if (jbool(s, "strip_left", 1, path, where, &st->left, err) ||
                jbool(s, "strip_right", 1, path, where, &st->right, err)) return -1;
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
    const cJSON *list;
    int count;
    if (step_list(d, "decoders", "decoder", path, &list, &count, err)) return -1;
    t->dec = calloc((size_t)(count ? count : 1), sizeof *t->dec);
    if (!t->dec) { ax_seterr(err, "%s: out of memory", path); return -1; }
    for (int i = 0; i < count; i++) {
        const cJSON *s = list ? cJSON_GetArrayItem(list, i) : d;
        char where[64];
        snprintf(where, sizeof where, "decoder %d ", i);
        const char *ty;
        if (!cJSON_IsObject(s)) { ax_seterr(err, "%s: decoder %d: expected an object, got %s", path, i, jtype(s)); return -1; }
        if (jstring(s, "type", 1, path, where, &ty, err)) return -1;
        dec_step *st = &t->dec[t->n_dec];
        if (!strcmp(ty, "Replace")) {
            const char *ps = NULL, *content;
            if (jstring(s, "content", 1, path, where, &content, err) ||
                jstring(jget(s, "pattern"), "String", 0, path, "decoder Replace pattern ", &ps, err)) return -1;
            if (!ps || !*ps) {
                ax_seterr(err, "%s: decoder Replace is supported with a non-empty String pattern only", path);
                return -1;
            }
            st->kind = DEC_REPLACE;
            st->a = xstrdup(ps); st->b = xstrdup(content);
            t->n_dec++;
            if (!st->a || !st->b) { ax_seterr(err, "%s: out of memory", path); return -1; }
            continue;
        } else if (!strcmp(ty, "ByteFallback")) {
            st->kind = DEC_BYTEFALLBACK;
        } else if (!strcmp(ty, "Fuse")) {
            st->kind = DEC_FUSE;
        } else if (!strcmp(ty, "Strip")) {
            const char *c;
            long a, b;
            uint32_t cp;
            char wa[80], wb[80];
            snprintf(wa, sizeof wa, "decoder %d Strip \"start\"", i);
            snprintf(wb, sizeof wb, "decoder %d Strip \"stop\"", i);
            if (jstring(s, "content", 1, path, where, &c, err)) return -1;
            if (!*c || utf8_next((const unsigned char *)c, strlen(c), &cp) != (int)strlen(c)) {
                ax_seterr(err, "%s: decoder %d Strip \"content\": expected one character, got '%s'", path, i, c);
                return -1;
            }
            if (jint_value(jget(s, "start"), 0, INT_MAX, path, wa, &a, err) ||
                jint_value(jget(s, "stop"), 0, INT_MAX, path, wb, &b, err)) return -1;
            st->kind = DEC_STRIP;
            st->a = xstrdup(c);
            t->n_dec++;
            if (!st->a) { ax_seterr(err, "%s: out of memory", path); return -1; }
            st->start = (int)a; st->stop = (int)b;
            continue;
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
    size_t n = strlen(s);
    if (n > UINT32_MAX) { ax_seterr(err, "%s: a piece is longer than 4 GiB", path); return -1; }
    if (!(t->piece[id] = xstrdup(s))) { ax_seterr(err, "%s: out of memory", path); return -1; }
    t->piece_len[id] = (uint32_t)n;
    return 0;
}

/* GPT-2 byte-level BPE (bytes_to_unicode in openai/gpt-2 encoder.py, pre_tokenizers/byte_level.rs):
 * the 68 bytes that are not printable Latin-1 (0x00-0x20, 0x7F-0xA0, 0xAD) stand as U+0100..U+0143
 * ('Ġ' U+0120 = space, 'Ċ' U+010A = newline); a byte-level vocab holds all 68 as single pieces. */
static int byte_level_vocab(const ae_tokenizer *t) {
    int k = 0, found = 0;
    for (int b = 0; b < 256; b++) {
        if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) continue;
        uint32_t cp = 0x100u + (uint32_t)k++;
        char u[2] = {(char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 0x3F))};
        if (vmap_find(t, u, 2) >= 0) found++;
    }
    return found == 68;
}

static int load_json(ae_tokenizer *t, const cJSON *root, const char *path, char *err) {
    if (!cJSON_IsObject(root)) { ax_seterr(err, "%s: expected a JSON object at the top, got %s", path, jtype(root)); return -1; }
    const cJSON *model = jget(root, "model");
    if (!cJSON_IsObject(model)) { ax_seterr(err, "%s: \"model\": expected an object, got %s", path, jtype(model)); return -1; }
    const char *mtype, *unk, *csp, *eows;
    if (jstring(model, "type", 0, path, "model.", &mtype, err)) return -1;
    const cJSON *vocab = jget(model, "vocab");
    const cJSON *merges = jget(model, "merges");
    if (mtype && strcmp(mtype, "BPE")) {
        ax_seterr(err, "%s: model type '%s' is not supported (only BPE)", path, mtype);
        return -1;
    }
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        ax_seterr(err, "%s: model is not a BPE model with \"vocab\" (an object: got %s) and \"merges\" (an array: "
                  "got %s)", path, jtype(vocab), jtype(merges));
        return -1;
    }
    const cJSON *pre = jget(root, "pre_tokenizer");
    if (pre && !cJSON_IsNull(pre)) {
        const cJSON *pt = jget(pre, "type");
        ax_seterr(err, "%s: pre_tokenizer '%s' is not supported: byte-level BPE (LLaMA-3 style, regex "
                    "pre-tokenizer) and Metaspace tokenizers are a later step; only SentencePiece-style "
                    "BPE files with no pre-tokenizer (LLaMA-2) are supported", path,
                  cJSON_IsString(pt) ? pt->valuestring : "?");
        return -1;
    }
    if (jstring(model, "continuing_subword_prefix", 0, path, "model.", &csp, err) ||
        jstring(model, "end_of_word_suffix", 0, path, "model.", &eows, err)) return -1;
    if (csp || eows) {
        ax_seterr(err, "%s: BPE continuing_subword_prefix / end_of_word_suffix are not supported", path);
        return -1;
    }
    const cJSON *drop = jget(model, "dropout");
    if (drop && !cJSON_IsNull(drop) && !(cJSON_IsNumber(drop) && drop->valuedouble == 0.0)) {
        ax_seterr(err, "%s: BPE dropout is not supported (encoding must be deterministic)", path);
        return -1;
    }
    if (jbool(model, "byte_fallback", 0, path, "model.", &t->byte_fallback, err) ||
        jbool(model, "fuse_unk", 0, path, "model.", &t->fuse_unk, err) ||
        jbool(model, "ignore_merges", 0, path, "model.", &t->ignore_merges, err)) return -1;

    /* ids: model vocab and added tokens, integers in [0, INT_MAX - 1] (n_vocab = max + 1 is an int) */
    long max_id = -1;
    size_t nv = 0, n_added = 0;
    for (const cJSON *e = vocab->child; e; e = e->next, nv++) {
        char what[120];
        long id;
        snprintf(what, sizeof what, "model.vocab[\"%.60s\"]", e->string ? e->string : "?");
        if (jint_value(e, 0, INT_MAX - 1, path, what, &id, err)) return -1;
        if (id > max_id) max_id = id;
    }
    const cJSON *added = jget(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added)) {
        ax_seterr(err, "%s: \"added_tokens\": expected an array, got %s", path, jtype(added)); return -1;
    }
    for (const cJSON *e = added ? added->child : NULL; e; e = e->next, n_added++) {
        char what[64];
        const char *content;
        long id;
        int flag;
        snprintf(what, sizeof what, "added_tokens[%zu].id", n_added);
        if (!cJSON_IsObject(e)) {
            ax_seterr(err, "%s: added_tokens[%zu]: expected an object, got %s", path, n_added, jtype(e)); return -1;
        }
        if (jint_value(jget(e, "id"), 0, INT_MAX - 1, path, what, &id, err)) return -1;
        snprintf(what, sizeof what, "added_tokens[%zu].", n_added);
        if (jstring(e, "content", 1, path, what, &content, err)) return -1;
        static const char *const flags[] = {"special", "single_word", "lstrip", "rstrip", "normalized"};
        for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++)
            if (jbool(e, flags[k], 0, path, what, &flag, err)) return -1;
        if (id > max_id) max_id = id;
    }
    if (max_id < 0) { ax_seterr(err, "%s: empty vocab", path); return -1; }
    if ((double)max_id >= 4.0 * (double)(nv + n_added) + 1024) {   /* guards the id -> piece table's size */
        ax_seterr(err, "%s: ids are not dense (largest id %ld for %zu pieces)", path, max_id, nv + n_added);
        return -1;
    }
    t->n_vocab = (int)max_id + 1;
    size_t bytes;
    if (ax_mul_size((size_t)t->n_vocab, sizeof *t->piece, &bytes, "id -> piece table", err)) return -1;
    t->piece = calloc((size_t)t->n_vocab, sizeof *t->piece);
    t->piece_len = calloc((size_t)t->n_vocab, sizeof *t->piece_len);
    t->special = calloc((size_t)t->n_vocab, 1);
    t->vcap = table_cap(nv);
    if (!t->vcap || ax_mul_size(t->vcap, sizeof *t->vmap, &bytes, "vocab hash table", err)) {
        ax_seterr(err, "%s: vocab of %zu pieces is too large", path, nv); return -1;
    }
    t->vmap = malloc(bytes);
    if (!t->piece || !t->piece_len || !t->special || !t->vmap) { ax_seterr(err, "%s: out of memory", path); return -1; }
    memset(t->vmap, 0xFF, bytes);
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int id = (int)e->valuedouble;
        if (t->piece[id]) {
            ax_seterr(err, "%s: model.vocab: id %d is given to two pieces ('%s' and '%s')", path, id, t->piece[id],
                      e->string);
            return -1;
        }
        if (set_piece(t, id, e->string, path, err)) return -1;
        if (vmap_find(t, e->string, strlen(e->string)) >= 0) {
            ax_seterr(err, "%s: vocab piece '%s' appears twice", path, e->string); return -1;
        }
        vmap_insert(t, id);
    }
    int *added_at = malloc((size_t)t->n_vocab * sizeof *added_at);   /* id -> added_tokens index */
    if (!added_at) { ax_seterr(err, "%s: out of memory", path); return -1; }
    memset(added_at, 0xFF, (size_t)t->n_vocab * sizeof *added_at);
    int k = 0, rc = 0;
    for (const cJSON *e = added ? added->child : NULL; e && !rc; e = e->next, k++) {
        int id = (int)jget(e, "id")->valuedouble;
        if (added_at[id] >= 0) {
            ax_seterr(err, "%s: added_tokens[%d].id %d is already the id of added_tokens[%d]", path, k, id, added_at[id]);
            rc = -1;
            break;
        }
        added_at[id] = k;
        rc = set_piece(t, id, jget(e, "content")->valuestring, path, err);
        if (cJSON_IsTrue(jget(e, "special"))) t->special[id] = 1;
    }
    free(added_at);
    if (rc) return -1;

    /* unk, byte pieces */
    t->unk_id = -1;
    if (jstring(model, "unk_token", 0, path, "model.", &unk, err)) return -1;
    if (unk) {
        t->unk_id = vmap_find(t, unk, strlen(unk));
        if (t->unk_id < 0) { ax_seterr(err, "%s: unk_token '%s' is not in the vocab", path, unk); return -1; }
    }
    int n_bytes = 0;
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        t->byte_id[b] = vmap_find(t, s, 6);
        n_bytes += t->byte_id[b] >= 0;
    }
    if (n_bytes == 0 && byte_level_vocab(t)) {
        ax_seterr(err, "%s: the vocabulary is byte-level BPE (GPT-2 / LLaMA-3 style: all 68 byte stand-ins such "
                  "as 'Ġ' for a space and 'Ċ' for a newline are pieces, and there are no <0xXX> byte-fallback "
                  "pieces) but the file has no ByteLevel pre-tokenizer; byte-level BPE is not supported (only "
                  "SentencePiece-style BPE with byte fallback, as LLaMA-2), and without its ByteLevel parts "
                  "this file cannot encode text correctly", path);
        return -1;
    }

    /* merges: ["a b", …] (older files) or [["a", "b"], …]; rank = index; new piece a+b must be in
     * the vocab (HF: MergeTokenOutOfVocabulary). */
    size_t nm = 0;
    for (const cJSON *e = merges->child; e; e = e->next) nm++;
    if (nm > INT_MAX) { ax_seterr(err, "%s: %zu merges (at most %d)", path, nm, INT_MAX); return -1; }
    t->mcap = table_cap(nm);
    size_t kb, vb;
    if (!t->mcap || ax_mul_size(t->mcap, sizeof *t->mkey, &kb, "merges hash table", err) ||
        ax_mul_size(t->mcap, sizeof *t->mval, &vb, "merges hash table", err)) {
        ax_seterr(err, "%s: %zu merges are too many", path, nm); return -1;
    }
    t->mkey = malloc(kb);
    t->mval = malloc(vb);
    if (!t->mkey || !t->mval) { ax_seterr(err, "%s: out of memory", path); return -1; }
    memset(t->mkey, 0xFF, kb);
    sbuf cat = {0};
    int rank = 0;
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
            ax_seterr(err, "%s: merge %d: expected \"a b\" or [\"a\", \"b\"], got %s", path, rank, jtype(e));
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

    if (load_normalizer(t, jget(root, "normalizer"), path, err)) return -1;
    if (load_decoder(t, jget(root, "decoder"), path, err)) return -1;

    /* BOS: the leading special token of the post-processor's single template (what HF adds with
     * add_special_tokens=True), else "<s>"; EOS: "</s>" when present. */
    t->bos_id = -1;
    const cJSON *pp = jget(root, "post_processor");
    const cJSON *single = jget(pp, "single");
    if (cJSON_IsArray(single) && single->child) {
        const cJSON *st = jget(single->child, "SpecialToken");
        const cJSON *name = jget(st, "id");
        if (cJSON_IsString(name)) {
            for (int i = 0; i < t->n_vocab; i++)
                if (t->piece[i] && !strcmp(t->piece[i], name->valuestring)) { t->bos_id = i; break; }
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
    if (!path || !*path) { ax_seterr(err, "tokenizer path is empty"); return -1; }
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {   /* a model folder: its tokenizer.json */
        if (snprintf(dirpath, sizeof dirpath, "%s/tokenizer.json", path) >= (int)sizeof dirpath) {
            ax_seterr(err, "%.200s…: path too long", path);
            return -1;
        }
        path = dirpath;
    }
    if (ax_read_file(path, &data, &len, err)) return -1;
    /* HF reads the file as a Rust String: it must be UTF-8 */
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int l = utf8_next((const unsigned char *)data + i, len - i, &cp);
        if (!l) {
            ax_seterr(err, "%s: not valid UTF-8 at byte offset %zu", path, i);
            free(data);
            return -1;
        }
        i += (size_t)l;
    }
    cJSON *root = ax_json_parse_strict(data, len, path, err);
    free(data);
    if (!root) return -1;
    ae_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->path = xstrdup(path))) {
        free(t); cJSON_Delete(root); ax_seterr(err, "%s: out of memory", path); return -1;
    }
    int rc = load_json(t, root, path, err);
    cJSON_Delete(root);
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
/* Regex Replace over in[0..n) (valid UTF-8) into out, with the match sequence of the onig crate's
 * FindMatches (what tokenizers' Pattern for SysRegex iterates): search from the end of the last
 * match; an empty match right at the end of the previous match is skipped by advancing one
 * character. An empty input has no match (tokenizers' find_matches returns it unmatched). Every
 * match is replaced by the content, literally. */
static int regex_replace(const norm_step *st, const char *in, size_t n, sbuf *out, char *err) {
    if (n == 0) return 0;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(st->re, NULL);
    if (!md) { ax_seterr(err, "out of memory"); return -1; }
    size_t cl = strlen(st->b), copied = 0, from = 0, last_end = 0;
    int have_last = 0, rc = 0;
    while (from <= n) {
        int m = pcre2_match(st->re, (PCRE2_SPTR)in, n, from, PCRE2_NO_UTF_CHECK, md, st->mctx);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(m, msg, sizeof msg);
            ax_seterr(err, "normalizer Replace regex '%s' failed at normalized byte %zu: %s (limits: %u "
                      "backtracking steps, depth %u, %u KiB heap per match)", st->a, from, (const char *)msg,
                      AE_RE_MATCH_LIMIT, AE_RE_DEPTH_LIMIT, AE_RE_HEAP_KIB);
            rc = -1;
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t s = ov[0], e = ov[1];
        if (s == e && have_last && e == last_end) {   /* empty match right after the last one */
            if (from >= n) break;
            uint32_t cp;
            int l = utf8_next((const unsigned char *)in + from, n - from, &cp);
            from += l ? (size_t)l : 1;
            continue;
        }
        if (s < copied || e < s) { ax_seterr(err, "normalizer Replace regex '%s': match out of order", st->a); rc = -1; break; }
        if (sb_add(out, in + copied, s - copied) || sb_add(out, st->b, cl)) { ax_seterr(err, "out of memory"); rc = -1; break; }
        copied = e;
        from = e;
        last_end = e;
        have_last = 1;
    }
    pcre2_match_data_free(md);
    if (rc) return rc;
    if (sb_add(out, in + copied, n - copied)) { ax_seterr(err, "out of memory"); return -1; }
    return 0;
}

/* Apply one step to in[0..n) into out (reset). */
static int norm_apply(const norm_step *st, const char *in, size_t n, sbuf *out, char *err) {
    out->n = 0;
    if (sb_reserve(out, n)) { ax_seterr(err, "out of memory"); return -1; }
    out->p[0] = 0;
    switch (st->kind) {
    case NORM_PREPEND:   /* HF: only a non-empty string gets the prefix */
        if ((n && sb_add(out, st->a, strlen(st->a))) || sb_add(out, in, n)) { ax_seterr(err, "out of memory"); return -1; }
        return 0;
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
        if (sb_add(out, in + a, b - a)) { ax_seterr(err, "out of memory"); return -1; }
        return 0;
    }
    case NORM_REPLACE_STR: {
        size_t pl = strlen(st->a), cl = strlen(st->b), i = 0;
        while (i < n) {
            const char *hit = (n - i >= pl) ? memmem(in + i, n - i, st->a, pl) : NULL;
            if (!hit) { if (sb_add(out, in + i, n - i)) { ax_seterr(err, "out of memory"); return -1; } return 0; }
            if (sb_add(out, in + i, (size_t)(hit - (in + i))) || sb_add(out, st->b, cl)) { ax_seterr(err, "out of memory"); return -1; }
            i = (size_t)(hit - in) + pl;
        }
        return 0;
    }
    case NORM_REPLACE_REGEX:
        return regex_replace(st, in, n, out, err);
    }
    ax_seterr(err, "internal error: unknown normalizer step");
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
    if (add_bos && t->bos_id < 0) {
        ax_seterr(err, "%s: no BOS token to prepend (the post_processor's template has no leading special token "
                  "and the vocab has no \"<s>\"); encode without BOS", t->path);
        return -1;
    }
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
        if (norm_apply(&t->norm[k], a.p, a.n, &b, err)) { free(a.p); free(b.p); return -1; }
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
    size_t sym_bytes, res_bytes, heap_bytes;
    if (ax_mul_size(sl + 1, sizeof(int32_t), &sym_bytes, "BPE symbol arrays", err) ||
        ax_mul_size(sl + 2, sizeof(int), &res_bytes, "token ids", err) ||
        ax_mul_size(3 * (sl + 1) + 1, sizeof(heap_ent), &heap_bytes, "BPE merge heap", err)) {
        free(a.p);
        return -1;
    }
    int32_t *sym = malloc(sym_bytes);
    int32_t *prv = malloc(sym_bytes);
    int32_t *nxt = malloc(sym_bytes);
    int *res = malloc(res_bytes);
    heap_ent *heap = NULL;
    size_t ns = 0, nres = 0;
    int rc = 0;
    if (!sym || !prv || !nxt || !res) { ax_seterr(err, "out of memory (%zu bytes of text)", sl); rc = -1; goto done; }
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
    heap = malloc((3 * ns + 1) * sizeof *heap);   /* ns <= sl: within heap_bytes, checked above */
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
