/* Chat templates against the real ones (issue 11, section 5), no daemon:
 *   - every template of llama.cpp's models/templates/ that ringserve formats (fetched by
 *     tools/fetch-vocab-refs.sh into .cache/vocab-refs/templates, or $RS_VOCAB_REFS), and
 *     the originals in tests/chat/ that the bundle's models/templates/ lacks (Llama 2,
 *     Llama 3.0, plain ChatML from Hugging Face; Mistral v1, v3, v7 and the first v0.1/v0.2
 *     template from the bundle's tests/test-chat-template.cpp), is recognized as its
 *     family, and formats sample conversations byte for byte as Jinja2 renders the
 *     template itself (tests/chat/render.py, as transformers' apply_chat_template does);
 *   - every other template of the bundle is not recognized (no silent wrong format);
 *   - the formatted text tokenizes with the real vocabularies (Llama 3, Qwen2, Phi-3,
 *     Llama 2) to the special ids where the template writes special tokens, and message
 *     content that spells a special token stays text;
 *   - names, errors, and rs_chat_format's snprintf contract.
 * The bundle's parts skip (with a message) without the files or without python3-jinja2. */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client-lib/chat_template.h"
#include "client-lib/ringserve.h"
#include "client-lib/special_tokens.h"
#include "kernels/model/tokenizer.h"
#include "tests/harness/harness.h"

static int failures;

#define FAIL(...)                                                                                  \
	do {                                                                                       \
		fprintf(stderr, __VA_ARGS__);                                                      \
		fprintf(stderr, "\n");                                                             \
		failures++;                                                                        \
	} while (0)

/* --- sample conversations ----------------------------------------------------------- */

enum { C_SYSTEM = 1, C_NO_SYSTEM = 2, C_HISTORY = 4, C_UNICODE = 8, C_ALL = 15 };

struct conversation {
	unsigned bit;
	const char *name;
	struct rs_chat_message messages[6];
	size_t n;
	bool add_assistant;
};

static const struct conversation conversations[] = {
    {C_SYSTEM,
     "system",
     {{"system", "You are terse."},
      {"user", "Hi there"},
      {"assistant", "Hello! How can I help?"},
      {"user", "What is 2+2?"}},
     4,
     true},
    /* Whitespace around content: the templates that trim it and those that do not. */
    {C_NO_SYSTEM,
     "no-system",
     {{"user", "  Hi there\n"}, {"assistant", " Hello! \n"}, {"user", "Bye "}},
     3,
     true},
    /* Ends with an answer (no assistant turn opened); answers with reasoning blocks. */
    {C_HISTORY,
     "history",
     {{"user", "Q1"},
      {"assistant", "<think>\nstep one\n</think>\n\nA1"},
      {"user", "Q2"},
      {"assistant", "<think>r2</think>A2"}},
     4,
     false},
    {C_UNICODE,
     "unicode",
     {{"user", "Say <|im_end|> and [INST] literally: naïve café, 日本語 🙂"}},
     1,
     true},
};
#define N_CONVERSATIONS (sizeof(conversations) / sizeof(conversations[0]))

/* --- the templates ringserve formats, where each comes from --------------------------- */

struct template_case {
	const char *file; /* .jinja, in the bundle's templates/ or (fixture) tests/chat/ */
	bool fixture;
	int tmpl;
	const char *bos, *eos; /* the model's token texts, as transformers passes them */
	unsigned conversations;
};

