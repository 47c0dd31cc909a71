/* The scheduling core on a virtual clock, without a daemon:
 *   - every request gets exactly the null engine's tokens (checked with the harness's own
 *     implementation of the definition), finishes once, with or without the prefix cache,
 *     with KV blocks so few that running requests are preempted and recompute, with
 *     prompts chunked over steps, on one lane or three;
 *   - on the real CPU engine (a random model), greedy and seeded-sampling outputs are the
 *     same with the prefix cache and preemption as from a plain prefill-then-decode loop
 *     written here against kernels/engine/engine.h;
 *   - a multi-turn conversation's next prompt hits the blocks the first turn left, also
 *     when the completion is published (the publish hook) before the end's cache insert;
 *   - the idle-time KV reserve (rs_sched_idle) evicts in LRU order, never a locked block,
 *     counts what it evicts, and leaves every output exact when run between steps;
 *   - cancelling (waiting, between steps, during a step) and 1,000 client deaths give
 *     every request and KV block back, and leave no prefix locked.
 * After every step the prefix cache's invariants are checked. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/engine.h"
#include "daemon/sched/planner.h"
#include "daemon/sched/sched.h"
#include "kernels/engine/engine.h"
#include "kernels/model/model_random.h"
#include "tests/engine_test.h"
/* engine_test.h's CHECK counts failures and goes on; here a failure stops the test. */
#undef CHECK
#include "tests/harness/harness.h"

enum { MAX_REQUESTS = 256, MAX_SEQ = 256, VOCAB = 97 };

struct result {
	bool done;
	int finishes;
	int32_t status;
	uint32_t cached_tokens;
	uint32_t n_tokens;
	uint32_t tokens[MAX_SEQ];
	uint32_t published; /* tokens the token hook saw, in order */
	int publishes;	    /* publish hook calls */
	int32_t published_status;
	uint32_t nodes_at_publish, nodes_at_finish; /* prefix cache nodes at each hook */
};

struct world {
	struct rs_sched *sched;
	struct rs_request_pool pool;
	uint64_t clock_ns;
	struct result results[MAX_REQUESTS];
	struct rs_serving_engine *null_engine;
	struct rs_engine *engine; /* the CPU engine, when the test runs the model */
	uint32_t lanes;
	uint32_t hint;		 /* output_len_hint of the requests world_submit makes */
	bool idle_between_steps; /* rs_sched_idle after every step (the daemon's idle turns) */
};

static uint64_t world_now(void *ctx)
{
	return ((struct world *)ctx)->clock_ns;
}

static void world_token(void *ctx, struct rs_request *request)
{
	struct world *world = ctx;
	struct result *result = &world->results[request->user_data];
	CHECK(request->generated == result->published + 1, "token %u after %u published",
	      request->generated, result->published);
	result->published = request->generated;
}

static uint32_t world_cache_nodes(const struct world *world)
{
	struct rs_prefix_cache *cache = rs_sched_prefix_cache(world->sched);
	return cache ? rs_prefix_cache_nodes(cache) : 0;
}

static void world_publish(void *ctx, struct rs_request *request, int32_t status)
{
	struct world *world = ctx;
	struct result *result = &world->results[request->user_data];
	CHECK(!result->done, "request %llu published after its finish",
	      (unsigned long long)request->user_data);
	result->publishes++;
	result->published_status = status;
	result->nodes_at_publish = world_cache_nodes(world);
}

static void world_finish(void *ctx, struct rs_request *request, int32_t status)
{
	struct world *world = ctx;
	struct result *result = &world->results[request->user_data];
	result->nodes_at_finish = world_cache_nodes(world);
	result->finishes++;
	result->done = true;
	result->status = status;
	result->cached_tokens = request->cached_tokens;
	result->n_tokens = request->generated;
	memcpy(result->tokens, request->tokens + request->prompt_len,
	       request->generated * sizeof(uint32_t));
	rs_request_put(&world->pool, request);
}

struct world_options {
	uint32_t lanes, max_batch, max_batch_tokens, kv_blocks, block_size;
	bool prefix_cache;
	enum rs_admission_policy policy;
	const struct rs_model *model;	      /* NULL: the null engine */
	const struct rs_planner_ops *planner; /* NULL: continuous batching */
	struct rs_multibin_params multibin;
	bool publish;		    /* set the publish hook */
	uint32_t kv_reserve_blocks; /* config.kv_reserve_blocks */
	bool idle_between_steps;    /* rs_sched_idle after every step */
};

