/* Chat templates, the library's side (libc only): recognizing a model's Jinja template
 * (GGUF tokenizer.chat_template) as one of the families ringserve formats itself, and
 * formatting a message list the way that template does. The text comes with the spans
 * that hold message content, so that special tokens are parsed in the template's own text
 * only (rs_chat_tokenize), never in what a user wrote. */
#ifndef RS_CLIENT_CHAT_TEMPLATE_H
#define RS_CLIENT_CHAT_TEMPLATE_H

#include <stddef.h>
#include <time.h>

#include "client-lib/ringserve.h"

/* A formatted conversation: text (NUL-terminated, len bytes) and the byte ranges of it
 * that are message content, in order and disjoint. */
struct rs_chat_text {
	char *text;
	size_t len, cap;
	size_t (*content)[2]; /* [start, end) */
	size_t n_content, content_cap;
	int failed; /* a negative errno once an append failed */
};

/* Format messages with template tmpl (enum rs_chat_template) into *out (zeroed by the
 * caller, released with rs_chat_text_free). Returns 0, -EINVAL (a bad template, role or
 * NULL content), -ENOMEM. */
int rs_chat_render(int tmpl, const struct rs_chat_message *messages, size_t n, unsigned flags,
		   struct rs_chat_text *out);

/* rs_chat_render at time now: llama3.2 writes now's local date (rs_chat_render reads the
 * clock once per render; tests pass a fixed time). */
int rs_chat_render_at(int tmpl, const struct rs_chat_message *messages, size_t n, unsigned flags,
		      time_t now, struct rs_chat_text *out);

void rs_chat_text_free(struct rs_chat_text *text);

#endif
