/* zeroshot.c — zero-shot task table, loaders and lm-eval request building (see zeroshot.h). */
#include "zeroshot.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "aq.h"
#include "ax_util.h"
#include "ustr.h"


static char *xstrdup(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* s = a + b (malloc'd) */
static char *cat2(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *d = malloc(na + nb + 1);
    if (!d) return NULL;
    memcpy(d, a, na);
    memcpy(d + na, b, nb + 1);
    return d;
}

/* Python s.replace(old, new): all non-overlapping occurrences, left to right. */
static char *py_replace(const char *s, const char *old, const char *new_) {
    size_t no = strlen(old), nn = strlen(new_), cnt = 0;
    for (const char *p = strstr(s, old); p; p = strstr(p + no, old)) cnt++;
    size_t len = nn < no ? strlen(s) - cnt * (no - nn) : strlen(s) + cnt * (nn - no);
    char *d = malloc(len + 1), *o = d;
    if (!d) return NULL;
    const char *p = s, *q;
    while ((q = strstr(p, old))) {
        memcpy(o, p, (size_t)(q - p)); o += q - p;
        memcpy(o, new_, nn); o += nn;
        p = q + no;
    }
    strcpy(o, p);
    return d;
}

char *ad_hellaswag_preprocess(const char *text) {
    /* lm_eval/tasks/hellaswag/utils.py preprocess():
     *   text = text.strip(); text = text.replace(" [title]", ". ");
     *   text = re.sub("\\[.*?\\]", "", text); text = text.replace("  ", " ") */
    char *a = ad_py_strip(text);   /* Unicode whitespace, as Python */
    if (!a) return NULL;
    char *b = py_replace(a, " [title]", ". ");
    free(a);
    if (!b) return NULL;
    /* re.sub(r"\[.*?\]", ""): from each '[' the shortest run up to the next ']' with no '\n'
     * in between ('.' does not match a newline); an unmatched '[' stays. */
    size_t n = strlen(b), o = 0;
    char *c = malloc(n + 1);
    if (!c) { free(b); return NULL; }
    for (size_t i = 0; i < n;) {
        if (b[i] == '[') {
            size_t j = i + 1;
            while (j < n && b[j] != ']' && b[j] != '\n') j++;
            if (j < n && b[j] == ']') { i = j + 1; continue; }
        }
        c[o++] = b[i++];
    }
    c[o] = 0;
    free(b);
    char *d = py_replace(c, "  ", " ");
    free(c);
    return d;
}

/* ---- the set under construction ---------------------------------------------------------------- */
static ad_zs_doc *new_doc(ad_zs_set *s, int n_req, char *err) {
    if (s->n_docs % 256 == 0) {
        ad_zs_doc *d = realloc(s->docs, (size_t)(s->n_docs + 256) * sizeof *d);
        if (!d) { ax_seterr(err, "out of memory"); return NULL; }
        s->docs = d;
    }
    ad_zs_doc *doc = &s->docs[s->n_docs];
    memset(doc, 0, sizeof *doc);
    doc->req = calloc((size_t)n_req, sizeof *doc->req);
    doc->choice_len = calloc((size_t)n_req, sizeof *doc->choice_len);
    if (!doc->req || !doc->choice_len) {
        free(doc->req); free(doc->choice_len);
        ax_seterr(err, "out of memory");
        return NULL;
    }
    doc->n_req = n_req;
    s->n_docs++;
    s->n_requests += n_req;
    return doc;
}

static int doc_strings_ok(ad_zs_doc *doc, char *err) {
    for (int i = 0; i < doc->n_req; i++)
        if (!doc->req[i].context || !doc->req[i].continuation) {
            ax_seterr(err, "out of memory");
            return -1;
        }
    return 0;
}

int ad_zs_add_mc(ad_zs_set *s, const char *context, const char *const *choices, int n, int gold,
                 char *err) {
    if (n < 1 || gold < 0 || gold >= n) {
        ax_seterr(err, "gold index %d outside the %d choices", gold, n);
        return -1;
    }
    ad_zs_doc *doc = new_doc(s, n, err);
    if (!doc) return -1;
    doc->gold = gold;
    for (int i = 0; i < n; i++) {
        /* construct_requests: (ctx, f"{target_delimiter}{cont}") with target_delimiter " " */
        doc->req[i].context = xstrdup(context);
        doc->req[i].continuation = cat2(" ", choices[i]);
        doc->choice_len[i] = (double)ad_utf8_len(choices[i]);
    }
    return doc_strings_ok(doc, err);
}

int ad_zs_add_winogrande(ad_zs_set *s, const char *sentence, const char *option1,
                         const char *option2, int gold, char *err) {
    const char *us = strchr(sentence, '_');
    if (!us) { ax_seterr(err, "sentence has no '_' blank"); return -1; }
    if (gold < 0 || gold > 1) { ax_seterr(err, "answer index %d is not 0 or 1", gold); return -1; }
    ad_zs_doc *doc = new_doc(s, 2, err);
    if (!doc) return -1;
    doc->gold = gold;
    size_t idx = (size_t)(us - sentence);
    char *target = ad_py_strip(us + 1);        /* sentence[idx+1:].strip() */
    const char *opt[2] = {option1, option2};
    for (int i = 0; i < 2; i++) {
        char *ctx = malloc(idx + strlen(opt[i]) + 1);
        if (ctx) {
            memcpy(ctx, sentence, idx);
            strcpy(ctx + idx, opt[i]);          /* sentence[:idx] + option */
            doc->choice_len[i] = (double)ad_utf8_len(ctx);
        }
        doc->req[i].context = ctx;
        doc->req[i].continuation = target ? cat2(" ", target) : NULL;
    }
    free(target);
    return doc_strings_ok(doc, err);
}

int ad_zs_add_lambada(ad_zs_set *s, const char *text, char *err) {
    ad_zs_doc *doc = new_doc(s, 1, err);
    if (!doc) return -1;
    const char *sp = strrchr(text, ' ');
    size_t cut = sp ? (size_t)(sp - text) : 0;
    const char *last = sp ? sp + 1 : text;
    char *ctx = malloc(cut + 1);
    if (ctx) { memcpy(ctx, text, cut); ctx[cut] = 0; }
    doc->req[0].context = ctx;
    doc->req[0].continuation = cat2(" ", last);
    doc->choice_len[0] = (double)ad_utf8_len(last) + 1;
    doc->gold = 0;
    return doc_strings_ok(doc, err);
}

/* ---- file helpers -------------------------------------------------------------------------------- */
typedef struct {          /* line iterator over a mutable buffer */
    char  *p, *end;
    long   lineno;
} line_iter;

/* Next line (NUL-terminated in place, "\r\n" handled); NULL at the end. The buffer has been checked
 * for NUL bytes (check_text), so strlen() sees the whole line. */
static char *next_line(line_iter *it) {
    if (it->p >= it->end) return NULL;
    char *s = it->p, *nl = memchr(s, '\n', (size_t)(it->end - s));
    if (nl) { *nl = 0; it->p = nl + 1; } else it->p = it->end;
    size_t n = strlen(s);
    if (n && s[n - 1] == '\r') s[n - 1] = 0;
    it->lineno++;
    return s;
}

static int blank(const char *s) {   /* JSON whitespace only (a JSON-lines blank line) */
    for (; *s; s++) if (*s != ' ' && *s != '\t' && *s != '\r') return 0;
    return 1;
}

/* A data file must be text: no NUL byte (it would cut a line short without a word) and UTF-8 that
 * Python's strict decoder accepts (lm-eval's loaders would raise UnicodeDecodeError). Errors name
 * file:line, the column and the byte offset in the file. */
static int check_text(const char *path, const char *buf, size_t len, char *err) {
    const char *nul = memchr(buf, 0, len);
    size_t bad = ad_u8_check(buf, len);
    size_t off = nul ? (size_t)(nul - buf) : bad;
    if (off == (size_t)-1) return 0;
    if (bad < off) off = bad;
    long line = 1;
    size_t bol = 0;
    for (size_t i = 0; i < off; i++)
        if (buf[i] == '\n') { line++; bol = i + 1; }
    if (nul && (size_t)(nul - buf) == off)
        ax_seterr(err, "%s:%ld: NUL byte at column %zu (byte offset %zu): not a text file", path, line,
                  off - bol + 1, off);
    else
        ax_seterr(err, "%s:%ld: invalid UTF-8 (byte 0x%02x) at column %zu (byte offset %zu)", path,
                  line, (unsigned char)buf[off], off - bol + 1, off);
    return -1;
}

/* Read a labels file (one integer per non-blank line) into *lab (malloc'd), *n >= 1. */
static int read_labels(const char *path, int **lab, int *n, char *err) {
    char *buf; size_t len;
    *lab = NULL; *n = 0;
    if (ax_read_file(path, &buf, &len, err)) return -1;
    if (check_text(path, buf, len, err)) { free(buf); return -1; }
    line_iter it = {buf, buf + len, 0};
    int cap = 0, cnt = 0, *a = NULL;
    char *ln;
    while ((ln = next_line(&it))) {
        char *t = ad_py_strip(ln);
        if (!t) { ax_seterr(err, "out of memory"); free(a); free(buf); return -1; }
        if (!*t) { free(t); continue; }
        char what[AX_PATH_LEN + 64], msg[AX_ERR_LEN];
        snprintf(what, sizeof what, "%s:%ld: label", path, it.lineno);
        long v;
        int bad = ax_parse_long(t, -1000000, 1000000, what, &v, msg);
        free(t);
        if (bad) { ax_seterr(err, "%s", msg); free(a); free(buf); return -1; }
        if (cnt == cap) {
            cap = cap ? 2 * cap : 1024;
            int *b = realloc(a, (size_t)cap * sizeof *b);
            if (!b) { ax_seterr(err, "out of memory"); free(a); free(buf); return -1; }
            a = b;
        }
        a[cnt++] = (int)v;
    }
    free(buf);
    if (cnt == 0) {   /* an empty labels file: every record would lack its label */
        ax_seterr(err, "%s: no labels (empty labels file; expected one label per record)", path);
        free(a);
        return -1;
    }
    *lab = a; *n = cnt;
    return 0;
}

/* ---- typed access to a record's keys (errors: file:line, the key, the expected and found type) -- */
static const char *json_type(const cJSON *v) {
    if (!v) return "nothing";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "true/false";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an unknown JSON value";
}

typedef struct { const char *path; long lineno; } rec_at;   /* where a record is */

static int type_err(const rec_at *at, const char *key, const char *want, const cJSON *got, char *err) {
    if (!got) ax_seterr(err, "%s:%ld: key '%s' missing (expected %s)", at->path, at->lineno, key, want);
    else ax_seterr(err, "%s:%ld: key '%s' must be %s, got %s", at->path, at->lineno, key, want, json_type(got));
    return -1;
}

/* *out = the string o[key] (named `name` in messages); optional: a missing key gives *out = NULL. */
static int get_str(const cJSON *o, const char *key, const char *name, int optional, const rec_at *at,
                   const char **out, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = NULL;
    if (!v && optional) return 0;
    if (!cJSON_IsString(v)) return type_err(at, name ? name : key, "a string", v, err);
    *out = v->valuestring;
    return 0;
}

/* An integer-valued JSON number, or a string of decimal digits (HF datasets store labels as
 * strings), in [lo, hi]. */
static int get_index(const cJSON *v, const char *name, long lo, long hi, const rec_at *at, long *out,
                     char *err) {
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && d >= (double)lo && d <= (double)hi) { *out = (long)d; return 0; }
        ax_seterr(err, "%s:%ld: key '%s' must be an integer in [%ld, %ld], got %g", at->path, at->lineno,
                  name, lo, hi, d);
        return -1;
    }
    if (cJSON_IsString(v)) {
        char what[AX_PATH_LEN + 128];
        snprintf(what, sizeof what, "%s:%ld: key '%s'", at->path, at->lineno, name);
        for (const char *p = v->valuestring; *p; p++)
            if (*p < '0' || *p > '9') {   /* digits only: no sign, no spaces */
                ax_seterr(err, "%s: expected an integer in [%ld, %ld], got '%.40s'", what, lo, hi, v->valuestring);
                return -1;
            }
        return ax_parse_long(v->valuestring, lo, hi, what, out, err);
    }
    return type_err(at, name, "an integer (number or digit string)", v, err);
}

