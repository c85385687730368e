/* kernels/cmd_check.c — placeholder, replaced by the real front end. */
#include <stdio.h>
int cmd_check(int argc, char **argv);
int cmd_check(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "apex4: 'cmd_check' is not implemented yet\n");
    return 2;
}
