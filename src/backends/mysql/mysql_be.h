/*
 * mysql_be.h - the MySQL / MariaDB backend's internals (dialect.c,
 * mysql.c).
 */
#ifndef KEEPMQ_MYSQL_BE_H
#define KEEPMQ_MYSQL_BE_H

#include "backends/sql/net.h"

extern const sql_dialect mysql_dialect;
extern const backend_type mysql_backend;

/* The schema (etc/sql/mysql.sql, embedded at build time). */
extern const char mysql_schema_sql[];

#endif
