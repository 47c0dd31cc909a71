/* CPU operators (see ops.h). */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "kernels/dtype.h"
#include "kernels/ops.h"

void rs_op_embedding(float *out, const struct rs_tensor *table, const uint32_t *tokens,
		     uint32_t n_tokens)
{
	size_t dim = table->cols, elem = rs_dtype_size(table->dtype);
	for (uint32_t i = 0; i < n_tokens; i++)
		rs_convert_to_f32(out + i * dim,
				  (const uint8_t *)table->data + (size_t)tokens[i] * dim * elem,
				  table->dtype, dim);
}

void rs_op_rmsnorm(float *out, const float *x, const float *weight, uint32_t n_rows,
		   uint32_t dim, float eps)
{
	for (uint32_t r = 0; r < n_rows; r++) {
		const float *xr = x + (size_t)r * dim;
		float *o = out + (size_t)r * dim;
		double ss = 0.0;
		for (uint32_t i = 0; i < dim; i++)
			ss += (double)xr[i] * xr[i];
		float scale = (float)(1.0 / sqrt(ss / dim + eps));
		for (uint32_t i = 0; i < dim; i++)
			o[i] = xr[i] * scale * weight[i];
	}
}

void rs_op_rope(float *x, uint32_t n_heads, uint32_t head_dim, uint32_t rope_dim,
		uint32_t pos, float theta)
{
	/* One sine/cosine per pair, shared by every head. 256 pairs covers head_dim 512. */
	float cos_tab[256], sin_tab[256];
	uint32_t pairs = rope_dim / 2;
	for (uint32_t done = 0; done < pairs; done += 256) {
		uint32_t n = pairs - done < 256 ? pairs - done : 256;
		for (uint32_t i = 0; i < n; i++) {
			double freq = pow((double)theta, -2.0 * (done + i) / rope_dim);
			double angle = (double)pos * freq;
			cos_tab[i] = (float)cos(angle);
			sin_tab[i] = (float)sin(angle);
		}
		for (uint32_t h = 0; h < n_heads; h++) {
			float *p = x + (size_t)h * head_dim + 2 * done;
			for (uint32_t i = 0; i < n; i++) {
				float a = p[2 * i], b = p[2 * i + 1];
				p[2 * i] = a * cos_tab[i] - b * sin_tab[i];
				p[2 * i + 1] = a * sin_tab[i] + b * cos_tab[i];
			}
		}
	}
}

void rs_op_matmul(float *y, const float *x, const float *w, uint32_t m, uint32_t n,
		  uint32_t k, bool accumulate)
{
	/* Y[m][n] = X[m][k] * W[n][k]^T: W is read once for all m rows. */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f, x,
		    (int)k, w, (int)k, accumulate ? 1.0f : 0.0f, y, (int)n);
}

void rs_op_swiglu(float *out, const float *gate, const float *up, uint32_t n_rows,
		  uint32_t width, size_t in_stride)
{
	for (uint32_t r = 0; r < n_rows; r++) {
		const float *g = gate + r * in_stride, *u = up + r * in_stride;
		float *o = out + (size_t)r * width;
		for (uint32_t i = 0; i < width; i++)
			o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
	}
}

void rs_op_softmax(float *x, uint32_t n)
{
	float max = x[0];
	for (uint32_t i = 1; i < n; i++)
		if (x[i] > max)
			max = x[i];
	float sum = 0.0f;
	for (uint32_t i = 0; i < n; i++) {
		x[i] = expf(x[i] - max);
		sum += x[i];
	}
	float inv = 1.0f / sum;
	for (uint32_t i = 0; i < n; i++)
		x[i] *= inv;
}

static size_t kv_offset(const struct rs_kv_layer *kv, const uint32_t *block_table,
			uint32_t pos)
{
	size_t slot = (size_t)block_table[pos / kv->block_size] * kv->block_size +
		      pos % kv->block_size;
	return slot * kv->n_kv_heads * kv->head_dim;
}

void rs_op_kv_store(const struct rs_kv_layer *kv, const uint32_t *block_table,
		    uint32_t start_pos, uint32_t n_tokens, const float *k, const float *v,
		    size_t stride)
{
	size_t row = (size_t)kv->n_kv_heads * kv->head_dim;
	for (uint32_t i = 0; i < n_tokens; i++) {
		size_t off = kv_offset(kv, block_table, start_pos + i);
		memcpy(kv->k + off, k + i * stride, row * sizeof(float));
		memcpy(kv->v + off, v + i * stride, row * sizeof(float));
	}
}

void rs_op_attention_head(float *out, size_t out_stride, const float *q, size_t q_stride,
			  const struct rs_kv_layer *kv, const uint32_t *block_table,
			  uint32_t start_pos, uint32_t n_tokens, uint32_t head,
			  uint32_t n_heads, float *scores)
{
	uint32_t hd = kv->head_dim, bs = kv->block_size;
	size_t head_off = (size_t)(head / (n_heads / kv->n_kv_heads)) * hd;
	float scale = 1.0f / sqrtf((float)hd);
	for (uint32_t i = 0; i < n_tokens; i++) {
		const float *qi = q + i * q_stride + (size_t)head * hd;
		float *oi = out + i * out_stride + (size_t)head * hd;
		uint32_t n_ctx = start_pos + i + 1;
		/* Walk the context block by block: slots of a block are contiguous. */
		for (uint32_t j0 = 0; j0 < n_ctx; j0 += bs) {
			const float *kb = kv->k + kv_offset(kv, block_table, j0) + head_off;
			uint32_t n = n_ctx - j0 < bs ? n_ctx - j0 : bs;
			for (uint32_t j = 0; j < n; j++) {
				const float *kj = kb + (size_t)j * kv->n_kv_heads * hd;
				float dot = 0.0f;
				for (uint32_t d = 0; d < hd; d++)
					dot += qi[d] * kj[d];
				scores[j0 + j] = dot * scale;
			}
		}
		rs_op_softmax(scores, n_ctx);
		memset(oi, 0, hd * sizeof(float));
		for (uint32_t j0 = 0; j0 < n_ctx; j0 += bs) {
			const float *vb = kv->v + kv_offset(kv, block_table, j0) + head_off;
			uint32_t n = n_ctx - j0 < bs ? n_ctx - j0 : bs;
			for (uint32_t j = 0; j < n; j++) {
				const float *vj = vb + (size_t)j * kv->n_kv_heads * hd;
				float s = scores[j0 + j];
				for (uint32_t d = 0; d < hd; d++)
					oi[d] += s * vj[d];
			}
		}
	}
}
