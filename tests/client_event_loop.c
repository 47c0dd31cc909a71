/* The event-loop descriptor (rs_event_fd, rs_event_arm) in an epoll loop:
 *  1. docs/client-api.md's example loop, verbatim, serves 3,000 short streamed requests
 *     (8 in flight) and sleeps in epoll whenever it has nothing to do: every token and
 *     completion arrives (a lost wake-up shows as a loop that times out);
 *  2. armed for completions only, the loop is not woken by tokens: no more wake-ups than
 *     completions, though each request streams 40 tokens;
 *  3. rs_wait_output sleeping on the futex while the event descriptor is armed leaves it
 *     armed: the descriptor is readable afterwards for the news rs_wait_output saw;
 *  4. four connections in one epoll set, 1,600 requests: none is lost. */
#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "client-lib/connection.h"
#include "client-lib/ringserve.h"
#include "shm/clock.h"
#include "tests/harness/harness.h"

#define VOCAB 1000

/* The example's hooks: what a real program would do with tokens and completions. */
static uint64_t tokens_checked, completions_checked;

static void use_token(uint64_t user_data, uint32_t index, uint32_t token)
{
	unsigned prompt[3] = {(unsigned)user_data % VOCAB, 7, 11};
	CHECK(token == test_null_token(prompt, 3, index, VOCAB), "request %llu token %u",
	      (unsigned long long)user_data, index);
	tokens_checked++;
}

static void use_completion(const struct rs_completion *done, uint32_t streamed)
{
	CHECK(done->status == 0 && done->output_len == 4 && streamed == 4,
	      "request %llu: status %d, %u tokens, %u streamed",
	      (unsigned long long)done->user_data, done->status, done->output_len, streamed);
	completions_checked++;
}

static int submit_next(struct rs_connection *conn, uint64_t n)
{
	uint32_t prompt[3] = {(uint32_t)(n % VOCAB), 7, 11};
	struct rs_generate_params params = {
	    .prompt = prompt, .prompt_len = 3, .max_new_tokens = 4, .user_data = n};
	return rs_submit(conn, &params);
}

/* --- the example of docs/client-api.md ("Event loops"), verbatim ---------------------- */
#define WINDOW 8 /* requests in flight */

struct stream {
	int request;
	uint64_t user_data;
	uint32_t shown; /* tokens handed to use_token */
};

/* Stream the new tokens of a request. */
static void show_tokens(struct rs_connection *conn, struct stream *s)
{
	const uint32_t *tokens;
	int count = rs_output(conn, s->request, &tokens);
	for (; count > 0 && s->shown < (uint32_t)count; s->shown++)
		use_token(s->user_data, s->shown, tokens[s->shown]);
}

/* Serve `total` requests, WINDOW at a time, streaming their tokens; sleep in epoll (with
 * other descriptors of the program, if it has any) when there is nothing to do. Returns 0,
 * or a negative errno (-ECONNRESET: the daemon died; -ETIMEDOUT: nothing for timeout_ms). */
