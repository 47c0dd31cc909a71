/* The scheduling core: requests' lifecycle, lanes, KV blocks, the prefix cache. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/admission_ops.h"
#include "daemon/sched/sched_internal.h"

static uint32_t blocks_for(const struct rs_sched *sched, uint64_t positions)
{
	return rs_sched_per_block(sched, positions + sched->block_size - 1);
}

static uint64_t now(const struct rs_sched *sched)
{
	return sched->hooks.now_ns(sched->hooks.ctx);
}

static struct rs_request *waiter_request(struct rs_prefix_waiter *waiter)
{
	return (struct rs_request *)((char *)waiter - offsetof(struct rs_request, waiter));
}

static void on_match_changed(void *ctx, struct rs_prefix_waiter *waiter, uint32_t old_blocks)
{
	struct rs_sched *sched = ctx;
	rs_admission_match_changed(sched->admission, waiter_request(waiter), old_blocks);
}

int rs_sched_create(const struct rs_sched_config *config, struct rs_kv_cache *kv,
		    const struct rs_sched_hooks *hooks, struct rs_sched **out)
{
	if (config->workers > 1)
		return -EINVAL; /* rs_sched_create_workers */
	return rs_sched_create_workers(config, &kv, hooks, out);
}

int rs_sched_create_workers(const struct rs_sched_config *config, struct rs_kv_cache *const *kvs,
			    const struct rs_sched_hooks *hooks, struct rs_sched **out)
{
	uint32_t n_workers = config->workers ? config->workers : 1;
	if (!config->lanes || !config->max_batch || !config->max_batch_tokens ||
	    !config->max_tenants || !config->vocab_size || !kvs || !hooks->now_ns ||
	    !hooks->token || !hooks->finish)
		return -EINVAL;
	for (uint32_t w = 0; w < n_workers; w++)
		if (!kvs[w] || rs_kv_block_size(kvs[w]) != rs_kv_block_size(kvs[0]))
			return -EINVAL;
	struct rs_sched *sched = calloc(1, sizeof(*sched));
	if (!sched)
		return -ENOMEM;
	sched->config = *config;
	sched->config.workers = n_workers;
	sched->hooks = *hooks;
	sched->planner = config->planner ? config->planner : &rs_planner_continuous;
	sched->kv = kvs[0];
	sched->block_size = rs_kv_block_size(kvs[0]);
	if (sched->block_size > 1 && !(sched->block_size & (sched->block_size - 1)))
		sched->block_shift = (uint32_t)__builtin_ctz(sched->block_size);
	sched->n_workers = n_workers;
	sched->n_lanes = n_workers * config->lanes;
	sched->worker_seats = config->lanes * config->max_batch; /* the planner may add */
	struct rs_admission_params admission = config->admission;
	admission.max_tenants = config->max_tenants;
	int ret = rs_tenant_table_init(&sched->tenants, config->max_tenants);
	if (!ret)
		ret = rs_admission_create(&admission, &sched->admission);
	if (ret)
		goto fail;
	ret = -ENOMEM;
	sched->workers = calloc(n_workers, sizeof(*sched->workers));
	sched->candidates = calloc(n_workers, sizeof(*sched->candidates));
	sched->in_service = calloc(n_workers, sizeof(*sched->in_service));
	if (!sched->workers || !sched->candidates || !sched->in_service)
		goto fail;
	for (uint32_t w = 0; w < n_workers; w++)
		sched->in_service[w] = true;
	uint32_t most_blocks = 0;
	sched->min_kv_blocks = UINT32_MAX;
	for (uint32_t w = 0; w < n_workers; w++) {
		struct rs_sched_worker *worker = &sched->workers[w];
		worker->index = w;
		worker->kv = kvs[w];
		uint32_t n_blocks = rs_kv_n_blocks(kvs[w]);
		most_blocks = n_blocks > most_blocks ? n_blocks : most_blocks;
		sched->min_kv_blocks =
		    n_blocks < sched->min_kv_blocks ? n_blocks : sched->min_kv_blocks;
		if (config->prefix_cache) {
			struct rs_prefix_cache_hooks cache_hooks = {
			    .match_changed = on_match_changed, .ctx = sched};
			if ((ret = rs_prefix_cache_create(kvs[w], &cache_hooks, &worker->cache)) !=
			    0)
				goto fail;
			ret = -ENOMEM;
		}
	}
	sched->cache = sched->workers[0].cache;
	sched->watch_waiters =
	    sched->cache && n_workers == 1 && rs_admission_orders_by_prefix(sched->admission);
	if (n_workers > 1) {
		struct rs_dispatch_params dispatch = config->dispatch;
		if (!dispatch.load_threshold)
			dispatch.load_threshold = config->max_batch / 2 ? config->max_batch / 2 : 1;
		if ((ret = rs_dispatch_create(&dispatch, n_workers, config->max_tenants,
					      rs_admission_w_prompt(sched->admission),
					      rs_admission_w_output(sched->admission),
					      &sched->dispatch)) != 0)
			goto fail;
		ret = -ENOMEM;
		sched->workers_choose = rs_dispatch_worker_chooses(sched->dispatch);
	}
	if (n_workers > 1 && config->dispatch.at_arrival) {
		ret = -EINVAL;
		if (sched->workers_choose)
			goto fail; /* d2lpm's workers choose at admission */
		if ((ret = rs_router_create(n_workers, sched->block_size, 0, &sched->router)) != 0)
			goto fail;
		ret = -ENOMEM;
		sched->routed_head = calloc(n_workers, sizeof(*sched->routed_head));
		sched->routed_tail = calloc(n_workers, sizeof(*sched->routed_tail));
		if (!sched->routed_head || !sched->routed_tail)
			goto fail;
	}
	if (sched->workers_choose) {
		uint32_t n = config->max_tenants;
		sched->pull_head = calloc(n, sizeof(*sched->pull_head));
		sched->pull_tail = calloc(n, sizeof(*sched->pull_tail));
		sched->backlogged = calloc(n, sizeof(*sched->backlogged));
		sched->backlogged_index = calloc(n, sizeof(*sched->backlogged_index));
		if (!sched->pull_head || !sched->pull_tail || !sched->backlogged ||
		    !sched->backlogged_index)
			goto fail;
	}
	sched->match_scratch = calloc(most_blocks, sizeof(uint32_t));
	sched->charged = calloc(config->max_batch, sizeof(*sched->charged));
	sched->lanes = calloc(sched->n_lanes, sizeof(*sched->lanes));
	if (!sched->match_scratch || !sched->charged || !sched->lanes)
		goto fail;
	for (uint32_t l = 0; l < sched->n_lanes; l++) {
		struct rs_sched_lane *lane = &sched->lanes[l];
		lane->index = l;
		lane->worker = &sched->workers[l / config->lanes];
		lane->running = calloc(config->max_batch, sizeof(*lane->running));
		lane->plan.requests = calloc(config->max_batch, sizeof(*lane->plan.requests));
		lane->plan.steps = calloc(config->max_batch, sizeof(*lane->plan.steps));
		lane->plan.sampled = calloc(config->max_batch, sizeof(*lane->plan.sampled));
		if (!lane->running || !lane->plan.requests || !lane->plan.steps ||
		    !lane->plan.sampled)
			goto fail;
	}
	if (sched->planner->create && (ret = sched->planner->create(sched)) != 0)
		goto fail;
	*out = sched;
	return 0;
fail:
	rs_sched_destroy(sched);
	return ret;
}

