/* ringserve-sim: the real scheduling core (daemon/sched/) driven on a virtual clock by
 * generated or recorded workloads, with a fitted cost model in place of the engine.
 * Pieces: workload.c (generators and trace files), cost_model.c (a step's time, its fit
 * and calibration), simulate.c (the event loop and its measurements), main.c (the
 * command line and the reports). docs/simulator.md describes them. */
#ifndef RS_TOOLS_SIM_H
#define RS_TOOLS_SIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "daemon/sched/planner.h"
#include "daemon/sched/sched.h"

/* --- lengths ---------------------------------------------------------------------------- */

/* A length distribution: "fixed:N", "uniform:A:B" (inclusive), "exp:MEAN[:MAX]" (rounded,
 * at least 1, capped at MAX), "empirical:FILE" (whitespace-separated lengths, drawn
 * uniformly). */
struct sim_lengths {
	enum { LEN_FIXED, LEN_UNIFORM, LEN_EXP, LEN_EMPIRICAL } kind;
	uint32_t a, b; /* fixed: a; uniform: a..b; exp: b = cap (0: none) */
	double mean;
	uint32_t *values; /* empirical */
	uint32_t n_values;
};

int sim_lengths_parse(const char *spec, struct sim_lengths *out, char *err, size_t err_size);
void sim_lengths_free(struct sim_lengths *lengths);
uint32_t sim_lengths_draw(const struct sim_lengths *lengths, uint64_t *rng);
/* The distribution's mean (an empirical one's sample mean). */
double sim_lengths_mean(const struct sim_lengths *lengths);

uint64_t sim_random(uint64_t *rng);    /* splitmix64 */
double sim_random_unit(uint64_t *rng); /* in (0, 1] */

/* --- workloads ---------------------------------------------------------------------------- */

/* One request of a workload. */
struct sim_request_spec {
	uint64_t arrival_ns;
	uint32_t tenant;      /* index into the workload's tenants */
	uint32_t prefix;      /* shared prefix id, or UINT32_MAX: none */
	uint32_t prefix_len;  /* tokens of the prompt taken from that prefix */
	uint32_t prompt_len;  /* >= prefix_len, >= 1 */
	uint32_t output_len;  /* >= 1: generated before it ends */
	uint32_t output_hint; /* the client's guess at output_len; 0: none */
};

enum { SIM_MAX_TENANTS = 64, SIM_MAX_LANES = 256 };

/* A generated workload: `requests` arrivals (Poisson at `rate` per second, or all at
 * time 0 when rate is 0) from `tenants` tenants, tenant 0 sending `skew` times as many
 * as each other; each tenant has `prefixes` shared prefixes of prefix_len tokens, one of
 * which starts every prompt (0 prefixes: none), then a private suffix. */
struct sim_generator_config {
	uint64_t requests;
	double rate;
	uint32_t tenants;
	double skew;
	uint32_t prefixes;
	struct sim_lengths prefix_len, suffix_len, output_len;
	bool hint; /* give the exact output length as the hint */
	uint64_t seed;
};

struct sim_workload {
	/* A generator, or a trace file read whole. */
	const struct sim_generator_config *gen;
	uint64_t rng, produced, clock_ns;
	struct sim_request_spec *trace;
	uint64_t n_trace;
	char tenant_names[SIM_MAX_TENANTS][32];
	double tenant_weights[SIM_MAX_TENANTS];
	uint32_t n_tenants;
};

void sim_workload_generator(struct sim_workload *w, const struct sim_generator_config *gen);

/* A trace: one JSON object per line, in arrival order:
 *   {"arrival": 0.25, "tenant": "a", "prefix": 3, "prefix_len": 200, "prompt": 230,
 *    "output": 40, "hint": 40}
 * arrival in seconds; tenant a name (up to SIM_MAX_TENANTS distinct); prefix an id
 * shared by requests that start with the same prefix_len tokens (optional, with
 * prefix_len); hint optional. Returns 0 or -errno with "FILE:LINE: why" in err. */
