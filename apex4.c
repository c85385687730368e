/* apex4.c — the one command-line program: a thin front end that dispatches to subcommands.
 * Each subcommand lives in <module>/cmd_<name>.c and calls library functions that tests call too. */
#include <stdio.h>
#include <string.h>
#include "aq.h"
#include "ak.h"

#ifndef APEX4_GIT_REV
#define APEX4_GIT_REV "unknown"
#endif

int cmd_gemm(int argc, char **argv);          /* kernels/cmd_gemm.c    */
int cmd_bench_ref(int argc, char **argv);     /* quant/cmd_bench_ref.c */
int cmd_check(int argc, char **argv);         /* kernels/cmd_check.c   */
int cmd_bench_gemm(int argc, char **argv);    /* kernels/cmd_bench.c   */
int cmd_make_model(int argc, char **argv);    /* eval/cmd_make_model.c */
int cmd_tokenize(int argc, char **argv);      /* eval/cmd_tokenize.c   */
int cmd_generate(int argc, char **argv);      /* eval/cmd_generate.c   */
int cmd_eval_ppl(int argc, char **argv);      /* eval/cmd_ppl.c        */
int cmd_eval_zeroshot(int argc, char **argv); /* eval/cmd_zeroshot.c   */
int cmd_report(int argc, char **argv);        /* reports/cmd_report.c  */
int cmd_bench_rho(int argc, char **argv);     /* kernels/cmd_bench.c   */

static int cmd_modes(int argc, char **argv) {
    (void)argc; (void)argv;
    for (int i = 0; aq_standard_modes[i]; i++) puts(aq_standard_modes[i]);
    return 0;
}

static int cmd_devices(int argc, char **argv) {
    (void)argc; (void)argv;
    char buf[256];
    ak_device_describe(buf, sizeof buf);
    puts(buf);
    return ak_device_count() > 0 ? 0 : 1;
}

typedef struct { const char *name, *sub; int (*fn)(int, char **); const char *help; } command;

static const command commands[] = {
    {"gemm", NULL, cmd_gemm, "reference (or --device cuda) W4A4 GEMM on an HDF5 case; --compare"},
    {"check", NULL, cmd_check, "bit-exact sweep of the CUDA kernels against the CPU reference"},
    {"bench", "ref", cmd_bench_ref, "CPU reference GEMM throughput (MAC/s)"},
    {"bench", "gemm", cmd_bench_gemm, "GPU kernels vs cuBLAS FP16/INT8 (TOPS, ratios, JSON)"},
    {"bench", "rho", cmd_bench_rho, "rho emulation: k extra FP32 ops per group, speedup vs FP16 (JSON)"},
    {"make-model", NULL, cmd_make_model, "write a random-weight LLaMA checkpoint (HF layout)"},
    {"tokenize", NULL, cmd_tokenize, "encode text with a tokenizer.json, print ids"},
    {"generate", NULL, cmd_generate, "greedy decoding in a mode"},
    {"eval", "ppl", cmd_eval_ppl, "WikiText-2 perplexity, KL divergence and top-1 vs FP16 per mode"},
    {"eval", "zeroshot", cmd_eval_zeroshot, "zero-shot accuracy (lm-evaluation-harness scoring)"},
    {"modes", NULL, cmd_modes, "list the standard quantization modes"},
    {"devices", NULL, cmd_devices, "describe the CUDA device (exit 1 when none)"},
    {"report", NULL, cmd_report, "accuracy/speed Pareto report per GPU with the rho speed model (HTML, JSON)"},
};
#define NCOMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f, "apex4 %s (%s) — does W4A4 pay off on this GPU, and at which granularity?\n\n"
               "usage: apex4 <command> [options]   (apex4 <command> --help for its options)\n\n",
            APEX4_VERSION, APEX4_GIT_REV);
    for (int i = 0; i < NCOMMANDS; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s%s%s", commands[i].name, commands[i].sub ? " " : "",
                 commands[i].sub ? commands[i].sub : "");
        fprintf(f, "  %-16s %s\n", name, commands[i].help);
    }
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) { printf("apex4 %s (%s)\n", APEX4_VERSION, APEX4_GIT_REV); return 0; }
    for (int i = 0; i < NCOMMANDS; i++) {
        if (strcmp(argv[1], commands[i].name)) continue;
        if (!commands[i].sub) return commands[i].fn(argc - 1, argv + 1);
        if (argc >= 3 && !strcmp(argv[2], commands[i].sub)) return commands[i].fn(argc - 2, argv + 2);
    }
    for (int i = 0; i < NCOMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name) && commands[i].sub) {
            fprintf(stderr, "apex4 %s: expected a subcommand (", argv[1]);
            for (int j = 0, first = 1; j < NCOMMANDS; j++)
                if (!strcmp(commands[j].name, argv[1])) { fprintf(stderr, "%s%s", first ? "" : ", ", commands[j].sub); first = 0; }
            fprintf(stderr, "), got '%s'\n", argc >= 3 ? argv[2] : "");
            return 2;
        }
    fprintf(stderr, "apex4: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