static void world_init(struct world *world, const struct world_options *options)
{
	memset(world, 0, sizeof(*world));
	world->clock_ns = 1000000000; /* 0 means "never" in the request's timings */
	world->lanes = options->lanes;
	world->idle_between_steps = options->idle_between_steps;
	struct rs_kv_cache *kv;
	if (options->model) {
		struct rs_engine_options engine_options;
		rs_engine_options_init(&engine_options);
		engine_options.backend = "cpu";
		engine_options.kv_blocks = options->kv_blocks;
		engine_options.block_size = options->block_size;
		engine_options.max_batch_tokens = options->max_batch_tokens;
		engine_options.lanes = options->lanes;
		engine_options.threads = 2;
		char err[200];
		int ret = rs_engine_create(options->model, &engine_options, &world->engine, err,
					   sizeof(err));
		CHECK(ret == 0, "engine: %s", err);
		kv = rs_engine_kv(world->engine);
	} else {
		struct rs_null_engine_options null_options = {.vocab_size = VOCAB,
							      .lanes = options->lanes,
							      .max_batch = options->max_batch,
							      .kv_blocks = options->kv_blocks,
							      .block_size = options->block_size,
							      .max_batch_tokens =
								  options->max_batch_tokens};
		CHECK(rs_null_engine_create(&null_options, &world->null_engine) == 0,
		      "null engine");
		kv = world->null_engine->kv;
	}
	struct rs_sched_config config = {
	    .lanes = options->lanes,
	    .max_batch = options->max_batch,
	    .max_batch_tokens = options->max_batch_tokens,
	    .max_tenants = 8,
	    .vocab_size = VOCAB,
	    .eos_token = UINT32_MAX,
	    .prefix_cache = options->prefix_cache,
	    .kv_reserve_blocks = options->kv_reserve_blocks,
	    .admission = {.policy = options->policy},
	    .planner = options->planner,
	    .multibin = options->multibin,
	};
	struct rs_sched_hooks hooks = {.now_ns = world_now,
				       .token = world_token,
				       .finish = world_finish,
				       .publish = options->publish ? world_publish : NULL,
				       .ctx = world};
	CHECK(rs_sched_create(&config, kv, &hooks, &world->sched) == 0, "sched");
	CHECK(rs_request_pool_init(&world->pool, MAX_REQUESTS) == 0, "pool");
}

static void world_destroy(struct world *world)
{
	CHECK(!rs_sched_busy(world->sched), "requests left");
	CHECK(world->pool.in_use == 0, "%u requests not given back", world->pool.in_use);
	struct rs_kv_cache *kv = rs_sched_kv(world->sched);
	struct rs_prefix_cache *cache = rs_sched_prefix_cache(world->sched);
	uint32_t cached = cache ? rs_prefix_cache_nodes(cache) : 0;
	CHECK(!cache || rs_prefix_cache_locked_nodes(cache) == 0, "locked prefixes left");
	CHECK(rs_kv_free_count(kv) + cached == rs_kv_n_blocks(kv),
	      "KV blocks leaked: %u free + %u cached of %u", rs_kv_free_count(kv), cached,
	      rs_kv_n_blocks(kv));
	rs_sched_destroy(world->sched);
	CHECK(rs_kv_free_count(kv) == rs_kv_n_blocks(kv), "the cache kept blocks after destroy");
	rs_request_pool_destroy(&world->pool);
	if (world->null_engine)
		world->null_engine->ops->destroy(world->null_engine);
	rs_engine_destroy(world->engine);
}

static struct rs_request *world_submit(struct world *world, struct rs_tenant *tenant, uint32_t id,
				       const uint32_t *prompt, uint32_t prompt_len,
				       uint32_t max_new, float temperature, uint64_t seed)
{
	struct rs_request *request = rs_request_get(&world->pool);
	CHECK(request, "pool exhausted");
	CHECK(rs_request_reserve(request, prompt_len, max_new,
				 rs_kv_block_size(rs_sched_kv(world->sched))) == 0,
	      "reserve");
	memcpy(request->tokens, prompt, prompt_len * sizeof(uint32_t));
	request->tenant = tenant;
	request->user_data = id;
	request->temperature = temperature;
	request->top_p = temperature > 0 ? 0.9f : 1.0f;
	request->seed = seed;
	request->output_len_hint = world->hint;
	memset(&world->results[id], 0, sizeof(world->results[id]));
	CHECK(rs_sched_submit(world->sched, request) == 0, "submit %u", id);
	return request;
}

