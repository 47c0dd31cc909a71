/* ringserve-interop: ringserve against llama.cpp on the same quantized files (issue 11,
 * section 4; `make interop`).
 *
 *   ringserve-interop SRC.gguf [--llama-dir DIR] [--work DIR] [--formats q8_0,q4_k_m,...]
 *       [--threads N] [--rounds N] [--prompt N] [--decode N] [--id-steps N]
 *       [--ringserve-weights auto|copy|mapped] [--also-mapped] [--reuse] [--json FILE]
 *
 * SRC is an f32 or f16 model (ringserve-mkmodel). Each format is made from it by
 * llama.cpp's own quantizer (llama_model_quantize), then both run that file:
 * - greedy ids: from the same prompt, both are fed llama.cpp's choice at every step, and
 *   the steps where their argmax differs are counted; at the first, the gap between the
 *   two candidates in each side's logits is reported (a near-tie: both small);
 * - decode speed at batch 1 on the same thread count: a prompt (not timed), then --decode
 *   greedy steps timed, each side feeding its own choice (llama.cpp's argmax over its
 *   logits counted in its time, as ringserve's sampling is in its step); rounds alternate
 *   which side goes first, and every round's figure is kept (the table gives ranges). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cpu/gemm.h"
#include "kernels/engine/engine.h"
#include "kernels/engine/sampling.h"
#include "kernels/model/dtype.h"
#include "kernels/model/model.h"
#include "tools/ringserve-interop/llama_side.h"

#define MAX_ROUNDS  16
#define MAX_FORMATS 8
#define MAX_STEPS   1024

struct options {
	const char *src, *llama_dir, *work, *json, *weights;
	bool also_mapped; /* time ringserve with cpu_weights "mapped" too, as a third side */
	char formats[256];
	int threads;
	uint32_t rounds, prompt, decode, id_steps;
	bool reuse;
};

struct result {
	char format[16];
	double file_bytes;
	uint32_t id_steps, id_differ, first_differ; /* first_differ == id_steps: none */
	uint32_t llama_id, ringserve_id;	    /* at first_differ */
	double llama_gap, ringserve_gap;	    /* the two candidates, each side's logits */
	double logit_sd; /* of llama.cpp's logits there: the scale the gaps are small against */
	double llama_tok_s[MAX_ROUNDS], ringserve_tok_s[MAX_ROUNDS], mapped_tok_s[MAX_ROUNDS];
	/* Tokens per second of the process's CPU time (all threads), per side and round:
	 * what a shared machine's other load disturbs least (spinning counts as work). */
	double cpu_tok_s[3][MAX_ROUNDS];
	bool ok;
};

static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The CPU seconds of the last timed decode (time_llama, time_ringserve). */
static double last_cpu_s;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ringserve's CPU engine on one sequence, one KV block table reused from position 0. */
struct rs_side {
	struct rs_model *model;
	struct rs_engine *engine;
	uint32_t blocks[MAX_STEPS], n_blocks, pos, vocab;
	float *logits;
};

static void rs_side_free(struct rs_side *s)
{
	rs_engine_destroy(s->engine);
	rs_model_free(s->model);
	free(s->logits);
}

static int rs_side_load(struct rs_side *s, const char *path, const struct options *o,
			const char *weights, uint32_t n_ctx)
{
	char err[512] = "";
	memset(s, 0, sizeof(*s));
	if (rs_model_load(path, NULL, &s->model, err, sizeof(err)) != 0) {
		fprintf(stderr, "ringserve: %s\n", err);
		return -1;
	}
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = "cpu";
	opts.threads = o->threads;
	opts.block_size = 16;
	opts.kv_blocks = rs_kv_blocks_for(n_ctx, 16) + 1;
	opts.max_batch_tokens = o->prompt;
	opts.cpu_weights = weights;
	/* kv_dtype "auto" is f16 for quantized weights: as llama.cpp's default KV cache. */
	if (n_ctx > s->model->config.max_seq_len ||
	    rs_engine_create(s->model, &opts, &s->engine, err, sizeof(err)) != 0) {
		fprintf(stderr, "ringserve: %s\n", err[0] ? err : "context too long for the model");
		rs_side_free(s);
		return -1;
	}
	s->vocab = s->model->config.vocab_size;
	s->n_blocks = rs_kv_blocks_for(n_ctx, 16);
	for (uint32_t b = 0; b < s->n_blocks; b++)
		s->blocks[b] = (uint32_t)rs_kv_block_alloc(rs_engine_kv(s->engine));
	s->logits = malloc((size_t)o->prompt * s->vocab * sizeof(float));
	return s->logits ? 0 : -1;
}

