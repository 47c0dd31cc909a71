/* The tenant configuration file (--config): the parser on good and malformed text, the
 * daemon refusing to start on a malformed file, tenant names closed to our uid
 * (-EPERM), per-tenant connection (-EUSERS) and in-flight (-EAGAIN) limits, and SIGHUP:
 * a good file applies (weights, allowed uids), a malformed one keeps the old rules. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "daemon/tenant_config.h"
#include "tests/harness/harness.h"

/* ---- the parser ------------------------------------------------------------------------ */

static struct rs_tenant_config *parse_ok(const char *text)
{
	struct rs_tenant_config *config;
	struct rs_tenant_config_error error;
	int ret = rs_tenant_config_parse(text, strlen(text), &config, &error);
	CHECK(ret == 0, "parse '%s': %d at %u:%u: %s", text, ret, error.line, error.column,
	      error.message);
	return config;
}

/* Malformed text: refused at line:column, with a message containing `why`. */
static void parse_bad(const char *text, size_t len, uint32_t line, uint32_t column, const char *why)
{
	struct rs_tenant_config *config = NULL;
	struct rs_tenant_config_error error;
	int ret = rs_tenant_config_parse(text, len, &config, &error);
	CHECK(ret == -EINVAL && config == NULL, "'%s' parsed (%d)", text, ret);
	CHECK(error.line == line && error.column == column, "'%s': at %u:%u, expected %u:%u (%s)",
	      text, error.line, error.column, line, column, error.message);
	CHECK(strstr(error.message, why), "'%s': message '%s' lacks '%s'", text, error.message,
	      why);
}

#define BAD(text, line, column, why) parse_bad(text, strlen(text), line, column, why)