/* Plan and run one step on every lane; returns the steps run. */
static int world_step(struct world *world)
{
	int steps = 0;
	for (uint32_t lane = 0; lane < world->lanes; lane++) {
		const struct rs_step_plan *plan = rs_sched_plan_step(world->sched, lane);
		if (!plan)
			continue;
		int status;
		if (world->engine) {
			status = rs_engine_step(world->engine, lane, plan->steps, plan->n);
			if (status == 0)
				status = rs_engine_step_wait(world->engine, lane);
		} else {
			status =
			    world->null_engine->ops->step_start(world->null_engine, lane, plan);
			while (status == 0 &&
			       world->null_engine->ops->step_poll(world->null_engine, lane) == 0)
				;
		}
		CHECK(status == 0, "step: %d", status);
		rs_sched_step_done(world->sched, lane, 0);
		if (world->idle_between_steps)
			rs_sched_idle(world->sched);
		steps++;
		struct rs_prefix_cache *cache = rs_sched_prefix_cache(world->sched);
		CHECK(!cache || rs_prefix_cache_check(cache) == 0, "prefix cache invariants");
		CHECK(rs_sched_check(world->sched) == 0, "scheduling core invariants");
	}
	world->clock_ns += 1000000;
	return steps;
}

static void world_drain(struct world *world)
{
	for (int i = 0; rs_sched_busy(world->sched); i++) {
		CHECK(i < 100000, "the core does not drain");
		/* Nothing planned is fine only while the planner waits for a time of its own
		 * (a multi-bin batch's deadline), which the clock then reaches. */
		int steps = world_step(world);
		CHECK(steps > 0 || !rs_sched_busy(world->sched) ||
			  rs_sched_next_wakeup_ns(world->sched) != 0,
		      "busy, but nothing planned");
	}
}

/* A prompt: one of four shared prefixes of 20-70 tokens, then a private suffix. */
static uint32_t make_prompt(uint64_t *rng, uint32_t *prompt)
{
	static const uint32_t prefix_len[4] = {20, 37, 48, 70};
	uint32_t which = (uint32_t)(test_rand(rng) % 4);
	uint32_t len = prefix_len[which];
	for (uint32_t i = 0; i < len; i++)
		prompt[i] = (which * 31 + i * 7) % VOCAB;
	uint32_t suffix = 1 + (uint32_t)(test_rand(rng) % 20);
	for (uint32_t i = 0; i < suffix; i++)
		prompt[len++] = (uint32_t)(test_rand(rng) % VOCAB);
	return len;
}

static void test_null_outputs(const struct world_options *options, uint64_t seed)
{
	struct world *world = calloc(1, sizeof(*world));
	world_init(world, options);
	struct rs_tenant *tenants[3];
	for (int t = 0; t < 3; t++) {
		char name[8] = {(char)('a' + t), 0};
		tenants[t] = rs_sched_tenant_acquire(world->sched, 1000, name, 1.0 + t);
	}
	uint64_t rng = seed;
	uint32_t prompts[120][MAX_SEQ], lens[120], max_new[120];
	uint32_t submitted = 0;
	const uint32_t total = 120;
	while (submitted < total || rs_sched_busy(world->sched)) {
		/* Arrivals between steps: a burst first, then a few at a time. */
		uint32_t arrivals = submitted == 0 ? 40 : (uint32_t)(test_rand(&rng) % 4);
		for (uint32_t a = 0; a < arrivals && submitted < total; a++, submitted++) {
			lens[submitted] = make_prompt(&rng, prompts[submitted]);
			max_new[submitted] = 1 + (uint32_t)(test_rand(&rng) % 30);
			world_submit(world, tenants[submitted % 3], submitted, prompts[submitted],
				     lens[submitted], max_new[submitted], 0, 0);
		}
		world_step(world);
	}
	for (uint32_t id = 0; id < total; id++) {
		struct result *result = &world->results[id];
		CHECK(result->finishes == 1 && result->status == 0,
		      "request %u: %d finishes, status %d", id, result->finishes, result->status);
		CHECK(!options->publish ||
			  (result->publishes == 1 && result->published_status == result->status),
		      "request %u: published %d times, status %d", id, result->publishes,
		      result->published_status);
		CHECK(result->n_tokens == max_new[id] && result->published == max_new[id],
		      "request %u: %u tokens", id, result->n_tokens);
		for (uint32_t i = 0; i < max_new[id]; i++)
			CHECK(result->tokens[i] == test_null_token(prompts[id], lens[id], i, VOCAB),
			      "request %u token %u", id, i);
	}
	const struct rs_sched_stats *stats = rs_sched_stats(world->sched);
	if (options->prefix_cache)
		CHECK(stats->cached_tokens > 0, "shared prefixes never hit");
	else
		CHECK(stats->cached_tokens == 0, "hits without a cache");
	/* Tight KV: 120 requests over 12 blocks (2 or 3 contexts) must have preempted someone. */
	if (options->kv_blocks <= 12)
		CHECK(stats->preemptions > 0, "no preemption with %u blocks", options->kv_blocks);
	printf("  lanes %u, batch tokens %u, %u blocks, cache %s: %llu steps, %llu preemptions, "
	       "%llu of %llu prompt tokens cached\n",
	       options->lanes, options->max_batch_tokens, options->kv_blocks,
	       options->prefix_cache ? "on" : "off", (unsigned long long)stats->steps,
	       (unsigned long long)stats->preemptions, (unsigned long long)stats->cached_tokens,
	       (unsigned long long)stats->prompt_tokens);
	world_destroy(world);
	free(world);
}

