/* The model engine: a Llama decoder over a paged KV cache, running batched steps.
 *
 * One interface, several backends (CPU now; CUDA later), picked at creation, each behind
 * one static table of operations (engine_backend.h), as Redis puts epoll and kqueue
 * behind aeApi.
 *
 * A step runs one forward pass over a batch that mixes prefill chunks of some sequences
 * and single decode tokens of others: all tokens of the step are gathered into one
 * [total_tokens][dim] activation matrix, so each weight matrix is read once per step by
 * one GEMM. Each sequence brings its block table (owned by the caller, see kv_cache.h):
 * the step writes the K/V of the sequence's new positions into its blocks, attends over
 * all positions so far, and, when asked, samples the next token into *out_token.
 *
 * Lanes are independent queues of steps (one CUDA stream each on the GPU). On the CPU
 * backend a step runs synchronously inside rs_engine_step, lanes only keep their status,
 * and concurrent calls from several threads are serialized.
 *
 * Thread safety: the engine may be used from several threads (steps are serialized);
 * the KV allocator (rs_engine_kv) is not thread-safe and belongs to the scheduler. */
#ifndef RS_KERNELS_ENGINE_H
#define RS_KERNELS_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/engine/kv_cache.h"
#include "kernels/engine/sampling.h"
#include "kernels/model/model.h"

struct rs_engine;

struct rs_engine_options {
	const char *backend;	   /* "auto" (or NULL), "cpu", "cuda" */
	uint32_t kv_blocks;	   /* blocks in the KV pool; 0: 8 full contexts */
	uint32_t block_size;	   /* positions per KV block; 0: 16 */
	uint32_t max_batch_tokens; /* most tokens in one step; 0: 512 */
	uint32_t lanes;		   /* independent step queues; 0: 1 */
	int threads;		   /* CPU backend workers, which split every GEMM, the
				    * attention and the sampling; 0: one per online CPU. The
				    * CPU backend sets OpenBLAS to one thread, process-wide */
	const char *kv_dtype;	   /* element type of the KV cache: "auto" (or NULL), "f32",
				    * "f16" (CPU backend only: K and V rounded to nearest
				    * even, halving the bytes attention reads; the CUDA
				    * backend stores f32). "auto": f16 on the CPU for a
				    * model with f16/bf16 weights, else f32. Resolved to
				    * "f32" or "f16" */
	const char *cpu_products;  /* the CPU backend's matrix products: "auto" (or NULL):
				    * "ours" where the CPU has AVX2 or AVX-512, else "blas";
				    * "ours": our kernels (-EINVAL without AVX2); "blas":
				    * CBLAS (one SGEMM per weight panel) always; "avx2":
				    * ours capped at AVX2 (-EINVAL without it), for tests
				    * comparing ISAs. Quantized weights: "blas" runs the
				    * portable C integer kernels at decode. Resolved to "ours",
				    * "avx2" or "blas" */
	const char *cpu_weights;   /* where the CPU backend reads block-quantized weights:
				    * "auto" (or NULL): "copy" where transparent huge pages
				    * are enabled or the copy interleaves rows (AVX2 and
				    * F16C), else "mapped"; "copy": moved at load into
				    * huge-page memory (rs_packed_quant_copy), the file
				    * mapping's pages given back, so resident memory stays
				    * near the file size; "mapped": read in place from the
				    * file mapping (4 KiB pages). Resolved to "copy" or
				    * "mapped" */
	const char *cuda_graphs;   /* the CUDA backend's decode steps (every sequence one
				    * token, sampled): "auto" (or NULL) = "on": captured once
				    * per batch size and context range as a CUDA graph, then
				    * replayed (one launch instead of one per kernel); "off":
				    * kernels enqueued one by one. Resolved to "on" or "off" */
};

/* What an engine has done, for tools and tests (rs_engine_stats). */
struct rs_engine_stats {
	uint64_t graph_launches; /* CUDA: steps replayed from a captured graph */
	uint64_t graph_captures; /* CUDA: graphs captured (one per batch size and context
				  * range in use; a lane keeps a few, the least recently
				  * used replaced) */
	uint64_t graph_failures; /* CUDA: captures that failed; that lane then enqueues
				  * kernel by kernel */
	char graph_error[128];	 /* CUDA: why the first capture failed, or "" */
};

/* One sequence's share of a step. */
struct rs_seq_step {
	const uint32_t *tokens;	     /* the new tokens: a prefill chunk, or 1 for decode */
	uint32_t n_tokens;	     /* >= 1 */
	uint32_t start_pos;	     /* position of tokens[0]; 0 .. start_pos-1 are cached */
	const uint32_t *block_table; /* the sequence's KV blocks, position p in
				      * block_table[p / block_size] */
	uint32_t n_blocks;	     /* entries in block_table; must cover
				      * start_pos + n_tokens positions */
	struct rs_sampling_params sampling;
	int sample;	     /* sample a token after the last position */
	uint32_t *out_token; /* where the sampled id is written (may be shared
			      * memory; written by the device on CUDA) */
};

/* Default options: every field zero, backend "auto" (the values above). */
void rs_engine_options_init(struct rs_engine_options *opts);

