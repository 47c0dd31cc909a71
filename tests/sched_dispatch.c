/* Workers and dispatch (daemon/sched/dispatch.h) on a virtual clock, no engine: the test
 * writes every sampled token (id 1).
 *   - d2lpm: requests of one prefix go to the worker that caches it while its load is at
 *     most the least-loaded worker's + T, and move when it would exceed it (derived below);
 *     a tenant with no deficit left on the caching worker goes elsewhere;
 *   - d2lpm: the worker with a free seat chooses by its own deficits and cache (DLPM per
 *     worker): a tenant without deficit there waits though its request matches longer;
 *   - d2lpm's lookahead: a free seat looks at the first N waiting requests of a tenant;
 *   - fairness: two backlogged tenants over two workers stay within the DLPM bound with S
 *     the seats of all workers (baselines), or its sum over workers (d2lpm), and d2lpm's
 *     per-worker deficits within DLPM's lemma (docs/scheduling.md, "Fairness across
 *     workers");
 *   - saturation (all at once), 2 and 4 workers: d2lpm's hit rate is above a bound derived
 *     from the workload's structure and 20 points above every baseline's;
 *   - round-robin, least-loaded and cache-aware follow their rules;
 *   - a failed step fails its requests with its status, the other worker keeps serving;
 *   - bad configurations are refused. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/planner.h"
#include "daemon/sched/prefix_cache.h"
#include "daemon/sched/sched.h"
#include "kernels/engine/kv_cache.h"
#include "tests/harness/harness.h"

enum { MAX_REQUESTS = 4096, MAX_WORKERS = 4, MAX_TENANTS = 8, BLOCK = 16 };

struct world {
	struct rs_sched *sched;
	struct rs_kv_cache *kv[MAX_WORKERS];
	struct rs_request_pool pool;
	struct rs_tenant *tenant[MAX_TENANTS];
	uint32_t workers, lanes;
	uint64_t clock_ns;
	int32_t status[MAX_REQUESTS];
	uint32_t generated[MAX_REQUESTS];
	bool done[MAX_REQUESTS];
	uint32_t worker_of[MAX_REQUESTS];   /* where it was dispatched (at its first plan) */
	uint32_t preemptions[MAX_REQUESTS]; /* when worker_of was recorded */
	uint32_t served_by[MAX_WORKERS];    /* requests finished with status 0, per worker */
	/* When full_prefix > 0: requests finished with fewer cached prompt tokens, per worker
	 * and tenant. */
	uint32_t full_prefix;
	uint32_t short_of_prefix[MAX_WORKERS][MAX_TENANTS];
};

static uint64_t now_hook(void *ctx)
{
	return ((struct world *)ctx)->clock_ns;
}

static void token_hook(void *ctx, struct rs_request *request)
{
}

static void finish_hook(void *ctx, struct rs_request *request, int32_t status)
{
	struct world *w = ctx;
	uint32_t id = (uint32_t)request->user_data;
	w->done[id] = true;
	w->status[id] = status;
	w->generated[id] = request->generated;
	if (status == 0)
		w->served_by[request->worker]++;
	if (status == 0 && request->cached_tokens < w->full_prefix)
		w->short_of_prefix[request->worker][request->tenant->id]++;
	rs_request_put(&w->pool, request);
}

static void world_init(struct world *w, uint32_t workers, uint32_t lanes, uint32_t max_batch,
		       uint32_t kv_blocks, enum rs_admission_policy admission, double quantum,
		       const struct rs_dispatch_params *dispatch)
{
	memset(w, 0, sizeof(*w));
	w->clock_ns = 1000000000;
	w->workers = workers;
	w->lanes = lanes;
	for (uint32_t i = 0; i < workers; i++)
		CHECK(rs_kv_cache_create(kv_blocks, BLOCK, &w->kv[i]) == 0, "kv");
	struct rs_sched_config config = {.lanes = lanes,
					 .max_batch = max_batch,
					 .max_batch_tokens = 1024,
					 .max_tenants = MAX_TENANTS,
					 .vocab_size = 100,
					 .eos_token = UINT32_MAX,
					 .prefix_cache = true,
					 .admission = {.policy = admission, .quantum = quantum},
					 .workers = workers,
					 .dispatch = *dispatch};
	struct rs_sched_hooks hooks = {
	    .now_ns = now_hook, .token = token_hook, .finish = finish_hook, .ctx = w};
	int ret = rs_sched_create_workers(&config, w->kv, &hooks, &w->sched);
	CHECK(ret == 0, "sched: %d", ret);
	CHECK(rs_request_pool_init(&w->pool, MAX_REQUESTS) == 0, "pool");
	w->tenant[0] = rs_sched_tenant_acquire(w->sched, 0, "a", 1.0);
	w->tenant[1] = rs_sched_tenant_acquire(w->sched, 0, "b", 1.0);
	static const char *const names[MAX_TENANTS] = {"a", "b", "c", "d", "e", "f", "g", "h"};
	for (uint32_t t = 2; t < MAX_TENANTS; t++)
		w->tenant[t] = rs_sched_tenant_acquire(w->sched, 0, names[t], 1.0);
	for (uint32_t i = 0; i < MAX_REQUESTS; i++)
		w->worker_of[i] = UINT32_MAX;
}