int sim_workload_trace(struct sim_workload *w, const char *path, char *err, size_t err_size);
void sim_workload_free(struct sim_workload *w);

/* The next request in arrival order; false when there are no more. */
bool sim_workload_next(struct sim_workload *w, struct sim_request_spec *out);

/* Token i of the prompt of the request `index` (its place in arrival order, from 0):
 * the prefix part a function of (prefix id, position), the rest of (index, position),
 * ids in [1, 32000). The simulator and `ringserve-bench simcheck`'s replay client build
 * prompts with it, so a daemon's prefix cache sees exactly the sharing simulated. */
uint32_t sim_prompt_token(const struct sim_request_spec *spec, uint64_t index, uint32_t i);

/* Write n requests of a generator as a trace (the format above). */
int sim_workload_write_trace(struct sim_workload *w, FILE *out);

/* --- the cost model ------------------------------------------------------------------------ */

/* A step's time: base + per_token x tokens + per_row x rows + per_pair x attention
 * pairs, where tokens are the step's new positions, rows its sequences, and pairs the
 * query-key products of its attention (each new position attends to every earlier one
 * and itself). Fitted by least squares to measured steps (cost_model.c). */
struct sim_cost_model {
	double base_s, per_token_s, per_row_s, per_pair_s;
	char source[128]; /* where the figures come from */
};

struct sim_step_shape {
	uint32_t tokens, rows;
	double pairs;
};

void sim_step_shape_of(const struct rs_step_plan *plan, struct sim_step_shape *out);
double sim_cost_seconds(const struct sim_cost_model *m, const struct sim_step_shape *s);

/* Fit m to n measured steps (shape, seconds); prints each step's error to report when
 * not NULL. Returns the largest relative error, or < 0 when the fit is singular. */
double sim_cost_fit(struct sim_cost_model *m, const struct sim_step_shape *shapes,
		    const double *seconds, uint32_t n, FILE *report);

/* Fit m to the steps a served run logged (ringserved --step-log FILE: "ROWS TOKENS PAIRS
 * SECONDS" lines, '#' comments): the engine's cost under serving conditions (its
 * threads sharing the cores with the daemon loop and the clients), which a quiet
 * calibration does not see. The fit's summary goes to report. Returns 0, or -errno with
 * err set (unreadable or malformed file, fewer than 16 steps, no fit). */
int sim_cost_fit_step_log(struct sim_cost_model *m, const char *path, FILE *report, char *err,
			  size_t err_size);

/* "key value" lines (base_s, per_token_s, per_row_s, per_pair_s, source). */
int sim_cost_load(struct sim_cost_model *m, const char *path, char *err, size_t err_size);
int sim_cost_save(const struct sim_cost_model *m, const char *path);

/* Measure an engine's steps and fit m to them; the fit and each step's error go to
 * report. backend "cpu": a random stories15M-shaped f32 model (`threads` workers, 0: one
 * per CPU); "cuda": a random TinyLlama-1.1B-shaped f16 model on the GPU. Each step's
 * time is the `quantile` of 9 runs: 0 the fastest (the engine undisturbed), 0.5 the
 * median (the engine as a server on this shared machine sees it right now). Returns 0, or
 * -EINVAL for another backend, or the engine's error. */
int sim_cost_calibrate(struct sim_cost_model *m, const char *backend, int threads, double quantile,
		       FILE *report);

/* --- the simulation ------------------------------------------------------------------------- */

