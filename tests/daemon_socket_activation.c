/* systemd's service protocol, played by the test: a control socket passed in as
 * descriptor 3 (LISTEN_PID, LISTEN_FDS) is served and left in place at exit, since the
 * socket unit owns it; READY=1 and STOPPING=1 reach $NOTIFY_SOCKET; LISTEN_* meant for
 * another process are ignored; a passed descriptor that is not a listening
 * SOCK_SEQPACKET socket is refused with a message and exit status 1, not served. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

static char dir[64];

static int unix_socket(int type, const char *name, bool listening)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/%s", dir, name);
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0, "socket: %s", strerror(errno));
	CHECK(bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0, "bind %s: %s", addr.sun_path,
	      strerror(errno));
	CHECK(!listening || listen(fd, 16) == 0, "listen: %s", strerror(errno));
	return fd;
}

/* Start ringserved (null engine) with passed as its descriptor 3 (or nothing when -1),
 * LISTEN_PID naming it or, when foreign_pid, another process, and stderr into a pipe. */
static pid_t start(int passed, bool foreign_pid, const char *own_socket, int *stderr_read)
{
	int err[2];
	CHECK(pipe2(err, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
	char binary[512], notify[128];
	snprintf(binary, sizeof(binary), "%s/ringserved", test_build_dir());
	snprintf(notify, sizeof(notify), "%s/notify", dir);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(err[1], 2);
		/* dup2 clears close-on-exec; a descriptor already at 3 needs it cleared. */
		if (passed >= 0 && (passed == 3 ? fcntl(3, F_SETFD, 0) : dup2(passed, 3)) < 0)
			_exit(126);
		char pid_text[16];
		snprintf(pid_text, sizeof(pid_text), "%d", foreign_pid ? 1 : (int)getpid());
		setenv("LISTEN_PID", pid_text, 1);
		setenv("LISTEN_FDS", "1", 1);
		setenv("NOTIFY_SOCKET", notify, 1);
		const char *argv[] = {binary,
				      "--engine",
				      "null",
				      "--socket",
				      own_socket ? own_socket : "/nonexistent/unused.sock",
				      NULL};
		execv(binary, (char *const *)argv);
		_exit(127);
	}
	close(err[1]);
	*stderr_read = err[0];
	return pid;
}

/* The next notification, within 10 s (a bound for failure, not a synchronisation). */
static void expect_notification(int notify_fd, const char *state)
{
	struct pollfd p = {.fd = notify_fd, .events = POLLIN};
	CHECK(poll(&p, 1, 10000) == 1, "no %s from ringserved within 10 s", state);
	char message[256];
	ssize_t n = recv(notify_fd, message, sizeof(message) - 1, 0);
	CHECK(n > 0, "recv: %s", strerror(errno));
	message[n] = '\0';
	CHECK(strcmp(message, state) == 0, "notification '%s', expected '%s'", message, state);
}

static int exit_status(pid_t pid)
{
	int status;
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
	CHECK(WIFEXITED(status), "ringserved died of signal %d", WTERMSIG(status));
	return WEXITSTATUS(status);
}

static void read_all(int fd, char *out, size_t size)
{
	size_t have = 0;
	ssize_t n;
	while (have + 1 < size && (n = read(fd, out + have, size - 1 - have)) > 0)
		have += (size_t)n;
	out[have] = '\0';
	close(fd);
}

int main(void)
{
	strcpy(dir, "/tmp/ringserve-activation-XXXXXX");
	CHECK(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	int notify_fd = unix_socket(SOCK_DGRAM, "notify", false);
	char path[128], log[4096];
	unsigned prompt[3] = {5, 6, 7};
	struct rs_connection *conn;
	int err_fd;

	/* Activated: serves the passed socket, tells the manager, leaves the file. */
	int listener = unix_socket(SOCK_SEQPACKET, "activated.sock", true);
	snprintf(path, sizeof(path), "%s/activated.sock", dir);
	pid_t pid = start(listener, false, NULL, &err_fd);
	expect_notification(notify_fd, "READY=1");
	CHECK(rs_connect(path, NULL, &conn) == 0, "connect to the passed socket");
	test_null_request(conn, prompt, 3, 8, 32000);
	rs_close(conn);
	kill(pid, SIGTERM);
	expect_notification(notify_fd, "STOPPING=1");
	CHECK(exit_status(pid) == 0, "exit after SIGTERM");
	read_all(err_fd, log, sizeof(log));
	CHECK(strstr(log, path), "its start line names the passed socket: %s", log);
	struct stat st;
	CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode), "the socket unit's file is left");

	/* LISTEN_PID of another process: not ours; ringserved binds --socket itself. */
	char own[128];
	snprintf(own, sizeof(own), "%s/own.sock", dir);
	pid = start(listener, true, own, &err_fd);
	expect_notification(notify_fd, "READY=1");
	CHECK(rs_connect(own, NULL, &conn) == 0, "connect to its own socket");
	test_null_request(conn, prompt, 3, 4, 32000);
	rs_close(conn);
	kill(pid, SIGTERM);
	expect_notification(notify_fd, "STOPPING=1");
	CHECK(exit_status(pid) == 0, "exit");
	CHECK(stat(own, &st) < 0 && errno == ENOENT, "its own socket file is removed");
	close(err_fd);
	close(listener);

	/* Passed descriptors that cannot be served: refused, with a message. */
	int pipe_fds[2];
	CHECK(pipe2(pipe_fds, O_CLOEXEC) == 0, "pipe");
	int not_listening = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	int datagram = unix_socket(SOCK_DGRAM, "dgram.sock", false);
	const int bad[] = {pipe_fds[0], not_listening, datagram};
	for (int i = 0; i < 3; i++) {
		pid = start(bad[i], false, NULL, &err_fd);
		CHECK(exit_status(pid) == 1, "case %d: exit status 1", i);
		read_all(err_fd, log, sizeof(log));
		CHECK(strstr(log, "descriptor 3"), "case %d: the message names it: %s", i, log);
	}

	unlink(path);
	snprintf(path, sizeof(path), "%s/dgram.sock", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/notify", dir);
	unlink(path);
	rmdir(dir);
	return T_EXIT_PASS;
}
