/* ax_util.h — small shared services (prefix ax_): data root, atomic result files, JSON envelope,
 * progress bar, wall clock. Nothing numerical lives here. */
#ifndef APEX4_AX_UTIL_H
#define APEX4_AX_UTIL_H

#include <stddef.h>
#include <stdio.h>
#include <cjson/cJSON.h>
#include "aq.h"

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

#endif