/* The reference: one request alone, prefill then decode, with a block table of its own. */
static void reference_generate(struct rs_engine *engine, const uint32_t *prompt,
			       uint32_t prompt_len, uint32_t max_new, float temperature,
			       uint64_t seed, uint32_t *out)
{
	struct rs_kv_cache *kv = rs_engine_kv(engine);
	uint32_t table[64], n_blocks = rs_kv_blocks_for(prompt_len + max_new, rs_kv_block_size(kv));
	for (uint32_t i = 0; i < n_blocks; i++) {
		int block = rs_kv_block_alloc(kv);
		CHECK(block >= 0, "reference blocks");
		table[i] = (uint32_t)block;
	}
	struct rs_seq_step step = {
	    .tokens = prompt,
	    .n_tokens = prompt_len,
	    .start_pos = 0,
	    .block_table = table,
	    .n_blocks = n_blocks,
	    .sampling = {.temperature = temperature,
			 .top_p = temperature > 0 ? 0.9f : 1.0f,
			 .seed = seed},
	    .sample = 1,
	};
	for (uint32_t i = 0; i < max_new; i++) {
		step.out_token = &out[i];
		CHECK(rs_engine_step(engine, 0, &step, 1) == 0 &&
			  rs_engine_step_wait(engine, 0) == 0,
		      "step");
		step.start_pos += step.n_tokens;
		step.tokens = &out[i];
		step.n_tokens = 1;
	}
	for (uint32_t i = 0; i < n_blocks; i++)
		rs_kv_block_unref(kv, table[i]);
}

static void test_model_outputs(void)
{
	struct rs_model_config config = test_config();
	config.max_seq_len = 160;
	struct rs_model *model;
	CHECK(rs_model_random(&config, RS_DTYPE_F32, 7, false, &model) == 0, "model");
	enum { N = 24 };
	uint32_t prompts[N][MAX_SEQ], lens[N], max_new[N], expected[N][64];
	float temperature[N];
	uint64_t rng = 99;
	struct world_options reference_options = {.lanes = 1,
						  .max_batch = 1,
						  .max_batch_tokens = 256,
						  .kv_blocks = 64,
						  .block_size = 8,
						  .model = model};
	struct world *world = calloc(1, sizeof(*world));
	world_init(world, &reference_options);
	for (uint32_t id = 0; id < N; id++) {
		lens[id] = make_prompt(&rng, prompts[id]);
		max_new[id] = 5 + (uint32_t)(test_rand(&rng) % 30);
		temperature[id] = id % 2 ? 0.8f : 0.0f;
		reference_generate(world->engine, prompts[id], lens[id], max_new[id],
				   temperature[id], id, expected[id]);
	}
	world_destroy(world);

	/* Cache on and off; 24 blocks of 8 with 6 seats: preemption; 5-token chunks; then
	 * the multi-bin planner, static and continuous, on 1 and 2 lanes (3 bins of batches
	 * of 4; half the requests hint their length, the others are predicted). */
	for (int variant = 0; variant < 7; variant++) {
		bool multibin = variant >= 3;
		struct world_options options = {.lanes = variant == 2 || variant >= 5 ? 2 : 1,
						.max_batch = 6,
						.max_batch_tokens = variant == 1 ? 5 : 64,
						.kv_blocks = 24,
						.block_size = 8,
						.prefix_cache = variant != 1,
						.policy = RS_ADMISSION_DLPM,
						.model = model};
		if (multibin) {
			options.planner = &rs_planner_multibin;
			options.multibin =
			    (struct rs_multibin_params){.bins = 3,
							.batch = 4,
							.continuous = variant % 2 == 0,
							.deadline_ns = 3000000,
							.boundaries = {12, 24}};
		}
		world_init(world, &options);
		struct rs_tenant *tenant = rs_sched_tenant_acquire(world->sched, 1, "t", 1.0);
		for (uint32_t id = 0; id < N; id++) {
			/* Half the clients hint their exact output length. */
			world->hint = multibin && id % 2 ? max_new[id] : 0;
			world_submit(world, tenant, id, prompts[id], lens[id], max_new[id],
				     temperature[id], id);
		}
		world_drain(world);
		for (uint32_t id = 0; id < N; id++) {
			struct result *result = &world->results[id];
			CHECK(result->finishes == 1 && result->status == 0 &&
				  result->n_tokens == max_new[id],
			      "variant %d request %u", variant, id);
			CHECK(memcmp(result->tokens, expected[id],
				     max_new[id] * sizeof(uint32_t)) == 0,
			      "variant %d request %u (temperature %.1f): output differs from the "
			      "reference",
			      variant, id, (double)temperature[id]);
		}
		const struct rs_sched_stats *stats = rs_sched_stats(world->sched);
		CHECK(multibin || stats->preemptions > 0, "variant %d: no preemption", variant);
		CHECK(variant == 1 || stats->cached_tokens > 0, "variant %d: no cache hit",
		      variant);
		printf("  model, variant %d: %llu preemptions, %llu prompt tokens cached\n",
		       variant, (unsigned long long)stats->preemptions,
		       (unsigned long long)stats->cached_tokens);
		rs_sched_tenant_release(world->sched, tenant);
		world_destroy(world);
	}
	free(world);
	rs_model_free(model);
}

