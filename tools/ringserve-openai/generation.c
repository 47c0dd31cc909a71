/* Decoding, stop sequences and the finish of one completion (generation.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tools/ringserve-openai/generation.h"

int generation_start(struct generation *gen, struct bridge_request *req, uint32_t max_tokens,
		     uint32_t prompt_tokens, const char *const *stops, size_t n_stops)
{
	memset(gen, 0, sizeof(*gen));
	gen->req = req;
	gen->max_tokens = max_tokens;
	gen->prompt_tokens = prompt_tokens;
	for (size_t i = 0; i < n_stops && i < GENERATION_MAX_STOPS; i++) {
		gen->stops[i] = strdup(stops[i]);
		if (!gen->stops[i])
			return -ENOMEM;
		gen->n_stops++;
	}
	return bridge_request_detok_init(req, &gen->detok);
}

size_t stop_prefix_overlap(const char *text, size_t len, const char *stop)
{
	size_t stop_len = strlen(stop);
	size_t k = stop_len - 1 < len ? stop_len - 1 : len;
	for (; k > 0; k--)
		if (memcmp(text + len - k, stop, k) == 0)
			return k;
	return 0;
}

static int append(struct generation *gen, const char *bytes, size_t n)
{
	if (gen->text_len + n + 1 > gen->text_cap) {
		size_t cap = gen->text_cap ? gen->text_cap : 256;
		while (cap < gen->text_len + n + 1)
			cap *= 2;
		char *grown = realloc(gen->text, cap);
		if (!grown)
			return -ENOMEM;
		gen->text = grown;
		gen->text_cap = cap;
	}
	memcpy(gen->text + gen->text_len, bytes, n);
	gen->text_len += n;
	gen->text[gen->text_len] = '\0';
	return 0;
}

/* Look for a stop sequence in what was appended after old_len (a match may begin up to
 * the longest stop's length before it); cut the text at the earliest one. */
static bool match_stops(struct generation *gen, size_t old_len)
{
	const char *earliest = NULL;
	for (size_t i = 0; i < gen->n_stops; i++) {
		size_t stop_len = strlen(gen->stops[i]);
		size_t from = old_len >= stop_len ? old_len - stop_len + 1 : 0;
		const char *hit =
		    memmem(gen->text + from, gen->text_len - from, gen->stops[i], stop_len);
		if (hit && (!earliest || hit < earliest))
			earliest = hit;
	}
	if (!earliest)
		return false;
	gen->text_len = (size_t)(earliest - gen->text);
	gen->text[gen->text_len] = '\0';
	return true;
}

int generation_advance(struct generation *gen, int client_fd)
{
	if (gen->finished)
		return 0;
	for (;;) {
		const uint32_t *tokens;
		bool done;
		int32_t status;
		uint32_t flags;
		uint32_t count = bridge_request_state(gen->req, &tokens, &done, &status, &flags);
		size_t old_len = gen->text_len;
		/* One token a call: a stream sends each token's text as its own event, and a
		 * stop sequence ends the count of completion tokens where it matched, however
		 * many tokens the daemon wrote before the cancel reached it. */
		if (count > gen->consumed) {
			char buf[RS_DETOK_MAX_OUTPUT(1)];
			int n =
			    rs_detok_feed(&gen->detok, tokens + gen->consumed, 1, buf, sizeof(buf));
			int ret = n >= 0 ? append(gen, buf, (size_t)n) : n;
			if (ret < 0)
				return ret;
			gen->consumed++;
			if (gen->n_stops && match_stops(gen, old_len)) {
				gen->finished = true;
				gen->finish_reason = "stop";
				return 0;
			}
			if (!done || gen->consumed < count)
				return 0;
			old_len = gen->text_len;
		}
		if (done) {
			if (status == 0) {
				char tail[4];
				int n = rs_detok_flush(&gen->detok, tail, sizeof(tail));
				if (n > 0 && append(gen, tail, (size_t)n) < 0)
					return -ENOMEM;
			}
			gen->finished = true;
			if (gen->n_stops && match_stops(gen, old_len))
				gen->finish_reason = "stop";
			else if (status != 0 && status != -ECANCELED)
				gen->error = status;
			else if (flags & RS_COMPLETION_EOS)
				gen->finish_reason = "stop";
			else
				gen->finish_reason = "length";
			return 0;
		}
		int ret = bridge_request_wait(gen->req, client_fd);
		if (ret < 0)
			return ret;
	}
}

const char *generation_take(struct generation *gen, size_t *len)
{
	size_t safe = gen->text_len;
	if (!gen->finished) {
		size_t hold = 0;
		for (size_t i = 0; i < gen->n_stops; i++) {
			size_t k = stop_prefix_overlap(gen->text, gen->text_len, gen->stops[i]);
			if (k > hold)
				hold = k;
		}
		safe -= hold;
	}
	if (safe < gen->emitted)
		safe = gen->emitted;
	const char *out = gen->text ? gen->text + gen->emitted : "";
	*len = safe - gen->emitted;
	gen->emitted = safe;
	return out;
}

void generation_end(struct generation *gen)
{
	if (gen->req)
		bridge_request_end(gen->req);
	gen->req = NULL;
	for (size_t i = 0; i < gen->n_stops; i++)
		free(gen->stops[i]);
	gen->n_stops = 0;
	free(gen->text);
	gen->text = NULL;
}
