/* The admission policies alone, driven by a small simulated server on a virtual clock:
 * S seats run requests, each admitted request produces one output token per step (charged
 * with rs_admission_charge_output), requests arrive at random with random lengths and
 * cached prefixes, prefixes change while they wait, some are cancelled, some preempted.
 *
 * Checked, for several seeds:
 *  - the choice at every admission against a brute-force scan of everything waiting:
 *    fcfs the earliest arrival; lpm the longest match (then the earliest); dlpm the same
 *    among eligible tenants (backlogged, deficit > 0); vtc the oldest request of the
 *    backlogged tenant with the smallest (counter, id); preempted requests first where
 *    the policy says so;
 *  - vtc and dlpm: for every pair of tenants, over every interval in which both stay
 *    backlogged, |delta service_a - delta service_b| stays within the bound of
 *    docs/scheduling.md, computed from the parameters; and the lemmas it rests on (the
 *    counter spread, the deficit range) at every step;
 *  - the service account against an independent sum of the charges;
 *  - the waiting counts after every call, remove() of random waiting requests, and that
 *    every request is admitted and finishes (dlpm and vtc: also a tenant that never hits
 *    the cache while another always does and stays backlogged). */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "daemon/sched/admission.h"
#include "daemon/sched/tenant.h"
#include "tests/harness/harness.h"

#define BLOCK	    16 /* tokens per cache block */
#define MAX_TENANTS 8  /* the admission's table; ids used are 0..n-1 */
#define MAX_PAIRS   (MAX_TENANTS * MAX_TENANTS)

enum scenario {
	SCENARIO_BACKLOGGED, /* every tenant always has waiting requests */
	SCENARIO_MIXED,	     /* tenants come and go; cancels, preemptions, prefix changes */
	SCENARIO_CACHE_HOG,  /* tenant 0 always hits the cache and stays backlogged; tenant 1
			      * never hits it */
	SCENARIO_TURNS,	     /* one tenant alone, then nobody waits, then the others join
			      * before it comes back: vtc's lift when nobody is backlogged */
};

enum turn_phase { TURN_SOLO, TURN_DRAIN, TURN_JOIN };

struct sim_config {
	enum rs_admission_policy policy;
	enum scenario scenario;
	uint64_t seed;
	uint32_t n_tenants;
	double weights[MAX_TENANTS];
	uint32_t seats;	     /* S: requests running at once */
	uint32_t max_prompt; /* L: prompt tokens, 1..L */
	uint32_t max_output; /* M: output tokens, 1..M */
	uint32_t arrival_steps;
	double w_prompt, w_output, quantum; /* 0: the defaults */
};

enum req_state { REQ_UNUSED = 0, REQ_WAITING, REQ_RUNNING, REQ_DONE, REQ_CANCELLED };

struct req_info {
	enum req_state state;
	uint32_t output_len;
	uint32_t waiting_index; /* in sim.waiting while waiting */
	uint32_t seat;		/* in sim.running while running */
	bool front;		/* enqueued with front, still waiting */
	uint64_t front_seq;	/* order of front enqueues: the latest goes first */
	uint64_t enqueued_step;
	bool admitted;
};

struct pair_period {
	bool open;
	uint64_t epoch_a, epoch_b;
	double low, high; /* of service_a - service_b since the period began */
};

struct sim {
	struct sim_config config;
	double w_prompt, w_output, quantum; /* effective */
	struct rs_admission *admission;
	struct rs_tenant_table table;
	struct rs_tenant *tenants[MAX_TENANTS];
	struct rs_request *requests;
	struct req_info *info;
	uint32_t capacity, used;
	struct rs_request **waiting;
	uint32_t n_waiting;
	struct rs_request **running;
	uint32_t n_running;
	uint64_t rng;
	uint64_t step, next_arrival, next_front_seq;
	uint32_t tenant_waiting[MAX_TENANTS];
	uint64_t epoch[MAX_TENANTS]; /* times the tenant stopped being backlogged */
	double expected_service[MAX_TENANTS];
	bool on[MAX_TENANTS];	    /* mixed scenario: the tenant is submitting */
	enum turn_phase turn_phase; /* turns scenario */
	uint32_t turn_tenant;
	uint64_t turn_since;
	struct pair_period periods[MAX_PAIRS];
	double worst_ratio; /* largest observed difference / bound */
	uint64_t checked_pair_steps;
	uint64_t admissions;
};