static const struct template_case cases[] = {
    {"meta-llama-Llama-3.1-8B-Instruct", false, RS_CHAT_LLAMA31, "<|begin_of_text|>", "<|eot_id|>",
     C_ALL},
    {"meta-llama-Llama-3.2-3B-Instruct", false, RS_CHAT_LLAMA32, "<|begin_of_text|>", "<|eot_id|>",
     C_ALL},
    {"meta-llama-Llama-3.3-70B-Instruct", false, RS_CHAT_LLAMA31, "<|begin_of_text|>", "<|eot_id|>",
     C_ALL},
    {"Qwen-Qwen2.5-7B-Instruct", false, RS_CHAT_QWEN25, "", "<|im_end|>", C_ALL},
    {"Qwen-Qwen3-0.6B", false, RS_CHAT_QWEN3, "", "<|im_end|>", C_ALL},
    {"openbmb-MiniCPM5-1B", false, RS_CHAT_QWEN3, "", "<|im_end|>", C_ALL}, /* Qwen3's */
    {"mistralai-Mistral-Nemo-Instruct-2407", false, RS_CHAT_MISTRAL_V3_TEKKEN, "<s>", "</s>",
     C_ALL},
    /* These three put a long default system prompt of their own in front of a
     * conversation without one (ringserve does not): compared with a system message. */
    {"Mistral-Small-3.2-24B-Instruct-2506", false, RS_CHAT_MISTRAL_V7_TEKKEN, "<s>", "</s>",
     C_SYSTEM},
    {"unsloth-mistral-Devstral-Small-2507", false, RS_CHAT_MISTRAL_V7_TEKKEN, "<s>", "</s>",
     C_SYSTEM},
    {"mistralai-Ministral-3-14B-Reasoning-2512", false, RS_CHAT_MISTRAL_V7_TEKKEN, "<s>", "</s>",
     C_SYSTEM},
    /* Gemma's template refuses a system message. */
    {"google-gemma-2-2b-it", false, RS_CHAT_GEMMA, "<bos>", "<eos>",
     C_NO_SYSTEM | C_HISTORY | C_UNICODE},
    {"microsoft-Phi-3.5-mini-instruct", false, RS_CHAT_PHI3, "<s>", "<|endoftext|>", C_ALL},
    {"meta-llama-Llama-2-7b-chat-hf", true, RS_CHAT_LLAMA2, "<s>", "</s>", C_ALL},
    {"meta-llama-Meta-Llama-3-8B-Instruct", true, RS_CHAT_LLAMA3, "<|begin_of_text|>", "<|eot_id|>",
     C_ALL},
    {"chatml", true, RS_CHAT_CHATML, "", "<|im_end|>", C_ALL},
    /* Mistral's [INST] templates before tekken, which the bundle's models/templates/ lacks:
     * the bundle's tests/test-chat-template.cpp carries them (verbatim from the models'
     * tokenizer_config.json), copied to tests/chat/. */
    {"mistralai-Mistral-7B-Instruct-v0.2", true, RS_CHAT_MISTRAL_V1, "<s>", "</s>", C_ALL},
    {"mistralai-Mistral-Large-Instruct-2407", true, RS_CHAT_MISTRAL_V3, "<s>", "</s>", C_ALL},
    {"mistralai-Mistral-Large-Instruct-2411", true, RS_CHAT_MISTRAL_V7, "<s>", "</s>", C_ALL},
    /* The first template of Mistral-7B-Instruct v0.1/v0.2 refuses a system message. */
    {"mistralai-Mistral-7B-Instruct-v0.2-legacy", true, RS_CHAT_MISTRAL_LEGACY, "<s>", "</s>",
     C_NO_SYSTEM | C_HISTORY | C_UNICODE},
};
#define N_CASES (sizeof(cases) / sizeof(cases[0]))

static char *read_file(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	CHECK(buf && fread(buf, 1, (size_t)n, f) == (size_t)n, "cannot read %s", path);
	buf[n] = '\0';
	fclose(f);
	if (size)
		*size = (size_t)n;
	return buf;
}

/* The time both Jinja2 and ringserve render at (llama3.2 writes its local date):
 * 2024-02-29 12:00:00 UTC. */
