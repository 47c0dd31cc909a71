/* Peer identity: a uid outside the allow-list is refused with -EPERM (SO_PEERCRED), a
 * member of an allowed supplementary group is let in (SO_PEERGROUPS), the
 * socket file gets the configured mode, a malformed hello is answered with -EPROTO, and
 * the daemon keeps serving afterwards. */
#include <errno.h>
#include <grp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "shm/abi.h"
#include "tests/harness/harness.h"

/* rs_connect from a child whose primary gid is 4242 and whose one supplementary group
 * is extra_gid; returns its result. */
static int connect_with_groups(const char *socket_path, gid_t extra_gid)
{
	pid_t pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		if (setgroups(1, &extra_gid) < 0 || setgid(4242) < 0)
			_exit(100);
		struct rs_connection *conn;
		int ret = rs_connect(socket_path, NULL, &conn);
		_exit(ret == 0 ? 0 : ret == -EPERM ? 1 : 101);
	}
	int status;
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status), "child");
	CHECK(WEXITSTATUS(status) <= 1, "child: setgroups or connect failed: %d",
	      WEXITSTATUS(status));
	return WEXITSTATUS(status) == 0 ? 0 : -EPERM;
}

int main(void)
{
	struct test_daemon daemon;
	char uid_list[32];
	/* Allow only some other uid: we are refused. */
	snprintf(uid_list, sizeof(uid_list), "%u", (unsigned)getuid() + 4242);
	const char *refuse[] = {"--allow-uid", uid_list, "--socket-mode", "0600", NULL};
	test_daemon_start(&daemon, refuse);
	struct stat st;
	CHECK(stat(daemon.socket_path, &st) == 0 && (st.st_mode & 0777) == 0600, "mode %o",
	      st.st_mode & 0777);
	struct rs_connection *conn;
	int ret = rs_connect(daemon.socket_path, NULL, &conn);
	CHECK(ret == -EPERM, "connect outside the allow-list: %d", ret);
	CHECK(test_daemon_stop(&daemon) == 0, "exit");

	/* Allowed through our gid. */
	snprintf(uid_list, sizeof(uid_list), "%u", (unsigned)getgid());
	const char *by_gid[] = {"--allow-gid", uid_list, NULL};
	test_daemon_start(&daemon, by_gid);
	ret = rs_connect(daemon.socket_path, NULL, &conn);
	CHECK(ret == 0, "connect through the gid: %d", ret);

	/* A malformed hello on a raw socket. */
	int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	strcpy(addr.sun_path, daemon.socket_path);
	CHECK(connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0, "raw connect");
	struct rs_hello hello = {.magic = 0xdeadbeef, .abi_version = RS_ABI_VERSION};
	CHECK(send(fd, &hello, sizeof(hello), 0) == sizeof(hello), "send");
	struct rs_welcome welcome;
	CHECK(recv(fd, &welcome, sizeof(welcome), 0) == sizeof(welcome), "welcome");
	CHECK(welcome.status == -EPROTO, "status %d", welcome.status);
	char byte;
	CHECK(recv(fd, &byte, 1, 0) == 0, "the daemon closes the connection");
	close(fd);

	/* A wrong ABI version. */
	fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	CHECK(connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0, "raw connect");
	hello = (struct rs_hello){.magic = RS_HELLO_MAGIC, .abi_version = 999};
	CHECK(send(fd, &hello, sizeof(hello), 0) == sizeof(hello), "send");
	CHECK(recv(fd, &welcome, sizeof(welcome), 0) == sizeof(welcome), "welcome");
	CHECK(welcome.status == -EPROTO, "status %d", welcome.status);
	close(fd);

	/* Allowed through a supplementary group (root only: it takes setgroups). The uid
	 * (0) and the primary gid are outside the allow-list; only the extra group counts. */
	if (getuid() == 0) {
		rs_close(conn);
		CHECK(test_daemon_stop(&daemon) == 0, "exit");
		const char *by_extra_group[] = {"--allow-gid", "4243", NULL};
		test_daemon_start(&daemon, by_extra_group);
		CHECK(connect_with_groups(daemon.socket_path, 4243) == 0, "a member of 4243");
		int refused = connect_with_groups(daemon.socket_path, 4244);
		CHECK(refused == -EPERM, "a member of 4244 only: %d", refused);
		CHECK(rs_connect(daemon.socket_path, NULL, &conn) == -EPERM, "root without 4243");
		CHECK(test_daemon_stop(&daemon) == 0, "exit");
		test_daemon_start(&daemon, by_gid);
		CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "reconnect");
	} else {
		fprintf(stderr, "supplementary groups: not root, not tested\n");
	}

	/* Still serving the proper client. */
	unsigned prompt[1] = {5};
	struct rs_generate_params params = {.prompt = prompt, .prompt_len = 1, .max_new_tokens = 3};
	CHECK(rs_submit(conn, &params) >= 0, "submit");
	struct rs_completion done;
	CHECK(rs_wait(conn, &done, 1, 5000) == 1 && done.status == 0, "served");
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "exit");
	return T_EXIT_PASS;
}