/* JSON-lines driver: calls rec() for each non-blank line with the parsed object. */
typedef int (*rec_fn)(ad_zs_set *s, const cJSON *o, const rec_at *at, int rec_idx,
                      const int *labels, char *err);

static int read_jsonl(ad_zs_set *s, const char *path, const char *labels_path, rec_fn rec,
                      char *err) {
    int *labels = NULL, n_labels = 0;
    if (labels_path && read_labels(labels_path, &labels, &n_labels, err)) return -1;
    char *buf; size_t len;
    if (ax_read_file(path, &buf, &len, err)) { free(labels); return -1; }
    if (check_text(path, buf, len, err)) { free(buf); free(labels); return -1; }
    line_iter it = {buf, buf + len, 0};
    char *ln;
    int rc = 0, idx = 0;
    while ((ln = next_line(&it))) {
        if (blank(ln)) continue;
        /* strict: duplicate keys, trailing garbage, \u0000 escapes rejected */
        char msg[AX_ERR_LEN];
        cJSON *o = ax_json_parse_strict(ln, strlen(ln), "malformed JSON line", msg);
        if (!o) {
            ax_seterr(err, "%s:%ld: %s", path, it.lineno, msg);
            rc = -1;
            break;
        }
        if (!cJSON_IsObject(o)) {
            ax_seterr(err, "%s:%ld: malformed JSON line: expected an object, got %s", path, it.lineno,
                      json_type(o));
            cJSON_Delete(o);
            rc = -1;
            break;
        }
        if (labels_path && idx >= n_labels) {
            ax_seterr(err, "%s has %d labels but %s has more records (record %d at line %ld)",
                   labels_path, n_labels, path, idx + 1, it.lineno);
            cJSON_Delete(o);
            rc = -1;
            break;
        }
        if (idx == 1 << 30) {
            ax_seterr(err, "%s:%ld: more than 2^30 records", path, it.lineno);
            cJSON_Delete(o);
            rc = -1;
            break;
        }
        rec_at at = {path, it.lineno};
        rc = rec(s, o, &at, idx, labels, err);
        cJSON_Delete(o);
        if (rc) break;
        idx++;
    }
    if (!rc && labels_path && idx != n_labels) {
        ax_seterr(err, "%s has %d labels but %s has %d records", labels_path, n_labels, path, idx);
        rc = -1;
    }
    if (!rc && idx == 0) { ax_seterr(err, "%s: no records", path); rc = -1; }
    free(buf);
    free(labels);
    return rc;
}

