/* libFuzzer target: llama2.c checkpoints (through the format-dispatching loader) and
 * tokenizer.bin files. The first byte picks which; the rest is the file. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/dtype.h"
#include "kernels/model/model.h"
#include "kernels/model/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile float sink;

static void touch(const struct rs_tensor *t)
{
	sink += rs_tensor_get(t, 0) + rs_tensor_get(t, t->rows * t->cols - 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	/* A fresh, exactly sized and 4-byte aligned copy of the file part. */
	size_t n = size - 1;
	uint8_t *file = malloc(n ? n : 1);
	if (!file)
		return 0;
	memcpy(file, data + 1, n);
	if (mode & 1) {
		struct rs_tokenizer *tok;
		uint32_t vocab = mode & 2 ? 0 : 300;
		if (rs_tokenizer_load_llama2c(file, n, vocab, &tok, err, sizeof(err)) == 0) {
			uint32_t ids[256];
			char out[8192];
			int k = rs_tokenizer_encode(tok, "the little girl", 15, RS_ENCODE_BOS, ids, 256);
			if (k > 0)
				rs_tokenizer_decode(tok, ids, (size_t)k, out, sizeof(out));
			rs_tokenizer_free(tok);
		}
	} else {
		struct rs_model *m;
		if (rs_model_load_memory(file, n, &m, err, sizeof(err)) == 0) {
			touch(&m->token_embedding);
			touch(&m->output);
			touch(&m->final_norm);
			for (uint32_t l = 0; l < m->config.n_layers; l++) {
				touch(&m->layers[l].wq);
				touch(&m->layers[l].w_up);
				touch(&m->layers[l].w_down);
			}
			rs_model_free(m);
		}
	}
	free(file);
	return 0;
}
