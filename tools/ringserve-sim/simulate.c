/* The simulation: the scheduling core on a virtual clock, each lane's step taking the
 * cost model's time, arrivals from the workload (sim.h).
 *
 * Events, in time order: arrivals (submitted), ends of steps (rs_sched_step_done), and
 * the planner's own wake-up time; after each, every idle lane is planned. The core runs
 * exactly as in the daemon: its admission policy, prefix cache, KV accounting and
 * preemption. The "engine" writes a token id for every sampled position; requests end
 * at their output length (end of sequence is ignored). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/engine/kv_cache.h"
#include "tools/ringserve-sim/sim.h"

enum { VOCAB = 32000 };

/* What the simulation remembers of each request, by arrival number. */
struct record {
	uint64_t arrival_ns, admitted_ns, first_token_ns, finish_ns;
	uint32_t tenant, output_len;
	uint32_t prefix; /* for the request log */
};

struct sim {
	const struct sim_config *config;
	struct rs_sched *sched;
	struct rs_kv_cache *kv[SIM_MAX_LANES];
	struct rs_request_pool pool;
	struct rs_tenant *tenants[SIM_MAX_TENANTS];
	uint32_t n_tenants;
	uint64_t now;
	struct record *records;
	uint64_t n_records, cap_records, finished, in_flight;
	uint64_t output_tokens, prompt_tokens, cached_tokens, first_arrival, last_finish;
	int failed; /* a request ended with an error status */
	/* Service difference among backlogged tenants, since the set last changed. */
	uint64_t backlogged_mask;
	double baseline[SIM_MAX_TENANTS];
	double max_service_diff;
	uint64_t next_sample_ns, next_log_ns;
};

static uint64_t sim_now(void *ctx)
{
	return ((struct sim *)ctx)->now;
}

static void sim_token(void *ctx, struct rs_request *request)
{
	struct sim *sim = ctx;
	if (request->generated == 1)
		sim->records[request->user_data].first_token_ns = sim->now;
}

static void sim_finish(void *ctx, struct rs_request *request, int32_t status)
{
	struct sim *sim = ctx;
	struct record *r = &sim->records[request->user_data];
	if (status && !sim->failed)
		sim->failed = status;
	r->finish_ns = sim->now;
	r->admitted_ns = request->admitted_ns;
	if (sim->config->request_log)
		fprintf(sim->config->request_log, "%llu %u %d %u %u %u %.6f %.6f %.6f %.6f %u\n",
			(unsigned long long)request->user_data, r->tenant,
			r->prefix == UINT32_MAX ? -1 : (int)r->prefix, request->prompt_len,
			request->cached_tokens, request->generated,
			(r->arrival_ns - sim->first_arrival) / 1e9,
			(request->admitted_ns - sim->first_arrival) / 1e9,
			(r->first_token_ns - sim->first_arrival) / 1e9,
			(sim->now - sim->first_arrival) / 1e9, request->preemptions);
	sim->finished++;
	sim->in_flight--;
	sim->output_tokens += request->generated;
	sim->prompt_tokens += request->prompt_len;
	sim->cached_tokens += request->cached_tokens;
	sim->last_finish = sim->now;
	rs_request_put(&sim->pool, request);
}

/* A token id from a key and a position: prompts built from the same key share tokens. */
static uint32_t token_of(uint64_t key, uint32_t i)
{
	uint64_t x = key * 0x100000001b3ull + i;
	return 1 + (uint32_t)(sim_random(&x) % (VOCAB - 1));
}

uint32_t sim_prompt_token(const struct sim_request_spec *spec, uint64_t index, uint32_t i)
{
	return i < spec->prefix_len ? token_of(spec->prefix, i) : token_of((1ull << 32) + index, i);
}

