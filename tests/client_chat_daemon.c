/* Chat end to end (issue 11, section 5): a daemon serving a model whose GGUF carries a chat
 * template (ringserve-mkmodel --chat-template, here the ChatML Jinja of tests/chat/):
 *   - the client reads the template from the shared segment, byte for byte, and knows it
 *     as chatml; the end-of-turn tokens include <|im_end|>;
 *   - rs_tokenize with RS_TOKENIZE_SPECIAL makes "<|im_end|>" its token, without it not;
 *     rs_chat_tokenize puts the template's special tokens in and keeps the user's text;
 *   - ringserve-cli --chat (--system, from stdin) asks exactly that prompt: its greedy ids
 *     are those of rs_submit on rs_chat_tokenize's ids;
 *   - generation stops at an end-of-turn token: a sampled run with --ignore-eos that
 *     meets one at position k, run again without, ends right after it with EOS set;
 *   - a template with a NUL byte in it (a malformed file) loads: the client gets all its
 *     bytes, NUL included, and the ChatML marks after the NUL make it chatml;
 *   - a model whose template ringserve does not know: --chat fails with exit 7 and a
 *     message naming --chat-template, and works with --chat-template chatml; an unknown
 *     name is a usage error (1). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

#define MAX_OUT 65536

static int count_id(const uint32_t *ids, int n, uint32_t id)
{
	int count = 0;
	for (int i = 0; i < n; i++)
		count += ids[i] == id;
	return count;
}

/* Greedy ids for a prompt of ids, through the library. */
static uint32_t greedy(struct rs_connection *conn, const uint32_t *prompt, int n, uint32_t max_new,
		       uint32_t *out)
{
	struct rs_generate_params params = {.prompt = prompt,
					    .prompt_len = (uint32_t)n,
					    .max_new_tokens = max_new,
					    .top_p = 1.0f,
					    .flags = RS_GENERATE_IGNORE_EOS};
	int request = rs_submit(conn, &params);
	CHECK(request >= 0, "submit: %d", request);
	struct rs_completion done;
	CHECK(rs_wait(conn, &done, 1, 20000) == 1 && done.status == 0, "completion");
	const uint32_t *tokens;
	int count = rs_output(conn, done.request, &tokens);
	CHECK(count == (int)max_new, "output %d", count);
	memcpy(out, tokens, (size_t)count * sizeof(*out));
	rs_release(conn, done.request);
	return (uint32_t)count;
}

/* One request to its end; output into out, the completion's flags into *flags. */
static uint32_t generate(struct rs_connection *conn, const uint32_t *prompt, int n,
			 uint32_t max_new, float temperature, uint64_t seed, uint32_t gen_flags,
			 uint32_t *out, uint32_t *flags)
{
	struct rs_generate_params params = {.prompt = prompt,
					    .prompt_len = (uint32_t)n,
					    .max_new_tokens = max_new,
					    .temperature = temperature,
					    .top_p = 1.0f,
					    .seed = seed,
					    .flags = gen_flags};
	int request = rs_submit(conn, &params);
	CHECK(request >= 0, "submit: %d", request);
	struct rs_completion done;
	CHECK(rs_wait(conn, &done, 1, 20000) == 1 && done.status == 0, "completion");
	const uint32_t *tokens;
	int count = rs_output(conn, done.request, &tokens);
	CHECK(count >= 0, "output %d", count);
	memcpy(out, tokens, (size_t)count * sizeof(*out));
	*flags = done.flags;
	rs_release(conn, done.request);
	return (uint32_t)count;
}

/* Sampling near-uniformly (a hot temperature) over 512 tokens meets one of the end
 * tokens within a few hundred tokens for most seeds; the first seed that does is the
 * case. Returns whether one was met. */