#define NEED_STR(var, obj, key)                                                                    \
    const char *var;                                                                               \
    if (get_str(obj, key, NULL, 0, at, &var, err)) return -1;

/* Prefix an error from a builder with file:line. */
static int at_line(int rc, const rec_at *at, char *err) {
    if (rc && err) {
        char tmp[AX_ERR_LEN];
        snprintf(tmp, sizeof tmp, "%s", err);
        ax_seterr(err, "%s:%ld: %s", at->path, at->lineno, tmp);
    }
    return rc;
}

/* ---- piqa ---------------------------------------------------------------------------------------- */
static int rec_piqa(ad_zs_set *s, const cJSON *o, const rec_at *at, int idx, const int *labels,
                    char *err) {
    NEED_STR(goal, o, "goal");
    NEED_STR(sol1, o, "sol1");
    NEED_STR(sol2, o, "sol2");
    if (labels[idx] != 0 && labels[idx] != 1) {
        ax_seterr(err, "%s: label %d of record %d (line %ld of %s) is not 0 or 1", s->task->labels,
               labels[idx], idx + 1, at->lineno, at->path);
        return -1;
    }
    char *ctx = malloc(strlen(goal) + 32);   /* piqa.yaml: "Question: {{goal}}\nAnswer:" */
    if (!ctx) { ax_seterr(err, "out of memory"); return -1; }
    sprintf(ctx, "Question: %s\nAnswer:", goal);
    const char *ch[2] = {sol1, sol2};
    int rc = ad_zs_add_mc(s, ctx, ch, 2, labels[idx], err);
    free(ctx);
    return at_line(rc, at, err);
}

