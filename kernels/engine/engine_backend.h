/* Internal: the engine object and the table of operations each backend implements.
 * Only engine.c and the backends (cpu_backend.c, kernels/cuda/) include this. */
#ifndef RS_KERNELS_ENGINE_BACKEND_H
#define RS_KERNELS_ENGINE_BACKEND_H

#include <stdbool.h>

#include "kernels/engine/engine.h"

struct rs_engine {
	const struct rs_model *model;
	struct rs_model_config config;
	struct rs_engine_options options; /* resolved */
	struct rs_kv_cache *kv;
	const struct rs_engine_backend *backend;
	void *impl;	    /* the backend's state */
	double *rope_freqs; /* [rope_dim / 2]: rs_model_rope_freqs, for the backends' tables */
};

/* The layer's q, k, v biases as one [q_dim + 2 kv_dim] f32 vector (zeros where the model
 * has none) in out, or false (out untouched) when the layer has no bias at all. */
bool rs_engine_qkv_bias(const struct rs_engine *engine, uint32_t layer, float *out);

/* A backend. engine.c has validated options and steps before any call. */
struct rs_engine_backend {
	const char *name;
	/* Set up engine->impl (weights, KV storage, scratch). Returns 0 or -errno with a
	 * message in err. */
	int (*create)(struct rs_engine *engine, char *err, size_t err_size);
	void (*destroy)(struct rs_engine *engine);
	/* Run or enqueue a validated step; with logits != NULL, synchronously compute the
	 * logits of every position instead of sampling. */
	int (*step)(struct rs_engine *engine, uint32_t lane, const struct rs_seq_step *seqs,
		    uint32_t n_seqs, uint32_t n_tokens, float *logits);
	int (*poll)(struct rs_engine *engine, uint32_t lane);
	int (*wait)(struct rs_engine *engine, uint32_t lane);
	/* Optional (NULL: always usable): 0 when the backend can run here, else -ENODEV with
	 * the reason in err. Called before create, by "auto" to choose and by an explicit
	 * choice to refuse early. */
	int (*available)(char *err, size_t err_size);
	/* Optional (NULL: nothing to do, host memory is written directly): make host memory
	 * writable by the backend's device in place (see rs_engine_register_host). */
	int (*register_host)(struct rs_engine *engine, void *ptr, size_t size);
	int (*unregister_host)(struct rs_engine *engine, void *ptr);
	/* Optional (NULL: -ENOTSUP): see rs_engine_step_fd; lane checked. */
	int (*step_fd)(struct rs_engine *engine, uint32_t lane);
	/* Optional (NULL: none): add the backend's counters to out (zeroed by the caller). */
	void (*stats)(struct rs_engine *engine, struct rs_engine_stats *out);
};

extern const struct rs_engine_backend rs_engine_backend_cpu;
/* kernels/cuda/cuda_backend.cu; built (and RS_HAVE_CUDA_BACKEND defined) when the Makefile
 * finds nvcc. */
extern const struct rs_engine_backend rs_engine_backend_cuda;

#endif
