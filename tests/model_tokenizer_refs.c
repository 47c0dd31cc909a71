/* The tokenizer against independent references: llama.cpp's vocabulary-only GGUF files of
 * real models, each with a .inp file of hard texts and a .out file of the ids the model's
 * own (Hugging Face) tokenizer gives for them (fetched by tools/fetch-vocab-refs.sh into
 * .cache/vocab-refs, or $RS_VOCAB_REFS). For every vocabulary kind ringserve supports:
 *   - every text encodes to exactly the reference ids (no BOS/EOS, as the references);
 *   - the ids decode back to the text;
 *   - the vocabulary serialized (as the daemon publishes it to clients) and loaded again
 *     encodes every text the same;
 * and vocabularies ringserve does not support fail to load with a message, not a crash.
 * Also prints the encoding speed on a large text. Skips (77) without the files. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "kernels/model/tokenizer.h"

static int failures;

/* Whole file into a NUL-terminated buffer (NULL when absent). */
static char *read_file(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		fprintf(stderr, "cannot read %s\n", path);
		exit(1);
	}
	buf[n] = '\0';
	fclose(f);
	*size = (size_t)n;
	return buf;
}

struct test_case {
	const char *text;
	size_t len;
	uint32_t *ids;
	size_t n_ids;
};

/* Split .inp at "\n__ggml_vocab_test__\n" and read one line of ids per case from .out, as
 * llama.cpp's tests/test-tokenizer-0.cpp reads them. Returns the number of cases. */
static size_t read_cases(char *inp, size_t inp_len, char *out, struct test_case **cases_out)
{
	static const char sep[] = "\n__ggml_vocab_test__\n";
	size_t n = 0, cap = 64;
	struct test_case *cases = calloc(cap, sizeof(*cases));
	for (size_t pos = 0; pos < inp_len;) {
		char *next = memmem(inp + pos, inp_len - pos, sep, sizeof(sep) - 1);
		size_t end = next ? (size_t)(next - inp) : inp_len;
		if (n == cap)
			cases = realloc(cases, (cap *= 2) * sizeof(*cases));
		cases[n].text = inp + pos;
		cases[n].len = end - pos;
		n++;
		if (!next)
			break;
		pos = end + sizeof(sep) - 1;
	}
	char *line = out;
	for (size_t i = 0; i < n; i++) {
		if (!line || !*line) {
			fprintf(stderr,
				"the .out file has fewer lines than the .inp file has cases\n");
			exit(1);
		}
		char *eol = strchr(line, '\n');
		if (eol)
			*eol = '\0';
		size_t k = 0;
		cases[i].ids = malloc((strlen(line) / 2 + 1) * sizeof(uint32_t));
		for (char *p = line, *q; *p; p = q) {
			unsigned long v = strtoul(p, &q, 10);
			if (q == p)
				break;
			cases[i].ids[k++] = (uint32_t)v;
		}
		cases[i].n_ids = k;
		line = eol ? eol + 1 : NULL;
	}
	*cases_out = cases;
	return n;
}

/* Print a text as a C string literal, for failure messages. */
static void print_text(const char *s, size_t n)
{
	fputc('"', stderr);
	for (size_t i = 0; i < n && i < 200; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\n')
			fputs("\\n", stderr);
		else if (c == '\t')
			fputs("\\t", stderr);
		else if (c < 0x20 || c == '"' || c == '\\')
			fprintf(stderr, "\\x%02x", c);
		else
			fputc(c, stderr);
	}
	fputs(n > 200 ? "\"..." : "\"", stderr);
}

static void print_ids(const char *what, const uint32_t *ids, size_t n)
{
	fprintf(stderr, "\n    %s:", what);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, " %u", ids[i]);
}