static int event_loop(struct rs_connection *conn, uint64_t total, int timeout_ms)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return -errno;
	int fd = rs_event_fd(conn); /* readable on news, and when the daemon dies */
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
	if (fd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		close(ep);
		return fd < 0 ? fd : -errno;
	}
	struct stream streams[WINDOW];
	unsigned running = 0;
	uint64_t submitted = 0, finished = 0;
	int ret = 0;
	while (finished < total) {
		while (submitted < total && running < WINDOW) {
			int request = submit_next(conn, submitted);
			if (request == -EAGAIN)
				break; /* no room: completions first */
			if (request < 0) {
				ret = request;
				goto out;
			}
			streams[running++] = (struct stream){request, submitted++, 0};
		}
		for (unsigned i = 0; i < running; i++)
			show_tokens(conn, &streams[i]);
		struct rs_completion done[WINDOW];
		int n = rs_poll(conn, done, WINDOW);
		if (n < 0) {
			ret = n;
			goto out;
		}
		for (int c = 0; c < n; c++) {
			unsigned i = 0;
			while (streams[i].request != done[c].request)
				i++;
			show_tokens(conn, &streams[i]); /* the last ones */
			use_completion(&done[c], streams[i].shown);
			rs_release(conn, done[c].request);
			streams[i] = streams[--running];
			finished++;
		}
		if (n > 0)
			continue; /* slots freed: submit first */
		/* Sleep only when nothing is waiting; the descriptor then wakes us. */
		int ready = rs_event_arm(conn, RS_EVENT_COMPLETION | RS_EVENT_OUTPUT);
		if (ready < 0) {
			ret = ready;
			goto out;
		}
		if (ready == 0) {
			n = epoll_wait(ep, &ev, 1, timeout_ms);
			if (n == 0 || (n < 0 && errno != EINTR)) {
				ret = n == 0 ? -ETIMEDOUT : -errno;
				goto out;
			}
		}
	}
out:
	close(ep); /* the event descriptor stays the connection's */
	return ret;
}
/* --- end of the example ------------------------------------------------------------ */

static int epoll_on(int fd)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	CHECK(ep >= 0, "epoll_create1");
	struct epoll_event ev = {.events = EPOLLIN};
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl");
	return ep;
}

/* 2: completions only: 12 requests of 10, 20, ... 120 tokens, which end one by one. */
static void completions_only(struct rs_connection *conn)
{
	int ep = epoll_on(rs_event_fd(conn));
	unsigned prompt[2] = {3, 5};
	struct rs_generate_params params = {.prompt = prompt, .prompt_len = 2};
	enum { REQUESTS = 12 };
	for (unsigned i = 0; i < REQUESTS; i++) {
		params.max_new_tokens = 10 * (i + 1);
		params.user_data = i;
		CHECK(rs_submit(conn, &params) >= 0, "submit");
	}
	unsigned completed = 0, wakeups = 0, sleeps = 0;
	while (completed < REQUESTS) {
		struct rs_completion done[REQUESTS];
		int n = rs_poll(conn, done, REQUESTS);
		CHECK(n >= 0, "rs_poll: %d", n);
		for (int c = 0; c < n; c++) {
			CHECK(done[c].status == 0 &&
				  done[c].output_len == 10 * (done[c].user_data + 1),
			      "completion");
			rs_release(conn, done[c].request);
		}
		completed += (unsigned)n;
		int ready = rs_event_arm(conn, RS_EVENT_COMPLETION);
		CHECK(ready >= 0 && !(ready & RS_EVENT_OUTPUT), "rs_event_arm: %d", ready);
		if (ready || completed == REQUESTS)
			continue;
		sleeps++;
		struct epoll_event ev;
		n = epoll_wait(ep, &ev, 1, 10000);
		CHECK(n == 1, "epoll_wait: %d (a lost wake-up?)", n);
		wakeups++;
	}
	fprintf(stderr,
		"completions only: %u requests of 10 to 120 tokens, %u sleeps, %u wake-ups\n",
		REQUESTS, sleeps, wakeups);
	CHECK(wakeups <= REQUESTS, "%u wake-ups for %u completions: tokens woke the loop", wakeups,
	      REQUESTS);
	close(ep);
}

