/* Statistics end to end: a daemon (null engine, each step STEP_US) serves two tenants,
 * "alpha" and "beta", one connection each. Each first runs one short request to its end
 * (so it has a finish, a time to first token and a latency), then keeps long requests in
 * flight: ALPHA_LONG and BETA_LONG, BATCH seats, so some wait. A long request needs
 * LONG_TOKENS steps of at least STEP_US: none can end while the test looks.
 *
 * Checked: rs_stats_snapshot on a connection and an rs_stats_open reader agree with what
 * the test submitted (in flight per tenant, waiting + running, seats, finishes, samples);
 * ringserve-top in a pseudo-terminal redraws several frames with both tenants' rows;
 * --once and --tenant print plain tables with the same figures; after the connections
 * close, every long request is counted as failed; after SIGTERM the reader, which
 * outlives the daemon, sees its last update, STOPPED. */
#include <errno.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

enum {
	STEP_US = 1000,
	BATCH = 6,
	PROMPT = 16,
	SHORT_TOKENS = 8,
	LONG_TOKENS = 4000,
	ALPHA_LONG = 6,
	BETA_LONG = 3,
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void fill_prompt(uint32_t *prompt, uint32_t seed)
{
	for (int i = 0; i < PROMPT; i++)
		prompt[i] = (seed * 7919u + (uint32_t)i * 104729u) % 32000u;
}

static int submit(struct rs_connection *conn, uint32_t seed, uint32_t max_new)
{
	uint32_t prompt[PROMPT];
	fill_prompt(prompt, seed);
	struct rs_generate_params params = {.prompt = prompt,
					    .prompt_len = PROMPT,
					    .max_new_tokens = max_new,
					    .flags = RS_GENERATE_IGNORE_EOS};
	int request = rs_submit(conn, &params);
	CHECK(request >= 0, "submit: %s", strerror(-request));
	return request;
}

static const struct rs_stats_tenant *find(const struct rs_stats_tenant *t, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(t[i].name, name) == 0)
			return &t[i];
	return NULL;
}

/* What the test expects of a tenant while its long requests are in flight. Which tenant
 * gets the seats first depends on the order in which the daemon took the submissions off
 * the rings (dlpm breaks ties by arrival), so a tenant may have none running yet: only a
 * running one must have generated past its short request. */
static bool tenant_settled(const struct rs_stats_tenant *t, uint32_t long_requests)
{
	return t && t->inflight == long_requests && t->waiting + t->running == t->inflight &&
	       t->requests_finished == 1 &&
	       (t->running ? t->generated_tokens > SHORT_TOKENS
			   : t->generated_tokens == SHORT_TOKENS);
}

/* --- ringserve-top's tables ------------------------------------------------------------ */

/* Drop ANSI escapes (ESC [ ... final letter) and carriage returns, in place. */
static void strip_escapes(char *text)
{
	char *out = text;
	for (char *in = text; *in;) {
		if (*in == '\x1b') {
			in++;
			if (*in == '[')
				in++;
			while (*in && !((*in >= 'a' && *in <= 'z') || (*in >= 'A' && *in <= 'Z')))
				in++;
			if (*in)
				in++;
			continue;
		}
		if (*in != '\r')
			*out++ = *in;
		in++;
	}
	*out = 0;
}

#define MAX_COLUMNS 32

struct row {
	char name[64];
	char cells[MAX_COLUMNS][32];
	int n;
};

struct table {
	char header[MAX_COLUMNS][16];
	int n_columns;
	struct row rows[8];
	int n_rows;
	char global[1024]; /* the lines above the table */
};

static int split(char *line, char **words, int max)
{
	int n = 0;
	for (char *save, *w = strtok_r(line, " \t", &save); w && n < max;
	     w = strtok_r(NULL, " \t", &save))
		words[n++] = w;
	return n;
}

