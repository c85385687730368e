/* eval/cmd_generate.c — placeholder, replaced by the real front end. */
#include <stdio.h>
int cmd_generate(int argc, char **argv);
int cmd_generate(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "apex4: 'cmd_generate' is not implemented yet\n");
    return 2;
}