static void world_destroy(struct world *w)
{
	CHECK(!rs_sched_busy(w->sched), "requests left");
	rs_sched_tenant_release(w->sched, w->tenant[0]);
	rs_sched_tenant_release(w->sched, w->tenant[1]);
	rs_sched_destroy(w->sched);
	rs_request_pool_destroy(&w->pool);
	for (uint32_t i = 0; i < w->workers; i++)
		rs_kv_cache_destroy(w->kv[i]);
}

/* A prompt of `shared` tokens of prefix `prefix` then unique ones. */
static void submit(struct world *w, uint32_t id, uint32_t tenant, uint32_t prefix, uint32_t shared,
		   uint32_t prompt_len, uint32_t output_len)
{
	struct rs_request *r = rs_request_get(&w->pool);
	CHECK(r && rs_request_reserve(r, prompt_len, output_len, BLOCK) == 0, "request");
	for (uint32_t i = 0; i < prompt_len; i++)
		r->tokens[i] = i < shared ? (prefix * 31 + i * 7) % 97 : (id * 13 + i * 11) % 97;
	r->tenant = w->tenant[tenant];
	r->user_data = id;
	r->ignore_eos = true;
	r->top_p = 1.0f;
	CHECK(rs_sched_submit(w->sched, r) == 0, "submit %u", id);
}

/* Plan one lane, record where its requests run, run it with `status`. */
static bool run_lane(struct world *w, uint32_t lane, int status)
{
	const struct rs_step_plan *plan = rs_sched_plan_step(w->sched, lane);
	if (!plan)
		return false;
	for (uint32_t i = 0; i < plan->n; i++) {
		struct rs_request *r = plan->requests[i];
		uint32_t id = (uint32_t)r->user_data;
		uint32_t worker = rs_sched_lane_worker(w->sched, lane);
		CHECK(r->worker == worker, "request %u of worker %u runs on lane %u", id, r->worker,
		      lane);
		/* Only a preempted request, readmitted, may be dispatched elsewhere. */
		CHECK(w->worker_of[id] == UINT32_MAX || w->worker_of[id] == worker ||
			  r->preemptions > w->preemptions[id],
		      "request %u moved from worker %u to %u", id, w->worker_of[id], worker);
		w->preemptions[id] = r->preemptions;
		w->worker_of[id] = worker;
		if (plan->steps[i].sample)
			*plan->steps[i].out_token = 1;
	}
	rs_sched_step_done(w->sched, lane, status);
	CHECK(rs_sched_check(w->sched) == 0, "invariants");
	return true;
}

static void run_all(struct world *w)
{
	w->clock_ns += 1000000;
	for (uint32_t l = 0; l < rs_sched_lanes(w->sched); l++)
		run_lane(w, l, 0);
}

static void drain(struct world *w)
{
	for (int i = 0; rs_sched_busy(w->sched) && i < 100000; i++)
		run_all(w);
}

/* d2lpm with an unlimited deficit (Q huge): requests with a prefix cached on worker 0 only.
 * With loads a (worker 0) and b (worker 1), worker 0 has the longer match, so it is chosen
 * unless a > b + T: a request goes to worker 0 iff a <= b + T. Starting from (1, 0) (the
 * first request, which cached the prefix), requests 1 .. T go to worker 0, request T + 1
 * is the first to move (a = T + 1 > 0 + T); after that they alternate. Worker 1 caches
 * nothing before its first step. */
