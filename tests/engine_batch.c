/* Batching must not change results:
 *   - greedy output of each of 17 sequences of different lengths is the same alone and
 *     inside one batch that mixes their prefill chunks and decode steps;
 *   - a prompt prefilled in one step gives the logits of feeding it token by token;
 *   - scattered, shuffled KV blocks (block sizes 1, 3, 7, 16, 32) give the results of
 *     contiguous ones;
 *   - two sequences sharing full prefix blocks (refcount 2) give the results of two
 *     unshared sequences, and a step that would write into a shared block is refused. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/engine/engine.h"
#include "kernels/cpu/ops.h"
#include "kernels/model/model_random.h"
#include "tests/engine_test.h"

enum { MAX_BLOCKS = 512, GEN = 20 };

static struct rs_engine *make_engine(const struct rs_model *model, uint32_t block_size)
{
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = "cpu";
	opts.block_size = block_size;
	opts.kv_blocks = MAX_BLOCKS;
	opts.max_batch_tokens = 512;
	opts.threads = 2;
	struct rs_engine *engine = NULL;
	char err[200];
	int rc = rs_engine_create(model, &opts, &engine, err, sizeof(err));
	CHECK(rc == 0, "engine: %d %s", rc, err);
	if (rc)
		exit(1);
	return engine;
}

static void alloc_table(struct rs_engine *e, uint32_t *table, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		int b = rs_kv_block_alloc(rs_engine_kv(e));
		CHECK(b >= 0, "out of blocks");
		table[i] = b < 0 ? 0 : (uint32_t)b;
	}
}

static void free_table(struct rs_engine *e, const uint32_t *table, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		rs_kv_block_unref(rs_engine_kv(e), table[i]);
}

/* Gap between the best and second-best logit (how close argmax is to a tie). */
static float top_gap(const float *x, uint32_t n)
{
	uint32_t best = 0;
	for (uint32_t i = 1; i < n; i++)
		if (x[i] > x[best])
			best = i;
	float second = -INFINITY;
	for (uint32_t i = 0; i < n; i++)
		if (i != best && x[i] > second)
			second = x[i];
	return x[best] - second;
}

/* Greedy generation of one sequence alone, through logits: the reference for the batch.
 * Records the argmax gap of each generated token. */
static void generate_alone(struct rs_engine *e, const uint32_t *prompt, uint32_t n_prompt,
			   uint32_t *out, float *gaps)
{
	uint32_t vocab = rs_engine_config(e)->vocab_size, bs = rs_engine_options(e)->block_size;
	uint32_t n_blocks = rs_kv_blocks_for(n_prompt + GEN, bs), table[MAX_BLOCKS];
	float *logits = malloc(sizeof(float) * n_prompt * vocab);
	alloc_table(e, table, n_blocks);
	struct rs_seq_step step = {.tokens = prompt, .n_tokens = n_prompt, .block_table = table,
				   .n_blocks = n_blocks};
	CHECK(rs_engine_forward_logits(e, &step, 1, logits) == 0, "prefill alone");
	const float *last = logits + (size_t)(n_prompt - 1) * vocab;
	for (uint32_t k = 0; k < GEN; k++) {
		out[k] = rs_argmax(last, vocab);
		gaps[k] = top_gap(last, vocab);
		step = (struct rs_seq_step){.tokens = &out[k], .n_tokens = 1,
					    .start_pos = n_prompt + k, .block_table = table,
					    .n_blocks = n_blocks};
		CHECK(rs_engine_forward_logits(e, &step, 1, logits) == 0, "decode alone");
		last = logits;
	}
	free_table(e, table, n_blocks);
	free(logits);
}

/* Compare a batched greedy run with the one alone. A divergence is a failure unless the
 * alone run's choice was a near tie (fp32 summation order may legitimately differ with
 * the batch shape); then the rest of the sequence cannot be compared. */