/* publish: with the publish hook, which must come before the end's cache insert (turn 1:
 * its prompt's 2 full blocks are cached after its first token, the third block, of its
 * answer, only after the publish) while turn 2 still hits all three. */
static void test_multi_turn(bool publish)
{
	struct world_options options = {.lanes = 1,
					.max_batch = 4,
					.max_batch_tokens = 64,
					.kv_blocks = 64,
					.block_size = 16,
					.prefix_cache = true,
					.policy = RS_ADMISSION_DLPM,
					.publish = publish};
	struct world *world = calloc(1, sizeof(*world));
	world_init(world, &options);
	struct rs_tenant *tenant = rs_sched_tenant_acquire(world->sched, 1, "chat", 1.0);
	uint32_t prompt[MAX_SEQ];
	for (uint32_t i = 0; i < 40; i++)
		prompt[i] = (i * 13 + 5) % VOCAB;
	world_submit(world, tenant, 0, prompt, 40, 20, 0, 0);
	world_drain(world);
	CHECK(world->results[0].cached_tokens == 0, "first turn hit an empty cache");
	if (publish)
		CHECK(world->results[0].publishes == 1 && world->results[0].nodes_at_publish == 2 &&
			  world->results[0].nodes_at_finish == 3,
		      "turn 1: %d publishes, %u nodes at the publish and %u at the finish, "
		      "expected 1, 2, 3",
		      world->results[0].publishes, world->results[0].nodes_at_publish,
		      world->results[0].nodes_at_finish);
	/* Turn 2: the first prompt, its answer, and a new question. K/V exists for positions
	 * 0..58 (the answer's last token was never fed): 3 full blocks of 16. */
	memcpy(prompt + 40, world->results[0].tokens, 20 * sizeof(uint32_t));
	for (uint32_t i = 60; i < 65; i++)
		prompt[i] = i % VOCAB;
	world_submit(world, tenant, 1, prompt, 65, 4, 0, 0);
	world_drain(world);
	CHECK(world->results[1].cached_tokens == 48, "second turn: %u cached, expected 48",
	      world->results[1].cached_tokens);
	for (uint32_t i = 0; i < 4; i++)
		CHECK(world->results[1].tokens[i] == test_null_token(prompt, 65, i, VOCAB),
		      "turn 2 token %u", i);
	rs_sched_tenant_release(world->sched, tenant);
	world_destroy(world);
	free(world);
}

/* A tenant with a KV share of 12 blocks among two without one: its running requests never
 * hold more (rs_sched_check after every step), its surplus requests wait parked without
 * holding up the others, and every output is still exact. A request that alone needs more
 * than the share is refused. */
