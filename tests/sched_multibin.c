/* The multi-bin planner (daemon/sched/planner_multibin.c) on a virtual clock:
 *   - while the engine is busy, a bin that cannot fill runs when its oldest request has
 *     waited the deadline, not before, and the core asks to be woken then; an idle
 *     engine with nothing else waiting runs a bin at once;
 *   - every step's requests come from one bin; a static batch takes no one in while it
 *     runs, a continuous one refills from its own bin; every request ends with all its
 *     tokens; the wait from admission to a seat stays within the bound the planner's
 *     comment derives: deadline + (k x B) batches (one lane, static);
 *   - boundaries learned online are the equal-probability quantiles of the lengths seen
 *     (exact up to 256 tokens, within a histogram bucket, 2^(1/16), above).
 * Tokens are written by the test (id 1 for every sampled position). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/planner.h"
#include "tests/engine_test.h"
/* engine_test.h's CHECK counts failures and goes on; here a failure stops the test. */
#undef CHECK
#include "tests/harness/harness.h"
#include "tests/sched_world.h"

enum { MAX_REQUESTS = 4096, STEP_NS = 1000000 };
_Static_assert(MAX_REQUESTS <= (int)SCHED_SEATS_MAX_REQUESTS, "seats for every request");

struct world {
	struct sched_world s; /* first: the hooks' ctx */
	uint32_t lanes;
	struct sched_seats seats;
	/* per request id */
	uint32_t want[MAX_REQUESTS], got[MAX_REQUESTS];
	bool done[MAX_REQUESTS];
	uint32_t finished_lengths[MAX_REQUESTS], n_finished;
};

static void finish_hook(void *ctx, struct rs_request *request, int32_t status)
{
	struct world *w = ctx;
	uint32_t id = (uint32_t)request->user_data;
	CHECK(status == 0, "request %u: status %d", id, status);
	w->done[id] = true;
	w->got[id] = request->generated;
	w->finished_lengths[w->n_finished++] = request->generated;
	sched_seats_leave(&w->seats, request);
	rs_request_put(&w->s.pool, request);
}

static void world_init(struct world *w, uint32_t lanes, const struct rs_multibin_params *params,
		       uint32_t max_batch, uint32_t kv_blocks)
{
	memset(w, 0, sizeof(*w));
	w->lanes = lanes;
	w->seats.lanes = lanes;
	CHECK(lanes <= SCHED_SEATS_MAX_LANES, "%u lanes", lanes);
	struct rs_sched_config config = sched_world_config();
	config.lanes = lanes;
	config.max_batch = max_batch;
	config.max_tenants = 4;
	config.planner = &rs_planner_multibin;
	config.multibin = *params;
	struct rs_sched_hooks hooks = {.now_ns = sched_world_now,
				       .token = sched_world_no_token,
				       .finish = finish_hook,
				       .ctx = w};
	CHECK(sched_world_init(&w->s, &config, &hooks, kv_blocks, 16, MAX_REQUESTS) == 0, "sched");
}

static void submit(struct world *w, uint32_t id, uint32_t prompt_len, uint32_t output_len,
		   uint32_t hint)
{
	struct rs_request *r = sched_world_request(&w->s, id, prompt_len, output_len, 16);
	for (uint32_t i = 0; i < prompt_len; i++)
		r->tokens[i] = (id * 13 + i * 7) % 100;
	r->output_len_hint = hint;
	w->want[id] = output_len;
	CHECK(rs_sched_submit(w->s.sched, r) == 0, "submit %u", id);
}

/* Plan every lane, check the plans, run them (1 ms), and return how many ran. */
static int step(struct world *w, bool continuous)
{
	int ran = 0;
	for (uint32_t l = 0; l < w->lanes; l++) {
		const struct rs_step_plan *plan = rs_sched_plan_step(w->s.sched, l);
		if (!plan)
			continue;
		uint32_t bin = plan->requests[0]->bin;
		uint32_t joined = 0;
		for (uint32_t i = 0; i < plan->n; i++) {
			struct rs_request *r = plan->requests[i];
			CHECK(r->bin == bin, "lane %u runs bins %u and %u in one step", l, bin,
			      r->bin);
			joined += sched_seats_take(&w->seats, l, r, w->s.clock_ns);
			if (plan->steps[i].sample)
				*plan->steps[i].out_token = 1;
		}
		/* Static: newcomers only into an empty lane. */
		sched_seats_joined(&w->seats, l, joined, continuous);
		rs_sched_step_done(w->s.sched, l, 0);
		CHECK(rs_sched_check(w->s.sched) == 0, "invariants");
		ran++;
	}
	return ran;
}

