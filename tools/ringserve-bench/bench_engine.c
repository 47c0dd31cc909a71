/* ringserve-bench engine [--threads N] [--decode-steps N] [--prompt N] [--kv f16|f32]
 *                        [--rounds N] [--gpu-only | --gpu-profile] [--model FILE]
 *
 * With --model FILE: batch 1 on that model file only (bench_file_model below: resident
 * memory against the file size, decode bytes/s against the read bandwidth).
 *
 * Prefill and decode tokens/s of the CPU engine at batch 1, 8 and 32, on a random model of
 * the shape of stories15M (dim 288, hidden 768, 6 layers, 6 heads, vocab 32000, context
 * 256, tied output, f32) built in memory. Prefill: `prompt` tokens per sequence, in steps
 * of at most 1024 tokens. Decode: `decode-steps` steps of one token per sequence, greedy,
 * right after the prefill. In the same run: batch 1 and 32 with OpenBLAS doing the
 * products (engine option cpu_products "blas": the baseline), batch 1 and 32 of the
 * same model with f16 weights, which the products keep 16-bit (half the bytes), and
 * batch 1 and 32 sampled (temperature 0.8, top-p 0.9: the whole vocabulary sorted per
 * token) instead of greedy. Each of `rounds` rounds (default 3) runs every batch size in
 * turn and each figure is the median over the rounds: the machines here are shared, and
 * their memory bandwidth moved 3x between runs an hour apart, so that batch 1 and batch
 * 32 are measured interleaved, under the same conditions. The figure that matters for batching is
 * decode(32)/decode(1): a decode step reads every weight once whatever the batch, so it should grow
 * with the batch until compute, not memory, bounds it. The KV cache is f16 unless --kv f32 (the
 * engine's "auto" would keep f32 for these f32 weights): at batch 32 the attention
 * reading the cache moves more bytes than the weights.
 *
 * With a CUDA device, the same on the CUDA backend with a TinyLlama-1.1B-shaped f16 random
 * model (dim 2048, hidden 5632, 22 layers, 32 heads, 4 kv heads, vocab 32000, context
 * 2048) at batch 1, 8, 16, 32 and 128, plus the device-to-device copy bandwidth measured in
 * the same run (cudaMemcpyAsync of 1 GiB timed with events; read + write bytes per second),
 * and decode at batch 1 as a fraction of its bandwidth bound: bandwidth / weight bytes
 * read per token. In the same run: batch 1 and 8 with CUDA graphs off (engine option
 * cuda_graphs), the time to first token of a 2048-token prompt, and 1, 2 and 4 lanes
 * decoding batches of 1 and 4 at once (aggregate tokens/s). --gpu-profile: batch 1 on
 * the GPU alone, for a profiler (tools/gpu-session.sh profile). Without a device: "GPU: no
 * device, skipped", and null GPU figures. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cpu/gemm.h"
#include "kernels/engine/engine.h"
#include "kernels/model/dtype.h"
#include "kernels/model/model_random.h"
#include "kernels/model/quant.h"
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
	double decode_enqueue_s; /* host time in rs_engine_step per decode step */
};

/* Prefill `batch` sequences on each of `lanes` lanes, then decode `steps` tokens each,
 * greedy or (sampling not NULL) sampled with those parameters, sequence i with seed i.
 * Decode steps go to the lanes in turn, each lane's next enqueued as soon as its last is
 * done, so that the lanes' steps overlap. 0 or -errno. */
