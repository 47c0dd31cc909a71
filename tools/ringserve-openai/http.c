/* The OpenAI HTTP API (http.h). One thread per HTTP connection (libmicrohttpd's
 * THREAD_PER_CONNECTION): a handler may block while its request generates, watching both
 * its request's eventfd and the client's socket, so a client that hangs up cancels the
 * ringserve request at once. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "tools/ringserve-openai/generation.h"
#include "tools/ringserve-openai/http.h"

#define STREAM_BLOCK	 16384
#define MAX_PROMPT_BYTES (1u << 20)

static const struct bridge_config *config;

/* One HTTP request's state, from its first call to its end. */
struct http_request {
	unsigned refs; /* the connection's, and its stream response's while it lives */
	char *body;
	size_t body_len;
	bool body_too_large;
	bool answered; /* a response is queued already (an early error) */
	int client_fd;
	struct tenant_link *link;
	/* a stream */
	struct upstream *up;
	struct generation gen;
	bool generating;
	bool chat;
	bool include_usage;
	bool role_sent;
	bool stream_over;
	bool client_gone; /* counted in bridge_counters.client_gone */
	char id[40];
	long long created;
	char *out;
	size_t out_len, out_pos;
};

/* --- answers ------------------------------------------------------------------------ */

static enum MHD_Result send_json(struct MHD_Connection *connection, unsigned status, json_t *json)
{
	char *text = json_dumps(json, JSON_COMPACT);
	json_decref(json);
	if (!text)
		return MHD_NO;
	struct MHD_Response *response =
	    MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	if (!response) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(response, "Content-Type", "application/json");
	enum MHD_Result ret = MHD_queue_response(connection, status, response);
	MHD_destroy_response(response);
	return ret;
}

/* OpenAI's error object: {"error": {"message", "type", "param", "code"}}. */
static json_t *error_json(const char *message, const char *type, const char *param,
			  const char *code)
{
	return json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", message, "type", type,
			 "param", param ? json_string(param) : json_null(), "code",
			 code ? json_string(code) : json_null());
}

static enum MHD_Result send_error(struct MHD_Connection *connection, unsigned status,
				  const char *message, const char *type, const char *param,
				  const char *code)
{
	return send_json(connection, status, error_json(message, type, param, code));
}

static enum MHD_Result invalid(struct MHD_Connection *connection, const char *param,
			       const char *message)
{
	return send_error(connection, 400, message, "invalid_request_error", param, NULL);
}

/* The answer for a ringserve error before any output went out. */
static enum MHD_Result send_upstream_error(struct MHD_Connection *connection, int err)
{
	char message[160];
	switch (err) {
	case -ENOENT:
	case -ECONNREFUSED:
	case -ECONNRESET:
	case -EHOSTDOWN:
	case -ESHUTDOWN:
	case -ETIMEDOUT:
		snprintf(message, sizeof(message), "ringserved is not available (%s)",
			 strerror(-err));
		return send_error(connection, 503, message, "server_error", NULL,
				  "service_unavailable");
	case -EAGAIN:
	case -EUSERS:
		return send_error(connection, 429, "too many requests in flight for this key",
				  "rate_limit_error", NULL, "rate_limit_exceeded");
	case -E2BIG:
		return send_error(connection, 400,
				  "the prompt and max_tokens exceed the model's context",
				  "invalid_request_error", "max_tokens", "context_length_exceeded");
	case -EILSEQ:
		return invalid(connection, "prompt",
			       "the prompt has bytes the vocabulary cannot spell");
	case -ENOTSUP:
		return send_error(connection, 503, "ringserved serves no vocabulary (text API)",
				  "server_error", NULL, "service_unavailable");
	case -EPERM:
		return send_error(connection, 503, "ringserved refused the bridge's uid",
				  "server_error", NULL, "service_unavailable");
	case -EINVAL:
		return invalid(connection, NULL, "ringserved refused the request's parameters");
	default:
		snprintf(message, sizeof(message), "ringserve error: %s", strerror(-err));
		return send_error(connection, 500, message, "server_error", NULL, NULL);
	}
}

/* --- parameters --------------------------------------------------------------------- */

