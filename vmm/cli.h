/* Command-line parsing: pure, no I/O besides the strings it returns. */
#ifndef MOAT_CLI_H
#define MOAT_CLI_H

#include <stddef.h>

#include "vmm/config.h"

enum cli_action { CLI_RUN, CLI_HELP, CLI_VERSION };

/*
 * Parse argv into cfg (strings point into argv). Returns 0 and the action, or -EINVAL with
 * a one-line message in err that names the problem and the fix.
 */
int cli_parse(int argc, char *const argv[], struct vm_config *cfg, enum cli_action *action, char *err,
	      size_t errlen);
const char *cli_usage(void);
/* A CPU list ("0-3,6"; each CPU below CPU_SETSIZE, ranges low-high) into set: 0, or -EINVAL. */
int cli_parse_cpu_list(const char *s, cpu_set_t *set);

#endif