static void test_parser(void)
{
	struct rs_tenant_config *config =
	    parse_ok("# tenants of the test\n"
		     "\n"
		     "default weight=1.5 max_inflight=128   # the rest\n"
		     "tenant web weight=2 max_connections=4 max_inflight=64 max_kv_blocks=4096 "
		     "uids=1000,1001\r\n"
		     "\ttenant  batch\tweight=0.25\n"
		     "tenant a.b@c:d+e-f_1 uids=0\n"
		     "tenant last max_connections=4294967295"); /* no final newline */
	CHECK(config->n_rules == 4, "%u rules", config->n_rules);
	const struct rs_tenant_rule *web = rs_tenant_config_lookup(config, "web");
	CHECK(strcmp(web->name, "web") == 0 && web->weight == 2 && web->max_connections == 4 &&
		  web->max_inflight == 64 && web->max_kv_blocks == 4096 && web->n_uids == 2 &&
		  web->uids[0] == 1000 && web->uids[1] == 1001 && web->line == 4,
	      "web");
	CHECK(rs_tenant_rule_allows(web, 1001) && !rs_tenant_rule_allows(web, 1002), "web's uids");
	const struct rs_tenant_rule *batch = rs_tenant_config_lookup(config, "batch");
	CHECK(batch->weight == 0.25 && batch->max_connections == 0 && batch->max_inflight == 0 &&
		  batch->n_uids == 0 && rs_tenant_rule_allows(batch, 12345),
	      "batch: unset keys mean no limit, any uid");
	CHECK(rs_tenant_config_lookup(config, "a.b@c:d+e-f_1")->n_uids == 1, "punctuated name");
	CHECK(rs_tenant_config_lookup(config, "last")->max_connections == UINT32_MAX, "last");
	const struct rs_tenant_rule *other = rs_tenant_config_lookup(config, "unlisted");
	CHECK(other == &config->fallback && other->weight == 1.5 && other->max_inflight == 128 &&
		  other->line == 3,
	      "unlisted names get the default line");
	rs_tenant_config_free(config);

	config = parse_ok("");
	CHECK(config->n_rules == 0 && config->fallback.weight == 1 && config->fallback.line == 0,
	      "empty file: built-in default");
	rs_tenant_config_free(config);
	config = parse_ok("   # only comments\n#\n\n");
	rs_tenant_config_free(config);
	config = parse_ok("tenant x weight=1e3\ntenant y weight=.5 # c\n");
	CHECK(rs_tenant_config_lookup(config, "x")->weight == 1000, "1e3");
	rs_tenant_config_free(config);

	BAD("tenants a\n", 1, 1, "unknown directive 'tenants'");
	BAD("weight=2\n", 1, 1, "unknown directive");
	BAD("# c\n  tenant\n", 2, 9, "missing its name");
	BAD("tenant a\ntenant b wieght=3\n", 2, 10, "unknown key 'wieght'");
	BAD("tenant a weight\n", 1, 10, "expected KEY=VALUE");
	BAD("tenant a weight=\n", 1, 17, "weight: missing value");
	BAD("tenant a weight=0\n", 1, 17, "weight: '0'");
	BAD("tenant a weight=-1\n", 1, 17, "weight");
	BAD("tenant a weight=nan\n", 1, 17, "weight");
	BAD("tenant a weight=inf\n", 1, 17, "weight");
	BAD("tenant a weight=0x10\n", 1, 17, "weight");
	BAD("tenant a weight=2x\n", 1, 17, "weight");
	BAD("tenant a weight=1e7\n", 1, 17, "weight");
	BAD("tenant a weight=1 weight=2\n", 1, 19, "weight given twice");
	BAD("tenant a max_connections=0\n", 1, 26, "max_connections: '0'");
	BAD("tenant a max_inflight=4294967296\n", 1, 23, "max_inflight");
	BAD("tenant a max_inflight=+4\n", 1, 23, "max_inflight");
	BAD("tenant a max_kv_blocks=12ab\n", 1, 24, "max_kv_blocks");
	BAD("tenant a uids=\n", 1, 15, "uids: missing value");
	BAD("tenant a uids=1,,2\n", 1, 17, "uids: expected a uid");
	BAD("tenant a uids=1,2,\n", 1, 19, "uids: expected a uid");
	BAD("tenant a uids=1,x\n", 1, 17, "uids: 'x' is not a uid");
	BAD("tenant a uids=4294967295\n", 1, 15, "not a uid");
	BAD("tenant bad/name\n", 1, 11, "bad tenant name");
	BAD("tenant 0123456789012345678901234567890123456789012345678901234567890123\n", 1, 8,
	    "longer than 63");
	BAD("tenant a\ntenant b\ntenant a weight=2\n", 3, 8, "already defined on line 1");
	BAD("default\ndefault weight=2\n", 2, 1, "a second default line (the first is on line 1)");
	BAD("tenant a\x01\n", 1, 9, "unexpected byte 0x01");
	BAD("tenant a # \x1b[31m\n", 1, 12, "unexpected byte 0x1b");
	BAD("tenant a\rweight=2\n", 1, 9, "unexpected byte 0x0d");
	parse_bad("tenant a\0\n", 10, 1, 9, "unexpected byte 0x00");
	char uids[1024] = "tenant many uids=";
	for (int i = 0; i <= RS_TENANT_CONFIG_MAX_UIDS; i++)
		snprintf(uids + strlen(uids), sizeof(uids) - strlen(uids), "%s%d", i ? "," : "", i);
	parse_bad(uids, strlen(uids), 1, 18 + 2 * 10 + 3 * 54, "more than 64 uids");
}

/* ---- a daemon whose messages we read ----------------------------------------------------- */

struct daemon {
	pid_t pid;
	int log_fd; /* its stderr */
	char log[65536];
	size_t log_len;
	char dir[64];
	char socket_path[128];
	char config_path[128];
};

static void write_file(const char *path, const char *text)
{
	/* Whole or not at all: the daemon may read it at any time. */
	char tmp[160];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	CHECK(fd >= 0, "open %s: %s", tmp, strerror(errno));
	CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write %s", tmp);
	close(fd);
	CHECK(rename(tmp, path) == 0, "rename: %s", strerror(errno));
}

