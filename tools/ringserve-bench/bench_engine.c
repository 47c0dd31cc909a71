/* ringserve-bench engine [--threads N] [--decode-steps N] [--prompt N] [--kv f16|f32]
 *
 * Prefill and decode tokens/s of the CPU engine at batch 1, 8 and 32, on a random model of
 * the shape of stories15M (dim 288, hidden 768, 6 layers, 6 heads, vocab 32000, context
 * 256, tied output, f32) built in memory. Prefill: `prompt` tokens per sequence, in steps
 * of at most 1024 tokens. Decode: `decode-steps` steps of one token per sequence, greedy,
 * right after the prefill. The figure that matters for batching is decode(32)/decode(1):
 * a decode step reads every weight once whatever the batch, so it should grow with the
 * batch until compute, not memory, bounds it. The KV cache is f16 unless --kv f32 (the
 * engine's "auto" would keep f32 for these f32 weights): at batch 32 the attention
 * reading the cache moves more bytes than the weights.
 *
 * With a CUDA device, the same on the CUDA backend with a TinyLlama-1.1B-shaped f16 random
 * model (dim 2048, hidden 5632, 22 layers, 32 heads, 4 kv heads, vocab 32000, context
 * 2048), plus the device-to-device copy bandwidth measured in the same run (cudaMemcpyAsync
 * of 1 GiB timed with events; read + write bytes per second), and decode at batch 1 as a
 * fraction of its bandwidth bound: bandwidth / weight bytes read per token. Without a
 * device: "GPU: no device, skipped", and null GPU figures. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/engine.h"
#include "kernels/model_random.h"
#include "tools/ringserve-bench/bench.h"

#ifdef RS_HAVE_CUDA_BACKEND
#include <cuda_runtime_api.h>
#endif

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct result {
	uint32_t batch;
	double prefill_tok_s, decode_tok_s;
};

/* Prefill `batch` sequences then decode `steps` tokens each; 0 or -errno. */
static int run_batch(struct rs_engine *e, uint32_t batch, uint32_t prompt, uint32_t steps,
		     struct result *r)
{
	const struct rs_model_config *cfg = rs_engine_config(e);
	struct rs_kv_cache *kv = rs_engine_kv(e);
	uint32_t max_tokens = rs_engine_options(e)->max_batch_tokens;
	uint32_t n_blocks = rs_kv_blocks_for(prompt + steps, rs_engine_options(e)->block_size);
	uint32_t *tables = calloc((size_t)batch * n_blocks, sizeof(uint32_t));
	uint32_t *tokens = calloc((size_t)batch * prompt, sizeof(uint32_t));
	uint32_t *next = calloc(batch, sizeof(uint32_t)), *cur = calloc(batch, sizeof(uint32_t));
	struct rs_seq_step *st = calloc(batch, sizeof(*st));
	int rc = -ENOMEM;
	uint32_t allocated = 0;
	if (!tables || !tokens || !next || !cur || !st)
		goto out;
	for (; allocated < batch * n_blocks; allocated++) {
		int b = rs_kv_block_alloc(kv);
		if (b < 0) {
			rc = b;
			goto out;
		}
		tables[allocated] = (uint32_t)b;
	}
	uint64_t s = 0x9e3779b97f4a7c15ull * batch;
	for (size_t i = 0; i < (size_t)batch * prompt; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		tokens[i] = (uint32_t)((s >> 33) % cfg->vocab_size);
	}

