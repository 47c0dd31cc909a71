/* ringserve-bench openai: what the OpenAI-compatible bridge (ringserve-openai) adds over the
 * C client, on one daemon serving a small random model (the engine's own time is small, so
 * the bridge's share shows):
 *   - per request: the round trip of a 1-token completion, from the C client
 *     (rs_submit_text, rs_wait, detokenize) and over HTTP through the bridge, on a
 *     kept-alive connection and on a new connection per request (p50, p99);
 *   - per streamed token: a 128-token stream, from the C client (rs_wait_output per token)
 *     and as server-sent events through the bridge: the time to the first token and the
 *     whole stream's time, divided by its tokens.
 * The HTTP client here is a few lines over a socket that reads what it needs of the
 * answers (Content-Length, the end of a chunked stream); the bridge parses nothing by hand. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "tools/ringserve-bench/bench.h"

#define STREAM_TOKENS  128
#define KEY	       "sk-bench-openai-0000"
#define PROMPT	       "Once upon a time there was a little girl"
#define MAX_ITERATIONS 100000

static double samples[MAX_ITERATIONS];

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double percentile(double *values, unsigned n, double p)
{
	qsort(values, n, sizeof(*values), compare_double);
	unsigned i = (unsigned)(p * (n - 1) + 0.5);
	return values[i];
}

/* The program next to this one, started with argv; its --ready-fd line is read into
 * ready_line. Returns its pid or -1. */
static pid_t start_sibling(const char *name, const char **argv, char *ready_line, size_t size)
{
	char self[512], path[600], ready_arg[16];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return -1;
	self[n] = 0;
	*strrchr(self, '/') = 0;
	snprintf(path, sizeof(path), "%s/%s", self, name);
	int ready[2];
	if (pipe(ready) < 0)
		return -1;
	snprintf(ready_arg, sizeof(ready_arg), "%d", ready[1]);
	int argc = 0;
	while (argv[argc])
		argc++;
	argv[argc] = "--ready-fd";
	argv[argc + 1] = ready_arg;
	argv[argc + 2] = NULL;
	argv[0] = path;
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(ready[0]);
		execv(path, (char *const *)argv);
		_exit(127);
	}
	close(ready[1]);
	ssize_t got = pid > 0 ? read(ready[0], ready_line, size - 1) : -1;
	close(ready[0]);
	if (got <= 0)
		return -1;
	ready_line[got] = 0;
	return pid;
}

static int http_connect(unsigned port)
{
	int sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
	int one = 1;
	setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		close(sock);
		return -1;
	}
	return sock;
}

/* POST body to path on sock and read the whole answer: a Content-Length body, or a
 * chunked stream up to its last chunk. *first_event_us: when the first "data: " event
 * with text arrived (streams). Returns 0 or -1. */
static int http_post(int sock, const char *path, const char *body, bool stream,
		     double *first_event_us)
{
	char request[1024];
	int len = snprintf(request, sizeof(request),
			   "POST %s HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer " KEY
			   "\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
			   path, strlen(body), body);
	if (write(sock, request, (size_t)len) != len)
		return -1;
	static char buf[1 << 20];
	size_t have = 0;
	size_t header_end = 0, need = 0;
	*first_event_us = 0;
	for (;;) {
		ssize_t n = read(sock, buf + have, sizeof(buf) - have - 1);
		if (n <= 0)
			return -1;
		have += (size_t)n;
		buf[have] = 0;
		if (stream && !*first_event_us && strstr(buf, "\"text\":\"") &&
		    !strstr(buf, "\"text\":\"\""))
			*first_event_us = now_us();
		if (!header_end) {
			char *end = strstr(buf, "\r\n\r\n");
			if (!end)
				continue;
			if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
				fprintf(stderr, "bench openai: %.*s\n", (int)have, buf);
				return -1;
			}
			header_end = (size_t)(end - buf) + 4;
			char *length = strcasestr(buf, "Content-Length:");
			if (length && length < end)
				need = header_end + strtoul(length + 15, NULL, 10);
		}
		if (need && have >= need)
			return 0;
		if (!need && have >= 5 && memcmp(buf + have - 5, "0\r\n\r\n", 5) == 0)
			return 0;
	}
}