static void test_deadline(void)
{
	struct world *w = calloc(1, sizeof(*w));
	struct rs_multibin_params p = {
	    .bins = 2, .batch = 8, .deadline_ns = 5000000, .boundaries = {10}};
	world_init(w, 2, &p, 8, 256);
	/* Lane 1 busy with a long request of bin 1 (alone and idle, it ran at once): an
	 * idle engine would run any bin at once, a busy one lets bins fill. */
	submit(w, 10, 4, 100, 100);
	const struct rs_step_plan *plan = rs_sched_plan_step(w->s.sched, 1);
	CHECK(plan && plan->n == 1, "an idle engine held a bin back");
	if (plan)
		*plan->steps[0].out_token = 1;
	rs_sched_step_done(w->s.sched, 1, 0);
	uint64_t t0 = w->s.clock_ns;
	for (uint32_t id = 0; id < 3; id++)
		submit(w, id, 4, 5, 5); /* bin 0, 3 of a batch of 8 */
	CHECK(rs_sched_plan_step(w->s.sched, 0) == NULL, "a bin of 3 of 8 ran at once");
	CHECK(rs_sched_next_wakeup_ns(w->s.sched) == t0 + 5000000, "wake-up %llu, want %llu",
	      (unsigned long long)rs_sched_next_wakeup_ns(w->s.sched),
	      (unsigned long long)(t0 + 5000000));
	w->s.clock_ns = t0 + 5000000 - 1;
	CHECK(rs_sched_plan_step(w->s.sched, 0) == NULL, "ran before the deadline");
	w->s.clock_ns = t0 + 5000000;
	plan = rs_sched_plan_step(w->s.sched, 0);
	CHECK(plan && plan->n == 3, "at the deadline: %u requests", plan ? plan->n : 0);
	for (uint32_t i = 0; plan && i < plan->n; i++)
		*plan->steps[i].out_token = 1;
	rs_sched_step_done(w->s.sched, 0, 0);
	/* A request of the same bin arriving now waits for the batch to end (static). */
	submit(w, 3, 4, 5, 5);
	for (int i = 0; i < 4; i++) {
		plan = rs_sched_plan_step(w->s.sched, 0);
		CHECK(plan && plan->n == 3, "step %d of the batch: %u requests", i,
		      plan ? plan->n : 0);
		for (uint32_t k = 0; plan && k < plan->n; k++) {
			CHECK(plan->requests[k]->user_data != 3,
			      "a newcomer joined a static batch");
			*plan->steps[k].out_token = 1;
		}
		rs_sched_step_done(w->s.sched, 0, 0);
	}
	CHECK(w->done[0] && w->done[1] && w->done[2] && !w->done[3], "the batch of 3 ended alone");
	/* The free lane stages it now; alone in its bin, it runs after its own deadline. */
	uint64_t t1 = w->s.clock_ns;
	CHECK(rs_sched_plan_step(w->s.sched, 0) == NULL, "a bin of 1 of 8 ran at once");
	CHECK(rs_sched_next_wakeup_ns(w->s.sched) == t1 + 5000000, "second wake-up");
	w->s.clock_ns = t1 + 5000000;
	CHECK(!w->done[3], "the late request ran before its deadline");
	for (int i = 0; rs_sched_busy(w->s.sched) && i < 1000; i++)
		for (uint32_t l = 0; l < 2; l++) {
			plan = rs_sched_plan_step(w->s.sched, l);
			for (uint32_t k = 0; plan && k < plan->n; k++)
				*plan->steps[k].out_token = 1;
			if (plan)
				rs_sched_step_done(w->s.sched, l, 0);
		}
	CHECK(w->done[3] && w->done[10], "requests left over");
	sched_world_destroy(&w->s);
	free(w);
}

/* Random arrivals of hinted requests over 4 length classes. */
static void test_batches(uint32_t lanes, bool continuous)
{
	struct world *w = calloc(1, sizeof(*w));
	enum { N = 1500, K = 4, B = 6 };
	struct rs_multibin_params p = {.bins = K,
				       .batch = B,
				       .continuous = continuous,
				       .deadline_ns = 20 * STEP_NS,
				       .boundaries = {8, 16, 30}};
	world_init(w, lanes, &p, 8, 4096);
	uint64_t rng = 41 + lanes * 2 + continuous;
	uint32_t next = 0, max_output = 40;
	while (next < N || rs_sched_busy(w->s.sched)) {
		/* About one arrival a step, in bursts. */
		for (uint32_t a = (uint32_t)(test_rand(&rng) % 3); a > 0 && next < N; a--, next++) {
			uint32_t out = 1 + (uint32_t)(test_rand(&rng) % max_output);
			submit(w, next, 1 + (uint32_t)(test_rand(&rng) % 30), out, out);
		}
		int ran = step(w, continuous);
		uint64_t wake = rs_sched_next_wakeup_ns(w->s.sched);
		CHECK(ran || next < N || wake > w->s.clock_ns, "stuck with %u waiting",
		      rs_sched_waiting(w->s.sched));
		w->s.clock_ns += STEP_NS;
	}
	/* One lane, static: a batch lasts at most its prefill step and max_output - 1
	 * decodes (each request samples a token per step), so a request waits at most the
	 * deadline, the batch running when it came due, and k x B batches. */
	uint64_t batch_ns = (uint64_t)max_output * STEP_NS, worst = 0;
	for (uint32_t id = 0; id < N; id++) {
		CHECK(w->done[id] && w->got[id] == w->want[id], "request %u: %u of %u tokens", id,
		      w->got[id], w->want[id]);
		uint64_t wait = w->seats.seated_ns[id] - w->seats.admitted_ns[id];
		worst = wait > worst ? wait : worst;
	}
	uint64_t bound = p.deadline_ns + (K * B + 1) * batch_ns;
	printf("lanes %u, %s: longest wait for a seat %.0f ms (bound %.0f ms for one static "
	       "lane)\n",
	       lanes, continuous ? "continuous" : "static", worst / 1e6, bound / 1e6);
	CHECK(lanes > 1 || continuous || worst <= bound, "waited %llu ns, bound %llu ns",
	      (unsigned long long)worst, (unsigned long long)bound);
	const struct rs_multibin_stats *st = rs_multibin_stats(w->s.sched);
	CHECK(st && st->right_bin == st->predictions && st->abs_error_sum == 0,
	      "hinted lengths predicted wrong");
	sched_world_destroy(&w->s);
	free(w);
}

