/* The scheduling tests' shared "world": a scheduler core on a virtual clock, no engine
 * (the tests write every sampled token themselves), with its KV pools, a request pool and
 * one tenant. Header-only, as tests/engine_test.h (each test is one program); used by
 * sched_multibin, sched_multibin_workers, sched_worker_failures, sched_dispatch_arrival.
 *
 * A test's own world holds a struct sched_world as its FIRST member, so that the hooks'
 * ctx (the test's world) is also the sched_world that sched_world_now reads. */
#ifndef RS_TESTS_SCHED_WORLD_H
#define RS_TESTS_SCHED_WORLD_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "daemon/sched/sched.h"
#include "kernels/engine/kv_cache.h"
#include "tests/harness/harness.h"

enum { SCHED_WORLD_MAX_WORKERS = 4 };

struct sched_world {
	struct rs_sched *sched;
	struct rs_kv_cache *kv[SCHED_WORLD_MAX_WORKERS];
	struct rs_request_pool pool;
	struct rs_tenant *tenant;
	uint32_t workers; /* 0: a core without workers (rs_sched_create, one KV pool) */
	uint64_t clock_ns;
};

/* The hooks' clock: ctx is a world whose first member is a struct sched_world. */
static inline uint64_t sched_world_now(void *ctx)
{
	return ((struct sched_world *)ctx)->clock_ns;
}

/* A token hook for tests that need none. */
static inline void sched_world_no_token(void *ctx, struct rs_request *request)
{
}

/* What every world's core shares; the test sets lanes, batch, planner, dispatch. */
static inline struct rs_sched_config sched_world_config(void)
{
	return (struct rs_sched_config){.max_batch_tokens = 1024,
					.vocab_size = 100,
					.eos_token = UINT32_MAX,
					.prefix_cache = true,
					.admission = {.policy = RS_ADMISSION_FCFS}};
}

/* Start the world at 1 s: config->workers KV pools (one when 0) of kv_blocks blocks of
 * block positions, the core (rs_sched_create_workers, or rs_sched_create without
 * workers), a pool of max_requests requests, tenant "t". Returns 0, or the core's
 * refusal (nothing left allocated). w is zeroed here. */
static inline int sched_world_init(struct sched_world *w, const struct rs_sched_config *config,
				   const struct rs_sched_hooks *hooks, uint32_t kv_blocks,
				   uint32_t block, uint32_t max_requests)
{
	memset(w, 0, sizeof(*w));
	w->clock_ns = 1000000000;
	w->workers = config->workers;
	CHECK(w->workers <= SCHED_WORLD_MAX_WORKERS, "%u workers", w->workers);
	uint32_t pools = w->workers ? w->workers : 1;
	for (uint32_t i = 0; i < pools; i++)
		CHECK(rs_kv_cache_create(kv_blocks, block, &w->kv[i]) == 0, "kv");
	int ret = w->workers ? rs_sched_create_workers(config, w->kv, hooks, &w->sched)
			     : rs_sched_create(config, w->kv[0], hooks, &w->sched);
	if (ret) {
		for (uint32_t i = 0; i < pools; i++)
			rs_kv_cache_destroy(w->kv[i]);
		return ret;
	}
	CHECK(rs_request_pool_init(&w->pool, max_requests) == 0, "pool");
	w->tenant = rs_sched_tenant_acquire(w->sched, 0, "t", 1.0);
	return 0;
}

/* Check that nothing is left running, and free the world. */
static inline void sched_world_destroy(struct sched_world *w)
{
	CHECK(!rs_sched_busy(w->sched), "requests left");
	rs_sched_tenant_release(w->sched, w->tenant);
	rs_sched_destroy(w->sched);
	rs_request_pool_destroy(&w->pool);
	for (uint32_t i = 0; i < (w->workers ? w->workers : 1); i++)
		rs_kv_cache_destroy(w->kv[i]);
}

/* A request of the tenant, reserved for prompt_len + output_len tokens in blocks of
 * block, greedy over the whole vocabulary, never stopping at EOS, with id as user_data;
 * the test writes its prompt and hint and submits it. */
static inline struct rs_request *sched_world_request(struct sched_world *w, uint32_t id,
						     uint32_t prompt_len, uint32_t output_len,
						     uint32_t block)
{
	struct rs_request *r = rs_request_get(&w->pool);
	CHECK(r && rs_request_reserve(r, prompt_len, output_len, block) == 0, "request");
	r->tenant = w->tenant;
	r->user_data = id;
	r->ignore_eos = true;
	r->top_p = 1.0f;
	return r;
}

/* Who sits in each lane's batch, to see who joins a step and when (the multi-bin tests:
 * a static batch takes no one in while it runs). Per request id: when it was admitted and
 * when it got its seat. */
enum { SCHED_SEATS_MAX_LANES = 8, SCHED_SEATS_MAX_REQUESTS = 4096 };

struct sched_seats {
	uint32_t lanes;
	bool seated[SCHED_SEATS_MAX_LANES][SCHED_SEATS_MAX_REQUESTS];
	uint32_t n_seated[SCHED_SEATS_MAX_LANES];
	uint64_t admitted_ns[SCHED_SEATS_MAX_REQUESTS], seated_ns[SCHED_SEATS_MAX_REQUESTS];
};

/* Request r runs in lane's step at now: seat it if it is new there. Returns whether it
 * joined. The test writes its token (a sampled position gets id 1). */
static inline bool sched_seats_take(struct sched_seats *s, uint32_t lane,
				    const struct rs_request *r, uint64_t now)
{
	uint32_t id = (uint32_t)r->user_data;
	CHECK(lane < s->lanes && id < SCHED_SEATS_MAX_REQUESTS, "lane %u, request %u", lane, id);
	if (s->seated[lane][id])
		return false;
	s->seated[lane][id] = true;
	s->seated_ns[id] = now;
	s->admitted_ns[id] = r->admitted_ns;
	return true;
}

/* Lane's step took joined newcomers: into an empty lane only, unless continuous. */
static inline void sched_seats_joined(struct sched_seats *s, uint32_t lane, uint32_t joined,
				      bool continuous)
{
	CHECK(continuous || !joined || s->n_seated[lane] == 0,
	      "lane %u took requests in while %u ran", lane, s->n_seated[lane]);
	s->n_seated[lane] += joined;
}

/* Request r finished: its seat is free. */
static inline void sched_seats_leave(struct sched_seats *s, const struct rs_request *r)
{
	uint32_t id = (uint32_t)r->user_data;
	if (r->lane < s->lanes && id < SCHED_SEATS_MAX_REQUESTS && s->seated[r->lane][id]) {
		s->seated[r->lane][id] = false;
		s->n_seated[r->lane]--;
	}
}

#endif
