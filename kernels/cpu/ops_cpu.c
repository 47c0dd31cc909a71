/* CPU operators (see ops.h). */
#include <math.h>
#include <string.h>

#include "kernels/cpu/ops.h"
#include "kernels/model/dtype.h"
#include "kernels/model/quant.h"

void rs_op_embedding(float *out, const struct rs_tensor *table, const uint32_t *tokens,
		     uint32_t n_tokens)
{
	size_t dim = table->cols, row_bytes = rs_dtype_row_bytes(table->dtype, dim);
	for (uint32_t i = 0; i < n_tokens; i++)
		rs_convert_to_f32(out + i * dim,
				  (const uint8_t *)table->data + (size_t)tokens[i] * row_bytes,
				  table->dtype, dim);
}

void rs_op_rmsnorm(float *out, const float *x, const float *weight, uint32_t n_rows, uint32_t dim,
		   float eps)
{
	for (uint32_t r = 0; r < n_rows; r++) {
		const float *xr = x + (size_t)r * dim;
		float *o = out + (size_t)r * dim;
		/* Eight partial sums (element i into sum i % 8), added in a fixed order, not one
		 * chain of dependent double additions (perf: 2-5 % of a step's samples). */
		double part[8] = {0};
		uint32_t i = 0;
		for (; i + 8 <= dim; i += 8)
			for (uint32_t l = 0; l < 8; l++)
				part[l] += (double)xr[i + l] * xr[i + l];
		for (; i < dim; i++)
			part[i % 8] += (double)xr[i] * xr[i];
		double ss = ((part[0] + part[1]) + (part[2] + part[3])) +
			    ((part[4] + part[5]) + (part[6] + part[7]));
		float scale = (float)(1.0 / sqrt(ss / dim + eps));
		for (i = 0; i < dim; i++)
			o[i] = xr[i] * scale * weight[i];
	}
}

/* The frequency of pair i, and the rotation at position pos by it: computed in double,
 * rounded to float at the end. */
static double rope_freq(uint32_t i, uint32_t rope_dim, float theta)
{
	return pow((double)theta, -2.0 * i / rope_dim);
}

static void rope_cos_sin(uint32_t pos, double freq, float *c, float *s)
{
	double angle = (double)pos * freq;
	*c = (float)cos(angle);
	*s = (float)sin(angle);
}

void rs_op_rope_table(float *cos_sin, uint32_t first_pos, uint32_t n_pos, uint32_t rope_dim,
		      float theta)
{
	uint32_t pairs = rope_dim / 2;
	for (uint32_t i = 0; i < pairs; i++) {
		double freq = rope_freq(i, rope_dim, theta); /* once per pair: the same double */
		for (uint32_t p = 0; p < n_pos; p++) {
			float *e = cos_sin + ((size_t)p * pairs + i) * 2;
			rope_cos_sin(first_pos + p, freq, &e[0], &e[1]);
		}
	}
}

void rs_op_rope_table_freqs(float *cos_sin, uint32_t first_pos, uint32_t n_pos, uint32_t rope_dim,
			    const double *freqs)
{
	uint32_t pairs = rope_dim / 2;
	for (uint32_t i = 0; i < pairs; i++)
		for (uint32_t p = 0; p < n_pos; p++) {
			float *e = cos_sin + ((size_t)p * pairs + i) * 2;
			rope_cos_sin(first_pos + p, freqs[i], &e[0], &e[1]);
		}
}

void rs_op_add_bias(float *out, const float *bias, uint32_t n_rows, uint32_t width, size_t stride)
{
	for (uint32_t r = 0; r < n_rows; r++)
		for (uint32_t i = 0; i < width; i++)
			out[(size_t)r * stride + i] += bias[i];
}

/* Rotate pairs first .. first + n - 1 of every head by cos_sin's (cos, sin) pairs. */
static void rope_rotate_pairs(float *x, uint32_t n_heads, uint32_t head_dim, uint32_t first,
			      uint32_t n, const float *cos_sin)
{
	for (uint32_t h = 0; h < n_heads; h++) {
		float *p = x + (size_t)h * head_dim + 2 * first;
		for (uint32_t i = 0; i < n; i++) {
			float a = p[2 * i], b = p[2 * i + 1], c = cos_sin[2 * i],
			      sn = cos_sin[2 * i + 1];
			p[2 * i] = a * c - b * sn;
			p[2 * i + 1] = a * sn + b * c;
		}
	}
}

