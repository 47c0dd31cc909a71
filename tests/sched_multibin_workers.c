/* Multi-bin batching with several workers (daemon/sched/planner_multibin.c, "Workers"), on
 * a virtual clock, one lane step a millisecond:
 *   - every step a lane runs holds requests of its own worker only, all of one length
 *     class (computed here from the hints and the fixed boundaries, not read from the
 *     core); a static batch takes no one in while it runs; every request ends with all
 *     its tokens; no worker ever holds more than its lanes x B seated plus k x B staged;
 *     every worker serves; with one lane per worker and static batches, no request waits
 *     for a seat longer than the deadline plus (k + 1) x B + 1 batches (its worker's
 *     staged requests are at most (lanes + k) x B - B: the argument of the planner's
 *     comment, per worker); under each dispatch policy;
 *   - all requests at once, four output lengths (5, 10, 15, 20: one per bin), B = 8, two
 *     workers: with k = 4 every batch has one length and takes exactly that many steps,
 *     and each (worker, length) pair runs ceil(n / B) batches (a partial bin runs only
 *     when nothing waits for admission), so the lane steps are at most
 *     sum over lengths of (n_L / B + 2) x L = 400 for 48 requests of each length; k = 1
 *     mixes lengths, a batch of 8 lasts its longest (19.5 steps expected), about 470.
 * Tokens are written by the test (id 1 for every sampled position). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/planner.h"
#include "tests/engine_test.h"
/* engine_test.h's CHECK counts failures and goes on; here a failure stops the test. */
#undef CHECK
#include "tests/harness/harness.h"
#include "tests/sched_world.h"

enum { MAX_REQUESTS = 2048, MAX_WORKERS = 4, STEP_NS = 1000000 };
_Static_assert(MAX_REQUESTS <= (int)SCHED_SEATS_MAX_REQUESTS, "seats for every request");

struct world {
	struct sched_world s; /* first: the hooks' ctx */
	uint32_t lanes_per_worker, lanes;
	uint32_t boundaries[3]; /* the length classes' upper bounds, as configured */
	struct sched_seats seats;
	/* per request id */
	uint32_t want[MAX_REQUESTS], got[MAX_REQUESTS], worker[MAX_REQUESTS];
	bool done[MAX_REQUESTS];
	uint64_t lane_steps;
};

static void finish_hook(void *ctx, struct rs_request *request, int32_t status)
{
	struct world *w = ctx;
	uint32_t id = (uint32_t)request->user_data;
	CHECK(status == 0, "request %u: status %d", id, status);
	w->done[id] = true;
	w->got[id] = request->generated;
	w->worker[id] = request->worker;
	sched_seats_leave(&w->seats, request);
	rs_request_put(&w->s.pool, request);
}

static void world_init(struct world *w, uint32_t workers, uint32_t lanes,
		       enum rs_dispatch_policy dispatch, const struct rs_multibin_params *params,
		       uint32_t max_batch)
{
	memset(w, 0, sizeof(*w));
	w->lanes_per_worker = lanes;
	w->lanes = workers * lanes;
	w->seats.lanes = w->lanes;
	CHECK(w->lanes <= SCHED_SEATS_MAX_LANES, "%u lanes", w->lanes);
	memcpy(w->boundaries, params->boundaries, sizeof(w->boundaries));
	struct rs_sched_config config = sched_world_config();
	config.lanes = lanes;
	config.max_batch = max_batch;
	config.max_tenants = 4;
	config.planner = &rs_planner_multibin;
	config.multibin = *params;
	config.workers = workers;
	config.dispatch = (struct rs_dispatch_params){.policy = dispatch};
	struct rs_sched_hooks hooks = {.now_ns = sched_world_now,
				       .token = sched_world_no_token,
				       .finish = finish_hook,
				       .ctx = w};
	CHECK(workers <= MAX_WORKERS, "%u workers", workers);
	CHECK(sched_world_init(&w->s, &config, &hooks, 4096, 16, MAX_REQUESTS) == 0, "sched");
}

/* The length class of a hinted length, from the configured boundaries. */
static uint32_t class_of(const struct world *w, uint32_t bins, uint32_t length)
{
	uint32_t c = 0;
	while (c + 1 < bins && length > w->boundaries[c])
		c++;
	return c;
}

