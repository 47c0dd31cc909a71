/* One completion's text as it is generated: token ids in, detokenized text out, with
 * OpenAI's stop sequences matched in the text (across token boundaries: the text that
 * could be the start of a stop sequence is held back until it is known not to be), and
 * the finish reason and usage counts at the end. */
#ifndef RS_OPENAI_GENERATION_H
#define RS_OPENAI_GENERATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tools/ringserve-openai/upstream.h"

#define GENERATION_MAX_STOPS 4 /* OpenAI's limit */

struct generation {
	struct bridge_request *req;
	struct rs_detok detok;
	uint32_t max_tokens;
	uint32_t prompt_tokens;
	uint32_t consumed; /* output tokens decoded so far */
	char *stops[GENERATION_MAX_STOPS];
	size_t n_stops;
	char *text; /* everything decoded (cut at a stop sequence) */
	size_t text_len, text_cap;
	size_t emitted; /* text[0 .. emitted) has been handed out */
	bool finished;
	const char *finish_reason; /* "stop", "length", or NULL before the end */
	int32_t error;		   /* the request's failure (negative errno), 0 if none */
};

/* Start: req is submitted; stops are copied. Returns 0 or a negative errno. */
int generation_start(struct generation *gen, struct bridge_request *req, uint32_t max_tokens,
		     uint32_t prompt_tokens, const char *const *stops, size_t n_stops);

/* Wait for news and take one token of it (or the end): new text becomes available through
 * generation_take, one token's at a time, so that a stream sends each token's text. Returns
 * 0 (progress or the end: check gen->finished), or -ECONNABORTED when client_fd hung up. */
int generation_advance(struct generation *gen, int client_fd);

/* The text not yet handed out that is safe to hand out; *len its length. Marks it out. */
const char *generation_take(struct generation *gen, size_t *len);

/* End the request (cancelled if still running) and free everything. */
void generation_end(struct generation *gen);

/* The longest suffix of text[0 .. len) that is a proper prefix of stop: what must be
 * held back because the next token could complete the stop sequence. */
size_t stop_prefix_overlap(const char *text, size_t len, const char *stop);

#endif