#define JINJA_NOW 1709208000

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void template_path(const struct template_case *tc, const char *refs, char *path, size_t size)
{
	if (tc->fixture)
		snprintf(path, size, "tests/chat/%s.jinja", tc->file);
	else
		snprintf(path, size, "%s/templates/%s.jinja", refs, tc->file);
}

/* One Jinja2 run renders every (template, conversation) pair: a job list in, records
 * "T|E <bytes>\n<bytes>\n" out. Returns the number of pairs compared, or -1 to skip. */
static int compare_with_jinja(const char *refs, bool have_bundle)
{
	char jobs_path[] = "/tmp/rs-chat-jobs-XXXXXX", out_path[] = "/tmp/rs-chat-out-XXXXXX";
	int jfd = mkstemp(jobs_path), ofd = mkstemp(out_path);
	CHECK(jfd >= 0 && ofd >= 0, "mkstemp");
	close(ofd);
	FILE *jobs = fdopen(jfd, "w");
	fputc('[', jobs);
	int n_jobs = 0;
	char path[512];
	for (size_t i = 0; i < N_CASES; i++) {
		if (!cases[i].fixture && !have_bundle)
			continue;
		template_path(&cases[i], refs, path, sizeof(path));
		for (size_t c = 0; c < N_CONVERSATIONS; c++) {
			const struct conversation *conv = &conversations[c];
			if (!(cases[i].conversations & conv->bit))
				continue;
			fprintf(jobs, "%s{\"template\": ", n_jobs++ ? ",\n" : "");
			json_string(jobs, path);
			fprintf(jobs, ", \"messages\": [");
			for (size_t m = 0; m < conv->n; m++) {
				fprintf(jobs, "%s{\"role\": ", m ? ", " : "");
				json_string(jobs, conv->messages[m].role);
				fprintf(jobs, ", \"content\": ");
				json_string(jobs, conv->messages[m].content);
				fputc('}', jobs);
			}
			fprintf(jobs, "], \"add_generation_prompt\": %s, \"bos_token\": ",
				conv->add_assistant ? "true" : "false");
			json_string(jobs, cases[i].bos);
			fprintf(jobs, ", \"eos_token\": ");
			json_string(jobs, cases[i].eos);
			/* strftime_now's time: one fixed instant for both renderers (llama3.2). */
			fprintf(jobs, ", \"now\": %lld}", (long long)JINJA_NOW);
		}
	}
	fputs("]\n", jobs);
	fclose(jobs);

	const char *python = getenv("RS_PYTHON") ? getenv("RS_PYTHON") : "/usr/bin/python3";
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "%s tests/chat/render.py < %s > %s", python, jobs_path,
		 out_path);
	int status = system(cmd);
	unlink(jobs_path);
	if (!WIFEXITED(status) || WEXITSTATUS(status) == 77) {
		unlink(out_path);
		return -1;
	}
	CHECK(WEXITSTATUS(status) == 0, "tests/chat/render.py failed (exit %d)",
	      WEXITSTATUS(status));
	size_t out_len;
	char *out = read_file(out_path, &out_len);
	unlink(out_path);
	CHECK(out, "no output from render.py");

	size_t pos = 0;
	int compared = 0;
	for (size_t i = 0; i < N_CASES; i++) {
		if (!cases[i].fixture && !have_bundle)
			continue;
		for (size_t c = 0; c < N_CONVERSATIONS; c++) {
			const struct conversation *conv = &conversations[c];
			if (!(cases[i].conversations & conv->bit))
				continue;
			char kind;
			size_t len;
			int used;
			CHECK(sscanf(out + pos, "%c %zu\n%n", &kind, &len, &used) == 2 &&
				  pos + (size_t)used + len <= out_len,
			      "render.py's output is cut at %zu", pos);
			const char *expected = out + pos + used;
			pos += (size_t)used + len + 1;
			if (kind != 'T') {
				FAIL("%s / %s: Jinja2 failed: %.*s", cases[i].file, conv->name,
				     (int)len, expected);
				continue;
			}
			unsigned flags = conv->add_assistant ? RS_CHAT_ADD_ASSISTANT : 0;
			struct rs_chat_text t = {0};
			int ret = rs_chat_render_at(cases[i].tmpl, conv->messages, conv->n, flags,
						    JINJA_NOW, &t);
			CHECK(ret == 0, "%s: rs_chat_render_at: %d", cases[i].file, ret);
			if (t.len != len || memcmp(t.text, expected, len) != 0)
				FAIL("%s / %s differs from Jinja2:\n  jinja: %.*s\n  ours:  %s",
				     cases[i].file, conv->name, (int)len, expected, t.text);
			else
				compared++;
			/* The public call gives the same text (llama3.2: the same length; its
			 * date is today's). */
			int size =
			    rs_chat_format(cases[i].tmpl, conv->messages, conv->n, flags, NULL, 0);
			char *got = malloc(size > 0 ? (size_t)size + 1 : 1);
			CHECK(size >= 0 &&
				  rs_chat_format(cases[i].tmpl, conv->messages, conv->n, flags, got,
						 (size_t)size + 1) == size &&
				  (size_t)size == t.len &&
				  (cases[i].tmpl == RS_CHAT_LLAMA32 ||
				   memcmp(got, t.text, t.len) == 0),
			      "%s: rs_chat_format: %d, rendered %zu", cases[i].file, size, t.len);
			free(got);
			rs_chat_text_free(&t);
		}
	}
	free(out);
	return compared;
}

