/* Quantizing a whole model (for ringserve-mkmodel and the tests): our own round-to-nearest
 * quantizer (quant.h) over every matrix. */
#ifndef RS_KERNELS_MODEL_QUANTIZE_H
#define RS_KERNELS_MODEL_QUANTIZE_H

#include <stdbool.h>

#include "kernels/model/model.h"

enum rs_quant_scheme {
	RS_QUANT_Q8_0,
	RS_QUANT_Q4_0,
	RS_QUANT_Q4_K,
	RS_QUANT_Q5_K,
	RS_QUANT_Q6_K,
	/* As llama.cpp's Q4_K_M: Q4_K, except Q6_K for the output matrix and for attn_v and
	 * ffn_down in the layers llama.cpp's use_more_bits picks (the first and last eighth
	 * of the layers and every third one between). */
	RS_QUANT_Q4_K_M,
	/* As llama.cpp's Q5_K_M: Q5_K, with Q6_K where Q4_K_M has it. */
	RS_QUANT_Q5_K_M,
};

/* The scheme named "q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "q4_k_m" or "q5_k_m"; -EINVAL
 * otherwise. */
int rs_quant_scheme_parse(const char *name, enum rs_quant_scheme *scheme);

/* A copy of src (any dtype) with every matrix quantized per scheme and the 1-D norm
 * weights in f32 (as converters write them). A matrix whose row length is not a multiple
 * of its format's block (256 for the K-quants) takes Q8_0 instead when the row length is
 * a multiple of 32 (as llama.cpp falls back for such tensors), else stays f32. The copy
 * owns its memory (rs_model_free) and has no tokenizer. 0, -EINVAL, -ENOMEM. */
int rs_model_quantize(const struct rs_model *src, enum rs_quant_scheme scheme,
		      struct rs_model **out);

/* What rs_model_quantize would make of src, without the data: each tensor's dtype, rows and
 * cols as there, its data pointer src's own (so whatever src's pointers stand for, a layout
 * model's recipes for one, carries over; tied stays tied). For writing a model tensor by
 * tensor (rs_gguf_write_model_filled). Release with rs_model_free. 0 or -ENOMEM. */
int rs_model_quantize_layout(const struct rs_model *src, enum rs_quant_scheme scheme,
			     struct rs_model **out);

#endif