/* A descriptor that becomes readable when a step of `lane` finishes, for a caller that
 * sleeps (epoll, io_uring) instead of polling rs_engine_step_poll: an eventfd counting
 * finished steps, which the caller reads to reset; the engine owns and closes it. Only
 * backends whose steps run asynchronously have one (CUDA: written by a host function
 * queued on the lane's stream after each step, once this has been called); -ENOTSUP
 * where rs_engine_step runs the step to its end (CPU), -EINVAL for a bad lane. */
int rs_engine_step_fd(struct rs_engine *engine, uint32_t lane);

/* The engine's counters, summed over its lanes (zero where the backend has none). */
void rs_engine_stats(struct rs_engine *engine, struct rs_engine_stats *out);

/* Create an engine for model (which must outlive the engine: the CPU backend reads F32
 * weights in place). opts may be NULL (defaults). CPU backend: engines of one model with
 * the same cpu_products and cpu_weights share one read-only packed copy of the weights,
 * reference-counted and freed with the last of them (docs/engine.md, "Shared weights");
 * each keeps its own KV pool, scratch and threads. Weights in F16/BF16 are converted to
 * the backend's type once, here (the CUDA backend keeps the model's own dtype on the
 * device). Allocates the KV pool and the scratch for max_batch_tokens tokens.
 * Backend "auto" picks CUDA when it is built and a device answers, else the CPU; then, on
 * success, err holds a note saying why ("no CUDA device: using the CPU backend"); err is
 * empty after any other success.
 * Returns 0, or a negative errno with a message in err (err_size bytes, may be 0):
 * -EINVAL (bad config or options, unknown backend, a shape the backend cannot run),
 * -ENODEV (backend "cuda" when it is not built: "CUDA backend not built", or when no
 * device answers: "no CUDA device (...)"), -ENOMEM, -EIO (a device call failed). */
int rs_engine_create(const struct rs_model *model, const struct rs_engine_options *opts,
		     struct rs_engine **out, char *err, size_t err_size);

/* Wait for every lane, then release the engine. NULL is allowed. */
void rs_engine_destroy(struct rs_engine *engine);

/* The engine's KV block allocator (block_size and n_blocks as resolved at creation). */
struct rs_kv_cache *rs_engine_kv(struct rs_engine *engine);

/* The options as resolved (defaults filled in; backend names the backend chosen). */
const struct rs_engine_options *rs_engine_options(const struct rs_engine *engine);

/* The model's configuration. */
const struct rs_model_config *rs_engine_config(const struct rs_engine *engine);

/* Run (or, on asynchronous backends, enqueue) one step on lane over n_seqs sequences.
 * The step is validated as a whole before anything runs: on error nothing is written.
 * Every block a sequence writes (those holding positions >= start_pos) must be private
 * (reference count 1), every block it reads in use; tokens < vocab_size;
 * start_pos + n_tokens <= max_seq_len; the total token count <= max_batch_tokens.
 * The tokens and block tables are read before the call returns; out_token is written
 * when the step completes. One step in flight per lane: a new step on a busy lane
 * waits for the previous one.
 * Returns 0 (accepted; on the CPU backend, also done), -EINVAL (invalid step or lane),
 * -E2BIG (too many tokens), -ENOMEM. */
int rs_engine_step(struct rs_engine *engine, uint32_t lane, const struct rs_seq_step *seqs,
		   uint32_t n_seqs);

/* Returns 1 when the lane's last step is complete (or none was run), 0 while it runs,
 * or the step's negative errno. Never blocks. */
int rs_engine_step_poll(struct rs_engine *engine, uint32_t lane);

/* Block until the lane's last step completes. Returns 0 or its negative errno. */
int rs_engine_step_wait(struct rs_engine *engine, uint32_t lane);

/* Make host memory [ptr, ptr + size) writable in place by the engine's device (CUDA:
 * cudaHostRegister, mapped), so that a step whose out_token points into it has the GPU
 * write the token there directly (zero-copy; the daemon registers each client segment).
 * A step's out_token outside every registered range still works: the id goes through a
 * staging buffer and is copied to out_token by step_poll or step_wait (or the lane's
 * next step) once the step is complete. On the CPU backend this does nothing.
 * Returns 0, -EINVAL (NULL or empty), -EEXIST (overlaps a registered range), -ENOMEM,
 * -EIO (the driver refused the range). */
int rs_engine_register_host(struct rs_engine *engine, void *ptr, size_t size);

/* Undo rs_engine_register_host(ptr, ...), first waiting for every lane's step in flight
 * (a step may still write into the range). Steps submitted afterwards must not point
 * into it. Returns 0, -EINVAL (NULL), -ENOENT (not registered; the CPU backend: 0). */
int rs_engine_unregister_host(struct rs_engine *engine, void *ptr);

/* Like a step (KV written the same way, same validation), but synchronous, sampling
 * nothing, and writing the logits of every position of the step into logits:
 * [total_tokens][vocab_size] floats, sequences in order. For tests and tools.
 * Returns 0, -EINVAL, -E2BIG. */
int rs_engine_forward_logits(struct rs_engine *engine, const struct rs_seq_step *seqs,
			     uint32_t n_seqs, float *logits);

#endif