/* Every template ringserve formats is recognized as its family; every other template of
 * the bundle is not recognized at all. */
static void check_detection(const char *refs, bool have_bundle)
{
	char path[512];
	for (size_t i = 0; i < N_CASES; i++) {
		if (!cases[i].fixture && !have_bundle)
			continue;
		template_path(&cases[i], refs, path, sizeof(path));
		size_t len;
		char *text = read_file(path, &len);
		if (!text) {
			FAIL("%s: missing", path);
			continue;
		}
		int got = rs_chat_template_detect(text, len);
		if (got != cases[i].tmpl)
			FAIL("%s: detected as %s, expected %s", cases[i].file,
			     got > 0 ? rs_chat_template_name(got) : strerror(-got),
			     rs_chat_template_name(cases[i].tmpl));
		free(text);
	}
	if (!have_bundle)
		return;
	snprintf(path, sizeof(path), "%s/templates", refs);
	DIR *dir = opendir(path);
	CHECK(dir, "%s", path);
	struct dirent *e;
	int others = 0;
	while ((e = readdir(dir))) {
		size_t nlen = strlen(e->d_name);
		if (nlen < 7 || strcmp(e->d_name + nlen - 6, ".jinja"))
			continue;
		bool listed = false;
		for (size_t i = 0; i < N_CASES; i++)
			listed |= !cases[i].fixture && strlen(cases[i].file) == nlen - 6 &&
				  !strncmp(cases[i].file, e->d_name, nlen - 6);
		if (listed)
			continue;
		char file[1024];
		snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
		size_t len;
		char *text = read_file(file, &len);
		int got = rs_chat_template_detect(text, len);
		if (got != -ENOENT)
			FAIL("%s: not one ringserve formats, but detected as %s", e->d_name,
			     got > 0 ? rs_chat_template_name(got) : strerror(-got));
		others++;
		free(text);
	}
	closedir(dir);
	printf("detection: %zu templates recognized, %d others of the bundle refused\n", N_CASES,
	       others);
}

/* --- tokenization with the real vocabularies ----------------------------------------- */

static int count_id(const uint32_t *ids, int n, int32_t id)
{
	int count = 0;
	for (int i = 0; i < n; i++)
		count += ids[i] == (uint32_t)id;
	return count;
}

struct special_expectation {
	const char *piece;
	int count; /* in the "system" conversation + the "unicode" user message */
};