static void test_concentration(void)
{
	enum { T = 3, N = 12, PROMPT = 36, SHARED = 32 };
	struct world *w = calloc(1, sizeof(*w));
	struct rs_dispatch_params d = {
	    .policy = RS_DISPATCH_D2LPM, .load_threshold = T, .quantum = 1e9};
	world_init(w, 2, 1, 16, 256, RS_ADMISSION_DLPM, 0, &d);
	submit(w, 0, 0, 7, SHARED, PROMPT, 100);
	CHECK(run_lane(w, 0, 0) && w->worker_of[0] == 0, "the first request went to worker %u",
	      w->worker_of[0]);
	for (uint32_t id = 1; id <= N; id++)
		submit(w, id, 0, 7, SHARED, PROMPT, 100);
	/* Lane 0's plan takes 1 .. T, then worker 0 is over the load rule and takes nothing
	 * more; lane 1's plan dispatches the rest (worker 1 chooses, and routes to worker 0,
	 * which caches more, whenever worker 0 is within the rule: staged there until lane 0's
	 * next plan). */
	CHECK(run_lane(w, 0, 0), "lane 0 ran nothing");
	CHECK(run_lane(w, 1, 0), "lane 1 ran nothing");
	CHECK(run_lane(w, 0, 0), "lane 0 ran nothing the second time");
	uint32_t a = 1, b = 0;
	for (uint32_t id = 1; id <= N; id++) {
		uint32_t want = a <= b + T ? 0 : 1;
		CHECK(w->worker_of[id] == want, "request %u (loads %u, %u): worker %u, want %u", id,
		      a, b, w->worker_of[id], want);
		if (want == 0)
			a++;
		else
			b++;
		CHECK(id != T + 1 || want == 1, "request T + 1 stayed");
	}
	CHECK(w->worker_of[T] == 0 && w->worker_of[T + 1] == 1, "moved at %u, not at T + 1",
	      w->worker_of[T] == 1 ? T : T + 2);
	drain(w);
	for (uint32_t id = 0; id <= N; id++)
		CHECK(w->done[id] && w->status[id] == 0, "request %u: status %d", id,
		      w->status[id]);
	world_destroy(w);
	free(w);
}

/* d2lpm's deficit per worker, and the worker's DLPM choice (Q = 40, w_p = 1, w_q = 2, no
 * load limit). Request a0 (36 tokens, none cached): worker 0 has no eligible tenant, so a
 * round gives tenant a 40 there; a0 is charged 36 (4 left), and a, left with nothing
 * waiting, keeps no credit: 0; its first token makes it -2. Eleven more steps: -24. Then
 * a1 (its prefix, 32 tokens, cached on worker 0) and b0 (nothing cached) wait: nobody is
 * eligible on worker 0, and one round (b needs 1, a needs floor(24 / 40) + 1 = 1) leaves
 * a at 16 and b at 40: both eligible, and a1, the longer match, goes first (b0 after it).
 * With a's debt at -44 instead (one round leaves it at -4: not eligible), b0 goes first
 * although a1 matches longer: the deficit decides before the match. */
static void deficit_case(uint32_t steps_before, bool want_a_first)
{
	struct world *w = calloc(1, sizeof(*w));
	struct rs_dispatch_params d = {
	    .policy = RS_DISPATCH_D2LPM, .load_threshold = 1000, .quantum = 40};
	world_init(w, 2, 1, 16, 256, RS_ADMISSION_FCFS, 0, &d);
	const struct rs_dispatch *dispatch = rs_sched_dispatch(w->sched);
	submit(w, 0, 0, 7, 32, 36, 50);
	run_lane(w, 0, 0); /* prefill: one token */
	double left = rs_dispatch_deficit(dispatch, w->tenant[0], 0);
	CHECK(left == -2, "worker 0 deficit %g after 36 prompt tokens and 1 output, want -2", left);
	for (uint32_t i = 0; i < steps_before; i++)
		run_lane(w, 0, 0);
	left = rs_dispatch_deficit(dispatch, w->tenant[0], 0);
	CHECK(left == -2.0 - 2 * steps_before, "deficit %g after %u more tokens", left,
	      steps_before);
	submit(w, 1, 0, 7, 32, 36, 50);
	submit(w, 2, 1, 9, 0, 36, 50);
	const struct rs_step_plan *plan = rs_sched_plan_step(w->sched, 0);
	CHECK(plan && plan->n == 3, "the plan holds %u requests, want a0, a1, b0",
	      plan ? plan->n : 0);
	uint32_t second = (uint32_t)plan->requests[1]->user_data;
	CHECK(second == (want_a_first ? 1u : 2u), "debt %u steps: request %u admitted first",
	      steps_before, second);
	for (uint32_t i = 0; i < plan->n; i++) {
		w->worker_of[plan->requests[i]->user_data] = 0;
		if (plan->steps[i].sample)
			*plan->steps[i].out_token = 1;
	}
	rs_sched_step_done(w->sched, 0, 0);
	CHECK(rs_sched_check(w->sched) == 0, "invariants");
	drain(w);
	world_destroy(w);
	free(w);
}

