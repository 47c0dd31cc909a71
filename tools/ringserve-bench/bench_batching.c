/* ringserve-bench batching [--batch B] [--requests N] [--threads N] [--rounds R]
 *                          [--data FILE] [--step-log FILE]
 *
 * Multi-bin batching on the real engine (the CPU backend; the multi-bin paper's setting):
 * N requests arrive at once with output lengths spread widely (uniform on [8, 200]), run
 * by the scheduling core in process on a random stories15M-shaped f32 model, one lane,
 * batches of B. Four prompt templates each lead to their own quarter of the length range
 * (a tool's template, say), so that the online predictor has something to learn.
 * Throughput (requests and output tokens per second of wall time) for:
 *   - k = 1, 2, 4, 8 bins, static batches (a batch runs until its last member ends), with
 *     the lengths hinted by the clients;
 *   - the same k = 4 with continuous lanes (freed seats refilled from the bin);
 *   - plain continuous batching (the default planner), the baseline users run today;
 *   - k = 2, 4, 8 static with the online predictor instead of the hints (its accuracy
 *     printed).
 * The machine is shared and noisy: R rounds, each running every configuration once, in an
 * order rotated by one each round (so that no configuration always follows the same
 * one); per configuration the median, slowest and fastest round, and the ratio to k = 1
 * static *of the same round* (median, lowest, highest). --data appends one row per batch
 * size for tools/plot-batching.gp; --step-log writes every engine step's shape and time
 * ("ROWS TOKENS PAIRS SECONDS", as ringserved --step-log) for ringserve-sim calibrate.
 * The paper's model has a step cost that does not shrink as a batch's members finish:
 * true here while the CPU step is bound by reading the weights (small batches; see
 * `ringserve-sim calibrate` for this machine's step time against the batch size). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/sched/planner.h"
#include "daemon/sched/sched.h"
#include "kernels/engine/engine.h"
#include "kernels/model/model_random.h"
#include "tools/ringserve-bench/bench.h"

#include "daemon/sched/step_shape.h"

enum { TEMPLATE_TOKENS = 8, MIN_OUTPUT = 8, MAX_OUTPUT = 200, MAX_ROUNDS = 15 };

struct run {
	const char *label;
	const struct rs_planner_ops *planner;
	uint32_t bins;
	bool continuous, hints;
	/* one round's results */
	double seconds, requests_per_s, tokens_per_s, mae, right_bin;
	uint64_t steps, predicted; /* predicted: requests that had a prediction */
	/* every round's */
	double round_rps[MAX_ROUNDS], round_ratio[MAX_ROUNDS];
};

struct world {
	struct rs_request_pool pool;
	uint64_t finished, tokens;
	int status;
};

static uint64_t now_ns(void *ctx)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_token(void *ctx, struct rs_request *request)
{
}

static void on_finish(void *ctx, struct rs_request *request, int32_t status)
{
	struct world *w = ctx;
	if (status && !w->status)
		w->status = status;
	w->finished++;
	w->tokens += request->generated;
	rs_request_put(&w->pool, request);
}

static uint64_t next_random(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return *s >> 33;
}

