/* The model engine behind the serving interface: kernels/engine/engine.h (CPU or CUDA
 * backend) running the steps the scheduling core plans (daemon/sched/ owns the requests'
 * KV block tables; the engine's allocator is the pool they come from).
 *
 * Lanes: on CUDA a step is enqueued on the lane's stream and polled, and the engine's
 * step descriptor (rs_engine_step_fd: a host function on the stream writes it) lets the
 * scheduler core sleep in io_uring while the step runs. The CPU backend computes a step
 * inside rs_engine_step, so each lane gets a worker thread that runs it while the
 * scheduler core goes on polling the rings (or sleeps until the worker's eventfd says the
 * step is done). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "daemon/engine.h"
#include "daemon/sched/sched.h"
#include "daemon/sched/step_shape.h"
#include "kernels/engine/engine.h"
#include "kernels/model/tokenizer.h"

enum worker_state { WORKER_IDLE = 0, WORKER_SUBMITTED, WORKER_DONE };

/* A CPU lane's worker thread. The scheduler sets steps/n_steps, then stores SUBMITTED
 * (release, R-submit) under the mutex; the worker runs the step, writes status and
 * stores DONE (release, R-done); the scheduler's acquire load of DONE (A-done) in
 * model_step_poll makes the tokens and status visible. */
struct lane {
	const struct rs_seq_step *steps; /* the plan's, valid until the step is done */
	uint32_t n_steps;
	pthread_t thread;
	bool has_thread;
	int done_fd; /* eventfd written when a step is done (the engine's on CUDA), or -1 */
	bool owns_fd;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	_Atomic uint32_t state; /* enum worker_state */
	int status;
	bool stop;
	struct model_engine *owner;
	uint32_t index;
	/* --step-log: the running step's shape and its start and end (CLOCK_MONOTONIC ns;
	 * the worker's own clock around rs_engine_step on the CPU, step_start to the poll
	 * that sees it done elsewhere). */
	struct rs_step_shape shape;
	uint64_t started_ns, ended_ns;
};

/* A loaded model and the engines using it (--workers share one). */
struct shared_model {
	struct rs_model *model;
	_Atomic uint32_t refs;
};

static void release_model(struct shared_model *shared)
{
	if (shared && atomic_fetch_sub(&shared->refs, 1) == 1) {
		rs_model_free(shared->model);
		free(shared);
	}
}

struct model_engine {
	struct rs_serving_engine base;
	struct shared_model *shared;
	struct rs_model *model; /* shared->model */
	struct rs_engine *engine;
	void *vocab; /* serialized tokenizer for the shared segment */
	struct lane *lanes;
	FILE *step_log; /* NULL: not logging */
};

static uint64_t monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One line per finished step: "rows tokens pairs seconds" (the header says so), what
 * `ringserve-sim calibrate --step-log` fits its cost model to. A buffered write on the
 * scheduler thread; a diagnostic, off by default. */
static void log_step(struct model_engine *engine, const struct lane *lane, int status)
{
	if (status < 0)
		return; /* a failed step's time says nothing about a step's cost */
	fprintf(engine->step_log, "%u %u %.0f %.9f\n", lane->shape.rows, lane->shape.tokens,
		lane->shape.pairs, (double)(lane->ended_ns - lane->started_ns) * 1e-9);
}

static void *lane_worker(void *arg)
{
	struct lane *lane = arg;
	pthread_mutex_lock(&lane->lock);
	for (;;) {
		/* Relaxed under the mutex: the mutex orders it with the scheduler's store. */
		while (!lane->stop &&
		       atomic_load_explicit(&lane->state, memory_order_relaxed) != WORKER_SUBMITTED)
			pthread_cond_wait(&lane->wake, &lane->lock);
		if (lane->stop)
			break;
		pthread_mutex_unlock(&lane->lock);
		if (lane->owner->step_log)
			lane->started_ns = monotonic_ns();
		lane->status =
		    rs_engine_step(lane->owner->engine, lane->index, lane->steps, lane->n_steps);
		if (lane->owner->step_log)
			lane->ended_ns = monotonic_ns();
		/* R-done: pairs with A-done in model_step_poll. */
		atomic_store_explicit(&lane->state, WORKER_DONE, memory_order_release);
		/* Wakes a sleeping scheduler core. An eventfd write fails only on counter
		 * overflow, which 2^64 steps will not reach. */
		uint64_t one = 1;
		ssize_t written = write(lane->done_fd, &one, sizeof(one));
		(void)written;
		pthread_mutex_lock(&lane->lock);
	}
	pthread_mutex_unlock(&lane->lock);
	return NULL;
}