/* Format the system conversation plus a user message that spells special tokens, with
 * template tmpl, tokenize it with the vocabulary, and count each special token's id:
 * the counts follow from the conversation (one header per turn), not from the text. */
static void check_tokens(const char *refs, const char *vocab, int tmpl,
			 const struct special_expectation *expect, size_t n_expect)
{
	char path[512], err[512];
	snprintf(path, sizeof(path), "%s/ggml-vocab-%s.gguf", refs, vocab);
	struct rs_tokenizer *tok;
	int ret = rs_tokenizer_load_file(path, 1u << 22, &tok, err, sizeof(err));
	if (ret) {
		FAIL("%s: %s", path, err);
		return;
	}
	struct rs_special_tokens sp;
	CHECK(rs_special_tokens_build(tok, &sp) == 0, "special tokens");
	struct rs_chat_message messages[5];
	memcpy(messages, conversations[0].messages, 4 * sizeof(messages[0]));
	messages[4] = conversations[3].messages[0]; /* spells <|im_end|> and [INST] */
	struct rs_chat_text text = {0};
	CHECK(rs_chat_render(tmpl, messages, 5, RS_CHAT_ADD_ASSISTANT, &text) == 0, "render");
	size_t max = rs_tokenizer_max_tokens(text.len);
	uint32_t *ids = malloc(max * sizeof(*ids));
	int n = rs_encode_special(tok, &sp, text.text, text.len, (const size_t(*)[2])text.content,
				  text.n_content, 0, ids, max);
	CHECK(n > 0, "%s: rs_encode_special: %d", vocab, n);
	for (size_t i = 0; i < n_expect; i++) {
		int32_t id = rs_tokenizer_find(tok, expect[i].piece, strlen(expect[i].piece));
		if (id < 0) {
			FAIL("%s: no token %s", vocab, expect[i].piece);
			continue;
		}
		int got = count_id(ids, n, id);
		if (got != expect[i].count)
			FAIL("%s / %s: %s (id %d) %d times, expected %d", vocab,
			     rs_chat_template_name(tmpl), expect[i].piece, id, got,
			     expect[i].count);
	}
	/* Without the literal ranges (RS_TOKENIZE_SPECIAL on the whole text), the user's
	 * "<|im_end|>" would be the token: one more of it where the vocabulary has it. */
	int32_t im_end = rs_tokenizer_find(tok, "<|im_end|>", 10);
	if (im_end >= 0) {
		int whole = rs_encode_special(tok, &sp, text.text, text.len, NULL, 0, 0, ids, max);
		int with_ranges = count_id(ids, whole, im_end);
		n = rs_encode_special(tok, &sp, text.text, text.len,
				      (const size_t(*)[2])text.content, text.n_content, 0, ids,
				      max);
		if (with_ranges != count_id(ids, n, im_end) + 1)
			FAIL("%s: content's <|im_end|> is read as the token", vocab);
	}
	/* Plain rs_tokenizer_encode never makes control tokens out of text. */
	int plain = rs_tokenizer_encode(tok, text.text, text.len, 0, ids, max);
	int32_t first_special = rs_tokenizer_find(tok, expect[0].piece, strlen(expect[0].piece));
	CHECK(plain > 0, "plain encode");
	if (first_special >= 0 && count_id(ids, plain, first_special) != 0 &&
	    strcmp(vocab, "llama-spm") != 0)
		FAIL("%s: plain encoding made %s a token", vocab, expect[0].piece);
	printf("tokens: %s with %s: %d ids, special tokens where the template puts them\n",
	       rs_chat_template_name(tmpl), vocab, n);
	free(ids);
	rs_chat_text_free(&text);
	rs_special_tokens_free(&sp);
	rs_tokenizer_free(tok);
}