static int run_lanes(struct rs_engine *e, uint32_t lanes, uint32_t batch, uint32_t prompt,
		     uint32_t steps, const struct rs_sampling_params *sampling, struct result *r)
{
	const struct rs_model_config *cfg = rs_engine_config(e);
	struct rs_kv_cache *kv = rs_engine_kv(e);
	uint32_t max_tokens = rs_engine_options(e)->max_batch_tokens, seqs = lanes * batch;
	uint32_t n_blocks = rs_kv_blocks_for(prompt + steps, rs_engine_options(e)->block_size);
	uint32_t *tables = calloc((size_t)seqs * n_blocks, sizeof(uint32_t));
	uint32_t *tokens = calloc((size_t)seqs * prompt, sizeof(uint32_t));
	uint32_t *next = calloc(seqs, sizeof(uint32_t)), *cur = calloc(seqs, sizeof(uint32_t));
	struct rs_seq_step *st = calloc(seqs, sizeof(*st));
	int rc = -ENOMEM;
	uint32_t allocated = 0;
	if (!tables || !tokens || !next || !cur || !st)
		goto out;
	for (; allocated < seqs * n_blocks; allocated++) {
		int b = rs_kv_block_alloc(kv);
		if (b < 0) {
			rc = b;
			goto out;
		}
		tables[allocated] = (uint32_t)b;
	}
	uint64_t s = 0x9e3779b97f4a7c15ull * batch;
	for (size_t i = 0; i < (size_t)seqs * prompt; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		tokens[i] = (uint32_t)((s >> 33) % cfg->vocab_size);
	}

	/* Prefill: whole prompts, as many sequences per step as fit in max_batch_tokens. */
	uint32_t per_step = max_tokens / prompt ? max_tokens / prompt : 1;
	double t0 = now_s();
	for (uint32_t first = 0; first < seqs; first += per_step) {
		uint32_t n = seqs - first < per_step ? seqs - first : per_step;
		for (uint32_t i = 0; i < n; i++)
			st[i] = (struct rs_seq_step){
			    .tokens = tokens + (size_t)(first + i) * prompt,
			    .n_tokens = prompt,
			    .block_table = tables + (size_t)(first + i) * n_blocks,
			    .n_blocks = n_blocks,
			    .sample = 1,
			    .out_token = &next[first + i]};
		rc = rs_engine_step(e, 0, st, n);
		if (rc == 0)
			rc = rs_engine_step_wait(e, 0);
		if (rc)
			goto out;
	}
	double t1 = now_s(), enqueue = 0.0;
	/* Decode: one step per token, every sequence of the lane in it. */
	for (uint32_t k = 0; k < steps; k++) {
		for (uint32_t l = 0; l < lanes; l++) {
			if (k && (rc = rs_engine_step_wait(e, l)) != 0)
				goto out;
			for (uint32_t i = l * batch; i < (l + 1) * batch; i++) {
				cur[i] = next[i];
				st[i] = (struct rs_seq_step){.tokens = &cur[i],
							     .n_tokens = 1,
							     .start_pos = prompt + k,
							     .block_table =
								 tables + (size_t)i * n_blocks,
							     .n_blocks = n_blocks,
							     .sample = 1,
							     .out_token = &next[i]};
				if (sampling) {
					st[i].sampling = *sampling;
					st[i].sampling.seed = i;
				}
			}
			double te = now_s();
			rc = rs_engine_step(e, l, st + l * batch, batch);
			enqueue += now_s() - te;
			if (rc)
				goto out;
		}
	}
	for (uint32_t l = 0; l < lanes && !rc; l++)
		rc = rs_engine_step_wait(e, l);
	if (rc)
		goto out;
	double t2 = now_s();
	r->decode_enqueue_s = enqueue / ((double)steps * lanes);
	r->batch = batch;
	r->prefill_tok_s = (double)seqs * prompt / (t1 - t0);
	r->decode_tok_s = (double)seqs * steps / (t2 - t1);
out:
	for (uint32_t i = 0; i < allocated; i++)
		rs_kv_block_unref(kv, tables[i]);
	free(tables), free(tokens), free(next), free(cur), free(st);
	return rc;
}

static int run_batch(struct rs_engine *e, uint32_t batch, uint32_t prompt, uint32_t steps,
		     const struct rs_sampling_params *sampling, struct result *r)
{
	return run_lanes(e, 1, batch, prompt, steps, sampling, r);
}

enum { MAX_ROUNDS = 15 };

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Per figure, the median of n runs of one batch size (the upper middle for even n). */
static struct result median_result(const struct result *runs, uint32_t n)
{
	double prefill[MAX_ROUNDS] = {0}, decode[MAX_ROUNDS] = {0};
	for (uint32_t i = 0; i < n; i++) {
		prefill[i] = runs[i].prefill_tok_s;
		decode[i] = runs[i].decode_tok_s;
	}
	qsort(prefill, n, sizeof(double), compare_doubles);
	qsort(decode, n, sizeof(double), compare_doubles);
	return (struct result){
	    .batch = runs[0].batch, .prefill_tok_s = prefill[n / 2], .decode_tok_s = decode[n / 2]};
}

