/* A daemon out of file descriptors must neither spin nor hang anyone. Peers that connect
 * and never say hello fill its descriptor table; while its accept keeps failing with
 * EMFILE the daemon retries every 100 ms instead of spinning (its event loop's CPU time
 * stays far below the wall clock), and a client that comes then either times out (-ETIMEDOUT) or gets in
 * once the daemon drops the silent peers, which it does 5 s after they connected. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "shm/clock.h"
#include "tests/harness/harness.h"

#define SILENT_PEERS 24

int main(void)
{
	struct test_daemon daemon;
	const char *args[] = {"--null-vocab", "100", NULL};
	setenv("RS_TEST_DAEMON_NOFILE", "16", 1);
	test_daemon_start(&daemon, args);
	unsetenv("RS_TEST_DAEMON_NOFILE");

	/* More silent connections than the daemon has descriptors: the kernel queues the
	 * rest in the listen backlog. */
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	strcpy(addr.sun_path, daemon.socket_path);
	int silent[SILENT_PEERS];
	for (int i = 0; i < SILENT_PEERS; i++) {
		silent[i] = socket(AF_UNIX, SOCK_SEQPACKET, 0);
		CHECK(silent[i] >= 0 && connect(silent[i], (struct sockaddr *)&addr, sizeof(addr)) == 0,
		      "silent peer %d: %s", i, strerror(errno));
	}
	uint64_t start = rs_now_ns();
	double cpu_before = test_event_loop_cpu_seconds(daemon.pid);
	struct rs_connection *conn;
	int ret = rs_connect(daemon.socket_path, NULL, &conn);
	double wall = (double)(rs_now_ns() - start) / 1e9;
	double cpu = test_event_loop_cpu_seconds(daemon.pid) - cpu_before;
	fprintf(stderr, "connect while full: %d after %.2f s; the daemon used %.3f s of CPU\n", ret, wall, cpu);
	CHECK(ret == -ETIMEDOUT || ret == 0, "connect while the daemon is out of descriptors: %d (%s)",
	      ret, strerror(-ret));
	CHECK(cpu < 0.25 * wall, "the daemon spun on its failing accept: %.3f s of CPU in %.2f s", cpu, wall);
	if (ret == 0)
		rs_close(conn);

	/* The daemon hangs up on a peer that never said hello. */
	char byte;
	struct timeval ten_seconds = {.tv_sec = 10};
	setsockopt(silent[0], SOL_SOCKET, SO_RCVTIMEO, &ten_seconds, sizeof(ten_seconds));
	CHECK(recv(silent[0], &byte, 1, 0) == 0, "a silent peer was not disconnected: %s", strerror(errno));
	for (int i = 0; i < SILENT_PEERS; i++)
		close(silent[i]);
	/* Descriptors are free again: a newcomer is served. */
	ret = rs_connect(daemon.socket_path, NULL, &conn);
	CHECK(ret == 0, "connect after the silent peers left: %d (%s)", ret, strerror(-ret));
	unsigned prompt[2] = {5, 6};
	test_null_request(conn, prompt, 2, 3, 100);
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	return T_EXIT_PASS;
}
