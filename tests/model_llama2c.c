/* llama2.c checkpoints: a hand-built file is read at the offsets run.c uses; written models
 * (shared and separate classifier, F32 and converted BF16) load back equal; tokenizer.bin
 * next to a checkpoint is found and encodes as the vocabulary it was written from. */
#include "kernels/model/llama2c.h"
#include "kernels/model/model_random.h"
#include "kernels/model/tokenizer.h"
#include "tests/model_test.h"

/* dim 4, hidden 6, 2 layers, 2 heads, 1 kv head, vocab 5, seq_len 3: head_size 2, kv_dim 2.
 * Float index ranges by llama2.c's run.c (memory_map_weights):
 *   token_embedding 5*4 = 20       [0, 20)
 *   rms_att         2*4 = 8        [20, 28)
 *   wq              2*4*4 = 32     [28, 60)
 *   wk              2*2*4 = 16     [60, 76)
 *   wv              16             [76, 92)
 *   wo              32             [92, 124)
 *   rms_ffn         8              [124, 132)
 *   w1              2*6*4 = 48     [132, 180)
 *   w2              48             [180, 228)
 *   w3              48             [228, 276)
 *   rms_final       4              [276, 280)
 *   freq_cis_real   3*2/2 = 3      [280, 283), freq_cis_imag 3 [283, 286)
 *   wcls            20             [286, 306) only when vocab_size < 0
 * Every float holds its own index, so a value read tells where it was read from. */
static void test_hand_built(int shared)
{
	int n_floats = shared ? 286 : 306;
	size_t size = 28 + 4 * (size_t)n_floats;
	uint8_t *file = malloc(size + 4);
	int32_t header[7] = { 4, 6, 2, 2, 1, shared ? 5 : -5, 3 };
	char path[512], err[256] = "";
	REQUIRE(file);
	memcpy(file, header, sizeof(header));
	for (int i = 0; i < n_floats; i++) {
		float v = (float)i;
		memcpy(file + 28 + 4 * i, &v, 4);
	}
	test_path(path, sizeof(path), "hand.bin");
	REQUIRE(write_whole(path, file, size) == 0);

	struct rs_model *m;
	int ret = rs_model_load(path, NULL, &m, err, sizeof(err));
	if (ret)
		fprintf(stderr, "load: %s\n", err);
	REQUIRE(ret == 0);
	const struct rs_model_config *c = &m->config;
	CHECK(c->dim == 4 && c->hidden_dim == 6 && c->n_layers == 2 && c->n_heads == 2);
	CHECK(c->n_kv_heads == 1 && c->vocab_size == 5 && c->max_seq_len == 3);
	CHECK(c->head_dim == 2 && c->rope_dim == 2 && c->rope_theta == 10000.0f &&
	      c->norm_eps == 1e-5f);
	CHECK(m->tokenizer == NULL);
	CHECK(rs_tensor_get(&m->token_embedding, 0) == 0.0f);
	CHECK(rs_tensor_get(&m->token_embedding, 19) == 19.0f);
	CHECK(rs_tensor_get(&m->layers[0].attn_norm, 0) == 20.0f);
	CHECK(rs_tensor_get(&m->layers[1].attn_norm, 3) == 27.0f);
	CHECK(rs_tensor_get(&m->layers[1].wq, 0) == 44.0f);
	CHECK(m->layers[1].wk.rows == 2 && m->layers[1].wk.cols == 4);
	CHECK(rs_tensor_get(&m->layers[1].wk, 0) == 68.0f);
	CHECK(rs_tensor_get(&m->layers[0].wv, 7) == 83.0f);
	CHECK(rs_tensor_get(&m->layers[1].wo, 15) == 123.0f);
	CHECK(rs_tensor_get(&m->layers[1].ffn_norm, 2) == 130.0f);
	CHECK(m->layers[0].w_gate.rows == 6 && m->layers[0].w_gate.cols == 4);
	CHECK(rs_tensor_get(&m->layers[1].w_gate, 0) == 156.0f);
	CHECK(m->layers[0].w_down.rows == 4 && m->layers[0].w_down.cols == 6);
	CHECK(rs_tensor_get(&m->layers[0].w_down, 3 * 6 + 5) == 203.0f);
	CHECK(rs_tensor_get(&m->layers[1].w_up, 0) == 252.0f);
	CHECK(rs_tensor_get(&m->final_norm, 0) == 276.0f);
	CHECK(m->output.rows == 5 && m->output.cols == 4);
	CHECK(rs_tensor_get(&m->output, 0) == (shared ? 0.0f : 286.0f));
	CHECK(rs_tensor_get(&m->output, 19) == (shared ? 19.0f : 305.0f));
	rs_model_free(m);

	/* One float more or less than the header implies: rejected, naming the sizes. */
	for (int delta = -4; delta <= 4; delta += 8) {
		REQUIRE(write_whole(path, file, size + (size_t)delta) == 0);
		err[0] = '\0';
		CHECK(rs_model_load(path, NULL, &m, err, sizeof(err)) == -EINVAL);
		CHECK(m == NULL && strstr(err, "implies") && strstr(err, "hand.bin"));
	}
	free(file);
	unlink(path);
}

