/* Sampling: greedy is argmax (ties to the lowest id), top-k 1 is greedy, the procedure
 * matches an independent implementation of sampling.h's specification (on coarse logits
 * full of ties and on wide ones of both signs), NaN logits rank last, empirical
 * distributions match softmax (chi-square), top-k and top-p never leave their set, and
 * in the engine the same seed gives the same tokens alone and batched while different
 * seeds differ. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/engine/engine.h"
#include "kernels/model/model_random.h"
#include "kernels/engine/sampling.h"
#include "tests/engine_test.h"

static void *scratch;

/* The specification of sampling.h, written again plainly (sort by selection). */
static uint32_t spec_sample(const float *logits, uint32_t n, const struct rs_sampling_params *p,
			    double u)
{
	uint32_t *order = malloc(n * sizeof(uint32_t));
	for (uint32_t i = 0; i < n; i++)
		order[i] = i;
	for (uint32_t i = 0; i < n; i++) /* selection sort: descending logit, ascending id */
		for (uint32_t j = i + 1; j < n; j++)
			if (logits[order[j]] > logits[order[i]] ||
			    (logits[order[j]] == logits[order[i]] && order[j] < order[i])) {
				uint32_t t = order[i];
				order[i] = order[j];
				order[j] = t;
			}
	uint32_t result;
	if (!(p->temperature > 0) || p->top_k == 1) {
		result = order[0];
		free(order);
		return result;
	}
	uint32_t m = p->top_k && p->top_k < n ? p->top_k : n;
	double *w = malloc(m * sizeof(double)), total = 0;
	for (uint32_t i = 0; i < m; i++)
		total += w[i] = exp(((double)logits[order[i]] - logits[order[0]]) / p->temperature);
	if (p->top_p > 0 && p->top_p < 1) {
		double sum = 0;
		uint32_t keep = 0;
		while (keep < m && sum < p->top_p * total)
			sum += w[keep++];
		m = keep;
		total = sum;
	}
	double sum = 0;
	result = order[m - 1];
	for (uint32_t i = 0; i < m; i++) {
		sum += w[i];
		if (sum > u * total) {
			result = order[i];
			break;
		}
	}
	free(w);
	free(order);
	return result;
}

static void test_greedy_and_spec(void)
{
	uint64_t s = 1;
	enum { N = 200 };
	float logits[N];
	for (int trial = 0; trial < 300; trial++) {
		for (int i = 0; i < N; i++) /* coarse values: many exact ties */
			logits[i] = (float)(int)(test_uniform(&s) * 6);
		uint32_t want = 0;
		for (uint32_t i = 1; i < N; i++)
			if (logits[i] > logits[want])
				want = i;
		struct rs_sampling_params greedy = {.temperature = 0.0f, .seed = (uint64_t)trial};
		CHECK(rs_sample(logits, N, &greedy, (uint64_t)trial, scratch) == want, "greedy");
		CHECK(rs_argmax(logits, N) == want, "argmax");
		struct rs_sampling_params k1 = {.temperature = 1.5f, .top_k = 1, .seed = 9};
		CHECK(rs_sample(logits, N, &k1, (uint64_t)trial, scratch) == want, "top-k 1");

		/* Any parameters: the implementation follows the specification exactly. */
		for (int i = 0; i < N; i++)
			logits[i] = (float)(test_uniform(&s) * 4);
		logits[trial % N] = logits[(trial * 7) % N]; /* a tie */
		struct rs_sampling_params p = {
			.temperature = (float)(0.1 + 2 * (test_uniform(&s) + 1)),
			.top_k = trial % 3 == 0 ? 0 : (uint32_t)(test_rand(&s) % (N + 20)),
			.top_p = trial % 2 ? (float)((test_uniform(&s) + 1) / 2) : 1.0f,
			.seed = test_rand(&s),
		};
		uint64_t pos = test_rand(&s) % 4096;
		uint32_t got = rs_sample(logits, N, &p, pos, scratch);
		uint32_t spec = spec_sample(logits, N, &p, rs_sample_uniform(p.seed, pos));
		CHECK(got == spec, "trial %d: sample %u, specification %u (T %g k %u p %g)", trial, got,
		      spec, p.temperature, p.top_k, p.top_p);
	}
}

