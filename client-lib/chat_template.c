/* Chat templates: recognizing a Jinja template as a family, and formatting messages as the
 * family's templates do. Each family's layout below names the template file of llama.cpp's
 * models/templates/ (or the Hugging Face model) it follows; tests/client_chat renders those
 * files with Jinja2 and compares bytes. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client-lib/chat_template.h"

/* Longest text formatted (as rs_tokenize's limit). */
#define MAX_CHAT_BYTES (512u << 20)

static const char *const template_names[] = {
    [RS_CHAT_LLAMA2] = "llama2",
    [RS_CHAT_LLAMA3] = "llama3",
    [RS_CHAT_LLAMA31] = "llama3.1",
    [RS_CHAT_LLAMA32] = "llama3.2",
    [RS_CHAT_CHATML] = "chatml",
    [RS_CHAT_QWEN25] = "qwen2.5",
    [RS_CHAT_QWEN3] = "qwen3",
    [RS_CHAT_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [RS_CHAT_MISTRAL_V7_TEKKEN] = "mistral-v7-tekken",
    [RS_CHAT_GEMMA] = "gemma",
    [RS_CHAT_PHI3] = "phi3",
    [RS_CHAT_MISTRAL_V1] = "mistral-v1",
    [RS_CHAT_MISTRAL_V3] = "mistral-v3",
    [RS_CHAT_MISTRAL_V7] = "mistral-v7",
    [RS_CHAT_MISTRAL_LEGACY] = "mistral-legacy",
};
#define N_TEMPLATES (sizeof(template_names) / sizeof(template_names[0]))

const char *rs_chat_template_name(int tmpl)
{
	return tmpl > 0 && (size_t)tmpl < N_TEMPLATES ? template_names[tmpl] : NULL;
}

int rs_chat_template_by_name(const char *name)
{
	for (size_t i = 1; name && i < N_TEMPLATES; i++)
		if (strcmp(name, template_names[i]) == 0)
			return (int)i;
	return -ENOENT;
}

static bool contains(const char *hay, size_t len, const char *needle)
{
	return memmem(hay, len, needle, strlen(needle)) != NULL;
}

/* Whether the template writes "<think>\n" when it opens the assistant's turn, unless the
 * caller asks for thinking (enable_thinking is true): Qwen3.5, StepFun do, Qwen3 not. */
static bool opens_think_by_default(const char *jinja, size_t len)
{
	static const char opener[] = "<think>\\n' }}"; /* a Jinja literal ending in <think>\n */
	const char *end = jinja + len;
	for (const char *p = jinja; (p = memmem(p, (size_t)(end - p), opener, sizeof(opener) - 1));
	     p++) {
		size_t back = (size_t)(p - jinja) < 80 ? (size_t)(p - jinja) : 80;
		if (!memmem(p - back, back, "enable_thinking is true", 23))
			return true;
	}
	return false;
}

/* The [INST] families (Mistral's, Llama 2). The layouts differ by a space here and there,
 * so each is recognized by the very expressions that write its turns, as llama.cpp's
 * llm_chat_detect_template does for v1/v3/v7, and anything else is refused. */
static int detect_inst(const char *jinja, size_t len)
{
	if (contains(jinja, len, "[SYSTEM_PROMPT]")) {
		/* v7 (Mistral-Large-2411) writes "[SYSTEM_PROMPT] ", tekken no space. */
		if (!contains(jinja, len, "[SYSTEM_PROMPT] "))
			return RS_CHAT_MISTRAL_V7_TEKKEN;
		return contains(jinja, len, "'[INST] ' + message['content'] + '[/INST]'") &&
			       contains(jinja, len, "' ' + message['content'] + eos_token")
			   ? RS_CHAT_MISTRAL_V7
			   : -ENOENT;
	}
	if (contains(jinja, len, "' [INST] ' + system_message")) /* v1: " [INST] " */
		return contains(jinja, len, "' [INST] ' + message['content'] + ' [/INST]'") &&
			       contains(jinja, len, "' ' + message['content'] + eos_token")
			   ? RS_CHAT_MISTRAL_V1
			   : -ENOENT;
	if (contains(jinja, len, "[AVAILABLE_TOOLS]")) {
		/* Tekken writes "[INST]" with no space around it, v3 "[INST] " and trims
		 * the answer. */
		if (contains(jinja, len, "\"[INST]\""))
			return RS_CHAT_MISTRAL_V3_TEKKEN;
		return contains(jinja, len, "\"[INST] \" + message[\"content\"] + \"[/INST]\"") &&
			       contains(jinja, len, "\" \" + message[\"content\"]|trim + eos_token")
			   ? RS_CHAT_MISTRAL_V3
			   : -ENOENT;
	}
	if (contains(jinja, len, "<<SYS>>"))
		return contains(jinja, len, "bos_token + '[INST] '") ? RS_CHAT_LLAMA2 : -ENOENT;
	/* Mistral-7B-Instruct v0.1/v0.2 and Mixtral as first published: no system message
	 * (llama.cpp takes it for its "llama2" without <<SYS>>). */
	if (contains(jinja, len, "'[INST] ' + message['content'] + ' [/INST]'") &&
	    contains(jinja, len, "{{ message['content'] + eos_token}}") &&
	    !contains(jinja, len, "system"))
		return RS_CHAT_MISTRAL_LEGACY;
	return -ENOENT;
}

/* Recognize a family by the marks its templates cannot do without: the special tokens
 * that open a turn, then what tells the variants apart (the text they add themselves). */
int rs_chat_template_detect(const char *jinja, size_t len)
{
	if (!jinja)
		return -EINVAL;
	char name[32];
	/* A template given by name (as llama.cpp also takes); "chatml\0..." is not one. */
	if (len < sizeof(name) && !memchr(jinja, 0, len)) {
		memcpy(name, jinja, len);
		name[len] = '\0';
		int by_name = rs_chat_template_by_name(name);
		if (by_name > 0)
			return by_name;
	}
	if (contains(jinja, len, "<|im_start|>")) {
		/* ChatML's family; Phi-4 (<|im_sep|>) and SmolVLM are other layouts. */
		if (contains(jinja, len, "<|im_sep|>") ||
		    contains(jinja, len, "<end_of_utterance>"))
			return -ENOENT;
		if (contains(jinja, len, "You are Qwen, created by Alibaba Cloud."))
			return RS_CHAT_QWEN25;
		/* Qwen3 drops the reasoning of past turns; templates that open a <think>
		 * block themselves (Qwen3.5, QwQ, SmolLM3, Hermes' tool prompts) are not
		 * chatml. */
		if (opens_think_by_default(jinja, len))
			return -ENOENT;
		if (contains(jinja, len, "last_query_index") &&
		    contains(jinja, len, "reasoning_content"))
			return RS_CHAT_QWEN3;
		if (contains(jinja, len, "<think>") || contains(jinja, len, "<tools>") ||
		    contains(jinja, len, "bos_token"))
			return -ENOENT;
		return RS_CHAT_CHATML;
	}
	if (contains(jinja, len, "<|start_header_id|>") &&
	    contains(jinja, len, "<|end_header_id|>")) {
		if (contains(jinja, len, "Cutting Knowledge Date") &&
		    contains(jinja, len, "Today Date: ") && !contains(jinja, len, "<function="))
			return contains(jinja, len, "strftime_now") ? RS_CHAT_LLAMA32
								    : RS_CHAT_LLAMA31;
		if (contains(jinja, len, "functions") || contains(jinja, len, "<think>"))
			return -ENOENT; /* Llama 3 fine-tunes with prompts of their own */
		return RS_CHAT_LLAMA3;
	}
	if (contains(jinja, len, "[INST]"))
		return detect_inst(jinja, len);
	if (contains(jinja, len, "<start_of_turn>") && contains(jinja, len, "<end_of_turn>"))
		return RS_CHAT_GEMMA;
	if (contains(jinja, len, "<|assistant|>") && contains(jinja, len, "<|end|>") &&
	    contains(jinja, len, "<|user|>") && !contains(jinja, len, "tools"))
		return RS_CHAT_PHI3; /* Phi-3.x; with tools: Phi-4-mini, Apriel */
	return -ENOENT;
}

/* --- the text being built ------------------------------------------------------------ */

void rs_chat_text_free(struct rs_chat_text *t)
{
	free(t->text);
	free(t->content);
	memset(t, 0, sizeof(*t));
}

static void append(struct rs_chat_text *t, const char *s, size_t n)
{
	if (t->failed)
		return;
	if (t->len + n >= MAX_CHAT_BYTES) {
		t->failed = -E2BIG;
		return;
	}
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 256;
		while (cap < t->len + n + 1)
			cap *= 2;
		char *grown = realloc(t->text, cap);
		if (!grown) {
			t->failed = -ENOMEM;
			return;
		}
		t->text = grown;
		t->cap = cap;
	}
	memcpy(t->text + t->len, s, n);
	t->len += n;
	t->text[t->len] = '\0';
}