	/* Prefill: whole prompts, as many sequences per step as fit in max_batch_tokens. */
	uint32_t per_step = max_tokens / prompt ? max_tokens / prompt : 1;
	double t0 = now_s();
	for (uint32_t first = 0; first < batch; first += per_step) {
		uint32_t n = batch - first < per_step ? batch - first : per_step;
		for (uint32_t i = 0; i < n; i++)
			st[i] = (struct rs_seq_step){
				.tokens = tokens + (size_t)(first + i) * prompt, .n_tokens = prompt,
				.block_table = tables + (size_t)(first + i) * n_blocks,
				.n_blocks = n_blocks, .sample = 1, .out_token = &next[first + i]};
		rc = rs_engine_step(e, 0, st, n);
		if (rc == 0)
			rc = rs_engine_step_wait(e, 0);
		if (rc)
			goto out;
	}
	double t1 = now_s();
	/* Decode: one step per token, every sequence in it. */
	for (uint32_t k = 0; k < steps; k++) {
		for (uint32_t i = 0; i < batch; i++) {
			cur[i] = next[i];
			st[i] = (struct rs_seq_step){.tokens = &cur[i], .n_tokens = 1,
						     .start_pos = prompt + k,
						     .block_table = tables + (size_t)i * n_blocks,
						     .n_blocks = n_blocks, .sample = 1,
						     .out_token = &next[i]};
		}
		rc = rs_engine_step(e, 0, st, batch);
		if (rc == 0)
			rc = rs_engine_step_wait(e, 0);
		if (rc)
			goto out;
	}
	double t2 = now_s();
	r->batch = batch;
	r->prefill_tok_s = (double)batch * prompt / (t1 - t0);
	r->decode_tok_s = (double)batch * steps / (t2 - t1);
out:
	for (uint32_t i = 0; i < allocated; i++)
		rs_kv_block_unref(kv, tables[i]);
	free(tables), free(tokens), free(next), free(cur), free(st);
	return rc;
}

#ifdef RS_HAVE_CUDA_BACKEND
/* Device-to-device copy bandwidth, read + write bytes per second; 0 on failure. */
static double copy_bandwidth(void)
{
	size_t bytes = (size_t)1 << 30;
	void *a = NULL, *b = NULL;
	cudaEvent_t start = NULL, stop = NULL;
	double bw = 0.0;
	if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess ||
	    cudaEventCreate(&start) != cudaSuccess || cudaEventCreate(&stop) != cudaSuccess)
		goto out;
	cudaMemset(a, 1, bytes);
	cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0); /* warm */
	enum { REPS = 5 };
	cudaEventRecord(start, 0);
	for (int i = 0; i < REPS; i++)
		cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, 0);
	cudaEventRecord(stop, 0);
	float ms = 0.0f;
	if (cudaEventSynchronize(stop) == cudaSuccess &&
	    cudaEventElapsedTime(&ms, start, stop) == cudaSuccess && ms > 0.0f)
		bw = 2.0 * (double)bytes * REPS / (ms * 1e-3);
out:
	cudaGetLastError();
	if (start)
		cudaEventDestroy(start);
	if (stop)
		cudaEventDestroy(stop);
	cudaFree(a);
	cudaFree(b);
	return bw;
}
#endif

/* Weight bytes a decode token reads: every layer matrix, the norms, the output matrix
 * (one embedding row is negligible). */
static double weight_bytes_per_token(const struct rs_model_config *c, double elem)
{
	double q_dim = (double)c->n_heads * c->head_dim, kv_dim = (double)c->n_kv_heads * c->head_dim;
	double layer = c->dim * (q_dim + 2 * kv_dim) + q_dim * c->dim + 3.0 * c->dim * c->hidden_dim;
	return elem * (c->n_layers * layer + (double)c->vocab_size * c->dim) +
	       4.0 * (2.0 * c->n_layers + 1) * c->dim;
}

