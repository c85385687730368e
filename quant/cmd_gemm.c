/* quant/cmd_gemm.c — placeholder, replaced by the real front end. */
#include <stdio.h>
int cmd_gemm(int argc, char **argv);
int cmd_gemm(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "apex4: 'cmd_gemm' is not implemented yet\n");
    return 2;
}
