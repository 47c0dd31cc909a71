/* Text in and out: tokenizing with the vocabulary the daemon shares, and the incremental
 * detokenizer that only ever hands out whole UTF-8 characters. The tokenizer itself is the
 * engine's (kernels/model/tokenizer.c, which needs nothing but libc), linked into the
 * library; the daemon keeps seeing token ids only. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "client-lib/connection.h"
#include "kernels/model/tokenizer.h"
#include "shm/segment.h"

_Static_assert(RS_DETOK_MAX_OUTPUT(1) == 3 * (RS_TOKENIZER_MAX_PIECE + 3),
	       "RS_DETOK_MAX_OUTPUT follows the tokenizer's longest piece");

/* Longest text rs_tokenize takes: its worst-case id count (3 * len + 5) fits an int. */
#define MAX_TEXT_BYTES (512u << 20)

/* U+FFFD REPLACEMENT CHARACTER, for bytes that are not (or did not become) UTF-8. */
static const char replacement_utf8[3] = {'\xef', '\xbf', '\xbd'};

void rs_conn_free_text(struct rs_connection *conn)
{
	rs_special_tokens_free(&conn->specials);
	conn->specials_built = false;
	rs_tokenizer_free(conn->tokenizer);
	conn->tokenizer = NULL;
	conn->tokenizer_status = 0;
}

/* The connection's tokenizer, built from the shared vocabulary on first use (the build
 * copies and checks everything: the segment is the daemon's, not ours). Returns 0 and
 * *out, or -ENOTSUP, -EPROTO, -ENOMEM (not remembered: a later call tries again). */
static int conn_tokenizer(struct rs_connection *conn, const struct rs_tokenizer **out)
{
	if (conn->tokenizer_status == 0) {
		const struct rs_shared_header *model = conn->model;
		/* The header's copy in our mapping could change under us: read each once. */
		uint64_t bytes = model->vocab_size_bytes, offset = model->vocab_offset;
		uint32_t vocab_size = model->vocab_size;
		struct rs_tokenizer *tok = NULL;
		int ret = -ENOTSUP;
		if (bytes) {
			ret = -EPROTO;
			if (offset <= conn->model_size && bytes <= conn->model_size - offset)
				ret = rs_tokenizer_load_serialized(
				    (const unsigned char *)model + offset, (size_t)bytes, &tok);
			if (ret == -EINVAL)
				ret = -EPROTO;
			/* Every id it produces must be one the model takes (as the engine's
			 * loader requires of a model file's tokenizer). */
			if (ret == 0 && rs_tokenizer_vocab_size(tok) > vocab_size) {
				rs_tokenizer_free(tok);
				tok = NULL;
				ret = -EPROTO;
			}
		}
		if (ret == -ENOMEM)
			return ret;
		conn->tokenizer = tok;
		conn->tokenizer_status = ret ? ret : 1;
	}
	if (conn->tokenizer_status < 0)
		return conn->tokenizer_status;
	*out = conn->tokenizer;
	return 0;
}

static int rs_conn_special_tokens(struct rs_connection *conn, const struct rs_tokenizer **tok,
				  const struct rs_special_tokens **specials)
{
	int ret = conn_tokenizer(conn, tok);
	if (ret)
		return ret;
	if (!conn->specials_built) {
		if ((ret = rs_special_tokens_build(*tok, &conn->specials)))
			return ret;
		conn->specials_built = true;
	}
	*specials = &conn->specials;
	return 0;
}

/* The encoder's flags for a text: BOS first when asked and the model expects one. */
static unsigned encode_flags(const struct rs_tokenizer *tok, bool want_bos)
{
	return want_bos && (rs_tokenizer_flags(tok) & RS_TOKENIZER_ADD_BOS) ? RS_ENCODE_BOS : 0;
}

int rs_tokenize(struct rs_connection *conn, const char *text, size_t len, uint32_t *ids,
		uint32_t max_ids, unsigned flags)
{
	if ((!text && len) || (!ids && max_ids) ||
	    (flags & ~(RS_TOKENIZE_BOS | RS_TOKENIZE_SPECIAL)))
		return -EINVAL;
	return rs_conn_tokenize(conn, text, len, NULL, 0, flags, ids, max_ids);
}