/* The CUDA figures, printed and written as a JSON value ("null" without a device). */
static int bench_gpu(uint32_t prompt, uint32_t steps, FILE *json)
{
#ifndef RS_HAVE_CUDA_BACKEND
	printf("GPU: no device, skipped (CUDA backend not built)\n");
	fprintf(json, "null");
	return 0;
#else
	int devices = 0;
	if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
		cudaGetLastError();
		printf("GPU: no device, skipped\n");
		fprintf(json, "null");
		return 0;
	}
	struct rs_model_config cfg = {
		.dim = 2048, .hidden_dim = 5632, .n_layers = 22, .n_heads = 32, .n_kv_heads = 4,
		.head_dim = 64, .vocab_size = 32000, .max_seq_len = 2048, .rope_dim = 64,
		.rope_theta = 10000.0f, .norm_eps = 1e-5f,
	};
	const uint32_t batches[] = {1, 8, 32};
	enum { N_BATCHES = 3 };
	struct rs_model *model = NULL;
	struct rs_engine *e = NULL;
	char err[256] = "";
	int rc = rs_model_random(&cfg, RS_DTYPE_F16, 22, false, &model);
	if (rc) {
		fprintf(stderr, "bench engine: GPU model: %s\n", strerror(-rc));
		fprintf(json, "null");
		return 1;
	}
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = "cuda";
	opts.block_size = 16;
	opts.kv_blocks = 32 * rs_kv_blocks_for(prompt + steps, 16) + 64;
	opts.max_batch_tokens = 2048 > prompt ? 2048 : prompt;
	rc = rs_engine_create(model, &opts, &e, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "bench engine: GPU engine: %s\n", err);
		rs_model_free(model);
		fprintf(json, "null");
		return 1;
	}
	double bw = copy_bandwidth();
	struct cudaDeviceProp prop;
	if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess)
		snprintf(prop.name, sizeof(prop.name), "?");
	struct result results[N_BATCHES], warm;
	rc = run_batch(e, 2, 16, 2, &warm); /* cuBLAS heuristics, first launches */
	printf("engine: cuda backend on %s, TinyLlama-1.1B-shaped random model (f16), prompt %u, "
	       "%u decode steps\n", prop.name, prompt, steps);
	printf("%6s %16s %16s\n", "batch", "prefill tok/s", "decode tok/s");
	for (int i = 0; i < N_BATCHES && rc == 0; i++) {
		rc = run_batch(e, batches[i], prompt, steps, &results[i]);
		if (rc == 0)
			printf("%6u %16.0f %16.0f\n", batches[i], results[i].prefill_tok_s,
			       results[i].decode_tok_s);
	}
	if (rc) {
		fprintf(stderr, "bench engine: GPU step failed: %s\n", strerror(-rc));
		fprintf(json, "null");
	} else {
		double wbytes = weight_bytes_per_token(&cfg, 2.0);
		double bound = bw > 0 ? bw / wbytes : 0.0;
		double fraction = bound > 0 ? results[0].decode_tok_s / bound : 0.0;
		printf("device copy bandwidth %.0f GB/s (read + write); weights %.2f GB per token: "
		       "decode bound %.0f tok/s at batch 1, reached %.0f%%\n",
		       bw * 1e-9, wbytes * 1e-9, bound, 100.0 * fraction);
		fprintf(json, "{\"backend\": \"cuda\", \"device\": \"%s\", \"model\": "
			      "\"TinyLlama-1.1B-shaped random f16\", \"prompt\": %u, \"decode_steps\": %u, "
			      "\"copy_bandwidth_gb_s\": %.1f, \"weight_bytes_per_token\": %.0f, "
			      "\"decode_bound_tok_s\": %.1f, \"decode_1_fraction_of_bound\": %.3f, "
			      "\"batches\": [",
			prop.name, prompt, steps, bw * 1e-9, wbytes, bound, fraction);
		for (int i = 0; i < N_BATCHES; i++)
			fprintf(json, "%s{\"batch\": %u, \"prefill_tok_s\": %.1f, \"decode_tok_s\": %.1f}",
				i ? ", " : "", results[i].batch, results[i].prefill_tok_s,
				results[i].decode_tok_s);
		fprintf(json, "]}");
	}
	rs_engine_destroy(e);
	rs_model_free(model);
	return rc ? 1 : 0;
#endif
}

