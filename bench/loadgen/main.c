/*
 * main.c - keepmq-loadgen command line and result output.
 *
 * Design
 * ------
 * `keepmq-loadgen MODE [options]` (or --mode MODE). Results are one flat
 * JSON object on stdout with --json (flat so a shell driver can pick fields
 * with sed/awk, no JSON library needed), else `key: value` lines. Progress
 * and errors go to stderr. The exit status is 0 only for a clean run.
 *
 * `freeport` is a helper for the driver: prints a TCP port on 127.0.0.1 that
 * nothing is bound to, chosen below the ephemeral range so it cannot collide
 * with the generator's own client ports.
 */
#include <getopt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loadgen.h"

static void usage(FILE *f)
{
	fputs("usage: keepmq-loadgen MODE [options]   (MODE: pubsub, idle, connrate, freeport)\n"
	      "\n"
	      "common:\n"
	      "  --host H              broker address (127.0.0.1)\n"
	      "  --port N              broker port (1883)\n"
	      "  --protocol 4|5        MQTT 3.1.1 or 5 (4)\n"
	      "  --clients-prefix S    client identifier prefix (lg<pid>)\n"
	      "  --json                one JSON object with all results on stdout\n"
	      "  --timeout S           seconds allowed for connection setup (60)\n"
	      "  --concurrency N       connection attempts in progress at once\n"
	      "                        (64; 32 for connrate: mosquitto listens with a\n"
	      "                        backlog of 100, and an overflow costs a 1 s SYN retry)\n"
	      "\n"
	      "pubsub:\n"
	      "  --publishers P        (10)\n"
	      "  --subscribers S       (10)\n"
	      "  --topology T          distinct (pub i -> bench/i -> sub i; P == S),\n"
	      "                        fanin (pub i -> bench/i, subs on bench/#),\n"
	      "                        fanout (pubs -> bench/x, subs on bench/x)  (distinct)\n"
	      "  --qos 0|1|2           (0)\n"
	      "  --payload B           payload bytes, >= 16 (64)\n"
	      "  --warmup S            seconds before measuring (1)\n"
	      "  --duration S          measured seconds (5)\n"
	      "  --drain S             max seconds to wait for stragglers after (10)\n"
	      "  --window N            max unacknowledged QoS>0 publishes per publisher (64)\n"
	      "  --max-backlog N|none  max messages a publisher may be ahead of its slowest\n"
	      "                        subscriber (auto: 1024 deliveries in flight over\n"
	      "                        all publishers, at least 2 per publisher)\n"
	      "  --rate R              total msg/s over all publishers; 0 = as fast as\n"
	      "                        the limits above allow (0)\n"
	      "  --sub-session K       subscribers' sessions: clean; persistent (clean\n"
	      "                        session 0 / v5 session expiry, online); offline\n"
	      "                        (persistent, subscribe then DISCONNECT before the\n"
	      "                        publishers start: all messages queue) (clean)\n"
	      "  --session-expiry S    v5 Session Expiry Interval of persistent\n"
	      "                        subscribers (3600)\n"
	      "\n"
	      "idle:\n"
	      "  --connections N       (1000)\n"
	      "  --hold S              seconds to hold once all are connected (10)\n"
	      "  --keepalive S         (300)\n"
	      "  --source-ips K        spread over 127.0.0.1..127.0.0.K (auto: N/20000)\n"
	      "  --ready-file F        written with the connected count when ready\n"
	      "\n"
	      "connrate:\n"
	      "  --count K             connect/CONNECT/CONNACK/DISCONNECT cycles (10000)\n"
	      "  --source-ips K        (8)\n",
	      f);
}

/* ---------------------------------------------------------------- output */

static bool out_json;
static bool out_first;

void out_begin(const struct lg_opts *o)
{
	out_json = o->json;
	out_first = true;
	if (out_json)
		fputc('{', stdout);
}

static void out_key(const char *key)
{
	if (out_json) {
		printf("%s\"%s\":", out_first ? "" : ",", key);
	} else {
		printf("%-20s ", key);
	}
	out_first = false;
}

void out_str(const char *key, const char *val)
{
	out_key(key);
	if (!out_json) {
		printf("%s\n", val);
		return;
	}
	fputc('"', stdout);
	for (const char *p = val; *p; p++) {
		unsigned char ch = (unsigned char)*p;
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			fputc(ch, stdout);
	}
	fputc('"', stdout);
}