/* Prompts share one of two 32-token prefixes (so that d2lpm has something to follow). */
static void submit(struct world *w, uint32_t id, uint32_t prompt_len, uint32_t output_len)
{
	struct rs_request *r = sched_world_request(&w->s, id, prompt_len, output_len, 16);
	for (uint32_t i = 0; i < prompt_len; i++)
		r->tokens[i] = i < 32 ? 10 + (id % 2) * 40 + i % 40 : (id * 13 + i * 7) % 100;
	r->output_len_hint = output_len;
	w->want[id] = output_len;
	CHECK(rs_sched_submit(w->s.sched, r) == 0, "submit %u", id);
}

/* Plan every lane, check the plans, run them, and return how many ran. */
static int step(struct world *w, uint32_t bins, uint32_t batch, bool continuous)
{
	int ran = 0;
	for (uint32_t l = 0; l < w->lanes; l++) {
		const struct rs_step_plan *plan = rs_sched_plan_step(w->s.sched, l);
		if (!plan)
			continue;
		uint32_t worker = l / w->lanes_per_worker;
		uint32_t class = class_of(w, bins, plan->requests[0]->output_len_hint);
		uint32_t joined = 0;
		for (uint32_t i = 0; i < plan->n; i++) {
			struct rs_request *r = plan->requests[i];
			CHECK(r->worker == worker,
			      "lane %u of worker %u runs a request of worker %u", l, worker,
			      r->worker);
			CHECK(class_of(w, bins, r->output_len_hint) == class,
			      "lane %u mixes lengths %u and %u", l,
			      plan->requests[0]->output_len_hint, r->output_len_hint);
			joined += sched_seats_take(&w->seats, l, r, w->s.clock_ns);
			if (plan->steps[i].sample)
				*plan->steps[i].out_token = 1;
		}
		sched_seats_joined(&w->seats, l, joined, continuous);
		CHECK(plan->n <= batch, "lane %u runs %u requests, B = %u", l, plan->n, batch);
		rs_sched_step_done(w->s.sched, l, 0);
		w->lane_steps++;
		ran++;
	}
	CHECK(rs_sched_check(w->s.sched) == 0, "invariants");
	for (uint32_t k = 0; k < w->s.workers; k++)
		CHECK(rs_sched_worker_load(w->s.sched, k) <= (w->lanes_per_worker + bins) * batch,
		      "worker %u holds %u requests, more than (lanes + k) x B", k,
		      rs_sched_worker_load(w->s.sched, k));
	return ran;
}

/* Random arrivals of hinted requests over four length classes. */
static void test_batches(enum rs_dispatch_policy dispatch, uint32_t lanes, bool continuous)
{
	struct world *w = calloc(1, sizeof(*w));
	enum { N = 1500, K = 4, B = 6, WORKERS = 3 };
	struct rs_multibin_params p = {.bins = K,
				       .batch = B,
				       .continuous = continuous,
				       .deadline_ns = 20 * STEP_NS,
				       .boundaries = {8, 16, 30}};
	world_init(w, WORKERS, lanes, dispatch, &p, 8);
	uint64_t rng = 77 + dispatch * 4 + lanes * 2 + continuous;
	uint32_t next = 0, max_output = 40;
	while (next < N || rs_sched_busy(w->s.sched)) {
		/* About three arrivals a step, in bursts: the workers stay busy. */
		for (uint32_t a = (uint32_t)(test_rand(&rng) % 7); a > 0 && next < N; a--, next++) {
			uint32_t out = 1 + (uint32_t)(test_rand(&rng) % max_output);
			submit(w, next, 33 + (uint32_t)(test_rand(&rng) % 30), out);
		}
		int ran = step(w, K, B, continuous);
		uint64_t wake = rs_sched_next_wakeup_ns(w->s.sched);
		CHECK(ran || next < N || wake > w->s.clock_ns, "stuck with %u waiting",
		      rs_sched_waiting(w->s.sched));
		w->s.clock_ns += STEP_NS;
	}
	uint64_t batch_ns = (uint64_t)max_output * STEP_NS, worst = 0;
	uint32_t served[WORKERS] = {0};
	for (uint32_t id = 0; id < N; id++) {
		CHECK(w->done[id] && w->got[id] == w->want[id], "request %u: %u of %u tokens", id,
		      w->got[id], w->want[id]);
		served[w->worker[id]]++;
		uint64_t wait = w->seats.seated_ns[id] - w->seats.admitted_ns[id];
		worst = wait > worst ? wait : worst;
	}
	uint64_t bound = p.deadline_ns + ((K + 1) * B + 1) * batch_ns;
	printf("%s, %u lane(s) per worker, %s: served %u, %u, %u; longest wait for a seat "
	       "%.0f ms (bound %.0f ms for one static lane per worker)\n",
	       rs_dispatch_policy_name(dispatch), lanes, continuous ? "continuous" : "static",
	       served[0], served[1], served[2], worst / 1e6, bound / 1e6);
	for (uint32_t k = 0; k < WORKERS; k++)
		CHECK(served[k] > 0 && rs_sched_worker_served(w->s.sched, k) == served[k],
		      "worker %u served %u (the core says %llu)", k, served[k],
		      (unsigned long long)rs_sched_worker_served(w->s.sched, k));
	CHECK(lanes > 1 || continuous || worst <= bound, "waited %llu ns, bound %llu ns",
	      (unsigned long long)worst, (unsigned long long)bound);
	const struct rs_multibin_stats *st = rs_multibin_stats(w->s.sched);
	CHECK(st && st->predictions == N && st->right_bin == N && st->abs_error_sum == 0,
	      "hinted lengths predicted wrong");
	sched_world_destroy(&w->s);
	free(w);
}

