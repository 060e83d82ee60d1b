/*
 * broker.c - start-up, the main thread's loop (signals, $SYS timer) and
 * orderly shutdown.
 *
 * The main thread owns no connections. It loads the password file and ACL,
 * starts the workers, then waits for SIGTERM/SIGINT. On a signal it asks
 * every worker to drain (INBOX_SHUTDOWN: close listeners, DISCONNECT 0x8B
 * to MQTT 5 clients, flush, close) and waits for all of them - up to a
 * deadline, after which the process exits anyway.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/version.h"
#include "util/clock.h"
#include "util/log.h"

#define STOP_DEADLINE_MS 10000
/* How long queued backend jobs may take to be written at shutdown. */
#define PERSIST_STOP_MS 10000

static int load_auth(broker *b)
{
	char err[512];
	const broker_config *cfg = b->cfg;
	if (cfg->password_file && cfg->password_file[0]) {
		if (passwd_db_load(cfg->password_file, &b->passwd, err, sizeof(err))) {
			log_error("%s", err);
			return -1;
		}
		log_notice("password file %s: %zu users", cfg->password_file,
		           passwd_db_count(b->passwd));
	}
	if (cfg->acl_file && cfg->acl_file[0]) {
		if (acl_load(cfg->acl_file, &b->acl, err, sizeof(err))) {
			log_error("%s", err);
			return -1;
		}
		log_notice("ACL file %s loaded", cfg->acl_file);
	}
	if (!cfg->allow_anonymous && !b->passwd)
		log_warning("allow_anonymous is off and no password_file is set: every client will "
		            "be refused");
	return 0;
}

int broker_init(broker *b, broker_config *cfg, persist *p, state *st)
{
	memset(b, 0, sizeof(*b));
	b->cfg = cfg;
	b->persist = p;
	b->state = st;
	hooks_host_init(b);
	b->started_ms = clock_wall_ms();
	if (!cfg->listeners && broker_config_default_listener(cfg)) {
		log_error("out of memory");
		return -1;
	}
	unsigned n = cfg->io_workers ? (unsigned)cfg->io_workers : uv_available_parallelism();
	if (n < 1)
		n = 1;
	if (n > KEEPMQ_MAX_WORKERS)
		n = KEEPMQ_MAX_WORKERS;
	b->nworkers = n;
	if (retain_init(&b->retained, (uint64_t)cfg->max_retained_messages))
		return -1;
	if (shared_init(&b->shared, cfg->shared_strategy))
		return -1;
	if (load_auth(b))
		return -1;
	b->workers = calloc(n, sizeof(worker));
	if (!b->workers)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		if (worker_init(&b->workers[i], b, i)) {
			log_error("cannot initialise I/O worker %u", i);
			return -1;
		}
	}
	if (uv_loop_init(&b->main_loop))
		return -1;
	b->main_loop.data = b;
	/* sessions and retained messages of the last run, before any client */
	if (store_restore(b))
		return -1;
	return 0;
}

static uint64_t stop_started;

static void on_stop_check(uv_timer_t *t)
{
	broker *b = t->data;
	if (atomic_load(&b->workers_done) == b->nworkers) {
		uv_stop(&b->main_loop);
		return;
	}
	if (uv_now(&b->main_loop) - stop_started > STOP_DEADLINE_MS) {
		log_error("workers did not stop within %d ms: exiting anyway", STOP_DEADLINE_MS);
		_exit(1);
	}
}

static void begin_stop(broker *b, const char *why)
{
	if (atomic_exchange(&b->stopping, true))
		return;
	log_notice("%s: shutting down", why);
	for (unsigned i = 0; i < b->nworkers; i++) {
		inbox_item *it = calloc(1, sizeof(*it));
		if (!it)
			continue;
		it->kind = INBOX_SHUTDOWN;
		worker_post_external(&b->workers[i], it);
	}
	uv_timer_stop(&b->sys_timer);
	stop_started = uv_now(&b->main_loop);
	uv_timer_init(&b->main_loop, &b->stop_timer);
	b->stop_timer.data = b;
	uv_timer_start(&b->stop_timer, on_stop_check, 20, 20);
}

static void on_signal(uv_signal_t *h, int sig)
{
	broker *b = h->data;
	if (sig == SIGHUP) {
		log_notice("SIGHUP ignored: restart keepmq to apply configuration changes");
		return;
	}
	begin_stop(b, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

int broker_run(broker *b)
{
	unsigned started = 0;
	/* Handlers first: the listeners accept clients as soon as the workers
	 * start, and a SIGTERM from then on must mean a clean shutdown (it is
	 * queued until uv_run below), not the default action. */
	uv_signal_init(&b->main_loop, &b->sigterm);
	uv_signal_init(&b->main_loop, &b->sigint);
	uv_signal_init(&b->main_loop, &b->sighup);
	b->sigterm.data = b->sigint.data = b->sighup.data = b;
	uv_signal_start(&b->sigterm, on_signal, SIGTERM);
	uv_signal_start(&b->sigint, on_signal, SIGINT);
	uv_signal_start(&b->sighup, on_signal, SIGHUP);
	/* the stores before the workers: the first client's events need them */
	if (b->state) {
		char err[400] = "";
		if (state_start(b->state, &b->phost, err, sizeof(err))) {
			log_error("%s", err);
			return 1;
		}
	}
	if (b->persist) {
		char err[400] = "";
		if (persist_start(b->persist, &b->phost, err, sizeof(err))) {
			log_error("%s", err);
			persist_stop(b->persist, 0);
			return 1;
		}
	}
	for (; started < b->nworkers; started++)
		if (worker_start(&b->workers[started]))
			break;
	if (started < b->nworkers) {
		/* stop the ones already running */
		for (unsigned i = 0; i < started; i++) {
			inbox_item *it = calloc(1, sizeof(*it));
			if (it) {
				it->kind = INBOX_SHUTDOWN;
				worker_post_external(&b->workers[i], it);
			}
		}
		for (unsigned i = 0; i < started; i++)
			pthread_join(b->workers[i].thread, NULL);
		persist_stop(b->persist, 0);
		return 1;
	}
	sys_start(b);
	log_notice("keepmq %s started: node %s, %u I/O workers", keepmq_version(),
	           b->cfg->node_name, b->nworkers);
	uv_run(&b->main_loop, UV_RUN_DEFAULT);
	for (unsigned i = 0; i < b->nworkers; i++)
		pthread_join(b->workers[i].thread, NULL);
	/* what the clients' last events queued is written before we exit */
	state_stop(b->state);
	if (b->persist) {
		uint64_t left = persist_pending(b->persist);
		if (left)
			log_notice("writing %llu queued backend jobs", (unsigned long long)left);
		persist_stop(b->persist, PERSIST_STOP_MS);
	}
	log_notice("keepmq stopped");
	return b->exit_code;
}

static void close_walk(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

void broker_free(broker *b)
{
	if (b->workers) {
		for (unsigned i = 0; i < b->nworkers; i++)
			worker_free(&b->workers[i]);
		free(b->workers);
		b->workers = NULL;
	}
	if (b->main_loop.data) {
		uv_walk(&b->main_loop, close_walk, NULL);
		uv_run(&b->main_loop, UV_RUN_DEFAULT);
		uv_loop_close(&b->main_loop);
	}
	retain_destroy(&b->retained);
	shared_destroy(&b->shared);
	passwd_db_free(&b->passwd);
	acl_free(&b->acl);
}
