/* Quantized models end to end (issue 11): a random f32 model quantized by our quantizer
 * (rs_model_quantize, as ringserve-mkmodel --dtype does), written to GGUF, loaded back
 * and run by the CPU engine.
 * - The file keeps the blocks: the loaded tensors have the quantized types and the same
 *   bytes, and point into the file's mapping (not expanded).
 * - Logits against the f32 original's, over a prefill of 16 tokens (the dequantize +
 *   SGEMM path) and 4 decode steps (the 8-bit integer path): relative RMS error
 *   ||l_q - l_f32|| / ||l_f32|| <= 3 e sqrt(2 L + 1). e is the format's relative RMS
 *   rounding error on uniform weights (step / sqrt(12) over the data's RMS a / sqrt(3)
 *   for data in [-a, a]: Q8_0 2a/254 steps -> 0.0039, Q4_0 a/8 -> 0.0625, Q4_K 2a/15 ->
 *   0.0667, Q5_K 2a/31 -> 0.0323, Q6_K a/32 -> 0.0156; Q4_K_M is taken as Q4_K), at
 *   least the activations' 8-bit rounding (0.0039); each of the 2 L + 1 matrix
 *   products on the way to the logits adds an independent error of that relative size
 *   (hence the square root), and 3 leaves room for the network amplifying them.
 * - Greedy ids (and logits, bit for bit) equal across the CPU ISAs: portable C ("blas"),
 *   AVX2 and AVX-512 where the CPU has them.
 * - Weights copied into huge-page memory (options.cpu_weights "copy") give the same
 *   bits as read from the mapping, and the mapping's pages of them are given back.
 * - Malformed files refused with a message: a Q4_K tensor whose rows are not whole
 *   blocks, an unsupported block type (Q2_K); the writer refuses such a tensor too. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/cpu/ops.h"
#include "kernels/engine/engine.h"
#include "kernels/engine/kv_cache.h"
#include "kernels/model/dtype.h"
#include "kernels/model/gguf.h"
#include "kernels/model/model_quantize.h"
#include "kernels/model/model_random.h"
#include "kernels/model/quant.h"
#include "tests/engine_test.h"

enum { PREFILL = 16, DECODE = 4, N_POS = PREFILL + DECODE };

static char dir[] = "/tmp/rs_quant_XXXXXX";

static const struct rs_model_config config = {
    .dim = 256,
    .hidden_dim = 512,
    .n_layers = 2,
    .n_heads = 4,
    .n_kv_heads = 2,
    .head_dim = 64,
    .vocab_size = 512,
    .max_seq_len = 64,
    .rope_dim = 64,
    .rope_theta = 10000.0f,
    .norm_eps = 1e-5f,
};

static const char *engine_cpu_weights = "auto";

static struct rs_engine *make_engine(const struct rs_model *m, const char *products)
{
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = "cpu";
	opts.block_size = 16;
	opts.kv_blocks = 8;
	opts.max_batch_tokens = 64;
	opts.threads = 2;
	opts.kv_dtype = "f32";
	opts.cpu_products = products;
	opts.cpu_weights = engine_cpu_weights;
	struct rs_engine *e = NULL;
	char err[256] = "";
	int rc = rs_engine_create(m, &opts, &e, err, sizeof(err));
	CHECK(rc == 0, "engine (%s): %d %s", products, rc, err);
	return rc ? NULL : e;
}

/* Logits of every position: tokens[0..PREFILL) as one step, then one token a step. With
 * greedy, the decode tokens are the argmax of the previous position (written back). */
static void run(struct rs_engine *e, uint32_t *tokens, bool greedy, float *logits)
{
	struct rs_kv_cache *kv = rs_engine_kv(e);
	uint32_t table[4];
	for (int b = 0; b < 4; b++)
		table[b] = (uint32_t)rs_kv_block_alloc(kv);
	struct rs_seq_step step = {
	    .tokens = tokens, .n_tokens = PREFILL, .block_table = table, .n_blocks = 4};
	CHECK(rs_engine_forward_logits(e, &step, 1, logits) == 0, "prefill");
	for (uint32_t p = PREFILL; p < N_POS; p++) {
		if (greedy) {
			const float *prev = logits + (size_t)(p - 1) * config.vocab_size;
			uint32_t best = 0;
			for (uint32_t v = 1; v < config.vocab_size; v++)
				if (prev[v] > prev[best])
					best = v;
			tokens[p] = best;
		}
		step = (struct rs_seq_step){.tokens = tokens + p,
					    .n_tokens = 1,
					    .start_pos = p,
					    .block_table = table,
					    .n_blocks = 4};
		CHECK(rs_engine_forward_logits(e, &step, 1,
					       logits + (size_t)p * config.vocab_size) == 0,
		      "decode at %u", p);
	}
	for (int b = 0; b < 4; b++)
		rs_kv_block_unref(kv, table[b]);
}