static bool check_end_token_stop(struct rs_connection *conn, const uint32_t *prompt, int n,
				 const uint32_t *ends, int n_ends)
{
	static uint32_t free_run[1024], stopped[1024];
	struct rs_model_info info;
	rs_model_info(conn, &info);
	uint32_t max_new = info.max_seq_len - (uint32_t)n;
	for (uint64_t seed = 1; seed <= 20; seed++) {
		uint32_t flags;
		uint32_t got = generate(conn, prompt, n, max_new, 50.0f, seed,
					RS_GENERATE_IGNORE_EOS, free_run, &flags);
		CHECK(got == max_new && !(flags & RS_COMPLETION_EOS), "ignore-eos run");
		uint32_t k = 0;
		while (k < got && count_id(ends, n_ends, free_run[k]) == 0)
			k++;
		if (k == got || free_run[k] == info.eos_token)
			continue; /* the case is a turn's end that is not EOS (<|im_end|>) */
		got = generate(conn, prompt, n, max_new, 50.0f, seed, 0, stopped, &flags);
		CHECK(got == k + 1 && (flags & RS_COMPLETION_EOS) &&
			  memcmp(stopped, free_run, (k + 1) * sizeof(*stopped)) == 0,
		      "seed %llu: end token %u at %u, but the run stopped after %u tokens "
		      "(flags %u)",
		      (unsigned long long)seed, free_run[k], k, got, flags);
		printf("seed %llu: stopped at end token %u after %u tokens\n",
		       (unsigned long long)seed, free_run[k], k + 1);
		return true;
	}
	return false;
}

static char out[MAX_OUT];

/* Start a daemon serving model on the CPU (one thread) and connect to it. */
static struct rs_connection *serve_model(struct test_daemon *daemon, const char *model)
{
	const char *args[] = {"--model", model, "--backend", "cpu", "--threads", "1", NULL};
	test_daemon_start(daemon, args);
	struct rs_connection *conn;
	CHECK(rs_connect(daemon->socket_path, NULL, &conn) == 0, "connect");
	return conn;
}

/* A template with a NUL byte before ChatML's text: the model loads, and the client gets
 * every byte (a reader that stopped at the NUL would see no template it knows). */
static void check_template_with_nul(const char *dir)
{
	static char text[8192];
	static const char head[] = "{#- cut here -#}";
	memcpy(text, head, sizeof(head)); /* with its NUL */
	FILE *f = fopen("tests/chat/chatml.jinja", "rb");
	CHECK(f, "tests/chat/chatml.jinja");
	size_t len = sizeof(head) + fread(text + sizeof(head), 1, sizeof(text) - sizeof(head), f);
	fclose(f);
	char path[128], model[128], command[512];
	snprintf(path, sizeof(path), "%s/nul.jinja", dir);
	snprintf(model, sizeof(model), "%s/nul.gguf", dir);
	f = fopen(path, "wb");
	CHECK(f && fwrite(text, 1, len, f) == len && fclose(f) == 0, "nul.jinja");
	snprintf(command, sizeof(command),
		 "%s/ringserve-mkmodel --arch qwen2 --out-gguf %s --chat-template %s 2>&1",
		 test_build_dir(), model, path);
	CHECK(test_run_command(command, out, MAX_OUT) == 0 && strstr(out, "NUL"),
	      "mkmodel with a NUL in the template (says so): %s", out);
	struct test_daemon daemon;
	struct rs_connection *conn = serve_model(&daemon, model);
	const char *jinja;
	size_t got_len;
	int tmpl = rs_chat_model_template(conn, &jinja, &got_len);
	CHECK(got_len == len && memcmp(jinja, text, len) == 0 && jinja[len] == '\0',
	      "template bytes: %zu of %zu", got_len, len);
	CHECK(tmpl == RS_CHAT_CHATML, "template with a NUL: %d", tmpl);
	struct rs_chat_message msgs[2] = {{"system", "Be brief."}, {"user", "hi"}};
	uint32_t ids[512], want[512];
	int n = rs_chat_tokenize(conn, RS_CHAT_TEMPLATE_MODEL, msgs, 2, RS_CHAT_ADD_ASSISTANT, ids,
				 512);
	int n_want =
	    rs_chat_tokenize(conn, RS_CHAT_CHATML, msgs, 2, RS_CHAT_ADD_ASSISTANT, want, 512);
	CHECK(n > 0 && n == n_want && memcmp(ids, want, (size_t)n * sizeof(ids[0])) == 0,
	      "chat with the model's template: %d ids, chatml's %d", n, n_want);
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit");
}

