/* Seeded random models (see model_random.h). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/dtype.h"
#include "kernels/model/model_random.h"

/* splitmix64: tiny, well mixed, and trivially reproducible elsewhere. */
static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [-1, 1) from 24 random bits: exact in float, so identical everywhere. */
static float uniform_pm1(uint64_t *state)
{
	return (float)(int32_t)(splitmix64(state) >> 40) * 0x1p-23f - 1.0f;
}

static void store(void *data, enum rs_dtype dtype, uint64_t i, float value)
{
	switch (dtype) {
	case RS_DTYPE_F32:
		((float *)data)[i] = value;
		break;
	case RS_DTYPE_F16:
		((uint16_t *)data)[i] = rs_f32_to_f16(value);
		break;
	case RS_DTYPE_BF16:
		((uint16_t *)data)[i] = rs_f32_to_bf16(value);
		break;
	default: /* refused by rs_model_random */
		break;
	}
}

/* Carves tensors out of one owned buffer, each on a 64-byte boundary. */
struct arena {
	uint8_t *base;
	size_t used;
	enum rs_dtype dtype;
	uint64_t rng;
};

static size_t tensor_bytes(uint64_t rows, uint64_t cols, enum rs_dtype dtype)
{
	return ((size_t)(rows * cols * rs_dtype_size(dtype)) + 63) & ~(size_t)63;
}

/* Fill a [rows][cols] tensor with center + scale * U(-1,1)*sqrt(3) (std == scale). */
static struct rs_tensor make(struct arena *a, uint64_t rows, uint64_t cols, float center,
			     float scale)
{
	struct rs_tensor t = {.dtype = a->dtype, .rows = rows, .cols = cols};
	void *data = a->base + a->used;
	a->used += tensor_bytes(rows, cols, a->dtype);
	float amplitude = scale * 1.7320508f;
	for (uint64_t i = 0; i < rows * cols; i++)
		store(data, a->dtype, i, center + amplitude * uniform_pm1(&a->rng));
	t.data = data;
	return t;
}

int rs_model_random(const struct rs_model_config *cfg, enum rs_dtype dtype, uint64_t seed,
		    bool tied_output, struct rs_model **out)
{
	*out = NULL;
	if (!cfg || rs_model_check_config(cfg, NULL, 0) || rs_dtype_size(dtype) == 0)
		return -EINVAL;
	uint64_t dim = cfg->dim, hidden = cfg->hidden_dim, vocab = cfg->vocab_size;
	uint64_t q_dim = (uint64_t)cfg->n_heads * cfg->head_dim;
	uint64_t kv_dim = (uint64_t)cfg->n_kv_heads * cfg->head_dim;

	size_t layer_bytes =
	    2 * tensor_bytes(1, dim, dtype) + tensor_bytes(q_dim, dim, dtype) +
	    2 * tensor_bytes(kv_dim, dim, dtype) + tensor_bytes(dim, q_dim, dtype) +
	    2 * tensor_bytes(hidden, dim, dtype) + tensor_bytes(dim, hidden, dtype);
	size_t bytes = tensor_bytes(vocab, dim, dtype) * (tied_output ? 1 : 2) +
		       tensor_bytes(1, dim, dtype) + layer_bytes * cfg->n_layers;

	struct rs_model *model = calloc(1, sizeof(*model));
	if (!model)
		return -ENOMEM;
	model->layers = calloc(cfg->n_layers, sizeof(*model->layers));
	model->owned = aligned_alloc(64, bytes);
	if (!model->layers || !model->owned) {
		free(model->layers);
		free(model->owned);
		free(model);
		return -ENOMEM;
	}
	model->config = *cfg;

	struct arena a = {.base = model->owned, .dtype = dtype, .rng = seed};
	float emb_scale = tied_output ? 1.0f / sqrtf((float)dim) : 1.0f;
	model->token_embedding = make(&a, vocab, dim, 0.0f, emb_scale);
	for (uint32_t l = 0; l < cfg->n_layers; l++) {
		struct rs_layer_weights *w = &model->layers[l];
		w->attn_norm = make(&a, 1, dim, 1.0f, 0.1f / 1.7320508f);
		w->wq = make(&a, q_dim, dim, 0.0f, 1.0f / sqrtf((float)dim));
		w->wk = make(&a, kv_dim, dim, 0.0f, 1.0f / sqrtf((float)dim));
		w->wv = make(&a, kv_dim, dim, 0.0f, 1.0f / sqrtf((float)dim));
		w->wo = make(&a, dim, q_dim, 0.0f, 1.0f / sqrtf((float)q_dim));
		w->ffn_norm = make(&a, 1, dim, 1.0f, 0.1f / 1.7320508f);
		w->w_gate = make(&a, hidden, dim, 0.0f, 1.0f / sqrtf((float)dim));
		w->w_down = make(&a, dim, hidden, 0.0f, 1.0f / sqrtf((float)hidden));
		w->w_up = make(&a, hidden, dim, 0.0f, 1.0f / sqrtf((float)dim));
	}
	model->final_norm = make(&a, 1, dim, 1.0f, 0.1f / 1.7320508f);
	model->output = tied_output ? model->token_embedding
				    : make(&a, vocab, dim, 0.0f, 1.0f / sqrtf((float)dim));
	*out = model;
	return 0;
}

