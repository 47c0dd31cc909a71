/* The data path on the scheduler core: consume submissions (copy, then validate), hand
 * requests to the scheduling core (daemon/sched/), start the steps it plans on the
 * engine's lanes, publish tokens and completions, wake clients. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "daemon/daemon.h"
#include "shm/futex.h"
#include "shm/segment.h"

/* Why a client is to be notified: what an eventfd sleeper may wait for. */
#define NOTIFY_COMPLETION (1u << 0)
#define NOTIFY_OUTPUT	  (1u << 1)

static void mark_notify(struct rs_daemon *daemon, struct rs_client *client, unsigned reason)
{
	client->notify_reasons |= (uint8_t)reason;
	if (client->listed_for_notify)
		return;
	client->listed_for_notify = true;
	client->next_notify = daemon->notify_list;
	daemon->notify_list = client;
}

/* Completion entries this client can still be given without overflowing its CQ: the
 * free entries minus one reserved per in-flight request. Negative errno when the client
 * corrupted its CQ head. */
static int64_t cq_credit(struct rs_client *client)
{
	int64_t space = rs_ring_producer_space(&client->cq);
	if (space >= 0 && space <= client->inflight)
		space = rs_ring_producer_refresh(&client->cq);
	if (space < 0)
		return -EPROTO;
	return space - client->inflight;
}

/* Post one completion. The caller made sure there is room (cq_credit, or the entry the
 * request reserved when it was accepted). */
static void post_cqe(struct rs_daemon *daemon, struct rs_client *client, uint64_t user_data,
		     uint32_t slot, int32_t status, uint32_t output_len, uint32_t flags,
		     uint32_t cached_tokens)
{
	if (rs_ring_producer_space(&client->cq) <= 0) {
		/* Only a client that rewrote its CQ head can get here. We may be inside the
		 * scheduling core (a hook): the loop disconnects it. */
		client->broken = "protocol: completion ring head corrupted";
		mark_notify(daemon, client, 0);
		return;
	}
	struct rs_cqe *cqe = rs_ring_producer_slot(&client->cq, 0);
	cqe->user_data = user_data;
	cqe->slot = slot;
	cqe->status = status;
	cqe->output_len = output_len;
	cqe->flags = flags;
	cqe->cached_tokens = cached_tokens;
	cqe->reserved = 0;
	rs_ring_producer_publish(&client->cq, 1);
	mark_notify(daemon, client, NOTIFY_COMPLETION);
}

/* Microseconds from the submission to t (0: never). */
static uint32_t since_submission_us(const struct rs_request *request, uint64_t t)
{
	if (t == 0)
		return UINT32_MAX;
	uint64_t us = (t - request->submitted_ns) / 1000;
	return us < UINT32_MAX ? (uint32_t)us : UINT32_MAX;
}

/* The request's timings in daemon->last_timings: computed again only when one of its
 * times differs from the last finished request's. */
static void compute_timings(struct rs_daemon *daemon, const struct rs_request *request)
{
	typeof(daemon->last_timings) *last = &daemon->last_timings;
	if (last->submitted_ns == request->submitted_ns && last->now_ns == daemon->now_ns &&
	    last->admitted_ns == request->admitted_ns &&
	    last->first_token_ns == request->first_token_ns)
		return;
	last->submitted_ns = request->submitted_ns;
	last->admitted_ns = request->admitted_ns;
	last->first_token_ns = request->first_token_ns;
	last->now_ns = daemon->now_ns;
	last->queued_us = since_submission_us(request, request->admitted_ns);
	last->first_token_us = since_submission_us(request, request->first_token_ns);
	last->total_us = since_submission_us(request, daemon->now_ns);
}