struct c_figures {
	double request_p50, request_p99, ttft, stream_total, per_token;
};

/* The C client's figures on its own connection. */
static int measure_c_client(const char *socket_path, unsigned iterations, struct c_figures *out)
{
	struct rs_connection *conn;
	/* Sleeping waits, as the bridge's pump does: on two busy cores a spinning client
	 * would take the daemon's CPU and make the baseline slower, not faster. */
	struct rs_connect_options options = {.tenant = "bench-c", .spin_us = UINT32_MAX};
	if (rs_connect(socket_path, &options, &conn) < 0)
		return -1;
	char text[65536];
	for (unsigned i = 0; i < iterations + 10; i++) {
		double start = now_us();
		struct rs_generate_params params = {.max_new_tokens = 1,
						    .flags = RS_GENERATE_IGNORE_EOS};
		int request = rs_submit_text(conn, &params, PROMPT, strlen(PROMPT));
		struct rs_completion done;
		if (request < 0 || rs_wait(conn, &done, 1, 10000) != 1)
			return -1;
		const uint32_t *tokens;
		int n = rs_output(conn, request, &tokens);
		struct rs_detok detok;
		rs_detok_init(conn, &detok, request);
		rs_detok_feed(&detok, tokens, (uint32_t)n, text, sizeof(text));
		rs_release(conn, request);
		if (i >= 10) /* after a warm-up */
			samples[i - 10] = now_us() - start;
	}
	out->request_p50 = percentile(samples, iterations, 0.5);
	out->request_p99 = percentile(samples, iterations, 0.99);
	/* streams: the best of 5 */
	out->stream_total = out->ttft = 1e30;
	for (int r = 0; r < 5; r++) {
		double start = now_us(), first = 0;
		struct rs_generate_params params = {.max_new_tokens = STREAM_TOKENS,
						    .flags = RS_GENERATE_IGNORE_EOS};
		int request = rs_submit_text(conn, &params, PROMPT, strlen(PROMPT));
		struct rs_detok detok;
		rs_detok_init(conn, &detok, request);
		uint32_t have = 0;
		for (;;) {
			int n = rs_wait_output(conn, request, have, 10000);
			if (n == -ENODATA)
				break;
			if (n < 0)
				return -1;
			const uint32_t *tokens;
			rs_output(conn, request, &tokens);
			rs_detok_feed(&detok, tokens + have, (uint32_t)n - have, text,
				      sizeof(text));
			if (!first)
				first = now_us();
			have = (uint32_t)n;
		}
		struct rs_completion done;
		rs_wait(conn, &done, 1, 10000);
		rs_release(conn, request);
		double total = now_us() - start;
		if (total < out->stream_total)
			out->stream_total = total;
		if (first - start < out->ttft)
			out->ttft = first - start;
	}
	out->per_token = out->stream_total / STREAM_TOKENS;
	rs_close(conn);
	return 0;
}

struct http_figures {
	double keepalive_p50, keepalive_p99, fresh_p50, fresh_p99, ttft, stream_total, per_token;
};