/* 3: rs_wait_output (futex) inside an armed epoll loop. */
static void futex_alongside(struct rs_connection *conn)
{
	int ep = epoll_on(rs_event_fd(conn));
	unsigned prompt[2] = {9, 9};
	struct rs_generate_params params = {.prompt = prompt, .prompt_len = 2, .max_new_tokens = 3};
	unsigned checked = 0;
	for (unsigned round = 0; round < 50; round++) {
		int request = rs_submit(conn, &params);
		CHECK(request >= 0, "submit");
		int ready = rs_event_arm(conn, RS_EVENT_COMPLETION | RS_EVENT_OUTPUT);
		CHECK(ready >= 0, "arm: %d", ready);
		if (ready == 0) {
			/* Armed; the futex wait keeps it so, and the news it wakes for also
			 * makes the descriptor readable. */
			int count = rs_wait_output(conn, request, 0, 5000);
			CHECK(count > 0 || count == -ENODATA, "rs_wait_output: %d", count);
			struct epoll_event ev;
			CHECK(epoll_wait(ep, &ev, 1, 5000) == 1,
			      "descriptor not readable (round %u)", round);
			checked++;
		}
		/* Finish the request through the loop. */
		for (;;) {
			struct rs_completion done;
			int n = rs_poll(conn, &done, 1);
			CHECK(n >= 0, "poll");
			if (n == 1) {
				CHECK(done.request == request && done.status == 0, "completion");
				rs_release(conn, request);
				break;
			}
			const uint32_t *tokens;
			rs_output(conn, request, &tokens);
			ready = rs_event_arm(conn, RS_EVENT_COMPLETION | RS_EVENT_OUTPUT);
			CHECK(ready >= 0, "arm: %d", ready);
			struct epoll_event ev;
			if (ready == 0)
				CHECK(epoll_wait(ep, &ev, 1, 5000) == 1, "lost wake-up");
		}
	}
	fprintf(stderr, "futex alongside: %u of 50 rounds slept in rs_wait_output while armed\n",
		checked);
	CHECK(checked > 0, "never armed before the request's first token");
	close(ep);
}

/* 4: one epoll set over several connections (the daemon writes their eventfds in one
 * submission when they wake together): each keeps 2 requests in flight; the loop sleeps
 * only when every connection's rs_event_arm said 0. */
static void many_connections(const char *socket_path)
{
	enum { CONNS = 4, PER_CONN = 400, DEPTH = 2 };
	struct rs_connect_options options = {.spin_us = UINT32_MAX};
	struct rs_connection *conns[CONNS];
	unsigned submitted[CONNS] = {0}, finished[CONNS] = {0}, inflight[CONNS] = {0};
	int ep = epoll_create1(EPOLL_CLOEXEC);
	CHECK(ep >= 0, "epoll_create1");
	for (int c = 0; c < CONNS; c++) {
		CHECK(rs_connect(socket_path, &options, &conns[c]) == 0, "connect");
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)c};
		int fd = rs_event_fd(conns[c]);
		CHECK(fd >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "event fd");
	}
	unsigned total = 0, sleeps = 0;
	while (total < CONNS * PER_CONN) {
		bool news = false;
		for (int c = 0; c < CONNS; c++) {
			while (submitted[c] < PER_CONN && inflight[c] < DEPTH) {
				CHECK(submit_next(conns[c], submitted[c]) >= 0, "submit");
				submitted[c]++;
				inflight[c]++;
			}
			struct rs_completion done[DEPTH];
			int n = rs_poll(conns[c], done, DEPTH);
			CHECK(n >= 0, "poll");
			for (int i = 0; i < n; i++) {
				CHECK(done[i].status == 0 && done[i].output_len == 4, "completion");
				rs_release(conns[c], done[i].request);
			}
			finished[c] += (unsigned)n;
			inflight[c] -= (unsigned)n;
			total += (unsigned)n;
			if (n > 0)
				news = true;
		}
		if (news)
			continue;
		int ready = 0;
		for (int c = 0; c < CONNS && !ready; c++)
			if (finished[c] < PER_CONN)
				CHECK((ready = rs_event_arm(conns[c], RS_EVENT_COMPLETION)) >= 0,
				      "arm");
		if (ready)
			continue;
		struct epoll_event evs[CONNS];
		CHECK(epoll_wait(ep, evs, CONNS, 10000) >= 1, "lost wake-up (%u done)", total);
		sleeps++;
	}
	fprintf(stderr, "%d connections in one epoll set: %u requests, %u sleeps\n", CONNS, total,
		sleeps);
	close(ep);
	for (int c = 0; c < CONNS; c++)
		rs_close(conns[c]);
}

