/* ringserve-bench simcheck [options]: does ringserve-sim predict ringserved?
 *
 * One workload (ringserve-sim's generator with a seed, or a trace file in its JSON-lines
 * format, docs/simulator.md) goes twice through every admission policy (fcfs, lpm, vtc,
 * dlpm): simulated with a cost model calibrated on this machine moments before
 * (sim_cost_calibrate, the code of `ringserve-sim calibrate`), and replayed against a real
 * ringserved serving a random stories15M-shaped model on the CPU engine, with the same
 * core settings on both sides (lanes, max batch, max batch tokens, KV blocks, policy
 * parameters, engine threads). The table gives each metric both ways and the relative
 * error of the simulation.
 *
 * The replay client: one connection per tenant (rs_connect_options.tenant), one thread
 * each, submitting the tenant's requests at their arrival times (open loop: nothing waits
 * for an earlier request), with the prompt token ids of sim_prompt_token, so the daemon's
 * prefix cache sees the sharing the simulator models; max_new_tokens the request's output
 * length with end of sequence ignored (the simulator's requests end at their length). A
 * request's latency and time to first token count from its scheduled arrival, its first
 * token is the moment the client sees rs_output > 0. Metrics are the simulator's
 * (simulate.c, summarize): requests/s and output tokens/s over the time from the first
 * arrival to the last finish, mean latency and TTFT over all requests, cached share of
 * all prompt tokens.
 *
 * Noise: the machine is shared, so calibration and replay alternate (each policy's run
 * has its own calibration taken just before), and with --rounds N the round whose replay
 * took least time (the least disturbed) is reported per policy.
 *
 * --null-delay-us D serves with the null engine instead, each step taking D us, and
 * simulates with the cost model base = D, the rest 0: what is left is the difference in
 * how the two sides plan and measure, not the engine. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "kernels/model/gguf.h"
#include "kernels/model/model_random.h"
#include "shm/clock.h"
#include "tools/ringserve-bench/bench.h"
#include "tools/ringserve-sim/sim.h"

#define N_POLICIES 4
#define MAX_ROUNDS 9
#define SEQ_LEN	   512 /* the served model's context */
#define WAIT_MS	   120000

static const char *const policy_names[N_POLICIES] = {"fcfs", "lpm", "vtc", "dlpm"};

/* The metrics both sides report. */
struct metrics {
	double seconds, requests_per_s, tokens_per_s, latency_s, ttft_s, hit_share;
	uint64_t requests, errors, steps;
	/* The replay only: the daemon's own clock, from taking the request off the ring. */
	double daemon_latency_s, daemon_ttft_s;
};

/* One request as the replay client saw it: seconds from the first scheduled arrival. */
struct outcome {
	double arrival, first, done;
	uint32_t prompt, cached, output, daemon_first_us, daemon_total_us;
	int32_t status;
	bool submitted, have_first, finished;
};

struct replay {
	const struct sim_request_spec *specs;
	uint64_t n;
	const struct sim_workload *w;
	const char *socket_path;
	struct outcome *outcomes;
	uint64_t start_ns;
	pthread_barrier_t ready;
};

struct tenant_thread {
	pthread_t thread;
	struct replay *replay;
	uint32_t tenant;
	int error;
};

static double since(uint64_t start_ns)
{
	return (double)(rs_now_ns() - start_ns) / 1e9;
}

/* One tenant: submit its requests at their arrival times, watch for first tokens and
 * completions in between, sleeping on the connection's event descriptor. */