static uint64_t next_random(struct sim *sim)
{
	/* xorshift64* */
	sim->rng ^= sim->rng >> 12;
	sim->rng ^= sim->rng << 25;
	sim->rng ^= sim->rng >> 27;
	return sim->rng * 2685821657736338717ull;
}

/* Uniform in [0, n). */
static uint32_t random_below(struct sim *sim, uint32_t n)
{
	return (uint32_t)((next_random(sim) >> 11) % n);
}

static bool chance(struct sim *sim, double p)
{
	return (double)(next_random(sim) >> 11) / (double)(1ull << 53) < p;
}

static struct req_info *info_of(struct sim *sim, const struct rs_request *request)
{
	return &sim->info[request->user_data];
}

/* D_i of docs/scheduling.md: the most a tenant can be charged after its last admission,
 * in service units: one prompt, then at most S running requests of M output tokens. */
static double drift(const struct sim *sim, uint32_t tenant)
{
	return (sim->w_prompt * sim->config.max_prompt +
		sim->config.seats * sim->w_output * sim->config.max_output) /
	       sim->config.weights[tenant];
}

/* The documented bound on |delta service_a - delta service_b| over an interval in which
 * both stay backlogged: vtc D_a + D_b, dlpm 2Q + D_a + D_b. */
static double pair_bound(const struct sim *sim, uint32_t a, uint32_t b)
{
	double bound = drift(sim, a) + drift(sim, b);
	if (sim->config.policy == RS_ADMISSION_DLPM)
		bound += 2 * sim->quantum;
	return bound;
}

static void waiting_add(struct sim *sim, struct rs_request *request)
{
	struct req_info *info = info_of(sim, request);
	info->state = REQ_WAITING;
	info->waiting_index = sim->n_waiting;
	info->enqueued_step = sim->step;
	sim->waiting[sim->n_waiting++] = request;
	sim->tenant_waiting[request->tenant->id]++;
}

static void waiting_del(struct sim *sim, struct rs_request *request)
{
	struct req_info *info = info_of(sim, request);
	struct rs_request *last = sim->waiting[--sim->n_waiting];
	sim->waiting[info->waiting_index] = last;
	info_of(sim, last)->waiting_index = info->waiting_index;
	uint32_t id = request->tenant->id;
	if (--sim->tenant_waiting[id] == 0)
		sim->epoch[id]++;
	info->front = false;
}

/* The admission's counts against ours. */
static void check_counts(struct sim *sim)
{
	CHECK(rs_admission_waiting(sim->admission) == sim->n_waiting, "waiting %u, expected %u",
	      rs_admission_waiting(sim->admission), sim->n_waiting);
	for (uint32_t t = 0; t < sim->config.n_tenants; t++)
		CHECK(sim->tenants[t]->waiting == sim->tenant_waiting[t],
		      "tenant %u waiting %u, expected %u", t, sim->tenants[t]->waiting,
		      sim->tenant_waiting[t]);
}

static uint32_t max_blocks_of(uint32_t prompt_len)
{
	return prompt_len / BLOCK;
}

/* A cached prefix for the request, as the scenario wants it. */
static uint32_t pick_match(struct sim *sim, const struct rs_request *request)
{
	uint32_t max = request->waiter.max_blocks;
	if (sim->config.scenario == SCENARIO_CACHE_HOG) {
		if (request->tenant->id == 0)
			return max;
		if (request->tenant->id == 1)
			return 0;
	}
	/* Clustered values, so that equal matches (arrival ties) are common. */
	return chance(sim, 0.3) ? 0 : random_below(sim, max + 1);
}

static void submit(struct sim *sim, uint32_t tenant)
{
	CHECK(sim->used < sim->capacity, "request table too small");
	uint32_t index = sim->used++;
	struct rs_request *request = &sim->requests[index];
	struct req_info *info = &sim->info[index];
	memset(request, 0, sizeof(*request));
	request->user_data = index;
	request->tenant = sim->tenants[tenant];
	request->prompt_len = 1 + random_below(sim, sim->config.max_prompt);
	request->max_new_tokens = sim->config.max_output;
	request->arrival = sim->next_arrival++;
	request->waiter.max_blocks = max_blocks_of(request->prompt_len);
	request->waiter.match_blocks = pick_match(sim, request);
	request->state = RS_REQUEST_WAITING;
	info->output_len = 1 + random_below(sim, sim->config.max_output);
	waiting_add(sim, request);
	rs_admission_enqueue(sim->admission, request, false);
	check_counts(sim);
}