/* All at once, lengths 5, 10, 15, 20: lane steps for k bins (two workers, round-robin). */
static uint64_t burst_steps(uint32_t bins)
{
	struct world *w = calloc(1, sizeof(*w));
	enum { PER_LENGTH = 48, B = 8 };
	struct rs_multibin_params p = {
	    .bins = bins, .batch = B, .deadline_ns = 1000000 * (uint64_t)STEP_NS};
	if (bins == 4)
		p.boundaries[0] = 5, p.boundaries[1] = 10, p.boundaries[2] = 15;
	world_init(w, 2, 1, RS_DISPATCH_ROUND_ROBIN, &p, B);
	uint64_t rng = 5;
	uint32_t left[4] = {PER_LENGTH, PER_LENGTH, PER_LENGTH, PER_LENGTH};
	for (uint32_t id = 0; id < 4 * PER_LENGTH; id++) {
		uint32_t c;
		do
			c = (uint32_t)(test_rand(&rng) % 4);
		while (!left[c]);
		left[c]--;
		submit(w, id, 40, 5 * (c + 1)); /* one step prefills 40 and samples */
	}
	while (rs_sched_busy(w->s.sched)) {
		CHECK(step(w, bins, B, false) ||
			  rs_sched_next_wakeup_ns(w->s.sched) > w->s.clock_ns,
		      "stuck");
		w->s.clock_ns += STEP_NS;
	}
	uint64_t steps = w->lane_steps, makespan = (w->s.clock_ns - 1000000000) / STEP_NS;
	printf("all at once, k = %u: %llu lane steps, done after %llu steps\n", bins,
	       (unsigned long long)steps, (unsigned long long)makespan);
	sched_world_destroy(&w->s);
	free(w);
	return steps;
}

int main(void)
{
	test_batches(RS_DISPATCH_ROUND_ROBIN, 1, false);
	test_batches(RS_DISPATCH_LEAST_LOADED, 1, false);
	test_batches(RS_DISPATCH_CACHE_AWARE, 1, false);
	test_batches(RS_DISPATCH_D2LPM, 1, false);
	test_batches(RS_DISPATCH_LEAST_LOADED, 2, false);
	test_batches(RS_DISPATCH_LEAST_LOADED, 2, true);
	test_batches(RS_DISPATCH_D2LPM, 2, true);
	uint64_t one = burst_steps(1), four = burst_steps(4);
	CHECK(four <= 400, "k = 4: %llu lane steps, more than the 400 derived",
	      (unsigned long long)four);
	CHECK(one > four, "k = 1 (%llu lane steps) no slower than k = 4 (%llu)",
	      (unsigned long long)one, (unsigned long long)four);
	return T_EXIT_PASS;
}