/* The template's own text: special tokens in it are tokens. */
static void lit(struct rs_chat_text *t, const char *s)
{
	append(t, s, strlen(s));
}

/* Message content: text only, whatever it spells. */
static void content(struct rs_chat_text *t, const char *s, size_t n)
{
	size_t start = t->len;
	append(t, s, n);
	if (t->failed || n == 0)
		return;
	if (t->n_content && t->content[t->n_content - 1][1] == start) { /* adjacent: extend */
		t->content[t->n_content - 1][1] = t->len;
		return;
	}
	if (t->n_content == t->content_cap) {
		size_t cap = t->content_cap ? 2 * t->content_cap : 16;
		size_t(*grown)[2] = realloc(t->content, cap * sizeof(*grown));
		if (!grown) {
			t->failed = -ENOMEM;
			return;
		}
		t->content = grown;
		t->content_cap = cap;
	}
	t->content[t->n_content][0] = start;
	t->content[t->n_content][1] = t->len;
	t->n_content++;
}

/* Python's str.strip() for ASCII whitespace (Jinja's trim, .strip()); what is left of
 * s is s[*start .. *end). */
static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

struct span {
	const char *s;
	size_t n;
};

static struct span whole(const char *s)
{
	return (struct span){s, strlen(s)};
}

static struct span lstrip_chars(struct span x, const char *chars)
{
	while (x.n && strchr(chars, x.s[0]) && x.s[0]) {
		x.s++;
		x.n--;
	}
	return x;
}

