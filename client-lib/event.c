/* The event-loop descriptor: sleeping in the caller's epoll instead of on our futex.
 *
 * The daemon -> client half of the need-wakeup protocol (docs/shm-abi.md), with an eventfd
 * for the futex:
 *
 *   client (rs_event_arm)                   daemon (rs_scheduler_notify_clients)
 *   E1 drain the eventfd                    D1 publish CQ tail / output_count (release)
 *   E2 store client_need_wakeup = bits      F-notify full fence
 *   F-arm full fence                        D2 load client_need_wakeup; if it has a bit
 *   E3 check the CQ and outputs (acquire)      for what it published: exchange it to 0,
 *   E4 nothing: the caller sleeps in epoll      write the eventfd (io_uring)
 *
 * F-arm and F-notify make it impossible for both E3 to miss D1 and D2 to miss E2: either
 * the caller sees the news now, or the daemon sees the flag and writes the eventfd, which
 * stays readable until the next E1. The daemon writes nothing while the flag is clear, so
 * a caller that polls without arming costs it no system call. The descriptor handed out
 * is an epoll set of the eventfd and the connection's socket: the socket's EOF makes it
 * readable when the daemon dies, however it dies. */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client-lib/connection.h"
#include "shm/segment.h"

/* Hand our eventfd to the daemon and take its answer. The socket still has the 5 s
 * receive timeout of the handshake, and the daemon sends nothing else after the welcome. */
static int send_event_fd(struct rs_connection *conn, int event_fd)
{
	struct rs_control_msg msg = {.magic = RS_CONTROL_MAGIC, .op = RS_CONTROL_EVENT_FD};
	struct iovec iov = {.iov_base = &msg, .iov_len = sizeof(msg)};
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} control = {0};
	struct msghdr hdr = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf)};
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&hdr);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &event_fd, sizeof(int));
	/* An answer left from an earlier call that timed out would be taken for this one's
	 * and keep the descriptor readable: drop it. */
	struct rs_control_msg stale;
	while (recv(conn->fd, &stale, sizeof(stale), MSG_DONTWAIT) > 0)
		;
	ssize_t n;
	do
		n = sendmsg(conn->fd, &hdr, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EPIPE || errno == ECONNRESET ? (conn->error = -ECONNRESET) : -errno;
	if (n != (ssize_t)sizeof(msg))
		return -EPROTO;
	struct rs_control_msg reply;
	do
		n = recv(conn->fd, &reply, sizeof(reply), 0);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return conn->error = -ECONNRESET;
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
	if (n != (ssize_t)sizeof(reply) || reply.magic != RS_CONTROL_MAGIC ||
	    reply.op != RS_CONTROL_EVENT_FD || reply.status > 0)
		return -EPROTO;
	return reply.status;
}

int rs_event_fd(struct rs_connection *conn)
{
	if (conn->event_poll_fd >= 0)
		return conn->event_poll_fd;
	if (conn->error)
		return conn->error;
	if (!(conn->hdr.features & RS_FEATURE_EVENT_FD))
		return -ENOTSUP;
	int ret;
	int event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (event_fd < 0)
		return -errno;
	int poll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (poll_fd < 0) {
		ret = -errno;
		goto fail_event;
	}
	/* Level-triggered: readable while the eventfd has a count or the socket is at EOF
	 * (or holds data, which the daemon does not send after its answer below). */
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0};
	if (epoll_ctl(poll_fd, EPOLL_CTL_ADD, event_fd, &ev) < 0) {
		ret = -errno;
		goto fail_poll;
	}
	ev = (struct epoll_event){.events = EPOLLIN | EPOLLRDHUP, .data.u32 = 1};
	if (epoll_ctl(poll_fd, EPOLL_CTL_ADD, conn->fd, &ev) < 0) {
		ret = -errno;
		goto fail_poll;
	}
	/* Only once the daemon holds the eventfd may a caller arm and sleep on it. */
	ret = send_event_fd(conn, event_fd);
	if (ret)
		goto fail_poll;
	conn->event_fd = event_fd;
	conn->event_poll_fd = poll_fd;
	return poll_fd;

fail_poll:
	close(poll_fd);
fail_event:
	close(event_fd);
	return ret;
}

/* A completion is waiting in the CQ. */
static bool completion_ready(struct rs_connection *conn)
{
	/* A-tail (in the refresh): pairs with the daemon's R-tail. -1 (corrupt) counts as
	 * ready: rs_poll reports it. */
	return rs_ring_consumer_refresh(&conn->cq) != 0;
}

/* A request still running has output beyond what rs_output / rs_wait_output returned. */
static bool output_ready(struct rs_connection *conn)
{
	uint32_t in_use = conn->hdr.slot_count - conn->n_free_slots;
	for (uint32_t slot = 0; slot < conn->hdr.slot_count && in_use; slot++) {
		if (conn->slot_state[slot] == RS_SLOT_FREE)
			continue;
		in_use--;
		if (conn->slot_state[slot] != RS_SLOT_SUBMITTED)
			continue;
		/* A-progress: pairs with R-progress in daemon/scheduler.c. */
		uint32_t count = rs_load_acquire(
		    &rs_segment_slot(conn->segment, &conn->hdr, slot)->output_count);
		if (count != conn->slot_seen[slot])
			return true; /* also a count out of range: rs_output reports it */
	}
	return false;
}

static unsigned events_ready(struct rs_connection *conn, unsigned events)
{
	unsigned ready = 0;
	if ((events & RS_EVENT_COMPLETION) && completion_ready(conn))
		ready |= RS_EVENT_COMPLETION;
	if ((events & RS_EVENT_OUTPUT) && output_ready(conn))
		ready |= RS_EVENT_OUTPUT;
	return ready;
}

int rs_event_arm(struct rs_connection *conn, unsigned events)
{
	if (conn->event_fd < 0 || events == 0 ||
	    (events & ~(unsigned)(RS_EVENT_COMPLETION | RS_EVENT_OUTPUT)))
		return -EINVAL;
	/* E1: take the count; a write after this leaves the descriptor readable. */
	uint64_t count;
	if (read(conn->event_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		return -errno;
	int ret = rs_conn_check_daemon(conn);
	if (ret)
		goto disarm;
	/* Cheap first: no flag store (a write to a line the daemon reads) when there is
	 * news already. */
	unsigned ready = events_ready(conn, events);
	if (ready) {
		ret = (int)ready;
		goto disarm;
	}
	uint32_t bits = (events & RS_EVENT_COMPLETION ? RS_NEED_WAKEUP_COMPLETION : 0) |
			(events & RS_EVENT_OUTPUT ? RS_NEED_WAKEUP_OUTPUT : 0);
	/* E2: relaxed, ordered before E3 by F-arm. */
	rs_store_relaxed(&conn->shared->client_need_wakeup, bits);
	conn->event_armed = bits;
	/* F-arm: pairs with F-notify in daemon/scheduler.c. */
	rs_fence_seq_cst();
	/* E3 */
	ready = events_ready(conn, events);
	if (!ready)
		return 0; /* E4: sleep */
	ret = (int)ready;
disarm:
	/* News now, or an error: the caller does not sleep, and the daemon need not write.
	 * Relaxed: seen late, it costs one needless eventfd write. */
	if (conn->event_armed) {
		rs_store_relaxed(&conn->shared->client_need_wakeup, 0);
		conn->event_armed = 0;
	}
	return ret;
}
