/* zeroshot.h — zero-shot task table, data loaders and request building (prefix ad_), scored the way
 * EleutherAI lm-evaluation-harness scores them (eval/zeroshot.h runs the model).
 *
 * Sources (lm-evaluation-harness, github.com/EleutherAI/lm-evaluation-harness):
 *   lm_eval/api/task.py           ConfigurableTask.construct_requests: multiple_choice builds one
 *                                 (context, target_delimiter + choice) request per choice, the
 *                                 target_delimiter being " "; multiple_inputs (winogrande) builds one
 *                                 (context + choice, " " + target) request per choice;
 *                                 process_results: acc = argmax(lls) == gold, acc_norm = argmax(lls /
 *                                 len(choice)) == gold, len in characters of the choice string.
 *   lm_eval/tasks/piqa/piqa.yaml              "Question: {{goal}}\nAnswer:", choices [sol1, sol2]
 *   lm_eval/tasks/arc/arc_easy.yaml (and arc_challenge.yaml) "Question: {{question}}\nAnswer:",
 *                                 choices choices.text, gold choices.label.index(answerKey)
 *   lm_eval/tasks/super_glue/boolq/default.yaml "{{passage}}\nQuestion: {{question}}?\nAnswer:",
 *                                 choices ["no", "yes"], metric acc only; SuperGLUE's passage is
 *                                 "<title> -- <passage>" of Google's BoolQ (rebuilt from `title`)
 *   lm_eval/tasks/hellaswag/hellaswag.yaml + utils.py  query = preprocess(activity_label + ": " +
 *                                 ctx_a + " " + ctx_b.capitalize()), choices = preprocess(endings)
 *   lm_eval/tasks/winogrande/default.yaml + preprocess_winogrande.py  partial evaluation, acc only
 *   lm_eval/tasks/lambada/lambada_openai.yaml  context = text.split(' ')[:-1] joined by ' ',
 *                                 target ' ' + last word; output_type loglikelihood: perplexity, acc
 *
 * Data files live under the data root (reports/ax_util.h ax_data_root; see data/MANIFEST.md there).
 * Owners in pairs: ad_zs_load / ad_zs_set_free. Errors: non-zero return, message in err
 * (AX_ERR_LEN bytes) naming the file and line. */
#ifndef APEX4_AD_ZEROSHOT_H
#define APEX4_AD_ZEROSHOT_H

#include <stddef.h>

#include "ustr.h"

/* Metrics a task reports (bit set). */
enum {
    AD_ZS_ACC      = 1,   /* accuracy (multiple choice: argmax ll == gold; loglikelihood: greedy)  */
    AD_ZS_ACC_NORM = 2,   /* accuracy after dividing each ll by the choice's length in characters  */
    AD_ZS_PPL      = 4    /* perplexity exp(-mean ll) over documents (lambada)                     */
};

typedef enum {
    AD_ZS_MULTIPLE_CHOICE = 0, /* shared context, one continuation per choice                       */
    AD_ZS_MULTIPLE_INPUT,      /* one context per choice, shared continuation (winogrande partial)  */
    AD_ZS_LOGLIKELIHOOD        /* one (context, continuation) per document (lambada)                */
} ad_zs_kind;

/* One loglikelihood request: score `continuation` given `context` (both NUL-terminated UTF-8, as
 * lm-eval passes them to LM.loglikelihood, i.e. before the trailing-space move of _encode_pair). */
typedef struct {
    char *context;
    char *continuation;
} ad_zs_request;

/* One document: n_req requests (one per choice; 1 for AD_ZS_LOGLIKELIHOOD), the gold index and each
 * choice's length in characters (Unicode code points, Python len() of the choice string without the
 * target delimiter; used by acc_norm). */
typedef struct {
    int            n_req;
    ad_zs_request *req;        /* (n_req)                                                         */
    double        *choice_len; /* (n_req) characters                                              */
    int            gold;       /* 0..n_req-1 (0 for AD_ZS_LOGLIKELIHOOD)                           */
} ad_zs_doc;

typedef struct ad_zs_task ad_zs_task;
typedef struct ad_zs_set  ad_zs_set;

