/* The CPU engine's forward pass (logits of every prompt position) against a plain
 * float64 Llama written here: contiguous KV cache, double everywhere, weights decoded
 * independently. Grouped-query attention, partial RoPE, tied output; F32, F16, BF16
 * weights; the architectures' additions: q, k, v biases (Qwen2), RoPE frequency divisors
 * (Llama 3's rope_freqs) and linear scaling, and Qwen2 GGUF files, whose q and k rows the
 * reference takes from the file as they are, rotating them the NEOX way (pairs i and
 * i + rope_dim / 2) as llama.cpp does; a 128k vocabulary (Llama 3's); f16 and f32 KV caches
 * (kv_dtype "auto": f32 for f32 weights, else f16). With an f16 cache the reference rounds each key
 * and value to f16 as it caches it, as the engine does, so the tolerance stays that of fp32
 * arithmetic. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/engine/engine.h"
#include "kernels/model/dtype.h"
#include "kernels/model/gguf.h"
#include "kernels/model/model_random.h"
#include "tests/engine_test.h"

/* y[r] = sum_c W[r][c] x[c] */
static void ref_linear(double *y, const struct rs_tensor *w, const double *x, uint32_t rows,
		       uint32_t cols)
{
	for (uint32_t r = 0; r < rows; r++) {
		double acc = 0.0;
		for (uint32_t c = 0; c < cols; c++)
			acc += test_tensor_value(w, (uint64_t)r * cols + c) * x[c];
		y[r] = acc;
	}
}

static void ref_rmsnorm(double *out, const double *x, const struct rs_tensor *w, uint32_t n,
			double eps)
{
	double ss = 0.0;
	for (uint32_t i = 0; i < n; i++)
		ss += x[i] * x[i];
	double scale = 1.0 / sqrt(ss / n + eps);
	for (uint32_t i = 0; i < n; i++)
		out[i] = x[i] * scale * test_tensor_value(w, i);
}

/* RoPE: pair i turns by pos * theta^(-2i / rope_dim) / rope_freqs[i] / rope_scale; the
 * pair is (2i, 2i + 1) (Meta layout) or, with neox, (i, i + rope_dim / 2). */
static void ref_rope(double *x, uint32_t n_heads, const struct rs_model *m, bool neox, uint32_t pos)
{
	const struct rs_model_config *cfg = &m->config;
	uint32_t half = cfg->rope_dim / 2;
	for (uint32_t h = 0; h < n_heads; h++)
		for (uint32_t i = 0; i < half; i++) {
			double freq = pow(cfg->rope_theta, -2.0 * i / cfg->rope_dim);
			if (m->rope_freqs.data)
				freq /= test_tensor_value(&m->rope_freqs, i);
			if (cfg->rope_scale > 0.0f)
				freq /= cfg->rope_scale;
			double angle = pos * freq;
			double *pa = x + h * cfg->head_dim + (neox ? i : 2 * i);
			double *pb = neox ? pa + half : pa + 1, a = *pa, b = *pb;
			*pa = a * cos(angle) - b * sin(angle);
			*pb = a * sin(angle) + b * cos(angle);
		}
}

static void ref_add_bias(double *y, const struct rs_tensor *bias, uint32_t n)
{
	for (uint32_t i = 0; bias->data && i < n; i++)
		y[i] += test_tensor_value(bias, i);
}

/* x as the engine's f16 cache holds it: rounded to f32 (the engine computes in f32),
 * then to f16 (rs_f32_to_f16 is checked against a nearest-value search in engine_ops). */
static double f16_cached(double x)
{
	return test_f16_value(rs_f32_to_f16((float)x));
}

/* Logits [n][vocab] of every position of tokens, run one token at a time; with
 * kv_f16, keys and values are cached rounded to f16. */