/* Start ringserved with --config (when config_text is not NULL) and its stderr in a pipe.
 * Returns once it listens (true), or once it exited without listening (false, with its
 * exit status in *status). */
static bool daemon_start(struct daemon *d, const char *config_text, const char *const *extra,
			 int *status)
{
	memset(d, 0, sizeof(*d));
	strcpy(d->dir, "/tmp/ringserve-config-XXXXXX");
	CHECK(mkdtemp(d->dir), "mkdtemp");
	snprintf(d->socket_path, sizeof(d->socket_path), "%s/sock", d->dir);
	snprintf(d->config_path, sizeof(d->config_path), "%s/tenants.conf", d->dir);
	if (config_text)
		write_file(d->config_path, config_text);
	int ready[2], log[2];
	CHECK(pipe2(ready, O_CLOEXEC) == 0 && pipe2(log, O_CLOEXEC) == 0, "pipe");
	char binary[512], ready_arg[16];
	snprintf(binary, sizeof(binary), "%s/ringserved", test_build_dir());
	snprintf(ready_arg, sizeof(ready_arg), "%d", ready[1]);
	const char *argv[32] = {binary, "--socket", d->socket_path, "--ready-fd", ready_arg};
	int argc = 5;
	if (config_text) {
		argv[argc++] = "--config";
		argv[argc++] = d->config_path;
	}
	for (int i = 0; extra && extra[i] && argc < 30; i++)
		argv[argc++] = extra[i];
	d->pid = fork();
	CHECK(d->pid >= 0, "fork");
	if (d->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(log[1], 2);
		fcntl(ready[1], F_SETFD, 0); /* --ready-fd: inherited */
		execv(binary, (char *const *)argv);
		_exit(127);
	}
	close(ready[1]);
	close(log[1]);
	d->log_fd = log[0];
	char byte;
	ssize_t n;
	do
		n = read(ready[0], &byte, 1);
	while (n < 0 && errno == EINTR);
	close(ready[0]);
	if (n == 1)
		return true;
	CHECK(waitpid(d->pid, status, 0) == d->pid, "waitpid");
	/* Everything it said is in the pipe now. */
	while ((n = read(d->log_fd, d->log + d->log_len, sizeof(d->log) - 1 - d->log_len)) > 0)
		d->log_len += (size_t)n;
	d->log[d->log_len] = '\0';
	close(d->log_fd);
	return false;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ll + ts.tv_nsec / 1000000;
}

/* Read the daemon's stderr until a line containing `text` appears after offset *from
 * (then *from moves past it), for at most 10 s. Returns the log from the old *from. */
static const char *wait_log(struct daemon *d, size_t *from, const char *text)
{
	long long deadline = now_ms() + 10000;
	for (;;) {
		d->log[d->log_len] = '\0';
		char *found = strstr(d->log + *from, text);
		if (found) {
			const char *start = d->log + *from;
			char *eol = strchr(found, '\n');
			*from = eol ? (size_t)(eol + 1 - d->log) : d->log_len;
			return start;
		}
		long long left = deadline - now_ms();
		CHECK(left > 0, "no '%s' in the daemon's log:\n%s", text, d->log);
		struct pollfd pfd = {.fd = d->log_fd, .events = POLLIN};
		if (poll(&pfd, 1, (int)left) <= 0)
			continue;
		CHECK(d->log_len < sizeof(d->log) - 1, "log full");
		ssize_t n = read(d->log_fd, d->log + d->log_len, sizeof(d->log) - 1 - d->log_len);
		CHECK(n > 0, "the daemon's stderr closed:\n%s", d->log);
		d->log_len += (size_t)n;
	}
}

