/* ringserve-mkmodel: write a deterministic, seeded random model (Llama, Llama 3 with its
 * RoPE divisors, Qwen2 with its biases) with a small SentencePiece or byte-level BPE
 * vocabulary, as GGUF and/or as a llama2.c checkpoint plus tokenizer.bin. The same options
 * always give the same bytes; the GGUF and the llama2.c files of one run hold the same
 * weights (the llama2.c file as float32, which every dtype converts to exactly). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client-lib/ringserve.h"
#include "kernels/model/dtype.h"
#include "kernels/model/gguf.h"
#include "kernels/model/llama2c.h"
#include "kernels/model/model_quantize.h"
#include "kernels/model/model_random.h"
#include "kernels/model/model_stream.h"
#include "kernels/model/pretokenize.h"
#include "kernels/model/tokenizer.h"

/* Print the usage to f. */
static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: ringserve-mkmodel [--out-gguf FILE] [--out-llama2c FILE] [--out-tokenizer "
	    "FILE]\n"
	    "         [--dim N] [--hidden N] [--layers N] [--heads N] [--kv-heads N] [--vocab N]\n"
	    "         [--seq-len N] [--seed S] [--tied] [--rope-theta T]\n"
	    "         [--dtype f32|f16|bf16|q8_0|q4_0|q4_k|q5_k|q6_k|q4_k_m|q5_k_m]\n"
	    "         [--arch llama|llama3|qwen2] [--tokenizer spm|bpe] [--rope-scale F]\n"
	    "         [--rope-orig-ctx N] [--chat-template NAME|FILE]\n"
	    "  Writes a seeded random Llama model (defaults: dim 64, hidden 172, 2 layers, 4 "
	    "heads,\n"
	    "  2 kv heads, vocab 512, seq-len 256, seed 1, f32, separate output matrix).\n"
	    "  --arch            llama (default); llama3: Llama 3.1's rope_freqs (factor 8, low "
	    "1,\n"
	    "                    high 4, --rope-orig-ctx, default 8192), theta 500000, a BPE\n"
	    "                    vocabulary; qwen2: q, k, v biases, qwen2.* keys, theta 1e6,\n"
	    "                    a BPE vocabulary with Qwen2's pre-tokenizer\n"
	    "  --tokenizer       spm (SentencePiece demo vocabulary; llama's default) or bpe\n"
	    "                    (byte-level, Llama 3's or Qwen2's shape by --arch)\n"
	    "  --rope-scale      linear RoPE scaling factor ({arch}.rope.scaling.factor)\n"
	    "  --out-gguf        GGUF v3 with the tokenizer, weights in --dtype (quantized: our\n"
	    "                    round-to-nearest quantizer of the f32 model, norms in f32, "
	    "K-quant\n"
	    "                    matrices whose rows are not a multiple of 256 in q8_0;\n"
	    "                    q4_k_m = q4_k with q6_k output and attn_v/ffn_down as llama.cpp,\n"
	    "                    q5_k_m the same over q5_k; drawn, quantized and written one\n"
	    "                    tensor at a time, so a 7B model needs about one tensor of "
	    "memory)\n"
	    "  --out-llama2c     llama2.c checkpoint (float32; a negative vocab_size when not "
	    "--tied)\n"
	    "  --out-tokenizer   llama2.c tokenizer.bin for the same vocabulary\n"
	    "  --rope-theta      GGUF only (llama2.c implies 10000)\n"
	    "  --chat-template   GGUF tokenizer.chat_template: a FILE's text (a Jinja template),\n"
	    "                    else a template NAME (llama3, chatml, ...: the name as the "
	    "text);\n"
	    "                    a file's NUL bytes are kept (for tests of malformed files)\n");
}

/* --chat-template: a file's text, or else a name the client library formats (written
 * as it is: detection takes names too); *len its bytes. A file's NUL bytes are written
 * too (a GGUF string has a length): tests make malformed templates so. NULL after a
 * message when it is neither. */