static bool waiting_front(const struct sim *sim, const struct rs_request *r)
{
	return sim->info[r->user_data].front;
}

/* a goes before b in longest-match order. */
static bool longer_match(const struct rs_request *a, const struct rs_request *b)
{
	if (a->waiter.match_blocks != b->waiter.match_blocks)
		return a->waiter.match_blocks > b->waiter.match_blocks;
	return a->arrival < b->arrival;
}

/* The request the policy should pick among the waiting requests of tenant (or of all
 * tenants when tenant is UINT32_MAX): a preempted one first (the latest put back), else
 * the oldest (by_arrival) or the longest match. */
static struct rs_request *brute_best(struct sim *sim, uint32_t tenant, bool by_arrival)
{
	struct rs_request *best = NULL, *best_front = NULL;
	for (uint32_t i = 0; i < sim->n_waiting; i++) {
		struct rs_request *r = sim->waiting[i];
		if (tenant != UINT32_MAX && r->tenant->id != tenant)
			continue;
		if (waiting_front(sim, r)) {
			if (!best_front ||
			    info_of(sim, r)->front_seq > info_of(sim, best_front)->front_seq)
				best_front = r;
			continue;
		}
		bool better =
		    !best || (by_arrival ? r->arrival < best->arrival : longer_match(r, best));
		if (better)
			best = r;
	}
	return best_front ? best_front : best;
}

/* The policy's choice against a brute-force scan. */
static void check_choice(struct sim *sim, struct rs_request *chosen)
{
	uint32_t n = sim->config.n_tenants;
	switch (sim->config.policy) {
	case RS_ADMISSION_FCFS:
		for (uint32_t i = 0; i < sim->n_waiting; i++)
			CHECK(sim->waiting[i]->arrival >= chosen->arrival,
			      "fcfs chose arrival %lu before %lu", (unsigned long)chosen->arrival,
			      (unsigned long)sim->waiting[i]->arrival);
		break;
	case RS_ADMISSION_LPM: {
		struct rs_request *best = brute_best(sim, UINT32_MAX, false);
		CHECK(chosen == best,
		      "lpm chose match %u arrival %lu, expected match %u arrival %lu",
		      chosen->waiter.match_blocks, (unsigned long)chosen->arrival,
		      best->waiter.match_blocks, (unsigned long)best->arrival);
		break;
	}
	case RS_ADMISSION_VTC: {
		uint32_t low = UINT32_MAX;
		for (uint32_t t = 0; t < n; t++) {
			if (sim->tenant_waiting[t] == 0)
				continue;
			if (low == UINT32_MAX ||
			    sim->tenants[t]->counter < sim->tenants[low]->counter)
				low = t;
		}
		CHECK(chosen->tenant->id == low, "vtc chose tenant %u (counter %g), not %u (%g)",
		      chosen->tenant->id, chosen->tenant->counter, low, sim->tenants[low]->counter);
		CHECK(chosen == brute_best(sim, low, true), "vtc: not the tenant's oldest request");
		break;
	}
	case RS_ADMISSION_DLPM: {
		CHECK(chosen->tenant->deficit > 0, "dlpm chose tenant %u with deficit %g",
		      chosen->tenant->id, chosen->tenant->deficit);
		CHECK(chosen == brute_best(sim, chosen->tenant->id, false),
		      "dlpm: not the tenant's best request");
		for (uint32_t t = 0; t < n; t++) {
			if (sim->tenant_waiting[t] == 0 || sim->tenants[t]->deficit <= 0)
				continue;
			struct rs_request *best = brute_best(sim, t, false);
			CHECK(
			    best == chosen || longer_match(chosen, best),
			    "dlpm chose match %u arrival %lu over tenant %u's match %u arrival %lu",
			    chosen->waiter.match_blocks, (unsigned long)chosen->arrival, t,
			    best->waiter.match_blocks, (unsigned long)best->arrival);
		}
		break;
	}
	}
}

