/* The scheduling core: which request runs next, with whom, on which lane, in which KV
 * blocks. No I/O in it (no io_uring, no shared memory, no threads, no system calls): the
 * daemon's data path (daemon/scheduler.c), the unit tests and the simulator drive it
 * alike, with the time read from an injected clock.
 *
 * It owns the tenants, the waiting requests (through the admission policy,
 * admission.h), the lanes and what runs on them (through the batch planner, planner.h),
 * and the KV manager: every request's block table, taken block by block as the sequence
 * grows, and the radix prefix cache (prefix_cache.h).
 *
 * The cycle, per lane:
 *   plan = rs_sched_plan_step(sched, lane)   admission + batch planning + KV blocks
 *   the engine runs the plan's steps          (it writes each sampled id to out_token)
 *   rs_sched_step_done(sched, lane, status)  progress: tokens checked and appended,
 *                                             prefixes cached, requests finished
 * The core alone moves a request's progress; the engine only runs a fully planned step.
 *
 * Memory pressure: when a sequence needs a block and none is free, unlocked cached
 * prefixes are evicted first (those no waiting request matches, then the least recently
 * used); then the youngest running request of
 * the lane is preempted: its blocks go back, it returns to the front of its tenant's
 * queue, and when admitted again it recomputes its prompt and the output it had
 * produced. Sampling is stateless (kernels/engine/sampling.h) and steps are batch
 * invariant, so its output is the same as if it had never been preempted.
 *
 * Workers (config.workers > 1, rs_sched_create_workers): engine instances with their own
 * KV pool, prefix cache and lanes. Under the baseline dispatch policies one admission
 * policy orders all waiting requests, and at admission the dispatch policy (dispatch.h)
 * picks the worker among those with a free seat. Under d2lpm a worker with a free seat
 * chooses the request itself (DLPM with its own deficits over its own prefix cache,
 * dispatch.h). Either way the request lives there (a preempted one is dispatched again
 * when readmitted).
 *
 * Results go out through hooks: a token (the data path publishes it) and a request's end
 * (the data path completes it and may free it: the core never touches it again). A hook
 * may call rs_sched_cancel. No allocation per request: requests come from the data
 * path's pool, and every structure is sized at rs_sched_create. */
#ifndef RS_DAEMON_SCHED_SCHED_H
#define RS_DAEMON_SCHED_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/sched/admission.h"
#include "daemon/sched/dispatch.h"
#include "daemon/sched/prefix_cache.h"
#include "daemon/sched/request.h"
#include "daemon/sched/tenant.h"
#include "kernels/engine/engine.h"

struct rs_sched;
struct rs_planner_ops;

#define RS_MULTIBIN_MAX_BINS 32

/* The multi-bin planner's settings (planner_multibin.c, docs/scheduling.md). */
struct rs_multibin_params {
	uint32_t bins;	      /* k, 1 .. RS_MULTIBIN_MAX_BINS (1: plain batching) */
	uint32_t batch;	      /* B: requests a batch gathers, <= max_batch; 0: max_batch */
	bool continuous;      /* a lane refills freed seats from its bin each step; false
			       * (static): a batch runs until its last member ends */
	uint64_t deadline_ns; /* a bin whose oldest request has waited this long runs with
			       * what it has (no starvation); 0: 1 s. Longer than a batch
			       * takes, or bins run before they fill */
	/* Fixed bins: bin i < k - 1 holds predicted lengths <= boundaries[i] (ascending).
	 * All zero: equal-probability quantiles of the observed lengths, recomputed as they
	 * come (the paper's Lemma 4.1). */
	uint32_t boundaries[RS_MULTIBIN_MAX_BINS - 1];
};

