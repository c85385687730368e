/* ax_util.h — small shared services (prefix ax_): data root, atomic result files, JSON envelope,
 * progress bar, wall clock. Nothing numerical lives here. */
#ifndef APEX4_AX_UTIL_H
#define APEX4_AX_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cjson/cJSON.h>
#include "ax_base.h"

#ifndef APEX4_GIT_REV
#define APEX4_GIT_REV "unknown"
#endif

/* Write a printf-style message into err (AX_ERR_LEN bytes); no-op when err is NULL. The one error
 * helper behind every library function's `char *err` (see quant/aq.h "Conventions"). */
__attribute__((format(printf, 2, 3)))
void ax_seterr(char *err, const char *fmt, ...);

/* Data root: $APEX4_DATA if set, else the first of ../shared, ../../shared (relative to the current
 * directory) and <dir of the executable>/../../shared that holds data/ or models/. Writes the path to
 * buf and returns 0, or -1 when none is found (err says where it looked and how to set APEX4_DATA). */
int ax_data_root(char *buf, size_t len, char *err);
/* Join root + relative path; returns 0 if the file exists, else -1 with an err naming the path and
 * the hint `howto` (where a user with internet gets the original). */
int ax_data_file(const char *rel, const char *howto, char *buf, size_t len, char *err);

/* Atomic file writing: ax_atomic_open creates "<path>.tmp.<pid>" and returns it (tmp receives the
 * temporary name, AX_PATH_LEN bytes); ax_atomic_commit fflushes, fsyncs, closes and renames it onto
 * path; ax_atomic_abort closes and removes it. */
#define AX_PATH_LEN 4096
FILE *ax_atomic_open(const char *path, char *tmp, char *err);
int ax_atomic_commit(FILE *f, const char *tmp, const char *path, char *err);
void ax_atomic_abort(FILE *f, const char *tmp);
/* Temporary name for libraries that open files themselves (HDF5): "<path>.tmp.<pid>". Commit with
 * rename(2) via ax_rename_into, which reports errors naming both paths. */
void ax_tmp_name(const char *path, char *tmp);
int ax_rename_into(const char *tmp, const char *path, char *err);

/* Write a cJSON document atomically (pretty-printed, trailing newline). */
int ax_write_json(const char *path, const cJSON *doc, char *err);

/* Result envelope shared by every results JSON (ppl, zeroshot, bench):
 * {"apex4_version", "git_revision", "created_utc", "command": kind, "host": hostname, ...}.
 * The caller adds its own fields and frees with cJSON_Delete. */
cJSON *ax_envelope_new(const char *kind);

/* sha256 of a file as 64 lowercase hex chars + NUL (out[65]). Uses a small FIPS 180-4 implementation.
 * Returns 0 or -1 (err names the file). */
int ax_sha256_file(const char *path, char out[65], char *err);

/* Seconds since an arbitrary epoch (CLOCK_MONOTONIC). */
double ax_now(void);

/* Progress bar on stderr: "label [#####.....] done/total  rate unit/s  ETA mm:ss". Redraws at most
 * every 0.2 s; silent when stderr is not a terminal unless APEX4_PROGRESS=1 (then one line per 10%). */
typedef struct {
    const char *label, *unit;
    long total;
    double t0, last;
    int tty, last_decile;
} ax_progress;
void ax_progress_start(ax_progress *p, const char *label, long total, const char *unit);
void ax_progress_update(ax_progress *p, long done);
void ax_progress_end(ax_progress *p, long done);

/* Read a whole file into a NUL-terminated malloc'd buffer (len excludes the NUL). -1 with err naming
 * the file on failure. */
int ax_read_file(const char *path, char **data, size_t *len, char *err);

/* ---- strict input parsing (hostile input: every number and JSON document checked) -------------- */

/* Parse a JSON document as strictly as Python's json module plus the safetensors library: RFC 8259
 * (cJSON), and additionally rejects (1) a NUL byte anywhere in text[0..len), (2) a "\u0000" escape
 * inside any string (C strings would silently truncate it), (3) anything but whitespace after the
 * top-level value, (4) a key that occurs twice in one object (Python keeps the last, safetensors
 * rejects: we reject), (5) nesting deeper than 256. `what` names the input in messages (a file path,
 * "model.safetensors header", ...). Returns the tree (caller cJSON_Delete's it) or NULL with err
 * "<what>: <reason> (byte <offset>)" or "<what>: duplicate key \"k\" (in <parent key>)". */
cJSON *ax_json_parse_strict(const char *text, size_t len, const char *what, char *err);
/* ax_read_file + ax_json_parse_strict of a whole file, named by its path: the tree (caller
 * cJSON_Delete's it) or NULL with err (the read or parse error). */
cJSON *ax_json_read_file(const char *path, char *err);

/* Parse an integer option or field: decimal digits with an optional sign only (no "1e3", no hex, no
 * trailing characters, no empty string), within [lo, hi]. On failure -1 with err
 * "<what>: expected an integer in [lo, hi], got 's'". what names the option ("--seqlen") or the
 * file and field ("config.json: hidden_size"). */
int ax_parse_long(const char *s, long lo, long hi, const char *what, long *out, char *err);
/* The same for unsigned 64-bit values (seeds): decimal, or hex with 0x; no sign. */
int ax_parse_u64(const char *s, const char *what, uint64_t *out, char *err);
/* A byte count: a decimal number (digits first; no sign, hex, inf or nan) with an optional unit:
 * "8GiB", "512MiB", "2TiB", "1.5GiB" (binary: KiB MiB GiB TiB), "8GB" (decimal: kB/KB MB GB TB),
 * "4096" or "4096B" (bytes). The value must lie in [lo, hi] bytes
 * (after rounding down to a whole byte). Errors (-1, err naming `what`): empty, not a number, an
 * unknown unit, NaN/inf, out of range. */
int ax_parse_size(const char *s, const char *what, double lo, double hi, size_t *out, char *err);
/* A finite double in [lo, hi] (strtod syntax, nothing may follow). */
int ax_parse_double(const char *s, double lo, double hi, const char *what, double *out, char *err);

/* *out = a * b (and a * b * c) when it does not overflow size_t; else -1 with err naming `what`. */
int ax_mul_size(size_t a, size_t b, size_t *out, const char *what, char *err);
int ax_mul3_size(size_t a, size_t b, size_t c, size_t *out, const char *what, char *err);

/* Check, before any long work starts, that `path` can be written atomically later: non-empty, not
 * an existing directory, and its parent directory exists and is writable. `opt` names the option
 * ("--out"). Returns 0 or -1 with err "<opt> '<path>': <reason>". */
int ax_check_out_path(const char *path, const char *opt, char *err);

#endif
