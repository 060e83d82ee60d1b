/*
 * fuzz_rules.c - libFuzzer target for the `backend.<db>.*` keys: rule lines
 * (JSON, hook points, functions, raw SQL), pool keys and global options.
 *
 * Design
 * ------
 * Each input is a configuration file. It is loaded, as main() does, into a
 * fresh registry holding the keys of every compiled-in backend
 * (persist_new(reg, keepmq_backends)): defaults, cfg_load_string(), then
 * persist_config_finish(), which checks rules against pools and builds the
 * per-hook-point lists. The result is checked for consistency: error
 * messages are bounded strings, every listed rule has a pool, the lists are
 * in <n> order, and persist_wants() agrees with them. persist_metrics_json()
 * then walks every rule and pool. Finally everything is freed in main()'s
 * order (registry first, then the bus), so ASan/LSan see every rule, pool
 * and compiled raw action released, replaced ones included.
 *
 * No pool is started, so no database file is opened. Includes read the file
 * system: as in fuzz_config.c, every input runs with the working directory
 * switched to an empty temporary directory, and inputs that mention both
 * "include" and a '/' are skipped.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/registry.h"
#include "config/config.h"
#include "persist/internal.h"
#include "persist/persist.h"

static int empty_dir = -1; /* an empty directory for relative includes */
static int home_dir = -1;  /* the working directory libFuzzer started in */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char tmpl[] = "/tmp/keepmq-fuzz-rules-XXXXXX";
	(void)argc;
	(void)argv;
	if (!mkdtemp(tmpl))
		abort();
	empty_dir = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	home_dir = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (empty_dir < 0 || home_dir < 0)
		abort();
	rmdir(tmpl); /* stays usable (and empty) through the descriptor */
	return 0;
}

/* What persist_config_finish built must be consistent. */
static void check_bus(const persist *p)
{
	uint32_t seen = 0;
	for (int hp = 0; hp < HOOK__COUNT; hp++) {
		const prule *prev = NULL;
		for (const prule *r = p->at[hp]; r; r = r->next_at_point) {
			if (r->point != hp || !r->pool || !r->be)
				abort();
			if (!r->func == !r->raw)
				abort(); /* exactly one of a function and a raw action */
			if (r->func && !(r->func->hooks & (1u << hp)))
				abort();
			if (r->topic && (strlen(r->topic) != r->topic_len || r->topic_len == 0))
				abort();
			if (r->max_returned_count < 0 || r->time_range_ms == 0)
				abort(); /* unset values were resolved */
			/* backend order, then <n> order within a backend */
			if (prev && prev->be == r->be && prev->n >= r->n)
				abort();
			prev = r;
		}
		if (p->at[hp])
			seen |= 1u << hp;
		if (persist_wants(p, hp) != !!p->at[hp])
			abort();
	}
	(void)seen;
	for (const pbackend *be = p->backends; be; be = be->next) {
		for (size_t i = 0; i < be->nrules; i++) {
			const prule *r = be->rule_vec[i];
			if (!r || r->be != be || r->point >= HOOK__COUNT || r->n < 0)
				abort();
			for (size_t k = i + 1; k < be->nrules; k++)
				if (be->rule_vec[k]->point == r->point && be->rule_vec[k]->n == r->n)
					abort(); /* a key set twice must replace, not add */
		}
		for (const ppool *pl = be->pools; pl; pl = pl->next)
			if (strnlen(pl->name, sizeof(pl->name)) == sizeof(pl->name) || !pl->name[0] ||
			    strcmp(pl->name, "hook") == 0)
				abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cfg_errors *errs;
	cfg_registry *reg;
	persist *p;

	if (memmem(data, size, "include", 7) && memchr(data, '/', size))
		return 0;
	errs = calloc(1, sizeof(*errs));
	reg = cfg_registry_new();
	if (!errs || !reg)
		abort();
	p = persist_new(reg, keepmq_backends);
	if (!p)
		abort();
	if (cfg_apply_defaults(reg, errs) != 0)
		abort();
	if (fchdir(empty_dir) != 0)
		abort();
	cfg_load_string(reg, "fuzz.conf", (const char *)data, size, errs);
	if (fchdir(home_dir) != 0)
		abort();
	cfg_check_required(reg, errs);
	int n_before = errs->n + errs->dropped;
	int rc = persist_config_finish(p, errs);
	if ((rc != 0) != (errs->n + errs->dropped > n_before))
		abort();
	if (errs->n < 0 || errs->n > CFG_MAX_ERRORS || errs->dropped < 0)
		abort();
	for (int i = 0; i < errs->n; i++)
		if (strnlen(errs->e[i].msg, CFG_ERR_LEN) == CFG_ERR_LEN)
			abort();
	check_bus(p);
	(void)persist_sync_publish(p);
	(void)persist_backend_count(p);
	char *js = persist_metrics_json(p);
	if (!js)
		abort();
	free(js);
	/* finishing again must give the same lists (and not leak) */
	cfg_errors *again = calloc(1, sizeof(*again));
	if (!again)
		abort();
	persist_config_finish(p, again);
	check_bus(p);
	free(again);

	/* the registry's rows belong to the bus: release the registry first */
	cfg_release(reg);
	cfg_registry_free(&reg);
	persist_free(&p);
	free(errs);
	return 0;
}