static bool in_mapping(const struct rs_model *m, const struct rs_tensor *t)
{
	const char *base = m->mapping, *p = t->data;
	return base && p >= base && p < base + m->mapping_size;
}

/* The loaded model's tensors have src's types and bytes, in the mapping. */
static void check_loaded(const struct rs_model *src, const struct rs_model *got, const char *name)
{
	const struct rs_tensor *a[] = {&src->token_embedding,  &src->output,
				       &src->layers[0].wq,     &src->layers[0].wv,
				       &src->layers[1].w_down, &src->final_norm};
	const struct rs_tensor *b[] = {&got->token_embedding,  &got->output,
				       &got->layers[0].wq,     &got->layers[0].wv,
				       &got->layers[1].w_down, &got->final_norm};
	for (size_t i = 0; i < sizeof(a) / sizeof(a[0]); i++) {
		CHECK(a[i]->dtype == b[i]->dtype, "%s tensor %zu: dtype %s, loaded %s", name, i,
		      rs_dtype_name(a[i]->dtype), rs_dtype_name(b[i]->dtype));
		size_t bytes = a[i]->rows * rs_dtype_row_bytes(a[i]->dtype, a[i]->cols);
		CHECK(bytes && memcmp(a[i]->data, b[i]->data, bytes) == 0,
		      "%s tensor %zu: bytes differ", name, i);
		CHECK(in_mapping(got, b[i]), "%s tensor %zu: not in the file mapping", name, i);
	}
}

/* Resident bytes of the mapping that starts at base, from /proc/self/smaps; -1 if absent. */
static long mapping_rss(const void *base)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	REQUIRE(f);
	char line[512];
	bool in = false;
	long rss = -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi, kb;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, ' ') < strchr(line, ':'))
			in = lo == (unsigned long)(uintptr_t)base;
		else if (in && sscanf(line, "Rss: %lu kB", &kb) == 1)
			rss = (long)kb * 1024;
	}
	fclose(f);
	return rss;
}

/* options.cpu_weights: "copy" (the weights moved into huge-page memory) gives the same
 * bits as "mapped" (read in place), and gives the mapping's pages of the matrices back:
 * after a run the mapping's resident part is at most the file less those matrices (plus
 * a page at each end of each), where "mapped" has them resident. */
static void test_weights_copy(const struct rs_model *m, const uint32_t *tokens, const char *name)
{
	size_t n_logits = (size_t)N_POS * config.vocab_size, matrices = 0;
	uint32_t n_matrices = 1;
	matrices += m->output.rows * rs_dtype_row_bytes(m->output.dtype, m->output.cols);
	for (uint32_t l = 0; l < m->config.n_layers; l++) {
		const struct rs_tensor *t[] = {
		    &m->layers[l].wq,	  &m->layers[l].wk,   &m->layers[l].wv,	   &m->layers[l].wo,
		    &m->layers[l].w_gate, &m->layers[l].w_up, &m->layers[l].w_down};
		for (int i = 0; i < 7; i++, n_matrices++)
			matrices += t[i]->rows * rs_dtype_row_bytes(t[i]->dtype, t[i]->cols);
	}
	long bound = (long)(m->mapping_size - matrices) + 2L * 4096 * n_matrices;
	float *lg[2] = {malloc(n_logits * sizeof(float)), malloc(n_logits * sizeof(float))};
	long rss[2];
	const char *modes[] = {"mapped", "copy"};
	for (int k = 0; k < 2; k++) {
		uint32_t ids[N_POS];
		memcpy(ids, tokens, sizeof(ids));
		engine_cpu_weights = modes[k];
		struct rs_engine *e = make_engine(m, "auto");
		REQUIRE(e);
		CHECK(strcmp(rs_engine_options(e)->cpu_weights, modes[k]) == 0, "%s resolved as %s",
		      modes[k], rs_engine_options(e)->cpu_weights);
		run(e, ids, true, lg[k]);
		rss[k] = mapping_rss(m->mapping);
		rs_engine_destroy(e);
		/* Out of this process's pages again for the next engine. */
		madvise(m->mapping, m->mapping_size, MADV_DONTNEED);
	}
	engine_cpu_weights = "bogus";
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = "cpu";
	opts.cpu_weights = "bogus";
	struct rs_engine *e = NULL;
	char err[256] = "";
	CHECK(rs_engine_create(m, &opts, &e, err, sizeof(err)) == -EINVAL && strstr(err, "bogus"),
	      "cpu_weights \"bogus\" accepted (%s)", err);
	engine_cpu_weights = "auto";
	CHECK(memcmp(lg[0], lg[1], n_logits * sizeof(float)) == 0,
	      "%s: logits with the weights copied differ from mapped", name);
	CHECK(rss[0] > bound,
	      "%s mapped: the mapping's resident %ld B, not above %ld: the check "
	      "cannot tell",
	      name, rss[0], bound);
	CHECK(rss[1] >= 0 && rss[1] <= bound, "%s copied: the mapping keeps %ld B resident > %ld",
	      name, rss[1], bound);
	printf("%-7s weights copied: same logits; the mapping's resident bytes %ld (mapped: %ld, "
	       "file %zu)\n",
	       name, rss[1], rss[0], m->mapping_size);
	free(lg[0]);
	free(lg[1]);
}

