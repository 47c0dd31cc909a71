/* ringserve-cli: ask the daemon one question from the shell; the answer streams to stdout
 * as text while it is generated. Text goes in and out through libringserve's text API
 * (rs_submit_text, rs_detok_*): the daemon only ever sees token ids.
 *
 *   ringserve-cli "Once upon a time"
 *   echo "Once upon a time" | ringserve-cli --max-tokens 64 --temperature 0.8 --seed 7
 *   ringserve-cli --chat --system "Answer in French." "What is the capital of Peru?"
 *
 * The exit codes are in the usage below. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client-lib/ringserve.h"

#define PROG "ringserve-cli"

enum exit_code {
	EXIT_OK = 0,
	EXIT_USAGE = 1,
	EXIT_CONNECT = 2,
	EXIT_REQUEST = 3,
	EXIT_DAEMON_DIED = 4,
	EXIT_NO_VOCAB = 5,
	EXIT_OUTPUT = 6,
	EXIT_NO_TEMPLATE = 7,
};

/* A daemon that stops answering (its heartbeat goes stale) is waited for this long. */
#define HOSTDOWN_PATIENCE_S 30.0

/* The chat templates' names, comma-separated. */
static const char *template_names(void)
{
	static char names[256];
	if (!names[0])
		for (int i = 1; rs_chat_template_name(i); i++)
			snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
				 i > 1 ? ", " : "", rs_chat_template_name(i));
	return names;
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: " PROG " [OPTIONS] [PROMPT...]\n"
	    "  Sends the prompt (the arguments joined by spaces; without any, or with \"-\",\n"
	    "  standard input, less one trailing newline) to ringserved and streams the answer\n"
	    "  to standard output as text while it is generated, then a newline.\n"
	    "\n"
	    "  -n, --max-tokens N   generate at most N tokens (default: 256, or what the\n"
	    "                       model's context leaves after the prompt)\n"
	    "  --temperature T      0 is greedy (default 0)\n"
	    "  --top-k K            sample among the K most likely tokens (default 0: all)\n"
	    "  --top-p P            nucleus sampling (default 1: off)\n"
	    "  --seed S             sampling seed (default 0)\n"
	    "  --ignore-eos         keep generating after the end-of-sequence token\n"
	    "  --no-bos             do not put BOS before the prompt (a continuation)\n"
	    "  --echo               print the prompt before the answer\n"
	    "  --ids                print the answer's token ids (space-separated), not text\n"
	    "  --chat               the prompt is a user's message to a chat model: it is laid\n"
	    "                       out with the model's chat template (tokenizer.chat_template)\n"
	    "                       and the answer ends at the end of the assistant's turn\n"
	    "  --system TEXT        with --chat: a system message before the user's\n"
	    "  --chat-template NAME with --chat: lay the chat out as NAME, not as the model's\n"
	    "                       template says (%s)\n"
	    "  --tenant NAME        the tenant to charge (default $RINGSERVE_TENANT or "
	    "\"default\")\n"
	    "  --socket PATH        the daemon's socket (default $RINGSERVE_SOCKET, then\n"
	    "                       $XDG_RUNTIME_DIR/ringserve.sock if it exists, else\n"
	    "                       /run/ringserve/ringserve.sock)\n"
	    "  -h, --help           this text\n"
	    "\n"
	    "exit status:\n"
	    "  0  the answer is complete (end-of-sequence token or --max-tokens)\n"
	    "  1  usage: a bad option or value, or an empty prompt\n"
	    "  2  cannot connect to the daemon (none there, refused, another ABI version)\n"
	    "  3  the request failed: the prompt could not be submitted (too long, no free\n"
	    "     slot, draining) or the daemon failed it (its status is printed)\n"
	    "  4  the daemon died, or stopped answering for %.0f s, in the middle of the answer\n"
	    "  5  the daemon serves no vocabulary (the null engine): text needs a model\n"
	    "     (--chat too: a template would not help)\n"
	    "  6  writing the answer failed (standard output closed or full)\n"
	    "  7  --chat: the model has no chat template, or one ringserve does not know;\n"
	    "     name one with --chat-template\n",
	    template_names(), HOSTDOWN_PATIENCE_S);
}