void rs_sched_destroy(struct rs_sched *sched)
{
	if (!sched)
		return;
	if (sched->planner_state && sched->planner->destroy)
		sched->planner->destroy(sched);
	for (uint32_t l = 0; sched->lanes && l < sched->n_lanes; l++) {
		struct rs_sched_lane *lane = &sched->lanes[l];
		free(lane->running);
		free(lane->plan.requests);
		free(lane->plan.steps);
		free(lane->plan.sampled);
	}
	free(sched->lanes);
	free(sched->match_scratch);
	free(sched->charged);
	for (uint32_t w = 0; sched->workers && w < sched->n_workers; w++)
		rs_prefix_cache_destroy(sched->workers[w].cache);
	free(sched->workers);
	free(sched->candidates);
	free(sched->pull_head);
	free(sched->pull_tail);
	free(sched->backlogged);
	free(sched->backlogged_index);
	free(sched->in_service);
	free(sched->routed_head);
	free(sched->routed_tail);
	rs_router_destroy(sched->router);
	rs_dispatch_destroy(sched->dispatch);
	rs_admission_destroy(sched->admission);
	rs_tenant_table_destroy(&sched->tenants);
	free(sched);
}

struct rs_tenant *rs_sched_tenant_acquire(struct rs_sched *sched, uid_t uid, const char *name,
					  double weight)
{
	return rs_tenant_acquire(&sched->tenants, uid, name, weight);
}

void rs_sched_tenant_release(struct rs_sched *sched, struct rs_tenant *tenant)
{
	rs_tenant_release(&sched->tenants, tenant);
}

/* The waiting queues through pull_next/pull_prev (a tenant's list when workers choose, a
 * worker's queue under dispatch at arrival; a request is in one at most): request goes
 * right after `after`, or first when after is NULL. */
static void queue_insert_after(struct rs_request **head, struct rs_request **tail,
			       struct rs_request *after, struct rs_request *request)
{
	request->pull_prev = after;
	request->pull_next = after ? after->pull_next : *head;
	if (request->pull_next)
		request->pull_next->pull_prev = request;
	else
		*tail = request;
	if (after)
		after->pull_next = request;
	else
		*head = request;
}

static void queue_unlink(struct rs_request **head, struct rs_request **tail,
			 struct rs_request *request)
{
	if (request->pull_prev)
		request->pull_prev->pull_next = request->pull_next;
	else
		*head = request->pull_next;
	if (request->pull_next)
		request->pull_next->pull_prev = request->pull_prev;
	else
		*tail = request->pull_prev;
	request->pull_next = request->pull_prev = NULL;
}

/* Workers choose (d2lpm): the request joins its tenant's waiting list in the core, at the
 * head when it comes back after preemption; its tenant becomes backlogged with its first. */
static void pull_enqueue(struct rs_sched *sched, struct rs_request *request, bool front)
{
	uint32_t id = request->tenant->id;
	struct rs_request **head = &sched->pull_head[id], **tail = &sched->pull_tail[id];
	if (!*head) {
		sched->backlogged_index[id] = sched->n_backlogged;
		sched->backlogged[sched->n_backlogged++] = request->tenant;
	}
	queue_insert_after(head, tail, front ? NULL : *tail, request);
}

/* It stops waiting; a tenant left with none stops being backlogged (and loses its
 * credits on every worker, as DLPM's). */
static void pull_remove(struct rs_sched *sched, struct rs_request *request)
{
	struct rs_tenant *tenant = request->tenant;
	uint32_t id = tenant->id;
	queue_unlink(&sched->pull_head[id], &sched->pull_tail[id], request);
	if (sched->pull_head[id])
		return;
	uint32_t index = sched->backlogged_index[id];
	struct rs_tenant *last = sched->backlogged[--sched->n_backlogged];
	sched->backlogged[index] = last;
	sched->backlogged_index[last->id] = index;
	rs_dispatch_tenant_idle(sched->dispatch, tenant);
}

/* Dispatch at arrival: the request joins its worker's queue, in arrival order (a new one
 * last at once; one routed again from a worker taken out among the later arrivals), or at
 * the head when it comes back after preemption; routed again first when its worker was
 * taken out. */
static void routed_enqueue(struct rs_sched *sched, struct rs_request *request, bool front)
{
	if (!sched->in_service[request->worker]) {
		rs_router_done(sched->router, request->worker);
		request->worker = rs_router_route(sched->router, sched->dispatch, request,
						  sched->in_service, sched->candidates);
	}
	struct rs_request **head = &sched->routed_head[request->worker],
			  **tail = &sched->routed_tail[request->worker];
	struct rs_request *after = front ? NULL : *tail;
	while (after && after->arrival > request->arrival)
		after = after->pull_prev;
	queue_insert_after(head, tail, after, request);
}

static void routed_remove(struct rs_sched *sched, struct rs_request *request)
{
	queue_unlink(&sched->routed_head[request->worker], &sched->routed_tail[request->worker],
		     request);
}

/* The request waits (again): its cached prefix tracked, the policy told. */
/* Inlined into its callers (submission above all): one call frame fewer per request. */
static inline __attribute__((always_inline)) void
start_waiting(struct rs_sched *sched, struct rs_request *request, bool front)
{
	request->state = RS_REQUEST_WAITING;
	request->waiter.tokens = request->tokens;
	/* At least the context's last token is fed again: it yields the next token. */
	request->waiter.max_blocks = rs_sched_per_block(sched, rs_sched_context(request) - 1);
	request->waiter.match_blocks = 0;
	/* A context of one block or less can never match: nothing to track. */
	/* With several workers a waiting request has no cache yet: its match is taken at
	 * dispatch, and lpm and dlpm see every waiting request as matching nothing. */
	request->watched = sched->watch_waiters && request->waiter.max_blocks > 0;
	if (request->watched)
		rs_prefix_cache_watch(sched->cache, &request->waiter);
	rs_admission_enqueue_inline(sched->admission, request, front);
	if (sched->workers_choose)
		pull_enqueue(sched, request, front);
	else if (sched->router)
		routed_enqueue(sched, request, front);
}