static void test_deficit(void)
{
	deficit_case(11, true);
	deficit_case(21, false);
}

/* The lookahead bounds what a free seat looks at: r0 caches prefix 7 on worker 0; then
 * r1 .. r4 (nothing cached anywhere) and r5 (prefix 7) of the same tenant wait. With a
 * lookahead of 4 worker 0 sees r1 .. r4 only and takes r1 (all match nothing: the
 * earliest); with 5 it sees r5 too and takes it first (the longest match). */
static void lookahead_case(uint32_t lookahead, uint32_t want_first)
{
	struct world *w = calloc(1, sizeof(*w));
	struct rs_dispatch_params d = {
	    .policy = RS_DISPATCH_D2LPM, .load_threshold = 1000, .lookahead = lookahead};
	world_init(w, 2, 1, 16, 256, RS_ADMISSION_FCFS, 0, &d);
	submit(w, 0, 0, 7, 32, 36, 50);
	run_lane(w, 0, 0); /* its first token caches its prompt's 2 full blocks */
	for (uint32_t id = 1; id <= 4; id++)
		submit(w, id, 0, 100 + id, 0, 36, 50);
	submit(w, 5, 0, 7, 32, 36, 50);
	const struct rs_step_plan *plan = rs_sched_plan_step(w->sched, 0);
	CHECK(plan && plan->n >= 2, "lookahead %u: nothing admitted", lookahead);
	uint32_t first = (uint32_t)plan->requests[1]->user_data;
	CHECK(first == want_first, "lookahead %u: request %u admitted first, want %u", lookahead,
	      first, want_first);
	for (uint32_t i = 0; i < plan->n; i++) {
		w->worker_of[plan->requests[i]->user_data] = 0;
		if (plan->steps[i].sample)
			*plan->steps[i].out_token = 1;
	}
	rs_sched_step_done(w->sched, 0, 0);
	CHECK(rs_sched_check(w->sched) == 0, "invariants");
	drain(w);
	world_destroy(w);
	free(w);
}

static void test_lookahead(void)
{
	lookahead_case(4, 1);
	lookahead_case(5, 5);
}

static uint32_t lcg(uint64_t *state)
{
	*state = *state * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(*state >> 33);
}

/* Two tenants, both backlogged all along, over W = 2 workers (one lane, S_w seats each).
 * Round-robin and cache-aware: the admission policy is one DLPM over all workers, the
 * core admits exactly its peek whatever worker dispatch picks, and at most S = W S_w
 * requests run at once: |Δservice_a − Δservice_b| <= 2Q + D_a + D_b, D = w_p L + S w_q M.
 * d2lpm: each worker runs DLPM with its own deficits (quantum Q too here), so each
 * worker's share obeys that bound with its own seats, D_w = w_p L + S_w w_q M, and the
 * sum over workers: 2 W Q + 2 W D_w (docs/scheduling.md, "Fairness across workers").
 * Each step also checks d2lpm's lemma per worker: -D_w <= deficit <= Q while backlogged. */