static struct span rstrip_chars(struct span x, const char *chars)
{
	while (x.n && x.s[x.n - 1] && strchr(chars, x.s[x.n - 1]))
		x.n--;
	return x;
}

static struct span trim(struct span x)
{
	while (x.n && is_space(x.s[0])) {
		x.s++;
		x.n--;
	}
	while (x.n && is_space(x.s[x.n - 1]))
		x.n--;
	return x;
}

static void content_span(struct rs_chat_text *t, struct span x)
{
	content(t, x.s, x.n);
}

static bool role_is(const struct rs_chat_message *m, const char *role)
{
	return strcmp(m->role, role) == 0;
}

/* --- the families --------------------------------------------------------------------- */

/* Llama 2 chat (Hugging Face meta-llama/Llama-2-7b-chat-hf): a leading system message goes
 * into the first turn in <<SYS>>; each user turn is BOS [INST] content.strip() [/INST],
 * each answer " " + content.strip() + " " + EOS. */
static int render_llama2(struct rs_chat_text *t, const struct rs_chat_message *m, size_t n)
{
	size_t first = 0;
	const char *system = NULL;
	if (n && role_is(&m[0], "system")) {
		system = m[0].content;
		first = 1;
	}
	for (size_t i = first; i < n; i++) {
		if (role_is(&m[i], "user")) {
			lit(t, "<s>[INST] ");
			if (i == first && system) {
				/* strip() applies to the whole "<<SYS>>\n" + system + ... +
				 * content: the user text loses its trailing space only, and
				 * when nothing else is left, the "\n\n" before it too. */
				struct span user = rstrip_chars(whole(m[i].content), " \t\n\r\v\f");
				lit(t, "<<SYS>>\n");
				content(t, system, strlen(system));
				if (user.n) {
					lit(t, "\n<</SYS>>\n\n");
					content_span(t, user);
				} else {
					lit(t, "\n<</SYS>>");
				}
			} else {
				content_span(t, trim(whole(m[i].content)));
			}
			lit(t, " [/INST]");
		} else if (role_is(&m[i], "assistant")) {
			struct span answer = trim(whole(m[i].content));
			if (i == first && system) /* the system text rides on the first message */
				return -EINVAL;
			lit(t, " ");
			content_span(t, answer);
			lit(t, " </s>");
		} else {
			return -EINVAL;
		}
	}
	return 0;
}

