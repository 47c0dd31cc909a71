/* Completions and output: polling, waiting (spin, then futex), liveness of the daemon. */
#include <errno.h>
#include <sys/socket.h>

#include "client-lib/connection.h"
#include "shm/clock.h"
#include "shm/futex.h"
#include "shm/segment.h"

/* Longest futex sleep between two liveness checks. */
#define LIVENESS_CHECK_NS (100ull * 1000 * 1000)
/* A heartbeat older than this means the daemon stopped answering. */
#define HEARTBEAT_STALE_NS (2000ull * 1000 * 1000)

static bool daemon_stopped(const struct rs_connection *conn)
{
	/* A-state: pairs with the daemon's release store of STOPPED. */
	return rs_load_acquire(&conn->shared->daemon_state) == RS_DAEMON_STOPPED;
}

int rs_conn_check_daemon(struct rs_connection *conn)
{
	if (conn->error)
		return conn->error;
	char byte;
	ssize_t n = recv(conn->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
		return conn->error = -ECONNRESET;
	if (daemon_stopped(conn))
		return conn->error = -ECONNRESET;
	/* Relaxed: the heartbeat is a hint, ordered with nothing. */
	uint64_t heartbeat = rs_load_relaxed(&conn->shared->daemon_heartbeat_ns);
	uint64_t now = rs_now_ns();
	if (now > heartbeat && now - heartbeat > HEARTBEAT_STALE_NS)
		return -EHOSTDOWN; /* not sticky: a stopped (SIGSTOP) daemon may come back */
	return 0;
}

int rs_poll(struct rs_connection *conn, struct rs_completion *out, unsigned max)
{
	if (conn->error)
		return conn->error;
	int64_t ready = rs_ring_consumer_ready(&conn->cq);
	if (ready < 0)
		return conn->error = -EPROTO;
	unsigned n = (unsigned)ready < max ? (unsigned)ready : max;
	for (unsigned i = 0; i < n; i++) {
		const struct rs_cqe *cqe = rs_ring_consumer_slot(&conn->cq, i);
		uint32_t slot = cqe->slot;
		bool is_request = slot < conn->hdr.slot_count && conn->slot_state[slot] == RS_SLOT_SUBMITTED;
		out[i] = (struct rs_completion){
			.user_data = cqe->user_data,
			.request = is_request ? (int32_t)slot : -1,
			.status = cqe->status,
			.output_len = cqe->output_len,
			.flags = cqe->flags,
			.cached_tokens = cqe->cached_tokens,
		};
		if (is_request) {
			/* Written before the CQE; our acquire of the CQ tail made them visible. */
			const struct rs_slot_header *header = rs_segment_slot(conn->segment, &conn->hdr, slot);
			out[i].queued_us = header->queued_us;
			out[i].first_token_us = header->first_token_us;
			out[i].total_us = header->total_us;
			out[i].preemptions = header->preemptions;
			conn->slot_state[slot] = RS_SLOT_COMPLETED;
		}
	}
	if (n) {
		rs_ring_consumer_release(&conn->cq, n); /* R-head */
		/* The daemon may be holding back submissions for want of CQ room. */
		/* Relaxed: a stale head only costs a needless doorbell check. */
		if (rs_load_relaxed(&conn->sq.indices->head) != conn->sq.local)
			rs_conn_ring_doorbell(conn);
	}
	return (int)n;
}

/* What a wait waits for. */
struct wait_target {
	int request;   /* -1: any completion */
	uint32_t have; /* rs_wait_output: more than this many tokens */
};

/* A completion for `request` sits in the CQ, not yet taken. */
static bool completion_pending_for(struct rs_connection *conn, int request)
{
	int64_t ready = rs_ring_consumer_refresh(&conn->cq);
	for (int64_t i = 0; i < ready; i++) {
		const struct rs_cqe *cqe = rs_ring_consumer_slot(&conn->cq, (uint32_t)i);
		if (cqe->slot == (uint32_t)request)
			return true;
	}
	return false;
}

/* > 0: done (for output: the count), -ENODATA: the request completed, 0: not yet. */
static int check_target(struct rs_connection *conn, const struct wait_target *target)
{
	if (target->request < 0) {
		int64_t ready = rs_ring_consumer_refresh(&conn->cq);
		return ready != 0; /* -1 (corrupt) also ends the wait; rs_poll reports it */
	}
	/* A-progress: pairs with R-progress in daemon/scheduler.c. */
	uint32_t count = rs_load_acquire(
		&rs_segment_slot(conn->segment, &conn->hdr, (uint32_t)target->request)->output_count);
	if (count > target->have)
		return count <= conn->hdr.slot_output_capacity ? (int)count : -EPROTO;
	if (conn->slot_state[target->request] == RS_SLOT_COMPLETED ||
	    completion_pending_for(conn, target->request))
		return -ENODATA;
	return 0;
}

static int wait_for(struct rs_connection *conn, const struct wait_target *target, int timeout_ms)
{
	int ret = check_target(conn, target);
	if (ret)
		return ret;
	uint64_t start = rs_now_ns();
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : start + (uint64_t)timeout_ms * 1000000ull;
	/* Spin first: a completion usually arrives within microseconds. */
	while (rs_now_ns() - start < conn->spin_ns) {
		rs_cpu_relax();
		if ((ret = check_target(conn, target)))
			return ret;
	}
	/* The eventfd bits rs_event_arm set stay set while we sleep here: the caller may go
	 * back to sleep on its event descriptor afterwards without arming again. Bits the
	 * daemon already cleared stay clear: it has written the eventfd for them, and the
	 * caller's next rs_event_arm sees why. (Relaxed: at worst we keep a bit it clears
	 * right after this load, which costs one needless eventfd write.) */
	if (conn->event_armed &&
	    !(rs_load_relaxed(&conn->shared->client_need_wakeup) & conn->event_armed))
		conn->event_armed = 0;
	uint32_t keep = conn->event_armed;
	/* The full liveness check (a recv syscall and the heartbeat) every
	 * LIVENESS_CHECK_NS; a wake-up for another request's tokens pays only the load of
	 * the daemon's state, which a stopping daemon sets before it wakes us. */
	uint64_t next_liveness_check = 0;
	for (;;) {
		uint64_t now = rs_now_ns();
		if (now >= next_liveness_check) {
			if ((ret = rs_conn_check_daemon(conn)))
				break;
			next_liveness_check = now + LIVENESS_CHECK_NS;
		} else if (daemon_stopped(conn)) {
			ret = conn->error = -ECONNRESET;
			break;
		}
		/* The client half of the need-wakeup protocol, daemon -> client direction.
		 * Relaxed: ordered before the re-check by F-wait. */
		rs_store_relaxed(&conn->shared->client_need_wakeup, RS_NEED_WAKEUP_FUTEX | keep);
		/* F-wait: pairs with F-notify in daemon/scheduler.c. */
		rs_fence_seq_cst();
		/* A-bell: pairs with the daemon's release increment (R-bell). */
		uint32_t bell = rs_load_acquire(&conn->shared->client_doorbell);
		if ((ret = check_target(conn, target)))
			break;
		now = rs_now_ns();
		if (now >= deadline) {
			ret = -ETIMEDOUT;
			break;
		}
		uint64_t sleep_ns = deadline - now < LIVENESS_CHECK_NS ? deadline - now : LIVENESS_CHECK_NS;
		rs_futex_wait(&conn->shared->client_doorbell, bell, sleep_ns);
		if ((ret = check_target(conn, target)))
			break;
	}
	/* Relaxed: a flag seen late costs the daemon a needless wake-up, nothing more. */
	rs_store_relaxed(&conn->shared->client_need_wakeup, keep);
	return ret;
}

int rs_wait(struct rs_connection *conn, struct rs_completion *out, unsigned max, int timeout_ms)
{
	if (conn->error)
		return conn->error;
	if (max == 0)
		return -EINVAL;
	struct wait_target target = {.request = -1};
	int ret = wait_for(conn, &target, timeout_ms);
	if (ret < 0)
		return ret;
	return rs_poll(conn, out, max);
}

int rs_output(struct rs_connection *conn, int request, const uint32_t **tokens)
{
	if (request < 0 || (uint32_t)request >= conn->hdr.slot_count ||
	    conn->slot_state[request] == RS_SLOT_FREE)
		return -EINVAL;
	/* A-progress: pairs with R-progress in daemon/scheduler.c: the tokens counted are
	 * written. */
	uint32_t count = rs_load_acquire(
		&rs_segment_slot(conn->segment, &conn->hdr, (uint32_t)request)->output_count);
	if (count > conn->hdr.slot_output_capacity)
		return -EPROTO;
	*tokens = rs_segment_slot_output(conn->segment, &conn->hdr, (uint32_t)request);
	conn->slot_seen[request] = count;
	return (int)count;
}

int rs_wait_output(struct rs_connection *conn, int request, uint32_t have, int timeout_ms)
{
	if (conn->error)
		return conn->error;
	if (request < 0 || (uint32_t)request >= conn->hdr.slot_count ||
	    conn->slot_state[request] == RS_SLOT_FREE)
		return -EINVAL;
	struct wait_target target = {.request = request, .have = have};
	int ret = wait_for(conn, &target, timeout_ms);
	if (ret > 0)
		conn->slot_seen[request] = (uint32_t)ret;
	return ret;
}