static void test_fairness(enum rs_dispatch_policy policy)
{
	enum { SW = 4, L = 64, M = 16, PER_TENANT = 600 };
	const double Q = 256, WP = 1, WQ = 2;
	struct world *w = calloc(1, sizeof(*w));
	struct rs_dispatch_params d = {.policy = policy, .load_threshold = 2, .quantum = Q};
	world_init(w, 2, 1, SW, 512, RS_ADMISSION_DLPM, Q, &d);
	uint64_t seed = 42;
	uint32_t id = 0;
	for (uint32_t i = 0; i < PER_TENANT; i++)
		for (uint32_t t = 0; t < 2; t++) {
			/* Tenant a's prompts share prefixes (4 of them), b's never do. */
			uint32_t prompt = 1 + lcg(&seed) % L, output = 1 + lcg(&seed) % M;
			submit(w, id, t, t == 0 ? lcg(&seed) % 4 : 1000 + id, t == 0 ? prompt : 0,
			       prompt, output);
			id++;
		}
	const double D = WP * L + 2 * SW * WQ * M, DW = WP * L + SW * WQ * M;
	const bool per_worker = policy == RS_DISPATCH_D2LPM;
	const double bound = per_worker ? 2 * 2 * Q + 2 * 2 * DW : 2 * Q + 2 * D;
	double low = INFINITY, high = -INFINITY;
	uint32_t steps = 0;
	while (w->tenant[0]->waiting > 0 && w->tenant[1]->waiting > 0) {
		double diff = w->tenant[0]->service - w->tenant[1]->service;
		low = fmin(low, diff);
		high = fmax(high, diff);
		CHECK(high - low <= bound, "%s: service spread %g > bound %g after %u steps",
		      rs_dispatch_policy_name(policy), high - low, bound, steps);
		for (uint32_t t = 0; per_worker && t < 2; t++)
			for (uint32_t k = 0; k < 2; k++) {
				double e = rs_dispatch_deficit(rs_sched_dispatch(w->sched),
							       w->tenant[t], k);
				CHECK(e >= -DW && e <= Q,
				      "tenant %u on worker %u: deficit %g outside [-%g, %g]", t, k,
				      e, DW, Q);
			}
		run_all(w);
		steps++;
	}
	CHECK(steps > 50, "only %u steps backlogged", steps);
	printf("fairness %s: spread %.0f of bound %.0f over %u steps; worker loads served %u, %u\n",
	       rs_dispatch_policy_name(policy), high - low, bound, steps, w->served_by[0],
	       w->served_by[1]);
	drain(w);
	CHECK(w->served_by[0] > 0 && w->served_by[1] > 0, "a worker served nothing");
	world_destroy(w);
	free(w);
}

/* Saturation: every request at once, P tenants, each with one prefix of PB blocks that all
 * its prompts start with (then one block of their own), W workers of B seats whose pools
 * hold the running requests and a few prefixes, not all P. Returns the share of prompt
 * tokens served by the prefix cache.
 *
 * The lower bound for d2lpm (Q_d large enough that no tenant runs out of deficit, so each
 * worker's choice is the longest match on its own cache): a worker takes a request whose
 * prefix it does not cache only when no waiting request's prefix is cached there, and
 * then, in that one plan, at most B of them; from the next step on the prefix it took is
 * cached there, and locked by its running requests, so the worker keeps taking that
 * tenant (a full match) until it has nothing waiting, for good, since every request was
 * submitted at the start (premise: a started tenant's prefix is not evicted from that
 * worker while it has requests waiting; docs/scheduling.md). So each (worker, tenant)
 * pair accounts for at most B requests that miss: at most W P B requests miss (the first wave
 * included), and every other request hits its PB-block prefix: hits >= (N - W P B) PB BLOCK / (N
 * PROMPT). */
static double saturated_hit_rate(uint32_t workers, enum rs_dispatch_policy policy)
{
	enum { P = 8, PER_TENANT = 250, PB = 8, B = 4, MAX_OUTPUT = 16, KV = 48 };
	const uint32_t prompt = (PB + 1) * BLOCK;
	struct world *w = calloc(1, sizeof(*w));
	/* The default Q_d (65536) holds a tenant's whole work, at most PER_TENANT (w_p PROMPT
	 * + w_q MAX_OUTPUT) = 44000: no tenant runs out on any worker after its first round.
	 * The admission quantum (the baselines' order) is 256. */
	struct rs_dispatch_params d = {.policy = policy};
	/* 4 running requests of 10 blocks, and 40 more: 5 prefixes of P = 8. */
	world_init(w, workers, 1, B, KV, RS_ADMISSION_DLPM, 256, &d);
	uint32_t id = 0;
	uint64_t seed = 11;
	w->full_prefix = PB * BLOCK;
	for (uint32_t i = 0; i < PER_TENANT; i++)
		for (uint32_t t = 0; t < P; t++, id++)
			submit(w, id, t, t, PB * BLOCK, prompt, 1 + lcg(&seed) % MAX_OUTPUT);
	drain(w);
	const struct rs_sched_stats *stats = rs_sched_stats(w->sched);
	for (uint32_t i = 0; i < id; i++)
		CHECK(w->done[i] && w->status[i] == 0, "%s: request %u: status %d",
		      rs_dispatch_policy_name(policy), i, w->status[i]);
	/* The argument's intermediate claim, pair by pair. */
	for (uint32_t k = 0; policy == RS_DISPATCH_D2LPM && k < workers; k++)
		for (uint32_t t = 0; t < P; t++)
			CHECK(
			    w->short_of_prefix[k][t] <= B,
			    "%u workers: %u requests of tenant %u missed on worker %u, at most %u",
			    workers, w->short_of_prefix[k][t], t, k, (uint32_t)B);
	/* Prefix blocks not served by the cache (each prompt's last block is its own). */
	uint64_t missed = (stats->prompt_tokens - stats->cached_tokens) / BLOCK - id;
	double rate = (double)stats->cached_tokens / (double)stats->prompt_tokens;
	if (getenv("SCHED_DISPATCH_VERBOSE"))
		printf("%s x%u: evicted %llu blocks, %llu preemptions, %llu admitted, %llu prefix "
		       "blocks missed\n",
		       rs_dispatch_policy_name(policy), workers,
		       (unsigned long long)stats->evicted_blocks,
		       (unsigned long long)stats->preemptions, (unsigned long long)stats->admitted,
		       (unsigned long long)missed);
	world_destroy(w);
	free(w);
	return rate;
}