static char *read_chat_template(const char *arg, size_t *len_out)
{
	FILE *f = fopen(arg, "rb");
	if (!f) {
		if (rs_chat_template_by_name(arg) < 0) {
			fprintf(stderr,
				"ringserve-mkmodel: --chat-template %s: neither a file nor a "
				"template name (",
				arg);
			for (int i = 1; rs_chat_template_name(i); i++)
				fprintf(stderr, "%s%s", i > 1 ? ", " : "",
					rs_chat_template_name(i));
			fprintf(stderr, ")\n");
			return NULL;
		}
		*len_out = strlen(arg);
		return strdup(arg);
	}
	char *text = NULL;
	size_t len = 0, cap = 0, n;
	char buf[4096];
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		if (len + n + 1 > cap) {
			cap = 2 * (len + n + 1);
			char *grown = realloc(text, cap);
			if (!grown) {
				fprintf(stderr, "ringserve-mkmodel: --chat-template %s: %s\n", arg,
					strerror(ENOMEM));
				free(text);
				fclose(f);
				return NULL;
			}
			text = grown;
		}
		memcpy(text + len, buf, n);
		len += n;
	}
	bool failed = ferror(f);
	fclose(f);
	if (failed || !text) {
		fprintf(stderr, "ringserve-mkmodel: --chat-template %s: %s\n", arg,
			failed ? "cannot read it" : "empty");
		free(text);
		return NULL;
	}
	if (memchr(text, 0, len))
		fprintf(stderr,
			"ringserve-mkmodel: --chat-template %s: holds a NUL byte (written as it "
			"is)\n",
			arg);
	text[len] = '\0';
	*len_out = len;
	return text;
}

