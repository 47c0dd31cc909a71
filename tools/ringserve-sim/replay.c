/* The replay client (sim.h, sim_replay): a trace submitted to a running ringserved at its
 * arrival times, measured as the simulator measures (simulate.c, summarize).
 *
 * One connection per tenant (rs_connect_options.tenant), one thread each, submitting the
 * tenant's requests at their arrival times (open loop: nothing waits for an earlier
 * request), prompts built by sim_prompt_token, so the daemon's prefix cache sees the
 * sharing the simulator models; max_new_tokens the request's output length with end of
 * sequence ignored (the simulator's requests end at their length). A request's latency
 * and time to first token count from its scheduled arrival; its first token is the
 * moment the client sees rs_output > 0 (the thread sleeps on the connection's event
 * descriptor for completions and output). */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client-lib/ringserve.h"
#include "shm/clock.h"
#include "tools/ringserve-sim/sim.h"

enum { PROMPT_MAX = 65536, MAX_HANDLES = 65536 /* request slots of one connection */ };

/* One request as the replay client saw it: seconds from the first scheduled arrival. */
struct outcome {
	double arrival, submitted_at, first, done; /* submitted_at: when rs_submit returned */
	uint32_t prompt, cached, output, daemon_first_us, daemon_total_us;
	uint32_t daemon_queued_us, preemptions;
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
	/* The start: every thread connects, then waits for `go` (or `abort`). */
	pthread_mutex_t lock;
	pthread_cond_t changed;
	uint32_t connected;
	bool go, abort;
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
	pthread_mutex_lock(&rp->lock);
	rp->connected++;
	pthread_cond_broadcast(&rp->changed);
	while (!rp->go && !rp->abort)
		pthread_cond_wait(&rp->changed, &rp->lock); /* start_ns is set before go */
	bool abort = rp->abort;
	pthread_mutex_unlock(&rp->lock);
	if (abort && !tt->error)
		tt->error = -ECANCELED;
	uint32_t *prompt = malloc(PROMPT_MAX * sizeof(uint32_t));
	uint64_t *by_handle = malloc(MAX_HANDLES * sizeof(uint64_t));
	int *running = malloc(MAX_HANDLES * sizeof(int));
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
		bool slots_full = false;
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
			if (h == -EAGAIN) {
				slots_full = true; /* retried after the next completion */
				break;
			}
			if (h >= MAX_HANDLES) {
				tt->error = -ERANGE;
				break;
			}
			if (h < 0) {
				tt->error = h;
				break;
			}
			rp->outcomes[next] = (struct outcome){.arrival = at,
							      .submitted_at = since(rp->start_ns),
							      .prompt = s->prompt_len,
							      .submitted = true};
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
			o->daemon_queued_us = done[c].queued_us;
			o->preemptions = done[c].preemptions;
			o->finished = true;
			left--;
			for (uint32_t k = 0; k < n_running; k++)
				if (running[k] == done[c].request)
					running[k] = running[--n_running];
			rs_release(conn, done[c].request);
		}
		if (got > 0)
			continue;
		/* Woken for tokens only while a running request has not shown its first:
		 * a client thread woken per token would take CPU from the engine. */
		bool awaiting_first = false;
		for (uint32_t k = 0; k < n_running && !awaiting_first; k++)
			awaiting_first = !rp->outcomes[by_handle[running[k]]].have_first;
		int ready = rs_event_arm(conn, RS_EVENT_COMPLETION |
						   (awaiting_first ? RS_EVENT_OUTPUT : 0));
		if (ready < 0) {
			tt->error = ready;
			break;
		}
		if (ready > 0)
			continue;
		/* Sleep until news or the next arrival (at most 100 ms: a stuck daemon is seen). */
		double wait = 0.1;
		if (next < rp->n && !slots_full)
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
static void measure(const struct outcome *o, uint64_t n, struct sim_replay_result *m)
{
	memset(m, 0, sizeof(*m));
	double last = 0, sum_latency = 0, sum_ttft = 0, prompt = 0, cached = 0, output = 0,
	       daemon_latency = 0, daemon_ttft = 0;
	for (uint64_t i = 0; i < n; i++) {
		if (!o[i].finished || o[i].status) {
			m->failed++;
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
	m->daemon_latency_mean_s = m->requests ? daemon_latency / m->requests : 0;
	m->daemon_ttft_mean_s = m->requests ? daemon_ttft / m->requests : 0;
	m->seconds = last; /* from the first arrival (time 0) to the last finish */
	m->requests_per_s = last > 0 ? m->requests / last : 0;
	m->tokens_per_s = last > 0 ? output / last : 0;
	m->latency_mean_s = m->requests ? sum_latency / m->requests : 0;
	m->ttft_mean_s = m->requests ? sum_ttft / m->requests : 0;
	m->prompt_tokens = (uint64_t)prompt;
	m->cached_tokens = (uint64_t)cached;
	m->output_tokens = (uint64_t)output;
	m->hit_share = prompt > 0 ? cached / prompt : 0;
}

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

/* SIM_REQUEST_LOG_HEADER's columns; the admission on the daemon's clock moved to the
 * client's: its submission plus the time the daemon says it queued. */
static void log_requests(const struct replay *rp, FILE *log)
{
	for (uint64_t i = 0; i < rp->n; i++) {
		const struct sim_request_spec *s = &rp->specs[i];
		const struct outcome *o = &rp->outcomes[i];
		if (!o->finished || o->status)
			continue;
		fprintf(log, "%llu %u %d %u %u %u %.6f %.6f %.6f %.6f %u\n", (unsigned long long)i,
			s->tenant, s->prefix == UINT32_MAX ? -1 : (int)s->prefix, o->prompt,
			o->cached, o->output, o->arrival,
			o->submitted_at + o->daemon_queued_us / 1e6, o->first, o->done,
			o->preemptions);
	}
}

int sim_replay(const char *socket_path, const struct sim_workload *w, struct sim_replay_result *out,
	       char *err, size_t err_size)
{
	return sim_replay_log(socket_path, w, out, NULL, err, err_size);
}

int sim_replay_log(const char *socket_path, const struct sim_workload *w,
		   struct sim_replay_result *out, FILE *request_log, char *err, size_t err_size)
{
	memset(out, 0, sizeof(*out));
	for (uint64_t i = 0; i < w->n_trace; i++) {
		if (w->trace[i].prompt_len > PROMPT_MAX) {
			snprintf(err, err_size, "request %llu: a prompt of %u tokens (at most %d)",
				 (unsigned long long)i, w->trace[i].prompt_len, PROMPT_MAX);
			return -E2BIG;
		}
	}
	struct replay rp = {.specs = w->trace,
			    .n = w->n_trace,
			    .w = w,
			    .socket_path = socket_path,
			    .outcomes =
				calloc(w->n_trace ? w->n_trace : 1, sizeof(struct outcome))};
	if (!rp.outcomes) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	struct tenant_thread tt[SIM_MAX_TENANTS];
	pthread_mutex_init(&rp.lock, NULL);
	pthread_cond_init(&rp.changed, NULL);
	int ret = 0;
	uint32_t started = 0;
	for (uint32_t t = 0; t < w->n_tenants && ret == 0; t++) {
		tt[t] = (struct tenant_thread){.replay = &rp, .tenant = t};
		ret = -pthread_create(&tt[t].thread, NULL, tenant_main, &tt[t]);
		started += ret == 0;
	}
	if (ret)
		snprintf(err, err_size, "starting a tenant thread: %s", strerror(-ret));
	/* Everyone connected (or a thread missing: abort), then the clock starts. */
	pthread_mutex_lock(&rp.lock);
	while (rp.connected < started)
		pthread_cond_wait(&rp.changed, &rp.lock);
	rp.start_ns = rs_now_ns();
	rp.go = ret == 0;
	rp.abort = ret != 0;
	pthread_cond_broadcast(&rp.changed);
	pthread_mutex_unlock(&rp.lock);
	for (uint32_t t = 0; t < started; t++) {
		pthread_join(tt[t].thread, NULL);
		if (tt[t].error && !ret) {
			snprintf(err, err_size, "tenant %s: %s", w->tenant_names[t],
				 strerror(-tt[t].error));
			ret = tt[t].error;
		}
	}
	pthread_cond_destroy(&rp.changed);
	pthread_mutex_destroy(&rp.lock);
	if (ret == 0) {
		measure(rp.outcomes, w->n_trace, out);
		out->steps = daemon_steps(socket_path, out->requests);
		if (request_log) {
			fputs(SIM_REQUEST_LOG_HEADER, request_log);
			log_requests(&rp, request_log);
		}
		if (out->failed) {
			snprintf(err, err_size, "%llu requests failed",
				 (unsigned long long)out->failed);
			ret = -EIO;
		}
	}
	free(rp.outcomes);
	return ret;
}
