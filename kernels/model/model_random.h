/* A deterministic, seeded random Llama model built in memory: for tests, benchmarks and
 * ringserve-mkmodel (which writes it out as GGUF or llama2.c files).
 *
 * The same (config, dtype, seed, tied_output) always gives bit-identical weights, on any
 * machine: the generator is splitmix64, and every value is derived from integers only. */
#ifndef RS_KERNELS_MODEL_RANDOM_H
#define RS_KERNELS_MODEL_RANDOM_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/model/model.h"

/* Build a random model with config *cfg, weights stored as dtype.
 *
 * Linear weights are uniform with standard deviation 1/sqrt(fan_in), so activations keep
 * their scale layer after layer; norm weights are 1 + U(-0.1, 0.1); the token embedding
 * is uniform with standard deviation 1 (or 1/sqrt(dim) when tied, since it is then also
 * the output matrix and logits should stay O(1)). With tied_output the output tensor
 * shares the embedding's data, as in stories15M.
 *
 * The model owns its memory (model->owned, model->layers); tokenizer is NULL. Release it
 * with rs_model_free.
 * Returns 0, -EINVAL for a config rs_model_check_config refuses or an unknown dtype,
 * -ENOMEM. */
int rs_model_random(const struct rs_model_config *cfg, enum rs_dtype dtype, uint64_t seed,
		    bool tied_output, struct rs_model **out);

/* What an architecture adds to a random model (rs_model_random_arch). */
/* The stories15M shape (llama2.c's smallest model: dim 288, 6 layers of 6 heads, vocab
 * 32000) in which the benchmarks and the simulator's CPU calibration draw random models;
 * an initializer, so that static tables can use it too. */
#define RS_STORIES15M_CONFIG(seq_len)                                                              \
	{                                                                                          \
		.dim = 288, .hidden_dim = 768, .n_layers = 6, .n_heads = 6, .n_kv_heads = 6,       \
		.head_dim = 48, .vocab_size = 32000, .max_seq_len = (seq_len), .rope_dim = 48,     \
		.rope_theta = 10000.0f, .norm_eps = 1e-5f                                          \
	}

/* TinyLlama-1.1B's shape (the GPU benchmarks' model). */
#define RS_TINYLLAMA_CONFIG(seq_len)                                                               \
	{                                                                                          \
		.dim = 2048, .hidden_dim = 5632, .n_layers = 22, .n_heads = 32, .n_kv_heads = 4,   \
		.head_dim = 64, .vocab_size = 32000, .max_seq_len = (seq_len), .rope_dim = 64,     \
		.rope_theta = 10000.0f, .norm_eps = 1e-5f                                          \
	}

struct rs_model_random_extras {
	enum rs_arch arch; /* written as general.architecture; RS_ARCH_QWEN2 implies qkv_bias */
	bool qkv_bias;	   /* q, k, v biases: uniform with standard deviation 0.5 */
	/* Llama 3's RoPE scaling as rope_freqs: Meta's "llama3" formula's divisors (1 for
	 * wavelengths below original_context / high_freq_factor, factor above
	 * original_context / low_freq_factor, a smooth blend between), as llama.cpp's
	 * converter writes them. factor 0: no rope_freqs. */
	float rope_factor, low_freq_factor, high_freq_factor;
	uint32_t original_context;
	/* GGUF tokenizer.chat_template written by rs_model_random_write_gguf, or NULL; its
	 * length in bytes (it may hold NULs), 0: strlen. */
	const char *chat_template;
	size_t chat_template_len;
};

/* rs_model_random plus the extras (NULL: none, a Llama model); the extra tensors are f32,
 * as converters write 1-D tensors; the biases come from a second stream of the same seed
 * (the weights are those of rs_model_random). */
int rs_model_random_arch(const struct rs_model_config *cfg, enum rs_dtype dtype, uint64_t seed,
			 bool tied_output, const struct rs_model_random_extras *extras,
			 struct rs_model **out);

/* The "llama3" divisor of RoPE pair i (frequency theta^(-2i / rope_dim)), as above. */
double rs_llama3_rope_divisor(double freq, const struct rs_model_random_extras *extras);

/* How a layout model's tensor is made: what rs_model_random(_arch) would put there. */
struct rs_random_recipe {
	uint64_t seed;	     /* the splitmix64 stream it is drawn from */
	uint64_t first_draw; /* how many values of that stream come before its first */
	float center, scale; /* values center + scale * sqrt(3) * U(-1, 1), as above */
	enum rs_dtype dtype; /* the dtype the values are stored in */
	const float *values; /* computed values (rope_freqs) instead of draws, or NULL */
};

/* The model rs_model_random_arch would build, without its data: each tensor has its dtype,
 * rows and cols, and its data points at its struct rs_random_recipe (tied: the embedding's
 * recipe). Costs a few bytes per tensor, not the weights; rs_random_recipe_rows draws any
 * tensor's rows on demand, so a model far larger than memory can be written tensor by
 * tensor (rs_gguf_write_model_filled). Release with rs_model_free. 0, -EINVAL, -ENOMEM. */
int rs_model_random_layout(const struct rs_model_config *cfg, enum rs_dtype dtype, uint64_t seed,
			   bool tied_output, const struct rs_model_random_extras *extras,
			   struct rs_model **out);

/* Rows [row0, row0 + n_rows) of the cols-column tensor made by r, stored in r->dtype at out:
 * the same values rs_model_random_arch stores there. */
void rs_random_recipe_rows(const struct rs_random_recipe *r, uint64_t cols, uint64_t row0,
			   uint64_t n_rows, void *out);

#endif