static int load_piqa(const ad_zs_task *t, const char *path, const char *labels, ad_zs_set *s,
                     char *err) {
    (void)t;
    return read_jsonl(s, path, labels, rec_piqa, err);
}

/* ---- arc ----------------------------------------------------------------------------------------- */
/* Original ARC schema {"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}; the HF
 * schema {"question": str, "choices": {"text": [], "label": []}, "answerKey"} is accepted too. */
static int rec_arc(ad_zs_set *s, const cJSON *o, const rec_at *at, int idx, const int *labels,
                   char *err) {
    (void)idx; (void)labels;
    NEED_STR(key, o, "answerKey");
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "question");
    const char *stem = NULL;
    const char *texts[16], *labs[16];
    char name[64];
    int n = 0;
    if (cJSON_IsObject(q)) {
        if (get_str(q, "stem", "question.stem", 0, at, &stem, err)) return -1;
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(q, "choices"), *c;
        if (!cJSON_IsArray(ch)) return type_err(at, "question.choices", "an array", ch, err);
        cJSON_ArrayForEach(c, ch) {
            if (n == 16) { ax_seterr(err, "%s:%ld: more than 16 answer choices", at->path, at->lineno); return -1; }
            snprintf(name, sizeof name, "question.choices[%d]", n);
            if (!cJSON_IsObject(c)) return type_err(at, name, "an object", c, err);
            snprintf(name, sizeof name, "question.choices[%d].text", n);
            if (get_str(c, "text", name, 0, at, &texts[n], err)) return -1;
            snprintf(name, sizeof name, "question.choices[%d].label", n);
            if (get_str(c, "label", name, 0, at, &labs[n], err)) return -1;
            n++;
        }
    } else if (cJSON_IsString(q)) {
        stem = q->valuestring;
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "choices");
        if (!cJSON_IsObject(ch)) return type_err(at, "choices", "an object", ch, err);
        const cJSON *tx = cJSON_GetObjectItemCaseSensitive(ch, "text");
        const cJSON *lb = cJSON_GetObjectItemCaseSensitive(ch, "label");
        if (!cJSON_IsArray(tx)) return type_err(at, "choices.text", "an array", tx, err);
        if (!cJSON_IsArray(lb)) return type_err(at, "choices.label", "an array", lb, err);
        if (cJSON_GetArraySize(tx) != cJSON_GetArraySize(lb)) {
            ax_seterr(err, "%s:%ld: keys 'choices.text' and 'choices.label' must have equal lengths (%d vs %d)",
                      at->path, at->lineno, cJSON_GetArraySize(tx), cJSON_GetArraySize(lb));
            return -1;
        }
        if (cJSON_GetArraySize(tx) > 16) { ax_seterr(err, "%s:%ld: more than 16 answer choices", at->path, at->lineno); return -1; }
        for (int i = 0; i < cJSON_GetArraySize(tx); i++, n++) {
            const cJSON *a = cJSON_GetArrayItem(tx, i), *b = cJSON_GetArrayItem(lb, i);
            snprintf(name, sizeof name, "choices.text[%d]", i);
            if (!cJSON_IsString(a)) return type_err(at, name, "a string", a, err);
            snprintf(name, sizeof name, "choices.label[%d]", i);
            if (!cJSON_IsString(b)) return type_err(at, name, "a string", b, err);
            texts[n] = a->valuestring;
            labs[n] = b->valuestring;
        }
    } else {
        return type_err(at, "question", "an object (ARC) or a string (HF ai2_arc)", q, err);
    }
    if (n < 1) { ax_seterr(err, "%s:%ld: no answer choices", at->path, at->lineno); return -1; }
    int gold = -1;   /* arc_easy.yaml: doc_to_target "{{choices.label.index(answerKey)}}" */
    for (int i = 0; i < n; i++)
        if (!strcmp(labs[i], key)) { gold = i; break; }
    if (gold < 0) {
        ax_seterr(err, "%s:%ld: answerKey '%.40s' is not one of the choice labels", at->path, at->lineno, key);
        return -1;
    }
    char *ctx = malloc(strlen(stem) + 32);   /* "Question: {{question}}\nAnswer:" */
    if (!ctx) { ax_seterr(err, "out of memory"); return -1; }
    sprintf(ctx, "Question: %s\nAnswer:", stem);
    int rc = ad_zs_add_mc(s, ctx, texts, n, gold, err);
    free(ctx);
    return at_line(rc, at, err);
}