static int compare_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* Boundaries learned from unhinted requests whose lengths come from a known law. */
static void test_boundaries(bool exponential)
{
	struct world *w = calloc(1, sizeof(*w));
	enum { N = 4000, K = 4 };
	struct rs_multibin_params p = {.bins = K, .batch = 16, .deadline_ns = STEP_NS};
	world_init(w, 2, &p, 16, 8192);
	uint64_t rng = exponential ? 5 : 6;
	for (uint32_t id = 0; id < N; id++) {
		uint32_t out =
		    exponential
			? 1 + (uint32_t)(-300.0 * log(((test_rand(&rng) >> 11) + 1) * 0x1.0p-53))
			: 1 + (uint32_t)(test_rand(&rng) % 100);
		if (out > 3000)
			out = 3000;
		submit(w, id, 2, out, 0);
		if (id % 16 == 15)
			while (step(w, false) ||
			       rs_sched_next_wakeup_ns(w->s.sched) > w->s.clock_ns)
				w->s.clock_ns += STEP_NS;
	}
	while (rs_sched_busy(w->s.sched)) {
		step(w, false);
		w->s.clock_ns += STEP_NS;
	}
	/* The boundaries were last computed after a multiple of 64 completions. */
	uint32_t seen = w->n_finished / 64 * 64, got[K - 1];
	qsort(w->finished_lengths, seen, sizeof(uint32_t), compare_u32);
	CHECK(rs_multibin_boundaries(w->s.sched, got) == K - 1, "boundaries");
	for (uint32_t i = 0; i < K - 1; i++) {
		/* The smallest length with at least (i+1)/K of the observations at or below. */
		uint32_t rank = (uint32_t)ceil((double)(i + 1) / K * seen);
		uint32_t want = w->finished_lengths[rank - 1];
		double slack = want <= 256 ? 0.0 : want * (exp2(1.0 / 16) - 1) + 1;
		printf("%s: boundary %u = %u, quantile %u\n",
		       exponential ? "exp(300)" : "uniform 1..100", i, got[i], want);
		CHECK(fabs((double)got[i] - want) <= slack, "boundary %u: %u, quantile %u", i,
		      got[i], want);
	}
	const struct rs_multibin_stats *st = rs_multibin_stats(w->s.sched);
	printf("  predictions: mean absolute error %.1f, %.0f%% in the right bin\n",
	       st->abs_error_sum / st->predictions, 100.0 * st->right_bin / st->predictions);
	sched_world_destroy(&w->s);
	free(w);
}

/* No hints: what is staged before any request ends has nothing to be predicted from. It
 * is predicted when the first ends (the boundaries move then too), so of a burst served by
 * one static lane only the first batch, seated before any end, runs without a
 * prediction: N - B requests finish with one (N - k x B before, when the staged ones
 * kept none). */
static void test_late_predictions(void)
{
	struct world *w = calloc(1, sizeof(*w));
	enum { N = 64, K = 4, B = 4 };
	struct rs_multibin_params p = {.bins = K, .batch = B, .deadline_ns = STEP_NS};
	world_init(w, 1, &p, B, 1024);
	for (uint32_t id = 0; id < N; id++)
		submit(w, id, 2, 1 + (id * 7) % 40, 0);
	while (rs_sched_busy(w->s.sched)) {
		step(w, false);
		w->s.clock_ns += STEP_NS;
	}
	const struct rs_multibin_stats *st = rs_multibin_stats(w->s.sched);
	CHECK(st->predictions == N - B, "%llu of %d requests finished with a prediction, want %d",
	      (unsigned long long)st->predictions, N, N - B);
	printf("no hints: %llu of %d predicted (all but the first batch)\n",
	       (unsigned long long)st->predictions, N);
	sched_world_destroy(&w->s);
	free(w);
}

int main(void)
{
	test_deadline();
	test_batches(1, false);
	test_batches(1, true);
	test_batches(3, false);
	test_batches(3, true);
	test_boundaries(false);
	test_boundaries(true);
	test_late_predictions();
	return T_EXIT_PASS;
}