struct sim_config {
	uint32_t lanes, max_batch, max_batch_tokens, kv_blocks, block_size;
	bool prefix_cache;
	struct rs_admission_params admission;
	const struct rs_planner_ops *planner; /* NULL: continuous batching */
	struct rs_multibin_params multibin;
	struct sim_cost_model cost;
	uint32_t max_in_flight;	  /* requests submitted and not finished at most */
	uint64_t sample_every_ns; /* service-difference samples (0: every step) */
	/* When not NULL: every service_log_every_ns of virtual time, a line "TIME S0 S1 ..."
	 * (seconds since the first arrival, each tenant's weighted service so far). */
	FILE *service_log;
	uint64_t service_log_every_ns;
	uint32_t workers; /* engine instances, each kv_blocks and `lanes` lanes; 0: 1 */
	struct rs_dispatch_params dispatch;
	/* When not NULL: a line per request as it ends (SIM_REQUEST_LOG_HEADER), and a
	 * line per step in ringserved --step-log's format ("ROWS TOKENS PAIRS SECONDS"), to
	 * set beside a served run's (ringserve-bench simcheck --request-log). */
	FILE *request_log, *step_log;
};

/* The per-request log's columns, shared by the simulator and the replay client: times in
 * seconds from the first scheduled arrival; admitted is when the core took it off the
 * policy's queue (the replay: its submission plus the daemon's queued time). */
#define SIM_REQUEST_LOG_HEADER                                                                     \
	"# index tenant prefix prompt cached output arrival admitted first done preemptions\n"

struct sim_tenant_result {
	char name[RS_TENANT_NAME_MAX];
	uint64_t requests, output_tokens;
	double latency_p50_s, latency_p99_s, ttft_p50_s, ttft_p99_s;
};

struct sim_result {
	uint64_t requests, output_tokens, prompt_tokens, cached_tokens, steps, preemptions;
	/* Admissions that left an arrived request waiting: where the policy chose. */
	uint64_t contended_admissions;
	double seconds; /* virtual time from the first arrival to the last finish */
	double requests_per_s, tokens_per_s;
	double latency_mean_s, ttft_mean_s;
	double max_service_diff; /* between backlogged tenants, weighted tokens */
	struct sim_tenant_result tenants[SIM_MAX_TENANTS];
	uint32_t n_tenants;
	bool multibin; /* the fields below are the multi-bin planner's */
	struct rs_multibin_stats bins;
	uint32_t boundaries[RS_MULTIBIN_MAX_BINS - 1], n_boundaries;
	double wall_s; /* the simulation's own run time */
};

/* Run the workload through the core. Returns 0 or -errno with a message in err. */
int sim_run(const struct sim_config *config, struct sim_workload *w, struct sim_result *out,
	    char *err, size_t err_size);

/* --- the replay client: the same workload through a real ringserved ------------------- */

/* What the replay measured, defined as sim_result's: requests/s and output tokens/s over
 * the time from the first arrival to the last finish, means over all requests, cached
 * share of all prompt tokens; plus the daemon's own clock (from taking a request off its
 * ring) and its engine steps (its statistics segment; 0 when unreadable). */
struct sim_replay_result {
	uint64_t requests, failed, prompt_tokens, cached_tokens, output_tokens, steps;
	double seconds, requests_per_s, tokens_per_s, latency_mean_s, ttft_mean_s, hit_share;
	double daemon_latency_mean_s, daemon_ttft_mean_s;
};

/* Submit the trace workload w (w->trace, read whole) to the ringserved at socket_path at
 * its arrival times, one connection and thread per tenant (tenant names as w's), prompts
 * of sim_prompt_token, EOS ignored, and wait for every completion (replay.c). Returns 0,
 * or -errno with a message in err (a request that failed: -EIO). */
int sim_replay(const char *socket_path, const struct sim_workload *w, struct sim_replay_result *out,
	       char *err, size_t err_size);

/* sim_replay, and when request_log is not NULL a line per request in
 * SIM_REQUEST_LOG_HEADER's columns, in arrival order. */
int sim_replay_log(const char *socket_path, const struct sim_workload *w,
		   struct sim_replay_result *out, FILE *request_log, char *err, size_t err_size);

#endif