static void ref_forward(const struct rs_model *m, const uint32_t *tokens, uint32_t n, bool kv_f16,
			bool neox, double *logits)
{
	const struct rs_model_config *cfg = &m->config;
	uint32_t dim = cfg->dim, hd = cfg->head_dim, hidden = cfg->hidden_dim;
	uint32_t q_dim = cfg->n_heads * hd, kv_dim = cfg->n_kv_heads * hd;
	uint32_t group = cfg->n_heads / cfg->n_kv_heads;
	double *x = calloc(dim, sizeof(double)), *xb = calloc(dim, sizeof(double));
	double *q = calloc(q_dim, sizeof(double)), *att = calloc(q_dim, sizeof(double));
	double *tmp = calloc(dim, sizeof(double)), *scores = calloc(n, sizeof(double));
	double *g = calloc(hidden, sizeof(double)), *u = calloc(hidden, sizeof(double));
	double *kc = calloc((size_t)cfg->n_layers * n * kv_dim, sizeof(double));
	double *vc = calloc((size_t)cfg->n_layers * n * kv_dim, sizeof(double));
	for (uint32_t p = 0; p < n; p++) {
		for (uint32_t i = 0; i < dim; i++)
			x[i] =
			    test_tensor_value(&m->token_embedding, (uint64_t)tokens[p] * dim + i);
		for (uint32_t l = 0; l < cfg->n_layers; l++) {
			const struct rs_layer_weights *w = &m->layers[l];
			double *k = kc + ((size_t)l * n + p) * kv_dim;
			double *v = vc + ((size_t)l * n + p) * kv_dim;
			ref_rmsnorm(xb, x, &w->attn_norm, dim, cfg->norm_eps);
			ref_linear(q, &w->wq, xb, q_dim, dim);
			ref_linear(k, &w->wk, xb, kv_dim, dim);
			ref_linear(v, &w->wv, xb, kv_dim, dim);
			ref_add_bias(q, &w->bq, q_dim);
			ref_add_bias(k, &w->bk, kv_dim);
			ref_add_bias(v, &w->bv, kv_dim);
			ref_rope(q, cfg->n_heads, m, neox, p);
			ref_rope(k, cfg->n_kv_heads, m, neox, p);
			for (uint32_t i = 0; kv_f16 && i < kv_dim; i++) {
				k[i] = f16_cached(k[i]);
				v[i] = f16_cached(v[i]);
			}
			for (uint32_t h = 0; h < cfg->n_heads; h++) {
				uint32_t kvh = h / group;
				double max = -INFINITY, sum = 0.0;
				for (uint32_t j = 0; j <= p; j++) {
					const double *kj =
					    kc + ((size_t)l * n + j) * kv_dim + kvh * hd;
					double dot = 0.0;
					for (uint32_t d = 0; d < hd; d++)
						dot += q[h * hd + d] * kj[d];
					scores[j] = dot / sqrt((double)hd);
					if (scores[j] > max)
						max = scores[j];
				}
				for (uint32_t j = 0; j <= p; j++) {
					scores[j] = exp(scores[j] - max);
					sum += scores[j];
				}
				for (uint32_t d = 0; d < hd; d++) {
					double acc = 0.0;
					for (uint32_t j = 0; j <= p; j++)
						acc +=
						    scores[j] / sum *
						    vc[((size_t)l * n + j) * kv_dim + kvh * hd + d];
					att[h * hd + d] = acc;
				}
			}
			ref_linear(tmp, &w->wo, att, dim, q_dim);
			for (uint32_t i = 0; i < dim; i++)
				x[i] += tmp[i];
			ref_rmsnorm(xb, x, &w->ffn_norm, dim, cfg->norm_eps);
			ref_linear(g, &w->w_gate, xb, hidden, dim);
			ref_linear(u, &w->w_up, xb, hidden, dim);
			for (uint32_t i = 0; i < hidden; i++)
				g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
			ref_linear(tmp, &w->w_down, g, dim, hidden);
			for (uint32_t i = 0; i < dim; i++)
				x[i] += tmp[i];
		}
		ref_rmsnorm(xb, x, &m->final_norm, dim, cfg->norm_eps);
		ref_linear(logits + (size_t)p * cfg->vocab_size, &m->output, xb, cfg->vocab_size,
			   dim);
	}
	free(x), free(xb), free(q), free(att), free(tmp), free(scores), free(g), free(u);
	free(kc), free(vc);
}