static struct rs_seq_step rs_side_step(struct rs_side *s, const uint32_t *tokens, uint32_t n)
{
	return (struct rs_seq_step){.tokens = tokens,
				    .n_tokens = n,
				    .start_pos = s->pos,
				    .block_table = s->blocks,
				    .n_blocks = s->n_blocks};
}

/* Logits after tokens[0..n) (the last position's), or NULL. */
static const float *rs_side_eval(struct rs_side *s, const uint32_t *tokens, uint32_t n)
{
	struct rs_seq_step step = rs_side_step(s, tokens, n);
	if (rs_engine_forward_logits(s->engine, &step, 1, s->logits) != 0)
		return NULL;
	s->pos += n;
	return s->logits + (size_t)(n - 1) * s->vocab;
}

/* A greedy step as the daemon runs it (sampled inside the engine); -1 on failure. */
static int64_t rs_side_decode(struct rs_side *s, uint32_t token)
{
	uint32_t next = 0;
	struct rs_seq_step step = rs_side_step(s, &token, 1);
	step.sample = 1;
	step.out_token = &next;
	if (rs_engine_step(s->engine, 0, &step, 1) != 0 || rs_engine_step_wait(s->engine, 0) != 0)
		return -1;
	s->pos++;
	return next;
}

static void make_prompt(uint32_t *prompt, uint32_t n, uint32_t vocab)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;
	prompt[0] = 1; /* BOS */
	for (uint32_t i = 1; i < n; i++) {
		x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
		prompt[i] = (uint32_t)((x * 0x2545f4914f6cdd1dull >> 33) % (vocab - 3)) + 3;
	}
}

static double std_dev(const float *x, uint32_t n)
{
	double sum = 0, sum2 = 0;
	for (uint32_t i = 0; i < n; i++)
		sum += x[i], sum2 += (double)x[i] * x[i];
	double mean = sum / n;
	return sqrt(sum2 / n - mean * mean > 0 ? sum2 / n - mean * mean : 0);
}

/* Greedy ids, both sides fed llama.cpp's choice. */
static int compare_ids(struct llama_side *lc, struct rs_side *rs, const struct options *o,
		       struct result *r)
{
	uint32_t prompt[MAX_STEPS];
	make_prompt(prompt, o->prompt, rs->vocab);
	llama_side_clear(lc);
	rs->pos = 0;
	const float *ll = llama_side_eval(lc, prompt, o->prompt);
	const float *rl = rs_side_eval(rs, prompt, o->prompt);
	r->id_steps = o->id_steps;
	r->first_differ = o->id_steps;
	for (uint32_t step = 0; step < o->id_steps; step++) {
		if (!ll || !rl)
			return -1;
		uint32_t lid = rs_argmax(ll, rs->vocab), rid = rs_argmax(rl, rs->vocab);
		if (lid != rid) {
			if (r->id_differ++ == 0) {
				r->first_differ = step;
				r->llama_id = lid, r->ringserve_id = rid;
				r->llama_gap = (double)ll[lid] - ll[rid];
				r->ringserve_gap = (double)rl[rid] - rl[lid];
				r->logit_sd = std_dev(ll, rs->vocab);
			}
		}
		ll = llama_side_eval(lc, &lid, 1);
		rl = rs_side_eval(rs, &lid, 1);
	}
	return 0;
}

static int time_llama(struct llama_side *lc, const uint32_t *prompt, const struct options *o,
		      uint32_t vocab, double *tok_s)
{
	llama_side_clear(lc);
	const float *l = llama_side_eval(lc, prompt, o->prompt);
	double t0 = now_s(), c0 = cpu_s();
	for (uint32_t i = 0; i < o->decode && l; i++) {
		uint32_t next = rs_argmax(l, vocab);
		l = llama_side_eval(lc, &next, 1);
	}
	*tok_s = o->decode / (now_s() - t0);
	last_cpu_s = cpu_s() - c0;
	return l ? 0 : -1;
}

static int time_ringserve(struct rs_side *rs, const uint32_t *prompt, const struct options *o,
			  double *tok_s)
{
	rs->pos = 0;
	const float *l = rs_side_eval(rs, prompt, o->prompt);
	if (!l)
		return -1;
	int64_t next = rs_argmax(l, rs->vocab);
	double t0 = now_s(), c0 = cpu_s();
	for (uint32_t i = 0; i < o->decode && next >= 0; i++)
		next = rs_side_decode(rs, (uint32_t)next);
	*tok_s = o->decode / (now_s() - t0);
	last_cpu_s = cpu_s() - c0;
	return next >= 0 ? 0 : -1;
}