/* A larger vocabulary whose logits span many exponents, both signs and both zeros (the
 * sort's every digit matters, and -0 ties with +0), against the specification, with
 * top-k below and above the insertion path's limit and none; and NaN logits rank below
 * every number, so a top-k that numbers can fill never draws one. */
static void test_wide_logits(void)
{
	uint64_t s = 5;
	enum { N = 1000 };
	static float logits[N];
	for (int trial = 0; trial < 40; trial++) {
		/* 2^-30 .. 2^2: every byte of the keys varies, and the weights exp((l - max) /
		 * T) stay large enough that the sampled token depends on the whole order. */
		for (int i = 0; i < N; i++) {
			double mag = pow(2.0, test_uniform(&s) * 16 - 14);
			logits[i] = (float)(test_uniform(&s) < 0 ? -mag : mag);
		}
		for (int i = 0; i < 12; i++) /* ties, and signed zeros that tie */
			logits[test_rand(&s) % N] = i % 3 == 0 ? 0.0f : i % 3 == 1 ? -0.0f : logits[i];
		static const uint32_t top_ks[] = {0, 7, 64, 65, 300};
		struct rs_sampling_params p = {
			.temperature = (float)(1 + (test_uniform(&s) + 1)),
			.top_k = top_ks[trial % 5],
			.top_p = trial % 2 ? 0.9f : 1.0f,
			.seed = test_rand(&s),
		};
		for (uint64_t pos = 0; pos < 5; pos++) {
			uint32_t got = rs_sample(logits, N, &p, pos, scratch);
			uint32_t spec = spec_sample(logits, N, &p, rs_sample_uniform(p.seed, pos));
			CHECK(got == spec, "wide trial %d pos %llu: sample %u, specification %u (k %u)",
			      trial, (unsigned long long)pos, got, spec, p.top_k);
		}
	}
	/* Only zeros of both signs: all tie, so the order is the ids' (sorted, and by the
	 * insertion path of a small top-k). */
	for (int i = 0; i < 100; i++)
		logits[i] = i % 3 ? -0.0f : 0.0f;
	for (int k = 0; k < 2; k++) {
		struct rs_sampling_params flat = {.temperature = 1.0f, .top_k = k ? 40 : 0, .seed = 8};
		for (uint64_t pos = 0; pos < 100; pos++)
			CHECK(rs_sample(logits, 100, &flat, pos, scratch) ==
				  spec_sample(logits, 100, &flat, rs_sample_uniform(flat.seed, pos)),
			      "signed zeros, top-k %u, position %llu", flat.top_k,
			      (unsigned long long)pos);
	}
	/* NaNs (at the lowest ids) rank last: with a top-k that numbers fill, the draws are
	 * the specification's for the same logits with -inf in place of the NaNs. */
	static float no_nan[N];
	for (int i = 0; i < N; i++) {
		logits[i] = i < 20 ? (i % 2 ? NAN : -NAN) : (float)(test_uniform(&s) * 3);
		no_nan[i] = i < 20 ? -INFINITY : logits[i];
	}
	for (int k = 0; k < 2; k++) {
		struct rs_sampling_params p = {.temperature = 5.0f, .top_k = k ? 500 : 30, .seed = 3};
		for (uint64_t pos = 0; pos < 200; pos++) {
			uint32_t got = rs_sample(logits, N, &p, pos, scratch);
			uint32_t spec = spec_sample(no_nan, N, &p, rs_sample_uniform(p.seed, pos));
			CHECK(got == spec, "NaN logits, top-k %u: sample %u, specification %u", p.top_k,
			      got, spec);
		}
	}
}

