/* libFuzzer target: GGUF files. Every input goes through the full model loader (parse,
 * config, tensors, tokenizer) and the reader's accessors; whatever loads is exercised
 * (every tensor's first and last element, the tokenizer), so ASan checks every pointer the
 * loader hands out. */
#include <stdint.h>
#include <string.h>

#include "kernels/model/dtype.h"
#include "kernels/model/gguf.h"
#include "kernels/model/model.h"
#include "kernels/model/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile float sink;

static void touch(const struct rs_tensor *t)
{
	uint64_t n = t->rows * t->cols;
	sink += rs_tensor_get(t, 0) + rs_tensor_get(t, n - 1);
}

static void walk_gguf(const uint8_t *data, size_t size)
{
	struct rs_gguf *g;
	if (rs_gguf_parse(data, size, &g, NULL, 0))
		return;
	for (uint64_t i = 0; i < rs_gguf_n_kv(g); i++) {
		const struct rs_gguf_kv *kv = rs_gguf_kv_at(g, i);
		if (kv->type == RS_GGUF_TYPE_STRING && kv->v.str.len)
			sink += (float)(uint8_t)kv->v.str.ptr[kv->v.str.len - 1];
		if (kv->type != RS_GGUF_TYPE_ARRAY)
			continue;
		struct rs_gguf_str s;
		uint64_t cursor = 0;
		while (rs_gguf_array_next_string(&kv->v.arr, &cursor, &s) == 0)
			if (s.len)
				sink += (float)(uint8_t)s.ptr[s.len - 1];
		double d;
		if (kv->v.arr.n && rs_gguf_array_f64(&kv->v.arr, kv->v.arr.n - 1, &d) == 0)
			sink += (float)d;
	}
	for (uint64_t i = 0; i < rs_gguf_n_tensors(g); i++) {
		const struct rs_gguf_tensor *t = rs_gguf_tensor_at(g, i);
		if (t->nbytes)
			sink += (float)((const uint8_t *)t->data)[t->nbytes - 1];
	}
	rs_gguf_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rs_model *m;
	char err[256];
	walk_gguf(data, size);
	if (rs_model_load_memory(data, size, &m, err, sizeof(err)))
		return 0;
	touch(&m->token_embedding);
	touch(&m->output);
	touch(&m->final_norm);
	for (uint32_t l = 0; l < m->config.n_layers; l++) {
		const struct rs_layer_weights *w = &m->layers[l];
		touch(&w->attn_norm);
		touch(&w->wq);
		touch(&w->wk);
		touch(&w->wv);
		touch(&w->wo);
		touch(&w->ffn_norm);
		touch(&w->w_gate);
		touch(&w->w_down);
		touch(&w->w_up);
	}
	if (m->tokenizer) {
		uint32_t ids[256];
		char out[4096];
		int n = rs_tokenizer_encode(m->tokenizer, "hello world \xc3\xa9", 14, RS_ENCODE_BOS, ids,
					    256);
		if (n > 0)
			rs_tokenizer_decode(m->tokenizer, ids, (size_t)n, out, sizeof(out));
	}
	rs_model_free(m);
	return 0;
}
