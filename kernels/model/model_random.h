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

#endif