static int load_arc(const ad_zs_task *t, const char *path, const char *labels, ad_zs_set *s,
                    char *err) {
    (void)t; (void)labels;
    return read_jsonl(s, path, NULL, rec_arc, err);
}

/* ---- boolq --------------------------------------------------------------------------------------- */
/* lm-eval reads SuperGLUE BoolQ (question, passage, label, idx), whose passage is
 * "<title> -- <passage>" built from Google's original dev.jsonl (question, title, answer (bool),
 * passage). A record with a `title` is in Google's form: passage = title + " -- " + passage; one
 * without is taken as SuperGLUE's and used as it is. The gold comes from `answer` (bool) or
 * SuperGLUE's `label` (bool, or 0/1 as in HF super_glue). */
static int rec_boolq(ad_zs_set *s, const cJSON *o, const rec_at *at, int idx, const int *labels,
                     char *err) {
    (void)idx; (void)labels;
    NEED_STR(question, o, "question");
    NEED_STR(passage, o, "passage");
    const char *title;
    if (get_str(o, "title", NULL, 1, at, &title, err)) return -1;
    const cJSON *ans = cJSON_GetObjectItemCaseSensitive(o, "answer");
    const cJSON *lab = cJSON_GetObjectItemCaseSensitive(o, "label");
    int gold;
    if (ans) {
        if (!cJSON_IsBool(ans)) return type_err(at, "answer", "true/false", ans, err);
        gold = cJSON_IsTrue(ans) ? 1 : 0;
    } else if (cJSON_IsBool(lab)) {
        gold = cJSON_IsTrue(lab) ? 1 : 0;
    } else if (lab) {
        long v;
        if (!cJSON_IsNumber(lab)) return type_err(at, "label", "true/false or 0/1", lab, err);
        if (get_index(lab, "label", 0, 1, at, &v, err)) return -1;
        gold = (int)v;
    } else {
        return type_err(at, "answer", "true/false (or SuperGLUE's 'label')", NULL, err);
    }
    /* boolq/default.yaml: "{{passage}}\nQuestion: {{question}}?\nAnswer:", choices ["no", "yes"] */
    size_t np = strlen(passage) + (title ? strlen(title) + 4 : 0);
    char *ctx = malloc(np + strlen(question) + 32);
    if (!ctx) { ax_seterr(err, "out of memory"); return -1; }
    if (title) sprintf(ctx, "%s -- %s\nQuestion: %s?\nAnswer:", title, passage, question);
    else sprintf(ctx, "%s\nQuestion: %s?\nAnswer:", passage, question);
    const char *ch[2] = {"no", "yes"};
    int rc = ad_zs_add_mc(s, ctx, ch, 2, gold, err);
    free(ctx);
    return at_line(rc, at, err);
}