int rs_conn_tokenize(struct rs_connection *conn, const char *text, size_t len,
		     const size_t (*literal)[2], size_t n_literal, unsigned flags, uint32_t *ids,
		     uint32_t max_ids)
{
	if (len > MAX_TEXT_BYTES)
		return -E2BIG;
	const struct rs_tokenizer *tok;
	const struct rs_special_tokens *specials = NULL;
	int ret = (flags & RS_TOKENIZE_SPECIAL) ? rs_conn_special_tokens(conn, &tok, &specials)
						: conn_tokenizer(conn, &tok);
	if (ret)
		return ret;
	unsigned encode = encode_flags(tok, flags & RS_TOKENIZE_BOS);
	size_t worst = rs_tokenizer_max_tokens(len);
	if (max_ids >= worst)
		return specials
			   ? rs_encode_special(tok, specials, text ? text : "", len, literal,
					       n_literal, encode, ids, max_ids)
			   : rs_tokenizer_encode(tok, text ? text : "", len, encode, ids, max_ids);
	/* The caller's buffer may be too small: encode into one that cannot be, so that
	 * the count is known (the query) or the answer is -ENOSPC, never a cut text. */
	uint32_t *scratch = malloc(worst * sizeof(*scratch));
	if (!scratch)
		return -ENOMEM;
	ret = specials ? rs_encode_special(tok, specials, text ? text : "", len, literal, n_literal,
					   encode, scratch, worst)
		       : rs_tokenizer_encode(tok, text ? text : "", len, encode, scratch, worst);
	if (ret >= 0 && ids) { /* else: the query, ret is the count */
		if ((uint32_t)ret > max_ids)
			ret = -ENOSPC;
		else
			memcpy(ids, scratch, (size_t)ret * sizeof(*ids));
	}
	free(scratch);
	return ret;
}

int rs_submit_text(struct rs_connection *conn, const struct rs_generate_params *params,
		   const char *text, size_t len)
{
	if ((!text && len) || params->max_new_tokens == 0 ||
	    (params->flags & ~(RS_GENERATE_IGNORE_EOS | RS_GENERATE_NO_BOS)))
		return -EINVAL;
	if (params->max_new_tokens > conn->hdr.max_output_tokens || len > MAX_TEXT_BYTES)
		return -E2BIG;
	const struct rs_tokenizer *tok;
	int ret = conn_tokenizer(conn, &tok);
	if (ret)
		return ret;
	int slot = rs_conn_take_slot(conn);
	if (slot < 0)
		return slot;
	/* Straight into the slot's prompt area: it is ours until the submission publishes
	 * it, and the daemon copies it out before it checks it. */
	uint32_t *prompt = rs_segment_slot_prompt(conn->segment, &conn->hdr, (uint32_t)slot);
	unsigned encode = encode_flags(tok, !(params->flags & RS_GENERATE_NO_BOS));
	ret = rs_tokenizer_encode(tok, text ? text : "", len, encode, prompt,
				  conn->hdr.max_prompt_tokens);
	if (ret <= 0) {
		rs_conn_return_slot(conn, (uint32_t)slot);
		return ret == -ENOSPC ? -E2BIG : ret == 0 ? -EINVAL : ret;
	}
	return rs_conn_submit_slot(conn, (uint32_t)slot, params, (uint32_t)ret);
}

/* --- the incremental detokenizer --------------------------------------------------------- */

/* Where decoded text goes; full means the caller's buffer is too small. */
struct text_sink {
	char *out;
	size_t size, used;
	bool full;
};

static void sink_put(struct text_sink *sink, const void *bytes, size_t n)
{
	if (sink->full || n > sink->size - sink->used) {
		sink->full = true;
		return;
	}
	memcpy(sink->out + sink->used, bytes, n);
	sink->used += n;
}

/* Bytes of a UTF-8 character starting with lead byte b, or 0 when b cannot start one
 * (a continuation byte, C0/C1 overlong leads, F5..FF beyond U+10FFFF). */
static uint32_t utf8_expected_len(unsigned char b)
{
	if (b < 0x80)
		return 1;
	if (b >= 0xc2 && b <= 0xdf)
		return 2;
	if (b >= 0xe0 && b <= 0xef)
		return 3;
	if (b >= 0xf0 && b <= 0xf4)
		return 4;
	return 0;
}

/* Whether b may follow the bytes held so far (lead first; Unicode's table of
 * well-formed sequences: no overlongs, no surrogates, nothing above U+10FFFF). */
