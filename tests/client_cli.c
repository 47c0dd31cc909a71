/* ringserve-cli against a daemon serving a random model with a vocabulary:
 *   - greedy ids (--ids) are ringserve-generate's for the same prompt, from the arguments
 *     or from stdin;
 *   - the text it streams is the detokenized ids (through the library, all at once), and
 *     with --echo it is the prompt followed by that text;
 *   - exit codes: 0 done, 1 bad option or value, 2 no daemon at --socket, 3 the request
 *     failed (over the context), 4 the daemon was killed mid-answer, 5 no vocabulary
 *     (--chat too, with or without --chat-template: text needs a model, a template would
 *     not help, so not 7 "no chat template"). */
#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

#define PROMPT	"Once upon a time there was"
#define MAX_OUT (1 << 20)

struct run {
	int status; /* exit code, or 128 + signal */
	char out[MAX_OUT];
	size_t len;
};

/* Start argv[0] (a program in the build folder) with argv; stdin gets stdin_text (or
 * /dev/null when NULL); *out_fd reads its stdout. Returns the pid. */
static pid_t spawn(const char *const *argv, const char *stdin_text, int *out_fd)
{
	int out_pipe[2], in_pipe[2];
	CHECK(pipe(out_pipe) == 0 && pipe(in_pipe) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		char path[512];
		snprintf(path, sizeof(path), "%s/%s", test_build_dir(), argv[0]);
		dup2(out_pipe[1], 1);
		dup2(in_pipe[0], 0);
		close(out_pipe[0]);
		close(out_pipe[1]);
		close(in_pipe[0]);
		close(in_pipe[1]);
		execv(path, (char *const *)argv);
		_exit(127);
	}
	close(out_pipe[1]);
	close(in_pipe[0]);
	if (stdin_text) /* small: fits the pipe */
		CHECK(write(in_pipe[1], stdin_text, strlen(stdin_text)) ==
			  (ssize_t)strlen(stdin_text),
		      "stdin");
	close(in_pipe[1]);
	*out_fd = out_pipe[0];
	return pid;
}