static void admit(struct sim *sim)
{
	while (sim->n_running < sim->config.seats) {
		struct rs_request *chosen = rs_admission_peek(sim->admission);
		if (sim->n_waiting == 0) {
			CHECK(!chosen, "peek returned a request with none waiting");
			return;
		}
		CHECK(chosen, "peek returned NULL with %u waiting", sim->n_waiting);
		struct req_info *info = info_of(sim, chosen);
		CHECK(info->state == REQ_WAITING, "peek returned a request not waiting (state %d)",
		      info->state);
		check_choice(sim, chosen);

		uint32_t cached = chosen->waiter.match_blocks * BLOCK;
		uint32_t uncached = chosen->prompt_len - cached;
		if (chosen->preemptions == 0) {
			uint32_t tokens =
			    sim->config.policy == RS_ADMISSION_VTC ? chosen->prompt_len : uncached;
			sim->expected_service[chosen->tenant->id] +=
			    sim->w_prompt * tokens / chosen->tenant->weight;
		}
		waiting_del(sim, chosen);
		rs_admission_take(sim->admission, chosen, uncached);
		check_counts(sim);
		chosen->state = RS_REQUEST_RUNNING;
		info->state = REQ_RUNNING;
		info->admitted = true;
		info->seat = sim->n_running;
		sim->running[sim->n_running++] = chosen;
		sim->admissions++;
	}
}

static void running_del(struct sim *sim, struct rs_request *request)
{
	struct req_info *info = info_of(sim, request);
	struct rs_request *last = sim->running[--sim->n_running];
	sim->running[info->seat] = last;
	info_of(sim, last)->seat = info->seat;
}

/* One output token for every running request; the finished ones leave. */
static void decode(struct sim *sim)
{
	for (uint32_t i = 0; i < sim->n_running;) {
		struct rs_request *request = sim->running[i];
		struct req_info *info = info_of(sim, request);
		rs_admission_charge_output(sim->admission, request->tenant, 1);
		sim->expected_service[request->tenant->id] +=
		    sim->w_output / request->tenant->weight;
		if (++request->generated == info->output_len) {
			info->state = REQ_DONE;
			request->state = RS_REQUEST_FREE;
			running_del(sim, request);
			continue;
		}
		i++;
	}
}

/* Random prefix changes, cancellations and preemptions. */
static void disturb(struct sim *sim)
{
	bool mixed = sim->config.scenario == SCENARIO_MIXED;
	for (uint32_t k = 0; k < 4 && sim->n_waiting > 0; k++) {
		if (!chance(sim, mixed ? 0.8 : 0.3))
			continue;
		struct rs_request *r = sim->waiting[random_below(sim, sim->n_waiting)];
		uint32_t old = r->waiter.match_blocks;
		r->waiter.match_blocks = pick_match(sim, r);
		rs_admission_match_changed(sim->admission, r, old);
	}
	if (!mixed)
		return;
	if (sim->n_waiting > 0 && chance(sim, 0.1)) {
		struct rs_request *r = sim->waiting[random_below(sim, sim->n_waiting)];
		waiting_del(sim, r);
		rs_admission_remove(sim->admission, r);
		info_of(sim, r)->state = REQ_CANCELLED;
		r->state = RS_REQUEST_FREE;
		check_counts(sim);
	}
	if (sim->n_running > 0 && chance(sim, 0.05)) {
		struct rs_request *r = sim->running[random_below(sim, sim->n_running)];
		running_del(sim, r);
		r->preemptions++;
		r->state = RS_REQUEST_WAITING;
		/* The cache may still hold part of what it computed. */
		r->waiter.match_blocks = random_below(sim, r->waiter.max_blocks + 1);
		waiting_add(sim, r);
		struct req_info *info = info_of(sim, r);
		info->front = true;
		info->front_seq = sim->next_front_seq++;
		rs_admission_enqueue(sim->admission, r, true);
		check_counts(sim);
	}
}

/* Turns: turn_tenant alone for 100 steps; no arrivals until nothing has waited for 3 steps;
 * then the others, and 10 steps later turn_tenant too, for 100 steps; the next tenant's
 * turn. Returns the arrival rate of tenant t this step. */
static double turn_rate(struct sim *sim, uint32_t t)
{
	uint64_t since = sim->step - sim->turn_since;
	if (t == 0) {
		if (sim->turn_phase == TURN_SOLO && since >= 100) {
			sim->turn_phase = TURN_DRAIN;
			sim->turn_since = sim->step;
		} else if (sim->turn_phase == TURN_DRAIN && sim->n_waiting > 0) {
			sim->turn_since = sim->step;
		} else if (sim->turn_phase == TURN_DRAIN && since >= 3) {
			sim->turn_phase = TURN_JOIN;
			sim->turn_since = sim->step;
		} else if (sim->turn_phase == TURN_JOIN && since >= 110) {
			sim->turn_phase = TURN_SOLO;
			sim->turn_since = sim->step;
			sim->turn_tenant = (sim->turn_tenant + 1) % sim->config.n_tenants;
		}
		since = sim->step - sim->turn_since;
	}
	switch (sim->turn_phase) {
	case TURN_SOLO:
		return t == sim->turn_tenant ? 0.3 : 0;
	case TURN_JOIN:
		return t != sim->turn_tenant || since >= 10 ? 0.5 : 0;
	case TURN_DRAIN:
	default:
		return 0;
	}
}