/* results as a JSON array of {"batch", "prefill_tok_s", "decode_tok_s"}. */
static void json_results(FILE *json, const struct result *r, int n)
{
	fputc('[', json);
	for (int i = 0; i < n; i++)
		fprintf(json, "%s{\"batch\": %u, \"prefill_tok_s\": %.1f, \"decode_tok_s\": %.1f}",
			i ? ", " : "", r[i].batch, r[i].prefill_tok_s, r[i].decode_tok_s);
	fputc(']', json);
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

/* Weights a decode token multiplies: every layer matrix and the output matrix. */
static double product_weights(const struct rs_model_config *c)
{
	double q_dim = (double)c->n_heads * c->head_dim,
	       kv_dim = (double)c->n_kv_heads * c->head_dim;
	double layer =
	    c->dim * (q_dim + 2 * kv_dim) + q_dim * c->dim + 3.0 * c->dim * c->hidden_dim;
	return c->n_layers * layer + (double)c->vocab_size * c->dim;
}

/* Weight bytes a decode token reads: the product weights and the norms (one embedding
 * row is negligible). */
static double weight_bytes_per_token(const struct rs_model_config *c, double elem)
{
	return elem * product_weights(c) + 4.0 * (2.0 * c->n_layers + 1) * c->dim;
}

/* ---- The CPU's bounds, measured in the same run --------------------------------------
 * Decode at batch 1 reads every weight for one token; at batch 32 it multiplies every
 * weight 32 times. How far batching can go is the ratio of the two bounds, which the
 * machine sets: its memory bandwidth and its arithmetic rate, both measured here on as
 * many threads as the engine uses. */

/* Every thread prepares its data, then all start measuring together: a barrier would
 * hang if a thread could not be created, so the caller counts them in and says go. */
struct roof_start {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	uint32_t ready;
	bool go;
};

static void roof_wait_go(struct roof_start *start)
{
	pthread_mutex_lock(&start->lock);
	start->ready++;
	pthread_cond_broadcast(&start->changed);
	while (!start->go)
		pthread_cond_wait(&start->changed, &start->lock);
	pthread_mutex_unlock(&start->lock);
}

struct roof_thread {
	pthread_t thread;
	struct roof_start *start;
	bool read; /* read bandwidth, else in-cache GEMM */
	double bytes_or_flops, seconds;
	uint64_t sink;
};

static void *roof_main(void *arg)
{
	struct roof_thread *t = arg;
	const double duration = 0.3;
	if (t->read) {
		/* 256 MiB: far past any cache. Four independent sums of 64-bit words (the
		 * loop vectorizes); the total goes out so that the reads cannot be dropped. */
		size_t words = ((size_t)256 << 20) / 8;
		uint64_t *a = malloc(words * 8);
		if (a)
			for (size_t i = 0; i < words; i++)
				a[i] = i;
		roof_wait_go(t->start);
		if (!a)
			return NULL;
		double t0 = now_s();
		uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
		do {
			for (size_t i = 0; i < words; i += 4) {
				s0 += a[i];
				s1 += a[i + 1];
				s2 += a[i + 2];
				s3 += a[i + 3];
			}
			t->bytes_or_flops += 8.0 * words;
			t->seconds = now_s() - t0;
		} while (t->seconds < duration);
		t->sink = s0 + s1 + s2 + s3;
		free(a);
		return NULL;
	}
	/* A decode-shaped product that stays in this core's L2: 32 rows, n = 480, k = 288
	 * (540 KiB packed). */
	enum { M = 32, N = 480, K = 288 };
	struct rs_packed_matrix w;
	float *x = calloc((size_t)M * K, sizeof(float)), *y = calloc((size_t)M * N, sizeof(float));
	float *rows = calloc((size_t)N * K, sizeof(float));
	bool ok = x && y && rows && rs_packed_alloc(&w, N, K, RS_DTYPE_F32) == 0;
	if (ok) {
		for (size_t i = 0; i < (size_t)N * K; i++)
			rows[i] = (float)(i % 7) * 0.01f;
		ok = rs_packed_set_rows(&w, 0, N, rows, RS_DTYPE_F32) == 0;
	}
	roof_wait_go(t->start);
	if (ok) {
		double t0 = now_s();
		do {
			rs_gemm_packed(y, N, x, K, M, &w, 0, w.n_panels, false, rs_cpu_isa());
			t->bytes_or_flops += 2.0 * M * N * K;
			t->seconds = now_s() - t0;
		} while (t->seconds < duration);
		rs_packed_free(&w);
	}
	free(x), free(y), free(rows);
	return NULL;
}

/* The sum over threads of bytes (read) or FLOPs (GEMM) per second; 0 on failure. */
static double roof_rate(uint32_t threads, bool read)
{
	struct roof_thread t[64];
	struct roof_start start = {.lock = PTHREAD_MUTEX_INITIALIZER,
				   .changed = PTHREAD_COND_INITIALIZER};
	if (threads > 64)
		threads = 64;
	uint32_t started = 0;
	for (; started < threads; started++) {
		t[started] = (struct roof_thread){.start = &start, .read = read};
		if (pthread_create(&t[started].thread, NULL, roof_main, &t[started]))
			break;
	}
	pthread_mutex_lock(&start.lock);
	while (start.ready < started)
		pthread_cond_wait(&start.changed, &start.lock);
	start.go = true;
	pthread_cond_broadcast(&start.changed);
	pthread_mutex_unlock(&start.lock);
	double rate = 0.0;
	for (uint32_t i = 0; i < started; i++) {
		pthread_join(t[i].thread, NULL);
		if (t[i].seconds > 0)
			rate += t[i].bytes_or_flops / t[i].seconds;
	}
	return started == threads ? rate : 0.0;
}

/* The CUDA figures, printed and written as a JSON value ("null" without a device). */
#ifdef RS_HAVE_CUDA_BACKEND
/* The CUDA engine of the GPU table for model: `lanes` lanes, CUDA graphs on or off,
 * kv_blocks blocks of 16 positions; NULL with a message on failure. */
static struct rs_engine *gpu_engine(const struct rs_model *model, uint32_t lanes,
				    const char *graphs, uint32_t kv_blocks, uint32_t prompt)
{
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = "cuda";
	opts.block_size = 16;
	opts.kv_blocks = kv_blocks;
	opts.max_batch_tokens = prompt > 2048 ? prompt : 2048; /* a whole prompt per step */
	opts.lanes = lanes;
	opts.cuda_graphs = graphs;
	struct rs_engine *e = NULL;
	char err[256] = "";
	if (rs_engine_create(model, &opts, &e, err, sizeof(err)))
		fprintf(stderr, "bench engine: GPU engine: %s\n", err);
	return e;
}

/* Time to first token of one `prompt`-token sequence: its prefill in one step and the
 * sampling of its first token, median of 3, in seconds; < 0 on failure. */
static double time_to_first_token(struct rs_engine *e, uint32_t prompt)
{
	const struct rs_model_config *cfg = rs_engine_config(e);
	uint32_t n_blocks = rs_kv_blocks_for(prompt + 1, rs_engine_options(e)->block_size);
	uint32_t *table = calloc(n_blocks, sizeof(uint32_t));
	uint32_t *tokens = calloc(prompt, sizeof(uint32_t)), out = 0, allocated = 0;
	double t[3];
	int rc = table && tokens ? 0 : -ENOMEM;
	for (; !rc && allocated < n_blocks; allocated++) {
		int b = rs_kv_block_alloc(rs_engine_kv(e));
		if (b < 0)
			rc = b;
		else
			table[allocated] = (uint32_t)b;
	}
	for (uint32_t i = 0; !rc && i < prompt; i++)
		tokens[i] = (i * 2654435761u) % cfg->vocab_size;
	for (int round = 0; round < 3 && !rc; round++) {
		struct rs_seq_step st = {.tokens = tokens,
					 .n_tokens = prompt,
					 .block_table = table,
					 .n_blocks = n_blocks,
					 .sample = 1,
					 .out_token = &out};
		double t0 = now_s();
		rc = rs_engine_step(e, 0, &st, 1);
		if (!rc)
			rc = rs_engine_step_wait(e, 0);
		t[round] = now_s() - t0;
	}
	for (uint32_t i = 0; i < allocated; i++)
		rs_kv_block_unref(rs_engine_kv(e), table[i]);
	free(table), free(tokens);
	if (rc)
		return -1.0;
	qsort(t, 3, sizeof(double), compare_doubles);
	return t[1];
}
#endif

/* The GPU table: decode and prefill at batch 1 to 128 with CUDA graphs, batch 1 and 8 with
 * the kernels enqueued one by one (the same run's baseline for the graphs), time to first
 * token of a 2048-token prompt, and 1, 2 and 4 lanes decoding small batches at once. */
static int bench_gpu(uint32_t prompt, uint32_t steps, bool profile, FILE *json)
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
	struct rs_model_config cfg = RS_TINYLLAMA_CONFIG(2048);
	enum { N_BATCHES = 5, N_EAGER = 2, TTFT_PROMPT = 2048, LANES = 4, LANE_BATCHES = 2 };
	const uint32_t batches[N_BATCHES] = {1, 8, 16, 32, 128}, lane_batches[] = {1, 4};
	struct rs_model *model = NULL;
	int rc = rs_model_random(&cfg, RS_DTYPE_F16, 22, false, &model);
	if (rc) {
		fprintf(stderr, "bench engine: GPU model: %s\n", strerror(-rc));
		fprintf(json, "null");
		return 1;
	}
	uint32_t seq_blocks = rs_kv_blocks_for(prompt + steps, 16);
	struct rs_engine *e = gpu_engine(
	    model, LANES, "on", 128 * seq_blocks + rs_kv_blocks_for(TTFT_PROMPT + 1, 16), prompt);
	struct rs_engine *eager =
	    e && !profile ? gpu_engine(model, 1, "off", 8 * seq_blocks, prompt) : NULL;
	if (!e || (!eager && !profile)) {
		rs_engine_destroy(e);
		rs_model_free(model);
		fprintf(json, "null");
		return 1;
	}
	double bw = copy_bandwidth();
	struct cudaDeviceProp prop;
	if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess)
		snprintf(prop.name, sizeof(prop.name), "?");
	struct result results[N_BATCHES], eager_results[N_EAGER], warm;
	struct result lane_results[LANE_BATCHES][3];
	/* cuBLAS heuristics, first launches */
	rc = run_batch(e, 2, 16, 2, NULL, &warm);
	if (!rc && eager)
		rc = run_batch(eager, 2, 16, 2, NULL, &warm);
	printf("engine: cuda backend on %s, TinyLlama-1.1B-shaped random model (f16), prompt %u, "
	       "%u decode steps\n",
	       prop.name, prompt, steps);
	printf("%6s %16s %16s %14s %14s\n", "batch", "prefill tok/s", "decode tok/s", "step ms",
	       "enqueue ms");
	/* Profiling: batch 1 with graphs, the steps a profiler skips to, and nothing else. */
	for (int i = 0; i < (profile ? 1 : N_BATCHES + N_EAGER) && rc == 0; i++) {
		bool graphs = i < N_BATCHES;
		struct result *r = graphs ? &results[i] : &eager_results[i - N_BATCHES];
		uint32_t batch = batches[graphs ? i : i - N_BATCHES];
		rc = run_batch(graphs ? e : eager, batch, prompt, steps, NULL, r);
		if (rc == 0)
			printf("%6u %16.0f %16.0f %14.3f %14.3f%s\n", batch, r->prefill_tok_s,
			       r->decode_tok_s, 1e3 * batch / r->decode_tok_s,
			       1e3 * r->decode_enqueue_s,
			       graphs ? "" : "   (no CUDA graphs: kernels enqueued one by one)");
	}
	if (profile) {
		rs_engine_destroy(e);
		rs_model_free(model);
		fprintf(json, "null");
		return rc ? 1 : 0;
	}
	double ttft = rc ? -1.0 : time_to_first_token(e, TTFT_PROMPT);
	if (ttft < 0)
		rc = rc ? rc : -EIO;
	else
		printf("time to first token, %u-token prompt: %.1f ms (%.0f prefill tok/s)\n",
		       TTFT_PROMPT, 1e3 * ttft, TTFT_PROMPT / ttft);
	if (!rc)
		printf("%6s %6s %16s   (lanes decoding at once, each its own batch)\n", "lanes",
		       "batch", "decode tok/s");
	for (int b = 0; b < LANE_BATCHES && !rc; b++)
		for (uint32_t l = 1, li = 0; l <= LANES && !rc; l *= 2, li++) {
			rc = run_lanes(e, l, lane_batches[b], prompt, steps, NULL,
				       &lane_results[b][li]);
			if (!rc)
				printf("%6u %6u %16.0f\n", l, lane_batches[b],
				       lane_results[b][li].decode_tok_s);
		}
	struct rs_engine_stats st;
	rs_engine_stats(e, &st);
	printf("CUDA graphs: %llu decode steps replayed from %llu captured%s%s\n",
	       (unsigned long long)st.graph_launches, (unsigned long long)st.graph_captures,
	       st.graph_failures ? "; capture failed: " : "", st.graph_error);
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
		fprintf(
		    json,
		    "{\"backend\": \"cuda\", \"device\": \"%s\", \"model\": "
		    "\"TinyLlama-1.1B-shaped random f16\", \"prompt\": %u, \"decode_steps\": %u, "
		    "\"copy_bandwidth_gb_s\": %.1f, \"weight_bytes_per_token\": %.0f, "
		    "\"decode_bound_tok_s\": %.1f, \"decode_1_fraction_of_bound\": %.3f, "
		    "\"ttft_2048_ms\": %.2f, \"graph_launches\": %llu, \"batches\": ",
		    prop.name, prompt, steps, bw * 1e-9, wbytes, bound, fraction, 1e3 * ttft,
		    (unsigned long long)st.graph_launches);
		json_results(json, results, N_BATCHES);
		fprintf(json, ", \"batches_without_graphs\": ");
		json_results(json, eager_results, N_EAGER);
		for (int b = 0; b < LANE_BATCHES; b++) {
			fprintf(json, ", \"lanes_batch_%u\": [", lane_batches[b]);
			for (int li = 0; li < 3; li++)
				fprintf(json, "%s{\"lanes\": %d, \"decode_tok_s\": %.1f}",
					li ? ", " : "", 1 << li, lane_results[b][li].decode_tok_s);
			fputc(']', json);
		}
		fprintf(json, "}");
	}
	rs_engine_destroy(eager);
	rs_engine_destroy(e);
	rs_model_free(model);
	return rc ? 1 : 0;
