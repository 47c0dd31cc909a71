/* Writing a random model tensor by tensor (model_stream.h, what ringserve-mkmodel does)
 * against building it in memory (rs_model_random_arch, rs_model_quantize,
 * rs_gguf_write_model):
 * - the same bytes, for every architecture (llama, llama3 with rope_freqs, qwen2 with
 *   biases and its q/k row order), every stored dtype (f32, f16, bf16) unquantized and
 *   every quantization scheme, tied and separate output, at a width whose rows are whole
 *   K-quant blocks (256) and one where they are not (64: the Q8_0 / f32 fallback);
 * - q5_k_m follows llama.cpp's Q5_K_M: general.file_type 17 (LLAMA_FTYPE_MOSTLY_Q5_K_M),
 *   Q6_K for output.weight and for attn_v / ffn_down in the layers llama.cpp's
 *   use_more_bits picks (of 9 layers: 0, 3, 6, 7, 8, worked out by hand from
 *   i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2), Q5_K for the other matrices, f32 norms;
 * - memory: a child writing a q4_k_m model of 142 MB in f32 grows its peak resident set
 *   by less than a quarter of that (building it in memory needs all of it, plus the
 *   quantized copy). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/model/dtype.h"
#include "kernels/model/gguf.h"
#include "kernels/model/model_quantize.h"
#include "kernels/model/model_random.h"
#include "kernels/model/model_stream.h"
#include "kernels/model/pretokenize.h"
#include "kernels/model/tokenizer.h"
#include "tests/harness/harness.h"

static char dir[] = "/tmp/rs_stream_XXXXXX";

static struct rs_model_config make_config(uint32_t dim, uint32_t hidden, uint32_t layers,
					  uint32_t vocab)
{
	return (struct rs_model_config){
	    .dim = dim,
	    .hidden_dim = hidden,
	    .n_layers = layers,
	    .n_heads = 4,
	    .n_kv_heads = 2,
	    .head_dim = dim / 4,
	    .rope_dim = dim / 4,
	    .vocab_size = vocab,
	    .max_seq_len = 64,
	    .rope_theta = 10000.0f,
	    .norm_eps = 1e-5f,
	};
}

/* The whole file at path, its size in *size. */
static void *read_all(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	CHECK(f, "%s: %s", path, strerror(errno));
	struct stat st;
	CHECK(fstat(fileno(f), &st) == 0, "stat %s", path);
	void *data = malloc((size_t)st.st_size + 1);
	CHECK(data && fread(data, 1, (size_t)st.st_size, f) == (size_t)st.st_size, "read %s", path);
	fclose(f);
	*size = (size_t)st.st_size;
	return data;
}

/* The in-memory path's file at a, the streamed one's at b. */
static void write_both(const char *a, const char *b, const struct rs_model_config *cfg,
		       enum rs_dtype dtype, bool tied, const struct rs_model_random_extras *x,
		       const enum rs_quant_scheme *scheme, const struct rs_tokenizer *tok)
{
	char err[256] = "";
	struct rs_model *model = NULL, *quantized = NULL;
	CHECK(rs_model_random_arch(cfg, dtype, 7, tied, x, &model) == 0, "random model");
	if (scheme)
		CHECK(rs_model_quantize(model, *scheme, &quantized) == 0, "quantize");
	CHECK(rs_gguf_write_model(a, quantized ? quantized : model, tok, err, sizeof(err)) == 0,
	      "in-memory write: %s", err);
	rs_model_free(quantized);
	rs_model_free(model);
	CHECK(rs_model_random_write_gguf(b, cfg, dtype, 7, tied, x, scheme, tok, err,
					 sizeof(err)) == 0,
	      "streamed write: %s", err);
}

