/* ringserve-bench sched: the scheduling core alone (no engine, no daemon), timing each
 * admission decision with many requests waiting.
 *
 * Workload: T tenants, each sending prompts that start with one of P shared prefixes
 * (PREFIX_TOKENS long) and end with a private suffix; the KV cache holds only a part of
 * the prefixes at once, so matches change under the waiting requests as prefixes are
 * inserted and evicted. The lane has one seat, so each rs_sched_plan_step call is one
 * admission decision (policy choice, prefix match, eviction when needed, KV blocks, the
 * step's plan); its request then produces one token and finishes (its prompt goes into
 * the cache), and a new request arrives, so the queue stays at W waiting.
 * Printed per policy and queue size: decision time p50/p99/p99.9, submit time p50/p99. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/sched.h"
#include "shm/clock.h"
#include "tools/ringserve-bench/bench.h"

#define PREFIX_TOKENS 128
#define SUFFIX_TOKENS 16
#define BLOCK_SIZE    16

struct sched_bench {
	struct rs_sched *sched;
	struct rs_request_pool pool;
	struct rs_tenant **tenants;
	uint32_t n_tenants, n_prefixes;
	uint64_t rng;
	uint64_t virtual_ns;
	uint32_t finished;
};

static uint64_t bench_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

static uint64_t bench_clock(void *ctx)
{
	return ((struct sched_bench *)ctx)->virtual_ns;
}

static void bench_token(void *ctx, struct rs_request *request)
{
}

static void bench_finish(void *ctx, struct rs_request *request, int32_t status)
{
	struct sched_bench *bench = ctx;
	bench->finished++;
	rs_request_put(&bench->pool, request);
}

static int submit_one(struct sched_bench *bench)
{
	struct rs_request *request = rs_request_get(&bench->pool);
	if (!request)
		return -ENOMEM;
	uint32_t len = PREFIX_TOKENS + SUFFIX_TOKENS;
	if (rs_request_reserve(request, len, 1, BLOCK_SIZE)) {
		rs_request_put(&bench->pool, request);
		return -ENOMEM;
	}
	uint32_t tenant = (uint32_t)(bench_rand(&bench->rng) % bench->n_tenants);
	/* Each tenant mostly uses its own prefix: the skew LPM and DLPM exploit. */
	uint32_t prefix = bench_rand(&bench->rng) % 4
			      ? tenant % bench->n_prefixes
			      : (uint32_t)(bench_rand(&bench->rng) % bench->n_prefixes);
	for (uint32_t i = 0; i < PREFIX_TOKENS; i++)
		request->tokens[i] = (prefix * 7919u + i * 31u) % 32000u;
	for (uint32_t i = PREFIX_TOKENS; i < len; i++)
		request->tokens[i] = (uint32_t)(bench_rand(&bench->rng) % 32000u);
	request->tenant = bench->tenants[tenant];
	int ret = rs_sched_submit(bench->sched, request);
	if (ret)
		rs_request_put(&bench->pool, request);
	return ret;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double percentile_us(uint64_t *sorted, uint32_t n, double q)
{
	return (double)sorted[(uint32_t)(q * (n - 1))] / 1000.0;
}

struct run_result {
	double decide_p50, decide_p99, decide_p999, submit_p50, submit_p99, hit_ratio;
};