#endif
}

/* ---- --model FILE: decode of a model file (quantized ones: issue 11) -----------------
 * Batch 1 decode tokens/s of the CPU engine on the file, the bytes of weights a token
 * reads (every matrix but the embedding, of which one row is read, in its stored
 * format), that rate in bytes/s against the read bandwidth measured in the same run, and
 * the resident memory after loading and after decoding against the file's size (the
 * quantized weights are read in place from the mapping: resident ~ file size). */

/* VmRSS of this process in bytes, 0 if unknown. */
static double resident_bytes(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	double kib = 0;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lf kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib * 1024;
}

static double tensor_bytes(const struct rs_tensor *t)
{
	return (double)t->rows * (double)rs_dtype_row_bytes(t->dtype, t->cols);
}

static int bench_file_model(const char *path, int threads, uint32_t prompt, uint32_t steps,
			    uint32_t rounds, const char *kv_dtype, FILE *json)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		fprintf(stderr, "bench engine: %s: %s\n", path, strerror(errno));
		fprintf(json, "null");
		return 1;
	}
	double rss0 = resident_bytes();
	struct rs_model *model = NULL;
	char err[512] = "";
	int rc = rs_model_load(path, NULL, &model, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "bench engine: %s\n", err);
		fprintf(json, "null");
		return 1;
	}
	const struct rs_model_config *cfg = &model->config;
	if (prompt + steps > cfg->max_seq_len) {
		fprintf(stderr, "bench engine: prompt + decode steps exceed the context %u\n",
			cfg->max_seq_len);
		rs_model_free(model);
		fprintf(json, "null");
		return 1;
	}
	double weight_bytes = tensor_bytes(&model->output);
	for (uint32_t l = 0; l < cfg->n_layers; l++) {
		const struct rs_layer_weights *w = &model->layers[l];
		weight_bytes += tensor_bytes(&w->wq) + tensor_bytes(&w->wk) + tensor_bytes(&w->wv) +
				tensor_bytes(&w->wo) + tensor_bytes(&w->w_gate) +
				tensor_bytes(&w->w_up) + tensor_bytes(&w->w_down);
	}
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = "cpu";
	opts.block_size = 16;
	opts.kv_blocks = 2 * rs_kv_blocks_for(cfg->max_seq_len, 16);
	opts.max_batch_tokens = 1024 > prompt ? 1024 : prompt;
	opts.threads = threads;
	opts.kv_dtype = kv_dtype;
	struct rs_engine *e = NULL;
	rc = rs_engine_create(model, &opts, &e, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "bench engine: %s\n", err);
		rs_model_free(model);
		fprintf(json, "null");
		return 1;
	}
	double rss_loaded = resident_bytes() - rss0;
	/* The KV cache is part of the resident memory but not of the file: its size, to
	 * set apart (kv_blocks blocks of 16 positions, k and v, every layer). */
	double kv_bytes = (double)opts.kv_blocks * 16 * 2 * cfg->n_layers * cfg->n_kv_heads *
			  cfg->head_dim * (strcmp(kv_dtype, "f32") ? 2 : 4);
	struct result runs[MAX_ROUNDS], median;
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	uint32_t workers = threads > 0 ? (uint32_t)threads : online > 0 ? (uint32_t)online : 1;
	/* The read bandwidth after every round, its median the reference: on a shared
	 * machine one measurement at the end can land in a quieter or a busier moment than
	 * the decode it is compared with. */
	double bws[MAX_ROUNDS] = {0};
	for (uint32_t r = 0; r < rounds && rc == 0; r++) {
		rc = run_batch(e, 1, prompt, steps, NULL, &runs[r]);
		bws[r] = rc ? 0 : roof_rate(workers, true);
	}
	double rss_run = resident_bytes() - rss0;
	qsort(bws, rounds, sizeof(bws[0]), compare_doubles);
	double bw = rc ? 0 : bws[rounds / 2];
	if (rc) {
		fprintf(stderr, "bench engine: step failed: %s\n", strerror(-rc));
		fprintf(json, "null");
	} else {
		median = median_result(runs, rounds);
		double rate = weight_bytes * median.decode_tok_s;
		printf(
		    "engine: cpu backend, %s (%s weights, %u layers, dim %u), %u threads, prompt "
		    "%u, %u decode steps, median of %u rounds\n",
		    path, rs_dtype_name(model->layers[0].wq.dtype), cfg->n_layers, cfg->dim,
		    workers, prompt, steps, rounds);
		printf(
		    "file %.1f MB; resident after load %.1f MB, after decoding %.1f MB (%.2fx the "
		    "file; without the %.1f MB KV cache %.2fx)\n",
		    st.st_size * 1e-6, rss_loaded * 1e-6, rss_run * 1e-6, rss_run / st.st_size,
		    kv_bytes * 1e-6, (rss_run - kv_bytes) / st.st_size);
		printf("read bandwidth after each round: %.2f to %.2f GB/s\n", bws[0] * 1e-9,
		       bws[rounds - 1] * 1e-9);
		printf("batch 1: prefill %.1f tok/s, decode %.2f tok/s; %.1f MB of weights per "
		       "token = "
		       "%.2f GB/s, %.0f%% of the read bandwidth %.2f GB/s (same run)\n",
		       median.prefill_tok_s, median.decode_tok_s, weight_bytes * 1e-6, rate * 1e-9,
		       100.0 * rate / bw, bw * 1e-9);
		fprintf(
		    json,
		    "{\"backend\": \"cpu\", \"model\": \"%s\", \"threads\": %u, "
		    "\"file_bytes\": %.0f, \"resident_after_load_bytes\": %.0f, "
		    "\"resident_after_decode_bytes\": %.0f, \"weight_bytes_per_token\": %.0f, "
		    "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, \"decode_bytes_s\": %.0f, "
		    "\"read_bandwidth_bytes_s\": %.0f, \"kv_cache_bytes\": %.0f}",
		    path, workers, (double)st.st_size, rss_loaded, rss_run, weight_bytes,
		    median.prefill_tok_s, median.decode_tok_s, rate, bw, kv_bytes);
	}
	rs_engine_destroy(e);
	rs_model_free(model);
	return rc ? 1 : 0;
}

