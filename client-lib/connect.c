/* Connecting: the handshake over the control socket and the mapping of the segments. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "client-lib/connection.h"
#include "shm/segment.h"

/* $RINGSERVE_SOCKET; else a daemon of the user's own session
 * ($XDG_RUNTIME_DIR/ringserve.sock) when its socket exists; else the system service's. */
static int default_socket_path(char *path, size_t size)
{
	const char *explicit_path = getenv("RINGSERVE_SOCKET");
	const char *runtime = getenv("XDG_RUNTIME_DIR");
	int n;
	if (explicit_path && *explicit_path) {
		n = snprintf(path, size, "%s", explicit_path);
	} else {
		if (runtime && *runtime) {
			n = snprintf(path, size, "%s/ringserve.sock", runtime);
			if (n >= 0 && (size_t)n < size && access(path, F_OK) == 0)
				return 0;
		}
		n = snprintf(path, size, "/run/ringserve/ringserve.sock");
	}
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Segment, shared segment, eventfd (RS_WAKE_EVENTFD), statistics segment. */
#define WELCOME_MAX_FDS 4

/* Receive the welcome and up to WELCOME_MAX_FDS descriptors. Returns the descriptor count
 * or -errno. */
static int receive_welcome(int fd, struct rs_welcome *welcome, int fds[WELCOME_MAX_FDS])
{
	struct iovec iov = {.iov_base = welcome, .iov_len = sizeof(*welcome)};
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(WELCOME_MAX_FDS * sizeof(int))];
	} control;
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf)};
	ssize_t n;
	do
		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
	int n_fds = 0;
	for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
		if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
			continue;
		int count = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < count; i++) {
			int received;
			memcpy(&received, CMSG_DATA(cmsg) + (size_t)i * sizeof(int), sizeof(int));
			if (n_fds < WELCOME_MAX_FDS)
				fds[n_fds++] = received;
			else
				close(received);
		}
	}
	if (n != (ssize_t)sizeof(*welcome) || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
	    welcome->magic != RS_HELLO_MAGIC || welcome->abi_version != RS_ABI_VERSION) {
		for (int i = 0; i < n_fds; i++)
			close(fds[i]);
		return n == 0 ? -ECONNRESET : -EPROTO;
	}
	return n_fds;
}

int rs_conn_handshake(const char *socket_path, const struct rs_hello *hello, int *fd_out,
		      struct rs_welcome *welcome, int fds[WELCOME_MAX_FDS])
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int ret;
	*fd_out = -1;
	if (socket_path) {
		if (strlen(socket_path) >= sizeof(addr.sun_path))
			return -ENAMETOOLONG;
		strcpy(addr.sun_path, socket_path);
	} else if ((ret = default_socket_path(addr.sun_path, sizeof(addr.sun_path)))) {
		return ret;
	}
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		ret = -errno;
		goto fail;
	}
	/* A daemon that accepts but never answers (stopped, wedged) must not hang us. */
	struct timeval handshake_timeout = {.tv_sec = 5};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &handshake_timeout, sizeof(handshake_timeout));
	ssize_t sent = send(fd, hello, sizeof(*hello), MSG_NOSIGNAL);
	if (sent != (ssize_t)sizeof(*hello)) {
		ret = sent < 0 ? -errno : -EPROTO;
		goto fail;
	}
	int n_fds = receive_welcome(fd, welcome, fds);
	if (n_fds < 0) {
		ret = n_fds;
		goto fail;
	}
	if (welcome->status) {
		for (int i = 0; i < n_fds; i++)
			close(fds[i]);
		ret = welcome->status < 0 ? welcome->status : -EPROTO;
		goto fail;
	}
	*fd_out = fd;
	return n_fds;
fail:
	close(fd);
	return ret;
}