static int submit(struct sim *sim, const struct sim_request_spec *spec, char *err, size_t err_size)
{
	if (sim->n_records == sim->cap_records) {
		uint64_t cap = sim->cap_records ? 2 * sim->cap_records : 65536;
		struct record *grown = realloc(sim->records, cap * sizeof(*grown));
		if (!grown) {
			snprintf(err, err_size, "out of memory");
			return -ENOMEM;
		}
		sim->records = grown;
		sim->cap_records = cap;
	}
	struct rs_request *request = rs_request_get(&sim->pool);
	if (!request) {
		snprintf(err, err_size,
			 "more than %u requests in flight at %.3f s "
			 "(--max-in-flight)",
			 sim->config->max_in_flight, sim->now / 1e9);
		return -ENOSPC;
	}
	int rc = rs_request_reserve(request, spec->prompt_len, spec->output_len,
				    sim->config->block_size);
	if (rc) {
		rs_request_put(&sim->pool, request);
		snprintf(err, err_size, "out of memory");
		return rc;
	}
	uint64_t id = sim->n_records++;
	sim->records[id] = (struct record){.arrival_ns = spec->arrival_ns,
					   .tenant = spec->tenant,
					   .output_len = spec->output_len,
					   .prefix = spec->prefix};
	for (uint32_t i = 0; i < spec->prompt_len; i++)
		request->tokens[i] = sim_prompt_token(spec, id, i);
	request->tenant = sim->tenants[spec->tenant];
	request->user_data = id;
	request->ignore_eos = true;
	request->output_len_hint = spec->output_hint;
	request->top_p = 1.0f;
	rc = rs_sched_submit(sim->sched, request);
	if (rc) {
		rs_request_put(&sim->pool, request);
		snprintf(err, err_size,
			 "request %llu (prompt %u + output %u) can never fit %u KV "
			 "blocks",
			 (unsigned long long)id, spec->prompt_len, spec->output_len,
			 sim->config->kv_blocks);
		return rc;
	}
	sim->in_flight++;
	return 0;
}

/* The largest weighted service difference among tenants backlogged since the set of
 * backlogged tenants last changed. */
static void sample_service(struct sim *sim)
{
	uint64_t mask = 0;
	for (uint32_t t = 0; t < sim->n_tenants; t++)
		if (sim->tenants[t]->waiting)
			mask |= 1ull << t;
	if (mask != sim->backlogged_mask) {
		sim->backlogged_mask = mask;
		for (uint32_t t = 0; t < sim->n_tenants; t++)
			sim->baseline[t] = sim->tenants[t]->service;
		return;
	}
	double lo = INFINITY, hi = -INFINITY;
	for (uint32_t t = 0; t < sim->n_tenants; t++) {
		if (!(mask >> t & 1))
			continue;
		double got = sim->tenants[t]->service - sim->baseline[t];
		lo = fmin(lo, got);
		hi = fmax(hi, got);
	}
	if (hi > lo && hi - lo > sim->max_service_diff)
		sim->max_service_diff = hi - lo;
}

