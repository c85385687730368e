/* kernels/cmd_check.c — apex4 check --device cuda: a sweep of modes x shapes x inputs, each case
 * compared byte for byte with the CPU reference by ak_check_case (kernels/ak_check.c). Thin front
 * end: parses arguments, builds the case list, runs it on a few threads, prints one line per case and
 * a summary. Exit 0 when every case matched, 1 on any difference or failed case, 2 on usage errors. */
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aq.h"
#include "ak.h"
#include "ax_util.h"

int cmd_check(int argc, char **argv);

typedef struct { int M, N, K; ak_input in; aq_mode mode; } ccase;

typedef struct {
    ccase *cases;
    int n, next, paths, done, passed, failed, errors;
    unsigned seed;
    pthread_mutex_t mu;
} sweep;

static void usage(FILE *f) {
    fprintf(f,
            "usage: apex4 check --device cuda [--modes LIST] [--inputs LIST] [--paths int8,int4,wgmma,wgmma-sync]\n"
            "                   [--quick] [--no-llama] [--threads N] [--seed S]\n"
            "  Compares the CUDA kernels (activation quantization codes/scales, GEMM Y on each path) with the\n"
            "  CPU reference byte for byte over modes x shapes x inputs; one line per case, then a summary.\n"
            "  --paths    default int8,int4 (the paths the planner uses); wgmma / wgmma-sync (the Hopper wgmma\n"
            "             kernel, overlapped / synchronous epilogue; bit-exact on an H200, slower except w4a4-g32: by name)\n"
            "             run where they serve: compute capability 9.x, no outlier part,\n"
            "             groups of 32, 64, a multiple of 128 or the whole row (the line lists the paths run);\n"
            "             with a wgmma path, each mode also gets 3 multi-tile, multi-stage shapes (M >= 64)\n"
            "  --modes    integer modes (default: w8a8,w4a4-pc,w4a4-g32,w4a4-g64,w4a4-g128,w4a4-g256,\n"
            "             w4a4-mixed-g128,atom-g128-o128)\n"
            "  --inputs   normal,heavy,adversarial (default: all three)\n"
            "  --quick    small shapes only (M in 1,7,128; N in 33,131; K in 160,352)\n"
            "  --no-llama skip the LLaMA-2-7B/70B layer shapes (M = 16)\n"
            "  exit: 0 all match, 1 a difference or a failed case, 2 usage error or no device\n");
}

/* paths_mask bit i <-> --paths name (ak_check_case). */
static const char *const path_names[4] = {"int8", "int4", "wgmma", "wgmma-sync"};

static void *worker(void *arg) {
    sweep *S = arg;
    for (;;) {
        pthread_mutex_lock(&S->mu);
        int i = S->next++;
        pthread_mutex_unlock(&S->mu);
        if (i >= S->n) return NULL;
        const ccase *c = &S->cases[i];
        ak_check_result r;
        char err[AX_ERR_LEN] = "";
        int rc = ak_check_case(&c->mode, c->M, c->N, c->K, c->in, S->seed + (unsigned)i * 7u, S->paths, 1, &r, err);
        pthread_mutex_lock(&S->mu);
        S->done++;
        const char *st = rc ? "ERROR" : (r.ok ? "ok" : "FAIL");
        if (rc) S->errors++;
        else if (r.ok) S->passed++;
        else S->failed++;
        char pr[48] = "";
        for (int p = 0; p < 4; p++)
            if (!rc && (r.paths_run & (1 << p)))
                snprintf(pr + strlen(pr), sizeof pr - strlen(pr), "%s%s", *pr ? "," : "", path_names[p]);
        printf("[%4d/%d] %-5s %-16s M=%5d N=%6d K=%6d %-11s k_splits 1,%-3d paths %-25s ref %6.2fs gpu %6.2fs  %s\n",
               S->done, S->n, st, c->mode.name, c->M, c->N, c->K, ak_input_name(c->in), r.splits, *pr ? pr : "-", r.ref_s,
               r.gpu_s, rc ? err : r.msg);
        fflush(stdout);
        pthread_mutex_unlock(&S->mu);
    }
}