static void arrivals(struct sim *sim)
{
	for (uint32_t t = 0; t < sim->config.n_tenants; t++) {
		double rate;
		switch (sim->config.scenario) {
		case SCENARIO_BACKLOGGED:
			/* Well above what the seats serve: queues never empty. */
			rate = 0.6;
			break;
		case SCENARIO_MIXED:
			if (chance(sim, 0.02))
				sim->on[t] = !sim->on[t];
			rate = sim->on[t] ? 0.5 : 0.0;
			break;
		case SCENARIO_TURNS:
			rate = turn_rate(sim, t);
			break;
		case SCENARIO_CACHE_HOG:
		default:
			rate = t == 0 ? 0.8 : 0.1;
			break;
		}
		if (chance(sim, rate)) {
			uint32_t burst = 1 + random_below(sim, 3);
			for (uint32_t i = 0; i < burst; i++)
				submit(sim, t);
		}
	}
}

/* The fairness bound and the lemmas under it, at the end of a step. */
static void check_fairness(struct sim *sim)
{
	uint32_t n = sim->config.n_tenants;
	const double eps = 1e-6;
	for (uint32_t t = 0; t < n; t++) {
		double expected = sim->expected_service[t];
		CHECK(fabs(sim->tenants[t]->service - expected) <= eps * (1 + expected),
		      "tenant %u service %.6f, charges add up to %.6f", t, sim->tenants[t]->service,
		      expected);
	}
	if (sim->config.policy == RS_ADMISSION_VTC) {
		/* Lemma: every backlogged counter within D_i of the smallest backlogged. */
		double low = INFINITY;
		for (uint32_t t = 0; t < n; t++)
			if (sim->tenant_waiting[t] > 0 && sim->tenants[t]->counter < low)
				low = sim->tenants[t]->counter;
		for (uint32_t t = 0; t < n; t++)
			if (sim->tenant_waiting[t] > 0)
				CHECK(sim->tenants[t]->counter <= low + drift(sim, t) + eps,
				      "vtc: tenant %u counter %g, lowest %g, D %g", t,
				      sim->tenants[t]->counter, low, drift(sim, t));
	}
	if (sim->config.policy == RS_ADMISSION_DLPM) {
		/* Lemma: -D_i <= deficit / weight <= Q while backlogged; no credit otherwise. */
		for (uint32_t t = 0; t < n; t++) {
			double balance = sim->tenants[t]->deficit / sim->tenants[t]->weight;
			if (sim->tenant_waiting[t] > 0) {
				CHECK(balance <= sim->quantum + eps,
				      "dlpm: tenant %u balance %g > Q %g", t, balance,
				      sim->quantum);
				CHECK(balance >= -drift(sim, t) - eps,
				      "dlpm: tenant %u balance %g < -D %g", t, balance,
				      -drift(sim, t));
			} else {
				CHECK(balance <= 0, "dlpm: idle tenant %u keeps credit %g", t,
				      balance);
			}
		}
	}
	if (sim->config.policy != RS_ADMISSION_VTC && sim->config.policy != RS_ADMISSION_DLPM)
		return;
	for (uint32_t a = 0; a < n; a++) {
		for (uint32_t b = a + 1; b < n; b++) {
			struct pair_period *p = &sim->periods[a * MAX_TENANTS + b];
			bool both = sim->tenant_waiting[a] > 0 && sim->tenant_waiting[b] > 0;
			double diff = sim->tenants[a]->service - sim->tenants[b]->service;
			if (!both) {
				p->open = false;
				continue;
			}
			if (!p->open || p->epoch_a != sim->epoch[a] ||
			    p->epoch_b != sim->epoch[b]) {
				/* Both backlogged since some time this step: a new interval. */
				p->open = true;
				p->epoch_a = sim->epoch[a];
				p->epoch_b = sim->epoch[b];
				p->low = p->high = diff;
				continue;
			}
			if (diff < p->low)
				p->low = diff;
			if (diff > p->high)
				p->high = diff;
			double bound = pair_bound(sim, a, b);
			double spread = p->high - p->low;
			CHECK(
			    spread <= bound + eps,
			    "%s seed %lu step %lu: tenants %u and %u, service difference moved by "
			    "%.2f over a backlogged interval, bound %.2f",
			    rs_admission_policy_name(sim->config.policy),
			    (unsigned long)sim->config.seed, (unsigned long)sim->step, a, b, spread,
			    bound);
			if (spread / bound > sim->worst_ratio)
				sim->worst_ratio = spread / bound;
			sim->checked_pair_steps++;
		}
	}
}

