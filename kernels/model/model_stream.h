/* Writing a seeded random model as GGUF one tensor at a time: each tensor is drawn,
 * quantized and written in turn, so the memory needed is about one tensor's, not the
 * model's (a 32-layer 7B model is 27 GB in f32, 4 GB as Q4_K_M). */
#ifndef RS_KERNELS_MODEL_STREAM_H
#define RS_KERNELS_MODEL_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/model/model_quantize.h"
#include "kernels/model/model_random.h"

struct rs_tokenizer;

/* Write to path the GGUF file that rs_model_random_arch(cfg, dtype, seed, tied_output,
 * extras), then rs_model_quantize(scheme) when scheme is not NULL, then
 * rs_gguf_write_model(tok) would write: the same bytes, without building the model.
 * Returns 0 or a negative errno with a message in err. */
int rs_model_random_write_gguf(const char *path, const struct rs_model_config *cfg,
			       enum rs_dtype dtype, uint64_t seed, bool tied_output,
			       const struct rs_model_random_extras *extras,
			       const enum rs_quant_scheme *scheme, const struct rs_tokenizer *tok,
			       char *err, size_t err_size);

#endif