/* Split a comma list in place; -1 when it has more than max entries (never silently dropped). */
static int split_list(char *s, char **out, int max) {
    int n = 0;
    for (char *t = strtok(s, ","); t; t = strtok(NULL, ",")) {
        if (n == max) return -1;
        out[n++] = t;
    }
    return n;
}

int cmd_check(int argc, char **argv) {
    const char *device = NULL;
    char modes_buf[512] = "w8a8,w4a4-pc,w4a4-g32,w4a4-g64,w4a4-g128,w4a4-g256,w4a4-mixed-g128,atom-g128-o128";
    char inputs_buf[128] = "normal,heavy,adversarial", paths_buf[64] = "int8,int4";
    int quick = 0, llama = 1, threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    unsigned seed = 1;
    char err[AX_ERR_LEN];
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *buf = NULL;
        size_t cap = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--quick")) quick = 1;
        else if (!strcmp(a, "--no-llama")) llama = 0;
        else if (v && !strcmp(a, "--device")) { device = v; i++; }
        else if (v && !strcmp(a, "--modes")) { buf = modes_buf; cap = sizeof modes_buf; i++; }
        else if (v && !strcmp(a, "--inputs")) { buf = inputs_buf; cap = sizeof inputs_buf; i++; }
        else if (v && !strcmp(a, "--paths")) { buf = paths_buf; cap = sizeof paths_buf; i++; }
        else if (v && !strcmp(a, "--threads")) {
            long t;
            if (ax_parse_long(v, 1, 256, "--threads", &t, err)) { fprintf(stderr, "apex4 check: %s\n", err); return 2; }
            threads = (int)t;
            i++;
        } else if (v && !strcmp(a, "--seed")) {
            uint64_t sd;
            if (ax_parse_u64(v, "--seed", &sd, err)) { fprintf(stderr, "apex4 check: %s\n", err); return 2; }
            if (sd > UINT_MAX) {
                fprintf(stderr, "apex4 check: --seed: expected an integer in [0, %u], got '%.80s'\n", UINT_MAX, v);
                return 2;
            }
            seed = (unsigned)sd;
            i++;
        } else { fprintf(stderr, "apex4 check: unknown or incomplete option '%s'\n", a); usage(stderr); return 2; }
        if (buf && (size_t)snprintf(buf, cap, "%s", v) >= cap) {
            fprintf(stderr, "apex4 check: %s: list too long (at most %zu characters)\n", a, cap - 1);
            return 2;
        }
    }
    if (!device || strcmp(device, "cuda")) {
        fprintf(stderr, "apex4 check: --device cuda is required (the only device this check knows)\n");
        return 2;
    }
    char *mnames[32], *inames[8], *pnames[4];
    int nm = split_list(modes_buf, mnames, 32), ni = split_list(inputs_buf, inames, 8), np = split_list(paths_buf, pnames, 4);
    if (nm < 0 || ni < 0 || np < 0) {
        fprintf(stderr, "apex4 check: too many entries in %s (at most %d)\n", nm < 0 ? "--modes" : ni < 0 ? "--inputs" : "--paths",
                nm < 0 ? 32 : ni < 0 ? 8 : 4);
        return 2;
    }
    aq_mode modes[32];
    ak_input ins[8];
    int paths = 0;
    for (int i = 0; i < nm; i++)
        if (aq_mode_parse(mnames[i], &modes[i], err)) { fprintf(stderr, "apex4 check: --modes: %s\n", err); return 2; }
        else if (!aq_mode_is_integer(&modes[i])) {
            fprintf(stderr, "apex4 check: --modes: '%s' has no integer kernels\n", modes[i].name);
            return 2;
        }
    for (int i = 0; i < ni; i++) {
        int k = ak_input_parse(inames[i]);
        if (k < 0) { fprintf(stderr, "apex4 check: unknown input '%s' (normal, heavy, adversarial)\n", inames[i]); return 2; }
        ins[i] = (ak_input)k;
    }
    for (int i = 0; i < np; i++) {
        int hit = -1;
        for (int p = 0; p < 4; p++)
            if (!strcmp(pnames[i], path_names[p])) hit = p;
        if (hit < 0) { fprintf(stderr, "apex4 check: unknown path '%s' (int8, int4, wgmma, wgmma-sync)\n", pnames[i]); return 2; }
        paths |= 1 << hit;
    }
    if (!nm || !ni || !paths) { fprintf(stderr, "apex4 check: empty --modes, --inputs or --paths\n"); return 2; }
    if (ak_device_count() < 1) {
        char d[256];
        ak_device_describe(d, sizeof d);
        fprintf(stderr, "apex4 check: %s\n", d);
        return 2;
    }

    /* Shapes. LLaMA layers first (longest cases start early). */
    static const int llama_nk[][2] = {
        {28672, 8192}, {8192, 28672}, {8192, 8192}, {1024, 8192},     /* 70B: gate/up, down, q/o, k/v */
        {11008, 4096}, {4096, 11008}, {4096, 4096},                   /* 7B: gate/up, down, q/k/v/o   */
    };
    static const int small_nk[][2] = {{33, 160}, {131, 352}, {67, 2080}, {4133, 480}};
    static const int small_m[] = {1, 7, 16, 128, 1000}, quick_m[] = {1, 7, 128};
    /* wgmma path: several 128 x 128 tiles in M and N (exact and ragged) and K pipelines of 8 to 33
     * stages of 128 codes (4128: a partial last stage). */
    static const int wg_mnk[][3] = {{64, 128, 4096}, {192, 384, 1024}, {300, 257, 4128}};
    int cap = 4096, n = 0;
    ccase *cases = malloc((size_t)cap * sizeof *cases);
    if (!cases) { fprintf(stderr, "apex4 check: out of memory\n"); return 2; }
    for (int mi = 0; mi < nm; mi++) {
        if (llama && !quick)
            for (int s = 0; s < 7; s++)
                if (n < cap) cases[n++] = (ccase){16, llama_nk[s][0], llama_nk[s][1], ins[0], modes[mi]};
        if (paths & 12)
            for (int s = 0; s < (quick ? 1 : 3); s++)
                if (n < cap) cases[n++] = (ccase){wg_mnk[s][0], wg_mnk[s][1], wg_mnk[s][2], ins[0], modes[mi]};
        int nsh = quick ? 2 : 4, nmm = quick ? 3 : 5;
        for (int s = 0; s < nsh; s++)
            for (int m = 0; m < nmm; m++)
                for (int ii = 0; ii < ni; ii++)
                    if (n < cap)
                        cases[n++] = (ccase){quick ? quick_m[m] : small_m[m], small_nk[s][0], small_nk[s][1], ins[ii], modes[mi]};
    }
    /* Largest first. */
    for (int i = 1; i < n; i++) {
        ccase c = cases[i];
        double w = (double)c.N * c.K;
        int j = i - 1;
        while (j >= 0 && (double)cases[j].N * cases[j].K < w) { cases[j + 1] = cases[j]; j--; }
        cases[j + 1] = c;
    }
    char dev[256];
    ak_device_describe(dev, sizeof dev);
    printf("apex4 check --device cuda: %s; %d cases, paths%s%s%s%s, %d threads\n", dev, n, paths & 1 ? " int8" : "",
           paths & 2 ? " int4" : "", paths & 4 ? " wgmma" : "", paths & 8 ? " wgmma-sync" : "", threads);
    fflush(stdout);
    sweep S = {cases, n, 0, paths, 0, 0, 0, 0, seed, PTHREAD_MUTEX_INITIALIZER};
    if (threads > n) threads = n;
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    char *made = calloc((size_t)threads, 1);
    if (!th || !made) { free(th); free(made); free(cases); fprintf(stderr, "apex4 check: out of memory\n"); return 2; }
    for (int t = 1; t < threads; t++) made[t] = pthread_create(&th[t], NULL, worker, &S) == 0;
    worker(&S);
    for (int t = 1; t < threads; t++)
        if (made[t]) pthread_join(th[t], NULL);
    printf("check summary: %d cases, %d passed, %d FAILED, %d errors -> %s\n", n, S.passed, S.failed, S.errors,
           S.failed || S.errors ? "DIFFERENCES" : "all bit-exact");
    free(th); free(made); free(cases);
    pthread_mutex_destroy(&S.mu);
    return S.failed || S.errors ? 1 : 0;
}