static void test_saturation(uint32_t workers)
{
	enum { P = 8, N = 2000, PB = 8, B = 4 };
	double bound = (double)(N - workers * P * B) * PB / (N * (PB + 1));
	double rate[4];
	for (int policy = 0; policy < 4; policy++)
		rate[policy] = saturated_hit_rate(workers, (enum rs_dispatch_policy)policy);
	printf("saturation, %u workers: hit rate d2lpm %.3f (bound %.3f), round-robin %.3f, "
	       "least-loaded %.3f, cache-aware %.3f\n",
	       workers, rate[0], bound, rate[1], rate[2], rate[3]);
	CHECK(rate[RS_DISPATCH_D2LPM] >= bound, "%u workers: d2lpm hit rate %.3f < bound %.3f",
	      workers, rate[RS_DISPATCH_D2LPM], bound);
	for (int policy = 1; policy < 4; policy++)
		CHECK(rate[RS_DISPATCH_D2LPM] >= rate[policy] + 0.2,
		      "%u workers: d2lpm %.3f not 20 points above %s's %.3f", workers,
		      rate[RS_DISPATCH_D2LPM],
		      rs_dispatch_policy_name((enum rs_dispatch_policy)policy), rate[policy]);
}

/* Round-robin and least-loaded told apart: r0 (2 tokens) and r1 (100 tokens) go to workers
 * 0 and 1 under both; once r0 has ended, loads are (0, 1). Least-loaded sends r2 to worker
 * 0 (load 0) and r3 to worker 0 too (loads 1, 1: the lower index); round-robin sends r2 to
 * worker 0 (its turn) and r3 to worker 1. */
static void test_baselines(enum rs_dispatch_policy policy)
{
	struct world *w = calloc(1, sizeof(*w));
	struct rs_dispatch_params d = {.policy = policy};
	world_init(w, 2, 1, 8, 256, RS_ADMISSION_FCFS, 0, &d);
	submit(w, 0, 0, 0, 0, 8, 2);
	submit(w, 1, 0, 0, 0, 8, 100);
	for (int i = 0; i < 5 && !w->done[0]; i++)
		run_all(w);
	CHECK(w->done[0] && !w->done[1], "r0 ended first");
	CHECK(w->worker_of[0] == 0 && w->worker_of[1] == 1, "r0, r1 on workers %u, %u",
	      w->worker_of[0], w->worker_of[1]);
	submit(w, 2, 0, 0, 0, 8, 4);
	submit(w, 3, 0, 0, 0, 8, 4);
	run_all(w);
	uint32_t want3 = policy == RS_DISPATCH_ROUND_ROBIN ? 1 : 0;
	CHECK(w->worker_of[2] == 0 && w->worker_of[3] == want3, "%s: r2, r3 on workers %u, %u",
	      rs_dispatch_policy_name(policy), w->worker_of[2], w->worker_of[3]);
	drain(w);
	world_destroy(w);
	free(w);
}

/* cache-aware, SGLang's rule (cache threshold 0.5; balance thresholds 32 and 1.0001 by
 * default). Balanced loads: a prompt of 64 tokens whose first 48 are cached on worker 0
 * (ratio 0.75) goes there although worker 0 is more loaded; one of 128 with 16 cached
 * (0.125) goes to the worker whose cache holds fewer blocks (worker 1: none); once worker
 * 1 holds 8 blocks of it and worker 0 five, a prompt matching nothing goes to worker 0,
 * the smaller cache, though worker 1 is less loaded (2 against 1). */