static void sim_step(struct sim *sim, bool arrive)
{
	if (arrive)
		arrivals(sim);
	disturb(sim);
	admit(sim);
	decode(sim);
	check_fairness(sim);
	sim->step++;
}

static void sim_init(struct sim *sim, const struct sim_config *config)
{
	memset(sim, 0, sizeof(*sim));
	sim->config = *config;
	sim->rng = config->seed * 0x9e3779b97f4a7c15ull + 1;
	sim->w_prompt = config->w_prompt ? config->w_prompt : 1;
	sim->w_output = config->w_output ? config->w_output : 2;
	sim->quantum = config->quantum ? config->quantum : 2048;
	struct rs_admission_params params = {
	    .policy = config->policy,
	    .max_tenants = MAX_TENANTS,
	    .w_prompt = config->w_prompt,
	    .w_output = config->w_output,
	    .quantum = config->quantum,
	};
	int ret = rs_admission_create(&params, &sim->admission);
	CHECK(ret == 0, "rs_admission_create: %d", ret);
	CHECK(rs_tenant_table_init(&sim->table, MAX_TENANTS) == 0, "tenant table");
	for (uint32_t t = 0; t < config->n_tenants; t++) {
		char name[16];
		snprintf(name, sizeof(name), "t%u", t);
		sim->tenants[t] = rs_tenant_acquire(&sim->table, 1000, name, config->weights[t]);
		CHECK(sim->tenants[t] && sim->tenants[t]->id == t, "tenant %u", t);
		sim->on[t] = true;
	}
	sim->capacity = config->arrival_steps * config->n_tenants * 3 + 20016;
	sim->requests = calloc(sim->capacity, sizeof(*sim->requests));
	sim->info = calloc(sim->capacity, sizeof(*sim->info));
	sim->waiting = calloc(sim->capacity, sizeof(*sim->waiting));
	sim->running = calloc(config->seats, sizeof(*sim->running));
	CHECK(sim->requests && sim->info && sim->waiting && sim->running, "out of memory");
}

static void sim_fini(struct sim *sim)
{
	rs_admission_destroy(sim->admission);
	rs_tenant_table_destroy(&sim->table);
	free(sim->requests);
	free(sim->info);
	free(sim->waiting);
	free(sim->running);
}

static void run_sim(const struct sim_config *config)
{
	static struct sim sim;
	sim_init(&sim, config);
	const char *name = rs_admission_policy_name(config->policy);
	bool fair = config->policy == RS_ADMISSION_VTC || config->policy == RS_ADMISSION_DLPM;

	for (uint32_t i = 0; i < config->arrival_steps; i++)
		sim_step(&sim, true);

	if (config->scenario == SCENARIO_CACHE_HOG && fair) {
		/* Tenant 0 keeps arriving and hitting the cache; tenant 1, which never hits it,
		 * must still drain while tenant 0 stays backlogged. */
		uint64_t limit = sim.step + 20000;
		while (sim.tenant_waiting[1] > 0 && sim.step < limit) {
			CHECK(sim.tenant_waiting[0] > 0, "tenant 0 ran dry");
			submit(&sim, 0);
			sim_step(&sim, false);
		}
		CHECK(sim.tenant_waiting[1] == 0,
		      "%s seed %lu: the uncached tenant still has %u waiting after %lu steps", name,
		      (unsigned long)config->seed, sim.tenant_waiting[1], (unsigned long)sim.step);
	}

	/* No more arrivals: everything drains. */
	uint64_t limit = sim.step + (uint64_t)sim.used * config->max_output + 1000;
	while ((sim.n_waiting > 0 || sim.n_running > 0) && sim.step < limit)
		sim_step(&sim, false);
	CHECK(sim.n_waiting == 0 && sim.n_running == 0, "%s seed %lu: did not drain", name,
	      (unsigned long)config->seed);
	CHECK(rs_admission_peek(sim.admission) == NULL, "peek on an empty queue");
	uint32_t done = 0, cancelled = 0;
	for (uint32_t i = 0; i < sim.used; i++) {
		CHECK(sim.info[i].state == REQ_DONE || sim.info[i].state == REQ_CANCELLED,
		      "request %u ended in state %d", i, sim.info[i].state);
		done += sim.info[i].state == REQ_DONE;
		cancelled += sim.info[i].state == REQ_CANCELLED;
	}
	if (fair)
		CHECK(config->scenario != SCENARIO_BACKLOGGED || sim.checked_pair_steps > 1000,
		      "the backlogged scenario kept too few tenants backlogged (%lu pair-steps)",
		      (unsigned long)sim.checked_pair_steps);
	printf("%-4s scenario %d seed %lu tenants %u: %u done, %u cancelled, %lu admissions, "
	       "%lu steps; fairness checked on %lu pair-steps, worst %.0f%% of the bound\n",
	       name, config->scenario, (unsigned long)config->seed, config->n_tenants, done,
	       cancelled, (unsigned long)sim.admissions, (unsigned long)sim.step,
	       (unsigned long)sim.checked_pair_steps, 100 * sim.worst_ratio);
	sim_fini(&sim);
}