/* Parse one frame of plain text: header lines, then TENANT ... and one row per tenant. */
static void parse_table(const char *text, struct table *table)
{
	memset(table, 0, sizeof(*table));
	char *copy = strdup(text);
	CHECK(copy, "strdup");
	bool in_table = false;
	for (char *save, *line = strtok_r(copy, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *words[MAX_COLUMNS];
		if (!in_table && strncmp(line, "TENANT", 6) != 0) {
			strncat(table->global, line,
				sizeof(table->global) - strlen(table->global) - 2);
			strcat(table->global, "\n");
			continue;
		}
		int n = split(line, words, MAX_COLUMNS);
		if (!in_table) {
			in_table = true;
			for (int i = 0; i < n; i++)
				snprintf(table->header[i], sizeof(table->header[i]), "%s",
					 words[i]);
			table->n_columns = n;
			continue;
		}
		if (n == 0 || table->n_rows == 8)
			continue;
		struct row *row = &table->rows[table->n_rows++];
		snprintf(row->name, sizeof(row->name), "%s", words[0]);
		for (int i = 0; i < n; i++)
			snprintf(row->cells[i], sizeof(row->cells[i]), "%s", words[i]);
		row->n = n;
	}
	free(copy);
	CHECK(in_table, "no TENANT header in:\n%s", text);
}

static const char *cell(const struct table *table, const char *tenant, const char *column)
{
	for (int r = 0; r < table->n_rows; r++) {
		if (strcmp(table->rows[r].name, tenant) != 0)
			continue;
		for (int c = 0; c < table->n_columns; c++)
			if (strcmp(table->header[c], column) == 0) {
				CHECK(c < table->rows[r].n, "row %s: no column %s", tenant, column);
				return table->rows[r].cells[c];
			}
		CHECK(false, "no column %s", column);
	}
	return NULL;
}

static double number(const struct table *table, const char *tenant, const char *column)
{
	const char *text = cell(table, tenant, column);
	CHECK(text, "no row for %s", tenant);
	char *end;
	double value = strtod(text, &end);
	CHECK(end != text && *end == 0, "%s %s: not a number: '%s'", tenant, column, text);
	return value;
}

/* The figures of a tenant in a table, against what the test submitted. */
static void check_row(const struct table *table, const char *tenant, double long_requests)
{
	double wait = number(table, tenant, "WAIT"), run = number(table, tenant, "RUN");
	double inflight = number(table, tenant, "INFL");
	CHECK(inflight == long_requests, "%s: INFL %g, expected %g", tenant, inflight,
	      long_requests);
	CHECK(wait + run == inflight, "%s: WAIT %g + RUN %g != INFL %g", tenant, wait, run,
	      inflight);
	CHECK(run <= BATCH, "%s: RUN %g over %d seats", tenant, run, BATCH);
	double generated = number(table, tenant, "GEN");
	CHECK(run ? generated > SHORT_TOKENS : generated == SHORT_TOKENS, "%s: GEN %g with RUN %g",
	      tenant, generated, run);
	CHECK(number(table, tenant, "DONE") == 1, "%s: DONE %g", tenant,
	      number(table, tenant, "DONE"));
	CHECK(number(table, tenant, "CONN") == 1, "%s: CONN", tenant);
	CHECK(number(table, tenant, "PROMPT") >= PROMPT, "%s: PROMPT", tenant);
	double ttft = number(table, tenant, "TTFT50"), latency = number(table, tenant, "LAT50");
	CHECK(ttft > 0 && latency >= ttft, "%s: TTFT50 %g, LAT50 %g", tenant, ttft, latency);
	CHECK(number(table, tenant, "SERVICE") > 0, "%s: SERVICE", tenant);
}

/* Read everything from fd until EOF (or EIO: a pty whose other side closed), within the
 * deadline. Returns a NUL-terminated heap buffer. */
static char *read_until_eof(int fd, uint64_t deadline_ms)
{
	size_t size = 1 << 16, len = 0;
	char *buf = malloc(size);
	CHECK(buf, "malloc");
	for (;;) {
		uint64_t now = now_ms();
		CHECK(now < deadline_ms,
		      "ringserve-top did not finish in time; output so far:\n%.*s", (int)len, buf);
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int ret = poll(&pfd, 1, (int)(deadline_ms - now));
		if (ret < 0 && errno == EINTR)
			continue;
		CHECK(ret >= 0, "poll: %s", strerror(errno));
		if (ret == 0)
			continue;
		if (len + 4096 + 1 > size) {
			size *= 2;
			char *bigger = realloc(buf, size);
			CHECK(bigger, "realloc");
			buf = bigger;
		}
		ssize_t n = read(fd, buf + len, 4096);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || (n < 0 && errno == EIO))
			break;
		CHECK(n > 0, "read: %s", strerror(errno));
		len += (size_t)n;
	}
	buf[len] = 0;
	return buf;
}