static int daemon_stop(struct daemon *d)
{
	int status;
	kill(d->pid, SIGTERM);
	CHECK(waitpid(d->pid, &status, 0) == d->pid, "waitpid");
	close(d->log_fd);
	unlink(d->config_path);
	rmdir(d->dir);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int connect_as(struct daemon *d, const char *tenant, struct rs_connection **conn)
{
	struct rs_connect_options options = {.tenant = tenant};
	return rs_connect(d->socket_path, &options, conn);
}

/* ---- scenarios ------------------------------------------------------------------------------ */

static void test_refuses_to_start(void)
{
	struct daemon d;
	int status = 0;
	CHECK(!daemon_start(&d, "default weight=1\ntenant a max_inflight=x\n", NULL, &status),
	      "started with a malformed file");
	/* 2: what ringserved exits with for a bad option (127: no ringserved to run). */
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 2, "exit status %#x", status);
	char where[200];
	snprintf(where, sizeof(where), "%s:2:23: max_inflight", d.config_path);
	CHECK(strstr(d.log, where), "message lacks '%s':\n%s", where, d.log);
	unlink(d.config_path);

	/* A file that is not there. */
	const char *args[] = {"--config", "/nonexistent/tenants.conf", NULL};
	CHECK(!daemon_start(&d, NULL, args, &status), "started without its file");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 2, "exit status %#x", status);
	CHECK(strstr(d.log, "/nonexistent/tenants.conf: No such file"), "log:\n%s", d.log);
	rmdir(d.dir);
}

static void test_uids(uid_t me, uid_t other)
{
	char text[256];
	snprintf(text, sizeof(text), "tenant private uids=%u\ntenant mine uids=%u,%u\n",
		 (unsigned)other, (unsigned)other, (unsigned)me);
	struct daemon d;
	CHECK(daemon_start(&d, text, NULL, NULL), "start");
	size_t from = 0;
	struct rs_connection *conn;
	int ret = connect_as(&d, "private", &conn);
	CHECK(ret == -EPERM, "tenant closed to our uid: %d", ret);
	char message[128];
	snprintf(message, sizeof(message), "tenant 'private' is not open to uid %u", (unsigned)me);
	wait_log(&d, &from, message);
	CHECK((ret = connect_as(&d, "mine", &conn)) == 0, "tenant open to us: %d", ret);
	test_null_request(conn, (const unsigned[]){1, 2, 3}, 3, 4, 32000);
	rs_close(conn);
	CHECK((ret = connect_as(&d, "unlisted", &conn)) == 0, "unlisted tenant: %d", ret);
	rs_close(conn);
	CHECK(daemon_stop(&d) == 0, "exit status");

	/* The default line closes every name without a line of its own. */
	snprintf(text, sizeof(text), "default uids=%u\ntenant open\n", (unsigned)other);
	CHECK(daemon_start(&d, text, NULL, NULL), "start");
	CHECK(connect_as(&d, "default", &conn) == -EPERM, "default closed");
	CHECK(connect_as(&d, "open", &conn) == 0, "a listed tenant stays open");
	rs_close(conn);
	CHECK(daemon_stop(&d) == 0, "exit status");
}

static void test_connection_limit(void)
{
	struct daemon d;
	CHECK(daemon_start(&d, "tenant two max_connections=2\n", NULL, NULL), "start");
	size_t from = 0;
	struct rs_connection *a, *b, *c, *other;
	CHECK(connect_as(&d, "two", &a) == 0 && connect_as(&d, "two", &b) == 0, "two connections");
	int ret = connect_as(&d, "two", &c);
	CHECK(ret == -EUSERS, "a third connection: %d", ret);
	wait_log(&d, &from, "tenant 'two' (uid");
	CHECK(connect_as(&d, "another", &other) == 0, "another tenant is not limited");
	/* Both still serve. */
	test_null_request(a, (const unsigned[]){5, 6}, 2, 3, 32000);
	test_null_request(b, (const unsigned[]){5, 6}, 2, 3, 32000);
	/* A closed connection frees its place once the daemon has seen it go. */
	rs_close(a);
	long long deadline = now_ms() + 10000;
	while ((ret = connect_as(&d, "two", &c)) == -EUSERS && now_ms() < deadline)
		;
	CHECK(ret == 0, "reconnect after a close: %d", ret);
	rs_close(b);
	rs_close(c);
	rs_close(other);
	CHECK(daemon_stop(&d) == 0, "exit status");
}

