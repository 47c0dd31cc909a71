/* Helpers shared by the model_* tests: checks that report file:line, a temporary
 * directory removed at exit, whole-file reads and writes, and tensor comparison. */
#ifndef RS_TESTS_MODEL_TEST_H
#define RS_TESTS_MODEL_TEST_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/model/dtype.h"
#include "kernels/model/model.h"

static int test_failures;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			test_failures++;                                                           \
		}                                                                                  \
	} while (0)

/* Fatal: the rest of the test cannot run. */
#define REQUIRE(cond)                                                                              \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: required: %s\n", __FILE__, __LINE__, #cond);       \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

static char test_dir[256];

static void test_dir_remove(void)
{
	DIR *d = opendir(test_dir);
	if (!d)
		return;
	struct dirent *e;
	char path[512];
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", test_dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(test_dir);
}

/* Create the test's temporary directory (removed at exit). */
__attribute__((unused)) static void test_dir_create(void)
{
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(test_dir, sizeof(test_dir), "%s/rs-model-XXXXXX", base);
	REQUIRE(mkdtemp(test_dir));
	atexit(test_dir_remove);
}

/* test_dir/name into buf. */
__attribute__((unused)) static const char *test_path(char *buf, size_t size, const char *name)
{
	snprintf(buf, size, "%s/%s", test_dir, name);
	return buf;
}

/* Read a whole file into a malloc'd buffer; NULL on error. */
__attribute__((unused)) static void *read_whole(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	void *buf = malloc(n > 0 ? (size_t)n : 1);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*size = (size_t)n;
	return buf;
}

__attribute__((unused)) static int write_whole(const char *path, const void *data, size_t size)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -errno;
	int ok = fwrite(data, 1, size, f) == size;
	return fclose(f) == 0 && ok ? 0 : -EIO;
}

/* Same dtype, shape and bytes. */
__attribute__((unused)) static int tensor_same(const struct rs_tensor *a, const struct rs_tensor *b)
{
	return a->dtype == b->dtype && a->rows == b->rows && a->cols == b->cols &&
	       memcmp(a->data, b->data, a->rows * a->cols * rs_dtype_size(a->dtype)) == 0;
}

/* Same shape and the same values as float32 (a may be F16/BF16, b F32: exact conversion). */
__attribute__((unused)) static int tensor_same_values(const struct rs_tensor *a,
						      const struct rs_tensor *b)
{
	if (a->rows != b->rows || a->cols != b->cols)
		return 0;
	for (uint64_t i = 0; i < a->rows * a->cols; i++) {
		float x = rs_tensor_get(a, i), y = rs_tensor_get(b, i);
		if (memcmp(&x, &y, sizeof(x)) != 0)
			return 0;
	}
	return 1;
}

/* Every weight of two models: bit-exact (exact_dtype) or equal as float32 values. */
__attribute__((unused)) static int models_same(const struct rs_model *a, const struct rs_model *b,
					       int exact_dtype)
{
	int (*same)(const struct rs_tensor *, const struct rs_tensor *) =
	    exact_dtype ? tensor_same : tensor_same_values;
	if (memcmp(&a->config, &b->config, sizeof(a->config)) != 0)
		return 0;
	if (!same(&a->token_embedding, &b->token_embedding) ||
	    !same(&a->final_norm, &b->final_norm) || !same(&a->output, &b->output))
		return 0;
	for (uint32_t l = 0; l < a->config.n_layers; l++) {
		const struct rs_layer_weights *x = &a->layers[l], *y = &b->layers[l];
		if (!same(&x->attn_norm, &y->attn_norm) || !same(&x->wq, &y->wq) ||
		    !same(&x->wk, &y->wk) || !same(&x->wv, &y->wv) || !same(&x->wo, &y->wo) ||
		    !same(&x->ffn_norm, &y->ffn_norm) || !same(&x->w_gate, &y->w_gate) ||
		    !same(&x->w_down, &y->w_down) || !same(&x->w_up, &y->w_up))
			return 0;
		/* Optional tensors (Qwen2's biases): both absent, or the same. */
		const struct rs_tensor *xs[] = {&x->bq, &x->bk, &x->bv},
				       *ys[] = {&y->bq, &y->bk, &y->bv};
		for (int i = 0; i < 3; i++)
			if ((!xs[i]->data || !ys[i]->data) ? xs[i]->data != ys[i]->data
							   : !same(xs[i], ys[i]))
				return 0;
	}
	if (a->arch != b->arch || !a->rope_freqs.data != !b->rope_freqs.data ||
	    (a->rope_freqs.data && !same(&a->rope_freqs, &b->rope_freqs)))
		return 0;
	return 1;
}

static int test_result(const char *name)
{
	if (test_failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", name, test_failures);
		return 1;
	}
	return 0;
}

#endif
