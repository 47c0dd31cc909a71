/* llama2.c checkpoints (karpathy/llama2.c, run.c's "legacy" format) and their writer.
 *
 * Layout: seven int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len),
 * then float32 weights: token_embedding [vocab][dim], rms_att [L][dim], wq [L][dim][dim],
 * wk [L][kv_dim][dim], wv [L][kv_dim][dim], wo [L][dim][dim], rms_ffn [L][dim],
 * w1 [L][hidden][dim], w2 [L][dim][hidden], w3 [L][hidden][dim], rms_final [dim], two unused
 * RoPE tables of seq_len * head_size / 2 floats each, and, when vocab_size is negative, a
 * separate classifier wcls [vocab][dim] (a positive vocab_size means the classifier is the
 * embedding). RoPE theta is 10000 and the RMSNorm epsilon 1e-5, as run.c hard-codes them.
 * Tokenizers come separately (tokenizer.bin, see tokenizer.h). */
#ifndef RS_KERNELS_LLAMA2C_H
#define RS_KERNELS_LLAMA2C_H

#include <stddef.h>

#include "kernels/model/model.h"

#define RS_LLAMA2C_HEADER_SIZE 28

/* Fill model's config and tensors from a checkpoint held in data[0..size), whose size must
 * be exactly what the header implies. model->layers is allocated (freed by rs_model_free);
 * tensors point into data (4-byte aligned when data is). Returns 0, -EINVAL with a message
 * naming the problem, -ENOMEM. */
int rs_llama2c_parse(const void *data, size_t size, struct rs_model *model, char *err,
		     size_t err_size);

/* Write model as a checkpoint (weights converted to float32; a separate classifier unless
 * the output shares the embedding's data). rope_theta and norm_eps are not stored: they
 * must be 10000 and 1e-5 for the file to mean the same model, and rope_dim must be
 * head_dim. Returns 0, -EINVAL (a config the format cannot express, message in err), or a
 * negative errno from the file system. */
int rs_llama2c_write(const char *path, const struct rs_model *model, char *err,
		     size_t err_size);

#endif