static void *tenant_main(void *arg)
{
	struct tenant_thread *tt = arg;
	struct replay *rp = tt->replay;
	struct rs_connect_options options = {.spin_us = UINT32_MAX,
					     .tenant = rp->w->tenant_names[tt->tenant]};
	struct rs_connection *conn = NULL;
	tt->error = rs_connect(rp->socket_path, &options, &conn);
	int fd = tt->error ? -1 : rs_event_fd(conn);
	if (fd < 0 && !tt->error)
		tt->error = fd;
	pthread_barrier_wait(&rp->ready); /* all connected: the main thread sets start_ns */
	pthread_barrier_wait(&rp->ready);
	uint32_t *prompt = malloc(SEQ_LEN * sizeof(uint32_t));
	uint64_t *by_handle = malloc(65536 * sizeof(uint64_t));
	int *running = malloc(65536 * sizeof(int));
	uint32_t n_running = 0;
	if (!prompt || !by_handle || !running)
		tt->error = tt->error ? tt->error : -ENOMEM;
	uint64_t next = 0, left = 0;
	for (uint64_t i = 0; i < rp->n; i++)
		left += rp->specs[i].tenant == tt->tenant;
	const double first_arrival = rp->n ? rp->specs[0].arrival_ns / 1e9 : 0;
	while (!tt->error && left) {
		while (next < rp->n && rp->specs[next].tenant != tt->tenant)
			next++;
		/* Submit what is due. */
		while (next < rp->n && !tt->error) {
			const struct sim_request_spec *s = &rp->specs[next];
			double at = s->arrival_ns / 1e9 - first_arrival;
			if (at > since(rp->start_ns))
				break;
			for (uint32_t i = 0; i < s->prompt_len; i++)
				prompt[i] = sim_prompt_token(s, next, i);
			struct rs_generate_params params = {.prompt = prompt,
							    .prompt_len = s->prompt_len,
							    .max_new_tokens = s->output_len,
							    .output_len_hint = s->output_hint,
							    .flags = RS_GENERATE_IGNORE_EOS,
							    .user_data = next};
			int h = rs_submit(conn, &params);
			if (h == -EAGAIN)
				break; /* slots full: after the next completion */
			if (h < 0) {
				tt->error = h;
				break;
			}
			rp->outcomes[next] = (struct outcome){
			    .arrival = at, .prompt = s->prompt_len, .submitted = true};
			by_handle[h] = next;
			running[n_running++] = h;
			next++;
			while (next < rp->n && rp->specs[next].tenant != tt->tenant)
				next++;
		}
		/* First tokens of the running requests, then completions. */
		for (uint32_t k = 0; k < n_running; k++) {
			struct outcome *o = &rp->outcomes[by_handle[running[k]]];
			const uint32_t *tokens;
			if (!o->have_first && rs_output(conn, running[k], &tokens) > 0) {
				o->first = since(rp->start_ns);
				o->have_first = true;
			}
		}
		struct rs_completion done[32];
		int got = rs_poll(conn, done, 32);
		if (got < 0) {
			tt->error = got;
			break;
		}
		for (int c = 0; c < got; c++) {
			struct outcome *o = &rp->outcomes[by_handle[done[c].request]];
			o->done = since(rp->start_ns);
			if (!o->have_first) /* it ended between two looks */
				o->first = o->done, o->have_first = true;
			o->cached = done[c].cached_tokens;
			o->output = done[c].output_len;
			o->status = done[c].status;
			o->daemon_first_us = done[c].first_token_us;
			o->daemon_total_us = done[c].total_us;
			o->finished = true;
			left--;
			for (uint32_t k = 0; k < n_running; k++)
				if (running[k] == done[c].request)
					running[k] = running[--n_running];
			rs_release(conn, done[c].request);
		}
		if (got > 0)
			continue;
		int ready = rs_event_arm(conn, RS_EVENT_COMPLETION | RS_EVENT_OUTPUT);
		if (ready < 0) {
			tt->error = ready;
			break;
		}
		if (ready > 0)
			continue;
		/* Sleep until news or the next arrival (at most 100 ms: a stuck daemon is seen). */
		double wait = 0.1;
		if (next < rp->n)
			wait = fmin(wait, rp->specs[next].arrival_ns / 1e9 - first_arrival -
					      since(rp->start_ns));
		if (wait > 0) {
			struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(wait * 1e9)};
			struct pollfd pfd = {.fd = fd, .events = POLLIN};
			ppoll(&pfd, 1, &ts, NULL);
		}
	}
	free(prompt);
	free(by_handle);
	free(running);
	if (conn)
		rs_close(conn);
	return NULL;
}