struct sampling {
	uint32_t max_tokens; /* 0: the default */
	double temperature, top_p;
	uint64_t seed;
	bool ignore_eos;
	const char *stops[GENERATION_MAX_STOPS];
	size_t n_stops;
	bool stream, include_usage;
};

/* Read the sampling fields; on a bad one answer 400 and return false. */
static bool parse_sampling(struct MHD_Connection *connection, json_t *root, bool chat,
			   struct sampling *s, enum MHD_Result *answer)
{
	memset(s, 0, sizeof(*s));
	s->temperature = 1.0; /* OpenAI's default */
	s->top_p = 1.0;
	json_t *v;
#define REJECT(param, message)                                                                     \
	do {                                                                                       \
		*answer = invalid(connection, param, message);                                     \
		return false;                                                                      \
	} while (0)
	const char *max_names[2] = {"max_tokens", chat ? "max_completion_tokens" : NULL};
	for (int i = 0; i < 2 && max_names[i]; i++) {
		v = json_object_get(root, max_names[i]);
		if (!v || json_is_null(v))
			continue;
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > UINT32_MAX)
			REJECT(max_names[i], "must be a positive integer");
		s->max_tokens = (uint32_t)json_integer_value(v);
	}
	v = json_object_get(root, "temperature");
	if (v && !json_is_null(v)) {
		if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 2)
			REJECT("temperature", "must be a number from 0 to 2");
		s->temperature = json_number_value(v);
	}
	v = json_object_get(root, "top_p");
	if (v && !json_is_null(v)) {
		if (!json_is_number(v) || json_number_value(v) <= 0 || json_number_value(v) > 1)
			REJECT("top_p", "must be a number in (0, 1]");
		s->top_p = json_number_value(v);
	}
	v = json_object_get(root, "seed");
	if (v && !json_is_null(v)) {
		if (!json_is_integer(v))
			REJECT("seed", "must be an integer");
		s->seed = (uint64_t)json_integer_value(v);
	} else if (getrandom(&s->seed, sizeof(s->seed), 0) != sizeof(s->seed)) {
		/* no seed: a fresh one per request, as OpenAI samples anew each time */
		s->seed = (uint64_t)time(NULL);
	}
	v = json_object_get(root, "n");
	if (v && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 1))
		REJECT("n", "only n = 1 is supported");
	v = json_object_get(root, "ignore_eos"); /* an extension, as vLLM's */
	if (v && !json_is_null(v)) {
		if (!json_is_boolean(v))
			REJECT("ignore_eos", "must be a boolean");
		s->ignore_eos = json_is_true(v);
	}
	v = json_object_get(root, "stream");
	if (v && !json_is_null(v)) {
		if (!json_is_boolean(v))
			REJECT("stream", "must be a boolean");
		s->stream = json_is_true(v);
	}
	v = json_object_get(root, "stream_options");
	if (v && !json_is_null(v)) {
		json_t *usage = json_object_get(v, "include_usage");
		if (!json_is_object(v) || (usage && !json_is_boolean(usage)))
			REJECT("stream_options", "must be {\"include_usage\": boolean}");
		s->include_usage = json_is_true(usage);
	}
	v = json_object_get(root, "stop");
	if (v && !json_is_null(v)) {
		if (json_is_string(v)) {
			s->stops[s->n_stops++] = json_string_value(v);
		} else if (json_is_array(v) && json_array_size(v) <= GENERATION_MAX_STOPS) {
			size_t i;
			json_t *item;
			json_array_foreach(v, i, item)
			{
				if (!json_is_string(item))
					REJECT("stop", "must be a string or an array of strings");
				s->stops[s->n_stops++] = json_string_value(item);
			}
		} else {
			REJECT("stop", "must be a string or an array of up to 4 strings");
		}
		for (size_t i = 0; i < s->n_stops; i++)
			if (s->stops[i][0] == '\0')
				REJECT("stop", "a stop sequence must not be empty");
	}
#undef REJECT
	return true;
}

/* A growing string for prompts. */
struct text_buf {
	char *data;
	size_t len, cap;
	bool failed;
};