void rs_op_rope_rotate(float *x, uint32_t n_heads, uint32_t head_dim, uint32_t rope_dim,
		       const float *cos_sin)
{
	rope_rotate_pairs(x, n_heads, head_dim, 0, rope_dim / 2, cos_sin);
}

void rs_op_rope(float *x, uint32_t n_heads, uint32_t head_dim, uint32_t rope_dim, uint32_t pos,
		float theta)
{
	/* One sine/cosine per pair, shared by every head; 256 pairs at a time. */
	float cos_sin[2 * 256];
	uint32_t pairs = rope_dim / 2;
	for (uint32_t done = 0; done < pairs; done += 256) {
		uint32_t n = pairs - done < 256 ? pairs - done : 256;
		for (uint32_t i = 0; i < n; i++)
			rope_cos_sin(pos, rope_freq(done + i, rope_dim, theta), &cos_sin[2 * i],
				     &cos_sin[2 * i + 1]);
		rope_rotate_pairs(x, n_heads, head_dim, done, n, cos_sin);
	}
}

void rs_op_swiglu(float *out, const float *gate, const float *up, uint32_t n_rows, uint32_t width,
		  size_t in_stride)
{
	rs_op_swiglu_isa(out, gate, up, n_rows, width, in_stride, rs_cpu_isa());
}

void rs_op_swiglu_isa(float *out, const float *gate, const float *up, uint32_t n_rows,
		      uint32_t width, size_t in_stride, enum rs_cpu_isa isa)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
	if (isa >= RS_ISA_AVX512 && rs_cpu_isa() >= RS_ISA_AVX512) {
		rs_op_swiglu_avx512(out, gate, up, n_rows, width, in_stride);
		return;
	}
#endif
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

/* Four-float vectors (GCC/Clang vector extensions): SSE on any x86-64, NEON on arm64,
 * without intrinsics. Loads and stores through memcpy: no alignment assumed. */
typedef float v4f __attribute__((vector_size(16)));

static inline v4f load4(const float *p)
{
	v4f v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static inline void store4(float *p, v4f v)
{
	memcpy(p, &v, sizeof(v));
}

/* Dot product with four vector accumulators (independent chains hide the add latency).
 * The summation order is fixed, so results do not depend on the batch. */
static float dot(const float *a, const float *b, uint32_t n)
{
	v4f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
	uint32_t d = 0;
	for (; d + 16 <= n; d += 16) {
		s0 += load4(a + d) * load4(b + d);
		s1 += load4(a + d + 4) * load4(b + d + 4);
		s2 += load4(a + d + 8) * load4(b + d + 8);
		s3 += load4(a + d + 12) * load4(b + d + 12);
	}
	for (; d + 4 <= n; d += 4)
		s0 += load4(a + d) * load4(b + d);
	v4f s = (s0 + s1) + (s2 + s3);
	float sum = (s[0] + s[1]) + (s[2] + s[3]);
	for (; d < n; d++)
		sum += a[d] * b[d];
	return sum;
}

/* y += a x over n floats. */
static void axpy(float *y, float a, const float *x, uint32_t n)
{
	v4f av = {a, a, a, a};
	uint32_t d = 0;
	for (; d + 4 <= n; d += 4)
		store4(y + d, load4(y + d) + av * load4(x + d));
	for (; d < n; d++)
		y[d] += a * x[d];
}

static size_t kv_offset(const struct rs_kv_layer *kv, const uint32_t *block_table, uint32_t pos)
{
	size_t slot =
	    (size_t)block_table[pos / kv->block_size] * kv->block_size + pos % kv->block_size;
	return slot * kv->n_kv_heads * kv->head_dim;
}

/* The AVX-512 kernels of attention_cpu.c also need BW (16-bit masked loads). */
static bool have_avx512_kv(enum rs_cpu_isa isa)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
	return isa >= RS_ISA_AVX512 && rs_cpu_isa() >= RS_ISA_AVX512 &&
	       __builtin_cpu_supports("avx512bw");
#else
	(void)isa;
	return false;
#endif
}

static void f32_to_f16_row(uint16_t *dst, const float *src, size_t n, bool vector)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
	if (vector) {
		rs_f32_to_f16_avx512(dst, src, n);
		return;
	}