/* Where a Mistral template has no place for a system message, ringserve does what
 * llama.cpp does; the expected texts are those of llama.cpp's tests/test-chat-template.cpp
 * for these templates (its "mistral-v1" and, for the legacy one, "llama2" outputs), with
 * the BOS that ringserve writes and llama.cpp's tokenizer adds. */
static void check_mistral_system(void)
{
	static const struct rs_chat_message chat[] = {{"system", "You are a helpful assistant"},
						      {"user", "Hello"},
						      {"assistant", "Hi there"},
						      {"user", "Who are you"},
						      {"assistant", "   I am an assistant   "},
						      {"user", "Another question"}};
	static const struct {
		int tmpl;
		const char *want;
	} expect[] = {
	    {RS_CHAT_MISTRAL_LEGACY,
	     "<s>[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you "
	     "[/INST]   I am an assistant   </s>[INST] Another question [/INST]"},
	    {RS_CHAT_MISTRAL_V1, "<s> [INST] You are a helpful assistant\n\nHello [/INST] Hi "
				 "there</s> [INST] Who are you [/INST]    I am an assistant   "
				 "</s> [INST] Another question [/INST]"},
	};
	char out[512];
	for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
		int len = rs_chat_format(expect[i].tmpl, chat, 6, RS_CHAT_ADD_ASSISTANT, out,
					 sizeof(out));
		if (len != (int)strlen(expect[i].want) || strcmp(out, expect[i].want) != 0)
			FAIL("%s with a system message:\n  want: %s\n  got:  %s",
			     rs_chat_template_name(expect[i].tmpl), expect[i].want, out);
	}
	/* A system message before an answer, or in the middle, has no place in them. */
	struct rs_chat_message bad[2] = {{"system", "s"}, {"assistant", "a"}};
	CHECK(rs_chat_format(RS_CHAT_MISTRAL_V1, bad, 2, 0, NULL, 0) == -EINVAL, "system, answer");
	CHECK(rs_chat_format(RS_CHAT_MISTRAL_V3, chat + 1, 2, 0, NULL, 0) > 0 &&
		  rs_chat_format(RS_CHAT_MISTRAL_V3, (struct rs_chat_message[]){chat[1], chat[0]},
				 2, 0, NULL, 0) == -EINVAL,
	      "a system message in the middle");
}

/* llama3.2's date is the local date of the time the render is given: at noon UTC on
 * 29 Feb 2024, in UTC, "29 Feb 2024" (the template's strftime_now("%d %b %Y")). */
static void check_llama32_date(void)
{
	const char *old_tz = getenv("TZ");
	char *saved = old_tz ? strdup(old_tz) : NULL;
	setenv("TZ", "UTC", 1);
	tzset();
	struct rs_chat_message m = {"user", "hi"};
	struct rs_chat_text t = {0};
	CHECK(rs_chat_render_at(RS_CHAT_LLAMA32, &m, 1, 0, 1709208000, &t) == 0, "render");
	CHECK(strstr(t.text, "\nToday Date: 29 Feb 2024\n"), "llama3.2 at a fixed time: %s",
	      t.text);
	rs_chat_text_free(&t);
	/* The same instant in a zone 14 hours ahead is already 1 March. */
	setenv("TZ", "<+14>-14", 1); /* POSIX form: no tzdata needed */
	tzset();
	CHECK(rs_chat_render_at(RS_CHAT_LLAMA32, &m, 1, 0, 1709208000, &t) == 0, "render");
	CHECK(strstr(t.text, "\nToday Date: 01 Mar 2024\n"), "llama3.2 in UTC+14: %s", t.text);
	rs_chat_text_free(&t);
	if (saved)
		setenv("TZ", saved, 1);
	else
		unsetenv("TZ");
	free(saved);
	tzset();
}

