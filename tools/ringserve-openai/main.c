/* ringserve-openai: an OpenAI-compatible HTTP bridge to ringserved (docs/client-http.md).
 * It serves /v1/models, /v1/completions and /v1/chat/completions (with server-sent event
 * streams) and forwards each generation to ringserved through libringserve, on one
 * connection per tenant; API keys map to tenants in the configuration file. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/ringserve-openai/config.h"
#include "tools/ringserve-openai/http.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: ringserve-openai --config FILE [--listen ADDR:PORT] [--socket PATH]\n"
		   "         [--ready-fd N]\n"
		   "  --config     JSON configuration: keys -> tenants, listen address, model id\n"
		   "  --listen     override the configuration's listen address (port 0: any)\n"
		   "  --socket     ringserved's socket (default: as libringserve's rs_connect)\n"
		   "  --ready-fd   write the bound port and a newline to descriptor N once\n"
		   "               listening, then close it\n");
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
	    {"config", required_argument, NULL, 'c'}, {"listen", required_argument, NULL, 'l'},
	    {"socket", required_argument, NULL, 's'}, {"ready-fd", required_argument, NULL, 'r'},
	    {"help", no_argument, NULL, 'h'},	      {NULL, 0, NULL, 0},
	};
	const char *config_path = NULL, *listen = NULL, *socket_path = NULL;
	int ready_fd = -1, c;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'l':
			listen = optarg;
			break;
		case 's':
			socket_path = optarg;
			break;
		case 'r':
			ready_fd = atoi(optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!config_path || optind != argc) {
		usage(stderr);
		return 2;
	}
	static struct bridge_config config;
	char error[512];
	if (bridge_config_load(config_path, &config, error, sizeof(error)) < 0) {
		fprintf(stderr, "ringserve-openai: %s\n", error);
		return 1;
	}
	if (listen && bridge_config_set_listen(&config, listen) < 0) {
		fprintf(stderr, "ringserve-openai: --listen: '%s' is not IPv4-ADDRESS:PORT\n",
			listen);
		return 2;
	}
	if (socket_path) {
		config.socket_path = strdup(socket_path);
		for (size_t i = 0; i < config.n_links; i++)
			config.links[i].socket_path = config.socket_path;
	}

	/* Signals are taken by sigwait below; block them before any thread starts. A client
	 * gone mid-write must not kill the process. */
	sigset_t stop_signals;
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	unsigned port;
	struct MHD_Daemon *http = http_start(&config, &port);
	if (!http)
		return 1;
	fprintf(stderr, "ringserve-openai: listening on http://%s:%u (model '%s', %zu keys)\n",
		config.listen_host, port, config.model_id, config.n_keys);
	if (ready_fd >= 0) {
		char line[16];
		int n = snprintf(line, sizeof(line), "%u\n", port);
		if (write(ready_fd, line, (size_t)n) != n)
			fprintf(stderr, "ringserve-openai: --ready-fd: %s\n", strerror(errno));
		close(ready_fd);
	}
	int sig;
	sigwait(&stop_signals, &sig);
	fprintf(stderr, "ringserve-openai: %s, stopping\n", strsignal(sig));
	MHD_stop_daemon(http);
	return 0;
}