void out_int(const char *key, long long val)
{
	out_key(key);
	printf(out_json ? "%lld" : "%lld\n", val);
}

void out_num(const char *key, double val)
{
	out_key(key);
	printf(out_json ? "%.3f" : "%.3f\n", val);
}

void out_end(void)
{
	if (out_json)
		fputs("}\n", stdout);
	fflush(stdout);
}

/* ---------------------------------------------------------------- freeport */

static int freeport(void)
{
	srand((unsigned)(getpid() ^ clock_mono_ns()));
	for (int tries = 0; tries < 1000; tries++) {
		int port = 10000 + rand() % 22000;
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			return 1;
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		int ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		close(fd);
		if (ok) {
			printf("%d\n", port);
			return 0;
		}
	}
	fprintf(stderr, "loadgen: no free port found\n");
	return 1;
}

/* ---------------------------------------------------------------- main */

static int parse_mode(const char *s, enum lg_mode *m)
{
	if (!strcmp(s, "pubsub"))
		*m = MODE_PUBSUB;
	else if (!strcmp(s, "idle"))
		*m = MODE_IDLE;
	else if (!strcmp(s, "connrate"))
		*m = MODE_CONNRATE;
	else
		return -1;
	return 0;
}

enum {
	OPT_HOST = 256,
	OPT_PORT,
	OPT_PROTOCOL,
	OPT_PREFIX,
	OPT_JSON,
	OPT_TIMEOUT,
	OPT_MODE,
	OPT_PUBS,
	OPT_SUBS,
	OPT_TOPO,
	OPT_QOS,
	OPT_PAYLOAD,
	OPT_WARMUP,
	OPT_DURATION,
	OPT_DRAIN,
	OPT_WINDOW,
	OPT_BACKLOG,
	OPT_RATE,
	OPT_SUBSESSION,
	OPT_EXPIRY,
	OPT_CONNS,
	OPT_HOLD,
	OPT_CONC,
	OPT_SRC,
	OPT_READY,
	OPT_KEEPALIVE,
	OPT_COUNT,
	OPT_HELP,
};

static const struct option long_opts[] = {
    {"host", required_argument, NULL, OPT_HOST},
    {"port", required_argument, NULL, OPT_PORT},
    {"protocol", required_argument, NULL, OPT_PROTOCOL},
    {"clients-prefix", required_argument, NULL, OPT_PREFIX},
    {"json", no_argument, NULL, OPT_JSON},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"mode", required_argument, NULL, OPT_MODE},
    {"publishers", required_argument, NULL, OPT_PUBS},
    {"subscribers", required_argument, NULL, OPT_SUBS},
    {"topology", required_argument, NULL, OPT_TOPO},
    {"qos", required_argument, NULL, OPT_QOS},
    {"payload", required_argument, NULL, OPT_PAYLOAD},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"drain", required_argument, NULL, OPT_DRAIN},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"max-backlog", required_argument, NULL, OPT_BACKLOG},
    {"rate", required_argument, NULL, OPT_RATE},
    {"sub-session", required_argument, NULL, OPT_SUBSESSION},
    {"session-expiry", required_argument, NULL, OPT_EXPIRY},
    {"connections", required_argument, NULL, OPT_CONNS},
    {"hold", required_argument, NULL, OPT_HOLD},
    {"concurrency", required_argument, NULL, OPT_CONC},
    {"source-ips", required_argument, NULL, OPT_SRC},
    {"ready-file", required_argument, NULL, OPT_READY},
    {"keepalive", required_argument, NULL, OPT_KEEPALIVE},
    {"count", required_argument, NULL, OPT_COUNT},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