int bench_engine(int argc, char **argv, FILE *json)
{
	int threads = 0;
	uint32_t steps = 32, prompt = 128, rounds = 3;
	const char *kv_dtype = "f16";
	bool gpu_only = false, gpu_profile = false;
	const char *model_path = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
			model_path = argv[++i];
		else if (strcmp(argv[i], "--gpu-only") == 0)
			gpu_only = true;
		else if (strcmp(argv[i], "--gpu-profile") == 0)
			gpu_only = gpu_profile = true;
		else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
			threads = atoi(argv[++i]);
		else if (strcmp(argv[i], "--decode-steps") == 0 && i + 1 < argc)
			steps = (uint32_t)atoi(argv[++i]);
		else if (strcmp(argv[i], "--prompt") == 0 && i + 1 < argc)
			prompt = (uint32_t)atoi(argv[++i]);
		else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
			rounds = (uint32_t)atoi(argv[++i]);
		else if (strcmp(argv[i], "--kv") == 0 && i + 1 < argc)
			kv_dtype = argv[++i];
		else {
			fprintf(stderr, "bench engine: unknown option %s\n", argv[i]);
			fprintf(json, "null");
			return 1;
		}
	}
	if (model_path) {
		if (!rounds || rounds > MAX_ROUNDS || !steps || !prompt) {
			fprintf(stderr,
				"bench engine: --rounds in 1..%d, --prompt and "
				"--decode-steps >= 1\n",
				MAX_ROUNDS);
			fprintf(json, "null");
			return 1;
		}
		return bench_file_model(model_path, threads, prompt, steps, rounds, kv_dtype, json);
	}
	struct rs_model_config cfg = RS_STORIES15M_CONFIG(256);
	if (!rounds || rounds > MAX_ROUNDS) {
		fprintf(stderr, "bench engine: --rounds must be in 1..%d\n", MAX_ROUNDS);
		fprintf(json, "null");
		return 1;
	}
	if (!steps || !prompt || prompt + steps > cfg.max_seq_len) {
		fprintf(stderr, "bench engine: prompt + decode steps must be in 2..%u\n",
			cfg.max_seq_len);
		fprintf(json, "null");
		return 1;
	}
	if (gpu_only) {
		fprintf(json, "{\"gpu\": ");
		int rc = bench_gpu(prompt, steps, gpu_profile, json);
		fprintf(json, "}");
		return rc;
	}
	const uint32_t batches[] = {1, 8, 32};
	enum { N_BATCHES = 3 };
	struct rs_model *model = NULL, *model16 = NULL;
	struct rs_engine *e = NULL;
	char err[256] = "";
	int rc = rs_model_random(&cfg, RS_DTYPE_F32, 15, true, &model);
	if (rc == 0)
		rc = rs_model_random(&cfg, RS_DTYPE_F16, 15, true, &model16);
	if (rc) {
		rs_model_free(model);
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
	/* The same model with f16 weights (kept 16-bit by the products: half the bytes). */
	struct rs_engine *half = NULL;
	if (rc == 0)
		rc = rs_engine_create(model16, &opts, &half, err, sizeof(err));
	/* The baseline: the same engine with OpenBLAS doing the products. */
	struct rs_engine *blas = NULL;
	opts.cpu_products = "blas";
	if (rc == 0)
		rc = rs_engine_create(model, &opts, &blas, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "bench engine: %s\n", err);
		rs_engine_destroy(e);
		rs_engine_destroy(half);
		rs_model_free(model);
		rs_model_free(model16);
		fprintf(json, "null");
		return 1;
	}
	struct result results[N_BATCHES], runs[N_BATCHES][MAX_ROUNDS], warm;
	struct result blas_results[2], blas_runs[2][MAX_ROUNDS];
	struct result half_results[2], half_runs[2][MAX_ROUNDS];
	/* Sampled decode: temperature and nucleus over the whole vocabulary per token. */
	const struct rs_sampling_params sampled = {.temperature = 0.8f, .top_p = 0.9f};
	struct result sampled_results[2], sampled_runs[2][MAX_ROUNDS];
	const uint32_t blas_batches[2] = {1, 32};
	rc = run_batch(e, 2, prompt < 16 ? prompt : 16, 2, NULL, &warm); /* warm caches, threads */
	printf("engine: cpu backend, stories15M-shaped random model (f32, tied output), "
	       "KV cache %s, prompt %u, %u decode steps, median of %u rounds\n",
	       kv_dtype, prompt, steps, rounds);
	for (uint32_t r = 0; r < rounds && rc == 0; r++) {
		for (int i = 0; i < N_BATCHES && rc == 0; i++)
			rc = run_batch(e, batches[i], prompt, steps, NULL, &runs[i][r]);
		for (int i = 0; i < 2 && rc == 0; i++)
			rc =
			    run_batch(blas, blas_batches[i], prompt, steps, NULL, &blas_runs[i][r]);
		for (int i = 0; i < 2 && rc == 0; i++)
			rc =
			    run_batch(half, blas_batches[i], prompt, steps, NULL, &half_runs[i][r]);
		for (int i = 0; i < 2 && rc == 0; i++)
			rc = run_batch(e, blas_batches[i], prompt, steps, &sampled,
				       &sampled_runs[i][r]);
	}
	printf("%6s %16s %16s\n", "batch", "prefill tok/s", "decode tok/s");
	for (int i = 0; i < N_BATCHES && rc == 0; i++) {
		results[i] = median_result(runs[i], rounds);
		printf("%6u %16.0f %16.0f\n", batches[i], results[i].prefill_tok_s,
		       results[i].decode_tok_s);
	}
	for (int i = 0; i < 2 && rc == 0; i++) {
		blas_results[i] = median_result(blas_runs[i], rounds);
		printf("%6u %16.0f %16.0f   (OpenBLAS products, same run)\n", blas_batches[i],
		       blas_results[i].prefill_tok_s, blas_results[i].decode_tok_s);
	}
	for (int i = 0; i < 2 && rc == 0; i++) {
		half_results[i] = median_result(half_runs[i], rounds);
		printf("%6u %16.0f %16.0f   (f16 weights, same run)\n", blas_batches[i],
		       half_results[i].prefill_tok_s, half_results[i].decode_tok_s);
	}
	for (int i = 0; i < 2 && rc == 0; i++) {
		sampled_results[i] = median_result(sampled_runs[i], rounds);
		printf("%6u %16.0f %16.0f   (temperature 0.8, top-p 0.9, same run)\n",
		       blas_batches[i], sampled_results[i].prefill_tok_s,
		       sampled_results[i].decode_tok_s);
	}
	if (rc) {
		fprintf(stderr, "bench engine: step failed: %s\n", strerror(-rc));
		fprintf(json, "null");
	} else {
		double speedup = results[2].decode_tok_s / results[0].decode_tok_s;
		printf("decode speedup, batch 32 vs batch 1: %.1fx\n", speedup);
		/* The bounds: batch 1 by the weight bytes over the read bandwidth, batch 32 by
		 * the product FLOPs over the in-cache GEMM rate (attention, norms, sampling
		 * and hand-offs not counted: the true bound is lower still). */
		long online = sysconf(_SC_NPROCESSORS_ONLN);
		uint32_t workers = threads > 0	? (uint32_t)threads
				   : online > 0 ? (uint32_t)online
						: 1;
		double bw = roof_rate(workers, true), gemm = roof_rate(workers, false);
		double bytes = weight_bytes_per_token(&cfg, 4.0),
		       flops = 2.0 * product_weights(&cfg);
		double step1_s = 1.0 / results[0].decode_tok_s;
		double step32_min_s = 32.0 * flops / gemm;
		double max_speedup = 32.0 * step1_s / step32_min_s;
		printf("same run, %u threads: read bandwidth %.1f GB/s, GEMM %.0f "
		       "GFLOP/s (in cache)\n",
		       workers, bw * 1e-9, gemm * 1e-9);
		printf(
		    "batch 1: %.1f MB of weights per token, %.2f ms per step = %.1f GB/s (%.0f%% "
		    "of the read bandwidth)\n",
		    bytes * 1e-6, step1_s * 1e3, bytes / step1_s * 1e-9,
		    100.0 * bytes / step1_s / bw);
		printf(
		    "batch 32: %.2f GFLOP of products per step, at least %.2f ms at the GEMM rate "
		    "(a measured step: %.2f ms, that bound is %.0f%% of it)\n",
		    32.0 * flops * 1e-9, step32_min_s * 1e3, 32.0 / results[2].decode_tok_s * 1e3,
		    100.0 * step32_min_s / (32.0 / results[2].decode_tok_s));
		printf("decode speedup bound with this batch-1 step: %.1fx (measured %.1fx)\n",
		       max_speedup, speedup);
		double bytes16 = weight_bytes_per_token(&cfg, 2.0);
		printf("f16 weights, batch 1: %.1f MB per token, %.2f ms per step = %.1f GB/s; "
		       "%.2fx the f32 model's batch 1\n",
		       bytes16 * 1e-6, 1e3 / half_results[0].decode_tok_s,
		       bytes16 * half_results[0].decode_tok_s * 1e-9,
		       half_results[0].decode_tok_s / results[0].decode_tok_s);
		fprintf(json,
			"{\"backend\": \"cpu\", \"model\": \"stories15M-shaped random f32\", "
			"\"kv_dtype\": \"%s\", \"threads\": %d, \"prompt\": %u, "
			"\"decode_steps\": %u, \"rounds\": %u, \"batches\": ",
			kv_dtype, threads, prompt, steps, rounds);
		json_results(json, results, N_BATCHES);
		fprintf(json, ", \"blas_batches\": ");
		json_results(json, blas_results, 2);
		fprintf(json, ", \"f16_weight_batches\": ");
		json_results(json, half_results, 2);
		fprintf(json, ", \"sampled_batches\": ");
		json_results(json, sampled_results, 2);
		fprintf(json,
			", \"decode_speedup_32_vs_1\": %.2f, \"read_bandwidth_gb_s\": %.2f, "
			"\"gemm_gflop_s\": %.1f, \"decode_speedup_bound\": %.2f, \"gpu\": ",
			speedup, bw * 1e-9, gemm * 1e-9, max_speedup);
	}
	rs_engine_destroy(e);
	rs_engine_destroy(half);
	rs_engine_destroy(blas);
	rs_model_free(model);
	rs_model_free(model16);
	if (rc)
		return 1;
	rc = bench_gpu(prompt, steps, false, json);
	fprintf(json, "}");
	return rc;
}
