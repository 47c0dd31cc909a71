/* Workers taken out of service (rs_dispatch_params.max_failures, daemon/sched/sched.c) on a
 * virtual clock, no engine (the test writes every sampled token, id 1):
 *   - a worker whose steps fail max_failures times in a row is taken out: the requests of
 *     its failed steps end with the step's status, and only those; nothing runs on it
 *     afterwards; the requests staged for it (multibin stages k x B per worker) wait again
 *     and end with status 0 on the others, which keep serving;
 *   - failures not in a row (a success between) never take a worker out;
 *   - the last worker in service is never taken out: its failed steps keep failing their
 *     requests, with the status, and the next steps serve;
 * under the continuous planner (round-robin, d2lpm) and multi-bin batching, and with
 * dispatch at arrival (the requests queued for the worker are routed again). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/planner.h"
#include "tests/harness/harness.h"
#include "tests/sched_world.h"

enum { MAX_REQUESTS = 1024, MAX_WORKERS = 4, BLOCK = 16 };

struct world {
	struct sched_world s; /* first: the hooks' ctx */
	int32_t status[MAX_REQUESTS];
	bool done[MAX_REQUESTS];
	bool in_failed_step[MAX_REQUESTS];
	uint32_t finished_on[MAX_REQUESTS];
	/* the last request each worker gave its first token, +1 (0: none yet) */
	uint32_t last_started[MAX_WORKERS];
	bool out_of_order; /* a worker started a request before an earlier arrival */
};

/* Requests are submitted in id order: under fcfs each worker starts its queue in that
 * order, the requests routed again from a worker taken out included. */
static void token_hook(void *ctx, struct rs_request *request)
{
	struct world *w = ctx;
	uint32_t id = (uint32_t)request->user_data;
	if (request->generated != 1)
		return;
	if (w->last_started[request->worker] > id + 1)
		w->out_of_order = true;
	w->last_started[request->worker] = id + 1;
}

static void finish_hook(void *ctx, struct rs_request *request, int32_t status)
{
	struct world *w = ctx;
	uint32_t id = (uint32_t)request->user_data;
	CHECK(!w->done[id], "request %u finished twice", id);
	w->done[id] = true;
	w->status[id] = status;
	w->finished_on[id] = request->worker;
	rs_request_put(&w->s.pool, request);
}

static void world_init(struct world *w, uint32_t workers, enum rs_dispatch_policy policy,
		       uint32_t max_failures, bool multibin, bool at_arrival)
{
	memset(w, 0, sizeof(*w));
	struct rs_sched_config config = sched_world_config();
	config.lanes = 1;
	config.max_batch = 2;
	config.max_tenants = 2;
	config.planner = multibin ? &rs_planner_multibin : NULL;
	config.multibin = (struct rs_multibin_params){
	    .bins = 2, .batch = 2, .boundaries = {5}, .deadline_ns = 1000000};
	config.workers = workers;
	config.dispatch = (struct rs_dispatch_params){
	    .policy = policy, .max_failures = max_failures, .at_arrival = at_arrival};
	struct rs_sched_hooks hooks = {
	    .now_ns = sched_world_now, .token = token_hook, .finish = finish_hook, .ctx = w};
	CHECK(workers <= MAX_WORKERS, "%u workers", workers);
	CHECK(sched_world_init(&w->s, &config, &hooks, 512, BLOCK, MAX_REQUESTS) == 0, "sched");
}

static void submit(struct world *w, uint32_t id, uint32_t output_len)
{
	struct rs_request *r = sched_world_request(&w->s, id, 20, output_len, BLOCK);
	for (uint32_t i = 0; i < 20; i++)
		r->tokens[i] = (id * 13 + i * 11) % 97;
	r->output_len_hint = output_len;
	CHECK(rs_sched_submit(w->s.sched, r) == 0, "submit %u", id);
}

/* Plan the lane and end its step with status (a failed one marks its requests). Returns
 * the requests it ran; *load_before: its worker's load just before the step ended. */
static uint32_t run_lane(struct world *w, uint32_t lane, int status, uint32_t *load_before)
{
	const struct rs_step_plan *plan = rs_sched_plan_step(w->s.sched, lane);
	if (!plan)
		return 0;
	uint32_t n = plan->n;
	for (uint32_t i = 0; i < n; i++) {
		CHECK(plan->requests[i]->worker == lane, "lane %u runs worker %u's request", lane,
		      plan->requests[i]->worker);
		if (status < 0)
			w->in_failed_step[plan->requests[i]->user_data] = true;
		if (plan->steps[i].sample)
			*plan->steps[i].out_token = 1;
	}
	if (load_before)
		*load_before = rs_sched_worker_load(w->s.sched, lane);
	rs_sched_step_done(w->s.sched, lane, status);
	CHECK(rs_sched_check(w->s.sched) == 0, "invariants");
	return n;
}

static void drain(struct world *w, uint32_t out)
{
	for (int i = 0; rs_sched_busy(w->s.sched) && i < 100000; i++) {
		w->s.clock_ns += 1000000;
		for (uint32_t l = 0; l < w->s.workers; l++)
			CHECK(run_lane(w, l, 0, NULL) == 0 || l != out,
			      "worker %u out of service ran a step", l);
	}
}

