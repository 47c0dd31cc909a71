/* The model engine behind the serving interface: kernels/engine.h (CPU or CUDA backend)
 * driven by the scheduler. It owns each request's KV block table: admission reserves
 * every block the request can need (prompt + max_new_tokens), so a running request never
 * stalls for memory; release gives them back. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine.h"
#include "daemon/request.h"
#include "kernels/engine.h"
#include "kernels/tokenizer.h"

struct model_engine {
	struct rs_serving_engine base;
	struct rs_model *model;
	struct rs_engine *engine;
	struct rs_kv_cache *kv;
	uint32_t block_size;
	uint32_t max_batch_tokens;
	void *vocab; /* serialized tokenizer for the shared segment */
	struct rs_seq_step *steps; /* per-step scratch, max_batch entries */
};

/* What a request holds in the engine: its blocks. */
struct sequence {
	uint32_t n_blocks;
	uint32_t blocks[];
};

static uint32_t blocks_for(const struct model_engine *engine, uint64_t positions)
{
	return (uint32_t)((positions + engine->block_size - 1) / engine->block_size);
}

static void free_sequence(struct model_engine *engine, struct sequence *sequence, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		rs_kv_block_unref(engine->kv, sequence->blocks[i]);
	free(sequence);
}

static int model_admit(struct rs_serving_engine *base, struct rs_request *request)
{
	struct model_engine *engine = (struct model_engine *)base;
	/* The last sampled token is never fed back, so it needs no KV position. */
	uint32_t needed = blocks_for(engine, (uint64_t)request->prompt_len + request->max_new_tokens - 1);
	if (needed > rs_kv_n_blocks(engine->kv))
		return -E2BIG; /* could never run, even alone */
	if (needed > rs_kv_free_count(engine->kv))
		return -EAGAIN;
	struct sequence *sequence = malloc(sizeof(*sequence) + needed * sizeof(uint32_t));
	if (!sequence)
		return -ENOMEM;
	for (uint32_t i = 0; i < needed; i++) {
		int block = rs_kv_block_alloc(engine->kv);
		if (block < 0) { /* cannot happen after the free count check, but be safe */
			free_sequence(engine, sequence, i);
			return -EAGAIN;
		}
		sequence->blocks[i] = (uint32_t)block;
	}
	sequence->n_blocks = needed;
	request->engine_state = sequence;
	request->prefilled = 0;
	return 0;
}

static int model_step_start(struct rs_serving_engine *base, uint32_t lane,
			    struct rs_request *const *requests, uint32_t n)
{
	struct model_engine *engine = (struct model_engine *)base;
	/* Decodes first (one token each), then prefill chunks in the remaining budget:
	 * a long prompt is split over steps instead of stalling everyone's decode. */
	uint32_t budget = engine->max_batch_tokens, n_steps = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct rs_request *r = requests[i];
		r->step_produced = false;
		if (r->prefilled == r->prompt_len)
			budget--;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct rs_request *r = requests[i];
		const struct sequence *sequence = r->engine_state;
		struct rs_seq_step *step = &engine->steps[n_steps];
		if (r->prefilled < r->prompt_len) {
			uint32_t chunk = r->prompt_len - r->prefilled;
			if (chunk > budget)
				chunk = budget;
			if (chunk == 0)
				continue; /* no room this step: it waits for the next */
			budget -= chunk;
			step->tokens = r->prompt + r->prefilled;
			step->n_tokens = chunk;
			step->start_pos = r->prefilled;
			r->prefilled += chunk;
			step->sample = r->prefilled == r->prompt_len;
		} else {
			step->tokens = &r->last_token;
			step->n_tokens = 1;
			step->start_pos = r->prompt_len + r->generated - 1;
			step->sample = 1;
		}
		step->block_table = sequence->blocks;
		step->n_blocks = sequence->n_blocks;
		step->sampling = (struct rs_sampling_params){
			.temperature = r->temperature, .top_k = r->top_k, .top_p = r->top_p, .seed = r->seed};
		step->out_token = &r->output[r->generated];
		r->step_produced = step->sample;
		n_steps++;
	}
	if (n_steps == 0)
		return 0;
	return rs_engine_step(engine->engine, lane, engine->steps, n_steps);
}

