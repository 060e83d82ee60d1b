/*
 * main.c - the keepmq command: run the broker, check or document its
 * configuration, manage the password file.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "auth/auth.h"
#include "backends/registry.h"
#include "broker/broker.h"
#include "broker/version.h"
#include "config/config.h"
#include "util/hash.h"
#include "util/log.h"

static void usage(FILE *f)
{
	fprintf(f, "Usage: keepmq [-c FILE] [-o KEY=VALUE]... [--check-config]\n"
	           "       keepmq --version | --help\n"
	           "       keepmq --config-doc\n"
	           "       keepmq passwd [-c] [-i ITERATIONS] FILE USER [PASSWORD]\n"
	           "       keepmq passwd -D FILE USER\n"
	           "\n"
	           "  -c, --config FILE   configuration file (default: built-in defaults)\n"
	           "  -o, --set KEY=VALUE set one key, after the file (repeatable)\n"
	           "      --check-config  validate the configuration and exit\n"
	           "      --config-doc    print the configuration reference (Markdown)\n"
	           "      --version       print the version\n");
}

/* Reads a password without echo from a terminal, or a line from a pipe. */
static int read_password(const char *prompt, char *out, size_t len)
{
	bool tty = isatty(STDIN_FILENO);
	struct termios old, quiet;
	if (tty) {
		fprintf(stderr, "%s", prompt);
		tcgetattr(STDIN_FILENO, &old);
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	}
	char *r = fgets(out, (int)len, stdin);
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fprintf(stderr, "\n");
	}
	if (!r)
		return -1;
	out[strcspn(out, "\r\n")] = 0;
	return 0;
}

static int cmd_passwd(int argc, char **argv)
{
	bool create = false, del = false;
	unsigned iterations = 0;
	int opt;
	optind = 1;
	while ((opt = getopt(argc, argv, "cDi:h")) != -1) {
		switch (opt) {
		case 'c': create = true; break;
		case 'D': del = true; break;
		case 'i': iterations = (unsigned)strtoul(optarg, NULL, 10); break;
		default: usage(opt == 'h' ? stdout : stderr); return opt == 'h' ? 0 : 2;
		}
	}
	if (argc - optind < 2 || argc - optind > 3 || (del && argc - optind != 2)) {
		usage(stderr);
		return 2;
	}
	const char *file = argv[optind], *user = argv[optind + 1];
	char err[512];
	if (del) {
		if (passwd_file_delete(file, user, err, sizeof(err))) {
			fprintf(stderr, "keepmq passwd: %s\n", err);
			return 1;
		}
		return 0;
	}
	char pw[1024], again[1024];
	if (argc - optind == 3) {
		snprintf(pw, sizeof(pw), "%s", argv[optind + 2]);
	} else {
		if (read_password("Password: ", pw, sizeof(pw))) {
			fprintf(stderr, "keepmq passwd: no password given\n");
			return 1;
		}
		if (isatty(STDIN_FILENO)) {
			if (read_password("Password again: ", again, sizeof(again)) ||
			    strcmp(pw, again) != 0) {
				fprintf(stderr, "keepmq passwd: passwords do not match\n");
				return 1;
			}
		}
	}
	int rc = passwd_file_set(file, user, (const uint8_t *)pw, strlen(pw), iterations, create,
	                         err, sizeof(err));
	memset(pw, 0, sizeof(pw));
	memset(again, 0, sizeof(again));
	if (rc) {
		fprintf(stderr, "keepmq passwd: %s\n", err);
		return 1;
	}
	return 0;
}

static void print_errors(const cfg_errors *e)
{
	for (int i = 0; i < e->n; i++)
		fprintf(stderr, "keepmq: %s\n", e->e[i].msg);
	if (e->dropped)
		fprintf(stderr, "keepmq: ... and %d more errors\n", e->dropped);
}

