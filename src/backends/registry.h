/* registry.h - the compiled-in backends (NULL-terminated). */
#ifndef KEEPMQ_BACKENDS_REGISTRY_H
#define KEEPMQ_BACKENDS_REGISTRY_H

#include "persist/persist.h"

extern const backend_type *const keepmq_backends[];

#endif
