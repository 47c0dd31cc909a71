/* The daemon killed with SIGKILL while a client sleeps in epoll_wait (no timeout) on its
 * event descriptor: the descriptor becomes readable (the connection's EOF), the client
 * wakes well within a second, and rs_event_arm and every later call fail with
 * -ECONNRESET. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "client-lib/connection.h"
#include "client-lib/ringserve.h"
#include "shm/clock.h"
#include "tests/harness/harness.h"

static struct test_daemon served;
static struct rs_connection *conn;
static pid_t sleeper;
static uint64_t killed_at;

/* The thread is blocked in an epoll wait: its current system call, from /proc. */
static bool in_epoll_wait(pid_t tid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	long nr = -1;
	if (fgets(line, sizeof(line), f))
		sscanf(line, "%ld", &nr);
	fclose(f);
	return nr == SYS_epoll_wait || nr == SYS_epoll_pwait
#ifdef SYS_epoll_pwait2
	       || nr == SYS_epoll_pwait2
#endif
	    ;
}

/* Kill the daemon once the client has armed its descriptor (it says so in the segment)
 * and sleeps in epoll_wait. */
static void *killer(void *arg)
{
	uint64_t deadline = rs_now_ns() + 10ull * 1000 * 1000 * 1000;
	while (!(atomic_load(&conn->shared->client_need_wakeup) & RS_NEED_WAKEUP_EVENT) ||
	       !in_epoll_wait(sleeper)) {
		CHECK(rs_now_ns() < deadline, "the client never slept in epoll_wait");
		sched_yield();
	}
	killed_at = rs_now_ns();
	test_daemon_kill(&served);
	return NULL;
}

int main(void)
{
	const char *args[] = {"--null-delay-us", "1000000", NULL}; /* a token a second */
	test_daemon_start(&served, args);
	CHECK(rs_connect(served.socket_path, NULL, &conn) == 0, "connect");
	int fd = rs_event_fd(conn);
	CHECK(fd >= 0, "rs_event_fd: %s", strerror(-fd));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN};
	CHECK(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll");
	unsigned prompt[2] = {1, 2};
	struct rs_generate_params params = {
	    .prompt = prompt, .prompt_len = 2, .max_new_tokens = 100};
	CHECK(rs_submit(conn, &params) >= 0, "submit");

	sleeper = (pid_t)syscall(SYS_gettid);
	pthread_t thread;
	CHECK(pthread_create(&thread, NULL, killer, NULL) == 0, "thread");
	int ready = rs_event_arm(conn, RS_EVENT_COMPLETION | RS_EVENT_OUTPUT);
	CHECK(ready == 0, "armed with news: %d", ready);
	int n = epoll_wait(ep, &ev, 1, -1);
	uint64_t woke_at = rs_now_ns();
	pthread_join(thread, NULL);
	CHECK(n == 1, "epoll_wait: %d", n);
	double seconds = (double)(woke_at - killed_at) / 1e9;
	CHECK(seconds < 1.0, "woke after %.3f s", seconds);
	fprintf(stderr, "epoll sleeper woke %.2f ms after the daemon was killed\n", seconds * 1e3);

	ready = rs_event_arm(conn, RS_EVENT_COMPLETION | RS_EVENT_OUTPUT);
	CHECK(ready == -ECONNRESET, "rs_event_arm after death: %d (%s)", ready, strerror(-ready));
	struct rs_completion done;
	CHECK(rs_poll(conn, &done, 1) == -ECONNRESET, "poll after death");
	CHECK(rs_submit(conn, &params) == -ECONNRESET, "submit after death");
	CHECK(rs_wait(conn, &done, 1, 1000) == -ECONNRESET, "wait after death");
	CHECK(rs_event_arm(conn, RS_EVENT_COMPLETION) == -ECONNRESET, "arm again");
	/* Still readable: a loop that ignored the error would spin, not hang. */
	CHECK(epoll_wait(ep, &ev, 1, 0) == 1, "descriptor readable after death");
	close(ep);
	rs_close(conn);
	return T_EXIT_PASS;
}