static int run_once(struct rs_engine *engine, uint32_t batch, uint32_t n, struct run *run,
		    FILE *step_log)
{
	struct world w = {0};
	struct rs_sched *sched = NULL;
	struct rs_sched_config config = {.lanes = 1,
					 .max_batch = batch,
					 .max_batch_tokens = 1024,
					 .max_tenants = 4,
					 .vocab_size = rs_engine_config(engine)->vocab_size,
					 .eos_token = UINT32_MAX,
					 .prefix_cache = true,
					 .admission = {.policy = RS_ADMISSION_FCFS},
					 .planner = run->planner,
					 .multibin = {.bins = run->bins ? run->bins : 1,
						      .batch = batch,
						      .continuous = run->continuous,
						      .deadline_ns = 60000000000ull}};
	struct rs_sched_hooks hooks = {
	    .now_ns = now_ns, .token = on_token, .finish = on_finish, .ctx = &w};
	int rc = rs_request_pool_init(&w.pool, n);
	if (!rc)
		rc = rs_sched_create(&config, rs_engine_kv(engine), &hooks, &sched);
	struct rs_tenant *tenant = rc ? NULL : rs_sched_tenant_acquire(sched, 0, "bench", 1.0);
	uint64_t rng = 12345; /* the same requests for every run */
	for (uint32_t i = 0; i < n && !rc; i++) {
		struct rs_request *r = rs_request_get(&w.pool);
		uint32_t template = (uint32_t)(next_random(&rng) % 4),
			 span = (MAX_OUTPUT - MIN_OUTPUT + 1) / 4;
		uint32_t out = MIN_OUTPUT + template * span + (uint32_t)(next_random(&rng) % span);
		uint32_t prompt = TEMPLATE_TOKENS + 1 + (uint32_t)(next_random(&rng) % 8);
		rc = rs_request_reserve(r, prompt, out, rs_kv_block_size(rs_engine_kv(engine)));
		if (rc)
			break;
		for (uint32_t t = 0; t < prompt; t++)
			r->tokens[t] = t < TEMPLATE_TOKENS
					   ? 100 + template * 50 + t
					   : 1 + (uint32_t)(next_random(&rng) % 30000);
		r->tenant = tenant;
		r->ignore_eos = true;
		r->top_p = 1.0f;
		r->output_len_hint = run->hints ? out : 0;
		rc = rs_sched_submit(sched, r);
	}
	uint64_t t0 = now_ns(NULL);
	while (!rc && rs_sched_busy(sched)) {
		const struct rs_step_plan *plan = rs_sched_plan_step(sched, 0);
		if (!plan)
			continue; /* not reached: every request arrived at once, bins fill */
		uint64_t step_start = now_ns(NULL);
		rc = rs_engine_step(engine, 0, plan->steps, plan->n);
		if (!rc)
			rc = rs_engine_step_wait(engine, 0);
		if (step_log && !rc) {
			struct rs_step_shape shape;
			rs_step_shape_of(plan->steps, plan->n, &shape);
			fprintf(step_log, "%u %u %.0f %.9f\n", shape.rows, shape.tokens,
				shape.pairs, (now_ns(NULL) - step_start) / 1e9);
		}
		rs_sched_step_done(sched, 0, rc);
	}
	run->seconds = (now_ns(NULL) - t0) / 1e9;
	if (!rc)
		rc = w.status;
	run->requests_per_s = w.finished / run->seconds;
	run->tokens_per_s = w.tokens / run->seconds;
	run->steps = rc ? 0 : rs_sched_stats(sched)->steps;
	const struct rs_multibin_stats *st = rc ? NULL : rs_multibin_stats(sched);
	run->predicted = st ? st->predictions : 0;
	if (st && st->predictions) {
		run->mae = st->abs_error_sum / st->predictions;
		run->right_bin = (double)st->right_bin / st->predictions;
	}
	if (tenant)
		rs_sched_tenant_release(sched, tenant);
	rs_sched_destroy(sched);
	rs_request_pool_destroy(&w.pool);
	return rc;
}

static int compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The median (the upper middle for an even n), lowest and highest of values[0 .. n). */
static void spread(const double *values, uint32_t n, double *median, double *low, double *high)
{
	double sorted[MAX_ROUNDS];
	memcpy(sorted, values, n * sizeof(double));
	qsort(sorted, n, sizeof(double), compare_double);
	*median = sorted[n / 2];
	*low = sorted[0];
	*high = sorted[n - 1];
}

static void usage(void)
{
	fprintf(stderr, "bench batching: [--batch B (16)] [--requests N (256)] [--threads N] "
			"[--rounds R (3)] [--data FILE] [--step-log FILE]\n");
}