static inline void stop_waiting(struct rs_sched *sched, struct rs_request *request)
{
	if (sched->workers_choose)
		pull_remove(sched, request);
	else if (sched->router)
		routed_remove(sched, request);
	if (request->watched)
		rs_prefix_cache_unwatch(sched->cache, &request->waiter);
	request->watched = false;
}

int rs_sched_submit(struct rs_sched *sched, struct rs_request *request)
{
	/* The newest token is never fed, so it needs no position. */
	uint64_t positions = (uint64_t)request->prompt_len + request->max_new_tokens - 1;
	if (request->prompt_len == 0 || request->max_new_tokens == 0)
		return -EINVAL;
	uint32_t max_share = request->tenant->max_kv_blocks;
	uint32_t blocks = blocks_for(sched, positions);
	if (blocks > sched->min_kv_blocks || (max_share && blocks > max_share))
		return -E2BIG;
	/* Every field of the core's part but the storage (tokens, blocks,
	 * blocks_capacity): the pool does not zero it (request.h). */
	request->arrival = sched->next_arrival++;
	request->submitted_ns = now(sched);
	request->admitted_ns = request->first_token_ns = 0;
	request->generated = request->computed = request->cached_tokens = 0;
	request->n_blocks = 0;
	request->promised = 0;
	request->lane = request->worker = request->seat = 0;
	request->predicted_output = request->bin = 0;
	request->preemptions = 0;
	request->in_step = request->cancelled = request->hit_eos = request->watched = false;
	request->cancel_status = 0;
	request->locked = NULL;
	request->waiter.node = NULL;
	request->waiter.node_next = request->waiter.node_prev = NULL;
	request->waiter.key_next = request->waiter.key_prev = NULL;
	request->waiter.next_key = 0;
	request->queue_next = request->queue_prev = request->heap_child = NULL;
	request->in_run = false;
	request->parked_next = request->parked_prev = NULL;
	request->pull_next = request->pull_prev = NULL;
	if (sched->router) /* SGLang's router: the worker is chosen now */
		request->worker = rs_router_route(sched->router, sched->dispatch, request,
						  sched->in_service, sched->candidates);
	start_waiting(sched, request, false);
	return 0;
}

static void remove_from_lane(struct rs_sched_lane *lane, struct rs_request *request)
{
	lane->running[request->seat] = NULL;
	lane->n_holes++;
}

/* Close the holes, keeping admission order (preemption takes the youngest, last). */
static void compact_lane(struct rs_sched_lane *lane)
{
	if (!lane->n_holes)
		return;
	uint32_t kept = 0;
	for (uint32_t i = 0; i < lane->n_running; i++) {
		struct rs_request *request = lane->running[i];
		if (!request)
			continue;
		request->seat = kept;
		lane->running[kept++] = request;
	}
	lane->n_running = kept;
	lane->n_holes = 0;
}

static struct rs_sched_worker *worker_of(struct rs_sched *sched, const struct rs_request *request)
{
	return &sched->workers[request->worker];
}

static void release_blocks(struct rs_sched *sched, struct rs_request *request)
{
	struct rs_sched_worker *worker = worker_of(sched, request);
	if (request->locked) { /* only with a cache */
		rs_prefix_cache_unlock(worker->cache, request->locked);
		request->locked = NULL;
	}
	for (uint32_t i = 0; i < request->n_blocks; i++)
		rs_kv_block_unref(worker->kv, request->blocks[i]);
	request->tenant->kv_blocks -= request->n_blocks;
	request->n_blocks = 0;
}

/* Would `blocks` more take the tenant over its KV share? */
static bool over_share(const struct rs_tenant *tenant, uint32_t blocks)
{
	return tenant->max_kv_blocks && tenant->kv_blocks + blocks > tenant->max_kv_blocks;
}

/* Set a request aside while its tenant holds its KV share: out of the admission order,
 * so that it does not stand in front of other tenants' requests. */
static void park(struct rs_sched *sched, struct rs_request *request)
{
	struct rs_tenant *tenant = request->tenant;
	rs_admission_remove(sched->admission, request);
	stop_waiting(sched, request);
	request->state = RS_REQUEST_PARKED;
	sched->parked++;
	request->parked_next = NULL;
	request->parked_prev = tenant->parked_tail;
	if (tenant->parked_tail)
		tenant->parked_tail->parked_next = request;
	else
		tenant->parked_head = request;
	tenant->parked_tail = request;
}

static void unlink_parked(struct rs_request *request)
{
	struct rs_tenant *tenant = request->tenant;
	if (request->parked_prev)
		request->parked_prev->parked_next = request->parked_next;
	else
		tenant->parked_head = request->parked_next;
	if (request->parked_next)
		request->parked_next->parked_prev = request->parked_prev;
	else
		tenant->parked_tail = request->parked_prev;
	request->parked_next = request->parked_prev = NULL;
}

/* The tenant freed blocks: parked requests that now fit go back, ahead of its others. */
static void unpark(struct rs_sched *sched, struct rs_tenant *tenant)
{
	uint32_t returning = 0;
	struct rs_request *request;
	/* With nothing running, all go back: admission then fails any that can never fit. */
	while ((request = tenant->parked_head) &&
	       (tenant->running == 0 ||
		!over_share(tenant, returning + blocks_for(sched, rs_sched_context(request))))) {
		returning += blocks_for(sched, rs_sched_context(request));
		unlink_parked(request);
		sched->parked--;
		start_waiting(sched, request, true);
	}
}

/* Cache the request's first n_full blocks and lock the deepest node instead of the one
 * it locked: the insert may switch its table to blocks others computed first. The locked
 * node's path (what it matched or inserted) is its table's first blocks already. */
static void cache_prefix(struct rs_sched *sched, struct rs_request *request, uint32_t n_full)
{
	struct rs_prefix_cache *cache = worker_of(sched, request)->cache;
	struct rs_prefix_node *node = rs_prefix_cache_insert_below(
	    cache, request->locked, request->tokens, n_full, request->blocks);
	if (!node)
		return;
	rs_prefix_cache_lock(cache, node);
	rs_prefix_cache_unlock(cache, request->locked);
	request->locked = node;
}

