/*
 * auth.h - password file and ACL file.
 *
 * Design
 * ------
 * Both files are loaded once into immutable structures that any thread may
 * read concurrently without locks; reloading builds a new structure and the
 * broker swaps the pointer. Nothing here does network I/O.
 *
 * Password file: one `username:hash` per line, '#' comments and blank lines
 * ignored. The hash is `$pbkdf2-sha512$<iterations>$<salt base64>$<dk base64>`
 * (PBKDF2-HMAC-SHA512 from OpenSSL, 16-byte random salt, 64-byte key). The
 * iteration count is stored per entry, so it can be raised without breaking
 * old entries. Verification is deliberately slow; callers must run
 * passwd_db_check off the I/O threads (uv_queue_work). After a successful
 * check the db remembers HMAC-SHA256(process secret, salt || password) for
 * that user, so a reconnecting client is verified in microseconds; the cache
 * holds no password and is useless outside this process.
 *
 * ACL file (the mosquitto format, which operators know):
 *   topic [read|write|readwrite|deny] <filter>   before any `user` line: anonymous clients;
 *                                                after `user <name>`: that user
 *   user <name>                                  starts a user's section
 *   pattern [read|write|readwrite|deny] <filter> every client; %c = client id, %u = user name
 *                                                (a rule with %u never matches an anonymous client)
 *   # comment
 * The access word is optional and defaults to readwrite. A `deny` rule that
 * matches wins over any allow rule; otherwise some matching rule must grant
 * the access; with no matching rule access is denied. Subscribing needs read.
 */
#ifndef KEEPMQ_AUTH_H
#define KEEPMQ_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mqtt/mqtt.h"

/* ---------------------------------------------------------------- passwords */

#define PASSWD_DEFAULT_ITERATIONS 20000u

typedef struct passwd_db passwd_db;

/*
 * Loads a password file. On error returns -1 and writes "path:line: message"
 * into err. On success *out is a new db the caller frees with passwd_db_free.
 */
int passwd_db_load(const char *path, passwd_db **out, char *err, size_t errlen);
/* Frees the db and sets *db = NULL. NULL-safe. */
void passwd_db_free(passwd_db **db);
/* Number of users. */
size_t passwd_db_count(const passwd_db *db);
/*
 * Checks a user name and password. Returns 0 if they match, -1 otherwise
 * (unknown user, wrong password). Thread-safe; slow on a cache miss.
 * An unknown user costs the same time as a wrong password (no user probing).
 */
int passwd_db_check(passwd_db *db, const uint8_t *user, size_t ulen, const uint8_t *pw,
                    size_t pwlen);

/*
 * Diagnostics for tests and metrics: process-wide counts, over every db, of
 * the PBKDF2 derivations passwd_db_check has performed and of the PBKDF2
 * iterations they comprised (passwd_hash is not counted). They measure the
 * slow path as work done rather than time taken, so the cost contract above
 * (a cache hit derives nothing; a wrong password and an unknown user each
 * derive once, with the same iteration count for the file's common count)
 * can be checked exactly. Atomic and monotonic; take differences.
 */
uint64_t passwd_pbkdf2_runs(void);
uint64_t passwd_pbkdf2_iterations(void);

/*
 * Computes a hash string for a password into out (room for at least
 * PASSWD_HASH_MAX bytes, NUL-terminated). iterations 0 means the default.
 * Returns 0, or -1 if the random source or OpenSSL fails.
 */
#define PASSWD_HASH_MAX 200
int passwd_hash(const uint8_t *pw, size_t pwlen, unsigned iterations, char *out, size_t outlen);

/*
 * Adds or replaces `user` in the password file at path (created when
 * `create` is true, which also empties an existing file), keeping other
 * lines and comments as they were; writes through a temporary file and
 * rename(2), mode 0600. Returns 0, or -1 with a message in err.
 */
int passwd_file_set(const char *path, const char *user, const uint8_t *pw, size_t pwlen,
                    unsigned iterations, bool create, char *err, size_t errlen);
/* Removes `user` from the file. Returns 0, or -1 (also if the user was absent). */
int passwd_file_delete(const char *path, const char *user, char *err, size_t errlen);

/* ---------------------------------------------------------------- ACL */

enum acl_access {
	ACL_READ = 1,
	ACL_WRITE = 2,
};

/* Result of checking a subscription filter. */
enum acl_filter_result {
	ACL_FILTER_DENY = 0,    /* no topic the filter matches may be read */
	ACL_FILTER_ALLOW = 1,   /* every topic the filter matches may be read */
	ACL_FILTER_PARTIAL = 2, /* some may: check each message with acl_check */
};

typedef struct acl acl;

/* Loads an ACL file; errors as passwd_db_load ("path:line: message"). */
int acl_load(const char *path, acl **out, char *err, size_t errlen);
/* Parses ACL text (tests, fuzzing); `name` is used in messages. */
int acl_load_string(const char *name, const char *text, size_t len, acl **out, char *err,
                    size_t errlen);
void acl_free(acl **a);

/*
 * May this client read (receive) / write (publish) this topic name?
 * username NULL, or a user name of length 0, means an anonymous client.
 */
bool acl_check(const acl *a, mqtt_str clientid, const mqtt_str *username, mqtt_str topic,
               int access);

/* Classifies a subscription filter for a client (see enum acl_filter_result). */
int acl_check_filter(const acl *a, mqtt_str clientid, const mqtt_str *username, mqtt_str filter);

#endif /* KEEPMQ_AUTH_H */