static void test_kv_share(void)
{
	struct world_options options = {.lanes = 2,
					.max_batch = 8,
					.max_batch_tokens = 64,
					.kv_blocks = 4096,
					.block_size = 16,
					.prefix_cache = true,
					.policy = RS_ADMISSION_DLPM};
	struct world *world = calloc(1, sizeof(*world));
	world_init(world, &options);
	struct rs_tenant *capped = rs_sched_tenant_acquire(world->sched, 1, "capped", 1.0);
	struct rs_tenant *others[2] = {rs_sched_tenant_acquire(world->sched, 1, "x", 1.0),
				       rs_sched_tenant_acquire(world->sched, 1, "y", 1.0)};
	capped->max_kv_blocks = 12;
	uint32_t prompt[MAX_SEQ], prompts[90][MAX_SEQ], lens[90];
	for (uint32_t i = 0; i < 200; i++)
		prompt[i] = i % VOCAB;
	struct rs_request *big = rs_request_get(&world->pool);
	CHECK(rs_request_reserve(big, 190, 10, 16) == 0, "reserve");
	memcpy(big->tokens, prompt, 190 * sizeof(uint32_t));
	big->tenant = capped;
	CHECK(rs_sched_submit(world->sched, big) == -E2BIG,
	      "a request over the share alone is taken");
	rs_request_put(&world->pool, big);
	uint64_t rng = 11;
	for (uint32_t id = 0; id < 90; id++) {
		lens[id] = make_prompt(&rng, prompts[id]);
		world_submit(world, id % 3 ? others[id % 3 - 1] : capped, id, prompts[id], lens[id],
			     20, 0, 0);
	}
	bool parked_seen = false;
	while (rs_sched_busy(world->sched)) {
		parked_seen |= capped->parked_head != NULL;
		CHECK(world_step(world) > 0, "busy, but nothing planned");
	}
	CHECK(parked_seen, "the capped tenant never hit its share");
	for (uint32_t id = 0; id < 90; id++) {
		struct result *result = &world->results[id];
		CHECK(result->finishes == 1 && result->status == 0 && result->n_tokens == 20,
		      "request %u", id);
		for (uint32_t i = 0; i < 20; i++)
			CHECK(result->tokens[i] == test_null_token(prompts[id], lens[id], i, VOCAB),
			      "request %u token %u", id, i);
	}
	rs_sched_tenant_release(world->sched, capped);
	rs_sched_tenant_release(world->sched, others[0]);
	rs_sched_tenant_release(world->sched, others[1]);
	world_destroy(world);
	free(world);
}

/* A client that dies: its waiting, running and in-step requests are cancelled. */
static void test_cancel_and_deaths(void)
{
	struct world_options options = {.lanes = 1,
					.max_batch = 4,
					.max_batch_tokens = 32,
					.kv_blocks = 40,
					.block_size = 8,
					.prefix_cache = true,
					.policy = RS_ADMISSION_DLPM};
	struct world *world = calloc(1, sizeof(*world));
	world_init(world, &options);
	struct rs_tenant *survivor = rs_sched_tenant_acquire(world->sched, 1, "survivor", 1.0);
	uint64_t rng = 5;
	uint32_t prompt[MAX_SEQ];
	uint32_t next_id = 0;
	for (int death = 0; death < 1000; death++) {
		struct rs_tenant *dying = rs_sched_tenant_acquire(world->sched, 2, "dying", 1.0);
		struct rs_request *requests[8];
		uint32_t ids[8];
		for (int i = 0; i < 8; i++) {
			uint32_t len = make_prompt(&rng, prompt);
			ids[i] = next_id++ % (MAX_REQUESTS - 8);
			requests[i] = world_submit(world, dying, ids[i], prompt, len, 10, 0, 0);
		}
		uint32_t survivor_id = MAX_REQUESTS - 1 - (uint32_t)(death % 7);
		uint32_t survivor_len = make_prompt(&rng, prompt);
		world_submit(world, survivor, survivor_id, prompt, survivor_len, 3, 0, 0);
		uint32_t survivor_prompt[MAX_SEQ];
		memcpy(survivor_prompt, prompt, sizeof(prompt));
		/* A few steps, the last one left in flight: some requests wait, some run, some
		 * are in that step, some locked prefixes. */
		int steps = (int)(test_rand(&rng) % 4);
		for (int s = 0; s < steps; s++)
			world_step(world);
		const struct rs_step_plan *plan = rs_sched_plan_step(world->sched, 0);
		for (int i = 0; i < 8; i++)
			if (!world->results[ids[i]].done)
				rs_sched_cancel(world->sched, requests[i], -ECONNRESET);
		if (plan) {
			CHECK(world->null_engine->ops->step_start(world->null_engine, 0, plan) == 0,
			      "step");
			rs_sched_step_done(world->sched, 0, 0);
		}
		rs_sched_tenant_release(world->sched, dying);
		world_drain(world);
		for (int i = 0; i < 8; i++) {
			struct result *result = &world->results[ids[i]];
			CHECK(result->finishes == 1, "request %u finished %d times", ids[i],
			      result->finishes);
			CHECK(result->status == 0 || result->status == -ECONNRESET, "status %d",
			      result->status);
		}
		struct result *result = &world->results[survivor_id];
		CHECK(result->finishes == 1 && result->status == 0 && result->n_tokens == 3,
		      "the survivor failed");
		for (uint32_t i = 0; i < 3; i++)
			CHECK(result->tokens[i] ==
				  test_null_token(survivor_prompt, survivor_len, i, VOCAB),
			      "survivor token %u", i);
		CHECK(rs_prefix_cache_locked_nodes(rs_sched_prefix_cache(world->sched)) == 0,
		      "locks left");
		CHECK(world->pool.in_use == 0, "requests left");
	}
	rs_sched_tenant_release(world->sched, survivor);
	world_destroy(world);
	free(world);
}