static int measure_bridge(unsigned port, unsigned iterations, struct http_figures *out)
{
	char body[512];
	snprintf(body, sizeof(body),
		 "{\"model\": \"bench\", \"prompt\": \"" PROMPT "\", \"max_tokens\": 1, "
		 "\"temperature\": 0, \"ignore_eos\": true}");
	double first;
	int sock = http_connect(port);
	if (sock < 0)
		return -1;
	for (unsigned i = 0; i < iterations + 10; i++) {
		double start = now_us();
		if (http_post(sock, "/v1/completions", body, false, &first) < 0)
			return -1;
		if (i >= 10)
			samples[i - 10] = now_us() - start;
	}
	out->keepalive_p50 = percentile(samples, iterations, 0.5);
	out->keepalive_p99 = percentile(samples, iterations, 0.99);
	for (unsigned i = 0; i < iterations; i++) {
		double start = now_us();
		int fresh = http_connect(port);
		if (fresh < 0 || http_post(fresh, "/v1/completions", body, false, &first) < 0)
			return -1;
		close(fresh);
		samples[i] = now_us() - start;
	}
	out->fresh_p50 = percentile(samples, iterations, 0.5);
	out->fresh_p99 = percentile(samples, iterations, 0.99);
	snprintf(body, sizeof(body),
		 "{\"model\": \"bench\", \"prompt\": \"" PROMPT "\", \"max_tokens\": %d, "
		 "\"temperature\": 0, \"ignore_eos\": true, \"stream\": true}",
		 STREAM_TOKENS);
	out->stream_total = out->ttft = 1e30;
	for (int r = 0; r < 5; r++) {
		double start = now_us();
		if (http_post(sock, "/v1/completions", body, true, &first) < 0)
			return -1;
		double total = now_us() - start;
		if (total < out->stream_total)
			out->stream_total = total;
		if (first && first - start < out->ttft)
			out->ttft = first - start;
	}
	out->per_token = out->stream_total / STREAM_TOKENS;
	close(sock);
	return 0;
}