static void test_uniform_numbers(void)
{
	double sum = 0;
	int buckets[10] = {0};
	for (uint64_t pos = 0; pos < 100000; pos++) {
		double u = rs_sample_uniform(12345, pos);
		CHECK(u >= 0.0 && u < 1.0, "u = %g", u);
		sum += u;
		buckets[(int)(u * 10)]++;
	}
	CHECK(fabs(sum / 100000 - 0.5) < 0.01, "mean %g", sum / 100000);
	for (int b = 0; b < 10; b++)
		CHECK(abs(buckets[b] - 10000) < 600, "bucket %d: %d", b, buckets[b]);
	/* Stateless: the same (seed, position) gives the same number after other calls. */
	double u15 = rs_sample_uniform(1, 5);
	for (uint64_t pos = 0; pos < 100; pos++)
		(void)rs_sample_uniform(pos, pos + 1);
	CHECK(rs_sample_uniform(1, 5) == u15, "stateless");
	CHECK(rs_sample_uniform(1, 5) != rs_sample_uniform(2, 5), "seed matters");
	CHECK(rs_sample_uniform(1, 5) != rs_sample_uniform(1, 6), "position matters");
}

/* Draw `draws` tokens (positions 0..draws-1) and compare counts with the expected
 * probabilities by chi-square; tokens with probability 0 must never appear. */
static void check_distribution(const char *name, const float *logits, uint32_t n,
			       const struct rs_sampling_params *p, const double *expect, int draws)
{
	int counts[16] = {0};
	for (int d = 0; d < draws; d++)
		counts[rs_sample(logits, n, p, (uint64_t)d, scratch)]++;
	double chi2 = 0;
	int df = -1;
	for (uint32_t i = 0; i < n; i++) {
		if (expect[i] == 0) {
			CHECK(counts[i] == 0, "%s: token %u outside the allowed set drawn %d times", name, i,
			      counts[i]);
			continue;
		}
		double e = expect[i] * draws;
		chi2 += (counts[i] - e) * (counts[i] - e) / e;
		df++;
	}
	/* The 1e-6 upper quantile of chi-square is below 5 * df + 30 for df <= 15. */
	CHECK(chi2 < 5.0 * df + 30, "%s: chi-square %.1f with %d degrees of freedom", name, chi2, df);
	printf("%-26s chi-square %6.2f (df %d)\n", name, chi2, df);
}