static bool utf8_continues(const unsigned char *held, uint32_t held_len, unsigned char b)
{
	unsigned char lo = 0x80, hi = 0xbf;
	if (held_len == 1) {
		switch (held[0]) {
		case 0xe0:
			lo = 0xa0;
			break;
		case 0xed:
			hi = 0x9f;
			break;
		case 0xf0:
			lo = 0x90;
			break;
		case 0xf4:
			hi = 0x8f;
			break;
		default:
			break;
		}
	}
	return b >= lo && b <= hi;
}

/* Push one byte through the UTF-8 state (held bytes of an incomplete character). A
 * complete character goes to the sink, an impossible sequence becomes one U+FFFD (the
 * maximal subpart held so far) and the byte is looked at again as a new start. The
 * decision depends only on the bytes, never on where a call ended. */
static void utf8_push(unsigned char *held, uint32_t *held_len, unsigned char b,
		      struct text_sink *sink)
{
	if (*held_len) {
		if (utf8_continues(held, *held_len, b)) {
			held[(*held_len)++] = b;
			if (*held_len == utf8_expected_len(held[0])) {
				sink_put(sink, held, *held_len);
				*held_len = 0;
			}
			return;
		}
		sink_put(sink, replacement_utf8, sizeof(replacement_utf8));
		*held_len = 0;
	}
	uint32_t need = utf8_expected_len(b);
	if (need == 1)
		sink_put(sink, &b, 1);
	else if (need == 0)
		sink_put(sink, replacement_utf8, sizeof(replacement_utf8));
	else
		held[(*held_len)++] = b;
}

int rs_detok_init(struct rs_connection *conn, struct rs_detok *detok, int request)
{
	int32_t prev = -1;
	if (request != RS_DETOK_START) {
		if (request < 0 || (uint32_t)request >= conn->hdr.slot_count ||
		    conn->slot_state[request] == RS_SLOT_FREE)
			return -EINVAL;
		prev = (int32_t)conn->slot_last_prompt[request];
	}
	const struct rs_tokenizer *tok;
	int ret = conn_tokenizer(conn, &tok);
	if (ret)
		return ret;
	*detok = (struct rs_detok){.vocab = tok, .prev = prev};
	return 0;
}

/* Checks common to feed and flush; the sink covers out, at most INT_MAX bytes. */
static int detok_begin(const struct rs_detok *detok, char *out, size_t out_size,
		       struct text_sink *sink)
{
	if (!detok->vocab || detok->pending_len >= sizeof(detok->pending) || (!out && out_size))
		return -EINVAL;
	*sink = (struct text_sink){.out = out, .size = out_size < INT_MAX ? out_size : INT_MAX};
	return 0;
}

int rs_detok_feed(struct rs_detok *detok, const uint32_t *ids, uint32_t n, char *out,
		  size_t out_size)
{
	struct text_sink sink;
	int ret = detok_begin(detok, out, out_size, &sink);
	if (ret)
		return ret;
	if (!ids && n)
		return -EINVAL;
	const struct rs_tokenizer *tok = detok->vocab;
	/* Work on a copy of the state: a call that fails leaves the detokenizer as it was. */
	unsigned char held[sizeof(detok->pending)];
	uint32_t held_len = detok->pending_len;
	int32_t prev = detok->prev;
	memcpy(held, detok->pending, sizeof(held));
	char piece[RS_TOKENIZER_MAX_PIECE + 1];
	for (uint32_t i = 0; i < n; i++) {
		if (ids[i] >= rs_tokenizer_vocab_size(tok))
			return -ERANGE;
		/* The engine's decoder, token by token, as ringserve-generate prints: the
		 * previous token decides about the dummy-prefix space. */
		int len = rs_tokenizer_decode_token(tok, prev, ids[i], piece, sizeof(piece));
		if (len < 0)
			return len == -EINVAL ? -ERANGE : len;
		for (int k = 0; k < len && !sink.full; k++)
			utf8_push(held, &held_len, (unsigned char)piece[k], &sink);
		if (sink.full)
			return -ENOSPC;
		prev = (int32_t)ids[i];
	}
	memcpy(detok->pending, held, sizeof(held));
	detok->pending_len = held_len;
	detok->prev = prev;
	return (int)sink.used;
}

int rs_detok_flush(struct rs_detok *detok, char *out, size_t out_size)
{
	struct text_sink sink;
	int ret = detok_begin(detok, out, out_size, &sink);
	if (ret)
		return ret;
	if (detok->pending_len)
		sink_put(&sink, replacement_utf8, sizeof(replacement_utf8));
	if (sink.full)
		return -ENOSPC;
	detok->pending_len = 0;
	return (int)sink.used;
}