static void text_add(struct text_buf *t, const char *s, size_t n)
{
	if (t->failed)
		return;
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 1024;
		while (cap < t->len + n + 1)
			cap *= 2;
		char *grown = realloc(t->data, cap);
		if (!grown) {
			t->failed = true;
			return;
		}
		t->data = grown;
		t->cap = cap;
	}
	memcpy(t->data + t->len, s, n);
	t->len += n;
	t->data[t->len] = '\0';
}

/* The messages for the model's own chat template (rs_chat_tokenize): roles as the
 * templates name them, contents as the plain layout's. */
struct chat_messages {
	struct rs_chat_message *items;
	size_t n;
};

static void chat_messages_free(struct chat_messages *m)
{
	for (size_t i = 0; m->items && i < m->n; i++)
		free((char *)m->items[i].content);
	free(m->items);
	memset(m, 0, sizeof(*m));
}

/* The plain chat layout (docs/client-http.md), for models without a chat template that
 * ringserve knows: each message as "Role: content\n" (System, User, Assistant, Tool), then
 * "Assistant:" for the model to continue. Contents are strings or arrays of {"type":
 * "text", "text": ...} parts. Also collects the messages into *out for the model's own
 * template. Returns NULL after answering 400. */
static char *chat_prompt(struct MHD_Connection *connection, json_t *messages, size_t *len,
			 struct chat_messages *out, enum MHD_Result *answer)
{
	if (!json_is_array(messages) || json_array_size(messages) == 0) {
		*answer = invalid(connection, "messages", "must be a non-empty array");
		return NULL;
	}
	struct text_buf t = {0};
	size_t i;
	json_t *message;
	out->items = calloc(json_array_size(messages), sizeof(*out->items));
	if (!out->items)
		t.failed = true;
	json_array_foreach(messages, i, message)
	{
		if (t.failed)
			break;
		const char *role = json_string_value(json_object_get(message, "role"));
		json_t *content = json_object_get(message, "content");
		const char *label = NULL;
		if (role && strcmp(role, "system") == 0)
			label = "System";
		else if (role && strcmp(role, "developer") == 0)
			label = "System";
		else if (role && strcmp(role, "user") == 0)
			label = "User";
		else if (role && strcmp(role, "assistant") == 0)
			label = "Assistant";
		else if (role && strcmp(role, "tool") == 0)
			label = "Tool";
		if (!label) {
			free(t.data);
			chat_messages_free(out);
			*answer = invalid(connection, "messages",
					  "each message needs a role: system, developer, user, "
					  "assistant or tool");
			return NULL;
		}
		text_add(&t, label, strlen(label));
		text_add(&t, ": ", 2);
		size_t content_start = t.len;
		if (json_is_string(content)) {
			text_add(&t, json_string_value(content), json_string_length(content));
		} else if (json_is_array(content)) {
			size_t k;
			json_t *part;
			json_array_foreach(content, k, part)
			{
				json_t *text = json_object_get(part, "text");
				const char *type = json_string_value(json_object_get(part, "type"));
				if (!type || strcmp(type, "text") != 0 || !json_is_string(text)) {
					free(t.data);
					chat_messages_free(out);
					*answer = invalid(connection, "messages",
							  "only text content parts are supported");
					return NULL;
				}
				text_add(&t, json_string_value(text), json_string_length(text));
			}
		} else if (!json_is_null(content) || strcmp(role, "assistant") != 0) {
			free(t.data);
			chat_messages_free(out);
			*answer = invalid(connection, "messages",
					  "content must be a string or an array of text parts");
			return NULL;
		}
		char *copy =
		    t.failed ? NULL : strndup(t.data + content_start, t.len - content_start);
		if (!copy) {
			t.failed = true;
			break;
		}
		/* OpenAI's "developer" is the templates' "system". */
		out->items[out->n++] = (struct rs_chat_message){
		    strcmp(role, "developer") == 0 ? "system" : role, copy};
		text_add(&t, "\n", 1);
	}
	text_add(&t, "Assistant:", 10);
	if (t.failed) {
		free(t.data);
		chat_messages_free(out);
		*answer = send_error(connection, 500, "out of memory", "server_error", NULL, NULL);
		return NULL;
	}
	*len = t.len;
	return t.data;
}

/* --- generation --------------------------------------------------------------------- */