static int engine_threads = 2;
static const char *engine_kv_dtype = "auto";
static const char *engine_cpu_products = "auto";

/* What the reference computes from, when it is not the engine's model itself. */
struct ref_source {
	const struct rs_model *model; /* NULL: the engine's */
	bool neox;		      /* q and k in the NEOX layout (a Qwen2 file's) */
	/* A variant that must give clearly different logits (the check could fail): the
	 * same model without the feature under test. NULL: none. */
	const struct rs_model *contrast;
	bool contrast_neox;
};

static double worst_logit_error; /* over every check, for the report */

/* Run the prompt through the engine in steps of `chunk` tokens (block tables over
 * freshly allocated blocks, in reverse order so that the table is not the identity),
 * and compare every position's logits with the reference. Takes model. */
static void check_engine(const char *name, struct rs_model *model, const struct ref_source *src,
			 uint32_t block_size, uint32_t n, uint32_t chunk, uint64_t seed)
{
	const struct rs_model_config *cfg = &model->config;
	int rc;
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = "cpu";
	opts.block_size = block_size;
	opts.kv_blocks = 64;
	opts.max_batch_tokens = 256;
	opts.threads = engine_threads;
	opts.kv_dtype = engine_kv_dtype;
	opts.cpu_products = engine_cpu_products;
	struct rs_engine *engine = NULL;
	char err[256];
	rc = rs_engine_create(model, &opts, &engine, err, sizeof(err));
	CHECK(rc == 0, "%s: rs_engine_create: %d %s", name, rc, err);
	if (rc) {
		rs_model_free(model);
		return;
	}
	struct rs_kv_cache *kv = rs_engine_kv(engine);
	uint32_t n_blocks = rs_kv_blocks_for(n, block_size);
	uint32_t *table = calloc(n_blocks, sizeof(uint32_t));
	/* Take a few blocks first so that the table's blocks are not 0, 1, 2, ... */
	int spare[3];
	for (int i = 0; i < 3; i++)
		spare[i] = rs_kv_block_alloc(kv);
	for (uint32_t b = 0; b < n_blocks; b++)
		table[n_blocks - 1 - b] = (uint32_t)rs_kv_block_alloc(kv);

	uint32_t *tokens = calloc(n, sizeof(uint32_t));
	uint64_t s = seed * 7 + 1;
	for (uint32_t i = 0; i < n; i++)
		tokens[i] = (uint32_t)(test_rand(&s) % cfg->vocab_size);
	float *logits = calloc((size_t)n * cfg->vocab_size, sizeof(float));
	double *ref = calloc((size_t)n * cfg->vocab_size, sizeof(double));
	for (uint32_t start = 0; start < n; start += chunk) {
		struct rs_seq_step step = {
		    .tokens = tokens + start,
		    .n_tokens = n - start < chunk ? n - start : chunk,
		    .start_pos = start,
		    .block_table = table,
		    .n_blocks = n_blocks,
		};
		rc = rs_engine_forward_logits(engine, &step, 1,
					      logits + (size_t)start * cfg->vocab_size);
		CHECK(rc == 0, "%s: forward_logits at %u: %d", name, start, rc);
	}
	const char *kv_name = rs_engine_options(engine)->kv_dtype;
	bool kv_f16 = strcmp(kv_name, "f16") == 0;
	ref_forward(src && src->model ? src->model : model, tokens, n, kv_f16, src && src->neox,
		    ref);
	/* fp32 against float64 through a few layers: logits are O(1). */
	check_close(name, logits, ref, (size_t)n * cfg->vocab_size, 2e-4, 2e-4);
	double worst = 0.0;
	for (size_t i = 0; i < (size_t)n * cfg->vocab_size; i++)
		worst = fmax(worst, fabs(logits[i] - ref[i]));
	worst_logit_error = fmax(worst_logit_error, worst);
	if (src && src->contrast) {
		double *other = calloc((size_t)n * cfg->vocab_size, sizeof(double));
		ref_forward(src->contrast, tokens, n, kv_f16, src->contrast_neox, other);
		double apart = 0.0;
		for (size_t i = 0; i < (size_t)n * cfg->vocab_size; i++)
			apart = fmax(apart, fabs(other[i] - ref[i]));
		CHECK(apart > 0.05, "%s: the reference without the feature differs by only %g",
		      name, apart);
		printf("%-28s max |engine - ref| %.3g; without the feature %.3g\n", name, worst,
		       apart);
		free(other);
	}

	/* The logits must not be trivially flat (a test that could not fail). */
	double spread = 0.0;
	for (uint32_t i = 0; i < cfg->vocab_size; i++)
		spread += fabs(ref[i] - ref[0]);
	CHECK(spread / cfg->vocab_size > 0.1, "%s: reference logits are flat (%g)", name,
	      spread / cfg->vocab_size);

	for (int i = 0; i < 3; i++)
		rs_kv_block_unref(kv, (uint32_t)spare[i]);
	for (uint32_t b = 0; b < n_blocks; b++)
		rs_kv_block_unref(kv, table[b]);
	CHECK(rs_kv_free_count(kv) == 64, "%s: blocks leaked", name);
	free(tokens), free(logits), free(ref), free(table);
	rs_engine_destroy(engine);
	rs_model_free(model);
	printf("%-28s kv %s ok (max |engine - ref| %.3g)\n", name, kv_name, worst);
}

