/* CUDA operators of the Llama forward pass: the device twins of kernels/cpu/ops.h.
 *
 * C-callable (the backend and tests/engine_cuda.c use them). Every pointer argument is
 * device memory unless said otherwise; every call only enqueues work on `stream` and
 * returns 0, -EINVAL (a shape the kernel does not handle), or -EIO (the launch failed;
 * cudaGetLastError has the reason, and the message goes nowhere: callers report -EIO).
 *
 * On sm_90 the kernels are programmatic dependent launches (cuda_util.cuh): they may
 * start while the kernel before them on the stream still runs, and read some inputs
 * before waiting for it. Those inputs must not be written by a kernel still running: the
 * weights and norm weights of the products, the rope table, and the step's metadata
 * (positions, slots, block tables, table offsets) in rs_cuda_rope_kv_store and
 * rs_cuda_attention. The backend uploads them with cudaMemcpy / cudaMemcpyAsync, which
 * are not kernels and complete first; a kernel that produced one must be waited for
 * (tests: cudaDeviceSynchronize).
 *
 * Precision: activations are fp32 between kernels; the inputs of a GEMM (normalized
 * activations, attention output, SwiGLU output) are written in the weights' dtype (f32,
 * f16 or bf16) since cublasGemmEx wants A and B of one type; every reduction accumulates
 * in fp32 (RMSNorm: in double, like the CPU). The KV cache is fp32: the same layout and
 * values as the CPU backend, at twice the memory of f16 (a later change may halve it). */
#ifndef RS_KERNELS_CUDA_OPS_H
#define RS_KERNELS_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/engine/sampling.h"
#include "kernels/model/model.h"

/* Largest head_dim the attention kernel handles (8 values per lane of a warp). */
#define RS_CUDA_MAX_HEAD_DIM 256

/* out[i][:] = table[tokens[i]][:] as fp32; table is [vocab][dim] of dtype. */
int rs_cuda_embedding(float *out, const void *table, enum rs_dtype dtype, const uint32_t *tokens,
		      uint32_t n_tokens, uint32_t dim, cudaStream_t stream);

/* Row r of out (n_rows rows of dim values of out_dtype) = RMSNorm of row rows[r] of x
 * (rows NULL: row r), times weight: rs_op_rmsnorm's arithmetic (double sum of squares,
 * float scale). The row list gathers the last token of each sampled sequence. */
int rs_cuda_rmsnorm(void *out, enum rs_dtype out_dtype, const float *x, const uint32_t *rows,
		    const float *weight, uint32_t n_rows, uint32_t dim, float eps,
		    cudaStream_t stream);

/* out[r][i] = silu(g) * u with g = gate_up[r][i], u = gate_up[r][width + i] (the fused
 * [gate|up] GEMM output), out rows width values of out_dtype. */
int rs_cuda_swiglu(void *out, enum rs_dtype out_dtype, const float *gate_up, uint32_t n_rows,
		   uint32_t width, cudaStream_t stream);

/* out[r][i] += bias[i] (fp32) for n_rows rows of width values, stride floats apart: the q,
 * k, v biases of Qwen2, added after the [q|k|v] GEMM and before RoPE, as rs_op_add_bias. */
int rs_cuda_add_bias(float *out, const float *bias, uint32_t n_rows, uint32_t width, size_t stride,
		     cudaStream_t stream);

/* One layer of the device KV cache: k and v are [n_blocks][block_size][n_kv_heads *
 * head_dim] floats, the CPU backend's layout (struct rs_kv_layer). */
struct rs_cuda_kv_layer {
	float *k;
	float *v;
	uint32_t block_size;
	uint32_t n_kv_heads;
	uint32_t head_dim;
};

/* What the backend runs between the [q|k|v] GEMM and attention, in one kernel: RoPE on
 * the n_heads query heads of each qkv row (rows stride floats apart, token t at position
 * positions[t]) in place, with rs_op_rope's arithmetic and its cosines and sines read from
 * cos_sin (rs_op_rope_table's layout, covering every position, in device memory); and the
 * token's keys, rotated the same way, and values stored in cache slot slots[t] (block *
 * block_size + offset, from the host's block tables). The row's own k part is left
 * unrotated. */
int rs_cuda_rope_kv_store(float *qkv, size_t stride, const uint32_t *positions,
			  const uint32_t *slots, uint32_t n_tokens, uint32_t n_heads,
			  const struct rs_cuda_kv_layer *kv, uint32_t rope_dim,
			  const float *cos_sin, cudaStream_t stream);