static int load_boolq(const ad_zs_task *t, const char *path, const char *labels, ad_zs_set *s,
                      char *err) {
    (void)t; (void)labels;
    return read_jsonl(s, path, NULL, rec_boolq, err);
}

/* ---- hellaswag ----------------------------------------------------------------------------------- */
/* Original hellaswag_val.jsonl (rowanz/hellaswag): activity_label, ctx_a, ctx_b, endings[4], label.
 * utils.py process_docs: query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()),
 * choices = [preprocess(e) for e in endings], gold = int(label). */
static int rec_hellaswag(ad_zs_set *s, const cJSON *o, const rec_at *at, int idx, const int *labels,
                         char *err) {
    (void)idx; (void)labels;
    NEED_STR(act, o, "activity_label");
    NEED_STR(ctx_a, o, "ctx_a");
    NEED_STR(ctx_b, o, "ctx_b");
    const cJSON *end = cJSON_GetObjectItemCaseSensitive(o, "endings");
    if (!cJSON_IsArray(end)) return type_err(at, "endings", "an array of strings", end, err);
    int n = cJSON_GetArraySize(end);
    if (n < 1 || n > 16) {
        ax_seterr(err, "%s:%ld: key 'endings' must hold 1..16 strings, has %d", at->path, at->lineno, n);
        return -1;
    }
    long gold;
    if (get_index(cJSON_GetObjectItemCaseSensitive(o, "label"), "label", 0, n - 1, at, &gold, err)) return -1;
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(end, i);
        char name[32];
        snprintf(name, sizeof name, "endings[%d]", i);
        if (!cJSON_IsString(e)) return type_err(at, name, "a string", e, err);
    }
    char *cap = ad_py_capitalize(ctx_b);
    char *raw = cap ? malloc(strlen(act) + strlen(ctx_a) + strlen(cap) + 4) : NULL;
    if (!raw) { free(cap); ax_seterr(err, "out of memory"); return -1; }
    sprintf(raw, "%s: %s %s", act, ctx_a, cap);
    free(cap);
    char *query = ad_hellaswag_preprocess(raw);
    free(raw);
    char *ch[16] = {0};
    int rc = query ? 0 : -1;
    for (int i = 0; i < n && !rc; i++)
        if (!(ch[i] = ad_hellaswag_preprocess(cJSON_GetArrayItem(end, i)->valuestring))) rc = -1;
    if (rc) ax_seterr(err, "out of memory");
    else rc = at_line(ad_zs_add_mc(s, query, (const char *const *)ch, n, (int)gold, err), at, err);
    for (int i = 0; i < n; i++) free(ch[i]);
    free(query);
    return rc ? -1 : 0;
}

/* llama.cpp text format (hellaswag_val_full.txt): 6 lines per task: preprocessed
 * "activity_label: ctx", gold label 0..3, four preprocessed endings. */