double rs_llama3_rope_divisor(double freq, const struct rs_model_random_extras *x)
{
	double wavelen = 2.0 * M_PI / freq;
	double low_wavelen = x->original_context / (double)x->low_freq_factor;
	double high_wavelen = x->original_context / (double)x->high_freq_factor;
	if (wavelen < high_wavelen)
		return 1.0;
	if (wavelen > low_wavelen)
		return x->rope_factor;
	double smooth = (x->original_context / wavelen - x->low_freq_factor) /
			(x->high_freq_factor - x->low_freq_factor);
	return 1.0 / ((1.0 - smooth) / x->rope_factor + smooth);
}

int rs_model_random_arch(const struct rs_model_config *cfg, enum rs_dtype dtype, uint64_t seed,
			 bool tied_output, const struct rs_model_random_extras *x,
			 struct rs_model **out)
{
	int ret = rs_model_random(cfg, dtype, seed, tied_output, out);
	if (ret || !x)
		return ret;
	struct rs_model *model = *out;
	bool bias = x->qkv_bias || x->arch == RS_ARCH_QWEN2;
	bool freqs = x->rope_factor > 0.0f;
	if (freqs && (!(x->low_freq_factor > 0.0f) || !(x->high_freq_factor > x->low_freq_factor) ||
		      !x->original_context)) {
		rs_model_free(model);
		*out = NULL;
		return -EINVAL;
	}
	uint64_t q_dim = (uint64_t)cfg->n_heads * cfg->head_dim;
	uint64_t kv_dim = (uint64_t)cfg->n_kv_heads * cfg->head_dim;
	size_t bytes = (bias ? (tensor_bytes(1, q_dim, RS_DTYPE_F32) +
				2 * tensor_bytes(1, kv_dim, RS_DTYPE_F32)) *
				   cfg->n_layers
			     : 0) +
		       (freqs ? tensor_bytes(1, cfg->rope_dim / 2, RS_DTYPE_F32) : 0);
	model->arch = x->arch;
	if (!bytes)
		return 0;
	model->owned_arch = aligned_alloc(64, bytes);
	if (!model->owned_arch) {
		rs_model_free(model);
		*out = NULL;
		return -ENOMEM;
	}
	struct arena a = {.base = model->owned_arch, .dtype = RS_DTYPE_F32, .rng = ~seed};
	for (uint32_t l = 0; bias && l < cfg->n_layers; l++) {
		struct rs_layer_weights *w = &model->layers[l];
		w->bq = make(&a, 1, q_dim, 0.0f, 0.5f);
		w->bk = make(&a, 1, kv_dim, 0.0f, 0.5f);
		w->bv = make(&a, 1, kv_dim, 0.0f, 0.5f);
	}
	if (freqs) {
		struct rs_tensor t = {.dtype = RS_DTYPE_F32, .rows = 1, .cols = cfg->rope_dim / 2};
		float *d = (float *)(a.base + a.used);
		for (uint32_t i = 0; i < cfg->rope_dim / 2; i++)
			d[i] = (float)rs_llama3_rope_divisor(
			    pow((double)cfg->rope_theta, -2.0 * i / cfg->rope_dim), x);
		t.data = d;
		model->rope_freqs = t;
	}
	return 0;
}

/* --- layout models: the recipes, drawn on demand --------------------------------------- */

/* splitmix64 adds its constant once per draw, so draw k of a stream starts from
 * seed + k * constant: any tensor's values can be drawn without those before it. */
static uint64_t stream_at(uint64_t seed, uint64_t draw)
{
	return seed + draw * 0x9e3779b97f4a7c15ull;
}

/* Hands out recipes in rs_model_random's order, counting each stream's draws. */
struct recipe_book {
	struct rs_random_recipe *next;
	enum rs_dtype dtype;
	uint64_t seed, drawn;
};

static struct rs_tensor recipe(struct recipe_book *b, uint64_t rows, uint64_t cols, float center,
			       float scale)
{
	struct rs_random_recipe *r = b->next++;
	*r = (struct rs_random_recipe){.seed = b->seed,
				       .first_draw = b->drawn,
				       .center = center,
				       .scale = scale,
				       .dtype = b->dtype};
	b->drawn += rows * cols;
	return (struct rs_tensor){.dtype = b->dtype, .rows = rows, .cols = cols, .data = r};
}