static void compare_tokens(const char *what, int seq, const uint32_t *got, const uint32_t *want,
			   const float *gaps)
{
	for (uint32_t k = 0; k < GEN; k++) {
		if (got[k] == want[k])
			continue;
		if (gaps[k] < 1e-4f) {
			printf("%s: seq %d token %u: near tie (gap %g), stop comparing\n", what, seq, k,
			       gaps[k]);
			return;
		}
		CHECK(0, "%s: seq %d token %u: %u, alone %u (gap %g)", what, seq, k, got[k], want[k],
		      gaps[k]);
		return;
	}
}

struct batch_seq {
	uint32_t prompt[128];
	uint32_t n_prompt, join_step, done_prompt, n_out;
	uint32_t out[GEN], alone[GEN];
	float gaps[GEN];
	uint32_t table[MAX_BLOCKS], n_blocks;
	uint32_t sampled;
};

/* 17 sequences, joining at different steps, prefilling in chunks of at most 13 tokens
 * while the others decode: every step mixes prefill and decode. */
static void test_mixed_batch(const struct rs_model *model)
{
	struct rs_engine *e = make_engine(model, 16);
	uint32_t vocab = model->config.vocab_size;
	enum { N = 17 };
	static struct batch_seq seqs[N];
	uint64_t s = 5;
	for (int i = 0; i < N; i++) {
		struct batch_seq *q = &seqs[i];
		memset(q, 0, sizeof(*q));
		q->n_prompt = 1 + (uint32_t)(i * 37 % 60); /* 1 .. 60 tokens */
		q->join_step = (uint32_t)(i % 6);
		for (uint32_t j = 0; j < q->n_prompt; j++)
			q->prompt[j] = (uint32_t)(test_rand(&s) % vocab);
		generate_alone(e, q->prompt, q->n_prompt, q->alone, q->gaps);
	}
	CHECK(rs_kv_free_count(rs_engine_kv(e)) == MAX_BLOCKS, "alone runs leaked blocks");
	for (int i = 0; i < N; i++) {
		seqs[i].n_blocks = rs_kv_blocks_for(seqs[i].n_prompt + GEN, 16);
		alloc_table(e, seqs[i].table, seqs[i].n_blocks);
	}
	int mixed_steps = 0;
	for (uint32_t step_no = 0;; step_no++) {
		struct rs_seq_step steps[N];
		uint32_t n = 0, prefills = 0, decodes = 0;
		for (int i = 0; i < N; i++) {
			struct batch_seq *q = &seqs[i];
			if (step_no < q->join_step || q->n_out == GEN)
				continue;
			struct rs_seq_step *st = &steps[n++];
			memset(st, 0, sizeof(*st));
			st->block_table = q->table;
			st->n_blocks = q->n_blocks;
			st->sampling.temperature = 0.0f;
			st->out_token = &q->sampled;
			if (q->done_prompt < q->n_prompt) {
				uint32_t chunk = q->n_prompt - q->done_prompt;
				chunk = chunk > 13 ? 13 : chunk;
				st->tokens = q->prompt + q->done_prompt;
				st->n_tokens = chunk;
				st->start_pos = q->done_prompt;
				st->sample = q->done_prompt + chunk == q->n_prompt;
				prefills++;
			} else {
				st->tokens = &q->out[q->n_out - 1];
				st->n_tokens = 1;
				st->start_pos = q->n_prompt + q->n_out - 1;
				st->sample = 1;
				decodes++;
			}
		}
		if (!n)
			break;
		mixed_steps += prefills && decodes;
		int rc = rs_engine_step(e, 0, steps, n);
		CHECK(rc == 0, "step %u: %d", step_no, rc);
		CHECK(rs_engine_step_wait(e, 0) == 0, "wait");
		CHECK(rs_engine_step_poll(e, 0) == 1, "poll");
		if (rc)
			break;
		/* Advance: sequences are visited in the order the steps were built. */
		for (int i = 0, k = 0; i < N; i++) {
			struct batch_seq *q = &seqs[i];
			if (step_no < q->join_step || q->n_out == GEN)
				continue;
			struct rs_seq_step *st = &steps[k++];
			if (q->done_prompt < q->n_prompt)
				q->done_prompt += st->n_tokens;
			if (st->sample)
				q->out[q->n_out++] = q->sampled;
		}
	}
	CHECK(mixed_steps >= 3, "only %d steps mixed prefill and decode", mixed_steps);
	/* The outputs must be varied, or agreeing would prove little. */
	int distinct = 0, seen[1024] = {0};
	for (int i = 0; i < N; i++)
		for (int k = 0; k < GEN; k++)
			if (seqs[i].alone[k] < 1024 && !seen[seqs[i].alone[k]]++)
				distinct++;
	CHECK(distinct >= 10, "greedy outputs use only %d distinct tokens", distinct);
	for (int i = 0; i < N; i++) {
		compare_tokens("batch of 17", i, seqs[i].out, seqs[i].alone, seqs[i].gaps);
		free_table(e, seqs[i].table, seqs[i].n_blocks);
	}
	rs_engine_destroy(e);
	printf("mixed batch of 17: ok (%d mixed steps)\n", mixed_steps);
}