/* Names, parameters, an empty queue. */
static void test_api(void)
{
	static const char *const names[] = {"fcfs", "lpm", "vtc", "dlpm"};
	for (int i = 0; i < 4; i++) {
		enum rs_admission_policy policy;
		CHECK(rs_admission_policy_parse(names[i], &policy) == 0, "parse %s", names[i]);
		CHECK((int)policy == i, "parse %s gave %d", names[i], policy);
		CHECK(strcmp(rs_admission_policy_name(policy), names[i]) == 0, "name %d", i);
	}
	enum rs_admission_policy policy;
	CHECK(rs_admission_policy_parse("wfq", &policy) == -EINVAL, "parse wfq");
	CHECK(rs_admission_policy_parse("", &policy) == -EINVAL, "parse empty");
	CHECK(strcmp(rs_admission_policy_name((enum rs_admission_policy)42), "?") == 0, "name 42");

	struct rs_admission *admission = NULL;
	struct rs_admission_params params = {.policy = RS_ADMISSION_DLPM, .max_tenants = 0};
	CHECK(rs_admission_create(&params, &admission) == -EINVAL, "no tenants");
	params.max_tenants = 4;
	params.w_prompt = -1;
	CHECK(rs_admission_create(&params, &admission) == -EINVAL, "negative w_p");
	params.w_prompt = NAN;
	CHECK(rs_admission_create(&params, &admission) == -EINVAL, "NaN w_p");
	params.w_prompt = 0;
	params.quantum = INFINITY;
	CHECK(rs_admission_create(&params, &admission) == -EINVAL, "infinite Q");
	params.quantum = 0;
	params.policy = (enum rs_admission_policy)9;
	CHECK(rs_admission_create(&params, &admission) == -EINVAL, "policy 9");
	for (int i = 0; i < 4; i++) {
		params.policy = (enum rs_admission_policy)i;
		CHECK(rs_admission_create(&params, &admission) == 0, "create %s", names[i]);
		CHECK(rs_admission_peek(admission) == NULL, "%s: peek on empty", names[i]);
		CHECK(rs_admission_waiting(admission) == 0, "%s: waiting", names[i]);
		rs_admission_destroy(admission);
	}
	rs_admission_destroy(NULL);
}

/* dlpm by hand: the refill gives Q * weight per round, as many rounds as the nearest tenant
 * needs; a tenant that stops being backlogged keeps its debt but not its credit. */
