/* registry.h - the compiled-in backends (NULL-terminated). */
#ifndef KEEPMQ_BACKENDS_REGISTRY_H
#define KEEPMQ_BACKENDS_REGISTRY_H

#include "persist/persist.h"

extern const backend_type *const keepmq_backends[];
#include "persist/state.h"
/* The compiled-in broker state stores (NULL-terminated). */
extern const state_store_type *const keepmq_state_stores[];

#endif