static void check_api(void)
{
	for (int i = 1; rs_chat_template_name(i); i++)
		CHECK(rs_chat_template_by_name(rs_chat_template_name(i)) == i, "name %d", i);
	CHECK(rs_chat_template_name(0) == NULL && rs_chat_template_name(99) == NULL, "names");
	CHECK(rs_chat_template_by_name("vicuna") == -ENOENT, "unknown name");
	CHECK(rs_chat_template_detect("chatml", 6) == RS_CHAT_CHATML, "a name as the template");
	CHECK(rs_chat_template_detect("chatml\0x", 8) == -ENOENT, "a name, a NUL and more");
	CHECK(rs_chat_template_detect("{{ messages }}", 14) == -ENOENT, "unknown template");
	CHECK(rs_chat_template_detect(NULL, 0) == -EINVAL, "NULL");
	struct rs_chat_message m[2] = {{"user", "hello"}, {"tool", "x"}};
	CHECK(rs_chat_format(RS_CHAT_GEMMA, m, 2, 0, NULL, 0) == -EINVAL, "a role gemma lacks");
	/* Roles a template lays out otherwise than as a plain turn are refused, never written
	 * as one: Qwen2.5's and Qwen3's templates wrap "tool" in a user turn's
	 * <tool_response> and write nothing for other roles; Llama 3.1's and 3.2's write
	 * "tool" and "ipython" under an ipython header, as JSON. Plain ChatML and Llama 3.0
	 * take any role. */
	struct rs_chat_message tool[2] = {{"user", "hello"}, {"tool", "42"}};
	struct rs_chat_message other[2] = {{"user", "hello"}, {"developer", "x"}};
	struct rs_chat_message ipython[2] = {{"user", "hello"}, {"ipython", "42"}};
	CHECK(rs_chat_format(RS_CHAT_QWEN25, tool, 2, 0, NULL, 0) == -EINVAL, "qwen2.5: tool");
	CHECK(rs_chat_format(RS_CHAT_QWEN3, tool, 2, 0, NULL, 0) == -EINVAL, "qwen3: tool");
	CHECK(rs_chat_format(RS_CHAT_QWEN3, other, 2, 0, NULL, 0) == -EINVAL, "qwen3: developer");
	CHECK(rs_chat_format(RS_CHAT_LLAMA31, tool, 2, 0, NULL, 0) == -EINVAL, "llama3.1: tool");
	CHECK(rs_chat_format(RS_CHAT_LLAMA32, ipython, 2, 0, NULL, 0) == -EINVAL,
	      "llama3.2: ipython");
	CHECK(rs_chat_format(RS_CHAT_CHATML, tool, 2, 0, NULL, 0) > 0 &&
		  rs_chat_format(RS_CHAT_LLAMA3, tool, 2, 0, NULL, 0) > 0 &&
		  rs_chat_format(RS_CHAT_LLAMA31, other, 2, 0, NULL, 0) > 0,
	      "plain roles");
	/* Llama 2 strips "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + user as one string
	 * (Python's strip()): the user text keeps its leading space, the system text its
	 * trailing one, and only an empty user text takes the two newlines with it. */
	struct rs_chat_message sys_user[2][2] = {{{"system", "hi"}, {"user", "\n hi\n"}},
						 {{"system", "a\n\n"}, {"user", " "}}};
	const char *llama2_want[2] = {"<s>[INST] <<SYS>>\nhi\n<</SYS>>\n\n\n hi [/INST]",
				      "<s>[INST] <<SYS>>\na\n\n\n<</SYS>> [/INST]"};
	for (int i = 0; i < 2; i++) {
		char text[128];
		int n = rs_chat_format(RS_CHAT_LLAMA2, sys_user[i], 2, 0, text, sizeof(text));
		CHECK(n == (int)strlen(llama2_want[i]) && strcmp(text, llama2_want[i]) == 0,
		      "llama2, system and user %d: %s", i, text);
	}
	/* Gemma's system message rides on the first user message: before an answer it has
	 * no place (its template refuses it), and is refused, not dropped. */
	struct rs_chat_message gemma[3] = {
	    {"system", "be brief"}, {"assistant", "a"}, {"user", "u"}};
	CHECK(rs_chat_format(RS_CHAT_GEMMA, gemma, 3, 0, NULL, 0) == -EINVAL,
	      "gemma: a system message before an answer");
	CHECK(rs_chat_format(0, m, 1, 0, NULL, 0) == -EINVAL, "template 0 is not one");
	CHECK(rs_chat_format(RS_CHAT_CHATML, m, 1, 1u << 7, NULL, 0) == -EINVAL, "bad flag");
	m[1].content = NULL;
	CHECK(rs_chat_format(RS_CHAT_CHATML, m, 2, 0, NULL, 0) == -EINVAL, "NULL content");
	/* snprintf's contract: the full length, a cut NUL-terminated copy. */
	const char *want = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n";
	char small[8];
	int len = rs_chat_format(RS_CHAT_CHATML, m, 1, RS_CHAT_ADD_ASSISTANT, small, sizeof(small));
	CHECK(len == (int)strlen(want) && memcmp(small, want, 7) == 0 && small[7] == '\0',
	      "cut copy: %d", len);
	CHECK(rs_chat_format(RS_CHAT_CHATML, m, 0, 0, small, sizeof(small)) == 0 && !small[0],
	      "empty conversation");
	check_mistral_system();
}