static void new_id(struct http_request *hr, const char *prefix)
{
	unsigned char bytes[12];
	if (getrandom(bytes, sizeof(bytes), 0) != sizeof(bytes))
		memset(bytes, 0, sizeof(bytes));
	int n = snprintf(hr->id, sizeof(hr->id), "%s", prefix);
	for (size_t i = 0; i < sizeof(bytes) && n + 2 < (int)sizeof(hr->id); i++)
		n += snprintf(hr->id + n, sizeof(hr->id) - (size_t)n, "%02x", bytes[i]);
	hr->created = (long long)time(NULL);
}

static json_t *usage_json(const struct generation *gen)
{
	return json_pack("{s:i, s:i, s:i}", "prompt_tokens", (json_int_t)gen->prompt_tokens,
			 "completion_tokens", (json_int_t)gen->consumed, "total_tokens",
			 (json_int_t)gen->prompt_tokens + gen->consumed);
}

/* One choice of a response or a chunk. text NULL: the chat role chunk or the end. */
static json_t *choice_json(const struct http_request *hr, const char *text, size_t len,
			   const char *finish, bool chunk)
{
	json_t *finish_json = finish ? json_string(finish) : json_null();
	if (!hr->chat)
		return json_pack("{s:s%, s:i, s:n, s:o}", "text", text ? text : "", text ? len : 0,
				 "index", 0, "logprobs", "finish_reason", finish_json);
	json_t *message;
	if (!chunk)
		message = json_pack("{s:s, s:s%}", "role", "assistant", "content", text, len);
	else if (!hr->role_sent)
		message = json_pack("{s:s, s:s}", "role", "assistant", "content", "");
	else if (text)
		message = json_pack("{s:s%}", "content", text, len);
	else
		message = json_object();
	return json_pack("{s:i, s:o, s:n, s:o}", "index", 0, chunk ? "delta" : "message", message,
			 "logprobs", "finish_reason", finish_json);
}

static json_t *envelope(const struct http_request *hr, bool chunk, json_t *choices)
{
	const char *object =
	    hr->chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
	return json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", hr->id, "object", object, "created",
			 (json_int_t)hr->created, "model", config->model_id, "choices", choices);
}

/* Add "data: JSON\n\n" to the stream's pending output. */
static int stream_event(struct http_request *hr, json_t *json)
{
	char *text = json ? json_dumps(json, JSON_COMPACT) : strdup("[DONE]");
	json_decref(json);
	if (!text)
		return -ENOMEM;
	size_t n = strlen(text);
	char *grown = realloc(hr->out, hr->out_len + n + 8);
	if (!grown) {
		free(text);
		return -ENOMEM;
	}
	hr->out = grown;
	memcpy(hr->out + hr->out_len, "data: ", 6);
	memcpy(hr->out + hr->out_len + 6, text, n);
	memcpy(hr->out + hr->out_len + 6 + n, "\n\n", 2);
	hr->out_len += n + 8;
	free(text);
	return 0;
}

static json_t *upstream_error_json(int err)
{
	char message[160];
	snprintf(message, sizeof(message), "generation failed: %s", strerror(-err));
	if (err == -EAGAIN || err == -EUSERS)
		return error_json(message, "rate_limit_error", NULL, "rate_limit_exceeded");
	bool gone = err == -ECONNRESET || err == -EHOSTDOWN || err == -ESHUTDOWN;
	return error_json(message, "server_error", NULL, gone ? "service_unavailable" : NULL);
}

/* The client left before its answer was complete: counted once, whoever notices it
 * first (a wait on its socket, or libmicrohttpd failing to write to it). */
static void count_client_gone(struct http_request *hr)
{
	if (hr->client_gone)
		return;
	hr->client_gone = true;
	__atomic_add_fetch(&bridge_counters.client_gone, 1, __ATOMIC_RELAXED);
}