int bench_engine(int argc, char **argv, FILE *json)
{
	int threads = 0;
	uint32_t steps = 32, prompt = 128;
	const char *kv_dtype = "f16";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
			threads = atoi(argv[++i]);
		else if (strcmp(argv[i], "--decode-steps") == 0 && i + 1 < argc)
			steps = (uint32_t)atoi(argv[++i]);
		else if (strcmp(argv[i], "--prompt") == 0 && i + 1 < argc)
			prompt = (uint32_t)atoi(argv[++i]);
		else if (strcmp(argv[i], "--kv") == 0 && i + 1 < argc)
			kv_dtype = argv[++i];
		else {
			fprintf(stderr, "bench engine: unknown option %s\n", argv[i]);
			fprintf(json, "null");
			return 1;
		}
	}
	struct rs_model_config cfg = {
		.dim = 288, .hidden_dim = 768, .n_layers = 6, .n_heads = 6, .n_kv_heads = 6,
		.head_dim = 48, .vocab_size = 32000, .max_seq_len = 256, .rope_dim = 48,
		.rope_theta = 10000.0f, .norm_eps = 1e-5f,
	};
	if (!steps || !prompt || prompt + steps > cfg.max_seq_len) {
		fprintf(stderr, "bench engine: prompt + decode steps must be in 2..%u\n",
			cfg.max_seq_len);
		fprintf(json, "null");
		return 1;
	}
	const uint32_t batches[] = {1, 8, 32};
	enum { N_BATCHES = 3 };
	struct rs_model *model = NULL;
	struct rs_engine *e = NULL;
	char err[256] = "";
	int rc = rs_model_random(&cfg, RS_DTYPE_F32, 15, true, &model);
	if (rc) {
		fprintf(stderr, "bench engine: random model: %s\n", strerror(-rc));
		fprintf(json, "null");
		return 1;
	}
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = "cpu";
	opts.block_size = 16;
	opts.kv_blocks = 32 * rs_kv_blocks_for(cfg.max_seq_len, 16);
	opts.max_batch_tokens = 1024 > prompt ? 1024 : prompt;
	opts.threads = threads;
	opts.kv_dtype = kv_dtype;
	rc = rs_engine_create(model, &opts, &e, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "bench engine: %s\n", err);
		rs_model_free(model);
		fprintf(json, "null");
		return 1;
	}
	struct result results[N_BATCHES], warm;
	rc = run_batch(e, 2, prompt < 16 ? prompt : 16, 2, &warm); /* warm caches and threads */
	printf("engine: cpu backend, stories15M-shaped random model (f32, tied output), "
	       "KV cache %s, prompt %u, %u decode steps\n", kv_dtype, prompt, steps);
	printf("%6s %16s %16s\n", "batch", "prefill tok/s", "decode tok/s");
	for (int i = 0; i < N_BATCHES && rc == 0; i++) {
		rc = run_batch(e, batches[i], prompt, steps, &results[i]);
		if (rc == 0)
			printf("%6u %16.0f %16.0f\n", batches[i], results[i].prefill_tok_s,
			       results[i].decode_tok_s);
	}
	if (rc) {
		fprintf(stderr, "bench engine: step failed: %s\n", strerror(-rc));
		fprintf(json, "null");
	} else {
		double speedup = results[2].decode_tok_s / results[0].decode_tok_s;
		printf("decode speedup, batch 32 vs batch 1: %.1fx\n", speedup);
		fprintf(json, "{\"backend\": \"cpu\", \"model\": \"stories15M-shaped random f32\", "
			      "\"kv_dtype\": \"%s\", \"threads\": %d, \"prompt\": %u, "
			      "\"decode_steps\": %u, \"batches\": [",
			kv_dtype, threads, prompt, steps);
		for (int i = 0; i < N_BATCHES; i++)
			fprintf(json, "%s{\"batch\": %u, \"prefill_tok_s\": %.1f, \"decode_tok_s\": %.1f}",
				i ? ", " : "", results[i].batch, results[i].prefill_tok_s,
				results[i].decode_tok_s);
		fprintf(json, "], \"decode_speedup_32_vs_1\": %.2f, \"gpu\": ", speedup);
	}
	rs_engine_destroy(e);
	rs_model_free(model);
	if (rc)
		return 1;
	rc = bench_gpu(prompt, steps, json);
	fprintf(json, "}");
	return rc;
}