/* An unsigned option value up to max; exits on garbage. */
static unsigned long parse_number(const char *opt, const char *arg, unsigned long max)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(arg, &end, 0);
	if (errno || *end || end == arg || v > max || arg[0] == '-') {
		fprintf(stderr, "ringserve-mkmodel: %s: bad value '%s'\n", opt, arg);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	enum {
		OPT_GGUF = 256,
		OPT_LLAMA2C,
		OPT_TOKENIZER,
		OPT_DIM,
		OPT_HIDDEN,
		OPT_LAYERS,
		OPT_HEADS,
		OPT_KV_HEADS,
		OPT_VOCAB,
		OPT_SEQ,
		OPT_SEED,
		OPT_DTYPE,
		OPT_TIED,
		OPT_THETA,
		OPT_ARCH,
		OPT_TOKENIZER_KIND,
		OPT_ROPE_SCALE,
		OPT_ROPE_ORIG,
		OPT_CHAT_TEMPLATE
	};
	static const struct option options[] = {
	    {"out-gguf", required_argument, NULL, OPT_GGUF},
	    {"out-llama2c", required_argument, NULL, OPT_LLAMA2C},
	    {"out-tokenizer", required_argument, NULL, OPT_TOKENIZER},
	    {"dim", required_argument, NULL, OPT_DIM},
	    {"hidden", required_argument, NULL, OPT_HIDDEN},
	    {"layers", required_argument, NULL, OPT_LAYERS},
	    {"heads", required_argument, NULL, OPT_HEADS},
	    {"kv-heads", required_argument, NULL, OPT_KV_HEADS},
	    {"vocab", required_argument, NULL, OPT_VOCAB},
	    {"seq-len", required_argument, NULL, OPT_SEQ},
	    {"seed", required_argument, NULL, OPT_SEED},
	    {"dtype", required_argument, NULL, OPT_DTYPE},
	    {"tied", no_argument, NULL, OPT_TIED},
	    {"rope-theta", required_argument, NULL, OPT_THETA},
	    {"arch", required_argument, NULL, OPT_ARCH},
	    {"tokenizer", required_argument, NULL, OPT_TOKENIZER_KIND},
	    {"rope-scale", required_argument, NULL, OPT_ROPE_SCALE},
	    {"rope-orig-ctx", required_argument, NULL, OPT_ROPE_ORIG},
	    {"chat-template", required_argument, NULL, OPT_CHAT_TEMPLATE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *out_gguf = NULL, *out_llama2c = NULL, *out_tokenizer = NULL;
	struct rs_model_config cfg = {
	    .dim = 64,
	    .hidden_dim = 172,
	    .n_layers = 2,
	    .n_heads = 4,
	    .n_kv_heads = 2,
	    .vocab_size = 512,
	    .max_seq_len = 256,
	    .rope_theta = 10000.0f,
	    .norm_eps = 1e-5f,
	};
	uint64_t seed = 1;
	enum rs_dtype dtype = RS_DTYPE_F32;
	bool tied = false, theta_given = false;
	const char *arch_name = "llama", *tokenizer_kind = NULL;
	struct rs_model_random_extras extras = {.arch = RS_ARCH_LLAMA};
	uint32_t rope_orig_ctx = 8192;
	enum rs_quant_scheme scheme = RS_QUANT_Q8_0;
	bool quantized = false;
	const char *dtype_name = "f32";
	const char *chat_template_arg = NULL;
	int c;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (c) {
		case OPT_GGUF:
			out_gguf = optarg;
			break;
		case OPT_LLAMA2C:
			out_llama2c = optarg;
			break;
		case OPT_TOKENIZER:
			out_tokenizer = optarg;
			break;
		case OPT_DIM:
			cfg.dim = (uint32_t)parse_number("--dim", optarg, 1u << 16);
			break;
		case OPT_HIDDEN:
			cfg.hidden_dim = (uint32_t)parse_number("--hidden", optarg, 1u << 20);
			break;
		case OPT_LAYERS:
			cfg.n_layers = (uint32_t)parse_number("--layers", optarg, 4096);
			break;
		case OPT_HEADS:
			cfg.n_heads = (uint32_t)parse_number("--heads", optarg, 1u << 16);
			break;
		case OPT_KV_HEADS:
			cfg.n_kv_heads = (uint32_t)parse_number("--kv-heads", optarg, 1u << 16);
			break;
		case OPT_VOCAB:
			cfg.vocab_size = (uint32_t)parse_number("--vocab", optarg, 1u << 22);
			break;
		case OPT_SEQ:
			cfg.max_seq_len = (uint32_t)parse_number("--seq-len", optarg, 1u << 24);
			break;
		case OPT_SEED:
			seed = parse_number("--seed", optarg, ~0ul);
			break;
		case OPT_TIED:
			tied = true;
			break;
		case OPT_THETA:
			cfg.rope_theta = strtof(optarg, NULL);
			theta_given = true;
			break;
		case OPT_ARCH:
			arch_name = optarg;
			break;
		case OPT_TOKENIZER_KIND:
			tokenizer_kind = optarg;
			break;
		case OPT_ROPE_SCALE:
			cfg.rope_scale = strtof(optarg, NULL);
			break;
		case OPT_CHAT_TEMPLATE:
			chat_template_arg = optarg;
			break;
		case OPT_ROPE_ORIG:
			rope_orig_ctx = (uint32_t)parse_number("--rope-orig-ctx", optarg, 1u << 24);
			break;
		case OPT_DTYPE:
			if (!strcmp(optarg, "f32"))
				dtype = RS_DTYPE_F32;
			else if (!strcmp(optarg, "f16"))
				dtype = RS_DTYPE_F16;
			else if (!strcmp(optarg, "bf16"))
				dtype = RS_DTYPE_BF16;
			else if (!rs_quant_scheme_parse(optarg, &scheme)) {
				quantized = true;
				dtype_name = optarg;
			} else {
				fprintf(stderr,
					"ringserve-mkmodel: --dtype must be f32, f16, bf16, q8_0, "
					"q4_0, q4_k, q5_k, q6_k, q4_k_m or q5_k_m\n");
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || (!out_gguf && !out_llama2c && !out_tokenizer)) {
		usage(stderr);
		return 2;
	}
	if (chat_template_arg && !out_gguf) {
		fprintf(stderr, "ringserve-mkmodel: --chat-template goes with --out-gguf (only a "
				"GGUF file holds a template)\n");
		return 2;
	}
	if (!cfg.n_heads || cfg.dim % cfg.n_heads) {
		fprintf(stderr, "ringserve-mkmodel: --heads %u must divide --dim %u\n", cfg.n_heads,
			cfg.dim);
		return 2;
	}
	cfg.head_dim = cfg.dim / cfg.n_heads;
	cfg.rope_dim = cfg.head_dim;
	uint32_t bpe_pre = RS_PRETOK_LLAMA3;
	if (!strcmp(arch_name, "llama3")) {
		extras = (struct rs_model_random_extras){.arch = RS_ARCH_LLAMA,
							 .rope_factor = 8.0f,
							 .low_freq_factor = 1.0f,
							 .high_freq_factor = 4.0f,
							 .original_context = rope_orig_ctx};
		cfg.rope_theta = theta_given ? cfg.rope_theta : 500000.0f;
	} else if (!strcmp(arch_name, "qwen2")) {
		extras.arch = RS_ARCH_QWEN2;
		cfg.rope_theta = theta_given ? cfg.rope_theta : 1000000.0f;
		cfg.norm_eps = 1e-6f;
		bpe_pre = RS_PRETOK_QWEN2;
	} else if (strcmp(arch_name, "llama")) {
		fprintf(stderr, "ringserve-mkmodel: --arch must be llama, llama3 or qwen2\n");
		return 2;
	}
	if (!tokenizer_kind)
		tokenizer_kind = strcmp(arch_name, "llama") ? "bpe" : "spm";
	if (strcmp(tokenizer_kind, "spm") && strcmp(tokenizer_kind, "bpe")) {
		fprintf(stderr, "ringserve-mkmodel: --tokenizer must be spm or bpe\n");
		return 2;
	}
	bool bpe = !strcmp(tokenizer_kind, "bpe");
	if (bpe && (out_llama2c || out_tokenizer)) {
		fprintf(stderr,
			"ringserve-mkmodel: llama2.c files carry SentencePiece vocabularies "
			"only (--tokenizer spm)\n");
		return 2;
	}
	if (strcmp(arch_name, "llama") && out_llama2c) {
		fprintf(stderr, "ringserve-mkmodel: --arch %s is GGUF only\n", arch_name);
		return 2;
	}
	char err[512];
	if (rs_model_check_config(&cfg, err, sizeof(err))) {
		fprintf(stderr, "ringserve-mkmodel: %s\n", err);
		return 2;
	}

	struct rs_tokenizer *tok;
	if (bpe ? rs_tokenizer_demo_bpe(cfg.vocab_size, bpe_pre, &tok, err, sizeof(err))
		: rs_tokenizer_demo(cfg.vocab_size, &tok, err, sizeof(err))) {
		fprintf(stderr, "ringserve-mkmodel: %s\n", err);
		return 2;
	}
	/* The GGUF file is drawn, quantized and written one tensor at a time (a 7B model
	 * would not fit in memory as f32); the llama2.c file needs the f32 model built. */
	int status = 0;
	char *chat_template = NULL;
	if (chat_template_arg && out_gguf) {
		chat_template = read_chat_template(chat_template_arg, &extras.chat_template_len);
		if (!chat_template)
			status = 2;
		extras.chat_template = chat_template;
	}
	if (!status && out_gguf &&
	    rs_model_random_write_gguf(out_gguf, &cfg, dtype, seed, tied, &extras,
				       quantized ? &scheme : NULL, tok, err, sizeof(err))) {
		fprintf(stderr, "ringserve-mkmodel: %s\n", err);
		status = 1;
	}
	struct rs_model *model = NULL;
	if (!status && out_llama2c) {
		int ret = rs_model_random_arch(&cfg, dtype, seed, tied, &extras, &model);
		if (ret) {
			fprintf(stderr, "ringserve-mkmodel: cannot build the model: %s\n",
				strerror(-ret));
			status = 1;
		}
	}
	if (!status && out_llama2c && rs_llama2c_write(out_llama2c, model, err, sizeof(err))) {
		fprintf(stderr, "ringserve-mkmodel: %s\n", err);
		status = 1;
	}
	if (!status && out_tokenizer) {
		int ret = rs_tokenizer_write_llama2c(tok, out_tokenizer);
		if (ret) {
			fprintf(stderr, "ringserve-mkmodel: %s: %s\n", out_tokenizer,
				strerror(-ret));
			status = 1;
		}
	}
	if (!status)
		fprintf(
		    stderr,
		    "ringserve-mkmodel: %s (%s vocabulary), dim %u, hidden %u, %u layers, %u/%u "
		    "heads, vocab %u, seq %u, %s, %s output, seed %llu\n",
		    arch_name, tokenizer_kind, cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads,
		    cfg.n_kv_heads, cfg.vocab_size, cfg.max_seq_len,
		    quantized ? dtype_name : rs_dtype_name(dtype), tied ? "tied" : "separate",
		    (unsigned long long)seed);
	rs_model_free(model);
	free(chat_template);
	rs_tokenizer_free(tok);
	return status;
}