static void check_same_bytes(void)
{
	static const struct {
		const char *name;
		struct rs_model_random_extras x;
		bool bpe;
	} archs[] = {
	    {"llama", {.arch = RS_ARCH_LLAMA}, false},
	    {"llama3",
	     {.arch = RS_ARCH_LLAMA,
	      .rope_factor = 8.0f,
	      .low_freq_factor = 1.0f,
	      .high_freq_factor = 4.0f,
	      .original_context = 8192},
	     true},
	    {"qwen2", {.arch = RS_ARCH_QWEN2}, true},
	};
	static const char *const schemes[] = {NULL,   "q8_0", "q4_0",	"q4_k",
					      "q5_k", "q6_k", "q4_k_m", "q5_k_m"};
	static const enum rs_dtype dtypes[] = {RS_DTYPE_F32, RS_DTYPE_F16, RS_DTYPE_BF16};
	const struct rs_model_config shapes[] = {make_config(256, 512, 9, 300),
						 make_config(64, 172, 2, 100)};
	char a[64], b[64], err[256];
	snprintf(a, sizeof(a), "%s/a.gguf", dir);
	snprintf(b, sizeof(b), "%s/b.gguf", dir);
	unsigned compared = 0;
	for (size_t ai = 0; ai < sizeof(archs) / sizeof(archs[0]); ai++) {
		struct rs_tokenizer *tok;
		CHECK((archs[ai].bpe
			   ? rs_tokenizer_demo_bpe(300, RS_PRETOK_LLAMA3, &tok, err, sizeof(err))
			   : rs_tokenizer_demo(300, &tok, err, sizeof(err))) == 0,
		      "tokenizer: %s", err);
		for (size_t si = 0; si < sizeof(schemes) / sizeof(schemes[0]); si++)
			for (size_t di = 0; di < 3; di++)
				for (size_t shape = 0; shape < 2; shape++)
					for (int tied = 0; tied < 2; tied++) {
						/* Quantized files come from f32 models, as
						 * mkmodel's; f16 and bf16 sources once, with
						 * q4_k_m. */
						if (schemes[si] && di &&
						    strcmp(schemes[si], "q4_k_m"))
							continue;
						enum rs_quant_scheme scheme;
						if (schemes[si])
							CHECK(rs_quant_scheme_parse(schemes[si],
										    &scheme) == 0,
							      "%s", schemes[si]);
						struct rs_model_config cfg = shapes[shape];
						cfg.vocab_size = 300;
						write_both(a, b, &cfg, dtypes[di], tied,
							   &archs[ai].x,
							   schemes[si] ? &scheme : NULL, tok);
						size_t na, nb;
						void *da = read_all(a, &na), *db = read_all(b, &nb);
						CHECK(
						    na == nb && memcmp(da, db, na) == 0,
						    "%s %s from %s, dim %u, %s: the streamed file "
						    "(%zu bytes) differs from the in-memory one "
						    "(%zu)",
						    archs[ai].name,
						    schemes[si] ? schemes[si] : "unquantized",
						    rs_dtype_name(dtypes[di]), cfg.dim,
						    tied ? "tied" : "separate", nb, na);
						free(da);
						free(db);
						compared++;
					}
		rs_tokenizer_free(tok);
	}
	printf("same bytes: %u model files\n", compared);
}