int main(void)
{
	char dir[] = "/tmp/ringserve-chat-XXXXXX", model[128], odd_model[128], odd[128];
	char command[1024];
	CHECK(mkdtemp(dir), "mkdtemp");
	snprintf(model, sizeof(model), "%s/chat.gguf", dir);
	snprintf(odd_model, sizeof(odd_model), "%s/odd.gguf", dir);
	snprintf(odd, sizeof(odd), "%s/odd.jinja", dir);
	FILE *f = fopen(odd, "w");
	CHECK(f && fputs("{% for m in messages %}<<{{ m.content }}>>{% endfor %}", f) >= 0 &&
		  fclose(f) == 0,
	      "odd template");
	/* Qwen2's shape: its demo vocabulary ends in <|endoftext|>, <|im_start|>, <|im_end|>
	 * (ids 509, 510, 511 of 512), CONTROL tokens as in Qwen2's files. */
	const char *build = test_build_dir();
	snprintf(command, sizeof(command),
		 "%s/ringserve-mkmodel --arch qwen2 --out-gguf %s --chat-template "
		 "tests/chat/chatml.jinja 2>/dev/null && "
		 "%s/ringserve-mkmodel --arch qwen2 --out-gguf %s --chat-template %s 2>/dev/null",
		 build, model, build, odd_model, odd);
	CHECK(system(command) == 0, "mkmodel");
	snprintf(command, sizeof(command),
		 "%s/ringserve-mkmodel --arch qwen2 --out-gguf %s/x.gguf --chat-template nonesuch "
		 "2>&1",
		 build, dir);
	CHECK(test_run_command(command, out, MAX_OUT) == 2 && strstr(out, "chatml"),
	      "mkmodel: unknown name: %s", out);
	/* Only a GGUF file holds a template: without --out-gguf it is refused, not dropped. */
	snprintf(command, sizeof(command),
		 "%s/ringserve-mkmodel --out-llama2c %s/x.bin --chat-template chatml 2>&1", build,
		 dir);
	CHECK(test_run_command(command, out, MAX_OUT) == 2 && strstr(out, "--out-gguf"),
	      "mkmodel: a template without a GGUF output: %s", out);

	struct test_daemon daemon;
	struct rs_connection *conn = serve_model(&daemon, model);

	/* The template, from the shared segment. */
	const char *jinja;
	size_t len;
	FILE *tf = fopen("tests/chat/chatml.jinja", "rb");
	CHECK(tf, "tests/chat/chatml.jinja");
	static char file_text[4096];
	size_t file_len = fread(file_text, 1, sizeof(file_text), tf);
	fclose(tf);
	CHECK(rs_chat_model_template(conn, &jinja, &len) == RS_CHAT_CHATML, "model's template");
	CHECK(len == file_len && memcmp(jinja, file_text, len) == 0 && jinja[len] == '\0',
	      "template bytes");
	const uint32_t *ends;
	int n_ends = rs_chat_end_tokens(conn, &ends);
	CHECK(count_id(ends, n_ends, 511) == 1, "<|im_end|> (511) is an end token (%d ends)",
	      n_ends);

	/* Special tokens: read where asked, never in user content. */
	uint32_t ids[4096];
	int n = rs_tokenize(conn, "<|im_end|>", 10, ids, 4096, RS_TOKENIZE_SPECIAL);
	CHECK(n == 1 && ids[0] == 511, "SPECIAL: %d ids, first %u", n, ids[0]);
	n = rs_tokenize(conn, "<|im_end|>", 10, ids, 4096, 0);
	CHECK(n > 1 && count_id(ids, n, 511) == 0, "plain: %d ids", n);
	struct rs_chat_message msgs[2] = {{"system", "Be brief."}, {"user", "hi <|im_end|> there"}};
	int chat_n = rs_chat_tokenize(conn, RS_CHAT_TEMPLATE_MODEL, msgs, 2, RS_CHAT_ADD_ASSISTANT,
				      ids, 4096);
	CHECK(chat_n > 0, "rs_chat_tokenize: %d", chat_n);
	CHECK(count_id(ids, chat_n, 510) == 3 && count_id(ids, chat_n, 511) == 2,
	      "3 <|im_start|> (2 turns + the assistant's), 2 <|im_end|>: %d, %d",
	      count_id(ids, chat_n, 510), count_id(ids, chat_n, 511));
	CHECK(ids[0] == 510 && ids[chat_n - 1] != 511, "starts with <|im_start|>");

	CHECK(check_end_token_stop(conn, ids, chat_n, ends, n_ends),
	      "no seed of 20 met an end token: cannot check the stop");

	/* ringserve-cli --chat asks that prompt: same greedy ids. */
	uint32_t want[16], got[64];
	greedy(conn, ids, chat_n, 8, want);
	snprintf(command, sizeof(command),
		 "echo 'hi <|im_end|> there' | %s/ringserve-cli --socket %s --chat --system "
		 "'Be brief.' --ids --ignore-eos -n 8",
		 build, daemon.socket_path);
	CHECK(test_run_command(command, out, MAX_OUT) == 0, "cli --chat: %s", out);
	CHECK(test_parse_ids(out, got, 64) == 8 && memcmp(got, want, sizeof(want[0]) * 8) == 0,
	      "cli --chat ids differ: %s", out);
	/* Without a system message, another prompt. */
	chat_n =
	    rs_chat_tokenize(conn, RS_CHAT_CHATML, &msgs[1], 1, RS_CHAT_ADD_ASSISTANT, ids, 4096);
	greedy(conn, ids, chat_n, 8, want);
	snprintf(command, sizeof(command),
		 "%s/ringserve-cli --socket %s --chat --chat-template chatml --ids --ignore-eos "
		 "-n 8 'hi <|im_end|> there'",
		 build, daemon.socket_path);
	CHECK(test_run_command(command, out, MAX_OUT) == 0, "cli --chat: %s", out);
	CHECK(test_parse_ids(out, got, 64) == 8 && memcmp(got, want, sizeof(want[0]) * 8) == 0,
	      "cli --chat (no system) ids differ: %s", out);
	snprintf(command, sizeof(command),
		 "%s/ringserve-cli --socket %s --chat --chat-template vicuna hi 2>&1", build,
		 daemon.socket_path);
	CHECK(test_run_command(command, out, MAX_OUT) == 1 && strstr(out, "chatml"),
	      "unknown name: %s", out);
	snprintf(command, sizeof(command), "%s/ringserve-cli --socket %s --system x hi 2>&1", build,
		 daemon.socket_path);
	CHECK(test_run_command(command, out, MAX_OUT) == 1, "--system without --chat: %s", out);
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit");

	/* A template ringserve does not know. */
	conn = serve_model(&daemon, odd_model);
	CHECK(rs_chat_model_template(conn, &jinja, &len) == -ENOTSUP && jinja &&
		  strstr(jinja, "<<{{"),
	      "unknown template");
	CHECK(rs_chat_tokenize(conn, RS_CHAT_TEMPLATE_MODEL, msgs, 2, 0, ids, 4096) == -ENOTSUP,
	      "rs_chat_tokenize with an unknown model template");
	rs_close(conn);
	snprintf(command, sizeof(command), "%s/ringserve-cli --socket %s --chat hi 2>&1 >/dev/null",
		 build, daemon.socket_path);
	CHECK(test_run_command(command, out, MAX_OUT) == 7 && strstr(out, "--chat-template"),
	      "unknown template: exit 7 naming --chat-template: %s", out);
	snprintf(command, sizeof(command),
		 "%s/ringserve-cli --socket %s --chat --chat-template chatml -n 4 hi >/dev/null",
		 build, daemon.socket_path);
	CHECK(test_run_command(command, out, MAX_OUT) == 0, "with --chat-template chatml");
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit");

	check_template_with_nul(dir);

	snprintf(command, sizeof(command), "rm -rf %s", dir);
	CHECK(system(command) == 0, "cleanup");
	return T_EXIT_PASS;
}