/* The example in docs/client-api.md is the one above, byte for byte (when the sources are
 * at hand: the test runs from the repository's root). */
static void check_documented_example(void)
{
	static char source[65536], doc[262144];
	FILE *f = fopen("tests/client_event_loop.c", "r");
	FILE *d = fopen("docs/client-api.md", "r");
	if (!f || !d) {
		fprintf(stderr, "sources not found: the documented example is not compared\n");
		if (f)
			fclose(f);
		if (d)
			fclose(d);
		return;
	}
	size_t n = fread(source, 1, sizeof(source) - 1, f);
	source[n] = 0;
	n = fread(doc, 1, sizeof(doc) - 1, d);
	doc[n] = 0;
	fclose(f);
	fclose(d);
	char *begin = strstr(source, "/* --- the example of docs/client-api.md");
	char *end = strstr(source, "/* --- end of the example");
	CHECK(begin && end && (begin = strchr(begin, '\n')) && begin < end, "example markers");
	*end = 0;
	CHECK(strstr(doc, begin + 1), "docs/client-api.md's example differs from this test's");
}

int main(void)
{
	check_documented_example();
	struct test_daemon daemon;
	/* The daemon spins only 20 us before it sleeps, so both sides sleep and wake all
	 * the time; 1 ms a step gives the client time to fall asleep between tokens. */
	const char *args[] = {"--null-vocab",	 "1000", "--spin-us", "20",
			      "--null-delay-us", "200",	 NULL};
	test_daemon_start(&daemon, args);
	struct rs_connect_options options = {.spin_us = UINT32_MAX}; /* futex waits sleep */
	struct rs_connection *conn;
	CHECK(rs_connect(daemon.socket_path, &options, &conn) == 0, "connect");
	CHECK(rs_event_arm(conn, RS_EVENT_COMPLETION) == -EINVAL, "arm before rs_event_fd");
	/* A daemon from before event descriptors says nothing in its features. */
	uint32_t features = conn->hdr.features;
	CHECK(features & RS_FEATURE_EVENT_FD, "the daemon offers event descriptors");
	conn->hdr.features = 0;
	CHECK(rs_event_fd(conn) == -ENOTSUP, "an older daemon");
	conn->hdr.features = features;
	int fd = rs_event_fd(conn);
	CHECK(fd >= 0, "rs_event_fd: %s", strerror(-fd));
	CHECK(rs_event_fd(conn) == fd, "a second call gives the same descriptor");
	CHECK(rs_event_arm(conn, 0) == -EINVAL && rs_event_arm(conn, 1u << 5) == -EINVAL,
	      "bad event masks");

	uint64_t start = rs_now_ns();
	int ret = event_loop(conn, 3000, 10000);
	CHECK(ret == 0, "event loop: %s", strerror(-ret));
	fprintf(stderr, "example loop: 3000 requests, %llu tokens checked in %.2f s\n",
		(unsigned long long)tokens_checked, (double)(rs_now_ns() - start) / 1e9);
	CHECK(completions_checked == 3000 && tokens_checked == 3000 * 4, "%llu completions",
	      (unsigned long long)completions_checked);

	completions_only(conn);
	futex_alongside(conn);
	many_connections(daemon.socket_path);

	/* The daemon's figures, from an update after all of the above. */
	uint64_t now = rs_now_ns();
	struct rs_stats stats;
	do
		CHECK(rs_stats_snapshot(conn, &stats, NULL, 0) >= 0 &&
			  rs_now_ns() - now < 5000000000ull,
		      "no statistics update");
	while (stats.updated_ns <= now && sched_yield() == 0);
	fprintf(stderr, "daemon: %llu eventfd writes, %llu futex wakes\n",
		(unsigned long long)stats.client_event_writes,
		(unsigned long long)stats.client_futex_wakes);
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	return T_EXIT_PASS;
}