static int wait_child(pid_t pid)
{
	int status;
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void exec_top(const char *const *args)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	char binary[512];
	snprintf(binary, sizeof(binary), "%s/ringserve-top", test_build_dir());
	const char *argv[16] = {binary};
	int argc = 1;
	for (int i = 0; args[i] && argc < 15; i++)
		argv[argc++] = args[i];
	argv[argc] = NULL;
	execv(binary, (char *const *)argv);
	fprintf(stderr, "exec %s: %s\n", binary, strerror(errno));
	_exit(127);
}

/* Run ringserve-top with args, stdout to a pipe; return its output. */
static char *run_top_plain(const char *const *args)
{
	int out[2];
	CHECK(pipe(out) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		close(out[0]);
		close(out[1]);
		exec_top(args);
	}
	close(out[1]);
	char *text = read_until_eof(out[0], now_ms() + 10000);
	close(out[0]);
	int status = wait_child(pid);
	CHECK(status == 0, "ringserve-top exited with %d:\n%s", status, text);
	return text;
}

int main(void)
{
	struct test_daemon daemon;
	char delay[16], batch[16];
	snprintf(delay, sizeof(delay), "%d", STEP_US);
	snprintf(batch, sizeof(batch), "%d", BATCH);
	const char *args[] = {"--engine", "null",	 "--null-delay-us",
			      delay,	  "--max-batch", batch,
			      "--policy", "dlpm",	 NULL};
	test_daemon_start(&daemon, args);

	struct rs_connection *alpha, *beta;
	struct rs_connect_options alpha_options = {.tenant = "alpha"};
	struct rs_connect_options beta_options = {.tenant = "beta"};
	CHECK(rs_connect(daemon.socket_path, &alpha_options, &alpha) == 0, "connect alpha");
	CHECK(rs_connect(daemon.socket_path, &beta_options, &beta) == 0, "connect beta");

	/* One short request each, to its end. */
	struct rs_connection *conns[2] = {alpha, beta};
	for (int c = 0; c < 2; c++) {
		int request = submit(conns[c], 1000u + (uint32_t)c, SHORT_TOKENS);
		struct rs_completion done;
		int n = rs_wait(conns[c], &done, 1, 5000);
		CHECK(n == 1 && done.status == 0 && done.output_len == SHORT_TOKENS,
		      "short request: %d, status %d", n, n == 1 ? done.status : 0);
		CHECK(rs_release(conns[c], request) == 0, "release");
	}
	/* Then the long ones. */
	for (int i = 0; i < ALPHA_LONG; i++)
		submit(alpha, 2000u + (uint32_t)i, LONG_TOKENS);
	for (int i = 0; i < BETA_LONG; i++)
		submit(beta, 3000u + (uint32_t)i, LONG_TOKENS);

	/* The snapshot through a connection, until an update shows them all. */
	struct rs_stats stats;
	struct rs_stats_tenant tenants[RS_STATS_MAX_TENANTS];
	uint64_t deadline = now_ms() + 5000;
	const struct rs_stats_tenant *a = NULL, *b = NULL;
	for (;;) {
		int n = rs_stats_snapshot(alpha, &stats, tenants, RS_STATS_MAX_TENANTS);
		CHECK(n >= 0, "rs_stats_snapshot: %s", strerror(-n));
		a = find(tenants, n, "alpha");
		b = find(tenants, n, "beta");
		if (tenant_settled(a, ALPHA_LONG) && tenant_settled(b, BETA_LONG) &&
		    stats.requests_running == BATCH)
			break;
		CHECK(now_ms() < deadline,
		      "the statistics never showed what was submitted "
		      "(alpha %s, beta %s, running %u)",
		      a ? "present" : "missing", b ? "present" : "missing", stats.requests_running);
		poll(NULL, 0, 5); /* updates come every 100 ms */
	}
	CHECK(stats.clients_connected == 2 && stats.tenants_in_use == 2 && stats.n_tenants == 2,
	      "clients %u, tenants %u, records %u", stats.clients_connected, stats.tenants_in_use,
	      stats.n_tenants);
	CHECK(stats.requests_waiting == ALPHA_LONG + BETA_LONG - BATCH, "waiting %u",
	      stats.requests_waiting);
	CHECK(stats.requests_completed == 2 && stats.requests_failed == 0, "completed %llu",
	      (unsigned long long)stats.requests_completed);
	CHECK(strcmp(stats.policy, "dlpm") == 0 && stats.prefix_cache == 1, "policy %s",
	      stats.policy);
	CHECK(stats.daemon_state == RS_STATS_RUNNING && stats.daemon_pid == daemon.pid,
	      "state %u, pid %d", stats.daemon_state, stats.daemon_pid);
	CHECK(stats.kv_blocks_total > 0 && stats.kv_blocks_used > 0 &&
		  stats.kv_blocks_used <= stats.kv_blocks_total,
	      "kv %u/%u", stats.kv_blocks_used, stats.kv_blocks_total);
	CHECK(stats.steps > 0 && stats.prompt_tokens >= 2 * PROMPT, "steps %llu",
	      (unsigned long long)stats.steps);
	for (const struct rs_stats_tenant *t = a; t; t = t == a ? b : NULL) {
		CHECK(t->ttft_samples == 1 && t->latency_samples == 1, "%s: samples %u %u", t->name,
		      t->ttft_samples, t->latency_samples);
		/* The first token needs a step, the last SHORT_TOKENS of them. */
		CHECK(t->ttft_p50_ms >= STEP_US / 1000.0 * 0.9 &&
			  t->latency_p50_ms >= SHORT_TOKENS * STEP_US / 1000.0 * 0.9 &&
			  t->ttft_p99_ms == t->ttft_p50_ms,
		      "%s: ttft %.3f ms, latency %.3f ms", t->name, t->ttft_p50_ms,
		      t->latency_p50_ms);
		CHECK(t->connections == 1 && t->weight == 1.0 && t->requests_failed == 0,
		      "%s: connections %u, weight %g", t->name, t->connections, t->weight);
	}

	/* A reader that is not a client: the same figures, and it is not counted. */
	struct rs_stats_reader *reader;
	CHECK(rs_stats_open(daemon.socket_path, &reader) == 0, "rs_stats_open");
	struct rs_stats read_stats;
	int n = rs_stats_read(reader, &read_stats, tenants, RS_STATS_MAX_TENANTS);
	CHECK(n == 2 && read_stats.sequence >= stats.sequence && read_stats.clients_connected == 2,
	      "reader: %d records, sequence %llu (connection saw %llu)", n,
	      (unsigned long long)read_stats.sequence, (unsigned long long)stats.sequence);
	CHECK(rs_stats_read(reader, &read_stats, NULL, 0) == 0, "no tenant records asked");
	CHECK(rs_stats_read(reader, NULL, NULL, 0) == -EINVAL, "stats NULL");

	/* ringserve-top in a terminal, a few frames. */
	int master;
	struct winsize size = {.ws_row = 40, .ws_col = 220};
	pid_t pid = forkpty(&master, NULL, NULL, &size);
	CHECK(pid >= 0, "forkpty: %s", strerror(errno));
	if (pid == 0) {
		const char *top_args[] = {"--socket", daemon.socket_path, "-d", "100", "-n", "3",
					  NULL};
		exec_top(top_args);
	}
	char *screen = read_until_eof(master, now_ms() + 10000);
	close(master);
	int status = wait_child(pid);
	CHECK(status == 0, "ringserve-top (terminal) exited with %d:\n%s", status, screen);
	int frames = 0;
	char *last = NULL;
	for (char *p = strstr(screen, "\x1b[H"); p; p = strstr(p + 1, "\x1b[H")) {
		frames++;
		last = p;
	}
	CHECK(frames >= 3 && strstr(screen, "\x1b[7m"), "%d frames drawn", frames);
	strip_escapes(last);
	struct table table;
	parse_table(last, &table);
	CHECK(table.n_rows == 2, "%d rows on the screen:\n%s", table.n_rows, last);
	check_row(&table, "alpha", ALPHA_LONG);
	check_row(&table, "beta", BETA_LONG);
	CHECK(strstr(table.global, "policy dlpm") && strstr(table.global, "clients 2"),
	      "screen header:\n%s", table.global);
	/* Sorted by service, the default: larger first. */
	CHECK(number(&table, table.rows[0].name, "SERVICE") >=
		  number(&table, table.rows[1].name, "SERVICE"),
	      "not sorted by service");
	free(screen);

	/* --once: one plain snapshot. */
	const char *once_args[] = {"--socket", daemon.socket_path, "--once", NULL};
	char *text = run_top_plain(once_args);
	CHECK(!strchr(text, '\x1b'), "escapes in --once output");
	parse_table(text, &table);
	CHECK(table.n_rows == 2, "%d rows:\n%s", table.n_rows, text);
	check_row(&table, "alpha", ALPHA_LONG);
	check_row(&table, "beta", BETA_LONG);
	CHECK(strstr(table.global, "running") && strstr(table.global, "tenants 2"), "header:\n%s",
	      table.global);
	free(text);

	/* --tenant, sorted by name. */
	const char *one_args[] = {
	    "--socket", daemon.socket_path, "--once", "--tenant", "beta", "-s", "name", NULL};
	text = run_top_plain(one_args);
	parse_table(text, &table);
	CHECK(table.n_rows == 1 && strcmp(table.rows[0].name, "beta") == 0, "--tenant beta:\n%s",
	      text);
	check_row(&table, "beta", BETA_LONG);
	free(text);

	/* Closing the connections ends every long request (as failed); the reader sees it. */
	rs_close(alpha);
	rs_close(beta);
	deadline = now_ms() + 5000;
	for (;;) {
		n = rs_stats_read(reader, &read_stats, tenants, RS_STATS_MAX_TENANTS);
		CHECK(n >= 0, "rs_stats_read: %s", strerror(-n));
		a = find(tenants, n, "alpha");
		b = find(tenants, n, "beta");
		if (read_stats.clients_connected == 0 && a && b && a->inflight == 0 &&
		    b->inflight == 0 && a->requests_failed == ALPHA_LONG &&
		    b->requests_failed == BETA_LONG)
			break;
		CHECK(now_ms() < deadline, "the cancelled requests never showed");
		poll(NULL, 0, 5);
	}
	CHECK(read_stats.requests_failed == ALPHA_LONG + BETA_LONG &&
		  read_stats.requests_running == 0 && read_stats.requests_waiting == 0,
	      "failed %llu", (unsigned long long)read_stats.requests_failed);

	/* The last update outlives the daemon. */
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	n = rs_stats_read(reader, &read_stats, tenants, RS_STATS_MAX_TENANTS);
	CHECK(n == 2 && read_stats.daemon_state == RS_STATS_STOPPED, "after exit: %d, state %u", n,
	      read_stats.daemon_state);
	rs_stats_close(reader);
	return T_EXIT_PASS;
}
