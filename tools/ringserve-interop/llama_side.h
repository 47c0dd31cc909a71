/* llama.cpp's side of ringserve-interop: its prebuilt libllama (the npm package
 * @node-llama-cpp/linux-x64) opened at run time, called through the declarations of the
 * matching llama.h (node-llama-cpp's llama.cpp bundle; tools/fetch-llama-cpp.sh). */
#ifndef RS_TOOLS_INTEROP_LLAMA_SIDE_H
#define RS_TOOLS_INTEROP_LLAMA_SIDE_H

#include <stddef.h>
#include <stdint.h>

struct llama_side;

/* Open libllama and its CPU backends from dir. Returns 0, or -1 with why in err. */
int llama_side_open(const char *dir, char *err, size_t err_size);

/* llama.cpp's description of its CPU build (the features its chosen backend uses). */
const char *llama_side_system_info(void);

/* Quantize src into dst with llama_model_quantize to scheme (q8_0, q4_0, q4_k_m, q5_k_m,
 * q6_k) on threads threads. Returns 0 or -1. */
int llama_side_quantize(const char *src, const char *dst, const char *scheme, int threads);

/* Load path with a context of n_ctx positions decoding on threads threads. NULL on
 * failure. */
struct llama_side *llama_side_load(const char *path, uint32_t n_ctx, int threads);
void llama_side_free(struct llama_side *s);

/* Forget every cached position. */
void llama_side_clear(struct llama_side *s);

/* Run tokens[0..n) at the next positions; returns the last position's logits (vocab
 * floats, valid until the next call) or NULL. */
const float *llama_side_eval(struct llama_side *s, const uint32_t *tokens, uint32_t n);

#endif