/* A request that stays in flight (slow steps, long output) until cancelled. */
static int submit_long(struct rs_connection *conn)
{
	static const uint32_t prompt[2] = {7, 8};
	struct rs_generate_params params = {
	    .prompt = prompt, .prompt_len = 2, .max_new_tokens = 4000};
	int request = rs_submit(conn, &params);
	CHECK(request >= 0, "submit: %d", request);
	return request;
}

static void finish(struct rs_connection *conn, int request, int32_t status)
{
	struct rs_completion done;
	int n = rs_wait(conn, &done, 1, 10000);
	CHECK(n == 1, "completion: %d", n);
	CHECK(done.request == request && done.status == status,
	      "request %d: status %d, expected %d %d", done.request, done.status, request, status);
	CHECK(rs_release(conn, request) == 0, "release");
}

static void test_inflight_limit(void)
{
	struct daemon d;
	const char *args[] = {"--null-delay-us", "2000", NULL};
	CHECK(daemon_start(&d, "tenant capped max_inflight=3\n", args, NULL), "start");
	struct rs_connection *a, *b, *free_conn;
	CHECK(connect_as(&d, "capped", &a) == 0 && connect_as(&d, "capped", &b) == 0, "connect");
	CHECK(connect_as(&d, "uncapped", &free_conn) == 0, "connect");
	/* Accepted ones produce tokens: wait for each, so the daemon has counted it. */
	int ra[2], rb[2];
	for (int i = 0; i < 2; i++) {
		ra[i] = submit_long(a);
		CHECK(rs_wait_output(a, ra[i], 0, 10000) >= 1, "running");
	}
	rb[0] = submit_long(b);
	CHECK(rs_wait_output(b, rb[0], 0, 10000) >= 1, "running");
	/* The tenant's fourth, on either connection, is refused. */
	rb[1] = submit_long(b);
	finish(b, rb[1], -EAGAIN);
	int extra = submit_long(a);
	finish(a, extra, -EAGAIN);
	/* Another tenant is not. */
	int r = submit_long(free_conn);
	CHECK(rs_wait_output(free_conn, r, 0, 10000) >= 1, "another tenant runs");
	CHECK(rs_cancel(free_conn, r) == 0, "cancel");
	finish(free_conn, r, -ECANCELED);
	/* A finished request gives its place back. */
	CHECK(rs_cancel(b, rb[0]) == 0, "cancel");
	finish(b, rb[0], -ECANCELED);
	test_null_request(b, (const unsigned[]){1}, 1, 2, 32000);
	/* And a closed connection's requests give theirs back when they end. */
	rs_close(a);
	int running[3];
	long long deadline = now_ms() + 10000;
	for (int i = 0; i < 3; i++) {
		for (;;) {
			running[i] = submit_long(b);
			if (rs_wait_output(b, running[i], 0, 10000) >= 1)
				break;
			/* Refused: a's orphans have not ended yet. */
			finish(b, running[i], -EAGAIN);
			CHECK(now_ms() < deadline, "a's requests still count");
		}
	}
	for (int i = 0; i < 3; i++) {
		CHECK(rs_cancel(b, running[i]) == 0, "cancel");
		finish(b, running[i], -ECANCELED);
	}
	rs_close(b);
	rs_close(free_conn);
	CHECK(daemon_stop(&d) == 0, "exit status");
}

