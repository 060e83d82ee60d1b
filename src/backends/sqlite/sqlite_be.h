/*
 * sqlite_be.h - the SQLite backend's internals (dialect.c, sqlite.c).
 */
#ifndef KEEPMQ_SQLITE_BE_H
#define KEEPMQ_SQLITE_BE_H

#include "backends/sql/sql.h"

extern const sql_dialect sqlite_dialect;
extern const backend_type sqlite_backend;

/* The schema (etc/sql/sqlite.sql, embedded at build time). */
extern const char sqlite_schema_sql[];

/* Creates the directories above a file path (best effort). */
void sqlite_make_parent(const char *path);

/* The broker state store in SQLite (state.c). */
#include "persist/state.h"
extern const state_store_type sqlite_state_store;

#endif
