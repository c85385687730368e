/* kernels/cmd_bench.c — placeholder, replaced by the real front end. */
#include <stdio.h>
int cmd_bench_gemm(int argc, char **argv);
int cmd_bench_gemm(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "apex4: 'cmd_bench_gemm' is not implemented yet\n");
    return 2;
}