static void unstage(struct rs_sched *sched, struct rs_request *request)
{
	if (request->queue_prev)
		request->queue_prev->queue_next = request->queue_next;
	else
		sched->staged_head = request->queue_next;
	if (request->queue_next)
		request->queue_next->queue_prev = request->queue_prev;
	else
		sched->staged_tail = request->queue_prev;
	request->queue_next = request->queue_prev = NULL;
	sched->staged--;
}

/* A running or staged request lets go of its seat, blocks and promise. */
/* Inlined (into finish above all): one call frame fewer per request. */
static inline __attribute__((always_inline)) void stop_running(struct rs_sched *sched,
							       struct rs_request *request)
{
	if (request->state == RS_REQUEST_STAGED) {
		unstage(sched, request);
		if (sched->planner->unstaged)
			sched->planner->unstaged(sched, request);
	} else
		remove_from_lane(&sched->lanes[request->lane], request);
	release_blocks(sched, request);
	struct rs_sched_worker *worker = worker_of(sched, request);
	worker->promised -= request->promised;
	worker->load--;
	request->tenant->kv_blocks -= request->promised;
	request->promised = 0;
	sched->running--;
	request->tenant->running--;
	if (request->tenant->parked_head)
		unpark(sched, request->tenant);
}

/* The request's end; inlined where requests end normally (advance), out of line (finish)
 * for the rarer ends. */
static inline __attribute__((always_inline)) void
finish_inline(struct rs_sched *sched, struct rs_request *request, int32_t status)
{
	/* The client's answer first: what follows changes nothing it is told. */
	if (sched->hooks.publish)
		sched->hooks.publish(sched->hooks.ctx, request, status);
	if (request->state == RS_REQUEST_RUNNING || request->state == RS_REQUEST_STAGED) {
		/* The prompt and the output so far: a conversation's next turn starts with it.
		 * Not locked: the request lets go of it at once. */
		if (status == 0) {
			struct rs_sched_worker *worker = worker_of(sched, request);
			if (worker->cache && request->computed >= sched->block_size)
				rs_prefix_cache_insert_released(
				    worker->cache, request->locked, request->tokens,
				    rs_sched_per_block(sched, request->computed), request->blocks);
			if (sched->planner->finished)
				sched->planner->finished(sched, request);
			worker->served++;
		}
		stop_running(sched, request);
	} else if (request->state == RS_REQUEST_WAITING) {
		rs_admission_remove(sched->admission, request);
		stop_waiting(sched, request);
	} else if (request->state == RS_REQUEST_PARKED) {
		unlink_parked(request);
		sched->parked--;
	}
	if (sched->router)
		rs_router_done(sched->router, request->worker);
	request->state = RS_REQUEST_FREE;
	sched->stats.finished++;
	sched->hooks.finish(sched->hooks.ctx, request, status);
}

static __attribute__((noinline)) void finish(struct rs_sched *sched, struct rs_request *request,
					     int32_t status)
{
	finish_inline(sched, request, status);
}

void rs_sched_cancel(struct rs_sched *sched, struct rs_request *request, int32_t status)
{
	if (request->state == RS_REQUEST_RUNNING && request->in_step) {
		if (!request->cancelled) {
			request->cancelled = true;
			request->cancel_status = status;
		}
		return;
	}
	if (request->state != RS_REQUEST_FREE)
		finish(sched, request, status);
}

static void preempt(struct rs_sched *sched, struct rs_request *request)
{
	stop_running(sched, request);
	request->computed = 0;
	request->preemptions++;
	sched->stats.preemptions++;
	start_waiting(sched, request, true);
}

/* Free blocks not promised to admitted requests, but for `own` promised to the asker. */
static uint32_t unpromised_free(const struct rs_sched_worker *worker, uint32_t own)
{
	uint32_t free_blocks = rs_kv_free_count(worker->kv);
	uint32_t others = worker->promised - own;
	return free_blocks > others ? free_blocks - others : 0;
}

uint32_t rs_sched_idle(struct rs_sched *sched)
{
	uint32_t reserve = sched->config.kv_reserve_blocks, freed = 0;
	if (!reserve || !sched->config.prefix_cache)
		return 0;
	for (uint32_t w = 0; w < sched->n_workers; w++) {
		struct rs_sched_worker *worker = &sched->workers[w];
		uint32_t available = unpromised_free(worker, 0);
		if (available < reserve)
			freed += rs_prefix_cache_evict(worker->cache, reserve - available);
	}
	sched->stats.evicted_blocks += freed;
	return freed;
}

/* The worker the dispatch policy sends the request to, among those with a free seat
 * (NULL: none has one). The match on each worker's cache only reads it. */
static struct rs_sched_worker *dispatch(struct rs_sched *sched, const struct rs_request *request)
{
	uint32_t n = 0, seats = sched->worker_seats;
	for (uint32_t w = 0; w < sched->n_workers; w++) {
		struct rs_sched_worker *worker = &sched->workers[w];
		if (worker->out || worker->load >= seats)
			continue;
		uint32_t matched = 0;
		struct rs_prefix_node *deepest;
		if (worker->cache && request->waiter.max_blocks)
			matched = rs_prefix_cache_match(worker->cache, request->tokens,
							request->waiter.max_blocks,
							sched->match_scratch, &deepest);
		sched->candidates[n++] = (struct rs_dispatch_candidate){
		    .worker = w,
		    .matched_tokens = matched * sched->block_size,
		    .load = worker->load,
		    .cached_blocks = worker->cache ? rs_prefix_cache_nodes(worker->cache) : 0};
	}
	if (!n)
		return NULL;
	uint32_t chosen = rs_dispatch_choose(sched->dispatch, request, sched->candidates, n);
	return &sched->workers[sched->candidates[chosen].worker];
}

static void seat(struct rs_sched *sched, struct rs_sched_lane *lane, struct rs_request *request);

void rs_sched_seat(struct rs_sched *sched, struct rs_sched_lane *lane, struct rs_request *request)
{
	unstage(sched, request);
	seat(sched, lane, request);
}

static struct rs_request *admit_on(struct rs_sched *sched, struct rs_request *request,
				   struct rs_sched_worker *worker);

/* The waiting request's whole context fits its tenant's KV share beside what the tenant
 * holds; else it is parked (or failed, when nothing of its tenant runs: the share shrank
 * below what it needs, a reload) and the answer is false. */
static inline bool within_share(struct rs_sched *sched, struct rs_request *request)
{
	struct rs_tenant *tenant = request->tenant;
	if (!tenant->max_kv_blocks ||
	    !over_share(tenant, blocks_for(sched, rs_sched_context(request))))
		return true; /* no share set: nothing to count */
	if (tenant->running == 0)
		finish(sched, request, -E2BIG);
	else
		park(sched, request);
	return false;
}