struct rs_sched_config {
	uint32_t lanes;	    /* independent step queues (CUDA streams, CPU threads), per worker */
	uint32_t max_batch; /* requests running on a lane at most */
	uint32_t max_batch_tokens; /* tokens in one step at most (decodes + prefill chunks) */
	uint32_t max_tenants;
	uint32_t vocab_size; /* sampled ids are checked against it */
	uint32_t eos_token;  /* UINT32_MAX: none */
	/* More tokens that end a generation as eos_token does (chat end-of-turn tokens). */
	uint32_t n_end_tokens; /* <= 8 */
	uint32_t end_tokens[8];
	bool prefix_cache; /* share cached prefixes between requests */
	/* Free KV blocks (not promised to anyone) that rs_sched_idle keeps on each worker
	 * by evicting cached prefixes ahead of need; 0: none (evictions only when an
	 * admission or a sequence's growth needs the blocks). */
	uint32_t kv_reserve_blocks;
	struct rs_admission_params admission; /* max_tenants is taken from above */
	const struct rs_planner_ops *planner; /* planner.h; NULL: continuous batching */
	struct rs_multibin_params multibin;   /* for rs_planner_multibin */
	/* Workers (engine instances, each its own KV pool, prefix cache and `lanes` lanes;
	 * dispatch.h); 0 or 1: one, and the core is what it is without workers. Under the
	 * multibin planner each worker has its own bins (of the requests dispatched to
	 * it), which its lanes take batches from. */
	uint32_t workers;
	struct rs_dispatch_params dispatch;
};

struct rs_sched_hooks {
	uint64_t (*now_ns)(void *ctx);
	/* The request produced output token request->generated - 1 (in request->tokens
	 * after the prompt, and where the engine wrote it). */
	void (*token)(void *ctx, struct rs_request *request);
	/* The request is over: status 0 (max_new_tokens or end of sequence), the status
	 * given to rs_sched_cancel, -EPROTO (an output token out of range: its output memory
	 * was overwritten), or a failed step's errno. The core is done with it. */
	void (*finish)(void *ctx, struct rs_request *request, int32_t status);
	/* Optional, called just before finish with the same status: the request's result
	 * (its tokens, generated, hit_eos, cached_tokens, times) is final, so the data path
	 * can complete it to its client here. The core then caches its prefix and releases
	 * its seat and blocks, then calls finish (the accounting; the request may be freed
	 * there), so that the client's wait does not include that bookkeeping. The request
	 * stays the core's until finish: publish must not free it nor call into the core.
	 * NULL: finish alone. */
	void (*publish)(void *ctx, struct rs_request *request, int32_t status);
	void *ctx;
};

/* A lane's step: requests[i] runs steps[i] (kernels/engine/engine.h: tokens, positions,
 * block table, sampling, where the sampled id goes). */
struct rs_step_plan {
	struct rs_request **requests;
	struct rs_seq_step *steps;
	uint32_t *sampled; /* out_token of requests without output memory (tests) */
	uint32_t n;
	uint32_t n_tokens;
};

struct rs_sched_stats {
	uint64_t admitted;
	uint64_t finished;
	uint64_t preemptions;
	uint64_t evicted_blocks;
	uint64_t prompt_tokens; /* admitted prompt tokens (re-admissions not counted) */
	uint64_t cached_tokens; /* of which served by the prefix cache */
	uint64_t steps;
	uint64_t step_tokens;
};

/* Create the core over the KV block allocator kv (shared with the engine, which holds
 * the storage). Returns 0, -EINVAL (a zero limit), -ENOMEM. */
int rs_sched_create(const struct rs_sched_config *config, struct rs_kv_cache *kv,
		    const struct rs_sched_hooks *hooks, struct rs_sched **out);

/* The same with config->workers workers, worker w over the block allocator kvs[w] (every
 * one with the same block size). Lane l (0 .. workers x lanes) belongs to worker
 * l / config->lanes. Returns 0, -EINVAL, -ENOMEM. */
int rs_sched_create_workers(const struct rs_sched_config *config, struct rs_kv_cache *const *kvs,
			    const struct rs_sched_hooks *hooks, struct rs_sched **out);

/* Lanes over all workers (workers x config.lanes), and the worker a lane belongs to. */
uint32_t rs_sched_lanes(const struct rs_sched *sched);
uint32_t rs_sched_lane_worker(const struct rs_sched *sched, uint32_t lane);

/* Workers (config.workers, at least 1). */
uint32_t rs_sched_workers(const struct rs_sched *sched);

/* Requests admitted to the worker (staged or running), not yet finished. */
uint32_t rs_sched_worker_load(const struct rs_sched *sched, uint32_t worker);

/* False once the worker was taken out of service (dispatch.max_failures failed steps in a
 * row): nothing is dispatched to it and its lanes plan nothing. */
bool rs_sched_worker_in_service(const struct rs_sched *sched, uint32_t worker);

/* Requests that ended on the worker with status 0. */
uint64_t rs_sched_worker_served(const struct rs_sched *sched, uint32_t worker);

