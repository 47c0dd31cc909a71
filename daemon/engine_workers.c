/* Workers: one serving engine over several engine instances (engine.h), lane ranges
 * mapped onto them. The scheduling core gets every instance's KV pool (sched.h's
 * workers); the data path sees one engine with workers x lanes lanes. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine.h"
#include "kernels/engine/kv_cache.h"

struct workers_engine {
	struct rs_serving_engine base;
	struct rs_serving_engine **engines;
	struct rs_kv_cache **kvs;
	uint32_t n, lanes_each;
};

static struct rs_serving_engine *engine_of(struct rs_serving_engine *base, uint32_t *lane)
{
	struct workers_engine *w = (struct workers_engine *)base;
	struct rs_serving_engine *engine = w->engines[*lane / w->lanes_each];
	*lane %= w->lanes_each;
	return engine;
}

static int workers_step_start(struct rs_serving_engine *base, uint32_t lane,
			      const struct rs_step_plan *plan)
{
	struct rs_serving_engine *engine = engine_of(base, &lane);
	return engine->ops->step_start(engine, lane, plan);
}

static int workers_step_poll(struct rs_serving_engine *base, uint32_t lane)
{
	struct rs_serving_engine *engine = engine_of(base, &lane);
	return engine->ops->step_poll(engine, lane);
}

static uint64_t workers_step_deadline(struct rs_serving_engine *base, uint32_t lane)
{
	struct rs_serving_engine *engine = engine_of(base, &lane);
	return engine->ops->step_deadline_ns(engine, lane);
}

static int workers_step_fd(struct rs_serving_engine *base, uint32_t lane)
{
	struct rs_serving_engine *engine = engine_of(base, &lane);
	return engine->ops->step_fd ? engine->ops->step_fd(engine, lane) : -1;
}

static int workers_register(struct rs_serving_engine *base, void *ptr, size_t size)
{
	struct workers_engine *w = (struct workers_engine *)base;
	for (uint32_t i = 0; i < w->n; i++) {
		struct rs_serving_engine *engine = w->engines[i];
		int ret = engine->ops->register_memory
			      ? engine->ops->register_memory(engine, ptr, size)
			      : 0;
		if (ret < 0) {
			while (i-- > 0)
				if (w->engines[i]->ops->unregister_memory)
					w->engines[i]->ops->unregister_memory(w->engines[i], ptr);
			return ret;
		}
	}
	return 0;
}

static void workers_unregister(struct rs_serving_engine *base, void *ptr)
{
	struct workers_engine *w = (struct workers_engine *)base;
	for (uint32_t i = 0; i < w->n; i++)
		if (w->engines[i]->ops->unregister_memory)
			w->engines[i]->ops->unregister_memory(w->engines[i], ptr);
}

static void destroy_all(struct rs_serving_engine **engines, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (engines[i])
			engines[i]->ops->destroy(engines[i]);
}

static void workers_destroy(struct rs_serving_engine *base)
{
	struct workers_engine *w = (struct workers_engine *)base;
	destroy_all(w->engines, w->n);
	free(w->engines);
	free(w->kvs);
	free(w);
}

static const struct rs_serving_engine_ops workers_ops = {
    .step_start = workers_step_start,
    .step_poll = workers_step_poll,
    .step_deadline_ns = workers_step_deadline,
    .step_fd = workers_step_fd,
    .register_memory = workers_register,
    .unregister_memory = workers_unregister,
    .destroy = workers_destroy,
};

int rs_workers_engine_create(struct rs_serving_engine **engines, uint32_t n,
			     struct rs_serving_engine **out)
{
	const struct rs_serving_engine *first = n ? engines[0] : NULL;
	bool same = n > 0 && n <= 256;
	for (uint32_t i = 1; same && i < n; i++) {
		const struct rs_serving_engine *e = engines[i];
		same = e->lanes == first->lanes && e->max_batch == first->max_batch &&
		       e->vocab_size == first->vocab_size && e->eos_token == first->eos_token &&
		       e->max_batch_tokens == first->max_batch_tokens &&
		       rs_kv_block_size(e->kv) == rs_kv_block_size(first->kv);
	}
	if (!same) {
		destroy_all(engines, n);
		return -EINVAL;
	}
	struct workers_engine *w = calloc(1, sizeof(*w));
	if (w) {
		w->engines = calloc(n, sizeof(*w->engines));
		w->kvs = calloc(n, sizeof(*w->kvs));
	}
	if (!w || !w->engines || !w->kvs) {
		if (w) {
			free(w->engines);
			free(w->kvs);
		}
		free(w);
		destroy_all(engines, n);
		return -ENOMEM;
	}
	w->n = n;
	w->lanes_each = first->lanes;
	for (uint32_t i = 0; i < n; i++) {
		w->engines[i] = engines[i];
		w->kvs[i] = engines[i]->kv;
	}
	w->base = *first; /* name, model, shape, vocabulary: the first instance's */
	w->base.ops = &workers_ops;
	w->base.lanes = n * first->lanes;
	w->base.kv = first->kv;
	w->base.workers = n;
	w->base.worker_kv = w->kvs;
	w->base.impl = w;
	*out = &w->base;
	return 0;
}