/* Cached blocks of the waiting request's context on the worker (a read, no side effect). */
static uint32_t match_on(const struct rs_sched_worker *worker, const struct rs_request *request)
{
	if (!worker->cache || !request->waiter.max_blocks)
		return 0;
	return rs_prefix_cache_match_length(worker->cache, request->tokens,
					    request->waiter.max_blocks);
}

/* Some backlogged tenant is eligible on the worker, after DLPM's rounds there if none was. */
static void ensure_eligible(struct rs_sched *sched, uint32_t worker)
{
	for (uint32_t t = 0; t < sched->n_backlogged; t++)
		if (rs_dispatch_eligible(sched->dispatch, sched->backlogged[t], worker))
			return;
	rs_dispatch_round(sched->dispatch, worker, sched->backlogged, sched->n_backlogged);
}

/* D2LPM's choice for a free seat of the worker: DLPM over the waiting requests with the
 * worker's own deficits and cache. Among tenants eligible there, the request with the
 * longest prefix cached on that worker (ties: the earlier arrival), looking at the first
 * `lookahead` waiting requests of each tenant only, so that a free seat costs at most
 * tenants x lookahead matches, whatever the queue's length. NULL when nothing waits. */
static struct rs_request *pull_choose(struct rs_sched *sched, const struct rs_sched_worker *worker,
				      uint32_t *match_blocks)
{
	if (!sched->n_backlogged)
		return NULL;
	ensure_eligible(sched, worker->index);
	uint32_t lookahead = rs_dispatch_lookahead(sched->dispatch);
	struct rs_request *best = NULL;
	uint32_t best_match = 0;
	for (uint32_t t = 0; t < sched->n_backlogged; t++) {
		struct rs_tenant *tenant = sched->backlogged[t];
		if (!rs_dispatch_eligible(sched->dispatch, tenant, worker->index))
			continue;
		uint32_t seen = 0;
		for (struct rs_request *request = sched->pull_head[tenant->id];
		     request && seen < lookahead; request = request->pull_next, seen++) {
			uint32_t match = match_on(worker, request);
			if (!best || match > best_match ||
			    (match == best_match && request->arrival < best->arrival)) {
				best = request;
				best_match = match;
			}
		}
	}
	*match_blocks = best_match;
	return best;
}

/* The worker that runs the request the puller chose, NULL: none now. Below saturation
 * other workers have free seats too, and one of them may cache more of it. Qualified:
 * a worker with a free seat whose load is at most the least-loaded such worker's + T and
 * where the tenant is eligible (after its rounds there, if nobody was). The puller, when
 * qualified, unless another has a strictly longer match (then the longest, ties: the
 * lower load, then the lower index). A puller over the load rule passes it to a
 * qualified worker that caches at least as much of it, else takes nothing: the
 * less-loaded workers choose for themselves, by their own caches, at their next plan
 * (locality is never given up for balance). Under saturation only the puller has a
 * seat. */
static struct rs_sched_worker *pull_route(struct rs_sched *sched, struct rs_sched_worker *puller,
					  const struct rs_request *request, uint32_t puller_match)
{
	uint32_t seats = sched->worker_seats, least = puller->load;
	for (uint32_t w = 0; w < sched->n_workers; w++)
		if (!sched->workers[w].out && sched->workers[w].load < seats &&
		    sched->workers[w].load < least)
			least = sched->workers[w].load;
	uint32_t threshold = sched->config.dispatch.load_threshold
				 ? sched->config.dispatch.load_threshold
				 : (sched->config.max_batch / 2 ? sched->config.max_batch / 2 : 1);
	struct rs_sched_worker *best = puller->load <= least + threshold ? puller : NULL;
	uint32_t best_match = puller_match; /* another must cache more */
	for (uint32_t w = 0; w < sched->n_workers; w++) {
		struct rs_sched_worker *worker = &sched->workers[w];
		if (worker == puller || worker->out || worker->load >= seats ||
		    worker->load > least + threshold)
			continue;
		ensure_eligible(sched, w);
		if (!rs_dispatch_eligible(sched->dispatch, request->tenant, w))
			continue;
		uint32_t match = match_on(worker, request);
		if (match > best_match ||
		    (match == best_match &&
		     (!best || (best != puller && worker->load < best->load)))) {
			best = worker;
			best_match = match;
		}
	}
	return best;
}

struct rs_request *rs_sched_admit_staged(struct rs_sched *sched)
{
	struct rs_request *request;
	do {
		request = rs_admission_peek_inline(sched->admission);
		if (!request)
			return NULL;
	} while (!within_share(sched, request));
	struct rs_sched_worker *worker = &sched->workers[0];
	if (sched->n_workers > 1 && !(worker = dispatch(sched, request)))
		return NULL; /* every worker's seats are taken */
	return admit_on(sched, request, worker);
}

/* Admit the waiting request on the worker (which has a free seat): charged, its blocks
 * promised, its cached prefix taken and locked, counted as running; the caller stages or
 * seats it. False when the worker's pool cannot hold its uncached context even after
 * eviction: it keeps waiting. */
/* Inlined (into rs_sched_admit_next's one-worker path above all): one call frame fewer
 * per admission. */
static inline __attribute__((always_inline)) bool
admit_request(struct rs_sched *sched, struct rs_request *request, struct rs_sched_worker *worker)
{
	struct rs_prefix_cache *cache = worker->cache;
	uint32_t context = rs_sched_context(request);
	uint32_t matched = 0;
	struct rs_prefix_node *deepest = NULL;
	/* A context of one block or less can never match (its last token is always fed). */
	if (cache && request->waiter.max_blocks) {
		matched = rs_prefix_cache_match(cache, request->tokens, request->waiter.max_blocks,
						sched->match_scratch, &deepest);
		rs_prefix_cache_lock(cache, deepest); /* not evicted below */
	}
	/* Its whole uncached context is promised now, so that its prefill chunks never have
	 * to preempt anyone; only decode growth does. Evict only when that makes it fit: an
	 * eviction for a request that still cannot run would only empty the cache. */
	uint32_t needed = blocks_for(sched, context) - matched;
	uint32_t available = unpromised_free(worker, 0);
	if (available < needed) {
		uint32_t evictable =
		    cache ? rs_prefix_cache_nodes(cache) - rs_prefix_cache_locked_nodes(cache) : 0;
		if (available + evictable >= needed) {
			sched->stats.evicted_blocks +=
			    rs_prefix_cache_evict(cache, needed - available);
			available = unpromised_free(worker, 0);
		}
		if (available < needed) {
			if (cache)
				rs_prefix_cache_unlock(cache, deepest);
			return false; /* it stays next: the policy's order is kept */
		}
	}
	request->worker = worker->index;
	worker->load++;
	request->promised = needed;
	worker->promised += needed;
	uint32_t cached = matched * sched->block_size;
	uint32_t uncached = request->prompt_len > cached ? request->prompt_len - cached : 0;
	rs_admission_take_inline(sched->admission, request, uncached);
	if (sched->workers_choose && request->preemptions == 0)
		rs_dispatch_charge_prompt(sched->dispatch, request->tenant, worker->index,
					  uncached);
	stop_waiting(sched, request);
	for (uint32_t i = 0; i < matched; i++) {
		rs_kv_block_ref(worker->kv, sched->match_scratch[i]);
		request->blocks[i] = sched->match_scratch[i];
	}
	request->n_blocks = matched;
	request->computed = cached;
	request->locked = deepest;
	struct rs_tenant *tenant = request->tenant;
	tenant->kv_blocks += matched + needed; /* held and promised: its share counts both */
	if (request->preemptions == 0) {
		uint32_t prompt_cached =
		    cached < request->prompt_len ? cached : request->prompt_len;
		request->cached_tokens = prompt_cached;
		request->admitted_ns = now(sched);
		sched->stats.prompt_tokens += request->prompt_len;
		sched->stats.cached_tokens += prompt_cached;
		tenant->prompt_tokens += request->prompt_len;
		tenant->cached_tokens += prompt_cached;
	}
	sched->running++;
	tenant->running++;
	sched->stats.admitted++;
	return true;
}