int main(int argc, char **argv)
{
	struct lg_opts o = {
	    .mode = MODE_PUBSUB,
	    .host = "127.0.0.1",
	    .port = 1883,
	    .protocol = 4,
	    .timeout = 60,
	    .publishers = 10,
	    .subscribers = 10,
	    .qos = 0,
	    .payload = 64,
	    .topology = TOPO_DISTINCT,
	    .warmup = 1,
	    .duration = 5,
	    .drain = 10,
	    .window = 64,
	    .max_backlog = 0, /* auto */
	    .sub_session = SUBS_CLEAN,
	    .session_expiry = 3600,
	    .connections = 1000,
	    .hold = 10,
	    .concurrency = -1,
	    .keepalive = 300,
	    .count = 10000,
	};
	snprintf(o.prefix, sizeof(o.prefix), "lg%d", (int)getpid());

	if (argc > 1 && argv[1][0] != '-') {
		if (!strcmp(argv[1], "freeport"))
			return freeport();
		if (parse_mode(argv[1], &o.mode) != 0) {
			fprintf(stderr, "loadgen: unknown mode '%s'\n", argv[1]);
			usage(stderr);
			return 2;
		}
		argv[1] = argv[0];
		argv++;
		argc--;
	}
	int ch;
	while ((ch = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
		switch (ch) {
		case OPT_HOST:
			o.host = optarg;
			break;
		case OPT_PORT:
			o.port = atoi(optarg);
			break;
		case OPT_PROTOCOL:
			o.protocol = (uint8_t)atoi(optarg);
			if (o.protocol != 4 && o.protocol != 5) {
				fprintf(stderr, "loadgen: --protocol must be 4 or 5\n");
				return 2;
			}
			break;
		case OPT_PREFIX:
			snprintf(o.prefix, sizeof(o.prefix), "%s", optarg);
			break;
		case OPT_JSON:
			o.json = true;
			break;
		case OPT_TIMEOUT:
			o.timeout = atof(optarg);
			break;
		case OPT_MODE:
			if (!strcmp(optarg, "freeport"))
				return freeport();
			if (parse_mode(optarg, &o.mode) != 0) {
				fprintf(stderr, "loadgen: unknown mode '%s'\n", optarg);
				return 2;
			}
			break;
		case OPT_PUBS:
			o.publishers = atoi(optarg);
			break;
		case OPT_SUBS:
			o.subscribers = atoi(optarg);
			break;
		case OPT_TOPO:
			if (!strcmp(optarg, "distinct"))
				o.topology = TOPO_DISTINCT;
			else if (!strcmp(optarg, "fanin"))
				o.topology = TOPO_FANIN;
			else if (!strcmp(optarg, "fanout"))
				o.topology = TOPO_FANOUT;
			else {
				fprintf(stderr, "loadgen: unknown topology '%s'\n", optarg);
				return 2;
			}
			break;
		case OPT_QOS:
			o.qos = atoi(optarg);
			break;
		case OPT_PAYLOAD:
			o.payload = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case OPT_WARMUP:
			o.warmup = atof(optarg);
			break;
		case OPT_DURATION:
			o.duration = atof(optarg);
			break;
		case OPT_DRAIN:
			o.drain = atof(optarg);
			break;
		case OPT_WINDOW:
			o.window = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case OPT_BACKLOG:
			o.max_backlog = !strcmp(optarg, "none")
			                    ? UINT32_MAX
			                    : (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case OPT_RATE:
			o.rate = atof(optarg);
			break;
		case OPT_SUBSESSION:
			if (!strcmp(optarg, "clean"))
				o.sub_session = SUBS_CLEAN;
			else if (!strcmp(optarg, "persistent"))
				o.sub_session = SUBS_PERSISTENT;
			else if (!strcmp(optarg, "offline"))
				o.sub_session = SUBS_OFFLINE;
			else {
				fprintf(stderr, "loadgen: unknown --sub-session '%s'\n", optarg);
				return 2;
			}
			break;
		case OPT_EXPIRY:
			o.session_expiry = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case OPT_CONNS:
			o.connections = atoi(optarg);
			break;
		case OPT_HOLD:
			o.hold = atof(optarg);
			break;
		case OPT_CONC:
			o.concurrency = atoi(optarg);
			break;
		case OPT_SRC:
			o.source_ips = atoi(optarg);
			break;
		case OPT_READY:
			o.ready_file = optarg;
			break;
		case OPT_KEEPALIVE:
			o.keepalive = (uint16_t)atoi(optarg);
			break;
		case OPT_COUNT:
			o.count = atol(optarg);
			break;
		case 'h':
		case OPT_HELP:
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "loadgen: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (o.concurrency < 1)
		o.concurrency = o.mode == MODE_CONNRATE ? 32 : 64;
	if (o.timeout <= 0)
		o.timeout = 60;

	switch (o.mode) {
	case MODE_PUBSUB:
		return run_pubsub(&o);
	case MODE_IDLE:
		return run_idle(&o);
	case MODE_CONNRATE:
		return run_connrate(&o);
	}
	return 2;
}