static void test_distributions(void)
{
	const uint32_t n = 10;
	float logits[10] = {1.0f, 2.5f, 0.3f, -1.0f, 2.0f, 0.0f, 1.7f, -0.5f, 0.9f, 2.2f};
	double expect[10];
	const int draws = 200000;
	for (int t = 0; t < 3; t++) {
		float temp = t == 0 ? 1.0f : t == 1 ? 0.5f : 2.0f;
		double z = 0;
		for (uint32_t i = 0; i < n; i++)
			z += exp(logits[i] / temp);
		for (uint32_t i = 0; i < n; i++)
			expect[i] = exp(logits[i] / temp) / z;
		struct rs_sampling_params p = {.temperature = temp, .seed = 77 + (uint64_t)t};
		check_distribution(t == 0 ? "temperature 1" : t == 1 ? "temperature 0.5" : "temperature 2",
				   logits, n, &p, expect, draws);
	}
	/* top-k 3 at temperature 1: tokens 1 (2.5), 9 (2.2), 4 (2.0). */
	double z = exp(2.5) + exp(2.2) + exp(2.0);
	memset(expect, 0, sizeof(expect));
	expect[1] = exp(2.5) / z, expect[9] = exp(2.2) / z, expect[4] = exp(2.0) / z;
	struct rs_sampling_params k3 = {.temperature = 1.0f, .top_k = 3, .seed = 5};
	check_distribution("top-k 3", logits, n, &k3, expect, draws);

	/* top-p 0.6 at temperature 1: the nucleus is the smallest set of most likely tokens
	 * with mass >= 0.6, computed here from the softmax. */
	double full[10], zz = 0;
	for (uint32_t i = 0; i < n; i++)
		zz += full[i] = exp(logits[i]);
	uint32_t order[10] = {1, 9, 4, 6, 0, 8, 2, 5, 7, 3};
	double mass = 0, kept = 0;
	memset(expect, 0, sizeof(expect));
	for (uint32_t i = 0; i < n && mass < 0.6; i++) {
		mass += full[order[i]] / zz;
		expect[order[i]] = full[order[i]];
		kept += full[order[i]];
	}
	for (uint32_t i = 0; i < n; i++)
		expect[i] /= kept;
	struct rs_sampling_params p6 = {.temperature = 1.0f, .top_p = 0.6f, .seed = 6};
	check_distribution("top-p 0.6", logits, n, &p6, expect, draws);

	/* top-k and top-p together: top-k 5, then nucleus 0.5 of those. */
	memset(expect, 0, sizeof(expect));
	double z5 = 0;
	for (int i = 0; i < 5; i++)
		z5 += full[order[i]];
	mass = kept = 0;
	for (int i = 0; i < 5 && mass < 0.5; i++) {
		mass += full[order[i]] / z5;
		expect[order[i]] = full[order[i]];
		kept += full[order[i]];
	}
	for (uint32_t i = 0; i < n; i++)
		expect[i] /= kept;
	struct rs_sampling_params kp = {.temperature = 1.0f, .top_k = 5, .top_p = 0.5f, .seed = 7};
	check_distribution("top-k 5 + top-p 0.5", logits, n, &kp, expect, draws);
}

/* Generate GEN tokens for `count` copies of one prompt in a single batch, each copy with
 * its own seed, plus optional unrelated filler sequences. */
enum { GEN = 24, PROMPT = 9 };

static void generate(struct rs_engine *e, const uint32_t *prompt, const uint64_t *seeds,
		     uint32_t count, uint32_t fillers, uint32_t out[][GEN])
{
	uint32_t total = count + fillers, bs = rs_engine_options(e)->block_size;
	uint32_t n_blocks = rs_kv_blocks_for(PROMPT + GEN + 8, bs);
	uint32_t tables[8][8], last[8], filler_prompt[8][PROMPT + 8];
	for (uint32_t i = 0; i < total; i++)
		for (uint32_t b = 0; b < n_blocks; b++)
			tables[i][b] = (uint32_t)rs_kv_block_alloc(rs_engine_kv(e));
	for (uint32_t i = 0; i < fillers; i++)
		for (uint32_t j = 0; j < PROMPT + 8; j++)
			filler_prompt[i][j] = (i * 31 + j * 7) % rs_engine_config(e)->vocab_size;
	for (uint32_t k = 0; k <= GEN; k++) {
		struct rs_seq_step st[8];
		uint32_t filler_tok[8];
		for (uint32_t i = 0; i < total; i++) {
			int is_filler = i >= count;
			uint32_t plen = is_filler ? PROMPT + i : PROMPT;
			st[i] = (struct rs_seq_step){
				.block_table = tables[i], .n_blocks = n_blocks, .sample = 1,
				.out_token = &last[i],
				.sampling = {.temperature = 1.0f, .top_p = 0.95f,
					     .seed = is_filler ? 1000 + i : seeds[i]},
			};
			if (k == 0) {
				st[i].tokens = is_filler ? filler_prompt[i - count] : prompt;
				st[i].n_tokens = plen;
			} else {
				filler_tok[i] = last[i];
				st[i].tokens = is_filler ? &filler_tok[i] : &out[i][k - 1];
				st[i].n_tokens = 1;
				st[i].start_pos = plen + k - 1;
			}
		}
		if (k == GEN) /* the last sampled tokens are already in out */
			break;
		CHECK(rs_engine_step(e, 0, st, total) == 0, "step %u", k);
		CHECK(rs_engine_step_wait(e, 0) == 0, "wait %u", k); /* async backends */
		for (uint32_t i = 0; i < count; i++)
			out[i][k] = last[i];
	}
	for (uint32_t i = 0; i < total; i++)
		for (uint32_t b = 0; b < n_blocks; b++)
			rs_kv_block_unref(rs_engine_kv(e), tables[i][b]);
}