/* Paged causal attention, prefill and decode alike: token t (query heads in q + t *
 * q_stride) attends over positions 0 .. positions[t] of its sequence, whose block table
 * starts at block_tables + table_offset[t]. One thread block per (token, kv head) serves
 * the n_heads / n_kv_heads query heads that share it (GQA: K and V read once for the
 * group), with an online softmax over chunks of 64 positions staged in shared memory.
 * When those blocks are too few to fill the device (decode), each token's context is
 * also split over several blocks, whose partial softmaxes the last of them to finish
 * merges; that needs scratch of rs_cuda_attention_scratch floats, one per stream, zeroed
 * once before its first use (every launch leaves it fit for the next on the same
 * stream; NULL: never split). max_ctx is at least the largest positions[t] + 1 (the
 * host knows it; it sizes the split; a larger one, as a CUDA graph captured for a range
 * of contexts passes, adds splits that find nothing to do). out: [n_tokens][n_heads * head_dim] of
 * out_dtype. Call rs_cuda_attention_setup once first. */
int rs_cuda_attention(void *out, enum rs_dtype out_dtype, const float *q, size_t q_stride,
		      const struct rs_cuda_kv_layer *kv, const uint32_t *block_tables,
		      const uint32_t *table_offset, const uint32_t *positions, uint32_t n_tokens,
		      uint32_t n_heads, uint32_t max_ctx, float *scratch, cudaStream_t stream);

/* Floats of scratch rs_cuda_attention may use to split contexts, whatever n_tokens. */
size_t rs_cuda_attention_scratch(uint32_t n_heads, uint32_t head_dim);

/* Check that the current device can run rs_cuda_attention for this shape and allow the
 * shared memory it needs. Returns 0 or -EINVAL (head_dim > RS_CUDA_MAX_HEAD_DIM, or a
 * query group too large for the device's shared memory). */
int rs_cuda_attention_setup(uint32_t n_heads, uint32_t n_kv_heads, uint32_t head_dim);

/* What the sampling kernel needs for one row: sampling.h's parameters, with the uniform
 * number already drawn on the host (rs_sample_uniform: the same bits as the CPU). */
struct rs_cuda_sample_desc {
	double u;      /* rs_sample_uniform(seed, position) */
	uint32_t *out; /* device-visible address of the token id */
	float temperature;
	float top_p;
	uint32_t top_k;
	uint32_t pad;
};

/* Fill a descriptor for sampling position `position` into out (a device-visible
 * address: mapped pinned or cudaHostRegister'ed memory, or device memory). */
void rs_cuda_sample_desc_init(struct rs_cuda_sample_desc *desc,
			      const struct rs_sampling_params *params, uint64_t position,
			      uint32_t *out);

/* Doubles of scratch rs_cuda_sample needs per row. */
static inline size_t rs_cuda_sample_scratch(uint32_t vocab)
{
	return vocab;
}

/* Sample one token per row of logits ([n_rows][vocab] fp32) following sampling.h, row r
 * with descs[r] (device memory), writing the id to descs[r].out. scratch holds n_rows *
 * rs_cuda_sample_scratch(vocab) doubles. The result equals rs_sample's except where a
 * double rounding (device exp and a parallel sum versus glibc exp and a sequential sum,
 * relative differences ~1e-16) moves a cut-off: in practice never. NaN logits are
 * ordered below every number, as on the CPU. */
int rs_cuda_sample(const float *logits, uint32_t vocab, const struct rs_cuda_sample_desc *descs,
		   uint32_t n_rows, double *scratch, cudaStream_t stream);

/* Let the weight-streaming kernels take the shared memory the current device allows (once
 * per process, before any product and outside stream capture). */
void rs_cuda_matmul_setup(void);

/* y[m][n] (+)= x[m][k] * w[n][k]^T with x and w of dtype, y fp32 (fp32 accumulation), on
 * the handle's stream: up to 16 rows (decode) by our own weight-streaming kernel when rows
 * of k elements are a whole number of 16 bytes, else one cublasGemmEx
 * (CUBLAS_COMPUTE_32F). With accumulate, y keeps its value and the product is added (the
 * fused residual). */
int rs_cuda_matmul(cublasHandle_t handle, float *y, const void *x, const void *w,
		   enum rs_dtype dtype, uint32_t m, uint32_t n, uint32_t k, int accumulate);