/* Encode every case with tok and compare; decode back. Returns the number that agree. */
static size_t check_cases(const char *name, const struct rs_tokenizer *tok,
			  const struct test_case *cases, size_t n, int decode)
{
	size_t agreed = 0;
	for (size_t i = 0; i < n; i++) {
		const struct test_case *c = &cases[i];
		size_t cap = rs_tokenizer_max_tokens(c->len);
		uint32_t *ids = malloc(cap * sizeof(*ids));
		int got = rs_tokenizer_encode(tok, c->text, c->len, 0, ids, cap);
		int ok = got >= 0 && (size_t)got == c->n_ids &&
			 memcmp(ids, c->ids, c->n_ids * sizeof(*ids)) == 0;
		if (!ok) {
			fprintf(stderr, "%s: case %zu ", name, i);
			print_text(c->text, c->len);
			fprintf(stderr, " encodes differently (%d)", got);
			print_ids("reference", c->ids, c->n_ids);
			if (got > 0)
				print_ids("ringserve", ids, (size_t)got);
			fputc('\n', stderr);
			failures++;
		}
		if (ok && decode) {
			size_t size = 4 * c->len + 64;
			char *text = malloc(size);
			int len = rs_tokenizer_decode(tok, c->ids, c->n_ids, text, size);
			if (len != (int)c->len || memcmp(text, c->text, c->len) != 0) {
				fprintf(stderr, "%s: case %zu ", name, i);
				print_text(c->text, c->len);
				fprintf(stderr, " decodes to ");
				print_text(text, len > 0 ? (size_t)len : 0);
				fputc('\n', stderr);
				failures++;
				ok = 0;
			}
			free(text);
		}
		agreed += ok;
		free(ids);
	}
	return agreed;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Encoding speed on the cases' texts repeated to about 1 MiB. */
static void measure(const char *name, const struct rs_tokenizer *tok, const struct test_case *cases,
		    size_t n)
{
	size_t size = 0, target = 1u << 20;
	char *text = malloc(target + 4096);
	while (size < target)
		for (size_t i = 0; i < n && size < target; i++) {
			size_t len = cases[i].len < 4096 ? cases[i].len : 4096;
			memcpy(text + size, cases[i].text, len);
			size += len;
			text[size++] = ' ';
		}
	size_t cap = rs_tokenizer_max_tokens(size);
	uint32_t *ids = malloc(cap * sizeof(*ids));
	double t0 = now();
	int got = rs_tokenizer_encode(tok, text, size, 0, ids, cap);
	double secs = now() - t0;
	if (got < 0) {
		fprintf(stderr, "%s: encoding %zu bytes failed: %d\n", name, size, got);
		failures++;
	} else {
		printf("  %-16s %zu bytes -> %d ids in %.1f ms (%.1f MB/s)\n", name, size, got,
		       secs * 1e3, (double)size / secs / 1e6);
	}
	free(ids);
	free(text);
}

/* Vocabularies whose every case must agree, by tokenizer kind. */
/* clang-format off */
static const char *const supported[] = {
	"llama-spm", "phi-3", /* SentencePiece */
	"llama-bpe", "qwen2", "qwen35", "gpt-2", "starcoder", "refact", "command-r", "mpt",
	"deepseek-coder", "deepseek-llm", "falcon", /* BPE */
};
/* Vocabularies ringserve does not support: they must fail to load cleanly. */
static const char *const unsupported[] = {
	"bert-bge", "gemma-4", "nomic-bert-moe",
	"gpt-neox", "aquila",
};
/* clang-format on */

int main(void)
{
	const char *dir = getenv("RS_VOCAB_REFS");
	char path[512], err[512];
	size_t total_cases = 0, total_agreed = 0;
	if (!dir)
		dir = ".cache/vocab-refs";
	snprintf(path, sizeof(path), "%s/ggml-vocab-llama-bpe.gguf.out", dir);
	struct stat st;
	if (stat(path, &st) != 0) {
		printf("no reference vocabularies in %s (run tools/fetch-vocab-refs.sh or make "
		       "vocab-refs; RS_VOCAB_REFS names another folder)\n",
		       dir);
		return 77;
	}

	for (size_t v = 0; v < sizeof(supported) / sizeof(supported[0]); v++) {
		const char *name = supported[v];
		size_t inp_len, out_len;
		snprintf(path, sizeof(path), "%s/ggml-vocab-%s.gguf.inp", dir, name);
		char *inp = read_file(path, &inp_len);
		snprintf(path, sizeof(path), "%s/ggml-vocab-%s.gguf.out", dir, name);
		char *out = read_file(path, &out_len);
		if (!inp || !out) {
			fprintf(stderr, "%s: no .inp/.out files in %s\n", name, dir);
			failures++;
			continue;
		}
		struct test_case *cases;
		size_t n = read_cases(inp, inp_len, out, &cases);

		struct rs_tokenizer *tok, *copy = NULL;
		snprintf(path, sizeof(path), "%s/ggml-vocab-%s.gguf", dir, name);
		double t0 = now();
		int ret = rs_tokenizer_load_file(path, 0, &tok, err, sizeof(err));
		double load_ms = (now() - t0) * 1e3;
		if (ret) {
			fprintf(stderr, "%s: %s\n", name, err);
			failures++;
			continue;
		}
		size_t agreed = check_cases(name, tok, cases, n, 1);

		/* Through the serialized form, as clients get it. */
		size_t size = rs_tokenizer_serialized_size(tok);
		void *buf = malloc(size);
		if (rs_tokenizer_serialize(tok, buf, size) != (int64_t)size ||
		    rs_tokenizer_load_serialized(buf, size, &copy) != 0) {
			fprintf(stderr, "%s: the serialized vocabulary does not load again\n",
				name);
			failures++;
		} else if (check_cases(name, copy, cases, n, 0) != agreed) {
			fprintf(stderr, "%s: the serialized vocabulary encodes differently\n",
				name);
			failures++;
		}
		printf("%-16s %s, %u tokens, %u merges: %zu of %zu cases agree (loaded in %.0f ms, "
		       "serialized %zu KiB)\n",
		       name, rs_tokenizer_kind(tok) == RS_TOKENIZER_BPE ? "BPE" : "SPM",
		       rs_tokenizer_vocab_size(tok), rs_tokenizer_n_merges(tok), agreed, n, load_ms,
		       size >> 10);
		measure(name, tok, cases, n);
		total_cases += n;
		total_agreed += agreed;
		free(buf);
		rs_tokenizer_free(copy);
		rs_tokenizer_free(tok);
		for (size_t i = 0; i < n; i++)
			free(cases[i].ids);
		free(cases);
		free(inp);
		free(out);
	}

	for (size_t v = 0; v < sizeof(unsupported) / sizeof(unsupported[0]); v++) {
		struct rs_tokenizer *tok;
		snprintf(path, sizeof(path), "%s/ggml-vocab-%s.gguf", dir, unsupported[v]);
		if (stat(path, &st) != 0)
			continue;
		int ret = rs_tokenizer_load_file(path, 0, &tok, err, sizeof(err));
		if (ret == 0) {
			fprintf(stderr, "%s: loads, but ringserve does not implement it\n",
				unsupported[v]);
			rs_tokenizer_free(tok);
			failures++;
		} else {
			printf("%-16s not supported: %s\n", unsupported[v], err);
		}
	}
	printf("%zu of %zu reference cases agree\n", total_agreed, total_cases);
	if (failures) {
		fprintf(stderr, "%d failures\n", failures);
		return 1;
	}
	return 0;
}
