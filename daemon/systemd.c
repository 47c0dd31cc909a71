/* systemd's socket activation and readiness protocols, written from sd_listen_fds(3) and
 * sd_notify(3); see systemd.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/systemd.h"

/* The first passed descriptor is always 3 (SD_LISTEN_FDS_START). */
#define LISTEN_FDS_START 3

static int parse_positive(const char *text, long *out)
{
	char *end;
	errno = 0;
	long value = strtol(text, &end, 10);
	if (errno || end == text || *end || value <= 0)
		return -EINVAL;
	*out = value;
	return 0;
}

/* The path fd is bound to, when it is a listening Unix SOCK_SEQPACKET socket: 0, or
 * -ENOTSOCK when it is anything else, -ENAMETOOLONG when the path does not fit. */
static int bound_seqpacket_path(int fd, char *path, size_t path_size)
{
	int type = 0, listening = 0;
	socklen_t type_len = sizeof(type), listening_len = sizeof(listening);
	struct sockaddr_un addr;
	socklen_t addr_len = sizeof(addr);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) < 0 || type != SOCK_SEQPACKET ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &listening_len) < 0 ||
	    !listening || getsockname(fd, (struct sockaddr *)&addr, &addr_len) < 0 ||
	    addr.sun_family != AF_UNIX || addr_len <= offsetof(struct sockaddr_un, sun_path) ||
	    addr.sun_path[0] == '\0')
		return -ENOTSOCK;
	size_t len = strnlen(addr.sun_path, addr_len - offsetof(struct sockaddr_un, sun_path));
	if (len >= path_size)
		return -ENAMETOOLONG;
	memcpy(path, addr.sun_path, len);
	path[len] = '\0';
	return 0;
}

int rs_systemd_listen_fd(char *path, size_t path_size)
{
	const char *pid_text = getenv("LISTEN_PID"), *fds_text = getenv("LISTEN_FDS");
	if (!pid_text || !fds_text)
		return -ENOENT;
	long pid, fds;
	if (parse_positive(pid_text, &pid) || parse_positive(fds_text, &fds)) {
		fprintf(stderr, "ringserved: malformed LISTEN_PID=%s LISTEN_FDS=%s\n", pid_text,
			fds_text);
		return -EINVAL;
	}
	if (pid != getpid())
		return -ENOENT; /* meant for the process that started us */
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (fds != 1) {
		fprintf(stderr,
			"ringserved: systemd passed %ld sockets; ringserved listens on one\n", fds);
		return -EINVAL;
	}
	int fd = LISTEN_FDS_START;
	int ret = bound_seqpacket_path(fd, path, path_size);
	if (ret == -ENOTSOCK)
		fprintf(stderr,
			"ringserved: the socket systemd passed (descriptor 3) is not a listening "
			"Unix SOCK_SEQPACKET socket bound to a path (ListenSequentialPacket=)\n");
	if (ret)
		return ret;
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return -errno;
	return fd;
}

int rs_systemd_notify(const char *state)
{
	const char *socket_path = getenv("NOTIFY_SOCKET");
	if (!socket_path || !*socket_path)
		return 0;
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	size_t len = strlen(socket_path);
	if (len >= sizeof(addr.sun_path) || (socket_path[0] != '/' && socket_path[0] != '@'))
		return -EINVAL;
	memcpy(addr.sun_path, socket_path, len);
	if (addr.sun_path[0] == '@')
		addr.sun_path[0] = '\0'; /* an abstract socket */
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	ssize_t sent =
	    sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len);
	int ret = sent < 0 ? -errno : 0;
	close(fd);
	return ret;
}
