/* ringserve-sim: the scheduling core on a virtual clock (sim.h, docs/simulator.md).
 *
 *   ringserve-sim run       [workload] [core] [--cost FILE] [--json FILE]
 *   ringserve-sim compare   the same, once per admission policy (fcfs, lpm, vtc, dlpm)
 *   ringserve-sim trace     [workload]: the generated requests as a trace file on stdout
 *   ringserve-sim calibrate [--backend cpu|cuda] [--threads N] [--out FILE]: fit the
 *                           cost model to an engine on this machine, or with --step-log
 *                           FILE to the steps a ringserved logged while serving */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/options.h"
#include "tools/ringserve-sim/sim.h"

/* The CPU engine of the development machines (2 cores), stories15M-shaped f32 model:
 * `ringserve-sim calibrate` of 2026-12-04, taken while other builds ran (mean error of
 * the fit 33%: calibrate on a quiet machine for figures that matter). */
static const struct sim_cost_model DEFAULT_COST = {
    .base_s = 0.8834e-3,
    .per_token_s = 77.703e-6,
    .per_row_s = 48.107e-6,
    .per_pair_s = 1008.36e-9,
    .source = "built in: the 2-core CPU engine, rough (docs/simulator.md)",
};

static void usage(void)
{
	fprintf(
	    stderr,
	    "usage: ringserve-sim run|compare|trace|calibrate [options]\n"
	    "workload (generated):\n"
	    "  --requests N          requests (10000)\n"
	    "  --rate R              Poisson arrivals per second; 0: all at once (0)\n"
	    "  --tenants N           tenants (4); --skew X: tenant t0 sends X times as much (1)\n"
	    "  --prefixes N          shared prefixes per tenant (1; 0: none)\n"
	    "  --prefix-len D        length of each prefix (fixed:256)\n"
	    "  --suffix-len D        private part of each prompt (uniform:8:64)\n"
	    "  --output-len D        generated tokens (uniform:16:128)\n"
	    "                        D: fixed:N, uniform:A:B, exp:MEAN[:MAX], empirical:FILE\n"
	    "  --hint                clients hint their exact output length\n"
	    "  --seed N              (1)\n"
	    "  --trace FILE          a trace file instead (JSON lines; docs/simulator.md)\n"
	    "core:\n"
	    "  --lanes N (1)  --max-batch N (32)  --max-batch-tokens N (512)\n"
	    "  --kv-blocks N (2048)  --block-size N (16)  --max-in-flight N (1048576)\n");
	/* The scheduling core's options are ringserved's (daemon/sched/options.h). */
	rs_sched_options_usage(stderr, RS_SCHED_USAGE_BATCHING);
	fputs("  --workers N (1)       engine instances, each with --kv-blocks and --lanes;\n"
	      "                        compare with --workers > 1: once per dispatch policy\n",
	      stderr);
	rs_sched_options_usage(stderr, RS_SCHED_USAGE_DISPATCH);
	fprintf(
	    stderr,
	    "  --cost FILE           the step cost model (default: built in, this machine's CPU)\n"
	    "  --json FILE           results as JSON too\n"
	    "  --service-log FILE    each tenant's weighted service every second of virtual\n"
	    "                        time (--service-log-every S); compare: a block per run\n"
	    "  --request-log FILE    a line per request as it ends (arrival, admission, first\n"
	    "                        token, end, cached tokens); compare: a block per run\n"
	    "calibrate: --backend cpu|cuda (cpu), --threads N (0: one per CPU), --out FILE;\n"
	    "           --step-log FILE: fit to the steps of ringserved --step-log FILE instead\n");
}