/* y[m][n] (+)= RMSNorm(x)[m][k] * w[n][k]^T: row r of the product's input is row rows[r]
 * (rows NULL: row r) of the fp32 x, normalized with norm_weight as rs_cuda_rmsnorm does
 * and rounded to dtype. When rs_cuda_matmul would take our own kernel, the normalization
 * happens inside it (one launch, the normalized rows never stored); else
 * rs_cuda_rmsnorm writes them to xb ([m][k] of dtype) for cuBLAS. */
int rs_cuda_norm_matmul(cublasHandle_t handle, float *y, const float *x, const uint32_t *rows,
			const float *norm_weight, float eps, void *xb, const void *w,
			enum rs_dtype dtype, uint32_t m, uint32_t n, uint32_t k, int accumulate);

/* The first two operations of a layer in one call: qkv[m][n] = RMSNorm(x)[m][k] *
 * w[n][k]^T as rs_cuda_norm_matmul (n = (n_heads + 2 n_kv_heads) * head_dim, the [q|k|v]
 * rows), then rs_cuda_rope_kv_store's work on those rows (row r at positions[r], into
 * slots[r]). When rs_cuda_matmul would take our own kernel (decode sizes) and head_dim
 * is even, all of it happens in that kernel's epilogue (one launch; the same values and
 * cache contents to the bit); else it is the two calls. The k part of the qkv rows is
 * left rotated or not: only the cache's keys are defined. */
int rs_cuda_qkv_matmul(cublasHandle_t handle, float *qkv, const float *x, const float *norm_weight,
		       float eps, void *xb, const void *w, enum rs_dtype dtype, uint32_t m,
		       uint32_t k, uint32_t n_heads, const struct rs_cuda_kv_layer *kv,
		       uint32_t rope_dim, const float *cos_sin, const uint32_t *positions,
		       const uint32_t *slots);

/* y[m][n] (+)= SwiGLU(gate_up)[m][k] * w[n][k]^T: the product's input is rs_cuda_swiglu of
 * the fp32 [gate|up] rows ([m][2k]), rounded to dtype. Fused into our kernel where
 * rs_cuda_matmul would take it; else rs_cuda_swiglu writes hidden ([m][k] of dtype) for
 * cuBLAS. */
int rs_cuda_swiglu_matmul(cublasHandle_t handle, float *y, const float *gate_up, void *hidden,
			  const void *w, enum rs_dtype dtype, uint32_t m, uint32_t n, uint32_t k,
			  int accumulate);

/* Block-quantized weights (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, the file's blocks as they are;
 * matmul_quant.cu, decoding by kernels/cuda/quant_decode.h): y[m][n] (+)= x[m][k] *
 * w[n][k]^T with x f16 ([m][k], 16-byte aligned), y f32 rows ldy floats apart (a column
 * range of a wider output). Up to 16 rows: a dequantizing GEMV (f32 accumulation, the
 * activations as the f16 values they are); more: panels of at most panel_elems / k
 * weight rows dequantized to f16 into panel (device scratch of panel_elems halves) and
 * cublasGemmEx. dtype F16 is accepted too (cuBLAS, no panel): the plain matrices of a
 * quantized model. -EINVAL: another dtype, k not a multiple of the block, ldy < n, or a
 * panel too small for one row. */
int rs_cuda_qmatmul(cublasHandle_t handle, float *y, size_t ldy, const void *x, const void *w,
		    enum rs_dtype dtype, uint32_t m, uint32_t n, uint32_t k, int accumulate,
		    void *panel, size_t panel_elems);

/* rows rows of a quantized [rows][k] matrix to f16 [rows][k] (the values rounded to
 * nearest f16). */
int rs_cuda_dequantize_f16(void *out, const void *w, enum rs_dtype dtype, uint32_t rows, uint32_t k,
			   cudaStream_t stream);

/* rs_cuda_embedding for a quantized table (rows decoded exactly, as f32). */
int rs_cuda_embedding_quant(float *out, const void *table, enum rs_dtype dtype,
			    const uint32_t *tokens, uint32_t n_tokens, uint32_t dim,
			    cudaStream_t stream);

/* Convert n fp32 values to dtype (f32: a copy) on the device: tests use it to feed the
 * GEMM the activations the backend would. */
int rs_cuda_convert(void *out, enum rs_dtype dtype, const float *in, size_t n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