static double rel_error(const float *a, const float *ref, size_t n)
{
	double d = 0, r = 0;
	for (size_t i = 0; i < n; i++) {
		d += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
		r += (double)ref[i] * ref[i];
	}
	return sqrt(d / r);
}

static void *read_all(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	REQUIRE(f);
	fseek(f, 0, SEEK_END);
	*size = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	void *data = malloc(*size);
	REQUIRE(data && fread(data, 1, *size, f) == *size);
	fclose(f);
	return data;
}

/* The type field of tensor name in a GGUF header: after the name come n_dims (u32),
 * ne[n_dims] (u64 each), then the type (u32). */
static uint8_t *type_field(uint8_t *data, size_t size, const char *name)
{
	size_t len = strlen(name);
	for (size_t i = 8; i + len + 4 < size; i++)
		if (!memcmp(data + i, name, len) && data[i - 8] == len) {
			uint32_t n_dims;
			memcpy(&n_dims, data + i + len, 4);
			return data + i + len + 4 + 8 * (size_t)n_dims;
		}
	return NULL;
}

/* A copy of the file at path with blk.0.attn_q.weight's type set to type: loading it
 * fails with a message containing expect. */
static void check_refused(const char *path, uint32_t type, const char *expect)
{
	size_t size;
	uint8_t *data = read_all(path, &size);
	uint8_t *field = type_field(data, size, "blk.0.attn_q.weight");
	REQUIRE(field);
	memcpy(field, &type, 4);
	struct rs_model *m = NULL;
	char err[512] = "";
	int rc = rs_model_load_memory(data, size, &m, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, expect), "type %u: rc %d, message '%s' (expected '%s')",
	      type, rc, err, expect);
	if (!rc)
		rs_model_free(m);
	else
		printf("refused as expected: %s\n", err);
	free(data);
}

static void test_malformed(const struct rs_model *f32)
{
	/* dim 256 rows quantized as Q8_0 (34 B per 32); retyped as Q4_K (256 per block)
	 * the rows of ffn_down (512) would fit, attn_q's 256 too: use a dim-288 model, whose
	 * rows are whole Q8_0 blocks (9) but not whole Q4_K blocks. */
	struct rs_model_config c = config;
	c.dim = 288;
	c.head_dim = 72;
	c.rope_dim = 72;
	struct rs_model *m = NULL, *q = NULL;
	REQUIRE(rs_model_random(&c, RS_DTYPE_F32, 9, false, &m) == 0);
	REQUIRE(rs_model_quantize(m, RS_QUANT_Q8_0, &q) == 0);
	char path[256], err[512] = "";
	snprintf(path, sizeof(path), "%s/q8_288.gguf", dir);
	REQUIRE(rs_gguf_write_model(path, q, NULL, err, sizeof(err)) == 0);
	check_refused(path, RS_GGUF_TENSOR_Q4_K, "not a multiple of 256");
	check_refused(path, 10 /* Q2_K */, "Q2_K");
	/* The writer refuses a Q4_K tensor of 288 columns. */
	struct rs_gguf_writer *w;
	REQUIRE(rs_gguf_writer_create(&w) == 0);
	uint64_t ne[2] = {288, 2};
	static uint8_t zeros[2 * 2 * 176];
	CHECK(rs_gguf_writer_add_tensor(w, "x", RS_GGUF_TENSOR_Q4_K, ne, 2, zeros) == -EINVAL,
	      "the writer takes a Q4_K row of 288");
	ne[0] = 512;
	CHECK(rs_gguf_writer_add_tensor(w, "x", RS_GGUF_TENSOR_Q4_K, ne, 2, zeros) == 0,
	      "the writer refuses a Q4_K row of 512");
	rs_gguf_writer_free(w);
	unlink(path);
	rs_model_free(q);
	rs_model_free(m);
	(void)f32;
}