/* The request's timings into its slot header, before its CQE publishes them. */
static void write_timings(struct rs_daemon *daemon, struct rs_client *client,
			  const struct rs_request *request)
{
	struct rs_slot_header *header =
	    rs_segment_slot(client->segment, &client->hdr, request->slot);
	header->queued_us = daemon->last_timings.queued_us;
	header->first_token_us = daemon->last_timings.first_token_us;
	header->total_us = daemon->last_timings.total_us;
	header->preemptions = request->preemptions;
}

void rs_scheduler_on_token(void *ctx, struct rs_request *request)
{
	struct rs_daemon *daemon = ctx;
	if (request->orphaned)
		return;
	/* R-progress: pairs with A-progress in rs_output (client); the token written by the
	 * engine before this store is visible to a reader of the count. */
	rs_store_release(request->output_count, request->generated);
	mark_notify(daemon, request->owner, NOTIFY_OUTPUT);
}

/* The completion, before the core's bookkeeping of the end (rs_sched_hooks.publish): a
 * client spinning on its CQ sees it while the core caches the prefix and frees blocks. */
void rs_scheduler_on_publish(void *ctx, struct rs_request *request, int32_t status)
{
	struct rs_daemon *daemon = ctx;
	struct rs_client *client = request->owner;
	/* For the slot and, in rs_scheduler_on_finish, the statistics (the core finishes
	 * no other request in between). */
	compute_timings(daemon, request);
	if (request->orphaned)
		return;
	write_timings(daemon, client, request);
	client->slot_request[request->slot] = NULL;
	client->inflight--;
	post_cqe(daemon, client, request->user_data, request->slot, status, request->generated,
		 request->hit_eos ? RS_CQE_EOS : 0, request->cached_tokens);
}

/* The accounting of the end, after rs_scheduler_on_publish: statistics, counts, the
 * request back to the pool. */
void rs_scheduler_on_finish(void *ctx, struct rs_request *request, int32_t status)
{
	struct rs_daemon *daemon = ctx;
	struct rs_client *client = request->owner;
	/* daemon->last_timings: this request's, from rs_scheduler_on_publish. */
	request->tenant->inflight--; /* the client's reference keeps its tenant */
	rs_stats_record_finish(daemon->stats_publisher, request->tenant, status,
			       request->first_token_ns != 0, daemon->last_timings.first_token_us,
			       daemon->last_timings.total_us, daemon->now_ns);
	if (status == 0)
		daemon->stats.requests_completed++;
	else
		daemon->stats.requests_failed++;
	client->alive_requests--;
	rs_request_put(&daemon->pool, request);
	if (client->state == RS_CLIENT_CLOSING)
		rs_client_maybe_free(daemon, client);
}

void rs_scheduler_cancel_client(struct rs_daemon *daemon, struct rs_client *client, int32_t status,
				bool orphan)
{
	for (uint32_t slot = 0; slot < client->hdr.slot_count; slot++) {
		struct rs_request *request = client->slot_request[slot];
		if (!request)
			continue;
		if (orphan) {
			/* Nobody will read a completion; the slot map dies with the client. */
			request->orphaned = true;
			client->slot_request[slot] = NULL;
		}
		/* Waiting ones end now; running ones at their step's end. */
		rs_sched_cancel(daemon->sched, request, status);
	}
}

/* Every tokens[i] < limit? Four at a time (GCC vector extensions: SSE2 on x86-64, the
 * generic lowering elsewhere); -O2 does not vectorize the scalar loop, which cost 7
 * instructions a token on every prompt. */
static bool tokens_below(const uint32_t *tokens, uint32_t n, uint32_t limit)
{
	typedef uint32_t u32x4 __attribute__((vector_size(16)));
	if (limit == 0)
		return n == 0;
	/* v > limit - 1 rather than v >= limit: SSE2 has only a greater-than. */
	uint32_t top = limit - 1;
	u32x4 bound = {top, top, top, top}, bad = {0, 0, 0, 0};
	uint32_t i = 0;
	for (; i + 4 <= n; i += 4) {
		u32x4 v;
		memcpy(&v, tokens + i, sizeof(v));
		bad |= (u32x4)(v > bound);
	}
	uint32_t any = bad[0] | bad[1] | bad[2] | bad[3];
	for (; i < n; i++)
		any |= tokens[i] >= limit;
	return any == 0;
}