/* Logits of a prompt run as one step, token by token, and in uneven chunks. */
static void test_prefill_equals_incremental(const struct rs_model *model)
{
	struct rs_engine *e = make_engine(model, 16);
	uint32_t vocab = model->config.vocab_size, n = 45;
	uint32_t prompt[45], table[8], n_blocks = rs_kv_blocks_for(n, 16);
	uint64_t s = 77;
	for (uint32_t i = 0; i < n; i++)
		prompt[i] = (uint32_t)(test_rand(&s) % vocab);
	float *one = malloc(sizeof(float) * n * vocab), *inc = malloc(sizeof(float) * n * vocab);
	double *ref = malloc(sizeof(double) * n * vocab);
	alloc_table(e, table, n_blocks);
	struct rs_seq_step st = {.tokens = prompt, .n_tokens = n, .block_table = table,
				 .n_blocks = n_blocks};
	CHECK(rs_engine_forward_logits(e, &st, 1, one) == 0, "one step");
	for (size_t i = 0; i < (size_t)n * vocab; i++)
		ref[i] = one[i];
	for (uint32_t p = 0; p < n; p++) {
		st = (struct rs_seq_step){.tokens = prompt + p, .n_tokens = 1, .start_pos = p,
					  .block_table = table, .n_blocks = n_blocks};
		CHECK(rs_engine_forward_logits(e, &st, 1, inc + (size_t)p * vocab) == 0, "token %u", p);
	}
	check_close("token by token vs one step", inc, ref, (size_t)n * vocab, 1e-5, 1e-5);
	/* With our product kernels every output is one FMA chain whatever the rows around
	 * it (gemm.h), and every other op works token by token: the same bits. (CBLAS, on
	 * CPUs without them, promises no such thing.) */
	bool same_bits = rs_cpu_isa() != RS_ISA_PORTABLE;
	if (same_bits)
		CHECK(memcmp(inc, one, sizeof(float) * n * vocab) == 0,
		      "token by token: not the same bits as one step");
	uint32_t chunks[] = {1, 16, 2, 20, 6};
	for (uint32_t c = 0, p = 0; c < 5; p += chunks[c++]) {
		st = (struct rs_seq_step){.tokens = prompt + p, .n_tokens = chunks[c], .start_pos = p,
					  .block_table = table, .n_blocks = n_blocks};
		CHECK(rs_engine_forward_logits(e, &st, 1, inc + (size_t)p * vocab) == 0, "chunk %u", c);
	}
	check_close("chunks vs one step", inc, ref, (size_t)n * vocab, 1e-5, 1e-5);
	if (same_bits)
		CHECK(memcmp(inc, one, sizeof(float) * n * vocab) == 0,
		      "chunks: not the same bits as one step");
	free_table(e, table, n_blocks);
	free(one), free(inc), free(ref);
	rs_engine_destroy(e);
	printf("prefill == incremental: ok\n");
}