int main(void)
{
	const char *refs = getenv("RS_VOCAB_REFS") ? getenv("RS_VOCAB_REFS") : ".cache/vocab-refs";
	char path[512];
	snprintf(path, sizeof(path), "%s/templates/Qwen-Qwen3-0.6B.jinja", refs);
	struct stat st;
	bool have_bundle = stat(path, &st) == 0;
	if (!have_bundle)
		printf("no llama.cpp templates in %s/templates (tools/fetch-vocab-refs.sh): "
		       "checking tests/chat/ only\n",
		       refs);

	check_api();
	check_llama32_date();
	check_detection(refs, have_bundle);
	int compared = compare_with_jinja(refs, have_bundle);
	if (compared < 0)
		printf("python3-jinja2 missing (tools/deps.sh): templates not rendered\n");
	else
		printf("jinja: %d (template, conversation) pairs byte-identical\n", compared);

	snprintf(path, sizeof(path), "%s/ggml-vocab-llama-bpe.gguf", refs);
	if (stat(path, &st) == 0) {
		/* system: 4 turns + the opened assistant turn; unicode: 1 more user turn. */
		static const struct special_expectation llama3[] = {{"<|start_header_id|>", 6},
								    {"<|end_header_id|>", 6},
								    {"<|eot_id|>", 5},
								    {"<|begin_of_text|>", 1}};
		check_tokens(refs, "llama-bpe", RS_CHAT_LLAMA31, llama3, 4);
		static const struct special_expectation qwen[] = {{"<|im_start|>", 6},
								  {"<|im_end|>", 5}};
		check_tokens(refs, "qwen2", RS_CHAT_CHATML, qwen, 2);
		static const struct special_expectation phi3[] = {
		    {"<|user|>", 3}, {"<|assistant|>", 2}, {"<|system|>", 1}, {"<|end|>", 5}};
		check_tokens(refs, "phi-3", RS_CHAT_PHI3, phi3, 4);
		/* Llama 2: [INST] is text in its vocabulary; <s> is BOS, once per user turn
		 * (3), </s> once per answer (1). */
		static const struct special_expectation llama2[] = {{"<s>", 3}, {"</s>", 1}};
		check_tokens(refs, "llama-spm", RS_CHAT_LLAMA2, llama2, 2);
	} else {
		printf("no reference vocabularies in %s: tokenization not checked\n", refs);
	}
	if (failures) {
		fprintf(stderr, "%d failures\n", failures);
		return T_EXIT_FAIL;
	}
	return T_EXIT_PASS;
}
