/* A client that has an event descriptor but busy-polls, never arming it, costs the daemon
 * no wake-up at all: over 2,000 streamed requests the daemon's statistics count no eventfd
 * write and no futex wake. Then the same counters move once the client does sleep: in
 * epoll after rs_event_arm (eventfd writes), and in rs_wait_output (futex wakes). */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "shm/clock.h"
#include "tests/harness/harness.h"

#define VOCAB 1000

/* The daemon's figures from an update published after this call began. */
static void fresh_stats(struct rs_connection *conn, struct rs_stats *stats)
{
	uint64_t now = rs_now_ns();
	do
		CHECK(rs_stats_snapshot(conn, stats, NULL, 0) >= 0 &&
			  rs_now_ns() - now < 5000000000ull,
		      "no statistics update");
	while (stats->updated_ns <= now && sched_yield() == 0);
}

int main(void)
{
	struct test_daemon daemon;
	/* The daemon sleeps after 20 us without work: between the client's requests. Steps
	 * of 100 us: a request of 50 tokens takes 5 ms. */
	const char *args[] = {"--null-vocab",	 "1000", "--spin-us", "20",
			      "--null-delay-us", "100",	 NULL};
	test_daemon_start(&daemon, args);
	struct rs_connect_options options = {.spin_us = UINT32_MAX}; /* waits sleep at once */
	struct rs_connection *conn;
	CHECK(rs_connect(daemon.socket_path, &options, &conn) == 0, "connect");
	int fd = rs_event_fd(conn);
	CHECK(fd >= 0, "rs_event_fd: %s", strerror(-fd));

	/* Busy polling: submit, spin on rs_output and rs_poll, never arm, never wait. */
	enum { REQUESTS = 2000 };
	uint32_t prompt[3] = {0, 1, 2};
	struct rs_generate_params params = {.prompt = prompt, .prompt_len = 3, .max_new_tokens = 4};
	for (unsigned i = 0; i < REQUESTS; i++) {
		prompt[0] = i % VOCAB;
		int request = rs_submit(conn, &params);
		CHECK(request >= 0, "submit: %s", strerror(-request));
		struct rs_completion done;
		int n;
		const uint32_t *tokens;
		while ((n = rs_poll(conn, &done, 1)) == 0)
			rs_output(conn, request, &tokens);
		CHECK(n == 1 && done.status == 0 && done.output_len == 4, "completion %u", i);
		CHECK(rs_output(conn, request, &tokens) == 4, "output");
		for (unsigned t = 0; t < 4; t++)
			CHECK(tokens[t] == test_null_token(prompt, 3, t, VOCAB), "token %u", t);
		rs_release(conn, request);
	}
	struct rs_stats stats;
	fresh_stats(conn, &stats);
	fprintf(stderr, "busy polling, %u requests: %llu eventfd writes, %llu futex wakes\n",
		REQUESTS, (unsigned long long)stats.client_event_writes,
		(unsigned long long)stats.client_futex_wakes);
	CHECK(stats.client_event_writes == 0 && stats.client_futex_wakes == 0,
	      "the daemon woke a client that never slept");

	/* Sleeping in epoll: the daemon writes the eventfd, once per sleep (and once more
	 * when the completion came between arming and the check, which then disarms). Until
	 * a round slept: a client descheduled for 5 ms may find its request done. */
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN};
	CHECK(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll");
	params.max_new_tokens = 50;
	unsigned sleeps = 0, rounds = 0;
	while (sleeps == 0 && rounds < 100) {
		int request = rs_submit(conn, &params);
		CHECK(request >= 0, "submit");
		rounds++;
		for (;;) {
			struct rs_completion done;
			int n = rs_poll(conn, &done, 1);
			CHECK(n >= 0, "poll");
			if (n == 1)
				break;
			int ready = rs_event_arm(conn, RS_EVENT_COMPLETION);
			CHECK(ready >= 0, "arm: %d", ready);
			if (ready == 0) {
				CHECK(epoll_wait(ep, &ev, 1, 10000) == 1, "lost wake-up");
				sleeps++;
			}
		}
		rs_release(conn, request);
	}
	struct rs_stats after;
	fresh_stats(conn, &after);
	uint64_t writes = after.client_event_writes - stats.client_event_writes;
	fprintf(stderr, "epoll: %u round(s), %u sleep(s), %llu eventfd write(s)\n", rounds, sleeps,
		(unsigned long long)writes);
	CHECK(sleeps >= 1 && writes >= sleeps && writes <= sleeps + rounds,
	      "%u sleeps, %llu writes", sleeps, (unsigned long long)writes);
	CHECK(after.client_futex_wakes == 0, "futex wakes for an epoll sleeper");

	/* Sleeping on the futex: the daemon wakes it, and writes no eventfd (the event
	 * descriptor is not armed: the last rs_event_arm found the completion, or the
	 * daemon's write consumed the arm). */
	struct rs_stats last;
	rounds = 0;
	do {
		int request = rs_submit(conn, &params);
		CHECK(request >= 0, "submit");
		CHECK(rs_wait_output(conn, request, 0, 5000) > 0, "rs_wait_output");
		struct rs_completion done;
		CHECK(rs_wait(conn, &done, 1, 5000) == 1 && done.status == 0, "rs_wait");
		rs_release(conn, request);
		fresh_stats(conn, &last);
	} while (last.client_futex_wakes == 0 && ++rounds < 20);
	fprintf(stderr, "futex: %llu wake(s), %llu eventfd write(s)\n",
		(unsigned long long)last.client_futex_wakes,
		(unsigned long long)(last.client_event_writes - after.client_event_writes));
	CHECK(last.client_futex_wakes >= 1, "no futex wake");
	CHECK(last.client_event_writes == after.client_event_writes, "eventfd writes for rs_wait");
	close(ep);
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	return T_EXIT_PASS;
}