/* Seat an admitted request (not staged) in the lane, which has a free seat. */
static void seat(struct rs_sched *sched, struct rs_sched_lane *lane, struct rs_request *request)
{
	if (lane->n_running == sched->config.max_batch)
		compact_lane(lane);
	request->state = RS_REQUEST_RUNNING;
	request->lane = lane->index;
	request->seat = lane->n_running;
	lane->running[lane->n_running++] = request;
}

/* admit_request, then the request joins the tail of the staged list. NULL when it could
 * not be admitted. */
static struct rs_request *admit_on(struct rs_sched *sched, struct rs_request *request,
				   struct rs_sched_worker *worker)
{
	if (!admit_request(sched, request, worker))
		return NULL;
	request->state = RS_REQUEST_STAGED;
	request->queue_next = NULL;
	request->queue_prev = sched->staged_tail;
	if (sched->staged_tail)
		sched->staged_tail->queue_next = request;
	else
		sched->staged_head = request;
	sched->staged_tail = request;
	sched->staged++;
	return request;
}

/* Dispatch at arrival: the worker admits the first of its own queue (staged), when the
 * request's tenant share and the worker's blocks allow; NULL otherwise. */
static struct rs_request *routed_admit(struct rs_sched *sched, struct rs_sched_worker *worker)
{
	struct rs_request *request;
	while ((request = sched->routed_head[worker->index]))
		if (within_share(sched, request))
			return admit_on(sched, request, worker);
	return NULL;
}

struct rs_request *rs_sched_admit_next(struct rs_sched *sched, struct rs_sched_lane *lane)
{
	if (!rs_sched_free_seats(sched, lane))
		return NULL;
	struct rs_request *request;
	if (sched->n_workers > 1) {
		/* Requests dispatched to this worker while its lanes were busy go first; then
		 * admissions until one is dispatched here (each other one waits staged for its
		 * worker, whose load is bounded by its seats: this ends). */
		for (request = sched->staged_head; request; request = request->queue_next)
			if (request->worker == lane->worker->index)
				break;
		if (sched->workers_choose) {
			/* This worker chooses (pull_choose); one it routes to another worker
			 * waits staged there, and it chooses again (bounded as above). */
			uint32_t match;
			struct rs_request *chosen;
			while (!request && (chosen = pull_choose(sched, lane->worker, &match))) {
				if (!within_share(sched, chosen))
					continue;
				struct rs_sched_worker *target =
				    pull_route(sched, lane->worker, chosen, match);
				if (!target || !admit_on(sched, chosen, target))
					break; /* its worker is short of blocks: it stays first */
				if (target == lane->worker)
					request = chosen;
			}
		}
		if (sched->router && !request)
			request = routed_admit(sched, lane->worker);
		while (!sched->workers_choose && !sched->router && !request &&
		       (request = rs_sched_admit_staged(sched)) &&
		       request->worker != lane->worker->index)
			request = NULL;
	} else {
		/* One worker: the policy's next request, seated at once (never staged). */
		do {
			request = rs_admission_peek_inline(sched->admission);
			if (!request)
				return NULL;
		} while (!within_share(sched, request));
		if (!admit_request(sched, request, lane->worker))
			return NULL;
		seat(sched, lane, request);
		return request;
	}
	if (request)
		rs_sched_seat(sched, lane, request);
	return request;
}

struct rs_request *rs_sched_admit_staged_for(struct rs_sched *sched,
					     const struct rs_sched_lane *lane)
{
	if (sched->router)
		return routed_admit(sched, lane->worker);
	if (!sched->workers_choose)
		return rs_sched_admit_staged(sched);
	uint32_t match;
	struct rs_request *chosen;
	while ((chosen = pull_choose(sched, lane->worker, &match)))
		if (within_share(sched, chosen)) {
			struct rs_sched_worker *target =
			    pull_route(sched, lane->worker, chosen, match);
			return target ? admit_on(sched, chosen, target) : NULL;
		}
	return NULL;
}

int rs_sched_reserve_more(struct rs_sched *sched, struct rs_sched_lane *lane,
			  struct rs_request *request, uint32_t needed)
{
	struct rs_sched_worker *worker = lane->worker;
	while (request->n_blocks < needed) {
		if (!request->promised && over_share(request->tenant, 1)) {
			/* Its tenant holds its share: the tenant's youngest request not in this
			 * step gives its blocks back (this one, when it is that one). */
			struct rs_request *own = NULL;
			for (uint32_t i = lane->n_running; i-- > 0 && !own;)
				if (lane->running[i] && !lane->running[i]->in_step &&
				    lane->running[i]->tenant == request->tenant)
					own = lane->running[i];
			preempt(sched, own);
			if (own == request)
				return -ENOMEM;
			continue;
		}
		int block =
		    unpromised_free(worker, request->promised) ? rs_kv_block_alloc(worker->kv) : -1;
		if (block >= 0) {
			request->blocks[request->n_blocks++] = (uint32_t)block;
			if (request->promised) {
				request->promised--;
				worker->promised--;
			} else {
				request->tenant->kv_blocks++;
			}
			continue;
		}
		if (worker->cache) {
			uint32_t evicted =
			    rs_prefix_cache_evict(worker->cache, needed - request->n_blocks);
			sched->stats.evicted_blocks += evicted;
			if (evicted)
				continue;
		}
		/* The youngest request not in this step gives its blocks back; the request
		 * itself when it is that one. */
		struct rs_request *victim = NULL;
		for (uint32_t i = lane->n_running; i-- > 0 && !victim;)
			if (lane->running[i] && !lane->running[i]->in_step)
				victim = lane->running[i];
		if (!victim)
			return -ENOMEM; /* only when the caller broke the precondition */
		preempt(sched, victim);
		if (victim == request)
			return -ENOMEM;
	}
	return 0;
}