static int model_step_start(struct rs_serving_engine *base, uint32_t lane_index,
			    const struct rs_step_plan *plan)
{
	struct model_engine *engine = (struct model_engine *)base;
	struct lane *lane = &engine->lanes[lane_index];
	lane->steps = plan->steps;
	lane->n_steps = plan->n;
	if (engine->step_log) {
		rs_step_shape_of(plan->steps, plan->n, &lane->shape);
		if (!lane->has_thread) /* a CPU lane's worker takes its own start */
			lane->started_ns = monotonic_ns();
	}
	if (!lane->has_thread)
		return rs_engine_step(engine->engine, lane_index, lane->steps, lane->n_steps);
	pthread_mutex_lock(&lane->lock);
	lane->status = 0;
	/* R-submit: the mutex publishes steps and n_steps to the worker. */
	atomic_store_explicit(&lane->state, WORKER_SUBMITTED, memory_order_relaxed);
	pthread_cond_signal(&lane->wake);
	pthread_mutex_unlock(&lane->lock);
	return 0;
}

static int model_step_poll(struct rs_serving_engine *base, uint32_t lane_index)
{
	struct model_engine *engine = (struct model_engine *)base;
	struct lane *lane = &engine->lanes[lane_index];
	int status;
	if (!lane->has_thread) {
		status = rs_engine_step_poll(engine->engine, lane_index);
		if (status && engine->step_log)
			lane->ended_ns = monotonic_ns();
	} else {
		/* A-done: pairs with R-done in lane_worker (ended_ns too). */
		if (atomic_load_explicit(&lane->state, memory_order_acquire) != WORKER_DONE)
			return 0;
		atomic_store_explicit(&lane->state, WORKER_IDLE, memory_order_relaxed);
		status = lane->status < 0 ? lane->status : 1;
	}
	if (status && engine->step_log)
		log_step(engine, lane, status);
	return status;
}

static int model_step_fd(struct rs_serving_engine *base, uint32_t lane_index)
{
	return ((struct model_engine *)base)->lanes[lane_index].done_fd;
}

static uint64_t model_step_deadline(struct rs_serving_engine *base, uint32_t lane)
{
	return 0; /* unknown: the scheduler polls */
}

static int model_register(struct rs_serving_engine *base, void *ptr, size_t size)
{
	return rs_engine_register_host(((struct model_engine *)base)->engine, ptr, size);
}

static void model_unregister(struct rs_serving_engine *base, void *ptr)
{
	rs_engine_unregister_host(((struct model_engine *)base)->engine, ptr);
}

static void destroy_lanes(struct model_engine *engine, uint32_t n_lanes)
{
	for (uint32_t l = 0; engine->lanes && l < n_lanes; l++) {
		struct lane *lane = &engine->lanes[l];
		if (lane->has_thread) {
			pthread_mutex_lock(&lane->lock);
			lane->stop = true;
			pthread_cond_signal(&lane->wake);
			pthread_mutex_unlock(&lane->lock);
			pthread_join(lane->thread, NULL);
			pthread_mutex_destroy(&lane->lock);
			pthread_cond_destroy(&lane->wake);
		}
		if (lane->owns_fd)
			close(lane->done_fd);
	}
	free(engine->lanes);
	engine->lanes = NULL;
}

/* Lanes: on the CPU backend, a worker thread each. */
static int create_lanes(struct model_engine *engine, uint32_t n_lanes, bool workers)
{
	engine->lanes = calloc(n_lanes, sizeof(*engine->lanes));
	if (!engine->lanes)
		return -ENOMEM;
	for (uint32_t l = 0; l < n_lanes; l++)
		engine->lanes[l].done_fd = -1;
	for (uint32_t l = 0; l < n_lanes; l++) {
		struct lane *lane = &engine->lanes[l];
		lane->owner = engine;
		lane->index = l;
		if (!workers) {
			/* -ENOTSUP or a failure: the scheduler polls instead. */
			int fd = rs_engine_step_fd(engine->engine, l);
			lane->done_fd = fd >= 0 ? fd : -1;
			continue;
		}
		lane->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (lane->done_fd < 0)
			return -errno;
		lane->owns_fd = true;
		pthread_mutex_init(&lane->lock, NULL);
		pthread_cond_init(&lane->wake, NULL);
		int ret = pthread_create(&lane->thread, NULL, lane_worker, lane);
		if (ret) {
			pthread_mutex_destroy(&lane->lock);
			pthread_cond_destroy(&lane->wake);
			return -ret;
		}
		lane->has_thread = true;
	}
	return 0;
}

static void model_destroy(struct rs_serving_engine *base)
{
	struct model_engine *engine = (struct model_engine *)base;
	destroy_lanes(engine, base->lanes);
	rs_engine_destroy(engine->engine); /* before the model it reads */
	release_model(engine->shared);
	free(engine->vocab);
	free(engine);
}

