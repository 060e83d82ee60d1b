/*
 * pgsql_be.h - the PostgreSQL backend's internals (dialect.c, pgsql.c).
 */
#ifndef KEEPMQ_PGSQL_BE_H
#define KEEPMQ_PGSQL_BE_H

#include "backends/sql/net.h"

extern const sql_dialect pgsql_dialect;
extern const backend_type pgsql_backend;

/* The schema (etc/sql/pgsql.sql, embedded at build time). */
extern const char pgsql_schema_sql[];

#endif