/* Validate a copied GENERATE submission and queue it. Returns 0, or the negative errno
 * the client gets in an error completion. */
static int accept_generate(struct rs_daemon *daemon, struct rs_client *client,
			   const struct rs_sqe *sqe)
{
	const struct rs_segment_header *hdr = &client->hdr; /* our copy, not the shared one */
	const struct rs_serving_engine *engine = daemon->engine;

	if (daemon->draining)
		return -ESHUTDOWN;
	if (sqe->slot >= hdr->slot_count)
		return -EINVAL;
	if (client->slot_request[sqe->slot])
		return -EBUSY;
	if (client->inflight >= hdr->max_inflight)
		return -EAGAIN;
	/* The tenant's limit, over all its connections (--config). */
	if (client->tenant->max_inflight &&
	    client->tenant->inflight >= client->tenant->max_inflight)
		return -EAGAIN;
	if (sqe->flags & ~RS_SQE_IGNORE_EOS)
		return -EINVAL;
	if (sqe->prompt_len == 0 || sqe->max_new_tokens == 0)
		return -EINVAL;
	if (sqe->prompt_len > hdr->max_prompt_tokens ||
	    sqe->max_new_tokens > hdr->max_output_tokens ||
	    (uint64_t)sqe->prompt_len + sqe->max_new_tokens > engine->max_seq_len)
		return -E2BIG;
	/* isfinite/comparisons reject NaN: a NaN fails every ordered comparison. */
	if (!isfinite(sqe->temperature) || sqe->temperature < 0.0f || !(sqe->top_p > 0.0f) ||
	    !(sqe->top_p <= 1.0f))
		return -EINVAL;

	struct rs_request *request = rs_request_get(&daemon->pool);
	if (!request)
		return -ENOMEM;
	if (rs_request_reserve(request, sqe->prompt_len, sqe->max_new_tokens,
			       rs_kv_block_size(engine->kv))) {
		rs_request_put(&daemon->pool, request);
		return -ENOMEM;
	}
	/* Copy the prompt out of shared memory first, then check the copy: the client may
	 * rewrite its slot while we read it, but not our copy. */
	const uint32_t *shared_prompt = rs_segment_slot_prompt(client->segment, hdr, sqe->slot);
	memcpy(request->tokens, shared_prompt, (size_t)sqe->prompt_len * sizeof(uint32_t));
	if (!tokens_below(request->tokens, sqe->prompt_len, engine->vocab_size)) {
		rs_request_put(&daemon->pool, request);
		return -ERANGE;
	}

	request->owner = client;
	request->tenant = client->tenant;
	request->user_data = sqe->user_data;
	request->slot = sqe->slot;
	request->ignore_eos = sqe->flags & RS_SQE_IGNORE_EOS;
	request->output_len_hint = sqe->output_len_hint;
	request->top_k = sqe->top_k;
	request->temperature = sqe->temperature;
	request->top_p = sqe->top_p;
	request->seed = sqe->seed;
	request->output = rs_segment_slot_output(client->segment, hdr, sqe->slot);
	request->output_count = &rs_segment_slot(client->segment, hdr, sqe->slot)->output_count;
	int ret = rs_sched_submit(daemon->sched, request);
	if (ret) {
		rs_request_put(&daemon->pool, request);
		return ret;
	}
	client->slot_request[sqe->slot] = request;
	client->inflight++;
	client->tenant->inflight++;
	client->alive_requests++;
	return 0;
}

static void handle_cancel(struct rs_daemon *daemon, struct rs_client *client,
			  const struct rs_sqe *sqe)
{
	if (sqe->slot >= client->hdr.slot_count)
		return;
	struct rs_request *request = client->slot_request[sqe->slot];
	if (!request)
		return; /* already completed: the cancel raced with the end, nothing to do */
	rs_sched_cancel(daemon->sched, request, -ECANCELED);
}