static double median(const double *v, uint32_t n)
{
	double s[MAX_ROUNDS];
	memcpy(s, v, n * sizeof(double));
	for (uint32_t i = 1; i < n; i++)
		for (uint32_t j = i; j > 0 && s[j] < s[j - 1]; j--) {
			double t = s[j];
			s[j] = s[j - 1], s[j - 1] = t;
		}
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static int run_format(const struct options *o, const char *format, struct result *r)
{
	char path[1024];
	struct stat st;
	memset(r, 0, sizeof(*r));
	snprintf(r->format, sizeof(r->format), "%s", format);
	snprintf(path, sizeof(path), "%s/interop-%s.gguf", o->work, format);
	if (!(o->reuse && stat(path, &st) == 0)) {
		double t0 = now_s();
		if (llama_side_quantize(o->src, path, format, o->threads) != 0) {
			fprintf(stderr, "%s: llama_model_quantize failed\n", format);
			return -1;
		}
		fprintf(stderr, "%s: quantized by llama.cpp in %.1f s\n", format, now_s() - t0);
	}
	if (stat(path, &st) != 0)
		return -1;
	r->file_bytes = (double)st.st_size;
	uint32_t n_ctx = o->prompt + (o->decode > o->id_steps ? o->decode : o->id_steps) + 16;
	struct rs_side rs, mapped = {0};
	if (rs_side_load(&rs, path, o, o->weights, n_ctx) != 0)
		return -1;
	if (o->also_mapped && rs_side_load(&mapped, path, o, "mapped", n_ctx) != 0) {
		rs_side_free(&rs);
		return -1;
	}
	struct llama_side *lc = llama_side_load(path, n_ctx, o->threads);
	if (!lc) {
		fprintf(stderr, "%s: llama.cpp could not load %s\n", format, path);
		rs_side_free(&rs);
		rs_side_free(&mapped);
		return -1;
	}
	int rc = compare_ids(lc, &rs, o, r);
	uint32_t prompt[MAX_STEPS];
	make_prompt(prompt, o->prompt, rs.vocab);
	/* Side 0 llama.cpp, 1 ringserve, 2 ringserve with the weights mapped; each round
	 * starts with the next side, after one untimed round (page faults, caches,
	 * llama.cpp's graph). */
	uint32_t sides = o->also_mapped ? 3 : 2;
	double warm, *tok_s[3] = {r->llama_tok_s, r->ringserve_tok_s, r->mapped_tok_s};
	for (int32_t round = -1; round < (int32_t)o->rounds && !rc; round++)
		for (uint32_t k = 0; k < sides && !rc; k++) {
			uint32_t side = (uint32_t)(round + 1 + (int32_t)k) % sides;
			double *out = round < 0 ? &warm : &tok_s[side][round];
			rc = side == 0	 ? time_llama(lc, prompt, o, rs.vocab, out)
			     : side == 1 ? time_ringserve(&rs, prompt, o, out)
					 : time_ringserve(&mapped, prompt, o, out);
			if (round >= 0)
				r->cpu_tok_s[side][round] = o->decode / last_cpu_s;
		}
	llama_side_free(lc);
	rs_side_free(&rs);
	rs_side_free(&mapped);
	if (rc)
		fprintf(stderr, "%s: a step failed\n", format);
	else
		fprintf(stderr,
			"%s: %u of %u ids equal; decode tok/s llama.cpp %.1f, ringserve %.1f; per "
			"CPU-second %.1f, %.1f (medians)\n",
			format, r->id_steps - r->id_differ, r->id_steps,
			median(r->llama_tok_s, o->rounds), median(r->ringserve_tok_s, o->rounds),
			median(r->cpu_tok_s[0], o->rounds), median(r->cpu_tok_s[1], o->rounds));
	r->ok = rc == 0;
	return rc;
}

static void range(const double *v, uint32_t n, double *lo, double *hi)
{
	*lo = *hi = v[0];
	for (uint32_t i = 1; i < n; i++) {
		*lo = v[i] < *lo ? v[i] : *lo;
		*hi = v[i] > *hi ? v[i] : *hi;
	}
}

static void print_table(const struct options *o, const struct result *res, uint32_t n)
{
	printf("\n| file | MB | greedy ids (fed llama.cpp's) | llama.cpp tok/s | ringserve tok/s | "
	       "ringserve / llama.cpp (medians) | tok per CPU-second, llama.cpp / ringserve "
	       "(medians) |%s\n|---|---|---|---|---|---|---|%s\n",
	       o->also_mapped ? " ringserve, weights mapped, tok/s |" : "",
	       o->also_mapped ? "---|" : "");
	for (uint32_t i = 0; i < n; i++) {
		const struct result *r = &res[i];
		if (!r->ok) {
			printf("| %s | | failed | | | |\n", r->format);
			continue;
		}
		char ids[160];
		if (r->id_differ == 0)
			snprintf(ids, sizeof(ids), "%u of %u equal", r->id_steps, r->id_steps);
		else
			snprintf(ids, sizeof(ids),
				 "%u of %u equal; first apart at step %u: gap %.4f (llama.cpp), "
				 "%.4f (ringserve); logits' sd %.3f",
				 r->id_steps - r->id_differ, r->id_steps, r->first_differ,
				 r->llama_gap, r->ringserve_gap, r->logit_sd);
		double llo, lhi, rlo, rhi;
		range(r->llama_tok_s, o->rounds, &llo, &lhi);
		range(r->ringserve_tok_s, o->rounds, &rlo, &rhi);
		printf("| %s | %.0f | %s | %.1f-%.1f | %.1f-%.1f | %.2f | %.1f / %.1f |", r->format,
		       r->file_bytes * 1e-6, ids, llo, lhi, rlo, rhi,
		       median(r->ringserve_tok_s, o->rounds) / median(r->llama_tok_s, o->rounds),
		       median(r->cpu_tok_s[0], o->rounds), median(r->cpu_tok_s[1], o->rounds));
		if (o->also_mapped) {
			range(r->mapped_tok_s, o->rounds, &rlo, &rhi);
			printf(" %.1f-%.1f |", rlo, rhi);
		}
		printf("\n");
	}
}

static void write_json(const struct options *o, const struct result *res, uint32_t n)
{
	FILE *f = fopen(o->json, "w");
	if (!f) {
		fprintf(stderr, "ringserve-interop: %s: %s\n", o->json, strerror(errno));
		return;
	}
	fprintf(f,
		"{\"source\": \"%s\", \"threads\": %d, \"rounds\": %u, \"prompt\": %u, "
		"\"decode\": %u, \"ringserve_weights\": \"%s\", \"llama_cpp_system_info\": \"%s\", "
		"\"files\": [",
		o->src, o->threads, o->rounds, o->prompt, o->decode,
		o->weights ? o->weights : "auto", llama_side_system_info());
	for (uint32_t i = 0; i < n; i++) {
		const struct result *r = &res[i];
		fprintf(f,
			"%s\n  {\"format\": \"%s\", \"ok\": %s, \"file_bytes\": %.0f, "
			"\"id_steps\": %u, \"id_differ\": %u",
			i ? "," : "", r->format, r->ok ? "true" : "false", r->file_bytes,
			r->id_steps, r->id_differ);
		if (r->id_differ)
			fprintf(f,
				", \"first_differ\": {\"step\": %u, \"llama_cpp_id\": %u, "
				"\"ringserve_id\": %u, \"llama_cpp_gap\": %.6g, "
				"\"ringserve_gap\": %.6g, \"llama_cpp_logit_sd\": %.6g}",
				r->first_differ, r->llama_id, r->ringserve_id, r->llama_gap,
				r->ringserve_gap, r->logit_sd);
		for (int side = 0; side < (o->also_mapped ? 3 : 2); side++) {
			const double *v = side == 2   ? r->mapped_tok_s
					  : side == 1 ? r->ringserve_tok_s
						      : r->llama_tok_s;
			fprintf(f, ", \"%s_tok_s\": [",
				side == 2 ? "ringserve_mapped"
				: side	  ? "ringserve"
					  : "llama_cpp");
			for (uint32_t k = 0; k < o->rounds && r->ok; k++)
				fprintf(f, "%s%.2f", k ? ", " : "", v[k]);
			fprintf(f, "], \"%s_tok_per_cpu_s\": [",
				side == 2 ? "ringserve_mapped"
				: side	  ? "ringserve"
					  : "llama_cpp");
			for (uint32_t k = 0; k < o->rounds && r->ok; k++)
				fprintf(f, "%s%.2f", k ? ", " : "", r->cpu_tok_s[side][k]);
			fprintf(f, "]");
		}
		fprintf(f, "}");
	}
	fprintf(f, "\n]}\n");
	fclose(f);
}

static int usage(void)
{
	fprintf(
	    stderr,
	    "usage: ringserve-interop SRC.gguf [--llama-dir DIR] [--work DIR]\n"
	    "         [--formats q8_0,q4_0,q4_k_m,q5_k_m,q6_k] [--threads N] [--rounds N]\n"
	    "         [--prompt N] [--decode N] [--id-steps N]\n"
	    "         [--ringserve-weights auto|copy|mapped] [--also-mapped] [--reuse]\n"
	    "         [--json FILE]\n"
	    "  SRC: an f32 or f16 GGUF model (ringserve-mkmodel); each format is made from it\n"
	    "  by llama.cpp's llama_model_quantize into WORK (default: SRC's folder), then\n"
	    "  llama.cpp (libllama from DIR, default .cache/llama-cpp) and ringserve's CPU\n"
	    "  engine run it. Defaults: 2 threads, 5 rounds, prompt 16, decode 64, id-steps 32.\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct options o = {.llama_dir = ".cache/llama-cpp",
			    .threads = 2,
			    .rounds = 5,
			    .prompt = 16,
			    .decode = 64,
			    .id_steps = 32};
	snprintf(o.formats, sizeof(o.formats), "q8_0,q4_0,q4_k_m,q5_k_m,q6_k");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (a[0] != '-' && !o.src) {
			o.src = a;
			continue;
		}
		if (strcmp(a, "--reuse") == 0 || strcmp(a, "--also-mapped") == 0) {
			*(a[2] == 'r' ? &o.reuse : &o.also_mapped) = true;
			continue;
		}
		if (!v)
			return usage();
		i++;
		if (strcmp(a, "--llama-dir") == 0)
			o.llama_dir = v;
		else if (strcmp(a, "--work") == 0)
			o.work = v;
		else if (strcmp(a, "--json") == 0)
			o.json = v;
		else if (strcmp(a, "--ringserve-weights") == 0)
			o.weights = v;
		else if (strcmp(a, "--formats") == 0)
			snprintf(o.formats, sizeof(o.formats), "%s", v);
		else if (strcmp(a, "--threads") == 0)
			o.threads = atoi(v);
		else if (strcmp(a, "--rounds") == 0)
			o.rounds = (uint32_t)atoi(v);
		else if (strcmp(a, "--prompt") == 0)
			o.prompt = (uint32_t)atoi(v);
		else if (strcmp(a, "--decode") == 0)
			o.decode = (uint32_t)atoi(v);
		else if (strcmp(a, "--id-steps") == 0)
			o.id_steps = (uint32_t)atoi(v);
		else
			return usage();
	}
	if (!o.src || o.threads < 1 || o.rounds < 1 || o.rounds > MAX_ROUNDS || o.prompt < 1 ||
	    o.prompt > 512 || o.decode < 1 || o.decode > 512 || o.id_steps > 512)
		return usage();
	char work[1024];
	if (!o.work) {
		snprintf(work, sizeof(work), "%s", o.src);
		char *slash = strrchr(work, '/');
		if (slash)
			*slash = 0;
		else
			snprintf(work, sizeof(work), ".");
		o.work = work;
	}
	char err[512];
	if (llama_side_open(o.llama_dir, err, sizeof(err)) != 0) {
		fprintf(stderr, "ringserve-interop: %s\n", err);
		return 1;
	}
	printf("llama.cpp: %s\n", llama_side_system_info());
	printf("ringserve: CPU products up to %s; %d threads both, prompt %u, %u decode steps "
	       "timed, %u rounds alternated\n",
	       rs_cpu_isa() >= RS_ISA_AVX512 ? "AVX-512"
	       : rs_cpu_isa() >= RS_ISA_AVX2 ? "AVX2"
					     : "portable C",
	       o.threads, o.prompt, o.decode, o.rounds);
	struct result res[MAX_FORMATS];
	char *format[MAX_FORMATS + 1];
	uint32_t n = 0;
	int failed = 0;
	for (char *save = NULL, *f = strtok_r(o.formats, ",", &save); f && n <= MAX_FORMATS;
	     f = strtok_r(NULL, ",", &save))
		format[n++] = f;
	if (n > MAX_FORMATS) {
		fprintf(stderr, "ringserve-interop: --formats: at most %d\n", MAX_FORMATS);
		return 2;
	}
	for (uint32_t i = 0; i < n; i++)
		failed |= run_format(&o, format[i], &res[i]) != 0;
	print_table(&o, res, n);
	if (o.json)
		write_json(&o, res, n);
	return failed;
}