static int load_hellaswag_txt(ad_zs_set *s, const char *path, char *err) {
    char *buf; size_t len;
    if (ax_read_file(path, &buf, &len, err)) return -1;
    if (check_text(path, buf, len, err)) { free(buf); return -1; }
    line_iter it = {buf, buf + len, 0};
    char *ln[6];
    int rc = 0, got;
    for (;;) {
        for (got = 0; got < 6; got++)
            if (!(ln[got] = next_line(&it))) break;
        if (got == 0 || (got == 1 && ln[0][0] == 0 && it.p >= it.end)) break;
        long first = it.lineno - got + 1;
        if (got < 6) {
            ax_seterr(err, "%s:%ld: truncated task (%d of 6 lines: context, label, 4 endings)", path, first, got);
            rc = -1;
            break;
        }
        if (!(ln[1][0] >= '0' && ln[1][0] <= '3' && ln[1][1] == 0)) {
            ax_seterr(err, "%s:%ld: label '%.20s' is not 0..3 (llama.cpp hellaswag format: 6 lines per task)",
                   path, first + 1, ln[1]);
            rc = -1;
            break;
        }
        const char *ch[4] = {ln[2], ln[3], ln[4], ln[5]};
        rec_at at = {path, first};
        if ((rc = at_line(ad_zs_add_mc(s, ln[0], ch, 4, ln[1][0] - '0', err), &at, err)))
            break;
    }
    if (!rc && s->n_docs == 0) { ax_seterr(err, "%s: no tasks", path); rc = -1; }
    free(buf);
    return rc;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int load_hellaswag(const ad_zs_task *t, const char *path, const char *labels, ad_zs_set *s,
                          char *err) {
    (void)t; (void)labels;
    if (ends_with(path, ".jsonl")) {
        snprintf(s->variant, sizeof s->variant,
                 "lm-eval preprocessing of the original hellaswag_val.jsonl (utils.py process_docs)");
        return read_jsonl(s, path, NULL, rec_hellaswag, err);
    }
    snprintf(s->variant, sizeof s->variant,
             "llama.cpp text format hellaswag_val_full.txt (derived; ctx_b not capitalised, may "
             "differ slightly from lm-eval)");
    return load_hellaswag_txt(s, path, err);
}

/* ---- winogrande ---------------------------------------------------------------------------------- */
static int rec_winogrande(ad_zs_set *s, const cJSON *o, const rec_at *at, int idx, const int *labels,
                          char *err) {
    NEED_STR(sentence, o, "sentence");
    NEED_STR(o1, o, "option1");
    NEED_STR(o2, o, "option2");
    /* gold_alias / doc_to_text: {"1": 0, "2": 1}; the labels file is authoritative. */
    int lab = labels[idx];
    if (lab != 1 && lab != 2) {
        ax_seterr(err, "%s: label %d of record %d (line %ld of %s) is not 1 or 2", s->task->labels, lab,
               idx + 1, at->lineno, at->path);
        return -1;
    }
    return at_line(ad_zs_add_winogrande(s, sentence, o1, o2, lab - 1, err), at, err);
}

static int load_winogrande(const ad_zs_task *t, const char *path, const char *labels,
                           ad_zs_set *s, char *err) {
    (void)t;
    return read_jsonl(s, path, labels, rec_winogrande, err);
}

/* ---- lambada ------------------------------------------------------------------------------------- */
static int rec_lambada(ad_zs_set *s, const cJSON *o, const rec_at *at, int idx, const int *labels,
                       char *err) {
    (void)idx; (void)labels;
    NEED_STR(text, o, "text");
    return at_line(ad_zs_add_lambada(s, text, err), at, err);
}

static int load_lambada(const ad_zs_task *t, const char *path, const char *labels, ad_zs_set *s,
                        char *err) {
    (void)t; (void)labels;
    return read_jsonl(s, path, NULL, rec_lambada, err);
}

/* ---- the table ----------------------------------------------------------------------------------- */
const ad_zs_task ad_zs_tasks[] = {
    {"piqa", AD_ZS_MULTIPLE_CHOICE, AD_ZS_ACC | AD_ZS_ACC_NORM, "data/piqa/valid.jsonl",
     "data/piqa/valid-labels.lst", NULL, load_piqa, "lm_eval/tasks/piqa/piqa.yaml",
     "PIQA validation: https://yonatanbisk.com/piqa/data/ (valid.jsonl, valid-labels.lst)"},
    {"arc_easy", AD_ZS_MULTIPLE_CHOICE, AD_ZS_ACC | AD_ZS_ACC_NORM,
     "data/arc_easy/ARC-Easy-Test.jsonl", NULL, NULL, load_arc, "lm_eval/tasks/arc/arc_easy.yaml",
     "ARC-Easy test: ARC-V1-Feb2018.zip from https://allenai.org/data/arc"},
    {"arc_challenge", AD_ZS_MULTIPLE_CHOICE, AD_ZS_ACC | AD_ZS_ACC_NORM,
     "data/arc_challenge/ARC-Challenge-Test.jsonl", NULL, NULL, load_arc,
     "lm_eval/tasks/arc/arc_challenge.yaml",
     "ARC-Challenge test: ARC-V1-Feb2018.zip from https://allenai.org/data/arc"},
    {"boolq", AD_ZS_MULTIPLE_CHOICE, AD_ZS_ACC, "data/boolq/dev.jsonl", NULL, NULL, load_boolq,
     "lm_eval/tasks/super_glue/boolq/default.yaml",
     "BoolQ dev: https://storage.googleapis.com/boolq/dev.jsonl"},
    {"hellaswag", AD_ZS_MULTIPLE_CHOICE, AD_ZS_ACC | AD_ZS_ACC_NORM,
     "data/hellaswag/hellaswag_val_full.txt", NULL, "data/hellaswag/hellaswag_val.jsonl",
     load_hellaswag, "lm_eval/tasks/hellaswag/hellaswag.yaml + utils.py",
     "HellaSwag validation: https://raw.githubusercontent.com/rowanz/hellaswag/master/data/"
     "hellaswag_val.jsonl (or llama.cpp's hellaswag_val_full.txt, scripts/get-hellaswag.sh)"},
    {"winogrande", AD_ZS_MULTIPLE_INPUT, AD_ZS_ACC, "data/winogrande/dev.jsonl",
     "data/winogrande/dev-labels.lst", NULL, load_winogrande,
     "lm_eval/tasks/winogrande/default.yaml + preprocess_winogrande.py",
     "WinoGrande 1.1 dev: winogrande_1.1.zip from https://winogrande.allenai.org/"},
    {"lambada_openai", AD_ZS_LOGLIKELIHOOD, AD_ZS_ACC | AD_ZS_PPL,
     "data/lambada_openai/lambada_test.jsonl", NULL, NULL, load_lambada,
     "lm_eval/tasks/lambada/lambada_openai.yaml",
     "LAMBADA (OpenAI): https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl"},
    {NULL, AD_ZS_MULTIPLE_CHOICE, 0, NULL, NULL, NULL, NULL, NULL, NULL},
};

const ad_zs_task *ad_zs_task_find(const char *name) {
    for (int i = 0; ad_zs_tasks[i].name; i++)
        if (!strcmp(ad_zs_tasks[i].name, name)) return &ad_zs_tasks[i];
    return NULL;
}

void ad_zs_set_free(ad_zs_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n_docs; i++) {
        for (int j = 0; j < s->docs[i].n_req; j++) {
            free(s->docs[i].req[j].context);
            free(s->docs[i].req[j].continuation);
        }
        free(s->docs[i].req);
        free(s->docs[i].choice_len);
    }
    free(s->docs);
    free(s);
}