static void check_q5_k_m_types(void)
{
	struct rs_model_config cfg = make_config(256, 512, 9, 300);
	enum rs_quant_scheme scheme;
	CHECK(rs_quant_scheme_parse("q5_k_m", &scheme) == 0, "q5_k_m is a scheme");
	char path[64], err[256];
	snprintf(path, sizeof(path), "%s/q5km.gguf", dir);
	CHECK(rs_model_random_write_gguf(path, &cfg, RS_DTYPE_F32, 3, false, NULL, &scheme, NULL,
					 err, sizeof(err)) == 0,
	      "write: %s", err);
	size_t size;
	void *data = read_all(path, &size);
	struct rs_gguf *g;
	CHECK(rs_gguf_parse(data, size, &g, err, sizeof(err)) == 0, "parse: %s", err);
	uint32_t file_type = 0;
	CHECK(rs_gguf_get_u32(g, "general.file_type", &file_type) == 0 && file_type == 17,
	      "general.file_type %u, want 17 (MOSTLY_Q5_K_M)", file_type);
	static const bool more_bits[9] = {1, 0, 0, 1, 0, 0, 1, 1, 1};
	unsigned q6 = 0;
	for (uint64_t i = 0; i < rs_gguf_n_tensors(g); i++) {
		const struct rs_gguf_tensor *t = rs_gguf_tensor_at(g, i);
		char name[96];
		snprintf(name, sizeof(name), "%.*s", (int)t->name.len, t->name.ptr);
		unsigned layer = 0;
		char part[64] = "";
		sscanf(name, "blk.%u.%63s", &layer, part);
		uint32_t want = RS_GGUF_TENSOR_Q5_K;
		if (t->n_dims == 1)
			want = RS_GGUF_TENSOR_F32;
		else if (!strcmp(name, "output.weight") ||
			 ((!strcmp(part, "attn_v.weight") || !strcmp(part, "ffn_down.weight")) &&
			  more_bits[layer]))
			want = RS_GGUF_TENSOR_Q6_K;
		CHECK(t->type == want, "%s: type %u, want %u", name, t->type, want);
		q6 += want == RS_GGUF_TENSOR_Q6_K;
	}
	CHECK(q6 == 11, "%u Q6_K tensors, want 5 layers x 2 + output", q6);
	rs_gguf_free(g);
	free(data);
	printf("q5_k_m: file_type 17, %u Q6_K tensors where llama.cpp puts them\n", q6);
}

/* Peak resident set of a child writing a q4_k_m model, over its resident set before. */
static void check_memory(void)
{
	/* 8 layers of dim 512, hidden 1536, and 2 x 8192 x 512: 35.6 M weights, 142 MB f32. */
	struct rs_model_config cfg = make_config(512, 1536, 8, 8192);
	double f32_mb = (8.0 * (4 * 512 * 512 + 3 * 512 * 1536) + 2 * 8192.0 * 512) * 4 / 1e6;
	int fds[2];
	CHECK(pipe(fds) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		struct rusage before, after;
		getrusage(RUSAGE_SELF, &before);
		enum rs_quant_scheme scheme = RS_QUANT_Q4_K_M;
		char path[64], err[256];
		snprintf(path, sizeof(path), "%s/big.gguf", dir);
		int rc = rs_model_random_write_gguf(path, &cfg, RS_DTYPE_F32, 1, false, NULL,
						    &scheme, NULL, err, sizeof(err));
		getrusage(RUSAGE_SELF, &after);
		double grew_mb = rc ? -1.0 : (after.ru_maxrss - before.ru_maxrss) / 1024.0;
		if (rc)
			fprintf(stderr, "write: %s\n", err);
		_exit(write(fds[1], &grew_mb, sizeof(grew_mb)) == sizeof(grew_mb) ? 0 : 1);
	}
	close(fds[1]);
	double grew_mb = -1.0;
	CHECK(read(fds[0], &grew_mb, sizeof(grew_mb)) == sizeof(grew_mb), "child's report");
	close(fds[0]);
	int status;
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && !WEXITSTATUS(status),
	      "child");
	CHECK(grew_mb >= 0.0, "the streamed write failed");
	CHECK(grew_mb < f32_mb / 4, "peak resident set grew %.1f MB writing a %.0f MB (f32) model",
	      grew_mb, f32_mb);
	printf("memory: peak resident set +%.1f MB writing a model of %.0f MB in f32\n", grew_mb,
	       f32_mb);
	char path[64];
	snprintf(path, sizeof(path), "%s/big.gguf", dir);
	unlink(path);
}

int main(void)
{
	CHECK(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	/* AddressSanitizer keeps freed memory in its quarantine (256 MB by default), so the
	 * peak resident set says nothing about the writer there. */
#ifdef __SANITIZE_ADDRESS__
	printf("memory: not checked under AddressSanitizer (its quarantine holds freed "
	       "buffers)\n");
#else
	check_memory();
#endif
	check_q5_k_m_types();
	check_same_bytes();
	char path[64];
	const char *names[] = {"a.gguf", "b.gguf", "q5km.gguf"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	rmdir(dir);
	return T_EXIT_PASS;
}
