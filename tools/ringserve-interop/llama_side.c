/* llama.cpp opened at run time (see llama_side.h). Every function is looked up by the name
 * llama.h declares and called through a pointer of that declaration's type, so the calls
 * are checked against the same header the library was built from. */
#include <dlfcn.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llama.h>

#include "tools/ringserve-interop/llama_side.h"

#define LLAMA_FUNCTIONS(X)                                                                         \
	X(ggml_backend_load_all_from_path)                                                         \
	X(llama_log_set)                                                                           \
	X(llama_backend_init)                                                                      \
	X(llama_print_system_info)                                                                 \
	X(llama_model_quantize_default_params)                                                     \
	X(llama_model_quantize)                                                                    \
	X(llama_model_default_params)                                                              \
	X(llama_context_default_params)                                                            \
	X(llama_model_load_from_file)                                                              \
	X(llama_model_free)                                                                        \
	X(llama_init_from_model)                                                                   \
	X(llama_free)                                                                              \
	X(llama_get_memory)                                                                        \
	X(llama_memory_clear)                                                                      \
	X(llama_batch_get_one)                                                                     \
	X(llama_decode)                                                                            \
	X(llama_get_logits_ith)

static struct {
#define FIELD(name) __typeof__(name) *name;
	LLAMA_FUNCTIONS(FIELD)
#undef FIELD
} lc;

struct llama_side {
	struct llama_model *model;
	struct llama_context *ctx;
	int32_t tokens[4096];
};

static void quiet(enum ggml_log_level level, const char *text, void *user)
{
	(void)level, (void)text, (void)user;
}

int llama_side_open(const char *dir, char *err, size_t err_size)
{
	char pattern[1024];
	glob_t g;
	snprintf(pattern, sizeof(pattern), "%s/libllama*.so", dir);
	if (glob(pattern, 0, NULL, &g) != 0) {
		snprintf(err, err_size, "no libllama in %s (tools/fetch-llama-cpp.sh fetches it)",
			 dir);
		return -1;
	}
	const char *path = NULL;
	for (size_t i = 0; i < g.gl_pathc && !path; i++)
		if (!strstr(g.gl_pathv[i], "common"))
			path = g.gl_pathv[i];
	void *h = path ? dlopen(path, RTLD_NOW | RTLD_GLOBAL) : NULL;
	if (!h)
		snprintf(err, err_size, "cannot open libllama: %s", path ? dlerror() : "none");
	globfree(&g);
	if (!h)
		return -1;
#define LOOKUP(name)                                                                               \
	if (!(*(void **)&lc.name = dlsym(h, #name)) &&                                             \
	    !(*(void **)&lc.name = dlsym(RTLD_DEFAULT, #name))) {                                  \
		snprintf(err, err_size, "libllama lacks %s", #name);                               \
		return -1;                                                                         \
	}
	LLAMA_FUNCTIONS(LOOKUP)
#undef LOOKUP
	lc.llama_log_set(quiet, NULL);
	lc.ggml_backend_load_all_from_path(dir);
	lc.llama_backend_init();
	return 0;
}

const char *llama_side_system_info(void)
{
	return lc.llama_print_system_info();
}

int llama_side_quantize(const char *src, const char *dst, const char *scheme, int threads)
{
	static const struct {
		const char *name;
		enum llama_ftype ftype;
	} schemes[] = {
	    {"q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},	   {"q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},
	    {"q4_k_m", LLAMA_FTYPE_MOSTLY_Q4_K_M}, {"q5_k_m", LLAMA_FTYPE_MOSTLY_Q5_K_M},
	    {"q6_k", LLAMA_FTYPE_MOSTLY_Q6_K},
	};
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		if (strcmp(scheme, schemes[i].name) == 0) {
			llama_model_quantize_params p = lc.llama_model_quantize_default_params();
			p.nthread = threads;
			p.ftype = schemes[i].ftype;
			return lc.llama_model_quantize(src, dst, &p) == 0 ? 0 : -1;
		}
	return -1;
}

struct llama_side *llama_side_load(const char *path, uint32_t n_ctx, int threads)
{
	struct llama_side *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	struct llama_model_params mp = lc.llama_model_default_params();
	mp.n_gpu_layers = 0;
	s->model = lc.llama_model_load_from_file(path, mp);
	if (!s->model) {
		free(s);
		return NULL;
	}
	struct llama_context_params cp = lc.llama_context_default_params();
	cp.n_ctx = n_ctx;
	cp.n_batch = cp.n_ubatch = n_ctx < 512 ? n_ctx : 512;
	cp.n_threads = cp.n_threads_batch = threads;
	cp.no_perf = true;
	s->ctx = lc.llama_init_from_model(s->model, cp);
	if (!s->ctx) {
		llama_side_free(s);
		return NULL;
	}
	return s;
}

void llama_side_free(struct llama_side *s)
{
	if (!s)
		return;
	if (s->ctx)
		lc.llama_free(s->ctx);
	if (s->model)
		lc.llama_model_free(s->model);
	free(s);
}

void llama_side_clear(struct llama_side *s)
{
	lc.llama_memory_clear(lc.llama_get_memory(s->ctx), true);
}

const float *llama_side_eval(struct llama_side *s, const uint32_t *tokens, uint32_t n)
{
	if (n == 0 || n > sizeof(s->tokens) / sizeof(s->tokens[0]))
		return NULL;
	for (uint32_t i = 0; i < n; i++)
		s->tokens[i] = (int32_t)tokens[i];
	if (lc.llama_decode(s->ctx, lc.llama_batch_get_one(s->tokens, (int32_t)n)) != 0)
		return NULL;
	return lc.llama_get_logits_ith(s->ctx, -1);
}
