/*
 * registry.c - the backends compiled into this keepmq. Adding a database is
 * adding its backend_type here; nothing in the broker changes.
 */
#include "backends/registry.h"
#include "backends/mysql/mysql_be.h"
#include "backends/pgsql/pgsql_be.h"
#include "backends/redis/redis_be.h"
#include "backends/sqlite/sqlite_be.h"

const backend_type *const keepmq_backends[] = {
	&sqlite_backend,
	&redis_backend,
	&mysql_backend,
	&pgsql_backend,
	NULL,
};

const state_store_type *const keepmq_state_stores[] = {
	&sqlite_state_store,
	NULL,
};