/* A task descriptor: one row of ad_zs_tasks[]. Adding a task means adding a row (and a loader when
 * no existing one fits). */
struct ad_zs_task {
    const char *name;          /* "piqa", "arc_easy", ...                                          */
    ad_zs_kind  kind;
    unsigned    metrics;       /* AD_ZS_ACC | AD_ZS_ACC_NORM | AD_ZS_PPL                           */
    const char *file;          /* main data file, relative to the data root                        */
    const char *labels;        /* labels file (one label per line) or NULL                          */
    const char *alt_file;      /* preferred file used instead of `file` when present, or NULL       */
    /* Parse the data (`path` = file or alt_file, `labels_path` or NULL) into s->docs. */
    int (*load)(const ad_zs_task *t, const char *path, const char *labels_path, ad_zs_set *s,
                char *err);
    const char *source;        /* the lm-eval task file this row follows                           */
    const char *howto;         /* where the original data can be had                               */
};

/* A loaded task split. */
struct ad_zs_set {
    const ad_zs_task *task;
    int        n_docs;         /* after --limit                                                    */
    int        n_total;        /* documents in the file                                            */
    ad_zs_doc *docs;           /* (n_docs)                                                         */
    long       n_requests;     /* Σ n_req over docs                                                */
    char       path[4096];     /* the file read                                                    */
    char       sha256[65];     /* of `path`                                                         */
    char       variant[160];   /* how the prompts were built (hellaswag: which source format)      */
};

/* The task table, terminated by a row with name == NULL: piqa, arc_easy, arc_challenge, boolq,
 * hellaswag, winogrande, lambada_openai. */
extern const ad_zs_task ad_zs_tasks[];

/* Look a task up by name; NULL if unknown. */
const ad_zs_task *ad_zs_task_find(const char *name);

/* Load task t from data_root (the folder holding data/, e.g. ../shared): alt_file when present,
 * else file (+ labels). limit > 0 keeps the first `limit` documents (lm-eval --limit N); 0 keeps
 * all. Errors: missing file (names the path and t->howto); a NUL byte or invalid UTF-8 in a data or
 * labels file (file:line, column, byte offset); a JSON line that ax_json_parse_strict rejects
 * (file:line; duplicate keys, trailing data, \u0000); a key missing or of the wrong JSON type
 * (file:line, key, expected and found type); an empty labels file, label count mismatch, label out
 * of range (the labels file). *out is owned by the caller: ad_zs_set_free. */
int ad_zs_load(const ad_zs_task *t, const char *data_root, long limit, ad_zs_set **out, char *err);
void ad_zs_set_free(ad_zs_set *s);

/* ---- request builders (pure; exposed for tests) ---------------------------------------------- */
/* Append one document to s (copies the strings). choices [n] NUL-terminated; contexts: for
 * AD_ZS_MULTIPLE_CHOICE a single shared context, continuations " " + choice; the caller passes the
 * already-built strings. Returns 0 or -1 (out of memory). */
int ad_zs_add_mc(ad_zs_set *s, const char *context, const char *const *choices, int n, int gold,
                 char *err);
/* Winogrande partial evaluation (preprocess_winogrande.py): idx = first '_' of sentence;
 * context_i = sentence[:idx] + option_i, continuation = " " + sentence[idx+1:].strip(); the choice
 * strings (for lengths) are the contexts, as lm-eval's doc_to_choice returns them. -1 if no '_'. */
int ad_zs_add_winogrande(ad_zs_set *s, const char *sentence, const char *option1,
                         const char *option2, int gold, char *err);
/* LAMBADA: context = text up to its last ' ' (text.split(' ')[:-1] joined), continuation =
 * " " + last word. */
int ad_zs_add_lambada(ad_zs_set *s, const char *text, char *err);

/* HellaSwag preprocessing of lm-eval utils.py: strip (Python str.strip: Unicode whitespace); " [title]" -> ". "; remove every "[...]"
 * (non-greedy, not across '\n'); "  " -> " " (one left-to-right pass). Returns a malloc'd string. */
char *ad_hellaswag_preprocess(const char *text);
/* Python str methods on UTF-8 (len, strip, capitalize, ...): see ustr.h. */

#endif
