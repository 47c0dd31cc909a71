/* CPU operators of the Llama forward pass, fp32 (the matrix product is in gemm.h).
 *
 * These are the CPU backend's kernels and the reference twins of the CUDA kernels
 * (tests/engine_ops.c checks them against float64 code). Activations are row-major
 * [rows][width] float matrices; "stride" arguments are the distance, in floats, between
 * consecutive rows, so that a fused projection ([T][q|k|v]) can be read in place. */
#ifndef RS_KERNELS_OPS_H
#define RS_KERNELS_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/model/model.h"

/* out[i][:] = table[tokens[i]][:] converted to fp32, for i < n_tokens; table is
 * [vocab][dim] of any dtype. Token ids must be < table->rows (callers validate). */
void rs_op_embedding(float *out, const struct rs_tensor *table, const uint32_t *tokens,
		     uint32_t n_tokens);

/* RMSNorm of n_rows rows of width dim: out = x / sqrt(mean(x^2) + eps) * weight.
 * out may equal x. The mean is accumulated in double (dim can be large). */
void rs_op_rmsnorm(float *out, const float *x, const float *weight, uint32_t n_rows, uint32_t dim,
		   float eps);

/* Rotary position embedding of one token at position pos, in place: x holds n_heads
 * heads of head_dim floats; in each head the adjacent pairs (x[2i], x[2i+1]) with
 * 2i < rope_dim are rotated by pos * theta^(-2i / rope_dim) (the Meta layout). The
 * angle and its sine and cosine are computed in double. */
void rs_op_rope(float *x, uint32_t n_heads, uint32_t head_dim, uint32_t rope_dim, uint32_t pos,
		float theta);

/* rs_op_rope's cosines and sines for positions first_pos .. first_pos + n_pos - 1, the
 * same floats: cos_sin[(p * (rope_dim / 2) + i) * 2] = cos, [... + 1] = sin for position
 * first_pos + p (the CUDA backend's table, uploaded once; the CPU backend's rows for the
 * step's tokens, computed once per step rather than once per layer). */
void rs_op_rope_table(float *cos_sin, uint32_t first_pos, uint32_t n_pos, uint32_t rope_dim,
		      float theta);

/* rs_op_rope_table with each pair's frequency given (freqs[i] for pair i, from
 * rs_model_rope_freqs: Llama 3's divisors and linear scaling included); with the
 * frequencies rs_op_rope uses, the same floats. */
void rs_op_rope_table_freqs(float *cos_sin, uint32_t first_pos, uint32_t n_pos, uint32_t rope_dim,
			    const double *freqs);

/* out[r][i] += bias[i] for n_rows rows of width floats, rows stride floats apart. */
void rs_op_add_bias(float *out, const float *bias, uint32_t n_rows, uint32_t width, size_t stride);

/* rs_op_rope at the position whose row of rs_op_rope_table cos_sin is: the same bits. */
void rs_op_rope_rotate(float *x, uint32_t n_heads, uint32_t head_dim, uint32_t rope_dim,
		       const float *cos_sin);

/* Instruction sets of the CPU kernels, in increasing order. */
enum rs_cpu_isa { RS_ISA_PORTABLE = 0, RS_ISA_AVX2 = 1, RS_ISA_AVX512 = 2 };

/* The best instruction set this CPU (and OS) runs. */
enum rs_cpu_isa rs_cpu_isa(void);

/* Whether the CPU converts f16 to f32 in vectors (F16C). */
bool rs_cpu_has_f16c(void);

/* out[r][i] = silu(gate[r][i]) * up[r][i] for r < n_rows, i < width; gate and up rows
 * are in_stride floats apart, out rows width floats apart. */
void rs_op_swiglu(float *out, const float *gate, const float *up, uint32_t n_rows, uint32_t width,
		  size_t in_stride);

/* rs_op_swiglu with the instruction set capped at isa (tests compare them all), and its
 * AVX-512 body (swiglu_avx512.c; x86-64 with AVX-512 F only). */