/* The simulator's definitions (simulate.c, summarize) over the replay's outcomes. */
static void measure(const struct outcome *o, uint64_t n, struct metrics *m)
{
	memset(m, 0, sizeof(*m));
	double last = 0, sum_latency = 0, sum_ttft = 0, prompt = 0, cached = 0, output = 0,
	       daemon_latency = 0, daemon_ttft = 0;
	for (uint64_t i = 0; i < n; i++) {
		if (!o[i].finished || o[i].status) {
			m->errors++;
			continue;
		}
		m->requests++;
		last = fmax(last, o[i].done);
		sum_latency += o[i].done - o[i].arrival;
		sum_ttft += o[i].first - o[i].arrival;
		prompt += o[i].prompt;
		cached += o[i].cached;
		output += o[i].output;
		daemon_latency += o[i].daemon_total_us / 1e6;
		daemon_ttft += o[i].daemon_first_us / 1e6;
	}
	m->daemon_latency_s = m->requests ? daemon_latency / m->requests : 0;
	m->daemon_ttft_s = m->requests ? daemon_ttft / m->requests : 0;
	m->seconds = last; /* from the first arrival (time 0) to the last finish */
	m->requests_per_s = last > 0 ? m->requests / last : 0;
	m->tokens_per_s = last > 0 ? output / last : 0;
	m->latency_s = m->requests ? sum_latency / m->requests : 0;
	m->ttft_s = m->requests ? sum_ttft / m->requests : 0;
	m->hit_share = prompt > 0 ? cached / prompt : 0;
}

struct settings {
	uint32_t lanes, max_batch, max_batch_tokens, kv_blocks, threads, null_delay_us, rounds;
	double quantum, quantile;
};

/* The engine steps the daemon ran, from its statistics segment once it has published
 * `completed` completions (it updates every 100 ms); 0 when it cannot be read. */
static uint64_t daemon_steps(const char *socket_path, uint64_t completed)
{
	struct rs_stats_reader *reader;
	if (rs_stats_open(socket_path, &reader))
		return 0;
	struct rs_stats stats;
	uint64_t steps = 0;
	for (int tries = 0; tries < 40; tries++) {
		if (rs_stats_read(reader, &stats, NULL, 0) >= 0 &&
		    stats.requests_completed >= completed) {
			steps = stats.steps;
			break;
		}
		nanosleep(&(struct timespec){.tv_nsec = 50000000}, NULL);
	}
	rs_stats_close(reader);
	return steps;
}

