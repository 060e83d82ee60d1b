/* version.c - the broker's version string, in one place. */
#include "broker/version.h"
const char *keepmq_version(void) { return KEEPMQ_VERSION; }