void rs_op_swiglu_isa(float *out, const float *gate, const float *up, uint32_t n_rows,
		      uint32_t width, size_t in_stride, enum rs_cpu_isa isa);
void rs_op_swiglu_avx512(float *out, const float *gate, const float *up, uint32_t n_rows,
			 uint32_t width, size_t in_stride);

/* In-place softmax of n floats (max-subtracted; n >= 1). */
void rs_op_softmax(float *x, uint32_t n);

/* One layer of a paged KV cache as the CPU backend stores it: k and v are
 * [n_blocks][block_size][n_kv_heads * head_dim] elements of dtype, RS_DTYPE_F32 (the
 * zero value) or RS_DTYPE_F16. f16 halves the bytes attention reads per position, the
 * decode bottleneck at large batches; its 10-bit mantissa (relative rounding at most
 * 2^-11) keeps K and V closer to f32 than bf16's 7 bits would, and its range (65504) is
 * far above the keys and values of normalized Llama layers. */
struct rs_kv_layer {
	void *k;
	void *v;
	enum rs_dtype dtype;
	uint32_t block_size;
	uint32_t n_kv_heads;
	uint32_t head_dim;
};

/* Write the keys and values of positions start_pos .. start_pos + n_tokens - 1 into the
 * blocks of block_table. k and v hold one row of n_kv_heads * head_dim floats per token,
 * rows stride floats apart. An f16 cache stores each float rounded to nearest even
 * (exactly rs_f32_to_f16 for every non-NaN value). */
void rs_op_kv_store(const struct rs_kv_layer *kv, const uint32_t *block_table, uint32_t start_pos,
		    uint32_t n_tokens, const float *k, const float *v, size_t stride);

/* rs_op_kv_store with the instruction set capped at isa (tests compare them all). */
void rs_op_kv_store_isa(const struct rs_kv_layer *kv, const uint32_t *block_table,
			uint32_t start_pos, uint32_t n_tokens, const float *k, const float *v,
			size_t stride, enum rs_cpu_isa isa);

/* Causal attention of one token at position pos, every query head, against the keys
 * and values of positions 0 .. pos (already in the cache, the token's own included).
 * Query head h reads kv head h / (n_heads / n_kv_heads) (grouped-query attention).
 * Scores, softmax and sums are f32 whatever the cache dtype.
 * q and out hold n_heads * head_dim floats. The cache is walked row by row, each row
 * (all kv heads of a position) read once and contiguously. scratch holds
 * rs_op_attention_scratch(n_heads, head_dim, pos + 1) floats. */
void rs_op_attention(float *out, const float *q, const struct rs_kv_layer *kv,
		     const uint32_t *block_table, uint32_t pos, uint32_t n_heads, float *scratch);

/* rs_op_attention with the instruction set capped at isa (tests compare them all). */
void rs_op_attention_isa(float *out, const float *q, const struct rs_kv_layer *kv,
			 const uint32_t *block_table, uint32_t pos, uint32_t n_heads,
			 float *scratch, enum rs_cpu_isa isa);

/* The AVX-512 bodies of rs_op_attention_isa and of the f16 cache store
 * (attention_cpu.c); x86-64 with AVX-512 F, VL and BW only. */
void rs_op_attention_avx512(float *out, const float *q, const struct rs_kv_layer *kv,
			    const uint32_t *block_table, uint32_t pos, uint32_t n_heads,
			    float *scratch);
void rs_f32_to_f16_avx512(uint16_t *dst, const float *src, size_t n);

/* Floats of scratch rs_op_attention needs for a context of n_ctx positions: scores,
 * output accumulators, and (portable code, f16 cache) one widened cache row. */
static inline size_t rs_op_attention_scratch(uint32_t n_heads, uint32_t head_dim, uint32_t n_ctx)
{
	return (size_t)n_heads * n_ctx + 2 * (size_t)n_heads * head_dim;
}

#endif