/* Serve the workload under one policy and replay it. Returns 0 or -errno. */
static int replay_policy(const struct settings *st, const char *policy, const char *model_path,
			 const char *socket_path, const struct sim_request_spec *specs, uint64_t n,
			 const struct sim_workload *w, struct metrics *out)
{
	char lanes[16], batch[16], tokens[16], kv[16], threads[16], delay[16], quantum[32],
	    clients[16];
	snprintf(lanes, sizeof(lanes), "%u", st->lanes);
	snprintf(batch, sizeof(batch), "%u", st->max_batch);
	snprintf(tokens, sizeof(tokens), "%u", st->max_batch_tokens);
	snprintf(kv, sizeof(kv), "%u", st->kv_blocks);
	snprintf(threads, sizeof(threads), "%u", st->threads);
	snprintf(delay, sizeof(delay), "%u", st->null_delay_us);
	snprintf(quantum, sizeof(quantum), "%.0f", st->quantum);
	snprintf(clients, sizeof(clients), "%u", w->n_tenants + 4);
	const char *args[32] = {
	    "--policy",		  policy, "--lanes",	 lanes, "--max-batch", batch,
	    "--max-batch-tokens", tokens, "--kv-blocks", kv,	"--quantum",   quantum,
	    "--max-clients",	  clients};
	int a = 14;
	if (st->null_delay_us) {
		args[a++] = "--engine", args[a++] = "null";
		args[a++] = "--null-delay-us", args[a++] = delay;
	} else {
		args[a++] = "--model", args[a++] = model_path;
		args[a++] = "--backend", args[a++] = "cpu";
		if (st->threads)
			args[a++] = "--threads", args[a++] = threads;
	}
	args[a] = NULL;
	pid_t daemon = bench_start_daemon(socket_path, args);
	if (daemon <= 0) {
		fprintf(stderr, "bench simcheck: ringserved did not start\n");
		return -ECHILD;
	}
	struct replay rp = {.specs = specs,
			    .n = n,
			    .w = w,
			    .socket_path = socket_path,
			    .outcomes = calloc(n ? n : 1, sizeof(struct outcome))};
	struct tenant_thread tt[SIM_MAX_TENANTS] = {{0}};
	int ret = rp.outcomes ? 0 : -ENOMEM;
	uint32_t started = 0;
	if (ret == 0)
		pthread_barrier_init(&rp.ready, NULL, w->n_tenants + 1);
	for (uint32_t t = 0; t < w->n_tenants && ret == 0; t++, started++) {
		tt[t] = (struct tenant_thread){.replay = &rp, .tenant = t};
		ret = -pthread_create(&tt[t].thread, NULL, tenant_main, &tt[t]);
	}
	if (ret == 0) {
		pthread_barrier_wait(&rp.ready);
		rp.start_ns = rs_now_ns();
		pthread_barrier_wait(&rp.ready);
	}
	for (uint32_t t = 0; t < started; t++) {
		pthread_join(tt[t].thread, NULL);
		if (tt[t].error && !ret) {
			fprintf(stderr, "bench simcheck: tenant %s: %s\n", w->tenant_names[t],
				strerror(-tt[t].error));
			ret = tt[t].error;
		}
	}
	if (started == w->n_tenants && rp.outcomes)
		pthread_barrier_destroy(&rp.ready);
	if (ret == 0) {
		measure(rp.outcomes, n, out);
		out->steps = daemon_steps(socket_path, out->requests);
	}
	if (ret == 0 && out->errors) {
		fprintf(stderr, "bench simcheck: %s: %llu requests failed\n", policy,
			(unsigned long long)out->errors);
		ret = -EIO;
	}
	free(rp.outcomes);
	kill(daemon, SIGTERM);
	waitpid(daemon, NULL, 0);
	return ret;
}

static int simulate_policy(const struct settings *st, enum rs_admission_policy policy,
			   const struct sim_cost_model *cost, struct sim_workload *w,
			   struct metrics *out)
{
	struct sim_config config = {
	    .lanes = st->lanes,
	    .max_batch = st->max_batch,
	    .max_batch_tokens = st->max_batch_tokens,
	    .kv_blocks = st->kv_blocks,
	    .block_size = 16,
	    .prefix_cache = true,
	    .admission = {.policy = policy,
			  .w_prompt = 1.0,
			  .w_output = 2.0,
			  .quantum = st->quantum},
	    .multibin = {.bins = 4},
	    .cost = *cost,
	    .max_in_flight = 1 << 20,
	};
	struct sim_result *r = calloc(1, sizeof(*r));
	char err[256];
	if (!r)
		return -ENOMEM;
	w->produced = 0;
	int ret = sim_run(&config, w, r, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "bench simcheck: simulation: %s\n", err);
	} else {
		*out = (struct metrics){
		    .seconds = r->seconds,
		    .requests_per_s = r->requests_per_s,
		    .tokens_per_s = r->tokens_per_s,
		    .latency_s = r->latency_mean_s,
		    .ttft_s = r->ttft_mean_s,
		    .hit_share = r->prompt_tokens ? (double)r->cached_tokens / r->prompt_tokens : 0,
		    .requests = r->requests,
		    .steps = r->steps};
	}
	free(r);
	return ret;
}

static double relative(double sim, double real)
{
	return real != 0 ? (sim - real) / real : NAN;
}

static void usage(void)
{
	fprintf(
	    stderr,
	    "usage: ringserve-bench simcheck [--trace FILE | --requests N --rate R --tenants N\n"
	    "         --prefixes N --prefix-len D --suffix-len D --output-len D --seed N]\n"
	    "         [--max-batch N] [--max-batch-tokens N] [--kv-blocks N] [--lanes N]\n"
	    "         [--threads N] [--quantum Q] [--policy P]... [--rounds N]\n"
	    "         [--null-delay-us D]\n");
}

