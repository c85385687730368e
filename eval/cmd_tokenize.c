/* eval/cmd_tokenize.c — placeholder, replaced by the real front end. */
#include <stdio.h>
int cmd_tokenize(int argc, char **argv);
int cmd_tokenize(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "apex4: 'cmd_tokenize' is not implemented yet\n");
    return 2;
}
