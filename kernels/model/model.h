/* In-memory description of a Llama-architecture model: its hyper-parameters, its weight
 * tensors (views into a memory-mapped file or into owned memory) and its tokenizer.
 *
 * The loaders (gguf.c, llama2c.c) fill a struct rs_model; the backends (CPU, CUDA) read it.
 * Matrices are row-major: a linear layer y = W x with W of shape [rows=out][cols=in], the
 * layout of PyTorch, of llama2.c checkpoints and of GGUF (whose ne[0] is the column count).
 * Q and K projections are stored in the Meta layout, where RoPE rotates adjacent pairs
 * (x[2i], x[2i+1]); both GGUF (as llama.cpp writes it) and llama2.c use that layout. */
#ifndef RS_KERNELS_MODEL_H
#define RS_KERNELS_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum rs_dtype {
	RS_DTYPE_F32 = 0,
	RS_DTYPE_F16 = 1,
	RS_DTYPE_BF16 = 2,
	/* GGUF block-quantized formats (kernels/model/quant.h): no per-element size. */
	RS_DTYPE_Q8_0 = 3,
	RS_DTYPE_Q4_0 = 4,
	RS_DTYPE_Q4_K = 5,
	RS_DTYPE_Q5_K = 6,
	RS_DTYPE_Q6_K = 7,
};

/* Bytes per element of a dtype; 0 for a block-quantized one (see quant.h). */
size_t rs_dtype_size(enum rs_dtype dtype);

/* A 1-D (rows == 1) or 2-D row-major tensor. data is never written through. */
struct rs_tensor {
	enum rs_dtype dtype;
	uint64_t rows;
	uint64_t cols;
	const void *data;
};

struct rs_model_config {
	uint32_t dim;	     /* embedding width */
	uint32_t hidden_dim; /* SwiGLU inner width */
	uint32_t n_layers;
	uint32_t n_heads;    /* query heads */
	uint32_t n_kv_heads; /* key/value heads (grouped-query attention); divides n_heads */
	uint32_t head_dim;   /* dim / n_heads */
	uint32_t vocab_size;
	uint32_t max_seq_len; /* context length */
	uint32_t rope_dim; /* leading dims of each head that RoPE rotates (== head_dim usually) */
	float rope_theta;  /* 10000 for Llama 2 */
	float norm_eps;	   /* RMSNorm epsilon */
	/* Linear RoPE scaling ({arch}.rope.scaling.factor with type "linear"): positions are
	 * divided by it. 0 or 1: none. */
	float rope_scale;
};

/* The architectures general.architecture selects (see docs/engine.md). */
enum rs_arch {
	RS_ARCH_LLAMA = 0, /* Llama 1/2/3, Mistral-style Llama, TinyLlama, llama2.c */
	RS_ARCH_QWEN2 = 1, /* Qwen2/2.5: biases on q, k, v; NEOX RoPE layout in its files */
};

struct rs_layer_weights {
	struct rs_tensor attn_norm; /* [dim] */
	struct rs_tensor wq;	    /* [n_heads * head_dim][dim] */
	struct rs_tensor wk;	    /* [n_kv_heads * head_dim][dim] */
	struct rs_tensor wv;	    /* [n_kv_heads * head_dim][dim] */
	struct rs_tensor wo;	    /* [dim][n_heads * head_dim] */
	struct rs_tensor ffn_norm;  /* [dim] */
	struct rs_tensor w_gate;    /* [hidden_dim][dim]   (w1 in llama2.c) */
	struct rs_tensor w_down;    /* [dim][hidden_dim]   (w2) */
	struct rs_tensor w_up;	    /* [hidden_dim][dim]   (w3) */
	/* Biases added after the q, k, v projections, before RoPE (Qwen2); data NULL: none.
	 * bq and bk are in the Meta layout, as wq and wk. */
	struct rs_tensor bq; /* [n_heads * head_dim] */
	struct rs_tensor bk; /* [n_kv_heads * head_dim] */
	struct rs_tensor bv; /* [n_kv_heads * head_dim] */
};