static void check_model(const char *name, const struct rs_model_config *cfg, enum rs_dtype dtype,
			bool tied, uint32_t block_size, uint32_t n, uint32_t chunk, uint64_t seed)
{
	struct rs_model *model = NULL;
	int rc = rs_model_random(cfg, dtype, seed, tied, &model);
	CHECK(rc == 0, "%s: rs_model_random: %d", name, rc);
	if (!rc)
		check_engine(name, model, NULL, block_size, n, chunk, seed);
}

/* A random model with an architecture's extras, in memory, against the reference; the
 * contrast is the same model without them. */
static void check_arch(const char *name, const struct rs_model_config *cfg, enum rs_dtype dtype,
		       const struct rs_model_random_extras *extras, uint32_t n, uint32_t chunk,
		       uint64_t seed)
{
	struct rs_model *model = NULL, *plain = NULL;
	struct rs_model_config plain_cfg = *cfg;
	plain_cfg.rope_scale = 0.0f;
	int rc = rs_model_random_arch(cfg, dtype, seed, false, extras, &model);
	CHECK(rc == 0, "%s: rs_model_random_arch: %d", name, rc);
	rc = rc ? rc : rs_model_random(&plain_cfg, dtype, seed, false, &plain);
	if (rc) {
		rs_model_free(model);
		return;
	}
	struct ref_source src = {.contrast = plain};
	check_engine(name, model, &src, 16, n, chunk, seed);
	rs_model_free(plain);
}

/* A whole file in a malloc'd buffer; NULL on error. */
static void *test_read_file(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	void *buf = n > 0 ? malloc((size_t)n) : NULL;
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*size = buf ? (size_t)n : 0;
	return buf;
}

/* A random model written as a GGUF file (the writer) and loaded back (the loader: keys
 * under the architecture's prefix, biases, rope_freqs, Qwen2's NEOX rows rearranged).
 * The reference reads q and k straight from the file, as they are there (neox for
 * Qwen2); the contrast takes them in the wrong layout. */