/* Three workers, worker 0 fails every step: out after max_failures = 2. */
static void test_taken_out(enum rs_dispatch_policy policy, bool multibin, bool at_arrival)
{
	enum { N = 60 };
	struct world *w = calloc(1, sizeof(*w));
	world_init(w, 3, policy, 2, multibin, at_arrival);
	for (uint32_t id = 0; id < N; id++)
		submit(w, id, 2 + id % 8);
	uint32_t failed_steps = 0, load_before = 0;
	for (int i = 0; i < 50 && rs_sched_worker_in_service(w->s.sched, 0); i++) {
		w->s.clock_ns += 1000000;
		run_lane(w, 1, 0, NULL);
		run_lane(w, 2, 0, NULL);
		failed_steps += run_lane(w, 0, -EIO, &load_before) > 0;
	}
	CHECK(!rs_sched_worker_in_service(w->s.sched, 0) && failed_steps == 2,
	      "worker 0 in service %d after %u failed steps",
	      rs_sched_worker_in_service(w->s.sched, 0), failed_steps);
	CHECK(rs_sched_worker_in_service(w->s.sched, 1) &&
		  rs_sched_worker_in_service(w->s.sched, 2),
	      "a good worker was taken out");
	/* Under multibin, requests were staged for worker 0 beyond its running batch. */
	CHECK(!multibin || load_before > 2, "multibin: worker 0 held %u at its last step",
	      load_before);
	CHECK(rs_sched_worker_load(w->s.sched, 0) == 0, "worker 0 still holds %u",
	      rs_sched_worker_load(w->s.sched, 0));
	for (uint32_t id = N; id < N + 20; id++) /* the others keep taking new requests */
		submit(w, id, 3);
	drain(w, 0);
	uint32_t failed = 0, marked = 0;
	for (uint32_t id = 0; id < N + 20; id++) {
		CHECK(w->done[id], "request %u not done", id);
		marked += w->in_failed_step[id];
		failed += w->status[id] != 0;
		CHECK(w->in_failed_step[id] ? w->status[id] == -EIO
					    : w->status[id] == 0 && w->finished_on[id] != 0,
		      "request %u: status %d on worker %u (in a failed step: %d)", id,
		      w->status[id], w->finished_on[id], w->in_failed_step[id]);
	}
	CHECK(failed == marked && failed > 0 && rs_sched_worker_served(w->s.sched, 0) == 0,
	      "%u failed, %u in failed steps", failed, marked);
	/* At arrival without bins, nothing is staged or preempted: each worker's queue is
	 * first come first served throughout. */
	CHECK(!at_arrival || multibin || !w->out_of_order,
	      "a worker started a request before an earlier arrival");
	printf("%s%s%s: worker 0 out after 2 failed steps (%u requests failed with them, %u held "
	       "at the last); workers 1, 2 served %llu, %llu\n",
	       rs_dispatch_policy_name(policy), multibin ? ", multibin" : "",
	       at_arrival ? ", at arrival" : "", failed, load_before,
	       (unsigned long long)rs_sched_worker_served(w->s.sched, 1),
	       (unsigned long long)rs_sched_worker_served(w->s.sched, 2));
	sched_world_destroy(&w->s);
	free(w);
}

/* Failures with a success between them are not in a row; the last worker stays. */
static void test_not_in_a_row_and_last(void)
{
	struct world *w = calloc(1, sizeof(*w));
	world_init(w, 2, RS_DISPATCH_ROUND_ROBIN, 2, false, false);
	uint32_t id = 0;
	for (; id < 40; id++)
		submit(w, id, 2);
	for (int i = 0; i < 6; i++) { /* worker 1: fail, succeed, fail, ... */
		w->s.clock_ns += 1000000;
		run_lane(w, 0, 0, NULL);
		run_lane(w, 1, i % 2 ? 0 : -EIO, NULL);
	}
	CHECK(rs_sched_worker_in_service(w->s.sched, 1), "failures not in a row took worker 1 out");
	run_lane(w, 1, -EIO, NULL); /* the last was a success (i = 5): two in a row now */
	run_lane(w, 1, -EIO, NULL);
	CHECK(!rs_sched_worker_in_service(w->s.sched, 1), "two failures in a row left it in");
	/* Worker 0 is the last in service: its failures fail their requests, it stays. */
	uint32_t failed_now = 0;
	for (int i = 0; i < 3; i++)
		failed_now += run_lane(w, 0, -EIO, NULL);
	CHECK(rs_sched_worker_in_service(w->s.sched, 0) && failed_now > 0,
	      "the last worker was taken out (%u failed)", failed_now);
	for (; id < 50; id++)
		submit(w, id, 2);
	drain(w, 1);
	for (uint32_t r = 0; r < id; r++)
		CHECK(w->done[r] &&
			  (w->in_failed_step[r] ? w->status[r] == -EIO : w->status[r] == 0),
		      "request %u: done %d, status %d", r, w->done[r], w->status[r]);
	sched_world_destroy(&w->s);
	free(w);
}

int main(void)
{
	test_taken_out(RS_DISPATCH_ROUND_ROBIN, false, false);
	test_taken_out(RS_DISPATCH_D2LPM, false, false);
	test_taken_out(RS_DISPATCH_LEAST_LOADED, true, false);
	test_taken_out(RS_DISPATCH_D2LPM, true, false);
	/* At arrival worker 0's queue is routed again when it is taken out. */
	test_taken_out(RS_DISPATCH_ROUND_ROBIN, false, true);
	test_taken_out(RS_DISPATCH_CACHE_AWARE, true, true);
	test_not_in_a_row_and_last();
	return T_EXIT_PASS;
}