/* The same prompt through contiguous blocks and through scattered, shuffled ones. */
static void test_paged(const struct rs_model *model)
{
	uint32_t sizes[] = {1, 3, 7, 16, 32};
	uint32_t vocab = model->config.vocab_size, n = 70;
	uint32_t prompt[70];
	uint64_t s = 123;
	for (uint32_t i = 0; i < n; i++)
		prompt[i] = (uint32_t)(test_rand(&s) % vocab);
	float *a = malloc(sizeof(float) * n * vocab), *b = malloc(sizeof(float) * n * vocab);
	double *ref = malloc(sizeof(double) * n * vocab);
	double *first = malloc(sizeof(double) * n * vocab); /* logits with block size 1 */
	for (int c = 0; c < 5; c++) {
		uint32_t bs = sizes[c], n_blocks = rs_kv_blocks_for(n, bs);
		struct rs_engine *e = make_engine(model, bs);
		static uint32_t contiguous[MAX_BLOCKS], all[MAX_BLOCKS];
		/* A fresh allocator hands out 0, 1, 2, ...: a contiguous table. */
		alloc_table(e, contiguous, n_blocks);
		for (uint32_t i = 0; i < n_blocks; i++)
			CHECK(contiguous[i] == i, "fresh pool is not contiguous");
		struct rs_seq_step st = {.tokens = prompt, .n_tokens = 40, .block_table = contiguous,
					 .n_blocks = n_blocks};
		CHECK(rs_engine_forward_logits(e, &st, 1, a) == 0, "contiguous");
		st = (struct rs_seq_step){.tokens = prompt + 40, .n_tokens = n - 40, .start_pos = 40,
					  .block_table = contiguous, .n_blocks = n_blocks};
		CHECK(rs_engine_forward_logits(e, &st, 1, a + 40 * vocab) == 0, "contiguous 2");
		for (size_t i = 0; i < (size_t)n * vocab; i++)
			ref[i] = a[i];
		/* Across block sizes: different paging, the same math. */
		if (c == 0)
			memcpy(first, ref, sizeof(double) * n * vocab);
		else
			check_close("block size vs block size 1", a, first, (size_t)n * vocab, 1e-6,
				    1e-6);
		/* Take the rest of the pool, shuffle it, use a scattered subset. */
		uint32_t rest = MAX_BLOCKS - n_blocks;
		alloc_table(e, all, rest);
		for (uint32_t i = rest - 1; i > 0; i--) {
			uint32_t j = (uint32_t)(test_rand(&s) % (i + 1)), t = all[i];
			all[i] = all[j];
			all[j] = t;
		}
		st = (struct rs_seq_step){.tokens = prompt, .n_tokens = 40, .block_table = all,
					  .n_blocks = n_blocks};
		CHECK(rs_engine_forward_logits(e, &st, 1, b) == 0, "scattered");
		st = (struct rs_seq_step){.tokens = prompt + 40, .n_tokens = n - 40, .start_pos = 40,
					  .block_table = all, .n_blocks = n_blocks};
		CHECK(rs_engine_forward_logits(e, &st, 1, b + 40 * vocab) == 0, "scattered 2");
		check_close("paged scattered vs contiguous", b, ref, (size_t)n * vocab, 1e-6, 1e-6);
		free_table(e, contiguous, n_blocks);
		free_table(e, all, rest);
		rs_engine_destroy(e);
	}
	free(a), free(b), free(ref), free(first);
	printf("paged == contiguous: ok\n");
}

/* Sequence A = P + SA, sequence B = P + SB, P two full blocks. Unshared: each its own
 * blocks. Shared: B's table starts with A's two prefix blocks (refcount 2) and B
 * prefills only SB. Logits of B's suffix and both continuations must agree. */
