/* The null engine: no model, deterministic tokens derived from the prompt, an optional
 * per-step delay. It lets the data path be built, tested and measured on its own. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine.h"
#include "daemon/sched/sched.h"
#include "daemon/sched/tenant.h"
#include "shm/clock.h"

struct null_lane {
	uint64_t done_at_ns;
	bool failing; /* its step in flight ends with -EIO (fault injection) */
};

struct null_engine {
	struct rs_serving_engine base;
	uint64_t token_delay_ns;
	bool fail_steps;
	uint64_t fail_after_steps, steps_started;
	FILE *admission_log;
	struct null_lane *lanes;
	struct rs_kv_cache *kv;
};

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

uint32_t rs_null_engine_token(const uint32_t *prompt, uint32_t prompt_len, uint32_t index,
			      uint32_t vocab_size)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (uint32_t i = 0; i < prompt_len; i++) {
		h ^= prompt[i];
		h *= 0x100000001b3ull;
	}
	return (uint32_t)(splitmix64(h + index) % vocab_size);
}

static int null_step_start(struct rs_serving_engine *base, uint32_t lane,
			   const struct rs_step_plan *plan)
{
	struct null_engine *engine = (struct null_engine *)base;
	engine->lanes[lane].failing =
	    engine->fail_steps && ++engine->steps_started > engine->fail_after_steps;
	for (uint32_t i = 0; i < plan->n && !engine->lanes[lane].failing; i++) {
		const struct rs_seq_step *step = &plan->steps[i];
		if (!step->sample)
			continue;
		/* The output index of the sampled token: its position minus the prompt. */
		const struct rs_request *request = plan->requests[i];
		uint32_t index = step->start_pos + step->n_tokens - request->prompt_len;
		*step->out_token = rs_null_engine_token(request->tokens, request->prompt_len, index,
							base->vocab_size);
		if (index == 0 && engine->admission_log)
			fprintf(engine->admission_log, "%llu %llu %s\n",
				(unsigned long long)request->submitted_ns,
				(unsigned long long)request->admitted_ns,
				request->tenant ? request->tenant->name : "-");
	}
	engine->lanes[lane].done_at_ns =
	    engine->token_delay_ns ? rs_now_ns() + engine->token_delay_ns : 0;
	return 0;
}

static int null_step_poll(struct rs_serving_engine *base, uint32_t lane)
{
	struct null_engine *engine = (struct null_engine *)base;
	uint64_t done_at = engine->lanes[lane].done_at_ns;
	if (done_at != 0 && rs_now_ns() < done_at)
		return 0;
	return engine->lanes[lane].failing ? -EIO : 1;
}

static uint64_t null_step_deadline(struct rs_serving_engine *base, uint32_t lane)
{
	return ((struct null_engine *)base)->lanes[lane].done_at_ns;
}

static void null_destroy(struct rs_serving_engine *base)
{
	struct null_engine *engine = (struct null_engine *)base;
	rs_kv_cache_destroy(engine->kv);
	free(engine->lanes);
	free(engine);
}

static const struct rs_serving_engine_ops null_ops = {
    .step_start = null_step_start,
    .step_poll = null_step_poll,
    .step_deadline_ns = null_step_deadline,
    .destroy = null_destroy,
};

int rs_null_engine_create(const struct rs_null_engine_options *options,
			  struct rs_serving_engine **out)
{
	if (options->vocab_size == 0 || options->lanes == 0 || options->max_batch == 0)
		return -EINVAL;
	struct null_engine *engine = calloc(1, sizeof(*engine));
	if (!engine)
		return -ENOMEM;
	engine->lanes = calloc(options->lanes, sizeof(*engine->lanes));
	int ret = engine->lanes ? rs_kv_cache_create(options->kv_blocks ? options->kv_blocks : 8192,
						     options->block_size ? options->block_size : 16,
						     &engine->kv)
				: -ENOMEM;
	if (ret) {
		free(engine->lanes);
		free(engine);
		return ret;
	}
	engine->token_delay_ns = options->token_delay_ns;
	engine->fail_steps = options->fail_steps;
	engine->fail_after_steps = options->fail_after_steps;
	engine->admission_log = options->admission_log;
	struct rs_serving_engine *base = &engine->base;
	base->ops = &null_ops;
	strcpy(base->name, "null");
	strcpy(base->model_name, "null");
	base->lanes = options->lanes;
	base->max_batch = options->max_batch;
	base->vocab_size = options->vocab_size;
	base->bos_token = UINT32_MAX;
	base->eos_token = UINT32_MAX;
	base->max_seq_len = options->max_seq_len ? options->max_seq_len : UINT32_MAX;
	base->max_batch_tokens = options->max_batch_tokens ? options->max_batch_tokens : 512;
	base->kv = engine->kv;
	*out = base;
	return 0;
}
