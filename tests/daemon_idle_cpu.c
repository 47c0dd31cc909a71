/* An idle daemon with a connected client sleeps in io_uring: over a second of idleness
 * it uses next to no CPU time; and it wakes up for work submitted while it sleeps, in
 * both doorbell modes (IORING_OP_FUTEX_WAIT and the eventfd fallback). */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include <liburing.h>

#include "client-lib/connection.h"
#include "client-lib/ringserve.h"
#include "shm/clock.h"
#include "tests/harness/harness.h"

static void wait_until_daemon_sleeps(struct rs_connection *conn)
{
	/* The daemon raises daemon_need_wakeup just before it sleeps (wakeup.c, N1). */
	uint64_t deadline = rs_now_ns() + 5ull * 1000 * 1000 * 1000;
	while (!atomic_load(&conn->shared->daemon_need_wakeup))
		CHECK(rs_now_ns() < deadline, "the daemon never went to sleep");
}

/* IORING_OP_FUTEX_WAIT (Linux 6.7; 51 in the uapi headers, newer than liburing's). */
static bool kernel_has_futex_wait(void)
{
	struct io_uring_probe *probe = io_uring_get_probe();
	bool supported = probe && io_uring_opcode_supported(probe, 51);
	if (probe)
		io_uring_free_probe(probe);
	return supported;
}

static void one_request(struct rs_connection *conn, unsigned seed)
{
	unsigned prompt[3] = {seed, seed + 1, seed + 2};
	/* A lost wakeup shows as a timed-out wait here. */
	test_null_request(conn, prompt, 3, 4, 32000);
}

static void run(const char *mode_arg)
{
	struct test_daemon daemon;
	const char *args[] = {"--spin-us", "100", mode_arg, NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn;
	CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "connect");
	/* Futex doorbells when this kernel's io_uring has FUTEX_WAIT (our own probe, not
	 * the daemon's), else the daemon falls back to eventfd. */
	uint32_t expected_mode =
	    mode_arg || !kernel_has_futex_wait() ? RS_WAKE_EVENTFD : RS_WAKE_FUTEX;
	CHECK(conn->hdr.wake_mode == expected_mode, "wake mode %u, want %u", conn->hdr.wake_mode,
	      expected_mode);
	if (!mode_arg && expected_mode == RS_WAKE_EVENTFD)
		fprintf(stderr, "no IORING_OP_FUTEX_WAIT here: the futex mode is not covered\n");

	/* Wake-ups from sleep, many times over: none may be lost. */
	for (unsigned round = 0; round < 50; round++) {
		wait_until_daemon_sleeps(conn);
		one_request(conn, round);
	}

	/* A second of idleness costs (almost) no CPU: the heartbeat wakes it 10 times.
	 * Two windows: the first may still see threads of libraries the daemon loads
	 * (OpenBLAS spins for a while after it starts its pool); the second is the
	 * steady state that the assertion is about. */
	wait_until_daemon_sleeps(conn);
	double used = 0;
	for (int window = 0; window < 2; window++) {
		double before = test_process_cpu_seconds(daemon.pid);
		struct timespec second = {1, 0};
		nanosleep(&second, NULL); /* a measurement window, not synchronisation */
		used = test_process_cpu_seconds(daemon.pid) - before;
		fprintf(stderr, "%s: idle daemon used %.3f s of CPU in 1 s (window %d)\n",
			mode_arg ? "eventfd" : "futex", used, window + 1);
	}
	CHECK(used < 0.05, "idle daemon used %.3f s of CPU in 1 s", used);
	one_request(conn, 1000);
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
}

int main(void)
{
	run(NULL);
	run("--eventfd");
	return T_EXIT_PASS;
}