static void check_file(const char *name, const struct rs_model_config *cfg,
		       const struct rs_model_random_extras *extras, uint32_t n, uint64_t seed)
{
	char path[] = "/tmp/rs-engine-forward-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0, "%s: mkstemp", name);
	if (fd < 0)
		return;
	close(fd);
	struct rs_model *written = NULL, *loaded = NULL;
	char err[256] = "";
	int rc = rs_model_random_arch(cfg, RS_DTYPE_F32, seed, false, extras, &written);
	rc = rc ? rc : rs_gguf_write_model(path, written, NULL, err, sizeof(err));
	rc = rc ? rc : rs_model_load(path, NULL, &loaded, err, sizeof(err));
	CHECK(rc == 0, "%s: write and load: %d %s", name, rc, err);
	size_t size = 0;
	void *bytes = rc ? NULL : test_read_file(path, &size);
	struct rs_gguf *g = NULL;
	if (bytes)
		rc = rs_gguf_parse(bytes, size, &g, err, sizeof(err));
	CHECK(bytes && rc == 0, "%s: parse: %s", name, err);
	unlink(path);
	if (!g) {
		free(bytes);
		rs_model_free(written);
		rs_model_free(loaded);
		return;
	}
	CHECK(loaded->arch == extras->arch, "%s: loaded as %s", name, rs_arch_name(loaded->arch));
	/* The reference's model: the loaded one with q and k (and their biases) as stored. */
	struct rs_model raw = *loaded;
	struct rs_layer_weights *layers = calloc(cfg->n_layers, sizeof(*layers));
	raw.layers = layers;
	for (uint32_t l = 0; l < cfg->n_layers; l++) {
		layers[l] = loaded->layers[l];
		struct rs_tensor *ts[] = {&layers[l].wq, &layers[l].wk, &layers[l].bq,
					  &layers[l].bk};
		const char *parts[] = {"attn_q.weight", "attn_k.weight", "attn_q.bias",
				       "attn_k.bias"};
		for (int i = 0; i < 4; i++) {
			char tname[64];
			snprintf(tname, sizeof(tname), "blk.%u.%s", l, parts[i]);
			const struct rs_gguf_tensor *gt = rs_gguf_find_tensor(g, tname);
			CHECK(!ts[i]->data == !gt, "%s: %s present in one only", name, tname);
			if (gt)
				ts[i]->data = gt->data; /* f32, as written */
		}
	}
	bool neox = extras->arch == RS_ARCH_QWEN2;
	struct rs_model contrast = raw;
	if (!neox)
		contrast.rope_freqs.data = NULL; /* llama3: without its divisors */
	struct ref_source src = {
	    .model = &raw, .neox = neox, .contrast = &contrast, .contrast_neox = false};
	check_engine(name, loaded, &src, 16, n, n, seed);
	free(layers);
	rs_gguf_free(g);
	free(bytes);
	rs_model_free(written);
}