/* Fill the stream's output with the next events; false when the client is gone. */
static bool stream_produce(struct http_request *hr)
{
	struct generation *gen = &hr->gen;
	hr->out_len = hr->out_pos = 0;
	if (hr->chat && !hr->role_sent) {
		json_t *choices = json_pack("[o]", choice_json(hr, NULL, 0, NULL, true));
		hr->role_sent = true;
		return stream_event(hr, envelope(hr, true, choices)) == 0;
	}
	/* Take before advancing: the handler advanced once before the stream began. */
	while (!hr->stream_over) {
		size_t len;
		const char *text = generation_take(gen, &len);
		if (len > 0) {
			json_t *choices = json_pack("[o]", choice_json(hr, text, len, NULL, true));
			if (stream_event(hr, envelope(hr, true, choices)) < 0)
				return false;
		}
		if (!gen->finished) {
			if (hr->out_len > 0)
				break;
			int ret = generation_advance(gen, hr->client_fd);
			if (ret == -ECONNABORTED) {
				count_client_gone(hr);
				return false;
			}
			if (ret < 0) {
				gen->finished = true;
				gen->error = ret;
			}
			continue;
		}
		if (gen->error) {
			stream_event(hr, upstream_error_json(gen->error));
		} else {
			json_t *choices =
			    json_pack("[o]", choice_json(hr, NULL, 0, gen->finish_reason, true));
			stream_event(hr, envelope(hr, true, choices));
			if (hr->include_usage) {
				json_t *last = envelope(hr, true, json_array());
				json_object_set_new(last, "usage", usage_json(gen));
				stream_event(hr, last);
			}
		}
		stream_event(hr, NULL);
		hr->stream_over = true;
		generation_end(gen); /* give the request back before the last bytes go out */
		hr->generating = false;
	}
	return true;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct http_request *hr = cls;
	if (hr->out_pos == hr->out_len) {
		if (hr->stream_over)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (!stream_produce(hr))
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (hr->out_pos == hr->out_len)
			return MHD_CONTENT_READER_END_OF_STREAM;
	}
	size_t n = hr->out_len - hr->out_pos < max ? hr->out_len - hr->out_pos : max;
	memcpy(buf, hr->out + hr->out_pos, n);
	hr->out_pos += n;
	return (ssize_t)n;
}

/* Drop a reference; the last one ends the generation (cancelling a request still
 * running) and frees everything. */
