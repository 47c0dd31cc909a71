/* Hostile control messages and eventfds: RS_CONTROL_EVENT_FD without a descriptor, with a
 * pipe, with two eventfds; other messages with descriptors; random bytes. The daemon
 * answers -EBADF where it answers, keeps no descriptor it was sent (its descriptor count
 * comes back), and serves on. Then a client that makes its eventfd blocking and fills its
 * counter, and keeps arming: the daemon's writes to it wait inside io_uring, not in the
 * scheduler core, another client keeps being served, and once the bad one goes, its slot
 * and descriptors are freed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client-lib/connection.h"
#include "client-lib/ringserve.h"
#include "shm/clock.h"
#include "tests/harness/harness.h"

#define VOCAB 300

static int count_fds(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *dir = opendir(path);
	CHECK(dir, "opendir %s", path);
	int n = 0;
	while (readdir(dir))
		n++;
	closedir(dir);
	return n;
}

/* Send a message with up to 2 descriptors. */
static void send_with_fds(int sock, const void *msg, size_t len, const int *fds, int n_fds)
{
	struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(2 * sizeof(int))];
	} control = {0};
	struct msghdr hdr = {.msg_iov = &iov, .msg_iovlen = 1};
	if (n_fds) {
		hdr.msg_control = control.buf;
		hdr.msg_controllen = CMSG_SPACE((size_t)n_fds * sizeof(int));
		struct cmsghdr *cmsg = CMSG_FIRSTHDR(&hdr);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN((size_t)n_fds * sizeof(int));
		memcpy(CMSG_DATA(cmsg), fds, (size_t)n_fds * sizeof(int));
	}
	CHECK(sendmsg(sock, &hdr, MSG_NOSIGNAL) == (ssize_t)len, "sendmsg");
}

static int32_t answer(int sock)
{
	struct rs_control_msg reply;
	ssize_t n = recv(sock, &reply, sizeof(reply), 0); /* the handshake's 5 s timeout */
	CHECK(n == (ssize_t)sizeof(reply) && reply.magic == RS_CONTROL_MAGIC &&
		  reply.op == RS_CONTROL_EVENT_FD,
	      "answer: %zd", n);
	return reply.status;
}

static void good_request(struct rs_connection *good, unsigned seed)
{
	unsigned prompt[4] = {seed % VOCAB, 1, 2, 3};
	test_null_request(good, prompt, 4, 5, VOCAB);
}

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
	struct test_daemon served;
	const char *args[] = {"--null-vocab", "300", "--spin-us", "20", NULL};
	test_daemon_start(&served, args);
	struct rs_connection *good, *bad;
	CHECK(rs_connect(served.socket_path, NULL, &good) == 0, "connect");
	CHECK(rs_connect(served.socket_path, NULL, &bad) == 0, "connect");
	good_request(good, 0);
	int baseline = count_fds(served.pid);

	struct rs_control_msg msg = {.magic = RS_CONTROL_MAGIC, .op = RS_CONTROL_EVENT_FD};
	int sock = bad->fd;
	send_with_fds(sock, &msg, sizeof(msg), NULL, 0);
	CHECK(answer(sock) == -EBADF, "no descriptor");
	int pipe_fds[2];
	CHECK(pipe(pipe_fds) == 0, "pipe");
	send_with_fds(sock, &msg, sizeof(msg), &pipe_fds[1], 1);
	CHECK(answer(sock) == -EBADF, "a pipe");
	int two[2] = {eventfd(0, EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC)};
	send_with_fds(sock, &msg, sizeof(msg), two, 2);
	CHECK(answer(sock) == -EBADF, "two eventfds");
	struct rs_control_msg wrong = msg;
	wrong.magic ^= 1;
	send_with_fds(sock, &wrong, sizeof(wrong), two, 2); /* ignored, descriptors closed */
	wrong = msg;
	wrong.op = 77;
	send_with_fds(sock, &wrong, sizeof(wrong), two, 1);
	unsigned char noise[100];
	for (unsigned i = 0; i < sizeof(noise); i++)
		noise[i] = (unsigned char)(i * 37 + 11);
	send_with_fds(sock, noise, sizeof(noise), two, 2);
	send_with_fds(sock, noise, 3, NULL, 0);
	/* A good one last: answered, so everything before it has been handled. */
	send_with_fds(sock, &msg, sizeof(msg), &two[0], 1);
	CHECK(answer(sock) == 0, "an eventfd");
	good_request(good, 1);
	/* It holds one descriptor more: the eventfd. A second replaces the first. */
	CHECK(count_fds(served.pid) == baseline + 1, "daemon descriptors %d, want %d",
	      count_fds(served.pid), baseline + 1);
	send_with_fds(sock, &msg, sizeof(msg), &two[1], 1);
	CHECK(answer(sock) == 0, "another eventfd");
	CHECK(count_fds(served.pid) == baseline + 1, "daemon descriptors %d after a replacement",
	      count_fds(served.pid));
	fprintf(stderr, "garbage control messages: answered, nothing kept\n");

	/* two[1] is the bad client's eventfd now: make it blocking, fill its counter, and
	 * arm the flag again and again while its requests complete. */
	int flags = fcntl(two[1], F_GETFL);
	CHECK(fcntl(two[1], F_SETFL, flags & ~O_NONBLOCK) == 0, "fcntl");
	uint64_t full = 0xfffffffffffffffeull;
	CHECK(write(two[1], &full, sizeof(full)) == sizeof(full), "fill the counter");
	unsigned prompt[2] = {5, 6};
	struct rs_generate_params params = {.prompt = prompt, .prompt_len = 2, .max_new_tokens = 3};
	for (unsigned i = 0; i < 50; i++) {
		int request = rs_submit(bad, &params);
		CHECK(request >= 0, "bad submit");
		struct rs_completion done;
		int n;
		do
			atomic_store(&bad->shared->client_need_wakeup, RS_NEED_WAKEUP_EVENT);
		while ((n = rs_poll(bad, &done, 1)) == 0);
		CHECK(n == 1, "bad poll");
		rs_release(bad, request);
		good_request(good, 100 + i); /* the daemon is not stuck in a write */
	}
	struct rs_stats stats;
	fresh_stats(good, &stats);
	fprintf(stderr, "blocked eventfd: %llu writes attempted; the other client was served\n",
		(unsigned long long)stats.client_event_writes);
	CHECK(stats.client_event_writes >= 1, "no write was tried");
	rs_close(bad);
	/* Its slot and descriptors go, though writes were waiting on a full counter. */
	uint64_t deadline = rs_now_ns() + 5000000000ull;
	do {
		fresh_stats(good, &stats);
		CHECK(rs_now_ns() < deadline, "the bad client is still connected");
	} while (stats.clients_connected != 1);
	good_request(good, 1000);
	deadline = rs_now_ns() + 5000000000ull;
	/* Its socket and its eventfd are gone (the baseline had the socket, not the eventfd);
	 * the cancelled writes let go of the eventfd's file. */
	while (count_fds(served.pid) != baseline - 1) {
		CHECK(rs_now_ns() < deadline, "daemon descriptors %d, baseline %d",
		      count_fds(served.pid), baseline);
		sched_yield();
	}
	close(two[0]);
	close(two[1]);
	close(pipe_fds[0]);
	close(pipe_fds[1]);
	rs_close(good);
	CHECK(test_daemon_stop(&served) == 0, "daemon exit status");
	return T_EXIT_PASS;
}