/* An 8-token prompt (two blocks of 4) unique to `which`. */
static void idle_prompt(uint32_t which, uint32_t *prompt)
{
	for (uint32_t i = 0; i < 8; i++)
		prompt[i] = (which * 11 + i * 3 + 1) % VOCAB;
}

/* The reserve is refilled in LRU order: three prompts of two blocks each cached in the
 * order a, b, c, then a used again (a match); with 2 of 8 blocks free and a reserve of 3,
 * idle evicts one block: b's leaf, the least recently used unlocked leaf. */
static void test_idle_reserve_lru(void)
{
	struct world_options options = {.lanes = 1,
					.max_batch = 4,
					.max_batch_tokens = 64,
					.kv_blocks = 8,
					.block_size = 4,
					.prefix_cache = true,
					.policy = RS_ADMISSION_FCFS,
					.kv_reserve_blocks = 3};
	struct world *world = calloc(1, sizeof(*world));
	world_init(world, &options);
	struct rs_tenant *tenant = rs_sched_tenant_acquire(world->sched, 1, "t", 1.0);
	struct rs_prefix_cache *cache = rs_sched_prefix_cache(world->sched);
	struct rs_kv_cache *kv = rs_sched_kv(world->sched);
	uint32_t prompts[3][8];
	for (uint32_t r = 0; r < 3; r++) {
		idle_prompt(r, prompts[r]);
		world_submit(world, tenant, r, prompts[r], 8, 1, 0, 0);
		world_drain(world);
		/* 8 tokens computed (the one output token is never fed): two full blocks
		 * cached, the third block of its context freed. */
		CHECK(rs_prefix_cache_nodes(cache) == 2 * (r + 1), "after %u: %u nodes", r,
		      rs_prefix_cache_nodes(cache));
		if (r < 2) /* 6, then 4 free: the reserve holds, nothing to evict */
			CHECK(rs_sched_idle(world->sched) == 0, "idle evicted with %u free",
			      rs_kv_free_count(kv));
	}
	CHECK(rs_kv_free_count(kv) == 2, "%u free, expected 2", rs_kv_free_count(kv));
	uint32_t blocks[2];
	struct rs_prefix_node *deepest;
	CHECK(rs_prefix_cache_match(cache, prompts[0], 2, blocks, &deepest) == 2, "a's match");
	uint64_t evicted = rs_sched_stats(world->sched)->evicted_blocks;
	CHECK(rs_sched_idle(world->sched) == 1, "idle freed other than 1 block");
	CHECK(rs_sched_stats(world->sched)->evicted_blocks == evicted + 1, "evictions counted");
	CHECK(rs_kv_free_count(kv) == 3, "%u free after idle, expected 3", rs_kv_free_count(kv));
	CHECK(rs_prefix_cache_match_length(cache, prompts[0], 2) == 2 &&
		  rs_prefix_cache_match_length(cache, prompts[1], 2) == 1 &&
		  rs_prefix_cache_match_length(cache, prompts[2], 2) == 2,
	      "not b's leaf evicted: a %u, b %u, c %u blocks cached",
	      rs_prefix_cache_match_length(cache, prompts[0], 2),
	      rs_prefix_cache_match_length(cache, prompts[1], 2),
	      rs_prefix_cache_match_length(cache, prompts[2], 2));
	CHECK(rs_prefix_cache_check(cache) == 0, "prefix cache invariants");
	CHECK(rs_sched_idle(world->sched) == 0, "idle evicted with the reserve full");
	rs_sched_tenant_release(world->sched, tenant);
	world_destroy(world);
	free(world);
}

/* A reserve as large as the pool: idle evicts every unlocked node, never the prefix a
 * running request holds locked; that request still produces exactly its tokens. */