static int file_exists(const char *p) { return access(p, R_OK) == 0; }

int ad_zs_load(const ad_zs_task *t, const char *data_root, long limit, ad_zs_set **out, char *err) {
    *out = NULL;
    if (!t || !t->load) { ax_seterr(err, "unknown task"); return -1; }
    if (limit < 0) { ax_seterr(err, "--limit must be >= 0 (got %ld)", limit); return -1; }
    ad_zs_set *s = calloc(1, sizeof *s);
    if (!s) { ax_seterr(err, "out of memory"); return -1; }
    s->task = t;
    char labels[4096] = "";
    if (t->alt_file) snprintf(s->path, sizeof s->path, "%s/%s", data_root, t->alt_file);
    if (!t->alt_file || !file_exists(s->path)) {
        snprintf(s->path, sizeof s->path, "%s/%s", data_root, t->file);
        if (!file_exists(s->path)) {
            if (t->alt_file)
                ax_seterr(err, "task %s: data file %s/%s (or %s/%s) not found: %s; get it from %s",
                       t->name, data_root, t->file, data_root, t->alt_file, strerror(errno), t->howto);
            else
                ax_seterr(err, "task %s: data file %s not found: %s; get it from %s", t->name, s->path,
                       strerror(errno), t->howto);
            free(s);
            return -1;
        }
    }
    if (t->labels) {
        snprintf(labels, sizeof labels, "%s/%s", data_root, t->labels);
        if (!file_exists(labels)) {
            ax_seterr(err, "task %s: labels file %s not found: %s; get it from %s", t->name, labels,
                   strerror(errno), t->howto);
            free(s);
            return -1;
        }
    }
    if (t->load(t, s->path, t->labels ? labels : NULL, s, err)) { ad_zs_set_free(s); return -1; }
    if (ax_sha256_file(s->path, s->sha256, err)) { ad_zs_set_free(s); return -1; }
    if (!s->variant[0]) snprintf(s->variant, sizeof s->variant, "%s", t->source);
    s->n_total = s->n_docs;
    if (limit > 0 && limit < s->n_docs) {   /* lm-eval --limit N: the first N documents */
        for (int i = (int)limit; i < s->n_docs; i++) {
            for (int j = 0; j < s->docs[i].n_req; j++) {
                free(s->docs[i].req[j].context);
                free(s->docs[i].req[j].continuation);
            }
            s->n_requests -= s->docs[i].n_req;
            free(s->docs[i].req);
            free(s->docs[i].choice_len);
        }
        s->n_docs = (int)limit;
    }
    *out = s;
    return 0;
}