const struct rs_step_plan *rs_sched_plan_step(struct rs_sched *sched, uint32_t lane_index)
{
	struct rs_sched_lane *lane = &sched->lanes[lane_index];
	if (lane->in_flight || lane->worker->out)
		return NULL;
	lane->plan.n = 0;
	lane->plan.n_tokens = 0;
	compact_lane(lane);
	sched->planner->plan(sched, lane);
	if (lane->plan.n == 0)
		return NULL;
	lane->in_flight = true;
	return &lane->plan;
}

/* EOS, or a token that ends a chat turn (<|eot_id|>, <|im_end|>, ...). */
static bool is_end_token(const struct rs_sched_config *config, uint32_t token)
{
	if (token == config->eos_token)
		return true;
	for (uint32_t i = 0; i < config->n_end_tokens && i < 8; i++)
		if (token == config->end_tokens[i])
			return true;
	return false;
}

/* One request's share of a finished step. */
static void advance(struct rs_sched *sched, struct rs_request *request,
		    const struct rs_seq_step *step)
{
	request->computed += step->n_tokens;
	if (request->cancelled) {
		finish(sched, request, request->cancel_status);
		return;
	}
	if (!step->sample)
		return; /* a prefill chunk short of the context's end */
	/* Read once, then checked: the engine may have written it into memory that others
	 * (the client) can overwrite. */
	uint32_t token = *step->out_token;
	if (token >= sched->config.vocab_size) {
		finish(sched, request, -EPROTO);
		return;
	}
	request->tokens[request->prompt_len + request->generated] = token;
	request->generated++;
	if (request->generated == 1)
		request->first_token_ns = now(sched);
	request->tenant->generated_tokens++;
	/* Charged to the policy once per tenant at the step's end: the same total, and no
	 * decision falls in between. */
	if (request->tenant->step_output++ == 0)
		sched->charged[sched->n_charged++] = request->tenant;
	if (!request->ignore_eos && is_end_token(&sched->config, token))
		request->hit_eos = true;
	sched->hooks.token(sched->hooks.ctx, request);
	if (request->state != RS_REQUEST_RUNNING)
		return; /* the hook cancelled it */
	if (request->generated >= request->max_new_tokens || request->hit_eos) {
		finish_inline(sched, request, 0); /* caches the prompt and the output */
		return;
	}
	/* The prompt is in: later prompts that start with it hit from now on. */
	if (request->generated == 1 && request->preemptions == 0 &&
	    worker_of(sched, request)->cache)
		cache_prefix(sched, request, rs_sched_per_block(sched, request->prompt_len));
}

/* --- Workers taken out of service (dispatch.max_failures) --- */

/* The lane's requests not in a step wait again, at the head of their tenants' queues (as
 * after a preemption: recomputed, not charged again), for another worker. */
static void evacuate_lane(struct rs_sched *sched, struct rs_sched_lane *lane)
{
	for (uint32_t i = lane->n_running; i-- > 0;)
		if (lane->running[i] && !lane->running[i]->in_step)
			preempt(sched, lane->running[i]);
}

/* No more dispatch to the worker nor steps on it: its staged requests and those seated on
 * its idle lanes wait again (youngest first, so that each tenant's keep their order at
 * the head); its lanes with a step in flight let theirs go when it ends. */
static void take_out(struct rs_sched *sched, struct rs_sched_worker *worker)
{
	worker->out = true;
	sched->in_service[worker->index] = false;
	sched->workers_out++;
	/* Its queue under dispatch at arrival: routed again (routed_enqueue). */
	for (struct rs_request *r; sched->router && (r = sched->routed_head[worker->index]);) {
		routed_remove(sched, r);
		routed_enqueue(sched, r, false);
	}
	for (struct rs_request *r = sched->staged_tail, *prev; r; r = prev) {
		prev = r->queue_prev;
		if (r->worker == worker->index)
			preempt(sched, r);
	}
	for (uint32_t l = worker->index * sched->config.lanes;
	     l < (worker->index + 1) * sched->config.lanes; l++)
		if (!sched->lanes[l].in_flight)
			evacuate_lane(sched, &sched->lanes[l]);
}

/* After a step: count the worker's failures in a row; at max_failures it is taken out,
 * unless it is the last in service (then its failing steps keep failing their requests
 * with a status: clients get an answer, not a wait). */
static void worker_health(struct rs_sched *sched, struct rs_sched_lane *lane, int status)
{
	struct rs_sched_worker *worker = lane->worker;
	uint32_t max = sched->config.dispatch.max_failures;
	if (worker->out) {
		evacuate_lane(sched, lane); /* a step in flight when it was taken out */
		return;
	}
	worker->failures = status < 0 ? worker->failures + 1 : 0;
	if (max && worker->failures >= max && sched->n_workers - sched->workers_out > 1)
		take_out(sched, worker);
}

void rs_sched_step_done(struct rs_sched *sched, uint32_t lane_index, int status)
{
	struct rs_sched_lane *lane = &sched->lanes[lane_index];
	struct rs_step_plan *plan = &lane->plan;
	sched->stats.steps++;
	sched->stats.step_tokens += plan->n_tokens;
	for (uint32_t i = 0; i < plan->n; i++) {
		struct rs_request *request = plan->requests[i];
		request->in_step = false;
		if (status < 0)
			finish(sched, request,
			       request->cancelled ? request->cancel_status : status);
		else
			advance(sched, request, &plan->steps[i]);
	}
	for (uint32_t i = 0; i < sched->n_charged; i++) {
		struct rs_tenant *tenant = sched->charged[i];
		rs_admission_charge_output(sched->admission, tenant, tenant->step_output);
		if (sched->dispatch)
			rs_dispatch_charge_output(sched->dispatch, tenant, lane->worker->index,
						  tenant->step_output);
		tenant->step_output = 0;
	}
	sched->n_charged = 0;
	plan->n = 0;
	plan->n_tokens = 0;
	lane->in_flight = false;
	worker_health(sched, lane, status);
}

