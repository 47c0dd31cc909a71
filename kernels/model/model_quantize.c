/* Quantizing a whole model (model_quantize.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/dtype.h"
#include "kernels/model/model_quantize.h"
#include "kernels/model/quant.h"

int rs_quant_scheme_parse(const char *name, enum rs_quant_scheme *scheme)
{
	static const struct {
		const char *name;
		enum rs_quant_scheme scheme;
	} names[] = {
	    {"q8_0", RS_QUANT_Q8_0},	 {"q4_0", RS_QUANT_Q4_0}, {"q4_k", RS_QUANT_Q4_K},
	    {"q5_k", RS_QUANT_Q5_K},	 {"q6_k", RS_QUANT_Q6_K}, {"q4_k_m", RS_QUANT_Q4_K_M},
	    {"q5_k_m", RS_QUANT_Q5_K_M},
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(name, names[i].name)) {
			*scheme = names[i].scheme;
			return 0;
		}
	return -EINVAL;
}

static enum rs_dtype base_dtype(enum rs_quant_scheme s)
{
	switch (s) {
	case RS_QUANT_Q8_0:
		return RS_DTYPE_Q8_0;
	case RS_QUANT_Q4_0:
		return RS_DTYPE_Q4_0;
	case RS_QUANT_Q5_K:
	case RS_QUANT_Q5_K_M:
		return RS_DTYPE_Q5_K;
	case RS_QUANT_Q6_K:
		return RS_DTYPE_Q6_K;
	default:
		return RS_DTYPE_Q4_K;
	}
}

/* llama.cpp's choice of the layers that get more bits in its _M mixes. */
static bool use_more_bits(uint32_t layer, uint32_t n_layers)
{
	return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

/* The format a matrix of cols columns gets (after the block-size fallback). */
static enum rs_dtype fit(enum rs_dtype want, uint64_t cols)
{
	if (cols % rs_dtype_block_elems(want) == 0)
		return want;
	return cols % RS_QK == 0 ? RS_DTYPE_Q8_0 : RS_DTYPE_F32;
}

static size_t aligned_bytes(enum rs_dtype dtype, uint64_t rows, uint64_t cols)
{
	return (rows * rs_dtype_row_bytes(dtype, cols) + 63) & ~(size_t)63;
}

struct plan {
	const struct rs_tensor *src;
	struct rs_tensor *dst;
	enum rs_dtype dtype;
};

static int convert(struct plan *p, uint8_t *mem)
{
	const struct rs_tensor *s = p->src;
	size_t n = (size_t)(s->rows * s->cols);
	float *f = malloc(n * sizeof(float) + 1);
	if (!f)
		return -ENOMEM;
	rs_convert_to_f32(f, s->data, s->dtype, n);
	*p->dst =
	    (struct rs_tensor){.dtype = p->dtype, .rows = s->rows, .cols = s->cols, .data = mem};
	int rc = 0;
	if (p->dtype == RS_DTYPE_F32)
		memcpy(mem, f, n * sizeof(float));
	else
		rc = rs_quantize(mem, f, p->dtype, n);
	free(f);
	return rc;
}

/* A model with src's config and arch and room for its layers; NULL when out of memory. */
static struct rs_model *empty_like(const struct rs_model *src)
{
	struct rs_model *m = calloc(1, sizeof(*m));
	if (m)
		m->layers =
		    calloc(src->config.n_layers ? src->config.n_layers : 1, sizeof(*m->layers));
	if (!m || !m->layers) {
		free(m);
		return NULL;
	}
	m->config = src->config;
	m->arch = src->arch;
	return m;
}

/* The plans of src's tensors (into plans, room for n_layers * 12 + 4), their dst tensors
 * those of m; returns how many. Tied output: m->output is left for the caller. */
static size_t make_plans(const struct rs_model *src, enum rs_quant_scheme scheme,
			 struct rs_model *m, struct plan *plans)
{
	const struct rs_model_config *cfg = &src->config;
	enum rs_dtype base = base_dtype(scheme);
	bool mix = scheme == RS_QUANT_Q4_K_M || scheme == RS_QUANT_Q5_K_M;
	size_t n = 0;
#define PLAN(s, d, want)                                                                           \
	plans[n++] =                                                                               \
	    (struct plan){.src = (s),                                                              \
			  .dst = (d),                                                              \
			  .dtype = (s)->rows == 1 ? RS_DTYPE_F32 : fit((want), (s)->cols)}
	PLAN(&src->token_embedding, &m->token_embedding, base);
	for (uint32_t l = 0; l < cfg->n_layers; l++) {
		const struct rs_layer_weights *w = &src->layers[l];
		struct rs_layer_weights *d = &m->layers[l];
		enum rs_dtype more = mix && use_more_bits(l, cfg->n_layers) ? RS_DTYPE_Q6_K : base;
		PLAN(&w->attn_norm, &d->attn_norm, RS_DTYPE_F32);
		PLAN(&w->wq, &d->wq, base);
		PLAN(&w->wk, &d->wk, base);
		PLAN(&w->wv, &d->wv, more);
		PLAN(&w->wo, &d->wo, base);
		PLAN(&w->ffn_norm, &d->ffn_norm, RS_DTYPE_F32);
		PLAN(&w->w_gate, &d->w_gate, base);
		PLAN(&w->w_down, &d->w_down, more);
		PLAN(&w->w_up, &d->w_up, base);
		/* Biases (Qwen2) stay f32, as norms do. */
		if (w->bq.data)
			PLAN(&w->bq, &d->bq, RS_DTYPE_F32);
		if (w->bk.data)
			PLAN(&w->bk, &d->bk, RS_DTYPE_F32);
		if (w->bv.data)
			PLAN(&w->bv, &d->bv, RS_DTYPE_F32);
	}
	if (src->rope_freqs.data)
		PLAN(&src->rope_freqs, &m->rope_freqs, RS_DTYPE_F32);
	PLAN(&src->final_norm, &m->final_norm, RS_DTYPE_F32);
	if (src->output.data != src->token_embedding.data)
		PLAN(&src->output, &m->output, mix ? RS_DTYPE_Q6_K : base);
#undef PLAN
	return n;
}

int rs_model_quantize_layout(const struct rs_model *src, enum rs_quant_scheme scheme,
			     struct rs_model **out)
{
	*out = NULL;
	struct rs_model *m = empty_like(src);
	struct plan *plans = calloc((size_t)src->config.n_layers * 12 + 4, sizeof(*plans));
	if (!m || !plans) {
		rs_model_free(m);
		free(plans);
		return -ENOMEM;
	}
	size_t n = make_plans(src, scheme, m, plans);
	for (size_t i = 0; i < n; i++)
		*plans[i].dst = (struct rs_tensor){.dtype = plans[i].dtype,
						   .rows = plans[i].src->rows,
						   .cols = plans[i].src->cols,
						   .data = plans[i].src->data};
	if (src->output.data == src->token_embedding.data)
		m->output = m->token_embedding;
	free(plans);
	*out = m;
	return 0;
}

int rs_model_quantize(const struct rs_model *src, enum rs_quant_scheme scheme,
		      struct rs_model **out)
{
	*out = NULL;
	struct rs_model *m = empty_like(src);
	/* Per layer 9 matrices and norms and up to 3 biases; embedding, final norm, output,
	 * rope_freqs. */
	struct plan *plans = calloc((size_t)src->config.n_layers * 12 + 4, sizeof(*plans));
	if (!m || !plans) {
		rs_model_free(m);
		free(plans);
		return -ENOMEM;
	}
	size_t n = make_plans(src, scheme, m, plans);
	bool tied = src->output.data == src->token_embedding.data;
	size_t bytes = 0;
	for (size_t i = 0; i < n; i++)
		bytes += aligned_bytes(plans[i].dtype, plans[i].src->rows, plans[i].src->cols);
	m->owned = aligned_alloc(64, bytes ? bytes : 64);
	int rc = m->owned ? 0 : -ENOMEM;
	uint8_t *mem = m->owned;
	for (size_t i = 0; i < n && !rc; i++) {
		rc = convert(&plans[i], mem);
		mem += aligned_bytes(plans[i].dtype, plans[i].src->rows, plans[i].src->cols);
	}
	if (tied)
		m->output = m->token_embedding;
	free(plans);
	if (rc) {
		rs_model_free(m);
		return rc;
	}
	*out = m;
	return 0;
}
