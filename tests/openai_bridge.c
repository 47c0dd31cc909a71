/* ringserve-openai, the OpenAI-compatible bridge, with a real HTTP client (curl) against a
 * daemon serving a random model:
 *   - /v1/models; greedy completions and chat, plain and streamed (server-sent events), give
 *     exactly the text the C client gets for the same prompt (chat: the documented plain
 *     template), with usage counts from rs_tokenize and max_tokens; for a model with a
 *     chat template ringserve formats, chat uses it: rs_chat_tokenize's prompt and answer;
 *   - stop sequences that straddle a token boundary cut the text where OpenAI says (before
 *     the first occurrence), streamed or not;
 *   - errors in OpenAI's shape: malformed JSON 400, unknown model 404, bad parameter 400,
 *     oversized body 413, unknown or missing key 401;
 *   - keys map to tenants: the daemon's statistics show each key's tenant;
 *   - a client that disconnects mid-stream cancels its request (the daemon counts a failed
 *     request and stops generating; the bridge frees it);
 *   - requests of one key run in parallel on its one connection;
 *   - beyond the daemon's per-connection limit (--max-inflight) and beyond a tenant's
 *     max_inflight (--config), requests get 429 rate_limit_exceeded, streamed or not, and
 *     succeed again once the slots are free;
 *   - a daemon that stops answering (SIGSTOP) ends a stream with an error event within the
 *     documented ~3 s, new requests get 503 within the 5 s connect timeout, and after
 *     SIGCONT requests succeed again;
 *   - a daemon that dies ends a stream with an error event, and then gives 503s, not hangs.
 * Skips (77) without curl. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

#define KEY_WEB	  "sk-web-0123456789"
#define KEY_BATCH "sk-batch-0123456789"
#define MODEL_ID  "tiny-test"
#define MAX_BODY  4096
/* The daemon's --max-inflight: requests in flight on one connection (one key's tenant). */
#define MAX_INFLIGHT 4

static char dir[64];
static unsigned port;
static pid_t bridge_pid;
static const char *socket_path;

static void kill_bridge(void)
{
	if (bridge_pid > 0)
		kill(bridge_pid, SIGKILL);
}