int bench_simcheck(int argc, char **argv, FILE *json)
{
	struct settings st = {.lanes = 1,
			      .max_batch = 8,
			      .max_batch_tokens = 512,
			      .kv_blocks = 160,
			      .threads = 1,
			      .rounds = 1,
			      .quantum = 2048,
			      .quantile = 0.5};
	struct sim_generator_config gen = {
	    .requests = 300, .rate = 40, .tenants = 4, .skew = 1, .prefixes = 4, .seed = 1};
	const char *trace = NULL, *prefix_len = "fixed:192", *suffix_len = "uniform:8:32",
		   *output_len = "uniform:8:32";
	const char *policies[N_POLICIES];
	uint32_t n_policies = 0;
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool used = v != NULL;
		if (!v)
			;
		else if (!strcmp(o, "--trace"))
			trace = v;
		else if (!strcmp(o, "--requests"))
			gen.requests = strtoull(v, NULL, 10);
		else if (!strcmp(o, "--rate"))
			gen.rate = atof(v);
		else if (!strcmp(o, "--tenants"))
			gen.tenants = (uint32_t)atoi(v);
		else if (!strcmp(o, "--prefixes"))
			gen.prefixes = (uint32_t)atoi(v);
		else if (!strcmp(o, "--prefix-len"))
			prefix_len = v;
		else if (!strcmp(o, "--suffix-len"))
			suffix_len = v;
		else if (!strcmp(o, "--output-len"))
			output_len = v;
		else if (!strcmp(o, "--seed"))
			gen.seed = strtoull(v, NULL, 10);
		else if (!strcmp(o, "--max-batch"))
			st.max_batch = (uint32_t)atoi(v);
		else if (!strcmp(o, "--max-batch-tokens"))
			st.max_batch_tokens = (uint32_t)atoi(v);
		else if (!strcmp(o, "--kv-blocks"))
			st.kv_blocks = (uint32_t)atoi(v);
		else if (!strcmp(o, "--lanes"))
			st.lanes = (uint32_t)atoi(v);
		else if (!strcmp(o, "--threads"))
			st.threads = (uint32_t)atoi(v);
		else if (!strcmp(o, "--quantum"))
			st.quantum = atof(v);
		else if (!strcmp(o, "--calibrate"))
			st.quantile = !strcmp(v, "fastest") ? 0 : !strcmp(v, "median") ? 0.5 : -1;
		else if (!strcmp(o, "--rounds"))
			st.rounds = (uint32_t)atoi(v);
		else if (!strcmp(o, "--null-delay-us"))
			st.null_delay_us = (uint32_t)atoi(v);
		else if (!strcmp(o, "--policy") && n_policies < N_POLICIES)
			policies[n_policies++] = v;
		else
			used = false;
		if (!used) {
			fprintf(stderr, "bench simcheck: unknown or incomplete option %s\n", o);
			usage();
			fprintf(json, "null");
			return 1;
		}
		i++;
	}
	if (!n_policies)
		for (uint32_t p = 0; p < N_POLICIES; p++)
			policies[n_policies++] = policy_names[p];
	enum rs_admission_policy policy_ids[N_POLICIES];
	for (uint32_t p = 0; p < n_policies; p++) {
		if (rs_admission_policy_parse(policies[p], &policy_ids[p])) {
			fprintf(stderr, "bench simcheck: unknown policy %s\n", policies[p]);
			fprintf(json, "null");
			return 1;
		}
	}
	if (st.quantile < 0 || st.rounds < 1 || st.rounds > MAX_ROUNDS || !st.max_batch ||
	    !st.lanes || !st.kv_blocks || gen.tenants < 1 || gen.tenants > SIM_MAX_TENANTS) {
		fprintf(stderr,
			"bench simcheck: --rounds 1..%d; batch, lanes, KV blocks and "
			"tenants at least 1\n",
			MAX_ROUNDS);
		fprintf(json, "null");
		return 1;
	}

	/* The workload, read whole: the replay needs it as an array, the simulator as a
	 * trace workload over the same array. */
	char err[256];
	struct sim_workload source;
	int ret = 0;
	if (trace) {
		ret = sim_workload_trace(&source, trace, err, sizeof(err));
	} else {
		ret = sim_lengths_parse(prefix_len, &gen.prefix_len, err, sizeof(err));
		if (!ret)
			ret = sim_lengths_parse(suffix_len, &gen.suffix_len, err, sizeof(err));
		if (!ret)
			ret = sim_lengths_parse(output_len, &gen.output_len, err, sizeof(err));
		if (!ret)
			sim_workload_generator(&source, &gen);
	}
	if (ret) {
		fprintf(stderr, "bench simcheck: %s\n", err);
		fprintf(json, "null");
		return 1;
	}
	struct sim_workload w = source;
	w.gen = NULL;
	w.produced = 0;
	if (!trace) {
		w.trace = malloc((gen.requests ? gen.requests : 1) * sizeof(*w.trace));
		w.n_trace = 0;
		struct sim_request_spec s;
		while (w.trace && sim_workload_next(&source, &s))
			w.trace[w.n_trace++] = s;
	}
	uint64_t prompt_tokens = 0, output_tokens = 0;
	for (uint64_t i = 0; w.trace && i < w.n_trace; i++) {
		prompt_tokens += w.trace[i].prompt_len;
		output_tokens += w.trace[i].output_len;
		if (w.trace[i].prompt_len + w.trace[i].output_len > SEQ_LEN) {
			fprintf(stderr,
				"bench simcheck: request %llu needs %u positions, the "
				"model has %d\n",
				(unsigned long long)i,
				w.trace[i].prompt_len + w.trace[i].output_len, SEQ_LEN);
			ret = -EINVAL;
		}
	}
	if (!w.trace || ret) {
		free(w.trace);
		fprintf(json, "null");
		return 1;
	}

	/* The model: ringserve-mkmodel's generator in the stories15M shape (calibrate's). */
	struct rs_model_config config = {.dim = 288,
					 .hidden_dim = 768,
					 .n_layers = 6,
					 .n_heads = 6,
					 .n_kv_heads = 6,
					 .head_dim = 48,
					 .vocab_size = 32000,
					 .max_seq_len = SEQ_LEN,
					 .rope_dim = 48,
					 .rope_theta = 10000.0f,
					 .norm_eps = 1e-5f};
	char model_path[64], socket_path[64];
	snprintf(model_path, sizeof(model_path), "/tmp/ringserve-bench-simcheck-%d.gguf",
		 (int)getpid());
	snprintf(socket_path, sizeof(socket_path), "/tmp/ringserve-bench-simcheck-%d.sock",
		 (int)getpid());
	if (!st.null_delay_us) {
		struct rs_model *model = NULL;
		ret = rs_model_random(&config, RS_DTYPE_F32, 1, true, &model);
		if (!ret && rs_gguf_write_model(model_path, model, NULL, err, sizeof(err))) {
			fprintf(stderr, "bench simcheck: %s\n", err);
			ret = -EIO;
		}
		rs_model_free(model);
	}
	printf("ringserve-bench simcheck: %s, %llu requests from %u tenants (%llu prompt, %llu "
	       "output tokens)\n",
	       st.null_delay_us ? "null engine" : "stories15M-shaped f32 model, CPU engine",
	       (unsigned long long)w.n_trace, w.n_tenants, (unsigned long long)prompt_tokens,
	       (unsigned long long)output_tokens);
	printf("  both sides: lanes %u, max batch %u, max batch tokens %u, KV blocks %u of 16, "
	       "quantum %.0f, threads %u (0: one per CPU), %u round(s); calibration: the %s of 9 "
	       "runs a step\n\n",
	       st.lanes, st.max_batch, st.max_batch_tokens, st.kv_blocks, st.quantum, st.threads,
	       st.rounds, st.quantile > 0 ? "median" : "fastest");

	struct metrics sim[N_POLICIES], real[N_POLICIES];
	struct sim_cost_model costs[N_POLICIES];
	bool have[N_POLICIES] = {false};
	for (uint32_t round = 0; round < st.rounds && !ret; round++) {
		for (uint32_t p = 0; p < n_policies && !ret; p++) {
			struct sim_cost_model cost = {.base_s = st.null_delay_us * 1e-6};
			snprintf(cost.source, sizeof(cost.source), "null engine, %u us a step",
				 st.null_delay_us);
			if (!st.null_delay_us)
				ret = sim_cost_calibrate(&cost, "cpu", (int)st.threads, st.quantile,
							 NULL);
			struct metrics s, r;
			if (!ret)
				ret = simulate_policy(&st, policy_ids[p], &cost, &w, &s);
			if (!ret)
				ret = replay_policy(&st, policies[p], model_path, socket_path,
						    w.trace, w.n_trace, &w, &r);
			/* Keep the least disturbed replay: the one that took least time. */
			if (!ret && (!have[p] || r.seconds < real[p].seconds)) {
				sim[p] = s, real[p] = r, costs[p] = cost, have[p] = true;
			}
		}
	}
	if (!st.null_delay_us)
		unlink(model_path);
	free(w.trace);
	if (ret) {
		fprintf(stderr, "bench simcheck: %s\n", strerror(-ret));
		fprintf(json, "null");
		return 1;
	}

	static const char *const metric_names[] = {"req/s", "out tok/s", "mean latency s",
						   "mean TTFT s", "cache hit"};
	printf("%-7s %-15s %10s %10s %8s\n", "policy", "metric", "simulated", "ringserved",
	       "error");
	fprintf(json,
		"{\"requests\": %llu, \"tenants\": %u, \"max_batch\": %u, "
		"\"max_batch_tokens\": %u, \"kv_blocks\": %u, \"lanes\": %u, "
		"\"null_delay_us\": %u, \"rounds\": %u, \"policies\": {",
		(unsigned long long)w.n_trace, w.n_tenants, st.max_batch, st.max_batch_tokens,
		st.kv_blocks, st.lanes, st.null_delay_us, st.rounds);
	double worst = 0;
	for (uint32_t p = 0; p < n_policies; p++) {
		double sv[5] = {sim[p].requests_per_s, sim[p].tokens_per_s, sim[p].latency_s,
				sim[p].ttft_s, sim[p].hit_share};
		double rv[5] = {real[p].requests_per_s, real[p].tokens_per_s, real[p].latency_s,
				real[p].ttft_s, real[p].hit_share};
		static const char *const keys[] = {"requests_per_s", "tokens_per_s", "latency_s",
						   "ttft_s", "hit_share"};
		fprintf(json,
			"%s\"%s\": {\"cost\": {\"base_s\": %.9g, \"per_token_s\": %.9g, "
			"\"per_row_s\": %.9g, \"per_pair_s\": %.9g}",
			p ? ", " : "", policies[p], costs[p].base_s, costs[p].per_token_s,
			costs[p].per_row_s, costs[p].per_pair_s);
		for (int k = 0; k < 5; k++) {
			double e = relative(sv[k], rv[k]);
			if (isfinite(e))
				worst = fmax(worst, fabs(e));
			printf("%-7s %-15s %10.4g %10.4g %+7.1f%%\n", k ? "" : policies[p],
			       metric_names[k], sv[k], rv[k], 100 * e);
			fprintf(json, ", \"%s\": {\"sim\": %.6g, \"real\": %.6g, \"error\": %.4f}",
				keys[k], sv[k], rv[k], isfinite(e) ? e : 0.0);
		}
		printf("%-7s %-15s %10s %10.4g (daemon clock: %.4g s TTFT)\n", "", "  daemon-side",
		       "", real[p].daemon_latency_s, real[p].daemon_ttft_s);
		printf("%-7s %-15s %10llu %10llu %+7.1f%%\n", "", "steps",
		       (unsigned long long)sim[p].steps, (unsigned long long)real[p].steps,
		       100 * relative(sim[p].steps, real[p].steps));
		fprintf(json,
			", \"daemon_latency_s\": %.6g, \"daemon_ttft_s\": %.6g, "
			"\"steps\": {\"sim\": %llu, \"real\": %llu}}",
			real[p].daemon_latency_s, real[p].daemon_ttft_s,
			(unsigned long long)sim[p].steps, (unsigned long long)real[p].steps);
	}
	fprintf(json, "}, \"worst_error\": %.4f}", worst);
	printf("worst relative error %.1f%% (the issue's target: 15%%)\n", 100 * worst);
	return 0;
}
