/* Dispatch at arrival (dispatch.at_arrival, daemon/sched/router.h: SGLang's router) on a
 * virtual clock, no engine (the test writes every sampled token, id 1):
 *   - cache-aware, two prefixes alternating, all at once (saturation): the router's rule
 *     at arrival sends the first A to worker 0 (no match, equal trees: the first), the
 *     first B to worker 1 (no match: the smaller tree), and then each prefix follows its
 *     worker (its blocks are in that worker's tree, over half the prompt), loads staying
 *     within 1: every A runs on worker 0, every B on worker 1, whatever the order of
 *     admission; each worker misses its prefix only in its first batch, so the prompt
 *     tokens served from cache are at least (N - 2 x max_batch) x the prefix;
 *   - cache-aware's balance rule, one prefix, balance_abs 2, loads counted at the router
 *     (nothing ends while they arrive): 0, 0, 0 (loads 3 - 0 > 2 then), 1 (the least
 *     loaded), then equal matches go to the lower load, ties to worker 0: 1, 1, 0, 1, 0, 1;
 *   - round-robin at arrival: request i on worker i mod 3;
 *   - d2lpm at arrival is refused (its workers choose at admission). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tests/harness/harness.h"
#include "tests/sched_world.h"

enum { MAX_REQUESTS = 512, MAX_WORKERS = 3, BLOCK = 16, PREFIX = 32, PROMPT = 40 };

struct world {
	struct sched_world s; /* first: the hooks' ctx */
	bool done[MAX_REQUESTS];
	uint32_t finished_on[MAX_REQUESTS], cached[MAX_REQUESTS];
};

static void finish_hook(void *ctx, struct rs_request *request, int32_t status)
{
	struct world *w = ctx;
	uint32_t id = (uint32_t)request->user_data;
	CHECK(status == 0 && !w->done[id], "request %u: status %d", id, status);
	w->done[id] = true;
	w->finished_on[id] = request->worker;
	w->cached[id] = request->cached_tokens;
	rs_request_put(&w->s.pool, request);
}

static int world_init(struct world *w, uint32_t workers, const struct rs_dispatch_params *d)
{
	memset(w, 0, sizeof(*w));
	struct rs_sched_config config = sched_world_config();
	config.lanes = 1;
	config.max_batch = 4;
	config.max_tenants = 2;
	config.workers = workers;
	config.dispatch = *d;
	struct rs_sched_hooks hooks = {.now_ns = sched_world_now,
				       .token = sched_world_no_token,
				       .finish = finish_hook,
				       .ctx = w};
	CHECK(workers <= MAX_WORKERS, "%u workers", workers);
	return sched_world_init(&w->s, &config, &hooks, 256, BLOCK, MAX_REQUESTS);
}

/* PREFIX tokens of prefix p, then private ones. The worker it was routed to. */
static uint32_t submit(struct world *w, uint32_t id, uint32_t prefix)
{
	struct rs_request *r = sched_world_request(&w->s, id, PROMPT, 6, BLOCK);
	for (uint32_t i = 0; i < PROMPT; i++)
		r->tokens[i] = i < PREFIX ? (prefix * 31 + i * 7) % 97 : (id * 13 + i * 11) % 97;
	CHECK(rs_sched_submit(w->s.sched, r) == 0, "submit %u", id);
	return r->worker;
}

static void drain(struct world *w)
{
	for (int i = 0; rs_sched_busy(w->s.sched) && i < 100000; i++) {
		w->s.clock_ns += 1000000;
		for (uint32_t l = 0; l < w->s.workers; l++) {
			const struct rs_step_plan *plan = rs_sched_plan_step(w->s.sched, l);
			if (!plan)
				continue;
			for (uint32_t k = 0; k < plan->n; k++) {
				CHECK(plan->requests[k]->worker == l, "lane %u runs worker %u's", l,
				      plan->requests[k]->worker);
				if (plan->steps[k].sample)
					*plan->steps[k].out_token = 1;
			}
			rs_sched_step_done(w->s.sched, l, 0);
			CHECK(rs_sched_check(w->s.sched) == 0, "invariants");
		}
	}
}

static void test_prefixes_keep_their_worker(void)
{
	enum { N = 200 };
	struct world *w = calloc(1, sizeof(*w));
	struct rs_dispatch_params d = {.policy = RS_DISPATCH_CACHE_AWARE, .at_arrival = true};
	CHECK(world_init(w, 2, &d) == 0, "sched");
	for (uint32_t id = 0; id < N; id++)
		submit(w, id, id % 2);
	drain(w);
	uint64_t cached = 0;
	for (uint32_t id = 0; id < N; id++) {
		CHECK(w->done[id] && w->finished_on[id] == id % 2,
		      "request %u of prefix %u ran on worker %u", id, id % 2, w->finished_on[id]);
		cached += w->cached[id];
	}
	uint64_t bound = (uint64_t)(N - 2 * 4) * PREFIX;
	printf("cache-aware at arrival, 2 prefixes, all at once: %llu prompt tokens from cache "
	       "(at least %llu)\n",
	       (unsigned long long)cached, (unsigned long long)bound);
	CHECK(cached >= bound, "%llu cached tokens, bound %llu", (unsigned long long)cached,
	      (unsigned long long)bound);
	sched_world_destroy(&w->s);
	free(w);
}

static void test_balance_rule(void)
{
	struct world *w = calloc(1, sizeof(*w));
	struct rs_dispatch_params d = {
	    .policy = RS_DISPATCH_CACHE_AWARE, .at_arrival = true, .balance_abs = 2};
	CHECK(world_init(w, 2, &d) == 0, "sched");
	static const uint32_t want[] = {0, 0, 0, 1, 1, 1, 0, 1, 0, 1};
	for (uint32_t id = 0; id < sizeof(want) / sizeof(want[0]); id++) {
		uint32_t got = submit(w, id, 5);
		CHECK(got == want[id], "request %u routed to worker %u, want %u", id, got,
		      want[id]);
	}
	drain(w);
	sched_world_destroy(&w->s);
	free(w);
}

static void test_round_robin_and_refusal(void)
{
	struct world *w = calloc(1, sizeof(*w));
	struct rs_dispatch_params d = {.policy = RS_DISPATCH_ROUND_ROBIN, .at_arrival = true};
	CHECK(world_init(w, 3, &d) == 0, "sched");
	for (uint32_t id = 0; id < 30; id++)
		CHECK(submit(w, id, id % 4) == id % 3, "request %u not on worker %u", id, id % 3);
	drain(w);
	for (uint32_t id = 0; id < 30; id++)
		CHECK(w->done[id] && w->finished_on[id] == id % 3, "request %u ran on worker %u",
		      id, w->finished_on[id]);
	sched_world_destroy(&w->s);
	d.policy = RS_DISPATCH_D2LPM;
	CHECK(world_init(w, 2, &d) == -EINVAL, "d2lpm at arrival accepted");
	free(w);
}

int main(void)
{
	test_prefixes_keep_their_worker();
	test_balance_rule();
	test_round_robin_and_refusal();
	return T_EXIT_PASS;
}