static void test_cache_aware(void)
{
	struct world *w = calloc(1, sizeof(*w));
	struct rs_dispatch_params d = {.policy = RS_DISPATCH_CACHE_AWARE};
	world_init(w, 2, 1, 8, 256, RS_ADMISSION_FCFS, 0, &d);
	submit(w, 0, 0, 5, 64, 64, 100);
	run_lane(w, 0, 0); /* prefilled: its 4 prompt blocks are cached on worker 0 */
	CHECK(w->worker_of[0] == 0, "r0 on worker %u", w->worker_of[0]);
	submit(w, 1, 0, 5, 48, 64, 100);
	run_all(w);
	CHECK(w->worker_of[1] == 0, "r1 (48 of 64 cached on worker 0) on worker %u",
	      w->worker_of[1]);
	submit(w, 2, 0, 5, 16, 128, 100);
	run_all(w);
	CHECK(w->worker_of[2] == 1, "r2 (16 of 128 cached) on worker %u", w->worker_of[2]);
	uint32_t blocks0 = rs_prefix_cache_nodes(rs_sched_worker_cache(w->sched, 0));
	uint32_t blocks1 = rs_prefix_cache_nodes(rs_sched_worker_cache(w->sched, 1));
	CHECK(blocks0 == 5 && blocks1 == 8, "caches hold %u and %u blocks, want 5 and 8", blocks0,
	      blocks1);
	submit(w, 3, 0, 9, 0, 32, 10);
	run_all(w);
	CHECK(w->worker_of[3] == 0, "r3 (no match) on worker %u, not the smaller cache",
	      w->worker_of[3]);
	drain(w);
	world_destroy(w);
	free(w);

	/* Imbalanced (gap above 1 and above 1.0001 x the least): the least-loaded, whatever
	 * the cache. Loads (1, 0): a gap of 1 is balanced, r1 follows its 48 cached tokens;
	 * loads (2, 0): r2, with the same match, goes to worker 1. */
	w = calloc(1, sizeof(*w));
	d.balance_abs = 1;
	world_init(w, 2, 1, 8, 256, RS_ADMISSION_FCFS, 0, &d);
	submit(w, 0, 0, 5, 64, 64, 100);
	run_lane(w, 0, 0);
	submit(w, 1, 0, 5, 48, 64, 100);
	submit(w, 2, 0, 5, 48, 64, 100);
	run_lane(w, 0, 0);
	run_lane(w, 1, 0);
	CHECK(w->worker_of[1] == 0 && w->worker_of[2] == 1, "imbalanced: r1, r2 on %u, %u",
	      w->worker_of[1], w->worker_of[2]);
	drain(w);
	world_destroy(w);
	free(w);
}

/* Worker 0's step fails: its requests end with the step's status; worker 1's complete, and
 * worker 1 keeps taking new requests. */
static void test_failure(void)
{
	struct world *w = calloc(1, sizeof(*w));
	struct rs_dispatch_params d = {.policy = RS_DISPATCH_ROUND_ROBIN};
	world_init(w, 2, 1, 8, 256, RS_ADMISSION_FCFS, 0, &d);
	for (uint32_t id = 0; id < 6; id++)
		submit(w, id, id % 2, 0, 0, 8, 10);
	w->clock_ns += 1000000;
	run_lane(w, 0, -EIO);
	run_lane(w, 1, 0);
	for (uint32_t id = 0; id < 6; id++)
		if (w->worker_of[id] == 0)
			CHECK(w->done[id] && w->status[id] == -EIO,
			      "request %u on the failed worker: "
			      "done %d status %d",
			      id, w->done[id], w->status[id]);
	for (uint32_t id = 6; id < 10; id++)
		submit(w, id, 0, 0, 0, 8, 10);
	drain(w);
	uint32_t failed = 0;
	for (uint32_t id = 0; id < 10; id++) {
		CHECK(w->done[id], "request %u not done", id);
		failed += w->status[id] == -EIO;
		CHECK(w->status[id] == 0 || (w->status[id] == -EIO && w->worker_of[id] == 0),
		      "request %u: status %d on worker %u", id, w->status[id], w->worker_of[id]);
	}
	CHECK(failed == 3, "%u requests failed, want the 3 of worker 0's step", failed);
	CHECK(w->served_by[1] >= 3, "worker 1 served %u", w->served_by[1]);
	world_destroy(w);
	free(w);
}

