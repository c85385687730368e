/* quant/cmd_bench_ref.c — placeholder, replaced by the real front end. */
#include <stdio.h>
int cmd_bench_ref(int argc, char **argv);
int cmd_bench_ref(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "apex4: 'cmd_bench_ref' is not implemented yet\n");
    return 2;
}