/* The worker's pool and prefix cache (NULL when disabled). */
struct rs_kv_cache *rs_sched_worker_kv(const struct rs_sched *sched, uint32_t worker);
struct rs_prefix_cache *rs_sched_worker_cache(const struct rs_sched *sched, uint32_t worker);

/* The dispatch policy's state (NULL with one worker), for tests and statistics. */
const struct rs_dispatch *rs_sched_dispatch(const struct rs_sched *sched);

/* Free the core. Every request must have finished. NULL is allowed. */
void rs_sched_destroy(struct rs_sched *sched);

/* The tenant (uid, name) with `weight`, for a new connection; NULL when the table is
 * full. Release it when the connection goes. */
struct rs_tenant *rs_sched_tenant_acquire(struct rs_sched *sched, uid_t uid, const char *name,
					  double weight);
void rs_sched_tenant_release(struct rs_sched *sched, struct rs_tenant *tenant);

/* Queue a request. The caller filled the submission (tenant, sampling, tokens[0 ..
 * prompt_len), max_new_tokens; rs_request_reserve) and output (or NULL: the plan's
 * scratch). Returns 0, or -E2BIG when prompt and output can never fit the KV cache
 * (nothing is queued then). */
int rs_sched_submit(struct rs_sched *sched, struct rs_request *request);

/* End a request with status: at once when it waits or runs between steps (the finish
 * hook runs before this returns), at the end of its step when one is in flight. */
void rs_sched_cancel(struct rs_sched *sched, struct rs_request *request, int32_t status);

/* Plan the next step of an idle lane: admit requests and build the step. Returns the
 * plan, or NULL when the lane has nothing to run. The plan stays valid, and the lane
 * busy, until rs_sched_step_done. */
const struct rs_step_plan *rs_sched_plan_step(struct rs_sched *sched, uint32_t lane);

/* The lane's step is over: status 0 (every out_token written) or the negative errno the
 * engine reported (its requests fail with it). */
void rs_sched_step_done(struct rs_sched *sched, uint32_t lane, int status);

/* Work for the caller's spare time (the daemon: at the end of each working loop turn,
 * once the turn's completions are out): refill each worker's reserve of free KV blocks
 * (config.kv_reserve_blocks) by evicting unlocked cached prefixes in the cache's eviction
 * order (rs_prefix_cache_evict), so that admissions rarely evict while a client waits.
 * Counted in stats.evicted_blocks. Returns the blocks freed; a few loads when every
 * reserve is full. */
uint32_t rs_sched_idle(struct rs_sched *sched);

/* When the planner next wants rs_sched_plan_step called even if nothing else happens (a
 * deadline), on the core's clock; 0 when it has no such time. */
uint64_t rs_sched_next_wakeup_ns(const struct rs_sched *sched);

/* Requests waiting or running. */
bool rs_sched_busy(const struct rs_sched *sched);
uint32_t rs_sched_waiting(const struct rs_sched *sched);
uint32_t rs_sched_running(const struct rs_sched *sched);

/* Check the core's invariants between steps (lanes, counts, promised blocks, every block a
 * running request holds in use); for tests. Returns 0 or -EUCLEAN with the broken one on
 * stderr. */
int rs_sched_check(const struct rs_sched *sched);

const struct rs_sched_stats *rs_sched_stats(const struct rs_sched *sched);

/* The multi-bin planner's figures (NULL under another planner). */
struct rs_multibin_stats {
	uint64_t batches, batch_requests; /* batches formed, requests they took */
	uint64_t predictions;		  /* finished requests that had a predicted length */
	double abs_error_sum;		  /* of |predicted - actual| over those */
	uint64_t right_bin;		  /* of those, predicted into their actual length's bin */
};
const struct rs_multibin_stats *rs_multibin_stats(const struct rs_sched *sched);

/* The multi-bin planner's current bin boundaries into out (k - 1 of them); returns k - 1,
 * or 0 under another planner. */
uint32_t rs_multibin_boundaries(const struct rs_sched *sched, uint32_t *out);
const struct rs_tenant_table *rs_sched_tenants(const struct rs_sched *sched);
struct rs_kv_cache *rs_sched_kv(const struct rs_sched *sched);
/* The prefix cache, or NULL when disabled (for checks in tests). */
struct rs_prefix_cache *rs_sched_prefix_cache(const struct rs_sched *sched);

#endif