static const struct rs_serving_engine_ops model_ops = {
    .step_start = model_step_start,
    .step_poll = model_step_poll,
    .step_deadline_ns = model_step_deadline,
    .step_fd = model_step_fd,
    .register_memory = model_register,
    .unregister_memory = model_unregister,
    .destroy = model_destroy,
};

int rs_model_engine_create(const struct rs_model_engine_options *options,
			   struct rs_serving_engine **out)
{
	char err[256] = "";
	struct model_engine *engine = calloc(1, sizeof(*engine));
	if (!engine)
		return -ENOMEM;
	engine->step_log = options->step_log;
	int ret = 0;
	if (options->same_model_as) {
		if (options->same_model_as->ops != &model_ops) {
			free(engine);
			return -EINVAL;
		}
		engine->shared = ((struct model_engine *)options->same_model_as)->shared;
		atomic_fetch_add(&engine->shared->refs, 1);
	} else if (!(engine->shared = calloc(1, sizeof(*engine->shared)))) {
		ret = -ENOMEM;
	} else if ((ret = rs_model_load(options->model_path, options->tokenizer_path,
					&engine->shared->model, err, sizeof(err)))) {
		fprintf(stderr, "ringserved: %s: %s\n", options->model_path, err);
		free(engine->shared);
	} else {
		atomic_init(&engine->shared->refs, 1);
	}
	if (ret) {
		free(engine);
		return ret;
	}
	engine->model = engine->shared->model;
	struct rs_engine_options engine_options;
	rs_engine_options_init(&engine_options);
	engine_options.backend = options->backend;
	engine_options.lanes = options->lanes;
	engine_options.kv_blocks = options->kv_blocks;
	engine_options.max_batch_tokens = options->max_batch_tokens;
	engine_options.threads = options->threads;
	engine_options.kv_dtype = options->kv_dtype;
	ret = rs_engine_create(engine->model, &engine_options, &engine->engine, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "ringserved: engine: %s\n", err);
		goto fail;
	}
	if (err[0])
		fprintf(stderr, "ringserved: engine: %s\n", err);
	const struct rs_engine_options *resolved = rs_engine_options(engine->engine);
	const struct rs_model_config *config = rs_engine_config(engine->engine);
	uint32_t max_batch = options->max_batch;
	if (max_batch > resolved->max_batch_tokens)
		max_batch = resolved->max_batch_tokens; /* every decode needs a token of budget */
	ret = create_lanes(engine, resolved->lanes, strcmp(resolved->backend, "cpu") == 0);
	if (ret)
		goto fail;

	struct rs_serving_engine *base = &engine->base;
	base->ops = &model_ops;
	snprintf(base->name, sizeof(base->name), "%s", resolved->backend);
	const char *slash = strrchr(options->model_path, '/');
	snprintf(base->model_name, sizeof(base->model_name), "%s",
		 slash ? slash + 1 : options->model_path);
	base->lanes = resolved->lanes;
	base->max_batch = max_batch;
	base->vocab_size = config->vocab_size;
	base->max_seq_len = config->max_seq_len;
	base->max_batch_tokens = resolved->max_batch_tokens;
	base->kv = rs_engine_kv(engine->engine);
	base->bos_token = UINT32_MAX;
	base->eos_token = UINT32_MAX;
	struct rs_tokenizer *tokenizer = engine->model->tokenizer;
	if (tokenizer) {
		int32_t bos = rs_tokenizer_bos(tokenizer), eos = rs_tokenizer_eos(tokenizer);
		base->bos_token = bos >= 0 ? (uint32_t)bos : UINT32_MAX;
		base->eos_token = eos >= 0 ? (uint32_t)eos : UINT32_MAX;
		size_t size = rs_tokenizer_serialized_size(tokenizer);
		engine->vocab = malloc(size);
		if (!engine->vocab || rs_tokenizer_serialize(tokenizer, engine->vocab, size) < 0) {
			ret = -ENOMEM;
			goto fail;
		}
		base->vocab = engine->vocab;
		base->vocab_bytes = size;
		base->n_end_tokens =
		    rs_model_end_tokens(engine->model, base->end_tokens, RS_MAX_END_TOKENS);
	}
	base->chat_template = engine->model->chat_template;
	base->chat_template_bytes = engine->model->chat_template_len;
	*out = base;
	return 0;

fail:
	destroy_lanes(engine, engine->engine ? rs_engine_options(engine->engine)->lanes : 0);
	rs_engine_destroy(engine->engine);
	release_model(engine->shared);
	free(engine->vocab);
	free(engine);
	return ret;
}