static void test_reload(uid_t me, uid_t other)
{
	char text[256];
	snprintf(text, sizeof(text), "tenant alpha weight=1\ntenant gated uids=%u\n",
		 (unsigned)other);
	struct daemon d;
	const char *args[] = {"--verbose", NULL};
	CHECK(daemon_start(&d, text, args, NULL), "start");
	size_t from = 0;
	struct rs_connection *alpha, *gated;
	CHECK(connect_as(&d, "alpha", &alpha) == 0, "alpha");
	CHECK(connect_as(&d, "gated", &gated) == -EPERM, "gated closed to us");

	/* A good file: alpha's weight changes under its open connection, gated opens. */
	snprintf(text, sizeof(text), "tenant alpha weight=3\ntenant gated uids=%u,%u\n",
		 (unsigned)other, (unsigned)me);
	write_file(d.config_path, text);
	kill(d.pid, SIGHUP);
	const char *said = wait_log(&d, &from, "SIGHUP: reloaded");
	char weight[96];
	snprintf(weight, sizeof(weight), "tenant 'alpha' (uid %u): weight 1 -> 3", (unsigned)me);
	CHECK(strstr(said, weight), "no '%s' in:\n%s", weight, said);
	int ret = connect_as(&d, "gated", &gated);
	CHECK(ret == 0, "gated open after the reload: %d", ret);
	test_null_request(alpha, (const unsigned[]){4, 4}, 2, 5, 32000);

	/* A malformed file: nothing changes. */
	snprintf(text, sizeof(text), "tenant alpha weight=5\ntenant gated uids=%u\nbogus\n",
		 (unsigned)other);
	write_file(d.config_path, text);
	kill(d.pid, SIGHUP);
	said = wait_log(&d, &from, "keeping the old configuration");
	char where[200];
	snprintf(where, sizeof(where), "%s:3:1: unknown directive 'bogus'", d.config_path);
	CHECK(strstr(said, where), "no '%s' in:\n%s", where, said);
	CHECK(!strstr(said, "weight 3 -> 5"), "weight changed by a bad file:\n%s", said);
	struct rs_connection *again;
	CHECK(connect_as(&d, "gated", &again) == 0, "gated still open");
	test_null_request(again, (const unsigned[]){9}, 1, 3, 32000);
	test_null_request(gated, (const unsigned[]){9}, 1, 3, 32000);
	rs_close(again);

	/* The same file again, fixed: its rules apply now (gated closes to new connections,
	 * the open one stays). */
	snprintf(text, sizeof(text), "tenant alpha weight=5\ntenant gated uids=%u\n",
		 (unsigned)other);
	write_file(d.config_path, text);
	kill(d.pid, SIGHUP);
	said = wait_log(&d, &from, "SIGHUP: reloaded");
	snprintf(weight, sizeof(weight), "tenant 'alpha' (uid %u): weight 3 -> 5", (unsigned)me);
	CHECK(strstr(said, weight), "no '%s' in:\n%s", weight, said);
	CHECK(connect_as(&d, "gated", &again) == -EPERM, "gated closed again");
	test_null_request(gated, (const unsigned[]){9}, 1, 3, 32000);
	rs_close(gated);
	rs_close(alpha);
	CHECK(daemon_stop(&d) == 0, "exit status");

	/* Without --config, SIGHUP is no reason to die. */
	CHECK(daemon_start(&d, NULL, NULL, NULL), "start");
	from = 0;
	kill(d.pid, SIGHUP);
	wait_log(&d, &from, "no --config file to reload");
	CHECK(connect_as(&d, "x", &again) == 0, "serves after SIGHUP");
	rs_close(again);
	CHECK(daemon_stop(&d) == 0, "exit status");
}

int main(void)
{
	uid_t me = getuid(), other = getuid() + 1;
	test_parser();
	test_refuses_to_start();
	test_uids(me, other);
	test_connection_limit();
	test_inflight_limit();
	test_reload(me, other);
	return T_EXIT_PASS;
}
