/* The scheduling core's state and the services its planners build steps with. Private to
 * daemon/sched/. */
#ifndef RS_DAEMON_SCHED_SCHED_INTERNAL_H
#define RS_DAEMON_SCHED_SCHED_INTERNAL_H

#include "daemon/sched/dispatch.h"
#include "daemon/sched/planner.h"
#include "daemon/sched/router.h"
#include "daemon/sched/sched.h"

/* A worker: an engine instance with its own KV pool, prefix cache and lanes (lanes
 * [index * config.lanes, (index + 1) * config.lanes) of sched->lanes). */
struct rs_sched_worker {
	uint32_t index;
	struct rs_kv_cache *kv;
	struct rs_prefix_cache *cache; /* NULL: no prefix sharing */
	uint32_t promised;	       /* blocks promised to its admitted requests, not yet taken */
	uint32_t load;	   /* requests admitted to it (staged or seated), not finished */
	uint64_t served;   /* requests that ended there with status 0 */
	uint32_t failures; /* its steps failed in a row */
	bool out;	   /* out of service (dispatch.max_failures): no dispatch, no steps */
};

struct rs_sched_lane {
	uint32_t index;
	struct rs_sched_worker *worker;
	/* Admitted requests in admission order, max_batch entries. A request that stops
	 * running leaves a hole (NULL) there, closed at the next plan: no O(n) move per end. */
	struct rs_request **running;
	uint32_t n_running; /* entries in use, holes included */
	uint32_t n_holes;
	struct rs_step_plan plan; /* the step being built or in flight */
	bool in_flight;
};

struct rs_sched {
	struct rs_sched_config config;
	struct rs_sched_hooks hooks;
	const struct rs_planner_ops *planner;
	void *planner_state;
	/* Worker 0's pool and cache (the only ones with one worker), for the accessors. */
	struct rs_kv_cache *kv;
	uint32_t block_size; /* every worker's */
	/* log2(block_size) when it is a power of two (always, in practice), else 0: the
	 * hot path's divisions by it become shifts (a division is 20-40 cycles). */
	uint32_t block_shift;
	/* Waiting requests are watched by the prefix cache: a cache, one worker and a
	 * policy that orders by cached prefix (lpm, dlpm). */
	bool watch_waiters;
	struct rs_prefix_cache *cache;
	struct rs_sched_worker *workers;
	uint32_t n_workers;
	uint32_t n_lanes; /* n_workers * config.lanes */
	/* Requests a worker may hold admitted (dispatch offers it only below that): its lanes'
	 * seats, plus what the planner stages for it (multibin: k x B). */
	uint32_t worker_seats;
	uint32_t workers_out; /* workers taken out of service */
	bool *in_service;     /* per worker: not taken out */
	/* Dispatch at arrival (dispatch.at_arrival): the router, and each worker's waiting
	 * requests in arrival order (preempted ones at the head), through their pull links. */
	struct rs_router *router;
	struct rs_request **routed_head, **routed_tail;
	struct rs_dispatch *dispatch;		  /* NULL with one worker */
	struct rs_dispatch_candidate *candidates; /* n_workers entries */
	uint32_t min_kv_blocks;			  /* the smallest worker pool */
	/* When workers choose their requests (d2lpm, several workers): each tenant's
	 * waiting requests in admission order (preempted ones at the head), by tenant id,
	 * and the tenants with any, unordered, with each one's index there. */
	bool workers_choose;
	struct rs_request **pull_head, **pull_tail;
	struct rs_tenant **backlogged;
	uint32_t *backlogged_index;
	uint32_t n_backlogged;
	struct rs_admission *admission;
	struct rs_tenant_table tenants;
	struct rs_sched_lane *lanes;
	uint32_t running;
	uint32_t parked; /* requests set aside for their tenant's KV share */
	/* Staged requests (admitted, not yet seated) in admission order, through their
	 * queue links; counted in `running`. */
	struct rs_request *staged_head, *staged_tail;
	uint32_t staged;
	uint64_t next_arrival;
	struct rs_tenant **charged; /* tenants with output tokens in the step being done */
	uint32_t n_charged;
	uint32_t *match_scratch; /* block ids of a match: kv n_blocks entries */
	struct rs_sched_stats stats;
};

/* x / block_size: a shift when the block size is a power of two. */
static inline uint32_t rs_sched_per_block(const struct rs_sched *sched, uint64_t x)
{
	return (uint32_t)(sched->block_shift ? x >> sched->block_shift : x / sched->block_size);
}

/* Positions a running request still has to feed before it can sample its next token:
 * the prompt and every output token but the newest, which is fed by the next step. */