static void llama3_turn(struct rs_chat_text *t, const char *role, const char *text)
{
	lit(t, "<|start_header_id|>");
	content(t, role, strlen(role)); /* a role is the caller's text too */
	lit(t, "<|end_header_id|>\n\n");
	content_span(t, trim(whole(text)));
	lit(t, "<|eot_id|>");
}

/* Llama 3.0 (meta-llama/Meta-Llama-3-8B-Instruct): BOS, then per message a header with
 * its role and content | trim. 3.1+ (models/templates/meta-llama-Llama-3.1-8B-Instruct,
 * -3.2-3B-, -3.3-70B-): the system turn always comes first, with the knowledge cutoff
 * and the date (3.1 and 3.3: the template's fixed "26 Jul 2024"; 3.2: strftime_now, the
 * local date of now, read once by the caller of the render). */
static int render_llama3(struct rs_chat_text *t, int tmpl, const struct rs_chat_message *m,
			 size_t n, unsigned flags, time_t now)
{
	size_t first = 0;
	if (tmpl == RS_CHAT_LLAMA3) {
		if (n)
			lit(t, "<|begin_of_text|>");
	} else {
		char date[32] = "26 Jul 2024";
		if (tmpl == RS_CHAT_LLAMA32) {
			struct tm tm;
			static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr",
							   "May", "Jun", "Jul", "Aug",
							   "Sep", "Oct", "Nov", "Dec"};
			if (localtime_r(&now, &tm)) /* "%d %b %Y" in the C locale */
				snprintf(date, sizeof(date), "%02d %s %04d", tm.tm_mday,
					 months[tm.tm_mon], tm.tm_year + 1900);
		}
		lit(t, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
		       "Cutting Knowledge Date: December 2023\nToday Date: ");
		lit(t, date);
		lit(t, "\n\n");
		if (n && role_is(&m[0], "system")) {
			content_span(t, trim(whole(m[0].content)));
			first = 1;
		}
		lit(t, "<|eot_id|>");
	}
	for (size_t i = first; i < n; i++) {
		/* 3.1+ write these under an ipython header, as JSON: not a plain turn. */
		if (tmpl != RS_CHAT_LLAMA3 && (role_is(&m[i], "tool") || role_is(&m[i], "ipython")))
			return -EINVAL;
		llama3_turn(t, m[i].role, m[i].content);
	}
	if (flags & RS_CHAT_ADD_ASSISTANT)
		lit(t, "<|start_header_id|>assistant<|end_header_id|>\n\n");
	return 0;
}

static void chatml_open(struct rs_chat_text *t, const char *role)
{
	lit(t, "<|im_start|>");
	content(t, role, strlen(role));
	lit(t, "\n");
}

/* Qwen3 (models/templates/Qwen-Qwen3-0.6B): an assistant message's "<think>..</think>"
 * is dropped before the last user message; after it, the last one (or one that had
 * reasoning) is written with its reasoning in a <think> block. */