struct rs_tokenizer;

struct rs_model {
	struct rs_model_config config;
	struct rs_tensor token_embedding; /* [vocab_size][dim] */
	struct rs_layer_weights *layers;  /* n_layers entries */
	struct rs_tensor final_norm;	  /* [dim] */
	struct rs_tensor output; /* [vocab_size][dim]; same data as token_embedding when tied */
	struct rs_tokenizer *tokenizer; /* may be NULL when the file carries none */
	enum rs_arch arch;
	/* Divisors of RoPE's pair frequencies (GGUF rope_freqs.weight, Llama 3.1+'s "llama3"
	 * scaling): pair i turns by pos * theta^(-2i / rope_dim) / rope_freqs[i]. [rope_dim / 2],
	 * positive; data NULL: none. */
	struct rs_tensor rope_freqs;
	/* GGUF tokenizer.chat_template (Jinja text, owned), or NULL: chat_template_len bytes,
	 * which may hold a NUL (a malformed file's), then a NUL. */
	char *chat_template;
	size_t chat_template_len;
	/* GGUF tokenizer.ggml.eot_token_id when has_eot_token (rs_model_end_tokens). */
	uint32_t eot_token;
	bool has_eot_token;

	/* Owned storage, released by rs_model_free. */
	void *mapping;
	size_t mapping_size;
	void *owned;
	void *owned_arch; /* the loader's copies of tensors it had to rearrange (Qwen2's q, k) */
};

/* Load a model, choosing the format from the file's magic (GGUF or llama2.c). For a
 * llama2.c checkpoint, tokenizer_path names its tokenizer.bin (NULL: none, or
 * "tokenizer.bin" next to the checkpoint when present).
 * Returns 0, or a negative errno with a message naming what is wrong written to
 * err (err_size bytes, may be 0). */
int rs_model_load(const char *path, const char *tokenizer_path, struct rs_model **out, char *err,
		  size_t err_size);

/* The tokens that end a turn of a chat, at which generation stops as at EOS: EOS, the
 * file's eot_token, and the vocabulary's CONTROL or USER_DEFINED tokens spelled as the
 * chat families end a turn (<|eot_id|>, <|eom_id|>, <|im_end|>, <end_of_turn>, <|end|>,
 * <|endoftext|>). Writes at most max ids, each once; returns their number. */
uint32_t rs_model_end_tokens(const struct rs_model *model, uint32_t *ids, uint32_t max);

/* Release a model and everything it owns. NULL is allowed. */
void rs_model_free(struct rs_model *model);

/* Load a model from bytes already in memory (GGUF or llama2.c, by magic), with the tokenizer
 * a GGUF file carries (a llama2.c checkpoint gets none). Tensors point into data, which
 * must stay valid and unchanged while the model lives; the model does not own it.
 * Returns 0, or a negative errno with a message in err, as rs_model_load. */
int rs_model_load_memory(const void *data, size_t size, struct rs_model **out, char *err,
			 size_t err_size);

/* Check a config for what the loaders and engines rely on (nonzero sizes, head counts that
 * divide, even rope_dim <= head_dim, sane limits), naming the first problem in err.
 * Returns 0 or -EINVAL. */
int rs_model_check_config(const struct rs_model_config *cfg, char *err, size_t err_size);

/* RoPE's frequency of each of the rope_dim / 2 pairs, in double: theta^(-2i / rope_dim),
 * divided by rope_freqs[i] when the model has them and by config.rope_scale when it is
 * not 0 or 1. Returns 0, or -EINVAL when a divisor is not positive and finite (err says
 * which). */
int rs_model_rope_freqs(const struct rs_model *model, double *freqs, char *err, size_t err_size);

/* The name general.architecture gives arch ("llama", "qwen2"). */
const char *rs_arch_name(enum rs_arch arch);

#endif