uint64_t rs_sched_next_wakeup_ns(const struct rs_sched *sched)
{
	return sched->planner->next_wakeup_ns(sched);
}

bool rs_sched_busy(const struct rs_sched *sched)
{
	return sched->running > 0 || sched->parked > 0 ||
	       rs_admission_waiting(sched->admission) > 0;
}

uint32_t rs_sched_waiting(const struct rs_sched *sched)
{
	return rs_admission_waiting(sched->admission) + sched->parked;
}

uint32_t rs_sched_running(const struct rs_sched *sched)
{
	return sched->running;
}

const struct rs_sched_stats *rs_sched_stats(const struct rs_sched *sched)
{
	return &sched->stats;
}

const struct rs_tenant_table *rs_sched_tenants(const struct rs_sched *sched)
{
	return &sched->tenants;
}

struct rs_kv_cache *rs_sched_kv(const struct rs_sched *sched)
{
	return sched->kv;
}

struct rs_prefix_cache *rs_sched_prefix_cache(const struct rs_sched *sched)
{
	return sched->cache;
}

uint32_t rs_sched_lanes(const struct rs_sched *sched)
{
	return sched->n_lanes;
}

uint32_t rs_sched_lane_worker(const struct rs_sched *sched, uint32_t lane)
{
	return lane / sched->config.lanes;
}

uint32_t rs_sched_workers(const struct rs_sched *sched)
{
	return sched->n_workers;
}

uint32_t rs_sched_worker_load(const struct rs_sched *sched, uint32_t worker)
{
	return sched->workers[worker].load;
}

bool rs_sched_worker_in_service(const struct rs_sched *sched, uint32_t worker)
{
	return !sched->workers[worker].out;
}

uint64_t rs_sched_worker_served(const struct rs_sched *sched, uint32_t worker)
{
	return sched->workers[worker].served;
}

struct rs_kv_cache *rs_sched_worker_kv(const struct rs_sched *sched, uint32_t worker)
{
	return sched->workers[worker].kv;
}

struct rs_prefix_cache *rs_sched_worker_cache(const struct rs_sched *sched, uint32_t worker)
{
	return sched->workers[worker].cache;
}

const struct rs_dispatch *rs_sched_dispatch(const struct rs_sched *sched)
{
	return sched->dispatch;
}

int rs_sched_check(const struct rs_sched *sched)
{
	uint32_t running = 0, promised = 0;
	for (uint32_t l = 0; l < sched->n_lanes; l++) {
		const struct rs_sched_lane *lane = &sched->lanes[l];
		uint32_t holes = 0;
		for (uint32_t i = 0; i < lane->n_running; i++) {
			const struct rs_request *request = lane->running[i];
			if (!request) {
				holes++;
				continue;
			}
			running++;
			promised += request->promised;
			if (request->state != RS_REQUEST_RUNNING || request->lane != l ||
			    request->seat != i) {
				fprintf(stderr,
					"sched: lane %u seat %u holds a request in state %d, lane "
					"%u, seat %u\n",
					l, i, request->state, request->lane, request->seat);
				return -EUCLEAN;
			}
			if (request->computed > rs_sched_context(request) ||
			    blocks_for(sched, request->computed) > request->n_blocks) {
				fprintf(stderr,
					"sched: a request computed %u positions in %u blocks\n",
					request->computed, request->n_blocks);
				return -EUCLEAN;
			}
			for (uint32_t b = 0; b < request->n_blocks; b++)
				if (rs_kv_block_refcount(sched->lanes[l].worker->kv,
							 request->blocks[b]) == 0) {
					fprintf(stderr,
						"sched: a running request holds free block %u\n",
						request->blocks[b]);
					return -EUCLEAN;
				}
		}
		if (holes != lane->n_holes || lane->n_running - holes > sched->config.max_batch) {
			fprintf(stderr, "sched: lane %u: %u holes counted %u, %u entries\n", l,
				holes, lane->n_holes, lane->n_running);
			return -EUCLEAN;
		}
	}
	uint32_t staged = 0;
	for (const struct rs_request *request = sched->staged_head; request;
	     request = request->queue_next) {
		staged++;
		running++;
		promised += request->promised;
		if (request->state != RS_REQUEST_STAGED || request->in_step) {
			fprintf(stderr, "sched: a staged request in state %d\n", request->state);
			return -EUCLEAN;
		}
	}
	if (staged != sched->staged) {
		fprintf(stderr, "sched: %u staged (counted %u)\n", staged, sched->staged);
		return -EUCLEAN;
	}
	uint32_t counted_promised = 0, counted_load = 0;
	for (uint32_t w = 0; w < sched->n_workers; w++) {
		counted_promised += sched->workers[w].promised;
		counted_load += sched->workers[w].load;
		if (sched->workers[w].promised > rs_kv_free_count(sched->workers[w].kv)) {
			fprintf(stderr, "sched: worker %u: %u blocks promised, %u free\n", w,
				sched->workers[w].promised, rs_kv_free_count(sched->workers[w].kv));
			return -EUCLEAN;
		}
	}
	if (running != sched->running || promised != counted_promised ||
	    counted_load != sched->running) {
		fprintf(stderr,
			"sched: %u running (counted %u, by workers %u), %u blocks promised "
			"(counted %u)\n",
			running, sched->running, counted_load, promised, counted_promised);
		return -EUCLEAN;
	}
	uint32_t tenants_running = 0;
	for (uint32_t t = 0; t < sched->tenants.capacity; t++) {
		const struct rs_tenant *tenant = &sched->tenants.all[t];
		if (!tenant->in_use)
			continue;
		tenants_running += tenant->running;
		uint32_t held = 0;
		for (uint32_t l = 0; l < sched->n_lanes; l++)
			for (uint32_t i = 0; i < sched->lanes[l].n_running; i++) {
				const struct rs_request *request = sched->lanes[l].running[i];
				if (request && request->tenant == tenant)
					held += request->n_blocks + request->promised;
			}
		for (const struct rs_request *request = sched->staged_head; request;
		     request = request->queue_next)
			if (request->tenant == tenant)
				held += request->n_blocks + request->promised;
		if (held != tenant->kv_blocks ||
		    (tenant->max_kv_blocks && tenant->kv_blocks > tenant->max_kv_blocks)) {
			fprintf(stderr, "sched: tenant %s holds %u blocks (counted %u, share %u)\n",
				tenant->name, held, tenant->kv_blocks, tenant->max_kv_blocks);
			return -EUCLEAN;
		}
	}
	if (tenants_running != sched->running) {
		fprintf(stderr, "sched: tenants count %u running, the core %u\n", tenants_running,
			sched->running);
		return -EUCLEAN;
	}
	return 0;
}
