/* ax_base.h — the two constants every module shares (the base layer: includes nothing of apex4).
 * quant/ includes only this of the base; reports/ax_util.h builds on it. */
#ifndef APEX4_AX_BASE_H
#define APEX4_AX_BASE_H

#define AX_ERR_LEN 512          /* bytes of every caller-provided error buffer `err`            */
#define APEX4_VERSION "0.1.0"   /* results files record it ("apex4_version")                   */

#endif