int rs_model_random_layout(const struct rs_model_config *cfg, enum rs_dtype dtype, uint64_t seed,
			   bool tied_output, const struct rs_model_random_extras *x,
			   struct rs_model **out)
{
	*out = NULL;
	if (!cfg || rs_model_check_config(cfg, NULL, 0) || rs_dtype_size(dtype) == 0)
		return -EINVAL;
	bool bias = x && (x->qkv_bias || x->arch == RS_ARCH_QWEN2);
	bool freqs = x && x->rope_factor > 0.0f;
	if (freqs && (!(x->low_freq_factor > 0.0f) || !(x->high_freq_factor > x->low_freq_factor) ||
		      !x->original_context))
		return -EINVAL;
	uint64_t dim = cfg->dim, hidden = cfg->hidden_dim, vocab = cfg->vocab_size;
	uint64_t q_dim = (uint64_t)cfg->n_heads * cfg->head_dim;
	uint64_t kv_dim = (uint64_t)cfg->n_kv_heads * cfg->head_dim;
	/* Per layer 9 tensors and 3 biases; embedding, final norm, output, rope_freqs. */
	size_t n_recipes = (size_t)cfg->n_layers * 12 + 4;
	struct rs_model *model = calloc(1, sizeof(*model));
	if (!model)
		return -ENOMEM;
	model->layers = calloc(cfg->n_layers, sizeof(*model->layers));
	model->owned = calloc(n_recipes, sizeof(struct rs_random_recipe));
	model->owned_arch = freqs ? calloc(cfg->rope_dim / 2 + 1, sizeof(float)) : NULL;
	if (!model->layers || !model->owned || (freqs && !model->owned_arch)) {
		rs_model_free(model);
		return -ENOMEM;
	}
	model->config = *cfg;
	model->arch = x ? x->arch : RS_ARCH_LLAMA;

	/* The same tensors, order, centers and scales as rs_model_random(_arch). */
	struct recipe_book b = {.next = model->owned, .dtype = dtype, .seed = seed};
	float emb_scale = tied_output ? 1.0f / sqrtf((float)dim) : 1.0f;
	model->token_embedding = recipe(&b, vocab, dim, 0.0f, emb_scale);
	for (uint32_t l = 0; l < cfg->n_layers; l++) {
		struct rs_layer_weights *w = &model->layers[l];
		w->attn_norm = recipe(&b, 1, dim, 1.0f, 0.1f / 1.7320508f);
		w->wq = recipe(&b, q_dim, dim, 0.0f, 1.0f / sqrtf((float)dim));
		w->wk = recipe(&b, kv_dim, dim, 0.0f, 1.0f / sqrtf((float)dim));
		w->wv = recipe(&b, kv_dim, dim, 0.0f, 1.0f / sqrtf((float)dim));
		w->wo = recipe(&b, dim, q_dim, 0.0f, 1.0f / sqrtf((float)q_dim));
		w->ffn_norm = recipe(&b, 1, dim, 1.0f, 0.1f / 1.7320508f);
		w->w_gate = recipe(&b, hidden, dim, 0.0f, 1.0f / sqrtf((float)dim));
		w->w_down = recipe(&b, dim, hidden, 0.0f, 1.0f / sqrtf((float)hidden));
		w->w_up = recipe(&b, hidden, dim, 0.0f, 1.0f / sqrtf((float)dim));
	}
	model->final_norm = recipe(&b, 1, dim, 1.0f, 0.1f / 1.7320508f);
	model->output = tied_output ? model->token_embedding
				    : recipe(&b, vocab, dim, 0.0f, 1.0f / sqrtf((float)dim));

	/* The extras: f32, the biases from the second stream. */
	struct recipe_book extra = {.next = b.next, .dtype = RS_DTYPE_F32, .seed = ~seed};
	for (uint32_t l = 0; bias && l < cfg->n_layers; l++) {
		struct rs_layer_weights *w = &model->layers[l];
		w->bq = recipe(&extra, 1, q_dim, 0.0f, 0.5f);
		w->bk = recipe(&extra, 1, kv_dim, 0.0f, 0.5f);
		w->bv = recipe(&extra, 1, kv_dim, 0.0f, 0.5f);
	}
	if (freqs) {
		float *d = model->owned_arch;
		for (uint32_t i = 0; i < cfg->rope_dim / 2; i++)
			d[i] = (float)rs_llama3_rope_divisor(
			    pow((double)cfg->rope_theta, -2.0 * i / cfg->rope_dim), x);
		model->rope_freqs = recipe(&extra, 1, cfg->rope_dim / 2, 0.0f, 0.0f);
		((struct rs_random_recipe *)model->rope_freqs.data)->values = d;
	}
	*out = model;
	return 0;
}

void rs_random_recipe_rows(const struct rs_random_recipe *r, uint64_t cols, uint64_t row0,
			   uint64_t n_rows, void *out)
{
	uint64_t n = n_rows * cols, first = row0 * cols;
	if (r->values) {
		for (uint64_t i = 0; i < n; i++)
			store(out, r->dtype, i, r->values[first + i]);
		return;
	}
	uint64_t rng = stream_at(r->seed, r->first_draw + first);
	float amplitude = r->scale * 1.7320508f;
	for (uint64_t i = 0; i < n; i++)
		store(out, r->dtype, i, r->center + amplitude * uniform_pm1(&rng));
}