static void log_service(const struct sim *sim, FILE *log)
{
	fprintf(log, "%.6f", (sim->now - sim->first_arrival) / 1e9);
	for (uint32_t t = 0; t < sim->n_tenants; t++)
		fprintf(log, " %.0f", sim->tenants[t]->service);
	fputc('\n', log);
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static double percentile(const uint64_t *sorted, uint64_t n, double p)
{
	if (!n)
		return 0;
	uint64_t i = (uint64_t)ceil(p * n);
	return sorted[i ? i - 1 : 0] / 1e9;
}

/* Admissions made while a request that had arrived was left waiting: the only ones where
 * the admission policy chose whom to admit (with none, every policy admits the same
 * requests at the same moments). From the sorted arrival and admission times: the m
 * admissions at time t, after k earlier ones and with a arrivals by t, chose when
 * a - k > m. */
static uint64_t contended_admissions(uint64_t *arrivals, uint64_t *admissions, uint64_t n)
{
	qsort(arrivals, n, sizeof(uint64_t), compare_u64);
	qsort(admissions, n, sizeof(uint64_t), compare_u64);
	uint64_t contended = 0, arrived = 0;
	for (uint64_t k = 0; k < n;) {
		uint64_t t = admissions[k], m = 0;
		while (k + m < n && admissions[k + m] == t)
			m++;
		while (arrived < n && arrivals[arrived] <= t)
			arrived++;
		if (arrived > k + m)
			contended += m;
		k += m;
	}
	return contended;
}

static void summarize(struct sim *sim, struct sim_result *out)
{
	memset(out, 0, sizeof(*out));
	out->requests = sim->finished;
	out->output_tokens = sim->output_tokens;
	out->prompt_tokens = sim->prompt_tokens;
	out->cached_tokens = sim->cached_tokens;
	const struct rs_sched_stats *st = rs_sched_stats(sim->sched);
	out->steps = st->steps;
	out->preemptions = st->preemptions;
	out->seconds = (sim->last_finish - sim->first_arrival) / 1e9;
	out->requests_per_s = out->seconds > 0 ? out->requests / out->seconds : 0;
	out->tokens_per_s = out->seconds > 0 ? out->output_tokens / out->seconds : 0;
	out->max_service_diff = sim->max_service_diff;
	const struct rs_multibin_stats *bins = rs_multibin_stats(sim->sched);
	if (bins) {
		out->multibin = true;
		out->bins = *bins;
		out->n_boundaries = rs_multibin_boundaries(sim->sched, out->boundaries);
	}
	out->n_tenants = sim->n_tenants;
	uint64_t *latency = malloc(sim->n_records * sizeof(uint64_t) + 1);
	uint64_t *ttft = malloc(sim->n_records * sizeof(uint64_t) + 1);
	double sum_latency = 0, sum_ttft = 0;
	for (uint32_t t = 0; t < sim->n_tenants && latency && ttft; t++) {
		struct sim_tenant_result *tr = &out->tenants[t];
		snprintf(tr->name, sizeof(tr->name), "%s", sim->tenants[t]->name);
		uint64_t n = 0;
		for (uint64_t i = 0; i < sim->n_records; i++) {
			const struct record *r = &sim->records[i];
			if (r->tenant != t)
				continue;
			latency[n] = r->finish_ns - r->arrival_ns;
			ttft[n] = r->first_token_ns - r->arrival_ns;
			sum_latency += latency[n];
			sum_ttft += ttft[n];
			tr->output_tokens += r->output_len;
			n++;
		}
		tr->requests = n;
		qsort(latency, n, sizeof(uint64_t), compare_u64);
		qsort(ttft, n, sizeof(uint64_t), compare_u64);
		tr->latency_p50_s = percentile(latency, n, 0.5);
		tr->latency_p99_s = percentile(latency, n, 0.99);
		tr->ttft_p50_s = percentile(ttft, n, 0.5);
		tr->ttft_p99_s = percentile(ttft, n, 0.99);
	}
	if (sim->n_records) {
		out->latency_mean_s = sum_latency / sim->n_records / 1e9;
		out->ttft_mean_s = sum_ttft / sim->n_records / 1e9;
	}
	if (latency && ttft) { /* their space reused */
		for (uint64_t i = 0; i < sim->n_records; i++) {
			latency[i] = sim->records[i].arrival_ns;
			ttft[i] = sim->records[i].admitted_ns;
		}
		out->contended_admissions = contended_admissions(latency, ttft, sim->n_records);
	}
	free(latency);
	free(ttft);
}

int sim_run(const struct sim_config *config, struct sim_workload *w, struct sim_result *out,
	    char *err, size_t err_size)
{
	struct timespec wall0, wall1;
	clock_gettime(CLOCK_MONOTONIC, &wall0);
	struct sim *sim = calloc(1, sizeof(*sim));
	if (!sim)
		return -ENOMEM;
	sim->config = config;
	uint32_t workers = config->workers ? config->workers : 1;
	if ((uint64_t)workers * config->lanes > SIM_MAX_LANES) {
		snprintf(err, err_size, "at most %d lanes over all workers", SIM_MAX_LANES);
		free(sim);
		return -EINVAL;
	}
	int rc = 0;
	for (uint32_t i = 0; i < workers && rc == 0; i++)
		rc = rs_kv_cache_create(config->kv_blocks, config->block_size, &sim->kv[i]);
	struct rs_sched_config sc = {
	    .lanes = config->lanes,
	    .max_batch = config->max_batch,
	    .max_batch_tokens = config->max_batch_tokens,
	    .max_tenants = SIM_MAX_TENANTS,
	    .vocab_size = VOCAB,
	    .eos_token = UINT32_MAX,
	    .prefix_cache = config->prefix_cache,
	    .admission = config->admission,
	    .planner = config->planner,
	    .multibin = config->multibin,
	    .workers = workers,
	    .dispatch = config->dispatch,
	};
	struct rs_sched_hooks hooks = {
	    .now_ns = sim_now, .token = sim_token, .finish = sim_finish, .ctx = sim};
	if (rc == 0)
		rc = rs_sched_create_workers(&sc, sim->kv, &hooks, &sim->sched);
	if (rc == 0)
		rc = rs_request_pool_init(&sim->pool, config->max_in_flight);
	for (uint32_t t = 0; t < w->n_tenants && rc == 0; t++) {
		sim->tenants[t] = rs_sched_tenant_acquire(sim->sched, 0, w->tenant_names[t],
							  w->tenant_weights[t]);
		rc = sim->tenants[t] ? 0 : -ENOSPC;
		sim->n_tenants = t + 1;
	}
	if (rc) {
		snprintf(err, err_size, "setting up the core: %s", strerror(-rc));
		goto out;
	}

	if (config->request_log)
		fputs(SIM_REQUEST_LOG_HEADER, config->request_log);
	uint32_t lanes = rs_sched_lanes(sim->sched); /* over all workers */
	uint64_t done_at[SIM_MAX_LANES];
	bool busy[SIM_MAX_LANES] = {false};
	struct sim_request_spec next;
	bool more = sim_workload_next(w, &next);
	if (more)
		sim->first_arrival = sim->now = next.arrival_ns;
	for (;;) {
		while (more && next.arrival_ns <= sim->now && rc == 0) {
			rc = submit(sim, &next, err, err_size);
			more = sim_workload_next(w, &next);
		}
		if (rc)
			break;
		for (uint32_t l = 0; l < lanes; l++) {
			if (busy[l])
				continue;
			const struct rs_step_plan *plan = rs_sched_plan_step(sim->sched, l);
			if (!plan)
				continue;
			for (uint32_t i = 0; i < plan->n; i++)
				if (plan->steps[i].sample)
					*plan->steps[i].out_token =
					    token_of(plan->requests[i]->user_data, 1 << 30);
			struct sim_step_shape shape;
			sim_step_shape_of(plan, &shape);
			double seconds = sim_cost_seconds(&config->cost, &shape);
			if (config->step_log)
				fprintf(config->step_log, "%u %u %.0f %.9f\n", shape.rows,
					shape.tokens, shape.pairs, seconds);
			/* At least a nanosecond: time moves on. */
			done_at[l] = sim->now + 1 + (uint64_t)(seconds * 1e9);
			busy[l] = true;
		}
		uint64_t t = UINT64_MAX;
		for (uint32_t l = 0; l < lanes; l++)
			if (busy[l] && done_at[l] < t)
				t = done_at[l];
		if (more && next.arrival_ns < t)
			t = next.arrival_ns;
		uint64_t wake = rs_sched_next_wakeup_ns(sim->sched);
		if (wake > sim->now && wake < t)
			t = wake;
		if (t == UINT64_MAX) {
			if (rs_sched_busy(sim->sched)) {
				snprintf(err, err_size,
					 "stuck at %.3f s: %u requests waiting, nothing "
					 "planned",
					 sim->now / 1e9, rs_sched_waiting(sim->sched));
				rc = -EDEADLK;
			}
			break;
		}
		sim->now = t;
		for (uint32_t l = 0; l < lanes; l++) {
			if (busy[l] && done_at[l] <= sim->now) {
				busy[l] = false;
				rs_sched_step_done(sim->sched, l, 0);
			}
		}
		if (sim->now >= sim->next_sample_ns) {
			sample_service(sim);
			sim->next_sample_ns = sim->now + config->sample_every_ns;
		}
		if (config->service_log && sim->now >= sim->next_log_ns) {
			log_service(sim, config->service_log);
			sim->next_log_ns = sim->now + config->service_log_every_ns;
		}
	}
	if (rc) {
		/* Give every request back before the core goes: end the steps in flight, then
		 * cancel whatever waits or runs (their records are not reported). */
		for (uint32_t l = 0; l < lanes; l++)
			if (busy[l])
				rs_sched_step_done(sim->sched, l, -ECANCELED);
		for (uint32_t i = 0; i < sim->pool.capacity; i++) {
			struct rs_request *r = &sim->pool.all[i];
			if (r->state != RS_REQUEST_FREE)
				rs_sched_cancel(sim->sched, r, -ECANCELED);
		}
	}
	if (rc == 0 && sim->failed) {
		snprintf(err, err_size, "a request failed: %s", strerror(-sim->failed));
		rc = sim->failed;
	}
	if (rc == 0 && config->service_log)
		log_service(sim, config->service_log); /* as things ended */
	if (rc == 0)
		summarize(sim, out);
out:
	for (uint32_t t = 0; t < sim->n_tenants; t++)
		if (sim->tenants[t])
			rs_sched_tenant_release(sim->sched, sim->tenants[t]);
	rs_sched_destroy(sim->sched);
	rs_request_pool_destroy(&sim->pool);
	for (uint32_t i = 0; i < workers; i++)
		rs_kv_cache_destroy(sim->kv[i]);
	free(sim->records);
	free(sim);
	clock_gettime(CLOCK_MONOTONIC, &wall1);
	if (rc == 0)
		out->wall_s =
		    (wall1.tv_sec - wall0.tv_sec) + (wall1.tv_nsec - wall0.tv_nsec) * 1e-9;
	return rc;
}