static void start_bridge(void)
{
	char config[128], bridge[256], ready_arg[16];
	snprintf(config, sizeof(config), "%s/bridge.json", dir);
	FILE *f = fopen(config, "w");
	CHECK(f, "config: %s", strerror(errno));
	fprintf(f,
		"{\"listen\": \"127.0.0.1:0\", \"model\": \"%s\", \"max_body_bytes\": %d,\n"
		" \"keys\": {\"%s\": \"web\", \"%s\": \"batch\"}}\n",
		MODEL_ID, MAX_BODY, KEY_WEB, KEY_BATCH);
	fclose(f);
	int ready[2];
	CHECK(pipe(ready) == 0, "pipe");
	snprintf(bridge, sizeof(bridge), "%s/ringserve-openai", test_build_dir());
	snprintf(ready_arg, sizeof(ready_arg), "%d", ready[1]);
	bridge_pid = fork();
	CHECK(bridge_pid >= 0, "fork");
	if (bridge_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(ready[0]);
		execl(bridge, bridge, "--config", config, "--socket", socket_path, "--ready-fd",
		      ready_arg, (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", bridge, strerror(errno));
		_exit(127);
	}
	atexit(kill_bridge);
	close(ready[1]);
	char line[16] = {0};
	ssize_t n = read(ready[0], line, sizeof(line) - 1);
	close(ready[0]);
	CHECK(n > 0 && sscanf(line, "%u", &port) == 1 && port > 0, "bridge did not come up");
}

struct http_reply {
	int status;
	char *body;
};

/* Extra curl arguments for the next requests (a chunked upload). */
static const char *curl_extra = "";

struct pending {
	FILE *pipe;
	char out_file[128];
	char command[1024];
};

/* Start curl: METHOD PATH with key (NULL: no Authorization) and body (NULL: none). */
static void http_begin(struct pending *p, const char *method, const char *path, const char *key,
		       const char *body)
{
	static int counter;
	char body_file[128], auth[128] = "";
	char *out_file = p->out_file, *command = p->command;
	snprintf(body_file, sizeof(body_file), "%s/body-%d", dir, counter);
	snprintf(out_file, sizeof(p->out_file), "%s/out-%d", dir, counter++);
	if (key)
		snprintf(auth, sizeof(auth), "-H 'Authorization: Bearer %s'", key);
	char data[200] = "";
	if (body) {
		FILE *f = fopen(body_file, "w");
		CHECK(f, "body file");
		fputs(body, f);
		fclose(f);
		snprintf(data, sizeof(data),
			 "-H 'Content-Type: application/json' -H 'Expect:' --data-binary @%s",
			 body_file);
	}
	snprintf(command, sizeof(p->command),
		 "curl -s -S --max-time 30 -X %s %s %s %s -o %s -w '%%{http_code}' "
		 "http://127.0.0.1:%u%s",
		 method, auth, curl_extra, data, out_file, port, path);
	p->pipe = popen(command, "r");
	CHECK(p->pipe, "popen curl");
}

static struct http_reply http_end(struct pending *p)
{
	struct http_reply reply = {0};
	CHECK(fscanf(p->pipe, "%d", &reply.status) == 1, "curl gave no status: %s", p->command);
	CHECK(pclose(p->pipe) == 0, "curl failed: %s", p->command);
	FILE *f = fopen(p->out_file, "r");
	CHECK(f, "curl output");
	size_t cap = 1 << 20;
	reply.body = calloc(1, cap);
	size_t got = fread(reply.body, 1, cap - 1, f);
	reply.body[got] = '\0';
	fclose(f);
	return reply;
}

static struct http_reply http(const char *method, const char *path, const char *key,
			      const char *body)
{
	struct pending p;
	http_begin(&p, method, path, key, body);
	return http_end(&p);
}

static json_t *parse(const char *text)
{
	json_error_t error;
	/* A random model's text may hold any byte, NUL too: JSON carries it as \u0000. */
	json_t *json = json_loads(text, JSON_ALLOW_NUL, &error);
	CHECK(json, "not JSON (%s): %s", error.text, text);
	return json;
}

/* An error reply: status, and OpenAI's shape with the given code (NULL: any). */
static void expect_error(struct http_reply reply, int status, const char *code)
{
	CHECK(reply.status == status, "status %d, expected %d: %s", reply.status, status,
	      reply.body);
	json_t *json = parse(reply.body);
	json_t *error = json_object_get(json, "error");
	CHECK(json_is_object(error), "no error object: %s", reply.body);
	CHECK(json_is_string(json_object_get(error, "message")) &&
		  json_is_string(json_object_get(error, "type")) &&
		  json_object_get(error, "param") && json_object_get(error, "code"),
	      "error shape: %s", reply.body);
	if (code)
		CHECK(json_is_string(json_object_get(error, "code")) &&
			  strcmp(json_string_value(json_object_get(error, "code")), code) == 0,
		      "code != %s: %s", code, reply.body);
	json_decref(json);
	free(reply.body);
}

/* The C client's greedy answer to prompt: its text and each token's piece boundaries. */
struct reference {
	char text[4096];
	size_t len;
	size_t ends[512]; /* text length after each token */
	uint32_t n_tokens;
	int prompt_tokens;
};

static void reference(struct rs_connection *conn, const char *prompt, uint32_t max_tokens,
		      struct reference *ref)
{
	memset(ref, 0, sizeof(*ref));
	ref->prompt_tokens = rs_tokenize(conn, prompt, strlen(prompt), NULL, 0, RS_TOKENIZE_BOS);
	CHECK(ref->prompt_tokens > 0, "tokenize");
	struct rs_generate_params params = {.max_new_tokens = max_tokens,
					    .flags = RS_GENERATE_IGNORE_EOS};
	int request = rs_submit_text(conn, &params, prompt, strlen(prompt));
	CHECK(request >= 0, "submit: %s", strerror(-request));
	struct rs_completion done;
	CHECK(rs_wait(conn, &done, 1, 30000) == 1 && done.status == 0, "wait");
	const uint32_t *tokens;
	int n = rs_output(conn, request, &tokens);
	CHECK(n == (int)max_tokens, "output %d", n);
	struct rs_detok detok;
	CHECK(rs_detok_init(conn, &detok, request) == 0, "detok");
	for (int i = 0; i < n; i++) {
		int k = rs_detok_feed(&detok, &tokens[i], 1, ref->text + ref->len,
				      sizeof(ref->text) - ref->len - 4);
		CHECK(k >= 0, "feed");
		ref->len += (size_t)k;
		ref->ends[i] = ref->len;
	}
	int k = rs_detok_flush(&detok, ref->text + ref->len, 4);
	ref->len += (size_t)(k > 0 ? k : 0);
	ref->n_tokens = (uint32_t)n;
	rs_release(conn, request);
}

static const char *string_at(json_t *json, const char *path1, size_t index, const char *path2,
			     const char *field)
{
	json_t *v = json_object_get(json_array_get(json_object_get(json, path1), index), path2);
	if (field)
		v = json_object_get(v, field);
	return json_string_value(v);
}

/* A non-streaming completion's text, finish reason and completion_tokens. */
static void completion(const char *path, const char *body, char *text, size_t text_size,
		       char *finish, int *completion_tokens, int *prompt_tokens)
{
	struct http_reply reply = http("POST", path, KEY_WEB, body);
	CHECK(reply.status == 200, "status %d: %s", reply.status, reply.body);
	json_t *json = parse(reply.body);
	bool chat = strstr(path, "chat") != NULL;
	const char *t = chat ? string_at(json, "choices", 0, "message", "content")
			     : string_at(json, "choices", 0, "text", NULL);
	CHECK(t, "no text: %s", reply.body);
	snprintf(text, text_size, "%s", t);
	snprintf(finish, 16, "%s", string_at(json, "choices", 0, "finish_reason", NULL));
	json_t *usage = json_object_get(json, "usage");
	*completion_tokens = (int)json_integer_value(json_object_get(usage, "completion_tokens"));
	*prompt_tokens = (int)json_integer_value(json_object_get(usage, "prompt_tokens"));
	CHECK(json_integer_value(json_object_get(usage, "total_tokens")) ==
		  *completion_tokens + *prompt_tokens,
	      "total_tokens: %s", reply.body);
	CHECK(strcmp(json_string_value(json_object_get(json, "object")),
		     chat ? "chat.completion" : "text_completion") == 0,
	      "object: %s", reply.body);
	json_decref(json);
	free(reply.body);
}

/* A streamed completion: the events' texts joined, the one finish reason, [DONE] last. */
static void stream_text(char *events, bool chat, char *text, size_t text_size, char *finish,
			int *chunks)
{
	size_t len = 0;
	int finishes = 0;
	bool done = false;
	*chunks = 0;
	text[0] = '\0';
	for (char *line = strtok(events, "\n"); line; line = strtok(NULL, "\n")) {
		CHECK(!done, "an event after [DONE]: %s", line);
		CHECK(strncmp(line, "data: ", 6) == 0, "not an SSE data line: %s", line);
		if (strcmp(line + 6, "[DONE]") == 0) {
			done = true;
			continue;
		}
		json_t *json = parse(line + 6);
		CHECK(strcmp(json_string_value(json_object_get(json, "object")),
			     chat ? "chat.completion.chunk" : "text_completion") == 0,
		      "object: %s", line);
		json_t *choices = json_object_get(json, "choices");
		if (json_array_size(choices) == 0) { /* the usage chunk */
			json_decref(json);
			continue;
		}
		if (chat && *chunks == 0)
			CHECK(string_at(json, "choices", 0, "delta", "role") &&
				  strcmp(string_at(json, "choices", 0, "delta", "role"),
					 "assistant") == 0,
			      "first chat chunk without the role: %s", line);
		const char *piece = chat ? string_at(json, "choices", 0, "delta", "content")
					 : string_at(json, "choices", 0, "text", NULL);
		if (piece) {
			CHECK(len + strlen(piece) < text_size, "too much text");
			memcpy(text + len, piece, strlen(piece) + 1);
			len += strlen(piece);
		}
		const char *reason = string_at(json, "choices", 0, "finish_reason", NULL);
		if (reason) {
			finishes++;
			snprintf(finish, 16, "%s", reason);
		}
		(*chunks)++;
		json_decref(json);
	}
	CHECK(done, "no data: [DONE]");
	CHECK(finishes == 1, "%d finish reasons", finishes);
}

static void stream(const char *path, const char *body, char *text, size_t text_size, char *finish,
		   int *chunks)
{
	struct http_reply reply = http("POST", path, KEY_WEB, body);
	CHECK(reply.status == 200, "status %d: %s", reply.status, reply.body);
	stream_text(reply.body, strstr(path, "chat") != NULL, text, text_size, finish, chunks);
	free(reply.body);
}

/* A JSON string literal for text (jansson escapes it). */
static char *quoted(const char *text)
{
	json_t *s = json_string(text);
	CHECK(s, "not UTF-8");
	char *out = json_dumps(s, JSON_ENCODE_ANY);
	json_decref(s);
	return out;
}

static int stats_tenant(struct rs_stats_reader *reader, const char *name,
			struct rs_stats_tenant *out, struct rs_stats *stats)
{
	struct rs_stats_tenant tenants[RS_STATS_MAX_TENANTS];
	int n = rs_stats_read(reader, stats, tenants, RS_STATS_MAX_TENANTS);
	CHECK(n >= 0, "stats: %s", strerror(-n));
	for (int i = 0; i < n; i++)
		if (strcmp(tenants[i].name, name) == 0) {
			*out = tenants[i];
			return 1;
		}
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Open a stream of a long greedy completion on a raw socket and read until its first
 * event; returns the socket. */
static int open_long_stream(const char *key)
{
	int sock = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
	CHECK(connect(sock, (struct sockaddr *)&addr, sizeof(addr)) == 0, "connect");
	struct timeval timeout = {.tv_sec = 20};
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
	const char *long_body = "{\"model\": \"tiny-test\", \"prompt\": \"Once\", \"max_tokens\": "
				"2000, \"ignore_eos\": true, \"stream\": true}";
	char request[512];
	int request_len = snprintf(request, sizeof(request),
				   "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: "
				   "Bearer %s\r\nContent-Type: application/json\r\n"
				   "Content-Length: %zu\r\n\r\n%s",
				   key, strlen(long_body), long_body);
	CHECK(write(sock, request, (size_t)request_len) == request_len, "write");
	char got[4096];
	size_t have = 0;
	while (!memmem(got, have, "data: ", 6)) { /* the stream has begun */
		ssize_t n = read(sock, got + have, sizeof(got) - have - 1);
		CHECK(n > 0, "stream ended before its first event");
		have += (size_t)n;
	}
	CHECK(memmem(got, have, "200 OK", 6), "stream status: %.*s", (int)have, got);
	return sock;
}

/* The bridge's requests_active counter (GET /ringserve/stats). */
static long long bridge_requests_active(void)
{
	struct http_reply reply = http("GET", "/ringserve/stats", KEY_WEB, NULL);
	CHECK(reply.status == 200, "stats: %d", reply.status);
	json_t *json = parse(reply.body);
	long long active = json_integer_value(json_object_get(json, "requests_active"));
	json_decref(json);
	free(reply.body);
	return active;
}

/* Close streams and wait until the bridge has given all their requests back (a cancelled
 * request's slot is free once its completion reached the bridge's pump). */
static void close_streams_and_drain(const int *socks, int n)
{
	for (int i = 0; i < n; i++)
		close(socks[i]);
	double deadline = now_s() + 10;
	while (bridge_requests_active() != 0)
		CHECK(now_s() < deadline, "the closed streams' requests were never given back");
}

/* Read a stream until its [DONE]; true when an event carried code. */
static bool stream_ends_with(int sock, const char *code)
{
	static char rest[1 << 20];
	size_t have = 0;
	while (!memmem(rest, have, "data: [DONE]", 12)) {
		ssize_t n = read(sock, rest + have, sizeof(rest) - have - 1);
		CHECK(n > 0, "the stream ended without [DONE]");
		have += (size_t)n;
	}
	return memmem(rest, have, code, strlen(code)) != NULL;
}

static const char *const short_completion =
    "{\"model\": \"tiny-test\", \"prompt\": \"hi\", \"max_tokens\": 5, \"ignore_eos\": true}";
static const char *const short_stream =
    "{\"model\": \"tiny-test\", \"prompt\": \"hi\", "
    "\"max_tokens\": 5, \"ignore_eos\": true, \"stream\": true}";

/* 429 beyond the daemon's per-connection limit (--max-inflight MAX_INFLIGHT: the web key's
 * connection) and beyond the batch tenant's max_inflight=1 (--config), plain and
 * streamed; once the slots are free, the same requests succeed. */
static void check_rate_limits(void)
{
	int socks[MAX_INFLIGHT];
	for (int i = 0; i < MAX_INFLIGHT; i++)
		socks[i] = open_long_stream(KEY_WEB);
	expect_error(http("POST", "/v1/completions", KEY_WEB, short_completion), 429,
		     "rate_limit_exceeded");
	expect_error(http("POST", "/v1/completions", KEY_WEB, short_stream), 429,
		     "rate_limit_exceeded");
	/* Another key's tenant has its own connection: not limited by web's. */
	struct http_reply reply = http("POST", "/v1/completions", KEY_BATCH, short_completion);
	CHECK(reply.status == 200, "batch while web is full: %d %s", reply.status, reply.body);
	free(reply.body);
	close_streams_and_drain(socks, MAX_INFLIGHT);
	reply = http("POST", "/v1/completions", KEY_WEB, short_completion);
	CHECK(reply.status == 200, "web after its streams ended: %d %s", reply.status, reply.body);
	free(reply.body);

	/* The tenant limit: ringserved refuses with an error completion (-EAGAIN). */
	socks[0] = open_long_stream(KEY_BATCH);
	expect_error(http("POST", "/v1/completions", KEY_BATCH, short_completion), 429,
		     "rate_limit_exceeded");
	expect_error(http("POST", "/v1/chat/completions", KEY_BATCH,
			  "{\"model\": \"tiny-test\", \"messages\": [{\"role\": \"user\", "
			  "\"content\": \"hi\"}], \"max_tokens\": 5, \"stream\": true}"),
		     429, "rate_limit_exceeded");
	close_streams_and_drain(socks, 1);
	reply = http("POST", "/v1/completions", KEY_BATCH, short_stream);
	CHECK(reply.status == 200 && strstr(reply.body, "data: [DONE]") &&
		  !strstr(reply.body, "\"error\""),
	      "batch after its stream ended: %d %s", reply.status, reply.body);
	free(reply.body);
}

/* A daemon that stops answering (SIGSTOP): a stream in flight ends with an error event
 * within the documented ~3 s (heartbeat 2 s old, noticed within the pump's 1 s wake-up);
 * a new request reconnects and gets 503 when the 5 s handshake times out: nothing hangs.
 * After SIGCONT requests succeed again. */
static void check_stopped_daemon(pid_t daemon_pid)
{
	int sock = open_long_stream(KEY_WEB);
	CHECK(kill(daemon_pid, SIGSTOP) == 0, "SIGSTOP");
	double stopped = now_s();
	CHECK(stream_ends_with(sock, "service_unavailable"),
	      "no error event after the daemon stopped");
	double waited = now_s() - stopped;
	printf("stopped daemon: the stream ended after %.2f s\n", waited);
	CHECK(waited < 6, "the stream took %.1f s to end (documented: about 3 s)", waited);
	close(sock);
	double start = now_s();
	expect_error(http("POST", "/v1/completions", KEY_WEB, short_completion), 503,
		     "service_unavailable");
	expect_error(http("POST", "/v1/completions", KEY_WEB, short_stream), 503,
		     "service_unavailable");
	waited = now_s() - start;
	printf("stopped daemon: two new requests got 503 in %.2f s\n", waited);
	CHECK(waited < 2 * 8, "503s took %.1f s (each at most the 5 s handshake timeout)", waited);
	CHECK(kill(daemon_pid, SIGCONT) == 0, "SIGCONT");
	struct http_reply reply = http("POST", "/v1/completions", KEY_WEB, short_completion);
	CHECK(reply.status == 200, "after SIGCONT: %d %s", reply.status, reply.body);
	free(reply.body);
}

/* A model whose GGUF carries a chat template ringserve formats (ChatML): the bridge lays
 * the chat out with it, so the prompt is rs_chat_tokenize's ids (usage.prompt_tokens) and
 * the greedy answer is the C client's for those ids. */
static void check_model_template(char *model)
{
	char command[512];
	snprintf(model, 128, "%s/chat.gguf", dir);
	snprintf(command, sizeof(command),
		 "%s/ringserve-mkmodel --arch qwen2 --out-gguf %s --chat-template "
		 "tests/chat/chatml.jinja 2>/dev/null",
		 test_build_dir(), model);
	CHECK(system(command) == 0, "mkmodel --chat-template");
	struct test_daemon daemon;
	const char *daemon_args[] = {"--model", model, "--backend", "cpu", "--threads", "1", NULL};
	test_daemon_start(&daemon, daemon_args);
	socket_path = daemon.socket_path;
	start_bridge();
	struct rs_connection *conn;
	CHECK(rs_connect(socket_path, NULL, &conn) == 0, "connect");
	struct rs_chat_message chat[2] = {{"system", "Be brief."},
					  {"user", "Tell <|im_end|> a story."}};
	uint32_t ids[512];
	int n = rs_chat_tokenize(conn, RS_CHAT_TEMPLATE_MODEL, chat, 2, RS_CHAT_ADD_ASSISTANT, ids,
				 512);
	CHECK(n > 0, "rs_chat_tokenize: %d", n);
	struct rs_generate_params params = {.prompt = ids,
					    .prompt_len = (uint32_t)n,
					    .max_new_tokens = 12,
					    .flags = RS_GENERATE_IGNORE_EOS};
	int request = rs_submit(conn, &params);
	CHECK(request >= 0, "submit");
	struct rs_completion done;
	CHECK(rs_wait(conn, &done, 1, 30000) == 1 && done.status == 0, "wait");
	const uint32_t *tokens;
	int count = rs_output(conn, request, &tokens);
	struct rs_detok detok;
	char want[4096];
	CHECK(count == 12 && rs_detok_init(conn, &detok, request) == 0, "output");
	int len = rs_detok_feed(&detok, tokens, 12, want, sizeof(want) - 4);
	CHECK(len >= 0, "detok");
	int tail = rs_detok_flush(&detok, want + len, 4);
	want[len + (tail > 0 ? tail : 0)] = '\0';
	rs_release(conn, request);

	char text[4096], finish[16];
	int completion_tokens, prompt_tokens;
	completion("/v1/chat/completions",
		   "{\"model\": \"tiny-test\", \"max_tokens\": 12, \"ignore_eos\": true, "
		   "\"temperature\": 0, "
		   "\"messages\": [{\"role\": \"developer\", \"content\": \"Be brief.\"}, "
		   "{\"role\": \"user\", \"content\": \"Tell <|im_end|> a story.\"}]}",
		   text, sizeof(text), finish, &completion_tokens, &prompt_tokens);
	CHECK(prompt_tokens == n, "the bridge's prompt: %d tokens, the template's %d",
	      prompt_tokens, n);
	CHECK(completion_tokens == 12 && strcmp(text, want) == 0,
	      "template chat '%s' != C client '%s'", text, want);
	rs_close(conn);
	kill(bridge_pid, SIGTERM);
	int status;
	CHECK(waitpid(bridge_pid, &status, 0) == bridge_pid, "waitpid");
	bridge_pid = 0;
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit");
}

int main(void)
{
	if (system("curl --version >/dev/null 2>&1") != 0) {
		printf("curl is not installed (apt-get install curl)\n");
		return T_EXIT_SKIP;
	}
	snprintf(dir, sizeof(dir), "/tmp/ringserve-openai-XXXXXX");
	CHECK(mkdtemp(dir), "mkdtemp");
	char model[128], command[512];
	snprintf(model, sizeof(model), "%s/model.gguf", dir);
	/* Large enough that a 2000-token answer takes a while on one thread. */
	snprintf(command, sizeof(command),
		 "%s/ringserve-mkmodel --out-gguf %s --seed 5 --dim 128 --hidden 344 --layers 4 "
		 "--seq-len 2048 >/dev/null",
		 test_build_dir(), model);
	CHECK(system(command) == 0, "mkmodel");
	char tenants[128];
	snprintf(tenants, sizeof(tenants), "%s/tenants.conf", dir);
	FILE *f = fopen(tenants, "w");
	CHECK(f, "tenants.conf: %s", strerror(errno));
	fprintf(f, "tenant batch max_inflight=1\n");
	fclose(f);
	struct test_daemon daemon;
	const char *daemon_args[] = {"--model",	 model,	  "--backend",	    "cpu", "--threads", "1",
				     "--config", tenants, "--max-inflight", "4",   NULL};
	CHECK(MAX_INFLIGHT == 4, "--max-inflight above");
	test_daemon_start(&daemon, daemon_args);
	socket_path = daemon.socket_path;
	start_bridge();

	struct rs_connection *conn;
	struct rs_connect_options options = {.tenant = "reference"};
	CHECK(rs_connect(socket_path, &options, &conn) == 0, "connect");

	/* /v1/models */
	struct http_reply reply = http("GET", "/v1/models", KEY_WEB, NULL);
	CHECK(reply.status == 200, "models: %d %s", reply.status, reply.body);
	json_t *json = parse(reply.body);
	CHECK(strcmp(string_at(json, "data", 0, "id", NULL), MODEL_ID) == 0, "models: %s",
	      reply.body);
	json_decref(json);
	free(reply.body);

	/* Greedy completion, plain and streamed, against the C client. */
	const char *prompt = "Once upon a time there was";
	struct reference ref;
	reference(conn, prompt, 40, &ref);
	char *prompt_json = quoted(prompt);
	char body[8192], text[8192], finish[16];
	int completion_tokens, prompt_tokens, chunks;
	snprintf(body, sizeof(body),
		 "{\"model\": \"%s\", \"prompt\": %s, \"max_tokens\": 40, \"temperature\": 0, "
		 "\"ignore_eos\": true}",
		 MODEL_ID, prompt_json);
	completion("/v1/completions", body, text, sizeof(text), finish, &completion_tokens,
		   &prompt_tokens);
	CHECK(strcmp(text, ref.text) == 0, "bridge '%s' != C client '%s'", text, ref.text);
	CHECK(strcmp(finish, "length") == 0, "finish %s", finish);
	CHECK(completion_tokens == 40 && prompt_tokens == ref.prompt_tokens, "usage %d %d (%d)",
	      completion_tokens, prompt_tokens, ref.prompt_tokens);
	snprintf(body, sizeof(body),
		 "{\"model\": \"%s\", \"prompt\": %s, \"max_tokens\": 40, \"temperature\": 0, "
		 "\"ignore_eos\": true, \"stream\": true}",
		 MODEL_ID, prompt_json);
	stream("/v1/completions", body, text, sizeof(text), finish, &chunks);
	CHECK(strcmp(text, ref.text) == 0, "streamed '%s' != C client '%s'", text, ref.text);
	/* One event per token whose text is new (the UTF-8 tail that the end flushes goes
	 * with the last token), then the finish event: however fast the tokens came. */
	int text_events = 0;
	for (uint32_t i = 0; i < ref.n_tokens; i++) {
		size_t end = i + 1 == ref.n_tokens ? ref.len : ref.ends[i];
		text_events += end > (i ? ref.ends[i - 1] : 0);
	}
	CHECK(strcmp(finish, "length") == 0 && chunks == text_events + 1,
	      "finish %s, %d events for %d tokens with text", finish, chunks, text_events);

	/* max_tokens: the greedy answer's first 7 tokens. */
	snprintf(body, sizeof(body),
		 "{\"model\": \"%s\", \"prompt\": %s, \"max_tokens\": 7, \"temperature\": 0, "
		 "\"ignore_eos\": true}",
		 MODEL_ID, prompt_json);
	completion("/v1/completions", body, text, sizeof(text), finish, &completion_tokens,
		   &prompt_tokens);
	CHECK(completion_tokens == 7 && strlen(text) <= ref.ends[6] &&
		  strncmp(text, ref.text, strlen(text)) == 0 && strlen(text) >= ref.ends[5],
	      "max_tokens 7: '%s' (%d tokens) vs '%s'", text, completion_tokens, ref.text);

	/* Stop sequences across a token boundary: the last byte of one token's text and the
	 * first of the next (both ASCII), first match in the reference text. */
	size_t cut = 0;
	for (uint32_t i = 4; i + 1 < ref.n_tokens && !cut; i++) {
		size_t end = ref.ends[i];
		if (end > ref.ends[i - 1] && ref.ends[i + 1] > end &&
		    (unsigned char)ref.text[end - 1] < 0x80 &&
		    (unsigned char)ref.text[end] < 0x80 && ref.text[end - 1] != '"' &&
		    ref.text[end] != '"' && ref.text[end - 1] != '\\' && ref.text[end] != '\\' &&
		    ref.text[end - 1] >= ' ' && ref.text[end] >= ' ')
			cut = end;
	}
	CHECK(cut, "no token boundary between two ASCII characters in '%s'", ref.text);
	char stop[3] = {ref.text[cut - 1], ref.text[cut], 0};
	size_t expected_len = (size_t)((char *)memmem(ref.text, ref.len, stop, 2) - ref.text);
	char *stop_json = quoted(stop);
	printf("stop \"%s\": at byte %zu of %zu (token boundary at %zu)\n", stop, expected_len,
	       ref.len, cut);
	snprintf(body, sizeof(body),
		 "{\"model\": \"%s\", \"prompt\": %s, \"max_tokens\": 40, \"temperature\": 0, "
		 "\"ignore_eos\": true, \"stop\": [\"never-in-the-text\", %s]}",
		 MODEL_ID, prompt_json, stop_json);
	completion("/v1/completions", body, text, sizeof(text), finish, &completion_tokens,
		   &prompt_tokens);
	CHECK(strlen(text) == expected_len && strncmp(text, ref.text, expected_len) == 0,
	      "stop '%s': '%s', expected the first %zu bytes of '%s'", stop, text, expected_len,
	      ref.text);
	/* Usage counts the tokens up to the one that completed the stop sequence, whatever
	 * the daemon generated before the bridge's cancel reached it. */
	int stop_tokens = 0;
	while (ref.ends[stop_tokens] < expected_len + 2)
		stop_tokens++;
	stop_tokens++;
	CHECK(strcmp(finish, "stop") == 0 && completion_tokens == stop_tokens,
	      "stop: finish %s, %d tokens, expected %d", finish, completion_tokens, stop_tokens);
	snprintf(body, sizeof(body),
		 "{\"model\": \"%s\", \"prompt\": %s, \"max_tokens\": 40, \"temperature\": 0, "
		 "\"ignore_eos\": true, \"stop\": %s, \"stream\": true}",
		 MODEL_ID, prompt_json, stop_json);
	stream("/v1/completions", body, text, sizeof(text), finish, &chunks);
	CHECK(strlen(text) == expected_len && strncmp(text, ref.text, expected_len) == 0,
	      "streamed stop '%s': '%s', expected the first %zu bytes of '%s'", stop, text,
	      expected_len, ref.text);
	CHECK(strcmp(finish, "stop") == 0, "streamed stop: finish %s", finish);

	/* Chat: the documented plain template, plain and streamed. */
	struct reference chat_ref;
	reference(conn, "System: Be brief.\nUser: Tell me a story.\nAssistant:", 30, &chat_ref);
	const char *messages = "[{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": "
			       "\"user\", \"content\": [{\"type\": \"text\", \"text\": \"Tell me "
			       "a story.\"}]}]";
	snprintf(body, sizeof(body),
		 "{\"model\": \"%s\", \"messages\": %s, \"max_tokens\": 30, \"temperature\": 0, "
		 "\"ignore_eos\": true}",
		 MODEL_ID, messages);
	completion("/v1/chat/completions", body, text, sizeof(text), finish, &completion_tokens,
		   &prompt_tokens);
	CHECK(strcmp(text, chat_ref.text) == 0, "chat '%s' != C client '%s'", text, chat_ref.text);
	CHECK(completion_tokens == 30 && prompt_tokens == chat_ref.prompt_tokens,
	      "chat usage %d %d", completion_tokens, prompt_tokens);
	snprintf(body, sizeof(body),
		 "{\"model\": \"%s\", \"messages\": %s, \"max_completion_tokens\": 30, "
		 "\"temperature\": 0, \"ignore_eos\": true, \"stream\": true, "
		 "\"stream_options\": {\"include_usage\": true}}",
		 MODEL_ID, messages);
	stream("/v1/chat/completions", body, text, sizeof(text), finish, &chunks);
	CHECK(strcmp(text, chat_ref.text) == 0, "streamed chat '%s' != C client '%s'", text,
	      chat_ref.text);

	/* Sampling parameters reach the daemon: the same seed gives the same text. */
	snprintf(body, sizeof(body),
		 "{\"model\": \"%s\", \"prompt\": %s, \"max_tokens\": 30, \"temperature\": 1.5, "
		 "\"top_p\": 0.95, \"seed\": 1234, \"ignore_eos\": true}",
		 MODEL_ID, prompt_json);
	char text2[8192];
	completion("/v1/completions", body, text, sizeof(text), finish, &completion_tokens,
		   &prompt_tokens);
	completion("/v1/completions", body, text2, sizeof(text2), finish, &completion_tokens,
		   &prompt_tokens);
	CHECK(strcmp(text, text2) == 0, "seed 1234 gave '%s' and '%s'", text, text2);
	CHECK(strcmp(text, ref.text) != 0, "temperature 1.5 gave the greedy text");
	/* Without a seed each request draws its own: 30 tokens at temperature 1.5 from a
	 * 512-token vocabulary do not repeat by chance. */
	snprintf(body, sizeof(body),
		 "{\"model\": \"%s\", \"prompt\": %s, \"max_tokens\": 30, \"temperature\": 1.5, "
		 "\"ignore_eos\": true}",
		 MODEL_ID, prompt_json);
	completion("/v1/completions", body, text, sizeof(text), finish, &completion_tokens,
		   &prompt_tokens);
	completion("/v1/completions", body, text2, sizeof(text2), finish, &completion_tokens,
		   &prompt_tokens);
	CHECK(strcmp(text, text2) != 0, "two unseeded samples gave the same '%s'", text);

	/* Errors in OpenAI's shape. */
	expect_error(http("POST", "/v1/completions", KEY_WEB, "{\"model\": \"tiny-test\", "), 400,
		     NULL);
	expect_error(http("POST", "/v1/completions", KEY_WEB, "[1, 2]"), 400, NULL);
	expect_error(
	    http("POST", "/v1/completions", KEY_WEB, "{\"model\": \"gpt-9\", \"prompt\": \"hi\"}"),
	    404, "model_not_found");
	expect_error(http("POST", "/v1/completions", KEY_WEB,
			  "{\"model\": \"tiny-test\", \"prompt\": \"hi\", \"temperature\": 7}"),
		     400, NULL);
	expect_error(http("POST", "/v1/completions", KEY_WEB,
			  "{\"model\": \"tiny-test\", \"prompt\": \"hi\", \"max_tokens\": 100000}"),
		     400, "context_length_exceeded");
	expect_error(http("POST", "/v1/chat/completions", KEY_WEB,
			  "{\"model\": \"tiny-test\", \"messages\": []}"),
		     400, NULL);
	expect_error(http("GET", "/v1/models", "sk-not-a-key-at-all", NULL), 401,
		     "invalid_api_key");
	expect_error(http("GET", "/v1/models", NULL, NULL), 401, "invalid_api_key");
	expect_error(http("GET", "/v1/nothing", KEY_WEB, NULL), 404, NULL);
	char *big = malloc(2 * MAX_BODY + 64);
	int k = snprintf(big, 64, "{\"model\": \"tiny-test\", \"prompt\": \"");
	memset(big + k, 'a', 2 * MAX_BODY);
	strcpy(big + k + 2 * MAX_BODY, "\"}");
	expect_error(http("POST", "/v1/completions", KEY_WEB, big), 413, "request_too_large");
	curl_extra = "-H 'Transfer-Encoding: chunked'"; /* no Content-Length: counted as read */
	expect_error(http("POST", "/v1/completions", KEY_WEB, big), 413, "request_too_large");
	curl_extra = "";
	expect_error(http("POST", "/v1/completions", "sk-not-a-key-at-all",
			  "{\"model\": \"tiny-test\", \"prompt\": \"hi\"}"),
		     401, "invalid_api_key");
	expect_error(http("GET", "/v1/models/gpt-9", KEY_WEB, NULL), 404, "model_not_found");
	reply = http("GET", "/v1/models/" MODEL_ID, KEY_WEB, NULL);
	CHECK(reply.status == 200 && strstr(reply.body, "\"id\":\"" MODEL_ID "\""), "model: %d %s",
	      reply.status, reply.body);
	free(reply.body);
	free(big);

	/* Keys map to tenants: a request with the batch key is the batch tenant's. */
	struct rs_stats_reader *reader;
	CHECK(rs_stats_open(socket_path, &reader) == 0, "stats open");
	reply = http("POST", "/v1/completions", KEY_BATCH,
		     "{\"model\": \"tiny-test\", \"prompt\": \"hello\", \"max_tokens\": 5, "
		     "\"ignore_eos\": true}");
	CHECK(reply.status == 200, "batch key: %d %s", reply.status, reply.body);
	free(reply.body);
	struct rs_stats stats;
	struct rs_stats_tenant batch, web;
	double deadline = now_s() + 5;
	while (!(stats_tenant(reader, "batch", &batch, &stats) && batch.requests_finished == 1))
		CHECK(now_s() < deadline, "the batch tenant never finished a request");
	CHECK(batch.generated_tokens == 5, "batch generated %llu",
	      (unsigned long long)batch.generated_tokens);

	/* A client that leaves mid-stream: the request is cancelled, not run to its end. */
	CHECK(stats_tenant(reader, "web", &web, &stats), "no web tenant");
	uint64_t web_failed = web.requests_failed, web_generated = web.generated_tokens;
	int sock = open_long_stream(KEY_WEB);
	close(sock);
	deadline = now_s() + 10;
	for (;;) {
		CHECK(stats_tenant(reader, "web", &web, &stats), "no web tenant");
		if (web.requests_failed == web_failed + 1 && web.inflight == 0)
			break;
		CHECK(now_s() < deadline, "the abandoned stream was not cancelled (failed %llu)",
		      (unsigned long long)web.requests_failed);
	}
	CHECK(web.generated_tokens - web_generated < 2000, "generated %llu of 2000 tokens",
	      (unsigned long long)(web.generated_tokens - web_generated));
	printf("client gone mid-stream: cancelled after %llu of 2000 tokens\n",
	       (unsigned long long)(web.generated_tokens - web_generated));
	reply = http("GET", "/ringserve/stats", KEY_WEB, NULL);
	json = parse(reply.body);
	CHECK(json_integer_value(json_object_get(json, "client_gone")) == 1 &&
		  json_integer_value(json_object_get(json, "requests_active")) == 0,
	      "bridge counters: %s", reply.body);
	json_decref(json);
	free(reply.body);
	rs_stats_close(reader);

	/* Requests of one key at once share its connection: three streams in parallel. */
	snprintf(body, sizeof(body),
		 "{\"model\": \"%s\", \"prompt\": %s, \"max_tokens\": 40, \"temperature\": 0, "
		 "\"ignore_eos\": true, \"stream\": true}",
		 MODEL_ID, prompt_json);
	struct pending parallel[3];
	for (int i = 0; i < 3; i++)
		http_begin(&parallel[i], "POST", "/v1/completions", KEY_WEB, body);
	for (int i = 0; i < 3; i++) {
		reply = http_end(&parallel[i]);
		CHECK(reply.status == 200, "parallel %d: %d", i, reply.status);
		stream_text(reply.body, false, text, sizeof(text), finish, &chunks);
		CHECK(strcmp(text, ref.text) == 0, "parallel stream %d: '%s' != '%s'", i, text,
		      ref.text);
		free(reply.body);
	}

	check_rate_limits();
	check_stopped_daemon(daemon.pid);

	/* A daemon that dies mid-stream: the stream ends with an error event and [DONE]. */
	sock = open_long_stream(KEY_WEB);
	rs_close(conn);
	test_daemon_kill(&daemon);
	{
		static char rest[1 << 20];
		size_t have = 0;
		double died = now_s();
		while (!memmem(rest, have, "data: [DONE]", 12)) {
			ssize_t n = read(sock, rest + have, sizeof(rest) - have - 1);
			CHECK(n > 0, "the stream ended without [DONE] after the daemon died");
			have += (size_t)n;
		}
		CHECK(memmem(rest, have, "service_unavailable", 19),
		      "no error event after the daemon died");
		CHECK(now_s() - died < 5, "the stream took %.1f s to end", now_s() - died);
		close(sock);
	}

	/* A daemon that is gone: 503, promptly. */
	double start = now_s();
	expect_error(http("POST", "/v1/completions", KEY_WEB,
			  "{\"model\": \"tiny-test\", \"prompt\": \"hi\", \"max_tokens\": 5}"),
		     503, "service_unavailable");
	expect_error(http("POST", "/v1/chat/completions", KEY_BATCH,
			  "{\"model\": \"tiny-test\", \"messages\": [{\"role\": \"user\", "
			  "\"content\": \"hi\"}], \"stream\": true}"),
		     503, "service_unavailable");
	CHECK(now_s() - start < 5, "503s took %.1f s", now_s() - start);

	kill(bridge_pid, SIGTERM);
	int status;
	CHECK(waitpid(bridge_pid, &status, 0) == bridge_pid, "waitpid");
	bridge_pid = 0;
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "bridge exit status %d", status);

	check_model_template(model);

	snprintf(command, sizeof(command), "rm -rf %s", dir);
	CHECK(system(command) == 0, "cleanup");
	free(prompt_json);
	free(stop_json);
	printf("openai_bridge: all checks passed\n");
	return T_EXIT_PASS;
}
