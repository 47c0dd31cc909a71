/* GGUF round trips: models written by the writer load back bit-exact in every dtype, tied
 * and untied; metadata of every type, arrays, alignment and version 2 survive. */
#include <math.h>

#include "kernels/model/gguf.h"
#include "kernels/model/mapfile.h"
#include "kernels/model/model_random.h"
#include "kernels/model/tokenizer.h"
#include "tests/model_test.h"

static struct rs_model_config test_config(void)
{
	/* Unusual values everywhere, so that a key read from the wrong place shows. */
	return (struct rs_model_config){
		.dim = 48,
		.hidden_dim = 80,
		.n_layers = 3,
		.n_heads = 6,
		.n_kv_heads = 2,
		.head_dim = 8,
		.vocab_size = 300,
		.max_seq_len = 96,
		.rope_dim = 6,
		.rope_theta = 500000.0f,
		.norm_eps = 1e-6f,
	};
}

static void check_tokenizers_equal(const struct rs_tokenizer *a, const struct rs_tokenizer *b)
{
	REQUIRE(a && b);
	CHECK(rs_tokenizer_vocab_size(a) == rs_tokenizer_vocab_size(b));
	CHECK(rs_tokenizer_bos(a) == rs_tokenizer_bos(b));
	CHECK(rs_tokenizer_eos(a) == rs_tokenizer_eos(b));
	CHECK(rs_tokenizer_unk(a) == rs_tokenizer_unk(b));
	CHECK(rs_tokenizer_flags(a) == rs_tokenizer_flags(b));
	for (uint32_t i = 0; i < rs_tokenizer_vocab_size(a) && i < rs_tokenizer_vocab_size(b); i++) {
		const char *pa, *pb;
		size_t la, lb;
		float sa, sb;
		uint8_t ta, tb;
		rs_tokenizer_piece(a, i, &pa, &la);
		rs_tokenizer_piece(b, i, &pb, &lb);
		rs_tokenizer_token_info(a, i, &sa, &ta);
		rs_tokenizer_token_info(b, i, &sb, &tb);
		CHECK(la == lb && memcmp(pa, pb, la) == 0);
		CHECK(sa == sb && ta == tb);
	}
}

static void test_model_round_trip(enum rs_dtype dtype, bool tied)
{
	struct rs_model_config cfg = test_config();
	struct rs_model *model, *loaded;
	struct rs_tokenizer *tok;
	char path[512], err[256] = "";

	REQUIRE(rs_model_random(&cfg, dtype, 1234 + dtype, tied, &model) == 0);
	REQUIRE(rs_tokenizer_demo(cfg.vocab_size, &tok, err, sizeof(err)) == 0);
	test_path(path, sizeof(path), "model.gguf");
	int ret = rs_gguf_write_model(path, model, tok, err, sizeof(err));
	if (ret)
		fprintf(stderr, "write: %s\n", err);
	REQUIRE(ret == 0);

	ret = rs_model_load(path, NULL, &loaded, err, sizeof(err));
	if (ret)
		fprintf(stderr, "load: %s\n", err);
	REQUIRE(ret == 0);
	CHECK(loaded->config.dim == 48 && loaded->config.hidden_dim == 80);
	CHECK(loaded->config.n_layers == 3 && loaded->config.n_heads == 6);
	CHECK(loaded->config.n_kv_heads == 2 && loaded->config.head_dim == 8);
	CHECK(loaded->config.vocab_size == 300 && loaded->config.max_seq_len == 96);
	CHECK(loaded->config.rope_dim == 6 && loaded->config.rope_theta == 500000.0f);
	CHECK(loaded->config.norm_eps == 1e-6f);
	CHECK(models_same(model, loaded, 1));
	CHECK(loaded->token_embedding.dtype == dtype && loaded->layers[2].w_up.dtype == dtype);
	CHECK(loaded->layers[0].attn_norm.rows == 1 && loaded->layers[0].attn_norm.cols == 48);
	CHECK(loaded->layers[1].wk.rows == 16 && loaded->layers[1].wk.cols == 48);
	CHECK(loaded->layers[1].w_down.rows == 48 && loaded->layers[1].w_down.cols == 80);
	/* Tied: no output.weight in the file, and the output is the embedding itself. */
	CHECK((loaded->output.data == loaded->token_embedding.data) == tied);
	check_tokenizers_equal(tok, loaded->tokenizer);

	void *data;
	size_t size;
	struct rs_gguf *g;
	REQUIRE(rs_map_file(path, &data, &size, err, sizeof(err)) == 0);
	REQUIRE(rs_gguf_parse(data, size, &g, err, sizeof(err)) == 0);
	CHECK((rs_gguf_find_tensor(g, "output.weight") == NULL) == tied);
	CHECK(rs_gguf_n_tensors(g) == 1 + 9 * 3 + 1 + (tied ? 0 : 1));
	const struct rs_gguf_tensor *t = rs_gguf_find_tensor(g, "blk.2.attn_output.weight");
	REQUIRE(t);
	CHECK(t->n_dims == 2 && t->ne[0] == 48 && t->ne[1] == 48);
	CHECK(t->type == (dtype == RS_DTYPE_F32 ? 0u : dtype == RS_DTYPE_F16 ? 1u : 30u));
	for (uint64_t i = 0; i < rs_gguf_n_tensors(g); i++)
		CHECK((rs_gguf_data_offset(g) + rs_gguf_tensor_at(g, i)->offset) % 32 == 0);
	rs_gguf_free(g);
	rs_unmap_file(data, size);

	rs_model_free(loaded);
	rs_model_free(model);
	rs_tokenizer_free(tok);
	unlink(path);
}