int rs_scheduler_poll_client(struct rs_daemon *daemon, struct rs_client *client)
{
	int64_t ready = rs_ring_consumer_ready(&client->sq);
	if (ready <= 0) {
		if (ready < 0)
			rs_client_disconnect(daemon, client,
					     "protocol: submission ring tail out of range");
		return ready < 0;
	}
	uint32_t consumed = 0;
	int64_t credit = -1; /* computed lazily: most entries need one */
	while (consumed < ready) {
		struct rs_sqe sqe;
		memcpy(&sqe, rs_ring_consumer_slot(&client->sq, consumed), sizeof(sqe));
		if (sqe.opcode == RS_OP_CANCEL) {
			handle_cancel(daemon, client, &sqe);
			consumed++;
			if (client->broken)
				break; /* its completion found the CQ corrupted */
			continue;
		}
		if (credit <= 0) {
			credit = cq_credit(client);
			if (credit < 0) {
				rs_client_disconnect(daemon, client,
						     "protocol: completion ring head out of range");
				return 1;
			}
			if (credit == 0)
				break; /* the client must consume completions first */
		}
		int status = sqe.opcode == RS_OP_GENERATE ? accept_generate(daemon, client, &sqe)
			     : sqe.opcode == RS_OP_NOP	  ? 0
							  : -EINVAL;
		if (sqe.opcode == RS_OP_GENERATE && status != 0 &&
		    sqe.slot < client->hdr.slot_count && status != -EBUSY) {
			/* Rejected: no timings (not the slot's previous request's). */
			struct rs_slot_header *header =
			    rs_segment_slot(client->segment, &client->hdr, sqe.slot);
			header->queued_us = header->first_token_us = header->total_us = 0;
			header->preemptions = 0;
		}
		if (sqe.opcode != RS_OP_GENERATE || status != 0)
			post_cqe(daemon, client, sqe.user_data,
				 sqe.slot < client->hdr.slot_count ? sqe.slot : UINT32_MAX, status,
				 0, 0, 0);
		credit--;
		consumed++;
		if (client->broken)
			break; /* a completion found the CQ corrupted */
	}
	if (consumed)
		rs_ring_consumer_release(&client->sq, consumed);
	/* Not inside the scheduling core here: disconnect at once. */
	if (client->broken)
		rs_client_disconnect(daemon, client, client->broken);
	return (int)consumed;
}

int rs_scheduler_run_lanes(struct rs_daemon *daemon)
{
	struct rs_serving_engine *engine = daemon->engine;
	int did = 0;
	for (uint32_t l = 0; l < engine->lanes; l++) {
		struct rs_lane *lane = &daemon->lanes[l];
		/* Two passes: a synchronous engine finishes a step inside step_start, and its
		 * tokens go out in the same iteration. */
		for (int pass = 0; pass < 2; pass++) {
			if (lane->step_in_flight) {
				int status = engine->ops->step_poll(engine, l);
				if (status == 0)
					break;
				lane->step_in_flight = false;
				rs_sched_step_done(daemon->sched, l, status < 0 ? status : 0);
				did++;
			}
			const struct rs_step_plan *plan = rs_sched_plan_step(daemon->sched, l);
			if (!plan)
				break;
			int ret = engine->ops->step_start(engine, l, plan);
			if (ret < 0)
				rs_sched_step_done(daemon->sched, l, ret);
			else
				lane->step_in_flight = true;
			did++;
		}
	}
	return did;
}

/* Queue a write to the client's eventfd; true when one was queued. Without an SQE the
 * wake-up is owed (we cleared the client's flag): the next round tries again. */