/* Two workers of two lanes each, KV pools small enough to evict and preempt, random
 * prompts with shared prefixes from two tenants, under every policy: the core's invariants
 * hold after every step (rs_sched_check: per-worker promises and loads, every block a
 * running request holds in use in its own worker's pool), a request changes worker only
 * after a preemption (run_lane), and each ends with status 0 and all its tokens. */
static void test_pressure(enum rs_dispatch_policy policy)
{
	enum { N = 400 };
	struct world *w = calloc(1, sizeof(*w));
	struct rs_dispatch_params d = {.policy = policy, .load_threshold = 2};
	world_init(w, 2, 2, 4, 24, RS_ADMISSION_DLPM, 64, &d);
	uint64_t seed = 7;
	uint32_t want[N];
	for (uint32_t id = 0; id < N; id++) {
		uint32_t prompt = 8 + lcg(&seed) % 56;
		want[id] = 1 + lcg(&seed) % 40;
		submit(w, id, id % 2, lcg(&seed) % 3, prompt / 2, prompt, want[id]);
	}
	drain(w);
	const struct rs_sched_stats *stats = rs_sched_stats(w->sched);
	CHECK(stats->preemptions > 0, "%s: no preemption with 24-block pools",
	      rs_dispatch_policy_name(policy));
	for (uint32_t id = 0; id < N; id++)
		CHECK(w->done[id] && w->status[id] == 0 && w->generated[id] == want[id],
		      "%s: request %u: done %d status %d, %u of %u tokens",
		      rs_dispatch_policy_name(policy), id, w->done[id], w->status[id],
		      w->generated[id], want[id]);
	CHECK(w->served_by[0] > 0 && w->served_by[1] > 0, "a worker served nothing");
	world_destroy(w);
	free(w);
}

static void test_config(void)
{
	struct rs_kv_cache *kv[2];
	CHECK(rs_kv_cache_create(64, 16, &kv[0]) == 0 && rs_kv_cache_create(64, 8, &kv[1]) == 0,
	      "kv");
	struct world w0;
	struct rs_sched_hooks hooks = {
	    .now_ns = now_hook, .token = token_hook, .finish = finish_hook, .ctx = &w0};
	struct rs_sched_config config = {.lanes = 1,
					 .max_batch = 4,
					 .max_batch_tokens = 64,
					 .max_tenants = 2,
					 .vocab_size = 10,
					 .workers = 2};
	struct rs_sched *sched = NULL;
	CHECK(rs_sched_create(&config, kv[0], &hooks, &sched) == -EINVAL,
	      "two workers over one pool accepted");
	CHECK(rs_sched_create_workers(&config, kv, &hooks, &sched) == -EINVAL,
	      "block sizes 16 and 8 accepted");
	config.planner = &rs_planner_multibin;
	struct rs_kv_cache *same[2] = {kv[0], kv[0]};
	CHECK(rs_sched_create_workers(&config, same, &hooks, &sched) == -EINVAL,
	      "multi-bin with two workers accepted");
	config.planner = NULL;
	config.dispatch.policy = (enum rs_dispatch_policy)9;
	CHECK(rs_sched_create_workers(&config, same, &hooks, &sched) == -EINVAL,
	      "dispatch policy 9 accepted");
	enum rs_dispatch_policy p;
	CHECK(rs_dispatch_policy_parse("cache-aware", &p) == 0 && p == RS_DISPATCH_CACHE_AWARE,
	      "parse");
	CHECK(rs_dispatch_policy_parse("random", &p) == -EINVAL, "parsed 'random'");
	rs_kv_cache_destroy(kv[0]);
	rs_kv_cache_destroy(kv[1]);
}

int main(void)
{
	test_config();
	test_concentration();
	test_deficit();
	test_lookahead();
	test_fairness(RS_DISPATCH_D2LPM);
	test_fairness(RS_DISPATCH_ROUND_ROBIN);
	test_fairness(RS_DISPATCH_CACHE_AWARE);
	test_saturation(2);
	test_saturation(4);
	test_baselines(RS_DISPATCH_ROUND_ROBIN);
	test_baselines(RS_DISPATCH_LEAST_LOADED);
	test_cache_aware();
	test_failure();
	for (int policy = 0; policy < 4; policy++)
		test_pressure((enum rs_dispatch_policy)policy);
	return T_EXIT_PASS;
}