int bench_openai(int argc, char **argv, FILE *json)
{
	unsigned iterations = 300;
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
			iterations = (unsigned)atoi(argv[++i]);
	if (iterations < 10 || iterations > MAX_ITERATIONS) {
		fprintf(stderr, "bench openai: --iterations 10 .. %d\n", MAX_ITERATIONS);
		return 1;
	}
	char dir[] = "/tmp/ringserve-bench-openai-XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	char model[128], socket_path[128], config[128], line[64];
	snprintf(model, sizeof(model), "%s/model.gguf", dir);
	snprintf(socket_path, sizeof(socket_path), "%s/sock", dir);
	snprintf(config, sizeof(config), "%s/bridge.json", dir);
	const char *mkmodel[16] = {"ringserve-mkmodel", "--out-gguf", model,
				   "--seq-len",		"512",	      NULL};
	/* mkmodel has no --ready-fd: run it to the end through the shell instead. */
	char self[512], command[1200];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return 1;
	self[n] = 0;
	*strrchr(self, '/') = 0;
	snprintf(command, sizeof(command), "%s/%s %s %s %s %s >/dev/null", self, mkmodel[0],
		 mkmodel[1], mkmodel[2], mkmodel[3], mkmodel[4]);
	if (system(command) != 0) {
		fprintf(stderr, "bench openai: ringserve-mkmodel failed\n");
		return 1;
	}
	const char *daemon_args[] = {"--model", model, "--backend", "cpu", "--threads", "1", NULL};
	pid_t daemon = bench_start_daemon(socket_path, daemon_args);
	if (daemon < 0) {
		fprintf(stderr, "bench openai: ringserved did not start\n");
		return 1;
	}
	FILE *f = fopen(config, "w");
	if (!f)
		return 1;
	fprintf(f, "{\"listen\": \"127.0.0.1:0\", \"model\": \"bench\", \"keys\": {\"" KEY
		   "\": \"bench-http\"}}\n");
	fclose(f);
	const char *bridge_args[16] = {"ringserve-openai", "--config",	config,
				       "--socket",	   socket_path, NULL};
	pid_t bridge = start_sibling("ringserve-openai", bridge_args, line, sizeof(line));
	int ret = 1;
	struct c_figures c = {0};
	struct http_figures h = {0};
	if (bridge < 0) {
		fprintf(stderr, "bench openai: ringserve-openai did not start\n");
		goto out;
	}
	unsigned port = (unsigned)atoi(line);
	/* Three rounds, alternating, keeping each figure's best: the machine is shared. */
	for (int round = 0; round < 3; round++) {
		struct c_figures c1;
		struct http_figures h1;
		if (measure_c_client(socket_path, iterations, &c1) < 0 ||
		    measure_bridge(port, iterations, &h1) < 0) {
			fprintf(stderr, "bench openai: a measurement failed\n");
			goto out;
		}
#define KEEP_MIN(a, b, field)                                                                      \
	(a).field = round == 0 || (b).field < (a).field ? (b).field : (a).field
		KEEP_MIN(c, c1, request_p50);
		KEEP_MIN(c, c1, request_p99);
		KEEP_MIN(c, c1, ttft);
		KEEP_MIN(c, c1, stream_total);
		KEEP_MIN(c, c1, per_token);
		KEEP_MIN(h, h1, keepalive_p50);
		KEEP_MIN(h, h1, keepalive_p99);
		KEEP_MIN(h, h1, fresh_p50);
		KEEP_MIN(h, h1, fresh_p99);
		KEEP_MIN(h, h1, ttft);
		KEEP_MIN(h, h1, stream_total);
		KEEP_MIN(h, h1, per_token);
#undef KEEP_MIN
	}
	printf("openai bridge vs C client (model: random dim 64, 2 layers, cpu, 1 thread)\n");
	printf("  %-34s %10s %10s %12s\n", "", "C client", "bridge", "added");
	printf("  %-34s %8.1f us %8.1f us %9.1f us\n", "1-token request p50 (keep-alive)",
	       c.request_p50, h.keepalive_p50, h.keepalive_p50 - c.request_p50);
	printf("  %-34s %8.1f us %8.1f us %9.1f us\n", "1-token request p99 (keep-alive)",
	       c.request_p99, h.keepalive_p99, h.keepalive_p99 - c.request_p99);
	printf("  %-34s %8.1f us %8.1f us %9.1f us\n", "1-token request p50 (new connection)",
	       c.request_p50, h.fresh_p50, h.fresh_p50 - c.request_p50);
	printf("  %-34s %8.1f us %8.1f us %9.1f us\n", "stream: time to first token", c.ttft,
	       h.ttft, h.ttft - c.ttft);
	printf("  %-34s %8.1f us %8.1f us %9.1f us\n", "stream: per token (128, best of 5)",
	       c.per_token, h.per_token, h.per_token - c.per_token);
	fprintf(json,
		"{\"c_request_p50_us\": %.2f, \"c_request_p99_us\": %.2f, "
		"\"bridge_request_p50_us\": %.2f, \"bridge_request_p99_us\": %.2f, "
		"\"bridge_request_new_connection_p50_us\": %.2f, "
		"\"added_request_p50_us\": %.2f, \"c_ttft_us\": %.2f, \"bridge_ttft_us\": %.2f, "
		"\"c_per_token_us\": %.2f, \"bridge_per_token_us\": %.2f, "
		"\"added_per_token_us\": %.2f, \"stream_tokens\": %d}",
		c.request_p50, c.request_p99, h.keepalive_p50, h.keepalive_p99, h.fresh_p50,
		h.keepalive_p50 - c.request_p50, c.ttft, h.ttft, c.per_token, h.per_token,
		h.per_token - c.per_token, STREAM_TOKENS);
	ret = 0;
out:
	if (bridge > 0) {
		kill(bridge, SIGTERM);
		waitpid(bridge, NULL, 0);
	}
	kill(daemon, SIGTERM);
	waitpid(daemon, NULL, 0);
	snprintf(command, sizeof(command), "rm -rf %s", dir);
	if (system(command) != 0)
		fprintf(stderr, "bench openai: could not remove %s\n", dir);
	return ret;
}