static int reap(pid_t pid)
{
	int status;
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Run a program to its end, collecting stdout. */
static void run(struct run *r, const char *const *argv, const char *stdin_text)
{
	int fd;
	pid_t pid = spawn(argv, stdin_text, &fd);
	r->len = 0;
	for (;;) {
		ssize_t n = read(fd, r->out + r->len, sizeof(r->out) - 1 - r->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		r->len += (size_t)n;
	}
	r->out[r->len] = '\0';
	close(fd);
	r->status = reap(pid);
}

static struct run a, b;

int main(void)
{
	char dir[] = "/tmp/ringserve-cli-XXXXXX", model[128], big_model[128], command[512];
	CHECK(mkdtemp(dir), "mkdtemp");
	snprintf(model, sizeof(model), "%s/model.gguf", dir);
	snprintf(big_model, sizeof(big_model), "%s/big.gguf", dir);
	snprintf(command, sizeof(command), "%s/ringserve-mkmodel --out-gguf %s --seed 5 >/dev/null",
		 test_build_dir(), model);
	CHECK(system(command) == 0, "mkmodel");

	struct test_daemon daemon;
	const char *daemon_args[] = {"--model", model, "--backend", "cpu", "--threads", "1", NULL};
	test_daemon_start(&daemon, daemon_args);
	const char *sock = daemon.socket_path;

	/* Greedy ids: the engine's, from the arguments and from stdin. */
	const char *cli_ids[] = {"ringserve-cli", "--socket", sock,   "--ids", "-n",   "40",
				 "--ignore-eos",  "Once",     "upon", "a",     "time", "there",
				 "was",		  NULL};
	run(&a, cli_ids, NULL);
	CHECK(a.status == 0, "cli --ids: exit %d", a.status);
	const char *gen_ids[] = {
	    "ringserve-generate", model, "--prompt",  PROMPT, "-n", "40", "--ignore-eos", "--ids",
	    "--backend",	  "cpu", "--threads", "1",    NULL};
	run(&b, gen_ids, NULL);
	CHECK(b.status == 0, "generate: exit %d", b.status);
	CHECK(a.len == b.len && memcmp(a.out, b.out, a.len) == 0, "cli ids '%s' != generate '%s'",
	      a.out, b.out);
	const char *cli_stdin[] = {"ringserve-cli", "--socket", sock, "--ids", "-n", "40",
				   "--ignore-eos",  NULL};
	run(&b, cli_stdin, PROMPT "\n");
	CHECK(b.status == 0 && a.len == b.len && memcmp(a.out, b.out, a.len) == 0,
	      "stdin prompt: exit %d, '%s'", b.status, b.out);
	uint32_t ids[64];
	uint32_t n = test_parse_ids(a.out, ids, 64);
	CHECK(n == 40, "%u ids", n);

	/* Text: the ids detokenized, as the library does it all at once. */
	const char *cli_text[] = {"ringserve-cli", "--socket", sock,   "-n", "40",
				  "--ignore-eos",  "--echo",   PROMPT, NULL};
	run(&b, cli_text, NULL);
	CHECK(b.status == 0, "cli text: exit %d", b.status);
	struct rs_connection *conn;
	CHECK(rs_connect(sock, NULL, &conn) == 0, "connect");
	static uint32_t all[256];
	int prompt_len = rs_tokenize(conn, PROMPT, strlen(PROMPT), all, 256, RS_TOKENIZE_BOS);
	CHECK(prompt_len > 0, "tokenize");
	memcpy(all + prompt_len, ids, n * sizeof(uint32_t));
	struct rs_detok detok;
	CHECK(rs_detok_init(conn, &detok, RS_DETOK_START) == 0, "detok");
	static char expected[RS_DETOK_MAX_OUTPUT(256) + 8];
	int len = rs_detok_feed(&detok, all, (uint32_t)prompt_len + n, expected, sizeof(expected));
	CHECK(len >= 0, "feed");
	int tail = rs_detok_flush(&detok, expected + len, 8);
	CHECK(tail >= 0, "flush");
	len += tail;
	expected[len++] = '\n';
	CHECK(b.len == (size_t)len && memcmp(b.out, expected, b.len) == 0,
	      "cli --echo printed '%s', the ids decode to '%.*s'", b.out, len, expected);
	CHECK(memcmp(b.out, PROMPT, strlen(PROMPT)) == 0, "echo");
	const char *cli_plain[] = {"ringserve-cli", "--socket", sock, "-n", "40",
				   "--ignore-eos",  PROMPT,	NULL};
	run(&a, cli_plain, NULL);
	CHECK(a.status == 0 && a.len == b.len - strlen(PROMPT) &&
		  memcmp(a.out, b.out + strlen(PROMPT), a.len) == 0,
	      "without --echo: exit %d, '%s'", a.status, a.out);
	rs_close(conn);

	/* 3: the request fails (prompt + 250 tokens are over the 256-token context). */
	const char *cli_long[] = {"ringserve-cli", "--socket", sock, "-n", "250", PROMPT, NULL};
	run(&a, cli_long, NULL);
	CHECK(a.status == 3, "over the context: exit %d", a.status);
	/* 1: usage. */
	const char *cli_bad[] = {"ringserve-cli", "--socket", sock, "--no-such-option", "x", NULL};
	run(&a, cli_bad, NULL);
	CHECK(a.status == 1, "bad option: exit %d", a.status);
	const char *cli_bad_value[] = {"ringserve-cli", "--socket", sock, "--temperature",
				       "warm",		"x",	    NULL};
	run(&a, cli_bad_value, NULL);
	CHECK(a.status == 1, "bad value: exit %d", a.status);
	const char *cli_help[] = {"ringserve-cli", "--help", NULL};
	run(&a, cli_help, NULL);
	CHECK(a.status == 0 && strstr(a.out, "exit status"), "--help: exit %d", a.status);
	/* 2: nobody at the socket. */
	char nowhere[160];
	snprintf(nowhere, sizeof(nowhere), "%s/nobody.sock", dir);
	const char *cli_nowhere[] = {"ringserve-cli", "--socket", nowhere, "x", NULL};
	run(&a, cli_nowhere, NULL);
	CHECK(a.status == 2, "no daemon: exit %d", a.status);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");

	/* 5: the null engine has no vocabulary. */
	const char *null_args[] = {"--null-vocab", "1000", NULL};
	test_daemon_start(&daemon, null_args);
	const char *cli_null[] = {"ringserve-cli", "--socket", daemon.socket_path, "x", NULL};
	run(&a, cli_null, NULL);
	CHECK(a.status == 5, "null engine: exit %d", a.status);
	snprintf(command, sizeof(command), "%s/ringserve-cli --socket %s --chat x 2>&1",
		 test_build_dir(), daemon.socket_path);
	int chat_status = test_run_command(command, a.out, sizeof(a.out));
	CHECK(chat_status == 5 && strstr(a.out, "no vocabulary") &&
		  !strstr(a.out, "--chat-template"),
	      "null engine, --chat: exit %d: %s", chat_status, a.out);
	snprintf(command, sizeof(command),
		 "%s/ringserve-cli --socket %s --chat --chat-template chatml x 2>&1",
		 test_build_dir(), daemon.socket_path);
	chat_status = test_run_command(command, a.out, sizeof(a.out));
	CHECK(chat_status == 5 && strstr(a.out, "no vocabulary"),
	      "null engine, --chat --chat-template chatml: exit %d: %s", chat_status, a.out);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");

	/* 4: the daemon is killed mid-answer (a model slow enough that 4000 tokens take far
	 * longer than the first one; we kill once the first id has arrived). */
	snprintf(command, sizeof(command),
		 "%s/ringserve-mkmodel --out-gguf %s --seed 5 --dim 256 --hidden 688 --layers 4 "
		 "--heads 8 --kv-heads 8 --seq-len 4096 >/dev/null",
		 test_build_dir(), big_model);
	CHECK(system(command) == 0, "mkmodel");
	const char *big_args[] = {"--model", big_model,	    "--backend", "cpu", "--threads",
				  "1",	     "--kv-blocks", "300",	 NULL};
	test_daemon_start(&daemon, big_args);
	const char *cli_long_answer[] = {"ringserve-cli", "--socket",	  daemon.socket_path,
					 "--ids",	  "--ignore-eos", "-n",
					 "4000",	  PROMPT,	  NULL};
	int fd;
	pid_t pid = spawn(cli_long_answer, NULL, &fd);
	char first;
	CHECK(read(fd, &first, 1) == 1, "the first id");
	test_daemon_kill(&daemon);
	while (read(fd, a.out, sizeof(a.out)) > 0)
		;
	close(fd);
	int status = reap(pid);
	CHECK(status == 4, "daemon killed mid-answer: exit %d", status);

	unlink(model);
	unlink(big_model);
	rmdir(dir);
	return T_EXIT_PASS;
}