static bool write_event(struct rs_daemon *daemon, struct rs_client *client)
{
	if (client->event_fd < 0)
		return false; /* it armed without handing us an eventfd: nothing to wake */
	int ret = rs_control_write_event(daemon, client);
	if (ret == -EAGAIN) {
		client->event_write_owed = true;
		mark_notify(daemon, client, 0);
	}
	return ret == 0;
}

void rs_scheduler_notify_clients(struct rs_daemon *daemon)
{
	struct rs_client *client = daemon->notify_list;
	if (!client)
		return;
	daemon->notify_list = NULL;
	/* F-notify: orders our CQ tail and progress stores before the load of
	 * client_need_wakeup; pairs with the client's fence between its store of the flag
	 * and its re-check of the rings (F-wait in client-lib/completion.c, F-arm in
	 * client-lib/event.c). */
	rs_fence_seq_cst();
	bool event_writes = false;
	for (struct rs_client *next; client; client = next) {
		next = client->next_notify;
		client->listed_for_notify = false;
		unsigned reasons = client->notify_reasons;
		client->notify_reasons = 0;
		if (client->state == RS_CLIENT_ACTIVE && client->broken)
			rs_client_disconnect(daemon, client, client->broken);
		if (client->state != RS_CLIENT_ACTIVE)
			continue;
		if (client->event_write_owed) {
			client->event_write_owed = false;
			if (write_event(daemon, client))
				event_writes = true;
		}
		/* What would wake this client: a futex sleeper wakes for anything, an eventfd
		 * sleeper for what it armed (a completions-only loop sleeps through tokens). */
		uint32_t wanted = RS_NEED_WAKEUP_FUTEX |
				  (reasons & NOTIFY_COMPLETION ? RS_NEED_WAKEUP_COMPLETION : 0) |
				  (reasons & NOTIFY_OUTPUT ? RS_NEED_WAKEUP_OUTPUT : 0);
		/* Relaxed load first: the exchange is a write to the client's line, and most of
		 * the time the client is spinning, not sleeping. Ordered after our stores by
		 * F-notify. */
		if (!(rs_load_relaxed(&client->shared->client_need_wakeup) & wanted))
			continue;
		/* The client may have stored another value since the load: we clear whatever
		 * is there, so we wake for every bit we clear, wanted or not. */
		uint32_t armed = rs_exchange_acq_rel(&client->shared->client_need_wakeup, 0);
		if (!armed)
			continue;
		/* R-bell: pairs with the client's acquire load of the doorbell (A-bell). */
		rs_fetch_add_release(&client->shared->client_doorbell, 1);
		if (armed & ~RS_NEED_WAKEUP_EVENT) { /* FUTEX, or an unknown bit: wake it */
			rs_futex_wake(&client->shared->client_doorbell, 1 << 30);
			daemon->stats.client_futex_wakes++;
		}
		if ((armed & RS_NEED_WAKEUP_EVENT) && write_event(daemon, client))
			event_writes = true;
	}
	/* One system call for every eventfd to write in this round. */
	if (event_writes)
		io_uring_submit(&daemon->ring);
}

uint64_t rs_scheduler_next_deadline(struct rs_daemon *daemon)
{
	struct rs_serving_engine *engine = daemon->engine;
	/* The planner's own deadline (a bin to flush), on the loop's clock. */
	uint64_t earliest = rs_sched_next_wakeup_ns(daemon->sched);
	for (uint32_t l = 0; l < engine->lanes; l++) {
		if (!daemon->lanes[l].step_in_flight)
			continue;
		uint64_t deadline = engine->ops->step_deadline_ns(engine, l);
		if (deadline == 0) {
			/* Unknown: a completion descriptor wakes us, or we keep polling. */
			if (engine->ops->step_fd && engine->ops->step_fd(engine, l) >= 0)
				continue;
			return UINT64_MAX;
		}
		if (earliest == 0 || deadline < earliest)
			earliest = deadline;
	}
	return earliest;
}

bool rs_scheduler_busy(const struct rs_daemon *daemon)
{
	return rs_sched_busy(daemon->sched);
}