/* Qwen2's biases and Llama 3's rope_freqs survive quantization: written, loaded and run,
 * the q8_0 model's logits are as close to its f32 original's as a plain Llama's (the same
 * tolerance), which they are not without the biases or divisors (each changes the logits
 * far more: tests/engine_forward). */
static void test_architectures(const uint32_t *tokens, float *ref, float *got, double tol)
{
	static const struct rs_model_random_extras variants[] = {
	    {.arch = RS_ARCH_QWEN2},
	    {.arch = RS_ARCH_LLAMA,
	     .rope_factor = 8,
	     .low_freq_factor = 1,
	     .high_freq_factor = 4,
	     .original_context = 16},
	};
	static const char *names[] = {"qwen2", "llama3"};
	size_t n_logits = (size_t)N_POS * config.vocab_size;
	for (int v = 0; v < 2; v++) {
		struct rs_model *f32 = NULL, *q = NULL, *loaded = NULL;
		REQUIRE(rs_model_random_arch(&config, RS_DTYPE_F32, 11, false, &variants[v],
					     &f32) == 0);
		REQUIRE(rs_model_quantize(f32, RS_QUANT_Q8_0, &q) == 0);
		char path[256], err[512] = "";
		snprintf(path, sizeof(path), "%s/%s.gguf", dir, names[v]);
		CHECK(rs_gguf_write_model(path, q, NULL, err, sizeof(err)) == 0, "write %s", err);
		REQUIRE(rs_model_load(path, NULL, &loaded, err, sizeof(err)) == 0);
		CHECK(loaded->arch == variants[v].arch, "%s: architecture %d", names[v],
		      loaded->arch);
		CHECK((loaded->layers[0].bq.data != NULL) == (v == 0), "%s: biases", names[v]);
		CHECK((loaded->rope_freqs.data != NULL) == (v == 1), "%s: rope_freqs", names[v]);
		uint32_t ids[N_POS];
		memcpy(ids, tokens, sizeof(ids));
		struct rs_engine *e = make_engine(f32, "auto");
		REQUIRE(e);
		run(e, ids, false, ref);
		rs_engine_destroy(e);
		e = make_engine(loaded, "auto");
		REQUIRE(e);
		run(e, ids, false, got);
		rs_engine_destroy(e);
		double err_rel = rel_error(got, ref, n_logits);
		printf("%-7s q8_0 logits relative RMS error %.4f (tolerance %.4f)\n", names[v],
		       err_rel, tol);
		CHECK(err_rel <= tol, "%s q8_0: logits relative error %.4f > %.4f", names[v],
		      err_rel, tol);
		unlink(path);
		rs_model_free(loaded);
		rs_model_free(q);
		rs_model_free(f32);
	}
}

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	struct rs_model *f32 = NULL;
	if (rs_model_random(&config, RS_DTYPE_F32, 5, false, &f32)) {
		fprintf(stderr, "rs_model_random failed\n");
		return 1;
	}
	size_t n_logits = (size_t)N_POS * config.vocab_size;
	uint32_t tokens[N_POS];
	uint64_t s = 3;
	for (int i = 0; i < N_POS; i++)
		tokens[i] = (uint32_t)(test_rand(&s) % config.vocab_size);
	float *ref = malloc(n_logits * sizeof(float)), *got = malloc(n_logits * sizeof(float));
	struct rs_engine *e = make_engine(f32, "auto");
	if (!e)
		return 1;
	run(e, tokens, false, ref);
	rs_engine_destroy(e);

	static const struct {
		const char *name;
		double e;
	} schemes[] = {{"q8_0", 0.0039}, {"q4_0", 0.0625}, {"q4_k", 0.0667},
		       {"q5_k", 0.0323}, {"q6_k", 0.0156}, {"q4_k_m", 0.0667}};
	double layers_factor = sqrt(2.0 * config.n_layers + 1);
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		enum rs_quant_scheme scheme;
		REQUIRE(rs_quant_scheme_parse(schemes[i].name, &scheme) == 0);
		struct rs_model *q = NULL, *loaded = NULL;
		REQUIRE(rs_model_quantize(f32, scheme, &q) == 0);
		char path[256], err[512] = "";
		snprintf(path, sizeof(path), "%s/%s.gguf", dir, schemes[i].name);
		CHECK(rs_gguf_write_model(path, q, NULL, err, sizeof(err)) == 0, "write %s: %s",
		      path, err);
		int rc = rs_model_load(path, NULL, &loaded, err, sizeof(err));
		CHECK(rc == 0, "load %s: %s", path, err);
		if (rc) {
			rs_model_free(q);
			continue;
		}
		check_loaded(q, loaded, schemes[i].name);
		e = make_engine(loaded, "auto");
		if (e) {
			run(e, tokens, false, got);
			rs_engine_destroy(e);
			double err_rel = rel_error(got, ref, n_logits);
			double tol = 3 * fmax(schemes[i].e, 0.0039) * layers_factor;
			printf("%-7s logits relative RMS error %.4f (tolerance %.4f)\n",
			       schemes[i].name, err_rel, tol);
			CHECK(err_rel <= tol, "%s: logits relative error %.4f > %.4f",
			      schemes[i].name, err_rel, tol);
		}
		if (scheme == RS_QUANT_Q4_K_M || scheme == RS_QUANT_Q8_0)
			test_weights_copy(loaded, tokens, schemes[i].name);
		if (scheme == RS_QUANT_Q4_K_M || scheme == RS_QUANT_Q8_0) {
			/* Greedy ids and logits across the ISAs. */
			const char *isas[] = {"blas", "avx2", "ours"};
			enum rs_cpu_isa isa_of[] = {RS_ISA_PORTABLE, RS_ISA_AVX2, RS_ISA_AVX512};
			uint32_t ids[3][N_POS];
			float *lg[3] = {NULL, NULL, NULL};
			for (int k = 0; k < 3 && isa_of[k] <= rs_cpu_isa(); k++) {
				memcpy(ids[k], tokens, sizeof(tokens));
				lg[k] = malloc(n_logits * sizeof(float));
				e = make_engine(loaded, isas[k]);
				if (!e)
					continue;
				run(e, ids[k], true, lg[k]);
				rs_engine_destroy(e);
				if (k == 0)
					continue;
				CHECK(memcmp(ids[k], ids[0], sizeof(ids[0])) == 0,
				      "%s: greedy ids with %s differ from portable C's",
				      schemes[i].name, isas[k]);
				/* Decode positions use the integer kernels: the same bits. */
				size_t dec = (size_t)PREFILL * config.vocab_size;
				CHECK(memcmp(lg[k] + dec, lg[0] + dec,
					     (n_logits - dec) * sizeof(float)) == 0,
				      "%s: decode logits with %s differ from portable C's bits",
				      schemes[i].name, isas[k]);
			}
			printf("%-7s greedy ids equal across %s\n", schemes[i].name,
			       rs_cpu_isa() == RS_ISA_AVX512 ? "C, AVX2, AVX-512"
			       : rs_cpu_isa() == RS_ISA_AVX2 ? "C, AVX2"
							     : "C only");
			for (int k = 0; k < 3; k++)
				free(lg[k]);
		}
		rs_model_free(loaded);
		rs_model_free(q);
	}
	test_architectures(tokens, ref, got, 3 * 0.0039 * layers_factor);
	test_malformed(f32);
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		char path[256];
		snprintf(path, sizeof(path), "%s/%s.gguf", dir, schemes[i].name);
		unlink(path);
	}
	rmdir(dir);
	free(ref);
	free(got);
	rs_model_free(f32);
	return test_failures ? 1 : 0;
}