static int run_policy(enum rs_admission_policy policy, uint32_t waiting, uint32_t n_tenants,
		      uint32_t n_prefixes, uint32_t decisions, struct run_result *result)
{
	/* The clock starts at 1 s: 0 means "never" in a request's timings. */
	struct sched_bench bench = {.n_tenants = n_tenants,
				    .n_prefixes = n_prefixes,
				    .rng = 12345,
				    .virtual_ns = 1000000000};
	/* Blocks for a third of the prefixes, plus the requests' own. */
	uint32_t kv_blocks = n_prefixes / 3 * (PREFIX_TOKENS / BLOCK_SIZE) + 64;
	struct rs_kv_cache *kv = NULL;
	uint64_t *decide = calloc(decisions, sizeof(uint64_t));
	uint64_t *submit = calloc(decisions, sizeof(uint64_t));
	bench.tenants = calloc(n_tenants, sizeof(*bench.tenants));
	int ret = -ENOMEM;
	if (!decide || !submit || !bench.tenants || rs_kv_cache_create(kv_blocks, BLOCK_SIZE, &kv))
		goto out;
	struct rs_sched_config config = {
	    .lanes = 1,
	    .max_batch = 1,
	    .max_batch_tokens = 4096,
	    .max_tenants = n_tenants,
	    .vocab_size = 32000,
	    .eos_token = UINT32_MAX,
	    .prefix_cache = true,
	    .admission = {.policy = policy},
	};
	struct rs_sched_hooks hooks = {
	    .now_ns = bench_clock, .token = bench_token, .finish = bench_finish, .ctx = &bench};
	if ((ret = rs_sched_create(&config, kv, &hooks, &bench.sched)))
		goto out;
	if ((ret = rs_request_pool_init(&bench.pool, waiting + 2)))
		goto out;
	for (uint32_t t = 0; t < n_tenants; t++) {
		char name[16];
		snprintf(name, sizeof(name), "t%u", t);
		bench.tenants[t] = rs_sched_tenant_acquire(bench.sched, 1000, name, 1.0 + t % 3);
	}
	for (uint32_t i = 0; i < waiting; i++)
		if ((ret = submit_one(&bench)))
			goto out;
	uint32_t warmup = decisions / 4;
	for (uint32_t i = 0; i < warmup + decisions; i++) {
		uint64_t t0 = rs_now_ns();
		const struct rs_step_plan *plan = rs_sched_plan_step(bench.sched, 0);
		uint64_t t1 = rs_now_ns();
		if (!plan) {
			fprintf(stderr, "bench sched: nothing planned with %u waiting\n",
				rs_sched_waiting(bench.sched));
			ret = -EIO;
			goto out;
		}
		for (uint32_t s = 0; s < plan->n; s++)
			*plan->steps[s].out_token = 1; /* what an engine would have sampled */
		rs_sched_step_done(bench.sched, 0, 0);
		bench.virtual_ns += 1000;
		uint64_t t2 = rs_now_ns();
		if ((ret = submit_one(&bench)))
			goto out;
		uint64_t t3 = rs_now_ns();
		if (i >= warmup) {
			decide[i - warmup] = t1 - t0;
			submit[i - warmup] = t3 - t2;
		}
	}
	qsort(decide, decisions, sizeof(uint64_t), compare_u64);
	qsort(submit, decisions, sizeof(uint64_t), compare_u64);
	const struct rs_sched_stats *stats = rs_sched_stats(bench.sched);
	result->decide_p50 = percentile_us(decide, decisions, 0.5);
	result->decide_p99 = percentile_us(decide, decisions, 0.99);
	result->decide_p999 = percentile_us(decide, decisions, 0.999);
	result->submit_p50 = percentile_us(submit, decisions, 0.5);
	result->submit_p99 = percentile_us(submit, decisions, 0.99);
	result->hit_ratio =
	    stats->prompt_tokens ? (double)stats->cached_tokens / (double)stats->prompt_tokens : 0;
	/* Drain what is left, without timing. */
	while (rs_sched_busy(bench.sched)) {
		const struct rs_step_plan *plan = rs_sched_plan_step(bench.sched, 0);
		if (!plan)
			break;
		for (uint32_t s = 0; s < plan->n; s++)
			*plan->steps[s].out_token = 1;
		rs_sched_step_done(bench.sched, 0, 0);
	}
	ret = 0;
out:
	if (bench.sched) {
		for (uint32_t t = 0; t < n_tenants && bench.tenants[t]; t++)
			rs_sched_tenant_release(bench.sched, bench.tenants[t]);
		rs_sched_destroy(bench.sched);
	}
	if (bench.pool.all)
		rs_request_pool_destroy(&bench.pool);
	rs_kv_cache_destroy(kv);
	free(bench.tenants);
	free(decide);
	free(submit);
	return ret;
}

int bench_sched(int argc, char **argv, FILE *json)
{
	uint32_t decisions = 200000;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--decisions") == 0 && i + 1 < argc)
			decisions = (uint32_t)strtoul(argv[++i], NULL, 10);
	}
	static const enum rs_admission_policy policies[] = {RS_ADMISSION_FCFS, RS_ADMISSION_LPM,
							    RS_ADMISSION_VTC, RS_ADMISSION_DLPM};
	static const uint32_t queue_sizes[] = {10000, 100000};
	printf("sched: one admission decision (rs_sched_plan_step, one seat) with W requests "
	       "waiting,\n"
	       "1000 tenants, 100 shared prefixes of %d tokens, KV for a third of them\n",
	       PREFIX_TOKENS);
	printf("%-6s %8s %10s %10s %10s %10s %10s %8s\n", "policy", "waiting", "p50 us", "p99 us",
	       "p99.9 us", "submit p50", "submit p99", "hits");
	fprintf(json, "[");
	int failed = 0, first = 1;
	for (size_t q = 0; q < sizeof(queue_sizes) / sizeof(queue_sizes[0]); q++) {
		for (size_t p = 0; p < sizeof(policies) / sizeof(policies[0]); p++) {
			struct run_result r;
			int ret = run_policy(policies[p], queue_sizes[q], 1000, 100, decisions, &r);
			if (ret) {
				fprintf(stderr, "bench sched: %s: %s\n",
					rs_admission_policy_name(policies[p]), strerror(-ret));
				failed = 1;
				continue;
			}
			printf("%-6s %8u %10.3f %10.3f %10.3f %10.3f %10.3f %7.1f%%\n",
			       rs_admission_policy_name(policies[p]), queue_sizes[q], r.decide_p50,
			       r.decide_p99, r.decide_p999, r.submit_p50, r.submit_p99,
			       100 * r.hit_ratio);
			fprintf(json,
				"%s{\"policy\": \"%s\", \"waiting\": %u, \"decide_p50_us\": %.4f, "
				"\"decide_p99_us\": %.4f, \"decide_p999_us\": %.4f, "
				"\"submit_p50_us\": %.4f, "
				"\"submit_p99_us\": %.4f, \"hit_ratio\": %.4f}",
				first ? "" : ", ", rs_admission_policy_name(policies[p]),
				queue_sizes[q], r.decide_p50, r.decide_p99, r.decide_p999,
				r.submit_p50, r.submit_p99, r.hit_ratio);
			first = 0;
		}
	}
	fprintf(json, "]");
	return failed;
}