static void test_idle_reserve_locked(void)
{
	struct world_options options = {.lanes = 1,
					.max_batch = 4,
					.max_batch_tokens = 64,
					.kv_blocks = 8,
					.block_size = 4,
					.prefix_cache = true,
					.policy = RS_ADMISSION_DLPM,
					.kv_reserve_blocks = 8};
	struct world *world = calloc(1, sizeof(*world));
	world_init(world, &options);
	struct rs_tenant *tenant = rs_sched_tenant_acquire(world->sched, 1, "t", 1.0);
	struct rs_prefix_cache *cache = rs_sched_prefix_cache(world->sched);
	uint32_t prompts[3][8];
	for (uint32_t r = 0; r < 2; r++) {
		idle_prompt(r, prompts[r]);
		world_submit(world, tenant, r, prompts[r], 8, 1, 0, 0);
		world_drain(world);
	}
	idle_prompt(2, prompts[2]);
	world_submit(world, tenant, 2, prompts[2], 8, 3, 0, 0);
	/* Its prefill gives its first token: its prompt's two blocks cached and locked. */
	CHECK(world_step(world) == 1, "no step");
	CHECK(rs_prefix_cache_nodes(cache) == 6 && rs_prefix_cache_locked_nodes(cache) == 2,
	      "%u nodes, %u locked; expected 6, 2", rs_prefix_cache_nodes(cache),
	      rs_prefix_cache_locked_nodes(cache));
	/* The four unlocked nodes hold blocks no sequence uses: each eviction frees one. */
	CHECK(rs_sched_idle(world->sched) == 4, "idle did not free the 4 unlocked blocks");
	CHECK(rs_prefix_cache_nodes(cache) == 2 && rs_prefix_cache_locked_nodes(cache) == 2 &&
		  rs_prefix_cache_match_length(cache, prompts[2], 2) == 2,
	      "the locked prefix went: %u nodes, %u locked", rs_prefix_cache_nodes(cache),
	      rs_prefix_cache_locked_nodes(cache));
	CHECK(rs_prefix_cache_check(cache) == 0 && rs_sched_check(world->sched) == 0, "invariants");
	world_drain(world);
	struct result *result = &world->results[2];
	CHECK(result->finishes == 1 && result->status == 0 && result->n_tokens == 3,
	      "the locked request's end: %d finishes, status %d, %u tokens", result->finishes,
	      result->status, result->n_tokens);
	for (uint32_t i = 0; i < 3; i++)
		CHECK(result->tokens[i] == test_null_token(prompts[2], 8, i, VOCAB), "token %u", i);
	rs_sched_tenant_release(world->sched, tenant);
	world_destroy(world);
	free(world);
}

int main(void)
{
	for (int cache = 0; cache < 2; cache++) {
		struct world_options roomy = {.lanes = 1,
					      .max_batch = 8,
					      .max_batch_tokens = 512,
					      .kv_blocks = 4096,
					      .block_size = 16,
					      .prefix_cache = cache,
					      .policy = RS_ADMISSION_DLPM};
		test_null_outputs(&roomy, 1);
		struct world_options tight = roomy;
		tight.kv_blocks = 12;
		tight.max_batch_tokens = 7;
		test_null_outputs(&tight, 2);
		tight.lanes = 3;
		tight.max_batch_tokens = 40;
		tight.policy = RS_ADMISSION_VTC;
		test_null_outputs(&tight, 3);
		tight.policy = RS_ADMISSION_FCFS;
		test_null_outputs(&tight, 4);
		tight.policy = RS_ADMISSION_LPM;
		test_null_outputs(&tight, 5);
	}
	test_multi_turn(false);
	test_multi_turn(true);
	test_idle_reserve_lru();
	test_idle_reserve_locked();
	/* The daemon's finish split and idle evictions, under every policy in a tight pool:
	 * outputs exact, one publish per finish, invariants after every step. */
	for (int policy = 0; policy < 4; policy++) {
		static const enum rs_admission_policy policies[4] = {
		    RS_ADMISSION_DLPM, RS_ADMISSION_FCFS, RS_ADMISSION_LPM, RS_ADMISSION_VTC};
		struct world_options idle = {.lanes = 2,
					     .max_batch = 8,
					     .max_batch_tokens = 40,
					     .kv_blocks = 24,
					     .block_size = 16,
					     .prefix_cache = true,
					     .policy = policies[policy],
					     .publish = true,
					     .kv_reserve_blocks = 4,
					     .idle_between_steps = true};
		test_null_outputs(&idle, 6 + (uint64_t)policy);
	}
	test_kv_share();
	test_cancel_and_deaths();
	test_model_outputs();
	printf("ok\n");
	return 0;
}
