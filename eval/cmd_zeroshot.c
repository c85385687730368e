/* eval/cmd_zeroshot.c — placeholder, replaced by the real front end. */
#include <stdio.h>
int cmd_eval_zeroshot(int argc, char **argv);
int cmd_eval_zeroshot(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "apex4: 'cmd_eval_zeroshot' is not implemented yet\n");
    return 2;
}