static int map_segments(struct rs_connection *conn, const struct rs_welcome *welcome, int memfd,
			int shared_fd)
{
	conn->segment =
	    mmap(NULL, welcome->segment_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (conn->segment == MAP_FAILED) {
		conn->segment = NULL;
		return -errno;
	}
	conn->segment_size = welcome->segment_size;
	void *model = mmap(NULL, welcome->shared_size, PROT_READ, MAP_SHARED, shared_fd, 0);
	if (model == MAP_FAILED)
		return -errno;
	conn->model = model;
	conn->model_size = welcome->shared_size;
	/* Check a private copy of the layout, then use only the copy. */
	memcpy(&conn->hdr, conn->segment, sizeof(conn->hdr));
	int ret = rs_segment_check(&conn->hdr, conn->segment_size);
	if (ret)
		return ret;
	ret = rs_shared_segment_check(conn->model, conn->model_size);
	if (ret)
		return ret;
	conn->shared = conn->segment;
	unsigned char *base = conn->segment;
	rs_ring_init(&conn->sq, (struct rs_ring_indices *)(base + conn->hdr.sq_ring_offset),
		     base + conn->hdr.sq_entries_offset, sizeof(struct rs_sqe),
		     conn->hdr.sq_entries, true);
	rs_ring_init(&conn->cq, (struct rs_ring_indices *)(base + conn->hdr.cq_ring_offset),
		     base + conn->hdr.cq_entries_offset, sizeof(struct rs_cqe),
		     conn->hdr.cq_entries, false);
	uint32_t slots = conn->hdr.slot_count;
	conn->slot_state = calloc(slots, sizeof(*conn->slot_state));
	conn->free_slots = malloc(slots * sizeof(*conn->free_slots));
	conn->slot_last_prompt = calloc(slots, sizeof(*conn->slot_last_prompt));
	conn->slot_seen = calloc(slots, sizeof(*conn->slot_seen));
	if (!conn->slot_state || !conn->free_slots || !conn->slot_last_prompt || !conn->slot_seen)
		return -ENOMEM;
	/* Lowest slot on top of the stack: handles come out 0, 1, 2, ... */
	for (uint32_t i = 0; i < slots; i++)
		conn->free_slots[i] = slots - 1 - i;
	conn->n_free_slots = slots;
	return 0;
}

int rs_connect(const char *socket_path, const struct rs_connect_options *options,
	       struct rs_connection **out)
{
	const char *tenant =
	    options && options->tenant ? options->tenant : getenv("RINGSERVE_TENANT");
	if (!tenant)
		tenant = "default";
	if (!rs_tenant_name_valid(tenant))
		return -EINVAL;
	struct rs_connection *conn = calloc(1, sizeof(*conn));
	if (!conn)
		return -ENOMEM;
	conn->eventfd = -1;
	conn->event_fd = -1;
	conn->event_poll_fd = -1;
	uint32_t spin_us = options && options->spin_us ? options->spin_us : 50;
	conn->spin_ns = spin_us == UINT32_MAX ? 0 : (uint64_t)spin_us * 1000;
	int fds[WELCOME_MAX_FDS] = {-1, -1, -1, -1};
	int n_fds = 0, ret;
	struct rs_hello hello = {.magic = RS_HELLO_MAGIC, .abi_version = RS_ABI_VERSION};
	memcpy(hello.tenant, tenant, strlen(tenant));
	struct rs_welcome welcome;
	n_fds = rs_conn_handshake(socket_path, &hello, &conn->fd, &welcome, fds);
	if (n_fds < 0) {
		ret = n_fds;
		n_fds = 0;
		goto fail;
	}
	if (n_fds < 2) {
		ret = -EPROTO;
		goto fail;
	}
	ret = map_segments(conn, &welcome, fds[0], fds[1]);
	if (ret)
		goto fail;
	if (conn->hdr.wake_mode == RS_WAKE_EVENTFD) {
		if (n_fds < 3) {
			ret = -EPROTO;
			goto fail;
		}
		conn->eventfd = fds[2];
		fds[2] = -1;
	}
	/* The statistics segment comes after the others. */
	int stats_index = conn->hdr.wake_mode == RS_WAKE_EVENTFD ? 3 : 2;
	if (n_fds > stats_index)
		rs_conn_map_stats(conn, fds[stats_index]);
	else
		conn->stats_status = -ENOTSUP;
	/* The mappings keep the segments; the descriptors are not needed any more. */
	for (int i = 0; i < n_fds; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	*out = conn;
	return 0;

fail:
	for (int i = 0; i < n_fds; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	rs_close(conn);
	return ret;
}

void rs_close(struct rs_connection *conn)
{
	if (!conn)
		return;
	/* The daemon sees EOF on the socket and cancels our requests; it unmaps its side
	 * of the segment once no engine step writes into it. */
	if (conn->fd >= 0)
		close(conn->fd);
	if (conn->eventfd >= 0)
		close(conn->eventfd);
	if (conn->event_poll_fd >= 0)
		close(conn->event_poll_fd);
	if (conn->event_fd >= 0)
		close(conn->event_fd);
	if (conn->segment)
		munmap(conn->segment, conn->segment_size);
	if (conn->model)
		munmap((void *)conn->model, conn->model_size);
	rs_conn_unmap_stats(conn);
	free(conn->slot_state);
	free(conn->free_slots);
	free(conn->slot_last_prompt);
	free(conn->slot_seen);
	rs_conn_free_text(conn);
	free(conn);
}

int rs_model_info(struct rs_connection *conn, struct rs_model_info *info)
{
	const struct rs_shared_header *model = conn->model;
	*info = (struct rs_model_info){
	    .vocab_size = model->vocab_size,
	    .bos_token = model->bos_token,
	    .eos_token = model->eos_token,
	    .max_seq_len = model->max_seq_len,
	    .max_prompt_tokens = conn->hdr.max_prompt_tokens,
	    .max_output_tokens = conn->hdr.max_output_tokens,
	    .max_inflight = conn->hdr.max_inflight,
	    .client_id = conn->hdr.client_id,
	    .model_name = model->model_name,
	    .engine_name = model->engine_name,
	    .vocab =
		model->vocab_size_bytes ? (const unsigned char *)model + model->vocab_offset : NULL,
	    .vocab_bytes = model->vocab_size_bytes,
	};
	return 0;
}

int rs_fd(struct rs_connection *conn)
{
	return conn->fd;
}