/* Every metadata type, arrays, an explicit alignment, two tensors; then version 2. */
static void test_metadata(void)
{
	struct rs_gguf_writer *w;
	char path[512], err[256] = "";
	uint8_t u8 = 200;
	int8_t i8 = -100;
	uint16_t u16 = 60000;
	int16_t i16 = -30000;
	int64_t i64 = -(INT64_C(1) << 40);
	double f64 = -2.5e-300;
	const char *strings[] = { "", "plain", "\xe2\x96\x81unicode \xc3\xa9", "x" };
	int16_t i16_arr[3] = { -1, 0, 32767 };
	double f64_arr[2] = { 1.0 / 3.0, -0.0 };
	float weights[3][5];
	uint16_t norm[7];
	for (int r = 0; r < 3; r++)
		for (int c = 0; c < 5; c++)
			weights[r][c] = (float)(r * 10 + c) / 7.0f;
	for (int i = 0; i < 7; i++)
		norm[i] = rs_f32_to_bf16((float)i - 3.5f);

	REQUIRE(rs_gguf_writer_create(&w) == 0);
	CHECK(rs_gguf_writer_set_value(w, "t.u8", RS_GGUF_TYPE_UINT8, &u8) == 0);
	CHECK(rs_gguf_writer_set_value(w, "t.i8", RS_GGUF_TYPE_INT8, &i8) == 0);
	CHECK(rs_gguf_writer_set_value(w, "t.u16", RS_GGUF_TYPE_UINT16, &u16) == 0);
	CHECK(rs_gguf_writer_set_value(w, "t.i16", RS_GGUF_TYPE_INT16, &i16) == 0);
	CHECK(rs_gguf_writer_set_u32(w, "t.u32", 4000000000u) == 0);
	CHECK(rs_gguf_writer_set_i32(w, "t.i32", -7) == 0);
	CHECK(rs_gguf_writer_set_f32(w, "t.f32", 0.1f) == 0);
	CHECK(rs_gguf_writer_set_bool(w, "t.bool", true) == 0);
	CHECK(rs_gguf_writer_set_string(w, "t.string", "hello, GGUF") == 0);
	CHECK(rs_gguf_writer_set_u64(w, "t.u64", UINT64_MAX) == 0);
	CHECK(rs_gguf_writer_set_value(w, "t.i64", RS_GGUF_TYPE_INT64, &i64) == 0);
	CHECK(rs_gguf_writer_set_value(w, "t.f64", RS_GGUF_TYPE_FLOAT64, &f64) == 0);
	CHECK(rs_gguf_writer_set_string_array(w, "t.strings", strings, NULL, 4) == 0);
	CHECK(rs_gguf_writer_set_array(w, "t.i16s", RS_GGUF_TYPE_INT16, i16_arr, 3) == 0);
	CHECK(rs_gguf_writer_set_array(w, "t.f64s", RS_GGUF_TYPE_FLOAT64, f64_arr, 2) == 0);
	CHECK(rs_gguf_writer_set_array(w, "t.empty", RS_GGUF_TYPE_UINT32, NULL, 0) == 0);
	CHECK(rs_gguf_writer_set_alignment(w, 64) == 0);
	CHECK(rs_gguf_writer_set_alignment(w, 48) == -EINVAL);
	/* The key set as any other: the file's offsets still follow it. */
	CHECK(rs_gguf_writer_set_u32(w, "general.alignment", 128) == 0);
	CHECK(rs_gguf_writer_set_u32(w, "general.alignment", 48) == -EINVAL);
	CHECK(rs_gguf_writer_set_string(w, "general.alignment", "64") == -EINVAL);
	CHECK(rs_gguf_writer_set_u32(w, "", 1) == -EINVAL);
	uint64_t ne_w[2] = { 5, 3 }, ne_n[1] = { 7 };
	CHECK(rs_gguf_writer_add_tensor(w, "norm", RS_GGUF_TENSOR_BF16, ne_n, 1, norm) == 0);
	CHECK(rs_gguf_writer_add_tensor(w, "weights", RS_GGUF_TENSOR_F32, ne_w, 2, weights) == 0);
	CHECK(rs_gguf_writer_add_tensor(w, "weights", RS_GGUF_TENSOR_F32, ne_w, 2, weights) ==
	      -EINVAL);
	CHECK(rs_gguf_writer_add_tensor(w, "q", 2 /* Q4_0 */, ne_w, 2, weights) == -EINVAL);
	test_path(path, sizeof(path), "meta.gguf");
	REQUIRE(rs_gguf_writer_write(w, path) == 0);
	rs_gguf_writer_free(w);

	size_t size;
	uint8_t *data = read_whole(path, &size);
	REQUIRE(data);
	for (int version = 3; version >= 2; version--) {
		struct rs_gguf *g;
		uint32_t v = (uint32_t)version;
		memcpy(data + 4, &v, 4);
		int ret = rs_gguf_parse(data, size, &g, err, sizeof(err));
		if (ret)
			fprintf(stderr, "parse: %s\n", err);
		REQUIRE(ret == 0);
		CHECK(rs_gguf_version(g) == v);
		CHECK(rs_gguf_n_kv(g) == 17 && rs_gguf_n_tensors(g) == 2);
		CHECK(rs_gguf_alignment(g) == 128 && rs_gguf_data_offset(g) % 128 == 0);

		const struct rs_gguf_kv *kv;
		kv = rs_gguf_find_kv(g, "t.u8");
		CHECK(kv && kv->type == RS_GGUF_TYPE_UINT8 && kv->v.u == 200);
		kv = rs_gguf_find_kv(g, "t.i8");
		CHECK(kv && kv->type == RS_GGUF_TYPE_INT8 && kv->v.i == -100);
		kv = rs_gguf_find_kv(g, "t.u16");
		CHECK(kv && kv->type == RS_GGUF_TYPE_UINT16 && kv->v.u == 60000);
		kv = rs_gguf_find_kv(g, "t.i16");
		CHECK(kv && kv->type == RS_GGUF_TYPE_INT16 && kv->v.i == -30000);
		kv = rs_gguf_find_kv(g, "t.i64");
		CHECK(kv && kv->type == RS_GGUF_TYPE_INT64 && kv->v.i == -(INT64_C(1) << 40));
		kv = rs_gguf_find_kv(g, "t.f64");
		CHECK(kv && kv->type == RS_GGUF_TYPE_FLOAT64 && kv->v.f == -2.5e-300);
		uint32_t u32;
		uint64_t u64;
		float f32;
		bool b;
		struct rs_gguf_str s;
		CHECK(rs_gguf_get_u32(g, "t.u32", &u32) == 0 && u32 == 4000000000u);
		CHECK(rs_gguf_get_u32(g, "t.i32", &u32) == -ERANGE);
		CHECK(rs_gguf_get_u32(g, "t.u64", &u32) == -ERANGE);
		CHECK(rs_gguf_get_u64(g, "t.u64", &u64) == 0 && u64 == UINT64_MAX);
		CHECK(rs_gguf_get_u32(g, "t.u8", &u32) == 0 && u32 == 200);
		CHECK(rs_gguf_get_f32(g, "t.f32", &f32) == 0 && f32 == 0.1f);
		CHECK(rs_gguf_get_f32(g, "t.string", &f32) == -EINVAL);
		CHECK(rs_gguf_get_bool(g, "t.bool", &b) == 0 && b);
		CHECK(rs_gguf_get_string(g, "t.string", &s) == 0 && s.len == 11 &&
		      memcmp(s.ptr, "hello, GGUF", 11) == 0);
		CHECK(rs_gguf_get_u32(g, "t.absent", &u32) == -ENOENT);

		struct rs_gguf_array arr;
		REQUIRE(rs_gguf_get_array(g, "t.strings", &arr) == 0);
		CHECK(arr.elem_type == RS_GGUF_TYPE_STRING && arr.n == 4);
		uint64_t cursor = 0;
		for (int i = 0; i < 4; i++) {
			CHECK(rs_gguf_array_next_string(&arr, &cursor, &s) == 0);
			CHECK(s.len == strlen(strings[i]) && memcmp(s.ptr, strings[i], s.len) == 0);
		}
		CHECK(rs_gguf_array_next_string(&arr, &cursor, &s) == -ENOENT);
		REQUIRE(rs_gguf_get_array(g, "t.i16s", &arr) == 0);
		int64_t iv;
		double dv;
		CHECK(arr.n == 3 && rs_gguf_array_i64(&arr, 0, &iv) == 0 && iv == -1);
		CHECK(rs_gguf_array_i64(&arr, 2, &iv) == 0 && iv == 32767);
		CHECK(rs_gguf_array_i64(&arr, 3, &iv) == -ERANGE);
		REQUIRE(rs_gguf_get_array(g, "t.f64s", &arr) == 0);
		CHECK(rs_gguf_array_f64(&arr, 0, &dv) == 0 && dv == 1.0 / 3.0);
		CHECK(rs_gguf_array_f64(&arr, 1, &dv) == 0 && dv == 0.0 && signbit(dv));
		CHECK(rs_gguf_array_i64(&arr, 0, &iv) == -EINVAL);
		REQUIRE(rs_gguf_get_array(g, "t.empty", &arr) == 0);
		CHECK(arr.n == 0 && arr.elem_type == RS_GGUF_TYPE_UINT32);

		const struct rs_gguf_tensor *t = rs_gguf_find_tensor(g, "weights");
		REQUIRE(t);
		CHECK(t->n_dims == 2 && t->ne[0] == 5 && t->ne[1] == 3 && t->type == 0);
		CHECK(t->nbytes == sizeof(weights) && memcmp(t->data, weights, sizeof(weights)) == 0);
		CHECK(((const uint8_t *)t->data - data) % 64 == 0);
		t = rs_gguf_find_tensor(g, "norm");
		REQUIRE(t);
		CHECK(t->n_dims == 1 && t->ne[0] == 7 && t->type == 30);
		CHECK(memcmp(t->data, norm, sizeof(norm)) == 0);
		CHECK(((const uint8_t *)t->data - data) % 64 == 0);
		CHECK(rs_gguf_find_tensor(g, "weight") == NULL);
		rs_gguf_free(g);
	}
	free(data);
	unlink(path);
}

int main(void)
{
	test_dir_create();
	const enum rs_dtype dtypes[] = { RS_DTYPE_F32, RS_DTYPE_F16, RS_DTYPE_BF16 };
	for (int d = 0; d < 3; d++) {
		test_model_round_trip(dtypes[d], false);
		test_model_round_trip(dtypes[d], true);
	}
	test_metadata();
	return test_result("model_gguf");
}