static void test_round_trip(enum rs_dtype dtype, bool tied)
{
	struct rs_model_config cfg = {
		.dim = 32, .hidden_dim = 72, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
		.head_dim = 8, .vocab_size = 320, .max_seq_len = 40, .rope_dim = 8,
		.rope_theta = 10000.0f, .norm_eps = 1e-5f,
	};
	struct rs_model *model, *loaded;
	char path[512], err[256] = "";
	REQUIRE(rs_model_random(&cfg, dtype, 99, tied, &model) == 0);
	test_path(path, sizeof(path), "model.bin");
	int ret = rs_llama2c_write(path, model, err, sizeof(err));
	if (ret)
		fprintf(stderr, "write: %s\n", err);
	REQUIRE(ret == 0);
	ret = rs_model_load(path, NULL, &loaded, err, sizeof(err));
	if (ret)
		fprintf(stderr, "load: %s\n", err);
	REQUIRE(ret == 0);
	CHECK(models_same(model, loaded, dtype == RS_DTYPE_F32));
	CHECK(models_same(model, loaded, 0));
	CHECK(loaded->token_embedding.dtype == RS_DTYPE_F32);
	CHECK((loaded->output.data == loaded->token_embedding.data) == tied);
	size_t size;
	void *bytes = read_whole(path, &size);
	REQUIRE(bytes);
	int32_t vocab_field;
	memcpy(&vocab_field, (uint8_t *)bytes + 20, 4);
	CHECK(vocab_field == (tied ? 320 : -320));
	free(bytes);
	rs_model_free(loaded);

	/* The format cannot say rope_theta: a model that needs another one is refused. */
	model->config.rope_theta = 500000.0f;
	err[0] = '\0';
	CHECK(rs_llama2c_write(path, model, err, sizeof(err)) == -EINVAL && strstr(err, "rope_theta"));
	rs_model_free(model);
	unlink(path);
}

static void test_sibling_tokenizer(void)
{
	struct rs_model_config cfg = {
		.dim = 16, .hidden_dim = 24, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1,
		.head_dim = 8, .vocab_size = 400, .max_seq_len = 16, .rope_dim = 8,
		.rope_theta = 10000.0f, .norm_eps = 1e-5f,
	};
	struct rs_model *model, *loaded;
	struct rs_tokenizer *tok;
	char path[512], tok_path[512], err[256] = "";
	REQUIRE(rs_model_random(&cfg, RS_DTYPE_F32, 5, true, &model) == 0);
	REQUIRE(rs_tokenizer_demo(400, &tok, err, sizeof(err)) == 0);
	test_path(path, sizeof(path), "stories.bin");
	test_path(tok_path, sizeof(tok_path), "tokenizer.bin");
	REQUIRE(rs_llama2c_write(path, model, err, sizeof(err)) == 0);
	REQUIRE(rs_tokenizer_write_llama2c(tok, tok_path) == 0);

	int ret = rs_model_load(path, NULL, &loaded, err, sizeof(err));
	if (ret)
		fprintf(stderr, "load: %s\n", err);
	REQUIRE(ret == 0);
	REQUIRE(loaded->tokenizer);
	const struct rs_tokenizer *lt = loaded->tokenizer;
	CHECK(rs_tokenizer_vocab_size(lt) == 400);
	CHECK(rs_tokenizer_bos(lt) == 1 && rs_tokenizer_eos(lt) == 2 && rs_tokenizer_unk(lt) == 0);
	/* tokenizer.bin spells "▁the" as " the"; everything else is unchanged. */
	int32_t meta_the = rs_tokenizer_find(tok, "\xe2\x96\x81the", 6);
	REQUIRE(meta_the >= 0);
	CHECK(rs_tokenizer_find(lt, " the", 4) == meta_the);
	CHECK(rs_tokenizer_find(lt, "<0x41>", 6) == 3 + 0x41);
	const char *text = "the little girl said hello to Lily, caf\xc3\xa9 {x}";
	uint32_t a[256], b[256];
	int na = rs_tokenizer_encode(tok, text, strlen(text), RS_ENCODE_BOS, a, 256);
	int nb = rs_tokenizer_encode(lt, text, strlen(text), RS_ENCODE_BOS, b, 256);
	CHECK(na > 0 && na == nb && memcmp(a, b, sizeof(a[0]) * (size_t)na) == 0);
	char out[512];
	CHECK(rs_tokenizer_decode(lt, b, (size_t)nb, out, sizeof(out)) == (int)strlen(text));
	CHECK(strcmp(out, text) == 0);
	rs_model_free(loaded);

	/* An explicit tokenizer path that does not exist is an error naming it. */
	err[0] = '\0';
	test_path(tok_path, sizeof(tok_path), "missing.bin");
	CHECK(rs_model_load(path, tok_path, &loaded, err, sizeof(err)) == -ENOENT);
	CHECK(strstr(err, "missing.bin") != NULL);

	rs_tokenizer_free(tok);
	rs_model_free(model);
}

int main(void)
{
	test_dir_create();
	test_hand_built(1);
	test_hand_built(0);
	test_round_trip(RS_DTYPE_F32, true);
	test_round_trip(RS_DTYPE_F32, false);
	test_round_trip(RS_DTYPE_BF16, false);
	test_round_trip(RS_DTYPE_F16, true);
	test_sibling_tokenizer();
	return test_result("model_llama2c");
}
