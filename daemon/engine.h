/* What the daemon drives: an engine that runs planned steps on lanes.
 *
 * The scheduling core (daemon/sched/) plans every step in full: for each request the
 * tokens to feed, their positions, the KV block table and where the sampled token goes
 * (the client's shared-memory slot: zero-copy, on the GPU too). The engine runs the plan
 * and writes each sampled id; it never moves a request's progress. KV blocks are handed
 * out by the core from the engine's allocator (kv), whose storage the engine holds.
 *
 * Engines: the null engine (engine_null.c: deterministic tokens from the prompt, for the
 * data path and its tests) and the model engine (kernels/, CPU or CUDA backend). */
#ifndef RS_DAEMON_ENGINE_H
#define RS_DAEMON_ENGINE_H

#include "shm/abi.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct rs_kv_cache;
struct rs_serving_engine;
struct rs_step_plan;

struct rs_serving_engine_ops {
	/* Start a planned step on an idle lane; the plan stays valid until the step is done.
	 * Returns 0 or a negative errno (the step's requests then fail with it). */
	int (*step_start)(struct rs_serving_engine *engine, uint32_t lane,
			  const struct rs_step_plan *plan);
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
	/* A client segment appears / goes away: the engine may map it for its device
	 * (zero-copy output). May be NULL. */
	int (*register_memory)(struct rs_serving_engine *engine, void *ptr, size_t size);
	void (*unregister_memory)(struct rs_serving_engine *engine, void *ptr);
	void (*destroy)(struct rs_serving_engine *engine);
};

struct rs_serving_engine {
	const struct rs_serving_engine_ops *ops;
	char name[32]; /* "null", "cpu", "cuda" */
	char model_name[64];
	uint32_t lanes;
	uint32_t max_batch;  /* requests per step at most */
	uint32_t vocab_size; /* token ids are < vocab_size */
	uint32_t bos_token;  /* UINT32_MAX: none */
	uint32_t eos_token;  /* UINT32_MAX: none */
	uint32_t max_seq_len;
	uint32_t max_batch_tokens; /* tokens per step */
	struct rs_kv_cache *kv;	   /* the KV block allocator (worker 0's with several) */
	/* Workers (rs_workers_engine_create): `workers` engine instances, each with its own
	 * KV pool (worker_kv[w]) and `lanes / workers` lanes. 0 or 1 and NULL: one. */
	uint32_t workers;
	struct rs_kv_cache *const *worker_kv;
	const void *vocab; /* serialized vocabulary for clients, or NULL */
	uint64_t vocab_bytes;
	const char *chat_template; /* the model's (Jinja text), or NULL */
	uint64_t chat_template_bytes;
	uint32_t n_end_tokens; /* tokens that end a turn, stopping generation as EOS does */
	uint32_t end_tokens[RS_MAX_END_TOKENS];
	void *impl;
};

struct rs_null_engine_options {
	uint32_t vocab_size;
	uint32_t lanes;
	uint32_t max_batch;
	uint64_t token_delay_ns;   /* each step takes this long (simulated decode time) */
	uint32_t kv_blocks;	   /* KV blocks it accounts for (it stores nothing); 0: 8192 */
	uint32_t block_size;	   /* positions per block; 0: 16 */
	uint32_t max_batch_tokens; /* 0: 512 */
	uint32_t max_seq_len;	   /* 0: no limit but the KV blocks */
	/* Fault injection (tests): every step after the first fail_after_steps ends with
	 * -EIO (its tokens unwritten), when fail_steps. */
	bool fail_steps;
	uint64_t fail_after_steps;
	/* Tests: a line per request at its first token, in admission order: the core's
	 * clock when it arrived and when it was admitted (ns), and its tenant's name. What a
	 * test checks the admission order against, whatever the steps' lengths. NULL: none. */
	FILE *admission_log;
};

/* The null engine: token i of a request with prompt p is rs_null_engine_token(p, i),
 * whatever the batch, the chunking or a recompute after preemption. */
int rs_null_engine_create(const struct rs_null_engine_options *options,
			  struct rs_serving_engine **engine);

struct rs_model_engine_options {
	const char *model_path;
	const char *tokenizer_path; /* llama2.c checkpoints; NULL: next to the model */
	const char *backend;	    /* "auto", "cpu", "cuda" */
	uint32_t lanes;
	uint32_t max_batch;	   /* requests per step */
	uint32_t max_batch_tokens; /* tokens per step (prefill chunks + decodes) */
	uint32_t kv_blocks;	   /* 0: the engine's default */
	int threads;		   /* CPU backend workers; 0: one per CPU */
	const char *kv_dtype;	   /* "auto", "f32", "f16" (CPU backend) */
	FILE *step_log;		   /* each finished step's shape and seconds; NULL: none */
	/* A model engine made by rs_model_engine_create whose loaded model this one uses
	 * instead of loading model_path again (--workers): the CPU backend then packs the
	 * weights once for all of them (engine.h, "shared weights"). The model is freed with
	 * the last engine using it, in any order. NULL: load model_path. */
	struct rs_serving_engine *same_model_as;
};

/* The model engine: kernels/engine/engine.h behind the serving interface. Loads the model
 * (GGUF or llama2.c), or shares options->same_model_as's. Returns 0 or a negative errno
 * with a message on stderr. */
int rs_model_engine_create(const struct rs_model_engine_options *options,
			   struct rs_serving_engine **engine);

/* One engine over n instances (taken over; n <= 256) of the same shape (lanes, max_batch,
 * vocabulary, block size): worker w runs lanes [w * lanes, (w + 1) * lanes) of the result
 * on its own engine, with its own KV pool. A failed step of one fails only its requests.
 * Returns 0, -EINVAL (shapes differ; the engines are then destroyed), -ENOMEM. */
int rs_workers_engine_create(struct rs_serving_engine **engines, uint32_t n,
			     struct rs_serving_engine **out);

/* The null engine's i-th output token for a prompt, documented in docs/shm-abi.md:
 * h = FNV-1a-64 over the prompt's token ids (each id XORed in whole, then multiplied by
 * the FNV prime); token = splitmix64(h + i) mod vocab_size. */
uint32_t rs_null_engine_token(const uint32_t *prompt, uint32_t prompt_len, uint32_t index,
			      uint32_t vocab_size);

#endif