static inline uint32_t rs_sched_context(const struct rs_request *request)
{
	return request->prompt_len + request->generated;
}

/* Admit the admission policy's next request into the lane when it has a seat, and the
 * KV cache has (after eviction, never preemption) the blocks its whole uncached context
 * needs, which are then promised to it. Returns the request, now running on the lane, or
 * NULL. It may close the lane's holes (compact lane->running, renumbering seats): do not
 * hold an index into lane->running across it. */
struct rs_request *rs_sched_admit_next(struct rs_sched *sched, struct rs_sched_lane *lane);

/* The same admission without a seat: the request joins the tail of the staged list
 * (state RS_REQUEST_STAGED; charged, its blocks promised) until rs_sched_seat. */
struct rs_request *rs_sched_admit_staged(struct rs_sched *sched);

/* The same, for a lane that wants requests staged on its worker: under the baselines
 * the admission policy's next request, staged on the worker dispatch gives it (maybe
 * another); under d2lpm the lane's worker chooses it (and may route it to another
 * worker caching more of it). NULL: nothing admitted. */
struct rs_request *rs_sched_admit_staged_for(struct rs_sched *sched,
					     const struct rs_sched_lane *lane);

/* Seat a staged request in the lane (which has a free seat). It may close the lane's
 * holes, as rs_sched_admit_next. */
void rs_sched_seat(struct rs_sched *sched, struct rs_sched_lane *lane, struct rs_request *request);

/* Plan the lane's seated requests within *budget tokens (which it lowers): one decode
 * token for each that decodes, then prefill chunks in seat order. False when a request
 * could not get its blocks (the lane's youngest were preempted, possibly it): plan no
 * admission this step then. */
bool rs_planner_plan_seated(struct rs_sched *sched, struct rs_sched_lane *lane, uint32_t *budget);

/* Seats the lane has free. */
static inline uint32_t rs_sched_free_seats(const struct rs_sched *sched,
					   const struct rs_sched_lane *lane)
{
	return sched->config.max_batch - (lane->n_running - lane->n_holes);
}

/* Give a running request of the lane, not yet in the plan being built, blocks for
 * `positions` positions: its promised ones, else free ones nobody was promised, else
 * evicting cached prefixes, else preempting the lane's youngest running requests not in
 * the plan. Returns 0, or -ENOMEM when the request itself was preempted (it was the
 * youngest). */
int rs_sched_reserve_more(struct rs_sched *sched, struct rs_sched_lane *lane,
			  struct rs_request *request, uint32_t needed);

/* Inline: most calls need no block (a decode within its last block) or only blocks
 * promised at admission. rs_sched_reserve_more is the rest: unpromised blocks, the
 * tenant's share, eviction, preemption. */
static inline int rs_sched_reserve(struct rs_sched *sched, struct rs_sched_lane *lane,
				   struct rs_request *request, uint32_t positions)
{
	uint32_t needed = rs_sched_per_block(sched, (uint64_t)positions + sched->block_size - 1);
	/* Promised blocks are free (the worker never promises more than its free blocks). */
	while (request->n_blocks < needed && request->promised) {
		int block = rs_kv_block_alloc(lane->worker->kv);
		if (block < 0)
			break; /* cannot happen (see above); rs_sched_reserve_more decides */
		request->blocks[request->n_blocks++] = (uint32_t)block;
		request->promised--;
		lane->worker->promised--;
	}
	if (request->n_blocks >= needed)
		return 0;
	return rs_sched_reserve_more(sched, lane, request, needed);
}

/* Append n_tokens of the request's sequence, from position request->computed, to the
 * lane's plan; it samples when they reach the end of the context. */
static inline void rs_sched_plan_add(struct rs_sched *sched, struct rs_sched_lane *lane,
				     struct rs_request *request, uint32_t n_tokens)
{
	struct rs_step_plan *plan = &lane->plan;
	uint32_t i = plan->n++;
	struct rs_seq_step *step = &plan->steps[i];
	plan->requests[i] = request;
	step->tokens = request->tokens + request->computed;
	step->n_tokens = n_tokens;
	step->start_pos = request->computed;
	step->block_table = request->blocks;
	step->n_blocks = request->n_blocks;
	step->sampling = (struct rs_sampling_params){.temperature = request->temperature,
						     .top_k = request->top_k,
						     .top_p = request->top_p,
						     .seed = request->seed};
	step->sample = request->computed + n_tokens == rs_sched_context(request);
	step->out_token =
	    request->output ? &request->output[request->generated] : &plan->sampled[i];
	plan->n_tokens += n_tokens;
	request->in_step = true;
}

#endif
