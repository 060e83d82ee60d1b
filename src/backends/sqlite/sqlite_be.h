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

/* A busy handler for connections that share a file with another writer
 * (the pools and the state store): SQLite's own sleeps up to 100 ms between
 * tries, far longer than our transactions hold the lock, so this one waits
 * in SQLITE_BUSY_STEP_US steps until *(uint64_t *)arg milliseconds passed. */
#define SQLITE_BUSY_STEP_US 200
int sqlite_busy_wait(void *arg, int n);

/* Creates the directories above a file path (best effort). */
void sqlite_make_parent(const char *path);

/* The broker state store in SQLite (state.c). */
#include "persist/state.h"
extern const state_store_type sqlite_state_store;

#endif