static void test_shared_prefix(const struct rs_model *model)
{
	const uint32_t bs = 16, np = 32, ns = 11, n = np + ns;
	uint32_t vocab = model->config.vocab_size;
	uint32_t a_tok[43], b_tok[43];
	uint64_t s = 321;
	for (uint32_t i = 0; i < n; i++) {
		a_tok[i] = (uint32_t)(test_rand(&s) % vocab);
		b_tok[i] = i < np ? a_tok[i] : (uint32_t)(test_rand(&s) % vocab);
	}
	uint32_t n_blocks = rs_kv_blocks_for(n + GEN, bs);
	float *la = malloc(sizeof(float) * n * vocab), *lb = malloc(sizeof(float) * n * vocab);
	double *ref = malloc(sizeof(double) * n * vocab);
	uint32_t gen_unshared[2][GEN], gen_shared[2][GEN];

	for (int shared = 0; shared < 2; shared++) {
		struct rs_engine *e = make_engine(model, bs);
		struct rs_kv_cache *kv = rs_engine_kv(e);
		uint32_t ta[8], tb[8];
		alloc_table(e, ta, n_blocks);
		struct rs_seq_step st = {.tokens = a_tok, .n_tokens = n, .block_table = ta,
					 .n_blocks = n_blocks};
		CHECK(rs_engine_forward_logits(e, &st, 1, la) == 0, "A prefill");
		if (!shared) {
			alloc_table(e, tb, n_blocks);
			st = (struct rs_seq_step){.tokens = b_tok, .n_tokens = n, .block_table = tb,
						  .n_blocks = n_blocks};
			CHECK(rs_engine_forward_logits(e, &st, 1, lb) == 0, "B prefill");
			for (size_t i = 0; i < (size_t)n * vocab; i++)
				ref[i] = lb[i];
		} else {
			tb[0] = ta[0];
			tb[1] = ta[1];
			CHECK(rs_kv_block_ref(kv, ta[0]) == 2 && rs_kv_block_ref(kv, ta[1]) == 2,
			      "share prefix blocks");
			alloc_table(e, tb + 2, n_blocks - 2);
			/* Writing into a shared block is refused, and nothing is written. */
			st = (struct rs_seq_step){.tokens = b_tok + np - 1, .n_tokens = 2,
						  .start_pos = np - 1, .block_table = tb,
						  .n_blocks = n_blocks};
			CHECK(rs_engine_forward_logits(e, &st, 1, lb) == -EINVAL,
			      "write into a shared block accepted");
			st = (struct rs_seq_step){.tokens = b_tok + np, .n_tokens = ns, .start_pos = np,
						  .block_table = tb, .n_blocks = n_blocks};
			CHECK(rs_engine_forward_logits(e, &st, 1, lb + (size_t)np * vocab) == 0,
			      "B suffix");
			check_close("shared prefix: B suffix logits", lb + (size_t)np * vocab,
				    ref + (size_t)np * vocab, (size_t)ns * vocab, 1e-5, 1e-5);
		}
		/* Both continue greedily, batched together, from their last logits. */
		uint32_t *gen = shared ? gen_shared[0] : gen_unshared[0];
		uint32_t *gen_b = shared ? gen_shared[1] : gen_unshared[1];
		uint32_t next_a = rs_argmax(la + (size_t)(n - 1) * vocab, vocab);
		uint32_t next_b = rs_argmax(lb + (size_t)(n - 1) * vocab, vocab);
		for (uint32_t k = 0; k < GEN; k++) {
			gen[k] = next_a;
			gen_b[k] = next_b;
			struct rs_seq_step two[2] = {
				{.tokens = &gen[k], .n_tokens = 1, .start_pos = n + k, .block_table = ta,
				 .n_blocks = n_blocks, .sample = 1, .out_token = &next_a},
				{.tokens = &gen_b[k], .n_tokens = 1, .start_pos = n + k, .block_table = tb,
				 .n_blocks = n_blocks, .sample = 1, .out_token = &next_b},
			};
			CHECK(rs_engine_step(e, 0, two, 2) == 0, "decode pair");
		}
		free_table(e, ta, n_blocks);
		free_table(e, tb, n_blocks);
		CHECK(rs_kv_free_count(kv) == MAX_BLOCKS, "blocks leaked (shared %d)", shared);
		rs_engine_destroy(e);
	}
	CHECK(memcmp(gen_shared, gen_unshared, sizeof(gen_shared)) == 0,
	      "shared and unshared continuations differ");
	free(la), free(lb), free(ref);
	printf("shared prefix == unshared: ok\n");
}

int main(void)
{
	struct rs_model_config cfg = test_config();
	struct rs_model *model = NULL;
	if (rs_model_random(&cfg, RS_DTYPE_F32, 2024, false, &model)) {
		fprintf(stderr, "rs_model_random failed\n");
		return 1;
	}
	test_prefill_equals_incremental(model);
	test_paged(model);
	test_shared_prefix(model);
	test_mixed_batch(model);
	rs_model_free(model);
	TEST_END();
}