int main(void)
{
	struct rs_model_config cfg = test_config();

	/* Architectures. Qwen2: q, k, v biases (in memory: Meta layout; from a file: NEOX). */
	struct rs_model_random_extras qwen2 = {.arch = RS_ARCH_QWEN2};
	check_arch("qwen2 biases f32", &cfg, RS_DTYPE_F32, &qwen2, 40, 40, 21);
	check_arch("qwen2 biases bf16, chunks", &cfg, RS_DTYPE_BF16, &qwen2, 40, 9, 22);
	check_file("qwen2 GGUF file", &cfg, &qwen2, 40, 23);
	struct rs_model_config partial = cfg;
	partial.rope_dim = 8; /* NEOX pairs (i, i + 4) in the first 8 of 16 */
	check_file("qwen2 GGUF file, rope_dim 8", &partial, &qwen2, 40, 29);
	/* Llama 3.1's rope_freqs, with an original context short enough (64) that the
	 * divisors turn the pairs a test prompt reaches: 1, blended, 8. */
	struct rs_model_random_extras llama3 = {.arch = RS_ARCH_LLAMA,
						.rope_factor = 8.0f,
						.low_freq_factor = 1.0f,
						.high_freq_factor = 4.0f,
						.original_context = 64};
	check_arch("llama3 rope_freqs f32", &cfg, RS_DTYPE_F32, &llama3, 40, 40, 24);
	check_file("llama3 rope_freqs GGUF file", &cfg, &llama3, 40, 25);
	/* Linear RoPE scaling ({arch}.rope.scaling.factor). */
	struct rs_model_config linear = cfg;
	linear.rope_scale = 4.0f;
	struct rs_model_random_extras none = {.arch = RS_ARCH_LLAMA};
	check_arch("linear rope scale 4", &linear, RS_DTYPE_F32, &none, 40, 40, 26);
	/* Llama 3's 128k vocabulary with GQA (random ids across all of it). */
	struct rs_model_config big_vocab = cfg;
	big_vocab.vocab_size = 128256;
	check_model("llama3 vocab 128256", &big_vocab, RS_DTYPE_BF16, false, 16, 6, 6, 27);

	check_model("gqa f32", &cfg, RS_DTYPE_F32, false, 16, 40, 40, 1);
	check_model("gqa f16", &cfg, RS_DTYPE_F16, false, 16, 40, 40, 2);
	check_model("gqa bf16", &cfg, RS_DTYPE_BF16, false, 16, 40, 40, 3);
	check_model("gqa f32 chunks of 7", &cfg, RS_DTYPE_F32, false, 16, 40, 7, 4);
	check_model("gqa bf16 block 5, tied", &cfg, RS_DTYPE_BF16, true, 5, 33, 33, 5);

	struct rs_model_config mha = cfg;
	mha.n_kv_heads = mha.n_heads; /* plain multi-head attention */
	mha.rope_dim = 8;	      /* partial rotary */
	mha.rope_theta = 500000.0f;
	mha.n_layers = 3;
	check_model("mha rope_dim 8 f16", &mha, RS_DTYPE_F16, false, 16, 50, 50, 6);

	struct rs_model_config mqa = cfg;
	mqa.n_kv_heads = 1; /* multi-query attention */
	mqa.dim = 128;	    /* head_dim 32 */
	mqa.head_dim = 32;
	mqa.rope_dim = 32;
	check_model("mqa head_dim 32 f32", &mqa, RS_DTYPE_F32, true, 8, 30, 30, 7);

	/* Worker counts that split the GEMMs unevenly, or not at all. */
	engine_threads = 3;
	check_model("gqa f32, 3 threads", &cfg, RS_DTYPE_F32, false, 16, 40, 9, 8);
	engine_threads = 1;
	check_model("gqa f16, 1 thread", &cfg, RS_DTYPE_F16, false, 16, 40, 40, 9);

	/* The dtype "auto" did not pick for these weights. */
	engine_threads = 2;
	engine_kv_dtype = "f16";
	check_model("gqa f32", &cfg, RS_DTYPE_F32, false, 16, 40, 7, 10);
	check_model("mqa head_dim 32 f32, tied", &mqa, RS_DTYPE_F32, true, 8, 30, 30, 12);
	engine_kv_dtype = "f32";
	check_model("mha rope_dim 8 f16", &mha, RS_DTYPE_F16, false, 5, 50, 50, 11);

	/* The CBLAS products (the path of CPUs without AVX2), chosen explicitly. */
	engine_kv_dtype = "auto";
	engine_cpu_products = "blas";
	check_model("gqa f32, CBLAS", &cfg, RS_DTYPE_F32, false, 16, 40, 7, 13);
	check_model("gqa bf16 tied, CBLAS", &cfg, RS_DTYPE_BF16, true, 5, 33, 33, 14);
	check_arch("qwen2 biases f32, CBLAS", &cfg, RS_DTYPE_F32, &qwen2, 40, 7, 28);
	printf("worst |engine - reference| logit error over all checks: %.3g\n", worst_logit_error);
	TEST_END();
}