#endif
	for (size_t i = 0; i < n; i++)
		dst[i] = rs_f32_to_f16(src[i]);
}

void rs_op_kv_store(const struct rs_kv_layer *kv, const uint32_t *block_table, uint32_t start_pos,
		    uint32_t n_tokens, const float *k, const float *v, size_t stride)
{
	rs_op_kv_store_isa(kv, block_table, start_pos, n_tokens, k, v, stride, rs_cpu_isa());
}

void rs_op_kv_store_isa(const struct rs_kv_layer *kv, const uint32_t *block_table,
			uint32_t start_pos, uint32_t n_tokens, const float *k, const float *v,
			size_t stride, enum rs_cpu_isa isa)
{
	size_t row = (size_t)kv->n_kv_heads * kv->head_dim;
	bool vector = have_avx512_kv(isa);
	for (uint32_t i = 0; i < n_tokens; i++) {
		size_t off = kv_offset(kv, block_table, start_pos + i);
		if (kv->dtype == RS_DTYPE_F16) {
			f32_to_f16_row((uint16_t *)kv->k + off, k + i * stride, row, vector);
			f32_to_f16_row((uint16_t *)kv->v + off, v + i * stride, row, vector);
		} else {
			memcpy((float *)kv->k + off, k + i * stride, row * sizeof(float));
			memcpy((float *)kv->v + off, v + i * stride, row * sizeof(float));
		}
	}
}

/* Row pos of a cache (k or v) as floats: in place for f32, widened into buf for f16. */
static const float *kv_row(const struct rs_kv_layer *kv, const void *cache,
			   const uint32_t *block_table, uint32_t pos, float *buf)
{
	size_t off = kv_offset(kv, block_table, pos);
	if (kv->dtype != RS_DTYPE_F16)
		return (const float *)cache + off;
	rs_convert_to_f32(buf, (const uint16_t *)cache + off, RS_DTYPE_F16,
			  (size_t)kv->n_kv_heads * kv->head_dim);
	return buf;
}

void rs_op_attention(float *out, const float *q, const struct rs_kv_layer *kv,
		     const uint32_t *block_table, uint32_t pos, uint32_t n_heads, float *scratch)
{
	rs_op_attention_isa(out, q, kv, block_table, pos, n_heads, scratch, rs_cpu_isa());
}

void rs_op_attention_isa(float *out, const float *q, const struct rs_kv_layer *kv,
			 const uint32_t *block_table, uint32_t pos, uint32_t n_heads,
			 float *scratch, enum rs_cpu_isa isa)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
	if (have_avx512_kv(isa)) {
		rs_op_attention_avx512(out, q, kv, block_table, pos, n_heads, scratch);
		return;
	}
#endif
	uint32_t hd = kv->head_dim, n_ctx = pos + 1;
	uint32_t group = n_heads / kv->n_kv_heads;
	float scale = 1.0f / sqrtf((float)hd);
	float *scores = scratch;			/* [n_heads][n_ctx] */
	float *acc = scratch + (size_t)n_heads * n_ctx; /* [n_heads][hd] */
	float *buf = acc + (size_t)n_heads * hd;	/* one widened row (f16 cache) */
	for (uint32_t j = 0; j < n_ctx; j++) {
		const float *kr = kv_row(kv, kv->k, block_table, j, buf);
		for (uint32_t h = 0; h < n_heads; h++)
			scores[(size_t)h * n_ctx + j] =
			    dot(q + (size_t)h * hd, kr + (size_t)(h / group) * hd, hd) * scale;
	}
	for (uint32_t h = 0; h < n_heads; h++)
		rs_op_softmax(scores + (size_t)h * n_ctx, n_ctx);
	/* Accumulate in scratch, not in out: it cannot alias the cache. */
	memset(acc, 0, (size_t)n_heads * hd * sizeof(float));
	for (uint32_t j = 0; j < n_ctx; j++) {
		const float *vr = kv_row(kv, kv->v, block_table, j, buf);
		for (uint32_t h = 0; h < n_heads; h++)
			axpy(acc + (size_t)h * hd, scores[(size_t)h * n_ctx + j],
			     vr + (size_t)(h / group) * hd, hd);
	}
	memcpy(out, acc, (size_t)n_heads * hd * sizeof(float));
}