enum {
	OPT_REQUESTS = 256,
	OPT_REQUEST_LOG,
	OPT_RATE,
	OPT_TENANTS,
	OPT_SKEW,
	OPT_PREFIXES,
	OPT_PREFIX_LEN,
	OPT_SUFFIX_LEN,
	OPT_OUTPUT_LEN,
	OPT_HINT,
	OPT_SEED,
	OPT_TRACE,
	OPT_LANES,
	OPT_MAX_BATCH,
	OPT_MAX_TOKENS,
	OPT_KV_BLOCKS,
	OPT_BLOCK_SIZE,
	OPT_MAX_IN_FLIGHT,
	OPT_COST,
	OPT_JSON,
	OPT_THREADS,
	OPT_OUT,
	OPT_STEP_LOG,
	OPT_BACKEND,
	OPT_WORKERS,
	OPT_SERVICE_LOG,
	OPT_SERVICE_LOG_EVERY,
};

static const struct option own_options[] = {
    {"requests", required_argument, 0, OPT_REQUESTS},
    {"rate", required_argument, 0, OPT_RATE},
    {"tenants", required_argument, 0, OPT_TENANTS},
    {"skew", required_argument, 0, OPT_SKEW},
    {"prefixes", required_argument, 0, OPT_PREFIXES},
    {"prefix-len", required_argument, 0, OPT_PREFIX_LEN},
    {"suffix-len", required_argument, 0, OPT_SUFFIX_LEN},
    {"output-len", required_argument, 0, OPT_OUTPUT_LEN},
    {"hint", no_argument, 0, OPT_HINT},
    {"seed", required_argument, 0, OPT_SEED},
    {"trace", required_argument, 0, OPT_TRACE},
    {"lanes", required_argument, 0, OPT_LANES},
    {"max-batch", required_argument, 0, OPT_MAX_BATCH},
    {"max-batch-tokens", required_argument, 0, OPT_MAX_TOKENS},
    {"kv-blocks", required_argument, 0, OPT_KV_BLOCKS},
    {"block-size", required_argument, 0, OPT_BLOCK_SIZE},
    {"max-in-flight", required_argument, 0, OPT_MAX_IN_FLIGHT},
    {"cost", required_argument, 0, OPT_COST},
    {"json", required_argument, 0, OPT_JSON},
    {"threads", required_argument, 0, OPT_THREADS},
    {"backend", required_argument, 0, OPT_BACKEND},
    {"out", required_argument, 0, OPT_OUT},
    {"step-log", required_argument, 0, OPT_STEP_LOG},
    {"workers", required_argument, 0, OPT_WORKERS},
    {"service-log", required_argument, 0, OPT_SERVICE_LOG},
    {"service-log-every", required_argument, 0, OPT_SERVICE_LOG_EVERY},
    {"request-log", required_argument, 0, OPT_REQUEST_LOG},
    {0, 0, 0, 0},
};