static void http_request_put(struct http_request *hr)
{
	if (__atomic_sub_fetch(&hr->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	if (hr->generating)
		generation_end(&hr->gen);
	if (hr->up)
		upstream_put(hr->up);
	free(hr->out);
	free(hr->body);
	free(hr);
}

/* The stream's response is gone (finished, or the client left). libmicrohttpd may destroy
 * it before or after the request-completed callback, hence the reference. */
static void stream_free(void *cls)
{
	http_request_put(cls);
}

/* POST /v1/completions and /v1/chat/completions. */
static enum MHD_Result handle_generate(struct MHD_Connection *connection, struct http_request *hr,
				       bool chat)
{
	json_error_t json_error;
	json_t *root = json_loadb(hr->body ? hr->body : "", hr->body_len, 0, &json_error);
	if (!root || !json_is_object(root)) {
		char message[256];
		snprintf(message, sizeof(message),
			 "the body is not a JSON object (%s at line %d column %d)",
			 root ? "not an object" : json_error.text, json_error.line,
			 json_error.column);
		json_decref(root);
		return invalid(connection, NULL, message);
	}
	enum MHD_Result answer = MHD_NO;
	char *prompt = NULL;
	size_t prompt_len = 0;
	struct chat_messages chat_messages = {0};
	uint32_t *chat_ids = NULL;
	const char *model = json_string_value(json_object_get(root, "model"));
	struct sampling s;
	if (!model) {
		answer = invalid(connection, "model", "model is required (a string)");
		goto out;
	}
	if (strcmp(model, config->model_id) != 0) {
		char message[256];
		snprintf(message, sizeof(message), "The model '%.100s' does not exist", model);
		answer = send_error(connection, 404, message, "invalid_request_error", "model",
				    "model_not_found");
		goto out;
	}
	if (!parse_sampling(connection, root, chat, &s, &answer))
		goto out;
	if (chat) {
		prompt = chat_prompt(connection, json_object_get(root, "messages"), &prompt_len,
				     &chat_messages, &answer);
		if (!prompt)
			goto out;
	} else {
		json_t *p = json_object_get(root, "prompt");
		if (json_is_array(p) && json_array_size(p) == 1)
			p = json_array_get(p, 0);
		if (!json_is_string(p)) {
			answer = invalid(connection, "prompt",
					 "prompt must be a string (or an array of one string)");
			goto out;
		}
		prompt = strndup(json_string_value(p), json_string_length(p));
		prompt_len = json_string_length(p);
		if (!prompt) {
			answer = send_error(connection, 500, "out of memory", "server_error", NULL,
					    NULL);
			goto out;
		}
	}

	int ret = upstream_acquire(hr->link, &hr->up);
	if (ret < 0) {
		hr->up = NULL;
		answer = send_upstream_error(connection, ret);
		goto out;
	}
	const struct rs_model_info *info = upstream_model(hr->up);
	int prompt_tokens = -ENOENT;
	/* A chat takes the model's own template when ringserve formats it; else the plain
	 * layout. */
	if (chat)
		prompt_tokens =
		    upstream_chat_tokens(hr->up, chat_messages.items, chat_messages.n, &chat_ids);
	if (prompt_tokens == -EINVAL) {
		answer = invalid(connection, "messages",
				 "a role this model's chat template has no place for");
		goto out;
	}
	if (prompt_tokens == -ENOENT || prompt_tokens == -ENOTSUP)
		prompt_tokens = upstream_count_tokens(hr->up, prompt, prompt_len);
	if (prompt_tokens < 0) {
		answer = send_upstream_error(connection, prompt_tokens);
		goto out;
	}
	if ((uint32_t)prompt_tokens > info->max_prompt_tokens ||
	    (uint32_t)prompt_tokens >= info->max_seq_len) {
		char message[200];
		snprintf(message, sizeof(message),
			 "the prompt has %d tokens; this model takes at most %u", prompt_tokens,
			 info->max_prompt_tokens < info->max_seq_len - 1 ? info->max_prompt_tokens
									 : info->max_seq_len - 1);
		answer = send_error(connection, 400, message, "invalid_request_error", "prompt",
				    "context_length_exceeded");
		goto out;
	}
	uint32_t room = info->max_seq_len - (uint32_t)prompt_tokens;
	if (room > info->max_output_tokens)
		room = info->max_output_tokens;
	uint32_t max_tokens = s.max_tokens ? s.max_tokens : (chat ? room : 16);
	if (max_tokens > room) {
		if (s.max_tokens) {
			char message[200];
			snprintf(message, sizeof(message),
				 "max_tokens is %u; with this prompt (%d tokens) at most %u fit",
				 s.max_tokens, prompt_tokens, room);
			answer = send_error(connection, 400, message, "invalid_request_error",
					    "max_tokens", "context_length_exceeded");
			goto out;
		}
		max_tokens = room;
	}
	struct rs_generate_params params = {
	    .max_new_tokens = max_tokens,
	    .temperature = (float)s.temperature,
	    .top_p = (float)s.top_p,
	    .seed = s.seed,
	    .flags = s.ignore_eos ? RS_GENERATE_IGNORE_EOS : 0,
	    .prompt = chat_ids,
	    .prompt_len = chat_ids ? (uint32_t)prompt_tokens : 0,
	};
	struct bridge_request *req;
	ret = upstream_submit(hr->up, &params, chat_ids ? NULL : prompt, prompt_len, &req);
	if (ret < 0) {
		answer = send_upstream_error(connection, ret);
		goto out;
	}
	hr->chat = chat;
	hr->include_usage = s.include_usage;
	new_id(hr, chat ? "chatcmpl-" : "cmpl-");
	hr->generating = true;
	ret = generation_start(&hr->gen, req, max_tokens, (uint32_t)prompt_tokens, s.stops,
			       s.n_stops);
	if (ret < 0) {
		answer = send_upstream_error(connection, ret);
		goto out;
	}

	if (s.stream) {
		/* Wait for the first token or the end before the 200 goes out: a request that
		 * ringserved refuses (the tenant's max_inflight: 429; a stopped daemon: 503)
		 * gets its status, as a plain request does. */
		ret = generation_advance(&hr->gen, hr->client_fd);
		if (ret == -ECONNABORTED) {
			count_client_gone(hr);
			answer = MHD_NO;
			goto out;
		}
		if (ret < 0 || hr->gen.error) {
			answer = send_upstream_error(connection, ret < 0 ? ret : hr->gen.error);
			goto out;
		}
		struct MHD_Response *response = MHD_create_response_from_callback(
		    MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_reader, hr, stream_free);
		if (!response)
			goto out;
		__atomic_add_fetch(&hr->refs, 1, __ATOMIC_RELAXED);
		MHD_add_response_header(response, "Content-Type", "text/event-stream");
		MHD_add_response_header(response, "Cache-Control", "no-cache");
		answer = MHD_queue_response(connection, 200, response);
		MHD_destroy_response(response);
		goto out;
	}

	while (!hr->gen.finished) {
		ret = generation_advance(&hr->gen, hr->client_fd);
		if (ret == -ECONNABORTED) {
			count_client_gone(hr);
			answer = MHD_NO; /* close the connection; the request is cancelled */
			goto out;
		}
		if (ret < 0) {
			hr->gen.error = ret;
			break;
		}
	}
	if (hr->gen.error) {
		answer = send_upstream_error(connection, hr->gen.error);
		goto out;
	}
	size_t len;
	generation_take(&hr->gen, &len);
	json_t *choices =
	    json_pack("[o]", choice_json(hr, hr->gen.text ? hr->gen.text : "", hr->gen.text_len,
					 hr->gen.finish_reason, false));
	json_t *body = envelope(hr, false, choices);
	json_object_set_new(body, "usage", usage_json(&hr->gen));
	answer = send_json(connection, 200, body);
out:
	json_decref(root);
	free(prompt);
	free(chat_ids);
	chat_messages_free(&chat_messages);
	return answer;
}

static enum MHD_Result handle_models(struct MHD_Connection *connection, const char *id)
{
	json_t *model = json_pack("{s:s, s:s, s:i, s:s}", "id", config->model_id, "object", "model",
				  "created", 0, "owned_by", "ringserve");
	if (id) {
		if (strcmp(id, config->model_id) == 0)
			return send_json(connection, 200, model);
		json_decref(model);
		char message[256];
		snprintf(message, sizeof(message), "The model '%.100s' does not exist", id);
		return send_error(connection, 404, message, "invalid_request_error", "model",
				  "model_not_found");
	}
	return send_json(connection, 200,
			 json_pack("{s:s, s:[o]}", "object", "list", "data", model));
}

static enum MHD_Result handle_stats(struct MHD_Connection *connection)
{
	struct bridge_counters c;
	__atomic_load(&bridge_counters.requests_total, &c.requests_total, __ATOMIC_RELAXED);
	__atomic_load(&bridge_counters.requests_active, &c.requests_active, __ATOMIC_RELAXED);
	__atomic_load(&bridge_counters.cancels, &c.cancels, __ATOMIC_RELAXED);
	__atomic_load(&bridge_counters.client_gone, &c.client_gone, __ATOMIC_RELAXED);
	__atomic_load(&bridge_counters.upstream_deaths, &c.upstream_deaths, __ATOMIC_RELAXED);
	__atomic_load(&bridge_counters.upstream_connects, &c.upstream_connects, __ATOMIC_RELAXED);
	return send_json(connection, 200,
			 json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "requests_total",
				   (json_int_t)c.requests_total, "requests_active",
				   (json_int_t)c.requests_active, "cancels", (json_int_t)c.cancels,
				   "client_gone", (json_int_t)c.client_gone, "upstream_deaths",
				   (json_int_t)c.upstream_deaths, "upstream_connects",
				   (json_int_t)c.upstream_connects));
}

/* The tenant of the request's "Authorization: Bearer KEY", or NULL. */
static struct tenant_link *authorize(struct MHD_Connection *connection)
{
	const char *auth =
	    MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
		return NULL;
	auth += 7;
	while (*auth == ' ')
		auth++;
	return bridge_config_find_key(config, auth);
}

static enum MHD_Result route(struct MHD_Connection *connection, struct http_request *hr,
			     const char *url, const char *method)
{
	bool post = strcmp(method, "POST") == 0, get = strcmp(method, "GET") == 0;
	if (strcmp(url, "/v1/completions") == 0 || strcmp(url, "/v1/chat/completions") == 0) {
		if (!post)
			return send_error(connection, 405, "use POST", "invalid_request_error",
					  NULL, "method_not_allowed");
		return handle_generate(connection, hr, strcmp(url, "/v1/chat/completions") == 0);
	}
	if (strcmp(url, "/v1/models") == 0 || strncmp(url, "/v1/models/", 11) == 0) {
		if (!get)
			return send_error(connection, 405, "use GET", "invalid_request_error", NULL,
					  "method_not_allowed");
		return handle_models(connection, url[10] == '/' ? url + 11 : NULL);
	}
	if (strcmp(url, "/ringserve/stats") == 0 && get)
		return handle_stats(connection);
	char message[200];
	snprintf(message, sizeof(message), "Unknown request URL: %s %.120s", method, url);
	return send_error(connection, 404, message, "invalid_request_error", NULL, "unknown_url");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **request_state)
{
	struct http_request *hr = *request_state;
	if (!hr) {
		/* The first call: headers only. Refuse early what needs no body. */
		hr = calloc(1, sizeof(*hr));
		if (!hr)
			return MHD_NO;
		hr->refs = 1;
		*request_state = hr;
		const union MHD_ConnectionInfo *info =
		    MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
		hr->client_fd = info ? info->connect_fd : -1;
		hr->link = authorize(connection);
		if (!hr->link) {
			hr->answered = true;
			return send_error(connection, 401,
					  "Incorrect API key provided (Authorization: Bearer KEY)",
					  "invalid_request_error", NULL, "invalid_api_key");
		}
		const char *length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
								 MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (length && strtoull(length, NULL, 10) > config->max_body_bytes) {
			hr->answered = true;
			char message[160];
			snprintf(message, sizeof(message),
				 "the request body is over the limit of %zu bytes",
				 config->max_body_bytes);
			return send_error(connection, 413, message, "invalid_request_error", NULL,
					  "request_too_large");
		}
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		if (!hr->answered && !hr->body_too_large) {
			if (hr->body_len + *upload_data_size > config->max_body_bytes) {
				hr->body_too_large = true;
			} else {
				char *grown = realloc(hr->body, hr->body_len + *upload_data_size);
				if (!grown)
					return MHD_NO;
				hr->body = grown;
				memcpy(hr->body + hr->body_len, upload_data, *upload_data_size);
				hr->body_len += *upload_data_size;
			}
		}
		*upload_data_size = 0; /* consumed (or dropped) */
		return MHD_YES;
	}
	if (hr->answered)
		return MHD_YES;
	hr->answered = true;
	if (hr->body_too_large) {
		char message[160];
		snprintf(message, sizeof(message),
			 "the request body is over the limit of %zu bytes", config->max_body_bytes);
		return send_error(connection, 413, message, "invalid_request_error", NULL,
				  "request_too_large");
	}
	return route(connection, hr, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **request_state,
			 enum MHD_RequestTerminationCode code)
{
	struct http_request *hr = *request_state;
	if (!hr)
		return;
	*request_state = NULL;
	/* A stream whose client hung up between two waits on its socket ends here, with
	 * the write's error, and not in a wait. */
	if (hr->generating && !hr->stream_over && code != MHD_REQUEST_TERMINATED_COMPLETED_OK &&
	    code != MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN)
		count_client_gone(hr);
	http_request_put(hr);
}

struct MHD_Daemon *http_start(const struct bridge_config *bridge_config, unsigned *port_out)
{
	config = bridge_config;
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(config->listen_port)};
	inet_pton(AF_INET, config->listen_host, &addr.sin_addr);
	struct MHD_Daemon *daemon = MHD_start_daemon(
	    MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
		MHD_USE_ERROR_LOG,
	    0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &addr,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_CONNECTION_LIMIT,
	    (unsigned)512, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_END);
	if (!daemon) {
		fprintf(stderr, "ringserve-openai: cannot listen on %s:%u\n", config->listen_host,
			config->listen_port);
		return NULL;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
	*port_out = info ? info->port : config->listen_port;
	return daemon;
}