int bench_batching(int argc, char **argv, FILE *json)
{
	uint32_t batch = 16, requests = 256, rounds = 3;
	int threads = 0;
	const char *data_path = NULL, *step_log_path = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
			batch = (uint32_t)atoi(argv[++i]);
		else if (strcmp(argv[i], "--requests") == 0 && i + 1 < argc)
			requests = (uint32_t)atoi(argv[++i]);
		else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
			threads = atoi(argv[++i]);
		else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
			rounds = (uint32_t)atoi(argv[++i]);
		else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
			data_path = argv[++i];
		else if (strcmp(argv[i], "--step-log") == 0 && i + 1 < argc)
			step_log_path = argv[++i];
		else {
			usage();
			fprintf(json, "null");
			return 1;
		}
	}
	if (batch < 1 || batch > 256 || requests < batch || rounds < 1 || rounds > MAX_ROUNDS) {
		fprintf(stderr, "bench batching: batch 1..256, requests >= batch, rounds 1..%d\n",
			MAX_ROUNDS);
		fprintf(json, "null");
		return 1;
	}
	struct rs_model_config cfg = RS_STORIES15M_CONFIG(256);
	struct rs_model *model = NULL;
	struct rs_engine *engine = NULL;
	char err[256];
	int rc = rs_model_random(&cfg, RS_DTYPE_F32, 15, true, &model);
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = "cpu";
	opts.threads = threads;
	opts.max_batch_tokens = 1024;
	/* Every request's whole context at once: memory never decides (the runs compare
	 * batching alone). */
	opts.kv_blocks = requests * ((TEMPLATE_TOKENS + 8 + MAX_OUTPUT + 15) / 16) + 64;
	if (!rc)
		rc = rs_engine_create(model, &opts, &engine, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "bench batching: %s\n", rc == -ENOMEM ? "out of memory" : err);
		rs_model_free(model);
		fprintf(json, "null");
		return 1;
	}
	FILE *step_log = step_log_path ? fopen(step_log_path, "w") : NULL;
	if (step_log_path && !step_log) {
		fprintf(stderr, "bench batching: %s: %s\n", step_log_path, strerror(errno));
		rs_engine_destroy(engine);
		rs_model_free(model);
		fprintf(json, "null");
		return 1;
	}
	if (step_log)
		fprintf(step_log,
			"# ringserve-bench batching --batch %u: ROWS TOKENS PAIRS SECONDS\n",
			batch);
	const struct rs_planner_ops *bins = &rs_planner_multibin;
	struct run runs[] = {
	    {.label = "static, k = 1", .planner = bins, .bins = 1, .hints = true},
	    {.label = "static, k = 2", .planner = bins, .bins = 2, .hints = true},
	    {.label = "static, k = 4", .planner = bins, .bins = 4, .hints = true},
	    {.label = "static, k = 8", .planner = bins, .bins = 8, .hints = true},
	    {.label = "continuous lanes, k = 4",
	     .planner = bins,
	     .bins = 4,
	     .continuous = true,
	     .hints = true},
	    {.label = "continuous batching (no bins)"},
	    {.label = "static, k = 2, predicted", .planner = bins, .bins = 2},
	    {.label = "static, k = 4, predicted", .planner = bins, .bins = 4},
	    {.label = "static, k = 8, predicted", .planner = bins, .bins = 8},
	};
	enum { RUNS = sizeof(runs) / sizeof(runs[0]) };
	printf("ringserve-bench batching: CPU engine, stories15M-shaped f32 model, %u requests at "
	       "once, outputs uniform on [%d, %d], batches of %u, one lane, %u rounds alternated\n",
	       requests, MIN_OUTPUT, MAX_OUTPUT, batch, rounds);
	for (uint32_t round = 0; round < rounds && !rc; round++) {
		/* Every configuration once, starting one further each round. */
		for (uint32_t j = 0; j < RUNS && !rc; j++) {
			struct run *run = &runs[(round + j) % RUNS];
			rc = run_once(engine, batch, requests, run, step_log);
			run->round_rps[round] = run->requests_per_s;
		}
		for (uint32_t i = 0; i < RUNS && !rc; i++)
			runs[i].round_ratio[round] =
			    runs[i].round_rps[round] / runs[0].round_rps[round];
	}
	if (step_log && fclose(step_log) != 0 && !rc)
		rc = -errno;
	FILE *data = !rc && data_path ? fopen(data_path, "a") : NULL;
	if (!rc && data_path && !data)
		rc = -errno;
	if (data && ftell(data) == 0) {
		fprintf(data,
			"# ringserve-bench batching, %u requests, %u rounds: batch, then per "
			"configuration its ratio to k = 1 static of the same round (median, "
			"lowest, highest):",
			requests, rounds);
		for (int i = 0; i < RUNS; i++)
			fprintf(data, " [%s]", runs[i].label);
		fprintf(data, "\n");
	}
	if (data)
		fprintf(data, "%u", batch);
	if (!rc) {
		printf("%-30s %21s %8s %22s\n", "planner", "req/s median [range]", "steps",
		       "vs k = 1 median [range]");
		fprintf(json, "{\"batch\": %u, \"requests\": %u, \"rounds\": %u, \"runs\": [",
			batch, requests, rounds);
	}
	for (int i = 0; i < RUNS && !rc; i++) {
		double rps, rps_low, rps_high, ratio, ratio_low, ratio_high;
		spread(runs[i].round_rps, rounds, &rps, &rps_low, &rps_high);
		spread(runs[i].round_ratio, rounds, &ratio, &ratio_low, &ratio_high);
		printf("%-30s %6.2f [%5.2f, %5.2f] %8llu %7.2fx [%.2f, %.2f]", runs[i].label, rps,
		       rps_low, rps_high, (unsigned long long)runs[i].steps, ratio, ratio_low,
		       ratio_high);
		/* A request staged before any other has ended has nothing to be predicted
		 * from (no hint, no observation): it goes to the first bin unpredicted. */
		if (!runs[i].hints && runs[i].planner && runs[i].predicted)
			printf("  (predicted %llu of %u: mean |error| %.1f tokens, %.0f%% in the "
			       "right bin)",
			       (unsigned long long)runs[i].predicted, requests, runs[i].mae,
			       100 * runs[i].right_bin);
		else if (!runs[i].hints && runs[i].planner)
			printf("  (none predicted: all staged before the first ended)");
		printf("\n");
		if (data)
			fprintf(data, " %.4f %.4f %.4f", ratio, ratio_low, ratio_high);
		fprintf(
		    json,
		    "%s{\"planner\": \"%s\", \"requests_per_s\": %.3f, \"requests_per_s_low\": "
		    "%.3f, \"requests_per_s_high\": %.3f, \"vs_k1\": %.4f, \"vs_k1_low\": %.4f, "
		    "\"vs_k1_high\": %.4f, \"steps\": %llu, \"predicted\": %llu, "
		    "\"prediction_mae\": %.2f, \"prediction_right_bin\": %.3f}",
		    i ? ", " : "", runs[i].label, rps, rps_low, rps_high, ratio, ratio_low,
		    ratio_high, (unsigned long long)runs[i].steps,
		    (unsigned long long)runs[i].predicted, runs[i].mae, runs[i].right_bin);
	}
	if (data) {
		fprintf(data, "\n");
		if (fclose(data) != 0 && !rc)
			rc = -errno;
	}
	if (rc) {
		fprintf(stderr, "bench batching: %s\n", strerror(-rc));
		fprintf(json, "null");
	} else {
		fprintf(json, "]}");
	}
	rs_engine_destroy(engine);
	rs_model_free(model);
	return rc ? 1 : 0;
}