/* A whole number in [lo, hi], or an error naming the option. */
static int number(const char *name, const char *arg, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(arg, &end);
	if (errno || end == arg || *end || v < lo || v > hi) {
		fprintf(stderr, "ringserve-sim: --%s: expected a number in [%g, %g], got \"%s\"\n",
			name, lo, hi, arg);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static void print_result(const char *label, const struct sim_result *r, bool header)
{
	if (header) {
		printf("| policy | req/s | tok/s | cache hit | mean latency s | mean TTFT s | "
		       "max service diff | preemptions |\n");
		printf("|---|---|---|---|---|---|---|---|\n");
	}
	printf("| %s | %.1f | %.0f | %.1f%% | %.2f | %.2f | %.0f | %llu |\n", label,
	       r->requests_per_s, r->tokens_per_s,
	       r->prompt_tokens ? 100.0 * r->cached_tokens / r->prompt_tokens : 0.0,
	       r->latency_mean_s, r->ttft_mean_s, r->max_service_diff,
	       (unsigned long long)r->preemptions);
}

static void print_bins(const struct sim_result *r)
{
	if (!r->multibin)
		return;
	const struct rs_multibin_stats *b = &r->bins;
	printf("\nmulti-bin: %llu batches of %.1f requests on average; boundaries",
	       (unsigned long long)b->batches,
	       b->batches ? (double)b->batch_requests / b->batches : 0.0);
	for (uint32_t i = 0; i < r->n_boundaries; i++)
		printf("%s%u", i ? ", " : " ", r->boundaries[i]);
	if (!r->n_boundaries)
		printf(" (one bin)");
	printf("; predicted lengths: mean absolute error %.1f tokens, %.1f%% in the right bin "
	       "(%llu predictions)\n",
	       b->predictions ? b->abs_error_sum / b->predictions : 0.0,
	       b->predictions ? 100.0 * b->right_bin / b->predictions : 0.0,
	       (unsigned long long)b->predictions);
}

static void print_tenants(const struct sim_result *r)
{
	printf("\n| tenant | requests | latency p50 / p99 s | TTFT p50 / p99 s |\n");
	printf("|---|---|---|---|\n");
	for (uint32_t t = 0; t < r->n_tenants; t++) {
		const struct sim_tenant_result *tr = &r->tenants[t];
		printf("| %s | %llu | %.2f / %.2f | %.2f / %.2f |\n", tr->name,
		       (unsigned long long)tr->requests, tr->latency_p50_s, tr->latency_p99_s,
		       tr->ttft_p50_s, tr->ttft_p99_s);
	}
}

static void json_result(FILE *f, const char *policy, const struct sim_result *r)
{
	fprintf(f,
		"{\"policy\": \"%s\", \"requests\": %llu, \"seconds\": %.6f, "
		"\"requests_per_s\": %.3f, \"tokens_per_s\": %.1f, \"cache_hit\": %.4f, "
		"\"latency_mean_s\": %.4f, \"ttft_mean_s\": %.4f, \"max_service_diff\": %.1f, "
		"\"preemptions\": %llu, \"contended_admissions\": %llu, \"steps\": %llu, "
		"\"wall_s\": %.3f, \"tenants\": [",
		policy, (unsigned long long)r->requests, r->seconds, r->requests_per_s,
		r->tokens_per_s, r->prompt_tokens ? (double)r->cached_tokens / r->prompt_tokens : 0,
		r->latency_mean_s, r->ttft_mean_s, r->max_service_diff,
		(unsigned long long)r->preemptions, (unsigned long long)r->contended_admissions,
		(unsigned long long)r->steps, r->wall_s);
	for (uint32_t t = 0; t < r->n_tenants; t++) {
		const struct sim_tenant_result *tr = &r->tenants[t];
		fprintf(f,
			"%s{\"name\": \"%s\", \"requests\": %llu, \"latency_p50_s\": %.4f, "
			"\"latency_p99_s\": %.4f, \"ttft_p50_s\": %.4f, \"ttft_p99_s\": %.4f}",
			t ? ", " : "", tr->name, (unsigned long long)tr->requests,
			tr->latency_p50_s, tr->latency_p99_s, tr->ttft_p50_s, tr->ttft_p99_s);
	}
	fprintf(f, "]}");
}

int main(int argc, char **argv)
{
	if (argc < 2 || argv[1][0] == '-') {
		usage();
		return 2;
	}
	const char *command = argv[1];
	struct sim_generator_config gen = {
	    .requests = 10000, .tenants = 4, .skew = 1.0, .prefixes = 1, .seed = 1};
	const char *prefix_spec = "fixed:256", *suffix_spec = "uniform:8:64",
		   *output_spec = "uniform:16:128";
	struct sim_config config = {.lanes = 1,
				    .max_batch = 32,
				    .max_batch_tokens = 512,
				    .kv_blocks = 2048,
				    .block_size = 16,
				    .prefix_cache = true,
				    .max_in_flight = 1 << 20,
				    .admission = {.policy = RS_ADMISSION_DLPM,
						  .w_prompt = 1.0,
						  .w_output = 2.0,
						  .quantum = 2048.0},
				    .multibin = {.bins = 4},
				    .cost = DEFAULT_COST,
				    .service_log_every_ns = 1000000000};
	const char *trace = NULL, *json_path = NULL, *cost_path = NULL, *out_path = NULL,
		   *step_log = NULL, *service_log_path = NULL, *request_log_path = NULL;
	const char *backend = "cpu";
	int threads = 0;
	char err[512];
	double v;
	int opt, bad = 0;
	struct option options[sizeof(own_options) / sizeof(own_options[0]) + RS_SCHED_OPTION_COUNT];
	rs_sched_options_merge(own_options, options);
	bool multibin = false;
	const struct rs_sched_options sched = {.admission = &config.admission,
					       .prefix_cache = &config.prefix_cache,
					       .multibin = &multibin,
					       .multibin_params = &config.multibin,
					       .dispatch = &config.dispatch};
	char why[128];
	optind = 2;
	while (!bad && (opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		const char *name = rs_option_name(options, opt);
		switch (opt) {
		case OPT_REQUESTS:
			bad = number(name, optarg, 1, 1e9, &v), gen.requests = (uint64_t)v;
			break;
		case OPT_RATE:
			bad = number(name, optarg, 0, 1e9, &gen.rate);
			break;
		case OPT_TENANTS:
			bad = number(name, optarg, 1, SIM_MAX_TENANTS, &v),
			gen.tenants = (uint32_t)v;
			break;
		case OPT_SKEW:
			bad = number(name, optarg, 0.001, 1e6, &gen.skew);
			break;
		case OPT_PREFIXES:
			bad = number(name, optarg, 0, 1e6, &v), gen.prefixes = (uint32_t)v;
			break;
		case OPT_PREFIX_LEN:
			prefix_spec = optarg;
			break;
		case OPT_SUFFIX_LEN:
			suffix_spec = optarg;
			break;
		case OPT_OUTPUT_LEN:
			output_spec = optarg;
			break;
		case OPT_HINT:
			gen.hint = true;
			break;
		case OPT_SEED:
			bad = number(name, optarg, 0, 1e18, &v), gen.seed = (uint64_t)v;
			break;
		case OPT_TRACE:
			trace = optarg;
			break;
		case OPT_LANES:
			bad = number(name, optarg, 1, 64, &v), config.lanes = (uint32_t)v;
			break;
		case OPT_MAX_BATCH:
			bad = number(name, optarg, 1, 65536, &v), config.max_batch = (uint32_t)v;
			break;
		case OPT_MAX_TOKENS:
			bad = number(name, optarg, 1, 1 << 20, &v),
			config.max_batch_tokens = (uint32_t)v;
			break;
		case OPT_KV_BLOCKS:
			bad = number(name, optarg, 1, 1 << 26, &v), config.kv_blocks = (uint32_t)v;
			break;
		case OPT_BLOCK_SIZE:
			bad = number(name, optarg, 1, 4096, &v), config.block_size = (uint32_t)v;
			break;
		case OPT_MAX_IN_FLIGHT:
			bad = number(name, optarg, 1, 1 << 26, &v),
			config.max_in_flight = (uint32_t)v;
			break;
		case OPT_COST:
			cost_path = optarg;
			break;
		case OPT_JSON:
			json_path = optarg;
			break;
		case OPT_SERVICE_LOG:
			service_log_path = optarg;
			break;
		case OPT_REQUEST_LOG:
			request_log_path = optarg;
			break;
		case OPT_SERVICE_LOG_EVERY:
			bad = number(name, optarg, 1e-6, 1e9, &v),
			config.service_log_every_ns = (uint64_t)(v * 1e9);
			break;
		case OPT_WORKERS:
			bad = number(name, optarg, 1, 256, &v), config.workers = (uint32_t)v;
			break;
		case OPT_THREADS:
			bad = number(name, optarg, 0, 1024, &v), threads = (int)v;
			break;
		case OPT_OUT:
			out_path = optarg;
			break;
		case OPT_STEP_LOG:
			step_log = optarg;
			break;
		case OPT_BACKEND:
			backend = optarg;
			bad = strcmp(backend, "cpu") && strcmp(backend, "cuda");
			break;
		default:
			if (!rs_sched_option_is(opt)) {
				bad = 1;
				break;
			}
			bad = rs_sched_option_parse(&sched, opt, optarg, why, sizeof(why)) != 0;
			if (bad)
				fprintf(stderr, "ringserve-sim: --%s: expected %s, got \"%s\"\n",
					name, why, optarg);
			break;
		}
	}
	config.planner = multibin ? &rs_planner_multibin : NULL;
	if (bad || optind != argc) {
		usage();
		return 2;
	}
	if (rs_sched_options_check(&sched, why, sizeof(why))) {
		fprintf(stderr, "ringserve-sim: %s\n", why);
		return 2;
	}
	/* As ringserved: d2lpm's workers choose at admission. compare with workers sets the
	 * dispatch policies itself (d2lpm's row at admission). */
	if (config.dispatch.at_arrival && config.dispatch.policy == RS_DISPATCH_D2LPM &&
	    !(strcmp(command, "compare") == 0 && config.workers > 1)) {
		fprintf(stderr, "ringserve-sim: --dispatch-at arrival is for the baselines "
				"(d2lpm's workers choose at admission)\n");
		return 2;
	}

	if (strcmp(command, "calibrate") == 0) {
		struct sim_cost_model m;
		int rc = step_log ? sim_cost_fit_step_log(&m, step_log, stdout, err, sizeof(err))
				  : sim_cost_calibrate(&m, backend, threads, 0, stdout);
		if (rc && step_log) {
			fprintf(stderr, "ringserve-sim: %s\n", err);
			return 1;
		}
		if (rc) {
			fprintf(stderr, "ringserve-sim: calibration failed: %s\n", strerror(-rc));
			return 1;
		}
		if (out_path && (rc = sim_cost_save(&m, out_path)) != 0) {
			fprintf(stderr, "ringserve-sim: %s: %s\n", out_path, strerror(-rc));
			return 1;
		}
		return 0;
	}
	if (cost_path && sim_cost_load(&config.cost, cost_path, err, sizeof(err))) {
		fprintf(stderr, "ringserve-sim: %s\n", err);
		return 1;
	}
	if (sim_lengths_parse(prefix_spec, &gen.prefix_len, err, sizeof(err)) ||
	    sim_lengths_parse(suffix_spec, &gen.suffix_len, err, sizeof(err)) ||
	    sim_lengths_parse(output_spec, &gen.output_len, err, sizeof(err))) {
		fprintf(stderr, "ringserve-sim: %s\n", err);
		return 1;
	}
	struct sim_workload w;
	int status = 0;
	if (trace) {
		if (sim_workload_trace(&w, trace, err, sizeof(err))) {
			fprintf(stderr, "ringserve-sim: %s\n", err);
			return 1;
		}
	} else {
		sim_workload_generator(&w, &gen);
	}
	if (strcmp(command, "trace") == 0) {
		status = sim_workload_write_trace(&w, stdout) ? 1 : 0;
	} else if (strcmp(command, "run") == 0 || strcmp(command, "compare") == 0) {
		bool compare = strcmp(command, "compare") == 0;
		static const enum rs_admission_policy all[] = {RS_ADMISSION_FCFS, RS_ADMISSION_LPM,
							       RS_ADMISSION_VTC, RS_ADMISSION_DLPM};
		static const enum rs_dispatch_policy all_dispatch[] = {
		    RS_DISPATCH_D2LPM, RS_DISPATCH_ROUND_ROBIN, RS_DISPATCH_LEAST_LOADED,
		    RS_DISPATCH_CACHE_AWARE};
		/* With several workers, compare sets dispatch policies side by side. */
		bool by_dispatch = config.workers > 1;
		FILE *json = json_path ? fopen(json_path, "w") : NULL;
		if (json_path && !json) {
			fprintf(stderr, "ringserve-sim: %s: %s\n", json_path, strerror(errno));
			return 1;
		}
		printf(
		    "ringserve-sim: %s; cost model: %s; %u worker(s) (dispatch %s) of %u lane(s), "
		    "batch %u, %u tokens a step, %u KV blocks of %u, prefix cache %s\n\n",
		    trace ? trace : "generated workload", config.cost.source,
		    config.workers ? config.workers : 1,
		    rs_dispatch_policy_name(config.dispatch.policy), config.lanes, config.max_batch,
		    config.max_batch_tokens, config.kv_blocks, config.block_size,
		    config.prefix_cache ? "on" : "off");
		if (json)
			fputc('[', json);
		if (service_log_path) {
			config.service_log = fopen(service_log_path, "w");
			if (!config.service_log) {
				fprintf(stderr, "ringserve-sim: %s: %s\n", service_log_path,
					strerror(errno));
				if (json)
					fclose(json);
				return 1;
			}
		}
		if (request_log_path) {
			config.request_log = fopen(request_log_path, "w");
			if (!config.request_log) {
				fprintf(stderr, "ringserve-sim: %s: %s\n", request_log_path,
					strerror(errno));
				if (json)
					fclose(json);
				if (config.service_log)
					fclose(config.service_log);
				return 1;
			}
		}
		struct sim_result results[4];
		int n = compare ? 4 : 1;
		for (int i = 0; i < n && !status; i++) {
			struct sim_config c = config;
			if (compare && by_dispatch)
				c.dispatch.policy = all_dispatch[i];
			else if (compare)
				c.admission.policy = all[i];
			/* d2lpm's workers choose at admission: --dispatch-at is the baselines'. */
			if (c.dispatch.policy == RS_DISPATCH_D2LPM)
				c.dispatch.at_arrival = false;
			if (i) { /* the same workload again */
				if (trace)
					w.produced = 0;
				else
					sim_workload_generator(&w, &gen);
			}
			const char *name = by_dispatch
					       ? rs_dispatch_policy_name(c.dispatch.policy)
					       : rs_admission_policy_name(c.admission.policy);
			if (c.service_log) /* gnuplot: one index per run */
				fprintf(c.service_log, "%s# %s: time_s, each tenant's service\n",
					i ? "\n\n" : "", name);
			int rc = sim_run(&c, &w, &results[i], err, sizeof(err));
			if (rc) {
				fprintf(stderr, "ringserve-sim: %s\n", err);
				status = 1;
				break;
			}
			print_result(name, &results[i], i == 0);
			if (json) {
				if (i)
					fputs(", ", json);
				json_result(json, name, &results[i]);
			}
		}
		if (!status)
			for (int i = 0; i < n; i++) {
				if (compare)
					printf("\n%s:",
					       by_dispatch
						   ? rs_dispatch_policy_name(all_dispatch[i])
						   : rs_admission_policy_name(all[i]));
				print_bins(&results[i]);
				print_tenants(&results[i]);
			}
		if (!status)
			printf("\n(%llu requests simulated in %.2f s of wall time per run)\n",
			       (unsigned long long)results[0].requests, results[0].wall_s);
		if (json) {
			fputs("]\n", json);
			fclose(json);
		}
		if (config.request_log && fclose(config.request_log)) {
			fprintf(stderr, "ringserve-sim: %s: %s\n", request_log_path,
				strerror(errno));
			status = 1;
		}
		if (config.service_log && fclose(config.service_log)) {
			fprintf(stderr, "ringserve-sim: %s: %s\n", service_log_path,
				strerror(errno));
			status = 1;
		}
	} else {
		usage();
		status = 2;
	}
	sim_workload_free(&w);
	sim_lengths_free(&gen.prefix_len);
	sim_lengths_free(&gen.suffix_len);
	sim_lengths_free(&gen.output_len);
	return status;
}
