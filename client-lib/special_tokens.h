/* Reading special tokens in text (RS_TOKENIZE_SPECIAL, rs_chat_tokenize): where the text
 * spells a control or user-defined token (<|im_start|>, <s>, <|eot_id|>), that token is
 * taken, as llama.cpp's parse_special does; the stretches between are tokenized as text.
 * Ranges marked literal (chat message content) are never read for special tokens. Works
 * on the engine's tokenizer through its public calls (libc only). */
#ifndef RS_CLIENT_SPECIAL_TOKENS_H
#define RS_CLIENT_SPECIAL_TOKENS_H

#include <stddef.h>
#include <stdint.h>

struct rs_tokenizer;

/* The special tokens of a vocabulary, longest first (then the lowest id). */
struct rs_special_tokens {
	uint32_t *ids;
	uint32_t n;
	uint8_t first_byte[32]; /* bit b: some special token starts with byte b */
};

/* Collect the CONTROL, USER_DEFINED and UNKNOWN tokens with a non-empty piece.
 * Returns 0 or -ENOMEM. */
int rs_special_tokens_build(const struct rs_tokenizer *tok, struct rs_special_tokens *out);

void rs_special_tokens_free(struct rs_special_tokens *sp);

/* Encode text[0 .. len) as rs_tokenizer_encode does (encode_flags RS_ENCODE_*), but a
 * special token's text outside the literal ranges ([start, end) pairs, sorted, disjoint)
 * becomes that token: the longest one at the leftmost place, then on after it. Each
 * stretch between them is encoded on its own (SentencePiece vocabularies give each its
 * dummy-prefix space, as llama.cpp does after a special token). Returns the number of
 * ids, or -ENOSPC, -EILSEQ, -ENOMEM as rs_tokenizer_encode. */
int rs_encode_special(const struct rs_tokenizer *tok, const struct rs_special_tokens *sp,
		      const char *text, size_t len, const size_t (*literal)[2], size_t n_literal,
		      unsigned encode_flags, uint32_t *ids, size_t max_ids);

#endif
