/* What the scheduler drives: an engine that runs steps over batches of requests on lanes.
 *
 * Admission first asks the engine to reserve what a request needs (its KV blocks); a
 * step then takes the requests of one lane and advances each: a request that is not
 * fully prefilled gets a chunk of its prompt prefilled (and, with the last chunk, its
 * first token sampled); the others decode one token after request->last_token. For
 * each request the engine sets request->step_produced, and when a token comes out it
 * writes it to request->output[request->generated] (the client's shared-memory slot:
 * zero-copy, on the GPU too). The scheduler reads it back, checks it and publishes it
 * when the step is done.
 *
 * Engines: the null engine (engine_null.c: deterministic tokens from the prompt, for the
 * data path and its tests) and the model engine (kernels/, CPU or CUDA backend). */
#ifndef RS_DAEMON_ENGINE_H
#define RS_DAEMON_ENGINE_H

#include <stddef.h>
#include <stdint.h>

struct rs_request;
struct rs_serving_engine;

struct rs_serving_engine_ops {
	/* Reserve what the request needs to run to completion. Returns 0, -EAGAIN (not
	 * now: keep it queued), or another negative errno (fail it: it can never run). */
	int (*admit)(struct rs_serving_engine *engine, struct rs_request *request);
	/* Start a step on an idle lane. Returns 0 or a negative errno (the scheduler then
	 * fails the step's requests with that status). */
	int (*step_start)(struct rs_serving_engine *engine, uint32_t lane,
			  struct rs_request *const *requests, uint32_t n);
	/* 1 when the lane's step is done (its tokens are written), 0 while it runs, or a
	 * negative errno: the step failed and its requests fail with it. */
	int (*step_poll)(struct rs_serving_engine *engine, uint32_t lane);
	/* CLOCK_MONOTONIC ns when a running step on the lane will be done, if the engine
	 * knows (the null engine's delay); 0 when unknown. Lets the scheduler sleep. */
	uint64_t (*step_deadline_ns)(struct rs_serving_engine *engine, uint32_t lane);
	/* A descriptor that becomes readable (an eventfd counter) when a step on the lane
	 * completes, or -1 when the engine has none. Lets the scheduler sleep in io_uring
	 * while a step of unknown length runs. May be NULL. */
	int (*step_fd)(struct rs_serving_engine *engine, uint32_t lane);
	/* Forget the engine's per-request state (KV blocks): the request finished, was
	 * cancelled, or its client went away. Not called while the request is in a step. */
	void (*release)(struct rs_serving_engine *engine, struct rs_request *request);
	/* A client segment appears / goes away: the engine may map it for its device
	 * (zero-copy output). May be NULL. */
	int (*register_memory)(struct rs_serving_engine *engine, void *ptr, size_t size);
	void (*unregister_memory)(struct rs_serving_engine *engine, void *ptr);
	void (*destroy)(struct rs_serving_engine *engine);
};

struct rs_serving_engine {
	const struct rs_serving_engine_ops *ops;
	char name[32];       /* "null", "cpu", "cuda" */
	char model_name[64];
	uint32_t lanes;
	uint32_t max_batch;  /* requests per step at most */
	uint32_t vocab_size; /* token ids are < vocab_size */
	uint32_t bos_token;  /* UINT32_MAX: none */
	uint32_t eos_token;  /* UINT32_MAX: none */
	uint32_t max_seq_len;
	const void *vocab;   /* serialized vocabulary for clients, or NULL */
	uint64_t vocab_bytes;
	void *impl;
};

struct rs_null_engine_options {
	uint32_t vocab_size;
	uint32_t lanes;
	uint32_t max_batch;
	uint64_t token_delay_ns; /* each step takes this long (simulated decode time) */
};

/* The null engine: token i of a request with prompt p is rs_null_engine_token(p, i). */
int rs_null_engine_create(const struct rs_null_engine_options *options,
			  struct rs_serving_engine **engine);

struct rs_model_engine_options {
	const char *model_path;
	const char *tokenizer_path; /* llama2.c checkpoints; NULL: next to the model */
	const char *backend;        /* "auto", "cpu", "cuda" */
	uint32_t lanes;
	uint32_t max_batch;         /* requests per step */
	uint32_t max_batch_tokens;  /* tokens per step (prefill chunks + decodes) */
	uint32_t kv_blocks;         /* 0: the engine's default */
	int threads;                /* CPU backend workers; 0: one per CPU */
	const char *kv_dtype;       /* "auto", "f32", "f16" (CPU backend) */
};

/* The model engine: kernels/engine/engine.h behind the serving interface. Loads the model
 * (GGUF or llama2.c). Returns 0 or a negative errno with a message on stderr. */
int rs_model_engine_create(const struct rs_model_engine_options *options,
			   struct rs_serving_engine **engine);

/* The null engine's i-th output token for a prompt, documented in docs/shm-abi.md:
 * h = FNV-1a-64 over the prompt's token ids (each id XORed in whole, then multiplied by
 * the FNV prime); token = splitmix64(h + i) mod vocab_size. */
uint32_t rs_null_engine_token(const uint32_t *prompt, uint32_t prompt_len, uint32_t index,
			      uint32_t vocab_size);

#endif
