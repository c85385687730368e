/* eval/cmd_make_model.c — placeholder, replaced by the real front end. */
#include <stdio.h>
int cmd_make_model(int argc, char **argv);
int cmd_make_model(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "apex4: 'cmd_make_model' is not implemented yet\n");
    return 2;
}