/* An unsigned option value up to max; false on garbage. */
static bool parse_unsigned(const char *arg, unsigned long long max, unsigned long long *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(arg, &end, 0);
	if (errno || end == arg || *end || arg[0] == '-' || v > max)
		return false;
	*out = v;
	return true;
}

/* A finite float option value in [lo, hi]; false on garbage. */
static bool parse_float(const char *arg, float lo, float hi, float *out)
{
	char *end;
	errno = 0;
	float v = strtof(arg, &end);
	if (errno || end == arg || *end || !isfinite(v) || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* The prompt: the arguments joined by single spaces, or all of stdin (one trailing
 * newline dropped). Returns a malloc'd buffer and *len, or NULL (out of memory, or a
 * read error, said on stderr). */
static char *read_prompt(int argc, char **argv, size_t *len)
{
	size_t size = 0, used = 0;
	char *text = NULL;
	if (argc > 0 && !(argc == 1 && strcmp(argv[0], "-") == 0)) {
		for (int i = 0; i < argc; i++)
			size += strlen(argv[i]) + 1;
		text = malloc(size);
		if (!text)
			return NULL;
		for (int i = 0; i < argc; i++) {
			size_t n = strlen(argv[i]);
			if (i)
				text[used++] = ' ';
			memcpy(text + used, argv[i], n);
			used += n;
		}
		*len = used;
		return text;
	}
	for (;;) {
		if (used == size) {
			size = size ? 2 * size : 4096;
			char *bigger = realloc(text, size);
			if (!bigger) {
				free(text);
				return NULL;
			}
			text = bigger;
		}
		size_t n = fread(text + used, 1, size - used, stdin);
		used += n;
		if (n == 0)
			break;
	}
	if (ferror(stdin)) {
		fprintf(stderr, PROG ": reading the prompt from standard input failed\n");
		free(text);
		return NULL;
	}
	if (used && text[used - 1] == '\n')
		used--;
	*len = used;
	return text;
}

/* What a completion status means (ringserve.h's list). */
static const char *status_text(int status)
{
	switch (status) {
	case -ECANCELED:
		return "cancelled";
	case -EINVAL:
		return "the daemon rejected a parameter";
	case -E2BIG:
		return "the prompt plus --max-tokens is over the model's context";
	case -ERANGE:
		return "a prompt token is outside the model's vocabulary";
	case -EAGAIN:
		return "over this client's in-flight limit";
	case -ESHUTDOWN:
		return "the daemon shut down before it was done";
	case -EIO:
		return "the engine failed";
	case -ENOMEM:
		return "the daemon ran out of memory";
	default:
		return strerror(-status);
	}
}

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Write bytes to stdout and push them out at once (this is a stream). */
static bool emit(const void *bytes, size_t n)
{
	if (n && fwrite(bytes, 1, n, stdout) != n)
		return false;
	return fflush(stdout) == 0;
}

/* Stream the new tokens tokens[from .. to) as ids or text. */
static bool show_tokens(struct rs_detok *detok, const uint32_t *tokens, uint32_t from, uint32_t to,
			bool as_ids)
{
	static char text[RS_DETOK_MAX_OUTPUT(1)];
	for (uint32_t i = from; i < to; i++) {
		if (as_ids) {
			if (printf(i ? " %u" : "%u", tokens[i]) < 0)
				return false;
			continue;
		}
		int n = rs_detok_feed(detok, &tokens[i], 1, text, sizeof(text));
		if (n == -ERANGE) /* an id the vocabulary does not spell: say so, go on */
			n = snprintf(text, sizeof(text), "[%u]", tokens[i]);
		if (n < 0 || !emit(text, (size_t)n))
			return false;
	}
	return fflush(stdout) == 0;
}

/* chat_prompt's work on a NUL-terminated user message. */
static int chat_tokens(struct rs_connection *conn, int tmpl, const char *system_message,
		       const char *user, uint32_t **ids)
{
	struct rs_chat_message messages[2];
	size_t n = 0;
	if (system_message)
		messages[n++] = (struct rs_chat_message){"system", system_message};
	messages[n++] = (struct rs_chat_message){"user", user};
	/* No vocabulary (the null engine): no template would help, so say that (exit 5),
	 * not that the template is missing (7). */
	struct rs_model_info info;
	rs_model_info(conn, &info);
	if (!info.vocab)
		return -ENOTSUP;
	if (tmpl == RS_CHAT_TEMPLATE_MODEL) {
		const char *jinja;
		size_t len;
		tmpl = rs_chat_model_template(conn, &jinja, &len);
		if (tmpl == -ENOENT || tmpl == -ENOTSUP) {
			fprintf(stderr,
				PROG
				": %s; name the layout with --chat-template NAME (one of: %s)\n",
				tmpl == -ENOENT ? "the model has no chat template"
						: "the model's chat template is not one ringserve "
						  "knows",
				template_names());
			return tmpl == -ENOENT ? -ENOENT : -ENOMSG;
		}
		if (tmpl < 0) {
			fprintf(stderr, PROG ": the model's chat template: %s\n", strerror(-tmpl));
			return tmpl;
		}
	}
	int count = rs_chat_tokenize(conn, tmpl, messages, n, RS_CHAT_ADD_ASSISTANT, NULL, 0);
	if (count < 0) {
		if (count != -ENOTSUP)
			fprintf(stderr, PROG ": cannot format the chat: %s\n", strerror(-count));
		return count;
	}
	/* The ids of one call: llama3.2's date is read at each, and may change between the
	 * size query and the fill (midnight); then the fill asks for more room. */
	uint32_t room = (uint32_t)count + 16;
	int tries = 0;
	do {
		uint32_t *grown = realloc(*ids, (size_t)room * sizeof(**ids));
		if (!grown)
			return -ENOMEM;
		*ids = grown;
		count =
		    rs_chat_tokenize(conn, tmpl, messages, n, RS_CHAT_ADD_ASSISTANT, *ids, room);
		room *= 2;
	} while (count == -ENOSPC && ++tries < 4);
	if (count < 0)
		fprintf(stderr, PROG ": cannot format the chat: %s\n", strerror(-count));
	return count;
}

/* --chat: the system message (if any) and the user's, laid out by template tmpl (or the
 * model's) and tokenized into *ids. Returns the id count, or -ENOTSUP (no vocabulary,
 * said by the caller), -ENOENT / -ENOMSG (no template, or one not known: said here), or
 * another negative errno (said here). */
static int chat_prompt(struct rs_connection *conn, int tmpl, const char *system_message,
		       const char *prompt, size_t prompt_len, uint32_t **ids)
{
	if (memchr(prompt, '\0', prompt_len)) {
		fprintf(stderr, PROG ": the message holds a NUL byte\n");
		return -EINVAL;
	}
	char *user = strndup(prompt, prompt_len);
	if (!user)
		return -ENOMEM;
	int count = chat_tokens(conn, tmpl, system_message, user, ids);
	free(user);
	return count;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
	    {"max-tokens", required_argument, NULL, 'n'},
	    {"temperature", required_argument, NULL, 't'},
	    {"top-k", required_argument, NULL, 'k'},
	    {"top-p", required_argument, NULL, 'p'},
	    {"seed", required_argument, NULL, 's'},
	    {"ignore-eos", no_argument, NULL, 'E'},
	    {"no-bos", no_argument, NULL, 'B'},
	    {"echo", no_argument, NULL, 'e'},
	    {"ids", no_argument, NULL, 'i'},
	    {"tenant", required_argument, NULL, 'T'},
	    {"socket", required_argument, NULL, 'S'},
	    {"chat", no_argument, NULL, 'C'},
	    {"system", required_argument, NULL, 'Y'},
	    {"chat-template", required_argument, NULL, 'M'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct rs_generate_params params = {.top_p = 1.0f};
	struct rs_connect_options connect_options = {0};
	const char *socket_path = NULL;
	bool as_ids = false, echo = false, max_tokens_given = false, chat = false;
	const char *system_message = NULL;
	int chat_template = RS_CHAT_TEMPLATE_MODEL;
	uint32_t *chat_ids = NULL;
	unsigned long long value = 0;
	int c;

	while ((c = getopt_long(argc, argv, "n:h", options, NULL)) != -1) {
		bool ok = true;
		switch (c) {
		case 'n':
			ok = parse_unsigned(optarg, UINT32_MAX, &value) && value > 0;
			params.max_new_tokens = (uint32_t)value;
			max_tokens_given = true;
			break;
		case 't':
			ok = parse_float(optarg, 0.0f, 1e6f, &params.temperature);
			break;
		case 'k':
			ok = parse_unsigned(optarg, UINT32_MAX, &value);
			params.top_k = (uint32_t)value;
			break;
		case 'p':
			ok = parse_float(optarg, 0.0f, 1.0f, &params.top_p) && params.top_p > 0;
			break;
		case 's':
			ok = parse_unsigned(optarg, UINT64_MAX, &value);
			params.seed = value;
			break;
		case 'E':
			params.flags |= RS_GENERATE_IGNORE_EOS;
			break;
		case 'B':
			params.flags |= RS_GENERATE_NO_BOS;
			break;
		case 'e':
			echo = true;
			break;
		case 'i':
			as_ids = true;
			break;
		case 'T':
			connect_options.tenant = optarg;
			break;
		case 'S':
			socket_path = optarg;
			break;
		case 'C':
			chat = true;
			break;
		case 'Y':
			system_message = optarg;
			break;
		case 'M':
			chat_template = rs_chat_template_by_name(optarg);
			if (chat_template < 0) {
				fprintf(stderr,
					PROG
					": --chat-template: no template '%s' (there are: %s)\n",
					optarg, template_names());
				return EXIT_USAGE;
			}
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default:
			fprintf(stderr,
				"usage: " PROG " [OPTIONS] [PROMPT...] (--help for more)\n");
			return EXIT_USAGE;
		}
		if (!ok) {
			const char *name = "?";
			for (const struct option *o = options; o->name; o++)
				if (o->val == c)
					name = o->name;
			fprintf(stderr, PROG ": --%s: bad value '%s'\n", name, optarg);
			return EXIT_USAGE;
		}
	}

	if (!chat && (system_message || chat_template != RS_CHAT_TEMPLATE_MODEL)) {
		fprintf(stderr, PROG ": --system and --chat-template go with --chat\n");
		return EXIT_USAGE;
	}
	if (chat && (params.flags & RS_GENERATE_NO_BOS)) {
		fprintf(stderr, PROG ": --no-bos does not go with --chat (the template decides)\n");
		return EXIT_USAGE;
	}
	size_t prompt_len;
	char *prompt = read_prompt(argc - optind, argv + optind, &prompt_len);
	if (!prompt)
		return EXIT_USAGE;
	if (prompt_len == 0 && (params.flags & RS_GENERATE_NO_BOS)) {
		fprintf(stderr, PROG ": empty prompt\n");
		free(prompt);
		return EXIT_USAGE;
	}

	struct rs_connection *conn;
	int ret = rs_connect(socket_path, &connect_options, &conn);
	if (ret) {
		fprintf(stderr, PROG ": cannot connect to the daemon%s%s: %s\n",
			socket_path ? " at " : "", socket_path ? socket_path : "", strerror(-ret));
		free(prompt);
		return ret == -EINVAL ? EXIT_USAGE : EXIT_CONNECT; /* -EINVAL: the tenant name */
	}
	struct rs_model_info info;
	rs_model_info(conn, &info);
	int status = EXIT_REQUEST;

	/* How long the prompt is, for the default length: what the context leaves. */
	int prompt_tokens;
	if (chat) {
		prompt_tokens =
		    chat_prompt(conn, chat_template, system_message, prompt, prompt_len, &chat_ids);
		if (prompt_tokens < 0 && prompt_tokens != -ENOTSUP) {
			status = prompt_tokens == -ENOENT || prompt_tokens == -ENOMSG
				     ? EXIT_NO_TEMPLATE
				     : EXIT_REQUEST;
			goto out;
		}
	} else {
		prompt_tokens =
		    rs_tokenize(conn, prompt, prompt_len, NULL, 0,
				params.flags & RS_GENERATE_NO_BOS ? 0 : RS_TOKENIZE_BOS);
	}
	if (prompt_tokens < 0) {
		if (prompt_tokens == -ENOTSUP) {
			fprintf(stderr,
				PROG
				": the daemon serves no vocabulary (model %s on the %s engine)\n",
				info.model_name, info.engine_name);
			status = EXIT_NO_VOCAB;
		} else {
			fprintf(stderr, PROG ": cannot tokenize the prompt: %s\n",
				strerror(-prompt_tokens));
		}
		goto out;
	}
	if (!max_tokens_given) {
		uint32_t room = info.max_seq_len > (uint32_t)prompt_tokens
				    ? info.max_seq_len - (uint32_t)prompt_tokens
				    : 1;
		params.max_new_tokens = 256;
		if (params.max_new_tokens > room)
			params.max_new_tokens = room;
		if (params.max_new_tokens > info.max_output_tokens)
			params.max_new_tokens = info.max_output_tokens;
	}

	params.prompt = chat_ids;
	params.prompt_len = (uint32_t)prompt_tokens;
	int request =
	    chat ? rs_submit(conn, &params) : rs_submit_text(conn, &params, prompt, prompt_len);
	if (request < 0) {
		if (request == -E2BIG)
			fprintf(stderr,
				PROG
				": the prompt (%d tokens) or --max-tokens (%u) is over the limits "
				"(%u prompt, %u output tokens)\n",
				prompt_tokens, params.max_new_tokens, info.max_prompt_tokens,
				info.max_output_tokens);
		else if (request == -EINVAL)
			fprintf(stderr, PROG ": empty prompt\n");
		else
			fprintf(stderr, PROG ": submit: %s\n", strerror(-request));
		status = request == -EINVAL	  ? EXIT_USAGE
			 : request == -ECONNRESET ? EXIT_DAEMON_DIED
						  : EXIT_REQUEST;
		goto out;
	}
	struct rs_detok detok;
	ret = rs_detok_init(conn, &detok, request);
	if (ret) {
		fprintf(stderr, PROG ": detokenizer: %s\n", strerror(-ret));
		goto out;
	}
	if (echo && !as_ids && !emit(prompt, prompt_len)) {
		status = EXIT_OUTPUT;
		goto out;
	}

	/* Stream: wait for more tokens than shown, show them, until the request is done. */
	uint32_t shown = 0;
	double hostdown_since = 0;
	for (;;) {
		int count = rs_wait_output(conn, request, shown, 1000);
		if (count == -ENODATA)
			break;
		if (count == -ETIMEDOUT)
			continue;
		if (count == -EHOSTDOWN) { /* stopped (SIGSTOP?) or wedged: it may come back */
			if (!hostdown_since)
				hostdown_since = now_seconds();
			if (now_seconds() - hostdown_since < HOSTDOWN_PATIENCE_S)
				continue;
		}
		if (count < 0) {
			fprintf(stderr,
				"\n" PROG
				": the daemon %s in the middle of the answer (after %u tokens)\n",
				count == -EHOSTDOWN ? "stopped answering" : "died", shown);
			status = EXIT_DAEMON_DIED;
			goto out;
		}
		hostdown_since = 0;
		const uint32_t *tokens;
		count = rs_output(conn, request, &tokens);
		if (count < 0 || !show_tokens(&detok, tokens, shown, (uint32_t)count, as_ids)) {
			status = count < 0 ? EXIT_REQUEST : EXIT_OUTPUT;
			goto out;
		}
		shown = (uint32_t)count;
	}
	char tail[8];
	int n = as_ids ? 0 : rs_detok_flush(&detok, tail, sizeof(tail));
	if (n < 0 || !emit(tail, (size_t)n) || !emit("\n", 1)) {
		status = EXIT_OUTPUT;
		goto out;
	}

	/* Its completion is in the ring already (-ENODATA said so). */
	struct rs_completion done;
	ret = rs_wait(conn, &done, 1, 5000);
	if (ret < 0) {
		fprintf(stderr, PROG ": the daemon died before it completed the request: %s\n",
			strerror(-ret));
		status = EXIT_DAEMON_DIED;
		goto out;
	}
	rs_release(conn, done.request);
	if (done.status) {
		fprintf(stderr, PROG ": the request failed after %u tokens: %s\n", done.output_len,
			status_text(done.status));
		goto out;
	}
	status = EXIT_OK;
out:
	rs_close(conn);
	free(prompt);
	free(chat_ids);
	return status;
}