static void test_dlpm_rounds(void)
{
	struct rs_tenant_table table;
	CHECK(rs_tenant_table_init(&table, 4) == 0, "table");
	struct rs_tenant *a = rs_tenant_acquire(&table, 1, "a", 1);
	struct rs_tenant *b = rs_tenant_acquire(&table, 1, "b", 2);
	struct rs_admission *admission;
	struct rs_admission_params params = {
	    .policy = RS_ADMISSION_DLPM, .max_tenants = 4, .quantum = 100};
	CHECK(rs_admission_create(&params, &admission) == 0, "create");
	struct rs_request r[3];
	memset(r, 0, sizeof(r));
	for (int i = 0; i < 3; i++) {
		r[i].arrival = (uint64_t)i;
		r[i].prompt_len = 64;
		r[i].tenant = i == 1 ? b : a;
	}
	a->deficit = -250; /* an old debt: three rounds of 100 */
	b->deficit = -350; /* two rounds of 200 */
	r[0].waiter.match_blocks = 1;
	r[1].waiter.match_blocks = 0;
	rs_admission_enqueue(admission, &r[0], false);
	rs_admission_enqueue(admission, &r[1], false);
	/* b needs 2 rounds, a 3: two rounds for both. */
	CHECK(rs_admission_peek(admission) == &r[1], "b first (the only eligible)");
	CHECK(a->deficit == -50 && b->deficit == 50, "deficits %g %g", a->deficit, b->deficit);
	/* 50 - w_p * 10 uncached = 40 left, but b has nothing else waiting: no credit. */
	rs_admission_take(admission, &r[1], 10);
	CHECK(b->deficit == 0, "b keeps no credit: %g", b->deficit);
	CHECK(b->service == 5, "b service 10 / 2: %g", b->service);
	CHECK(rs_admission_peek(admission) == &r[0], "a after one more round");
	CHECK(a->deficit == 50, "a deficit %g", a->deficit);
	CHECK(b->deficit == 0, "b, not backlogged, got no round: %g", b->deficit);
	/* Its running request keeps charging it, w_q = 2 per token, not divided by 2. */
	rs_admission_charge_output(admission, b, 100);
	CHECK(b->deficit == -200, "w_q * n: %g", b->deficit);
	CHECK(b->service == 105, "b service 5 + 200 / 2: %g", b->service);
	rs_admission_enqueue(admission, &r[2], false);
	rs_admission_remove(admission, &r[2]);
	CHECK(a->deficit == 50, "a still backlogged, keeps its credit: %g", a->deficit);
	rs_admission_take(admission, &r[0], 20);
	CHECK(rs_admission_waiting(admission) == 0 && a->waiting == 0, "empty");
	CHECK(a->deficit == 0, "a loses its credit of 30: %g", a->deficit);
	/* A debt stays: b comes back and must wait for rounds. */
	rs_admission_enqueue(admission, &r[1], false);
	CHECK(rs_admission_peek(admission) == &r[1], "b alone");
	CHECK(b->deficit == 200, "b -200 + 2 rounds of 200: %g", b->deficit);
	rs_admission_take(admission, &r[1], 0);
	rs_admission_destroy(admission);
	rs_tenant_table_destroy(&table);
}

/* Usage: sched_admission [SEEDS] (default 4). */
int main(int argc, char **argv)
{
	uint64_t seeds = argc > 1 ? strtoull(argv[1], NULL, 10) : 4;
	test_api();
	test_dlpm_rounds();

	static const enum rs_admission_policy policies[] = {RS_ADMISSION_FCFS, RS_ADMISSION_LPM,
							    RS_ADMISSION_VTC, RS_ADMISSION_DLPM};
	for (uint64_t seed = 1; seed <= seeds; seed++) {
		for (size_t p = 0; p < sizeof(policies) / sizeof(policies[0]); p++) {
			struct sim_config config = {
			    .policy = policies[p],
			    .seed = seed,
			    .seats = 6,
			    .max_prompt = 256,
			    .max_output = 24,
			    .arrival_steps = 1500,
			};
			/* Two equal tenants, always backlogged; the default parameters. */
			config.scenario = SCENARIO_BACKLOGGED;
			config.n_tenants = 2;
			config.weights[0] = config.weights[1] = 1;
			run_sim(&config);

			/* Four weighted tenants, always backlogged; a small quantum. */
			config.n_tenants = 4;
			config.weights[0] = 1;
			config.weights[1] = 2;
			config.weights[2] = 3;
			config.weights[3] = 0.5;
			config.quantum = 64;
			config.w_prompt = 0.5;
			config.w_output = 3;
			run_sim(&config);

			/* Three tenants coming and going, cancels, preemptions. */
			config.scenario = SCENARIO_MIXED;
			config.n_tenants = 3;
			config.quantum = seed % 2 ? 16 : 4096;
			run_sim(&config);

			/* Turns, with nobody waiting in between. */
			config.scenario = SCENARIO_TURNS;
			config.quantum = 256;
			run_sim(&config);

			/* A cache hog and a tenant that never hits the cache. */
			config.scenario = SCENARIO_CACHE_HOG;
			config.n_tenants = 2;
			config.weights[0] = config.weights[1] = 1;
			config.quantum = 0;
			config.w_prompt = config.w_output = 0;
			config.arrival_steps = 800;
			run_sim(&config);
		}
	}
	return T_EXIT_PASS;
}
