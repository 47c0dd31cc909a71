/* Writing a random model tensor by tensor (model_stream.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/dtype.h"
#include "kernels/model/errmsg.h"
#include "kernels/model/gguf.h"
#include "kernels/model/model_stream.h"
#include "kernels/model/quant.h"

/* Rows are drawn and quantized in chunks of about this many f32 bytes, so the scratch
 * stays small next to the tensor being written. */
#define CHUNK_BYTES (4u << 20)

/* rs_model_tensor_fill_fn over a layout model: t->data is its recipe; t->dtype is the
 * recipe's own (stored as drawn) or the one rs_model_quantize picked (converted to f32 and
 * quantized, as rs_model_quantize does). Quantization works on whole rows of whole blocks,
 * so quantizing a chunk of rows gives those rows' bytes of the whole tensor. */
static int fill_from_recipe(void *ctx, const struct rs_tensor *t, void *buf)
{
	const struct rs_random_recipe *r = t->data;
	size_t row_bytes = rs_dtype_row_bytes(t->dtype, t->cols);
	uint64_t chunk_rows = CHUNK_BYTES / (t->cols * sizeof(float));
	chunk_rows = chunk_rows ? (chunk_rows < t->rows ? chunk_rows : t->rows) : 1;
	if (t->dtype == r->dtype) {
		for (uint64_t row = 0; row < t->rows; row += chunk_rows) {
			uint64_t n = t->rows - row < chunk_rows ? t->rows - row : chunk_rows;
			rs_random_recipe_rows(r, t->cols, row, n, (uint8_t *)buf + row * row_bytes);
		}
		return 0;
	}
	size_t chunk_elems = (size_t)(chunk_rows * t->cols);
	void *drawn = malloc(chunk_elems * rs_dtype_size(r->dtype));
	float *f32 = r->dtype == RS_DTYPE_F32 ? drawn : malloc(chunk_elems * sizeof(float));
	int ret = drawn && f32 ? 0 : -ENOMEM;
	for (uint64_t row = 0; row < t->rows && !ret; row += chunk_rows) {
		uint64_t n = t->rows - row < chunk_rows ? t->rows - row : chunk_rows;
		size_t elems = (size_t)(n * t->cols);
		uint8_t *dst = (uint8_t *)buf + row * row_bytes;
		rs_random_recipe_rows(r, t->cols, row, n, drawn);
		if (f32 != drawn)
			rs_convert_to_f32(f32, drawn, r->dtype, elems);
		if (t->dtype == RS_DTYPE_F32)
			memcpy(dst, f32, elems * sizeof(float));
		else
			ret = rs_quantize(dst, f32, t->dtype, elems);
	}
	if (f32 != drawn)
		free(f32);
	free(drawn);
	return ret;
}

int rs_model_random_write_gguf(const char *path, const struct rs_model_config *cfg,
			       enum rs_dtype dtype, uint64_t seed, bool tied_output,
			       const struct rs_model_random_extras *extras,
			       const enum rs_quant_scheme *scheme, const struct rs_tokenizer *tok,
			       char *err, size_t err_size)
{
	struct rs_model *layout = NULL, *quantized = NULL;
	int ret = rs_model_random_layout(cfg, dtype, seed, tied_output, extras, &layout);
	if (ret)
		return rs_errmsg(err, err_size, ret, "cannot lay out the model: %s",
				 strerror(-ret));
	if (scheme) {
		ret = rs_model_quantize_layout(layout, *scheme, &quantized);
		if (ret) {
			rs_model_free(layout);
			return rs_errmsg(err, err_size, ret, "cannot plan the quantization: %s",
					 strerror(-ret));
		}
	}
	struct rs_model *target = quantized ? quantized : layout;
	/* Borrowed for the write: the model owns its template otherwise. */
	target->chat_template = extras ? (char *)extras->chat_template : NULL;
	target->chat_template_len = !target->chat_template	? 0
				    : extras->chat_template_len ? extras->chat_template_len
								: strlen(target->chat_template);
	ret = rs_gguf_write_model_filled(path, target, tok, fill_from_recipe, NULL, err, err_size);
	target->chat_template = NULL;
	target->chat_template_len = 0;
	rs_model_free(quantized);
	rs_model_free(layout);
	return ret;
}