static void test_engine_seeds(void)
{
	struct rs_model_config cfg = test_config();
	struct rs_model *model = NULL;
	CHECK(rs_model_random(&cfg, RS_DTYPE_F32, 77, false, &model) == 0, "model");
	if (!model)
		return;
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = "cpu"; /* the CPU's spec; tests/engine_cuda.c holds CUDA to it */
	opts.kv_blocks = 128;
	opts.threads = 2;
	struct rs_engine *e = NULL;
	CHECK(rs_engine_create(model, &opts, &e, NULL, 0) == 0, "engine");
	if (!e) {
		rs_model_free(model);
		return;
	}
	uint32_t prompt[PROMPT] = {5, 17, 3, 90, 44, 2, 61, 8, 30};
	uint64_t seeds[4] = {11, 11, 12, 11};
	uint32_t alone[1][GEN], batch[4][GEN];
	generate(e, prompt, seeds, 1, 0, alone);
	generate(e, prompt, seeds, 4, 3, batch);
	CHECK(memcmp(alone[0], batch[0], sizeof(alone[0])) == 0, "seed 11 alone != batched");
	CHECK(memcmp(batch[0], batch[1], sizeof(batch[0])) == 0, "same seed, different tokens");
	CHECK(memcmp(batch[0], batch[3], sizeof(batch[0])) == 0, "same seed, different tokens");
	CHECK(memcmp(batch[0], batch[2], sizeof(batch[0])) != 0, "seeds 11 and 12 gave the same tokens");
	int distinct = 0, seen[128] = {0};
	for (int k = 0; k < GEN; k++)
		distinct += !seen[batch[0][k]]++;
	CHECK(distinct >= 5, "sampled output is nearly constant (%d distinct)", distinct);

	/* The engine samples position start_pos + n_tokens with the request's seed: the same
	 * token as rs_sample over the logits of the last position. */
	for (uint64_t seed = 0; seed < 20; seed++) {
		uint32_t t1[3], t2[3], got = 0;
		for (int b = 0; b < 3; b++) {
			t1[b] = (uint32_t)rs_kv_block_alloc(rs_engine_kv(e));
			t2[b] = (uint32_t)rs_kv_block_alloc(rs_engine_kv(e));
		}
		struct rs_seq_step st = {.tokens = prompt, .n_tokens = PROMPT, .block_table = t1,
					 .n_blocks = 3, .sample = 1, .out_token = &got,
					 .sampling = {.temperature = 3.0f, .seed = seed}};
		CHECK(rs_engine_step(e, 0, &st, 1) == 0, "step");
		float logits[PROMPT * 97];
		st.block_table = t2;
		CHECK(rs_engine_forward_logits(e, &st, 1, logits) == 0, "logits");
		uint32_t want = rs_sample(logits + (PROMPT - 1) * cfg.vocab_size, cfg.vocab_size,
					  &st.sampling, PROMPT, scratch);
		CHECK(got == want, "seed %llu: engine sampled %u, rs_sample %u",
		      (unsigned long long)seed, got, want);
		for (int b = 0; b < 3; b++) {
			rs_kv_block_unref(rs_engine_kv(e), t1[b]);
			rs_kv_block_unref(rs_engine_kv(e), t2[b]);
		}
	}
	rs_engine_destroy(e);
	rs_model_free(model);
}

int main(void)
{
	scratch = malloc(rs_sample_scratch_size(1000));
	test_greedy_and_spec();
	test_wide_logits();
	test_uniform_numbers();
	test_distributions();
	test_engine_seeds();
	free(scratch);
	TEST_END();
}
