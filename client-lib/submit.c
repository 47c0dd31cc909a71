/* Submitting: slots, the submission ring, and the daemon's doorbell. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "client-lib/connection.h"
#include "shm/futex.h"
#include "shm/segment.h"

void rs_conn_ring_doorbell(struct rs_connection *conn)
{
	/* F2: pairs with F1 in daemon/wakeup.c; orders our SQ tail (or CQ head) store
	 * before the load of the daemon's need-wakeup flag. */
	rs_fence_seq_cst();
	/* C2: relaxed, ordered by F2. */
	if (!rs_load_relaxed(&conn->shared->daemon_need_wakeup))
		return;
	/* C3 (R-bell): pairs with the daemon's acquire load N2. */
	rs_fetch_add_release(&conn->shared->daemon_doorbell, 1);
	if (conn->eventfd >= 0) {
		uint64_t one = 1;
		/* Cannot fail but for a counter overflow, which only delays nothing: the
		 * doorbell word changed and the daemon's wait sees it. */
		if (write(conn->eventfd, &one, sizeof(one)) < 0)
			return;
	} else {
		rs_futex_wake(&conn->shared->daemon_doorbell, 1);
	}
}

/* Common checks before producing into the SQ. */
static int submit_preflight(struct rs_connection *conn)
{
	if (conn->error)
		return conn->error;
	/* A-state: pairs with the daemon's release store of STOPPED. */
	uint32_t state = rs_load_acquire(&conn->shared->daemon_state);
	if (state == RS_DAEMON_STOPPED)
		return conn->error = -ECONNRESET;
	if (state == RS_DAEMON_DRAINING)
		return -ESHUTDOWN;
	int64_t space = rs_ring_producer_space(&conn->sq);
	if (space < 0)
		return conn->error = -EPROTO;
	return space > 0 ? 0 : -EAGAIN;
}

int rs_conn_take_slot(struct rs_connection *conn)
{
	int ret = submit_preflight(conn);
	if (ret)
		return ret;
	if (conn->n_free_slots == 0)
		return -EAGAIN;
	uint32_t slot = conn->free_slots[--conn->n_free_slots];
	conn->slot_state[slot] = RS_SLOT_SUBMITTED;
	return (int)slot;
}

void rs_conn_return_slot(struct rs_connection *conn, uint32_t slot)
{
	conn->slot_state[slot] = RS_SLOT_FREE;
	conn->free_slots[conn->n_free_slots++] = slot;
}

int rs_conn_submit_slot(struct rs_connection *conn, uint32_t slot,
			const struct rs_generate_params *params, uint32_t prompt_len)
{
	/* Our own copy: the prompt area is shared memory the daemon could scribble on. */
	const uint32_t *prompt = rs_segment_slot_prompt(conn->segment, &conn->hdr, slot);
	conn->slot_last_prompt[slot] = prompt[prompt_len - 1];
	conn->slot_seen[slot] = 0;
	/* The slot is ours until we submit it: reset the progress counter. It and the prompt
	 * are published by R-tail below. */
	rs_store_relaxed(&rs_segment_slot(conn->segment, &conn->hdr, slot)->output_count, 0);

	struct rs_sqe *sqe = rs_ring_producer_slot(&conn->sq, 0);
	*sqe = (struct rs_sqe){
		.user_data = params->user_data,
		.opcode = RS_OP_GENERATE,
		.flags = (uint16_t)(params->flags & RS_GENERATE_IGNORE_EOS ? RS_SQE_IGNORE_EOS : 0),
		.slot = slot,
		.prompt_len = prompt_len,
		.max_new_tokens = params->max_new_tokens,
		.output_len_hint = params->output_len_hint,
		.top_k = params->top_k,
		.temperature = params->temperature,
		.top_p = params->top_p > 0.0f ? params->top_p : 1.0f,
		.seed = params->seed,
	};
	rs_ring_producer_publish(&conn->sq, 1); /* C1 (R-tail) */
	rs_conn_ring_doorbell(conn);
	return (int)slot;
}

int rs_submit(struct rs_connection *conn, const struct rs_generate_params *params)
{
	if (!params->prompt || params->prompt_len == 0 || params->max_new_tokens == 0 ||
	    (params->flags & ~(RS_GENERATE_IGNORE_EOS | RS_GENERATE_NO_BOS)))
		return -EINVAL;
	if (params->prompt_len > conn->hdr.max_prompt_tokens ||
	    params->max_new_tokens > conn->hdr.max_output_tokens)
		return -E2BIG;
	int slot = rs_conn_take_slot(conn);
	if (slot < 0)
		return slot;
	memcpy(rs_segment_slot_prompt(conn->segment, &conn->hdr, (uint32_t)slot), params->prompt,
	       (size_t)params->prompt_len * sizeof(uint32_t));
	return rs_conn_submit_slot(conn, (uint32_t)slot, params, params->prompt_len);
}

int rs_submit_nop(struct rs_connection *conn, uint64_t user_data)
{
	int ret = submit_preflight(conn);
	if (ret)
		return ret;
	struct rs_sqe *sqe = rs_ring_producer_slot(&conn->sq, 0);
	*sqe = (struct rs_sqe){.user_data = user_data, .opcode = RS_OP_NOP, .slot = UINT32_MAX};
	rs_ring_producer_publish(&conn->sq, 1); /* C1 (R-tail) */
	rs_conn_ring_doorbell(conn);
	return 0;
}

int rs_cancel(struct rs_connection *conn, int request)
{
	if (request < 0 || (uint32_t)request >= conn->hdr.slot_count ||
	    conn->slot_state[request] != RS_SLOT_SUBMITTED)
		return -EINVAL;
	int ret = submit_preflight(conn);
	if (ret)
		return ret == -ESHUTDOWN ? 0 : ret; /* draining: it completes on its own */
	struct rs_sqe *sqe = rs_ring_producer_slot(&conn->sq, 0);
	*sqe = (struct rs_sqe){.opcode = RS_OP_CANCEL, .slot = (uint32_t)request};
	rs_ring_producer_publish(&conn->sq, 1); /* C1 (R-tail) */
	rs_conn_ring_doorbell(conn);
	return 0;
}

int rs_release(struct rs_connection *conn, int request)
{
	if (request < 0 || (uint32_t)request >= conn->hdr.slot_count ||
	    conn->slot_state[request] == RS_SLOT_FREE)
		return -EINVAL;
	if (conn->slot_state[request] != RS_SLOT_COMPLETED)
		return -EBUSY;
	conn->slot_state[request] = RS_SLOT_FREE;
	conn->free_slots[conn->n_free_slots++] = (uint32_t)request;
	return 0;
}