/* Checks across keys that no single row can. */
static int check_config(broker_config *cfg, cfg_errors *errs)
{
	int bad = 0;
	for (listener_cfg *l = cfg->listeners; l; l = l->next) {
		if (!l->addr.set) {
			cfg_errorf(errs, NULL, 0, NULL,
			           "%s%slistener.tcp.%s has options but no address (add listener.tcp.%s = "
			           "host:port)",
			           l->where, l->where[0] ? ": " : "", l->name, l->name);
			bad = -1;
		}
	}
	return bad;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "passwd") == 0)
		return cmd_passwd(argc - 1, argv + 1);

	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},  {"set", required_argument, NULL, 'o'},
		{"check-config", no_argument, NULL, 'k'},  {"config-doc", no_argument, NULL, 'd'},
		{"version", no_argument, NULL, 'v'},       {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *conf = NULL;
	bool check_only = false, doc = false;
	char **sets = calloc((size_t)argc, sizeof(char *));
	int nsets = 0, opt, rc = 2;
	if (!sets)
		return 1;
	while ((opt = getopt_long(argc, argv, "c:o:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': conf = optarg; break;
		case 'o': sets[nsets++] = optarg; break;
		case 'k': check_only = true; break;
		case 'd': doc = true; break;
		case 'v': printf("keepmq %s\n", keepmq_version()); free(sets); return 0;
		case 'h': usage(stdout); free(sets); return 0;
		default: usage(stderr); free(sets); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "keepmq: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		free(sets);
		return 2;
	}

	hash_init();
	broker_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg_registry *reg = cfg_registry_new();
	static cfg_errors errs;
	persist *bus = NULL;
	state *st = NULL;
	if (!reg || broker_config_register(reg, &cfg) ||
	    !(bus = persist_new(reg, keepmq_backends)) ||
	    !(st = state_new(reg, keepmq_state_stores))) {
		fprintf(stderr, "keepmq: cannot set up configuration\n");
		goto out;
	}
	if (doc) {
		rc = cfg_write_docs(reg, stdout) ? 1 : 0;
		goto out;
	}
	cfg_apply_defaults(reg, &errs);
	if (conf)
		cfg_load_file(reg, conf, &errs);
	for (int i = 0; i < nsets; i++) {
		char *eq = strchr(sets[i], '=');
		if (!eq) {
			cfg_errorf(&errs, "<command line>", i + 1, NULL, "'%s' is not KEY=VALUE", sets[i]);
			continue;
		}
		*eq = 0;
		cfg_set(reg, sets[i], eq + 1, "<command line>", i + 1, &errs);
		*eq = '=';
	}
	cfg_check_required(reg, &errs);
	check_config(&cfg, &errs);
	persist_config_finish(bus, &errs);
	if (errs.n) {
		print_errors(&errs);
		fprintf(stderr, "keepmq: configuration has errors; not starting\n");
		rc = 2;
		goto out;
	}
	if (check_only) {
		printf("configuration OK%s%s\n", conf ? ": " : "", conf ? conf : "");
		rc = 0;
		goto out;
	}
	log_set_level(cfg.log_level);
	if (cfg.log_file && cfg.log_file[0] && log_open_file(cfg.log_file)) {
		fprintf(stderr, "keepmq: cannot open log file %s: %s\n", cfg.log_file, strerror(errno));
		rc = 1;
		goto out;
	}
	/* libuv writes with write(2): a closed peer must give EPIPE, not kill us */
	signal(SIGPIPE, SIG_IGN);
	broker b;
	if (broker_init(&b, &cfg, persist_backend_count(bus) ? bus : NULL, st)) {
		broker_free(&b);
		rc = 1;
		goto out;
	}
	rc = broker_run(&b);
	broker_free(&b);
out:
	/* the registry's rows belong to the bus: release the registry first */
	if (reg) {
		cfg_release(reg);
		cfg_registry_free(&reg);
	}
	persist_free(&bus);
	state_free(&st);
	broker_config_free(&cfg);
	free(sets);
	return rc;
}