static void qwen3_assistant(struct rs_chat_text *t, const struct rs_chat_message *msg,
			    bool after_last_query, bool last)
{
	struct span answer = whole(msg->content), reasoning = {msg->content, 0};
	const char *end_think = NULL;
	for (const char *p = msg->content; (p = strstr(p, "</think>")); p++)
		end_think = p;
	if (end_think) {
		/* content.split('</think>')[-1].lstrip('\n') */
		answer = lstrip_chars(whole(end_think + strlen("</think>")), "\n");
		/* content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
		struct span before = {msg->content,
				      (size_t)(strstr(msg->content, "</think>") - msg->content)};
		before = rstrip_chars(before, "\n");
		const char *open = NULL;
		for (const char *p = before.s;
		     (p = memmem(p, before.n - (size_t)(p - before.s), "<think>", 7)); p++)
			open = p;
		if (open)
			before = (struct span){open + 7, before.n - (size_t)(open + 7 - before.s)};
		reasoning = lstrip_chars(before, "\n");
	}
	chatml_open(t, "assistant");
	if (after_last_query && (last || reasoning.n)) {
		lit(t, "<think>\n");
		content_span(t, rstrip_chars(lstrip_chars(reasoning, "\n"), "\n"));
		lit(t, "\n</think>\n\n");
		content_span(t, lstrip_chars(answer, "\n"));
	} else {
		content_span(t, answer);
	}
	lit(t, "<|im_end|>\n");
}

/* ChatML (models/templates/Qwen-Qwen2.5-7B-Instruct, Qwen-Qwen3-0.6B; SmolLM2): per
 * message <|im_start|>role\ncontent<|im_end|>\n, content as it is. Qwen2.5 puts its own
 * system message first when there is none. */
static int render_chatml(struct rs_chat_text *t, int tmpl, const struct rs_chat_message *m,
			 size_t n, unsigned flags)
{
	if (tmpl == RS_CHAT_QWEN25 && !(n && role_is(&m[0], "system")))
		lit(t, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
		       "helpful assistant.<|im_end|>\n");
	/* Qwen's templates wrap "tool" in a user turn and write no other role: refused. */
	for (size_t i = 0; i < n && tmpl != RS_CHAT_CHATML; i++)
		if (!role_is(&m[i], "system") && !role_is(&m[i], "user") &&
		    !role_is(&m[i], "assistant"))
			return -EINVAL;
	size_t last_query = n ? n - 1 : 0;
	for (size_t i = n; i-- > 0;)
		if (role_is(&m[i], "user")) {
			last_query = i;
			break;
		}
	for (size_t i = 0; i < n; i++) {
		if (tmpl == RS_CHAT_QWEN3 && role_is(&m[i], "assistant")) {
			qwen3_assistant(t, &m[i], i > last_query, i + 1 == n);
			continue;
		}
		chatml_open(t, m[i].role);
		content(t, m[i].content, strlen(m[i].content));
		lit(t, "<|im_end|>\n");
	}
	if (flags & RS_CHAT_ADD_ASSISTANT)
		lit(t, "<|im_start|>assistant\n");
	return 0;
}

/* Mistral's layouts: BOS, then [INST]user[/INST] and answer + EOS, the spaces around them
 * and where the system message goes depending on the version:
 * v1 (tests/chat/mistralai-Mistral-7B-Instruct-v0.2, Mixtral): " [INST] " user " [/INST]",
 *   " " answer; the system message + "\n\n" in front of the first user message.
 * v3 (tests/chat/mistralai-Mistral-Large-Instruct-2407, Mistral-7B-Instruct-v0.3):
 *   "[INST] " user "[/INST]", " " answer.trim(); the system message + "\n\n" in front
 *   of the last message when that is a user's (else nowhere).
 * v3-tekken (models/templates/mistralai-Mistral-Nemo-Instruct-2407): as v3, no spaces,
 *   the answer untrimmed.
 * v7 (tests/chat/mistralai-Mistral-Large-Instruct-2411): "[INST] " user "[/INST]",
 *   " " answer, a system message is a "[SYSTEM_PROMPT] "..[/SYSTEM_PROMPT] turn of its
 *   own, where it stands. v7-tekken (Mistral-Small-3.2-24B-Instruct-2506, Devstral,
 *   Ministral 3): the same without spaces.
 * legacy (tests/chat/mistralai-Mistral-7B-Instruct-v0.2-legacy, the v0.1/v0.2 first
 *   template): "[INST] " user " [/INST]", answer; it refuses a system message, which,
 *   as llama.cpp does, goes in front of the first user message with "\n". */
struct mistral_layout {
	const char *inst_open, *inst_close, *answer_open;
	bool trim_answer;
	enum { SYSTEM_BEFORE_FIRST, SYSTEM_BEFORE_LAST, SYSTEM_TURN } system_at;
	const char *system_sep;	 /* between system and user text (BEFORE_*) */
	const char *system_open; /* SYSTEM_TURN */
};

static const struct mistral_layout *mistral_layout(int tmpl)
{
	static const struct mistral_layout
	    v1 = {" [INST] ", " [/INST]", " ", false, SYSTEM_BEFORE_FIRST, "\n\n", NULL},
	    v3 = {"[INST] ", "[/INST]", " ", true, SYSTEM_BEFORE_LAST, "\n\n", NULL},
	    v3_tekken = {"[INST]", "[/INST]", "", false, SYSTEM_BEFORE_LAST, "\n\n", NULL},
	    v7 = {"[INST] ", "[/INST]", " ", false, SYSTEM_TURN, NULL, "[SYSTEM_PROMPT] "},
	    v7_tekken = {"[INST]", "[/INST]", "", false, SYSTEM_TURN, NULL, "[SYSTEM_PROMPT]"},
	    legacy = {"[INST] ", " [/INST]", "", false, SYSTEM_BEFORE_FIRST, "\n", NULL};
	switch (tmpl) {
	case RS_CHAT_MISTRAL_V1:
		return &v1;
	case RS_CHAT_MISTRAL_V3:
		return &v3;
	case RS_CHAT_MISTRAL_V3_TEKKEN:
		return &v3_tekken;
	case RS_CHAT_MISTRAL_V7:
		return &v7;
	case RS_CHAT_MISTRAL_V7_TEKKEN:
		return &v7_tekken;
	default:
		return &legacy;
	}
}

static int render_mistral(struct rs_chat_text *t, int tmpl, const struct rs_chat_message *m,
			  size_t n)
{
	const struct mistral_layout *layout = mistral_layout(tmpl);
	size_t first = 0;
	const char *system = NULL;
	if (layout->system_at != SYSTEM_TURN && n && role_is(&m[0], "system")) {
		system = m[0].content;
		first = 1;
	}
	lit(t, "<s>");
	for (size_t i = first; i < n; i++) {
		if (role_is(&m[i], "user")) {
			lit(t, layout->inst_open);
			if (system &&
			    i == (layout->system_at == SYSTEM_BEFORE_FIRST ? first : n - 1)) {
				content(t, system, strlen(system));
				lit(t, layout->system_sep);
			}
			content(t, m[i].content, strlen(m[i].content));
			lit(t, layout->inst_close);
		} else if (role_is(&m[i], "assistant")) {
			/* A system message before the first message has no place there. */
			if (system && i == first && layout->system_at == SYSTEM_BEFORE_FIRST)
				return -EINVAL;
			lit(t, layout->answer_open);
			content_span(t, layout->trim_answer ? trim(whole(m[i].content))
							    : whole(m[i].content));
			lit(t, "</s>");
		} else if (role_is(&m[i], "system") && layout->system_at == SYSTEM_TURN) {
			lit(t, layout->system_open);
			content(t, m[i].content, strlen(m[i].content));
			lit(t, "[/SYSTEM_PROMPT]");
		} else {
			return -EINVAL;
		}
	}
	return 0;
}

/* Gemma (models/templates/google-gemma-2-2b-it): BOS, <start_of_turn>role\n content |
 * trim <end_of_turn>\n, the assistant's role named "model". Its template refuses a system
 * message; like llama.cpp, it goes in front of the first user message. */
static int render_gemma(struct rs_chat_text *t, const struct rs_chat_message *m, size_t n,
			unsigned flags)
{
	size_t first = 0;
	const char *system = NULL;
	if (n && role_is(&m[0], "system")) {
		system = m[0].content;
		first = 1;
	}
	lit(t, "<bos>");
	for (size_t i = first; i < n; i++) {
		bool user = role_is(&m[i], "user");
		if (!user && !role_is(&m[i], "assistant"))
			return -EINVAL;
		if (system && i == first && !user)
			return -EINVAL; /* the system text rides on the first message, a user's */
		lit(t, user ? "<start_of_turn>user\n" : "<start_of_turn>model\n");
		if (system && i == first && user) {
			content_span(t, trim(whole(system)));
			lit(t, "\n\n");
		}
		content_span(t, trim(whole(m[i].content)));
		lit(t, "<end_of_turn>\n");
	}
	if (flags & RS_CHAT_ADD_ASSISTANT)
		lit(t, "<start_of_turn>model\n");
	return 0;
}

/* Phi-3 (models/templates/microsoft-Phi-3.5-mini-instruct): <|role|>\ncontent<|end|>\n,
 * an empty system message left out; without the assistant's turn opened, EOS ends it. */
static int render_phi3(struct rs_chat_text *t, const struct rs_chat_message *m, size_t n,
		       unsigned flags)
{
	for (size_t i = 0; i < n; i++) {
		if (role_is(&m[i], "system")) {
			if (!m[i].content[0])
				continue;
			lit(t, "<|system|>\n");
		} else if (role_is(&m[i], "user")) {
			lit(t, "<|user|>\n");
		} else if (role_is(&m[i], "assistant")) {
			lit(t, "<|assistant|>\n");
		} else {
			return -EINVAL;
		}
		content(t, m[i].content, strlen(m[i].content));
		lit(t, "<|end|>\n");
	}
	lit(t, flags & RS_CHAT_ADD_ASSISTANT ? "<|assistant|>\n" : "<|endoftext|>");
	return 0;
}

int rs_chat_render(int tmpl, const struct rs_chat_message *m, size_t n, unsigned flags,
		   struct rs_chat_text *t)
{
	return rs_chat_render_at(tmpl, m, n, flags, time(NULL), t);
}

int rs_chat_render_at(int tmpl, const struct rs_chat_message *m, size_t n, unsigned flags,
		      time_t now, struct rs_chat_text *t)
{
	if ((!m && n) || (flags & ~RS_CHAT_ADD_ASSISTANT) || !rs_chat_template_name(tmpl))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!m[i].role || !m[i].content)
			return -EINVAL;
	int ret;
	lit(t, ""); /* an empty conversation is an empty text, not NULL */
	switch (tmpl) {
	case RS_CHAT_LLAMA2:
		ret = render_llama2(t, m, n);
		break;
	case RS_CHAT_LLAMA3:
	case RS_CHAT_LLAMA31:
	case RS_CHAT_LLAMA32:
		ret = render_llama3(t, tmpl, m, n, flags, now);
		break;
	case RS_CHAT_CHATML:
	case RS_CHAT_QWEN25:
	case RS_CHAT_QWEN3:
		ret = render_chatml(t, tmpl, m, n, flags);
		break;
	case RS_CHAT_MISTRAL_V1:
	case RS_CHAT_MISTRAL_V3:
	case RS_CHAT_MISTRAL_V3_TEKKEN:
	case RS_CHAT_MISTRAL_V7:
	case RS_CHAT_MISTRAL_V7_TEKKEN:
	case RS_CHAT_MISTRAL_LEGACY:
		ret = render_mistral(t, tmpl, m, n);
		break;
	case RS_CHAT_GEMMA:
		ret = render_gemma(t, m, n, flags);
		break;
	case RS_CHAT_PHI3:
		ret = render_phi3(t, m, n, flags);
		break;
	default:
		ret = -EINVAL;
		break;
	}
	if (!ret)
		ret = t->failed;
	if (ret)
		rs_chat_text_free(t);
	return ret;
}

int rs_chat_format(int tmpl, const struct rs_chat_message *messages, size_t n, unsigned flags,
		   char *out, size_t out_size)
{
	if (!out && out_size)
		return -EINVAL;
	struct rs_chat_text t = {0};
	int ret = rs_chat_render(tmpl, messages, n, flags, &t);
	if (ret)
		return ret;
	if (out_size) {
		size_t copy = t.len < out_size ? t.len : out_size - 1;
		memcpy(out, t.text, copy);
		out[copy] = '\0';
	}
	ret = (int)t.len;
	rs_chat_text_free(&t);
	return ret;
}