static int model_step_poll(struct rs_serving_engine *base, uint32_t lane)
{
	return rs_engine_step_poll(((struct model_engine *)base)->engine, lane);
}

static uint64_t model_step_deadline(struct rs_serving_engine *base, uint32_t lane)
{
	return 0; /* unknown: the scheduler polls */
}

static void model_release(struct rs_serving_engine *base, struct rs_request *request)
{
	struct model_engine *engine = (struct model_engine *)base;
	struct sequence *sequence = request->engine_state;
	if (sequence)
		free_sequence(engine, sequence, sequence->n_blocks);
	request->engine_state = NULL;
}

static int model_register(struct rs_serving_engine *base, void *ptr, size_t size)
{
	return rs_engine_register_host(((struct model_engine *)base)->engine, ptr, size);
}

static void model_unregister(struct rs_serving_engine *base, void *ptr)
{
	rs_engine_unregister_host(((struct model_engine *)base)->engine, ptr);
}

static void model_destroy(struct rs_serving_engine *base)
{
	struct model_engine *engine = (struct model_engine *)base;
	rs_engine_destroy(engine->engine);
	rs_model_free(engine->model);
	free(engine->vocab);
	free(engine->steps);
	free(engine);
}

static const struct rs_serving_engine_ops model_ops = {
	.admit = model_admit,
	.step_start = model_step_start,
	.step_poll = model_step_poll,
	.step_deadline_ns = model_step_deadline,
	.release = model_release,
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
	int ret = rs_model_load(options->model_path, options->tokenizer_path, &engine->model, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "ringserved: %s: %s\n", options->model_path, err);
		free(engine);
		return ret;
	}
	struct rs_engine_options engine_options;
	rs_engine_options_init(&engine_options);
	engine_options.backend = options->backend;
	engine_options.lanes = options->lanes;
	engine_options.kv_blocks = options->kv_blocks;
	engine_options.max_batch_tokens = options->max_batch_tokens;
	engine_options.threads = options->threads;
	ret = rs_engine_create(engine->model, &engine_options, &engine->engine, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "ringserved: engine: %s\n", err);
		goto fail;
	}
	if (err[0])
		fprintf(stderr, "ringserved: engine: %s\n", err);
	const struct rs_engine_options *resolved = rs_engine_options(engine->engine);
	const struct rs_model_config *config = rs_engine_config(engine->engine);
	engine->kv = rs_engine_kv(engine->engine);
	engine->block_size = rs_kv_block_size(engine->kv);
	engine->max_batch_tokens = resolved->max_batch_tokens;
	uint32_t max_batch = options->max_batch;
	if (max_batch > engine->max_batch_tokens)
		max_batch = engine->max_batch_tokens; /* every decode needs a token of budget */
	engine->steps = calloc(max_batch, sizeof(*engine->steps));
	if (!engine->steps) {
		ret = -ENOMEM;
		goto fail;
	}

	struct rs_serving_engine *base = &engine->base;
	base->ops = &model_ops;
	snprintf(base->name, sizeof(base->name), "%s", resolved->backend);
	const char *slash = strrchr(options->model_path, '/');
	snprintf(base->model_name, sizeof(base->model_name), "%s", slash ? slash + 1 : options->model_path);
	base->lanes = resolved->lanes;
	base->max_batch = max_batch;
	base->vocab_size = config->vocab_size;
	base->max_seq_len = config->max_seq_len;
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
	}
	*out = base;
	return 0;

fail:
	rs_engine_destroy(engine->engine);
	rs_model_free(engine->model);
	free(engine->vocab);
	free(engine->steps);
	free(engine);
	return ret;
}
