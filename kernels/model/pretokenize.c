/* The pre-tokenizers' splitters: one matcher per regex, written from the regex. */
#include <stdbool.h>
#include <string.h>

#include "kernels/model/pretokenize.h"
#include "kernels/model/unicode.h"

/* The text being split. With digits_split, a number character ends the text: the words
 * of RS_PRETOK_DIGITS_GPT2 never cross a digit, and its regex sees each stretch between
 * digits as a text of its own (end-of-text lookaheads included). */
struct cursor {
	const uint8_t *s;
	size_t len;
	bool digits_split;
	uint32_t letter; /* what counts as a letter: \p{L}, or [\p{L}\p{M}] (Qwen3.5) */
};

/* The character at byte pos: returns its length and sets *cp and *flags, or returns 0 at
 * the end of the text. */
static uint32_t peek(const struct cursor *c, size_t pos, uint32_t *cp, uint32_t *flags)
{
	if (pos >= c->len)
		return 0;
	uint32_t n = rs_utf8_decode(c->s + pos, c->len - pos, cp);
	*flags = rs_unicode_flags(*cp);
	if (c->digits_split && (*flags & RS_UNICODE_NUMBER))
		return 0;
	return n;
}

/* [^\s\p{L}\p{N}] (or [^\s\p{L}\p{M}\p{N}]): anything else, bytes that are no character
 * included. */
static bool is_other(const struct cursor *c, uint32_t flags)
{
	return !(flags & (c->letter | RS_UNICODE_NUMBER | RS_UNICODE_SPACE));
}

/* End of the run of characters from pos of one class: letters, numbers, punctuation or
 * "other" (at most max characters). */
enum run_class { RUN_LETTER, RUN_NUMBER, RUN_PUNCT, RUN_OTHER };
static size_t run_end(const struct cursor *c, size_t pos, enum run_class cls, size_t max)
{
	uint32_t cp, flags, n;
	for (size_t count = 0; count < max && (n = peek(c, pos, &cp, &flags)); count++) {
		bool in = cls == RUN_LETTER   ? (flags & c->letter)
			  : cls == RUN_NUMBER ? (flags & RS_UNICODE_NUMBER)
			  : cls == RUN_PUNCT  ? (flags & RS_UNICODE_PUNCT)
					      : is_other(c, flags);
		if (!in)
			break;
		pos += n;
	}
	return pos;
}

/* 's|'t|'re|'ve|'m|'ll|'d at the start (ASCII letters; any case when fold): the length of
 * the match, or 0. */
static size_t contraction(const struct cursor *c, bool fold)
{
	const uint8_t *s = c->s;
	if (c->len < 2 || s[0] != '\'')
		return 0;
	uint8_t a = s[1], b = c->len >= 3 ? s[2] : 0;
	if (fold) {
		a = (a >= 'A' && a <= 'Z') ? (uint8_t)(a | 0x20) : a;
		b = (b >= 'A' && b <= 'Z') ? (uint8_t)(b | 0x20) : b;
	}
	if (a == 's' || a == 't' || a == 'm' || a == 'd')
		return 2;
	if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
		return 3;
	return 0;
}

/* The whitespace run at the start: its end, the start of its last character, and the end
 * of its last \r or \n (0 when none). */
struct space_run {
	size_t end, last_start, newline_end, count;
};
static struct space_run space_run(const struct cursor *c)
{
	struct space_run r = {0};
	uint32_t cp, flags, n;
	while ((n = peek(c, r.end, &cp, &flags)) && (flags & RS_UNICODE_SPACE)) {
		r.last_start = r.end;
		r.end += n;
		r.count++;
		if (cp == '\r' || cp == '\n')
			r.newline_end = r.end;
	}
	return r;
}

/* \s+(?!\S)|\s+ on a whitespace run: all of it when the text ends there, else all but its
 * last character (which then belongs to what follows), or the single character. */
static size_t trailing_space(const struct cursor *c, const struct space_run *r)
{
	uint32_t cp, flags;
	if (r->count > 1 && peek(c, r->end, &cp, &flags))
		return r->last_start;
	return r->end;
}

/* GPT-2:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t next_gpt2(const struct cursor *c)
{
	uint32_t c0 = 0, f0 = 0, c1 = 0, f1 = 0;
	uint32_t n0 = peek(c, 0, &c0, &f0);
	size_t m = contraction(c, false);
	if (m)
		return m;
	/* " ?" then a letter, number or other run: the space goes with what follows it. */
	size_t p = 0;
	uint32_t f = f0;
	if (c0 == ' ') {
		uint32_t n1 = peek(c, n0, &c1, &f1);
		if (n1 && !(f1 & RS_UNICODE_SPACE)) {
			p = n0;
			f = f1;
		}
	}
	if (f & RS_UNICODE_LETTER)
		return run_end(c, p, RUN_LETTER, SIZE_MAX);
	if (f & RS_UNICODE_NUMBER)
		return run_end(c, p, RUN_NUMBER, SIZE_MAX);
	if (is_other(c, f))
		return run_end(c, p, RUN_OTHER, SIZE_MAX);
	struct space_run r = space_run(c);
	return trailing_space(c, &r);
}

/* Llama 3 (max_digits 3) and Qwen2 (max_digits 1):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *    ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * and Qwen3.5 (max_digits 1, c->letter [\p{L}\p{M}]):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}|
 *    ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * (a mark first is no different: [\p{L}\p{M}]+ takes it as the optional prefix would). */
static size_t next_llama3(const struct cursor *c, size_t max_digits)
{
	uint32_t c0 = 0, f0 = 0, c1 = 0, f1 = 0;
	uint32_t n0 = peek(c, 0, &c0, &f0);
	size_t m = contraction(c, true);
	if (m)
		return m;
	if (f0 & c->letter)
		return run_end(c, 0, RUN_LETTER, SIZE_MAX);
	uint32_t n1 = peek(c, n0, &c1, &f1);
	if (c0 != '\r' && c0 != '\n' && !(f0 & RS_UNICODE_NUMBER) && n1 && (f1 & c->letter))
		return run_end(c, n0, RUN_LETTER, SIZE_MAX);
	if (f0 & RS_UNICODE_NUMBER)
		return run_end(c, 0, RUN_NUMBER, max_digits);
	size_t p = 0;
	uint32_t f = f0;
	if (c0 == ' ') {
		p = n0;
		f = n1 ? f1 : RS_UNICODE_SPACE; /* the text's end is no "other" character */
	}
	if (is_other(c, f)) {
		size_t q = run_end(c, p, RUN_OTHER, SIZE_MAX);
		uint32_t cp, flags, n;
		while ((n = peek(c, q, &cp, &flags)) && (cp == '\r' || cp == '\n'))
			q += n;
		return q;
	}
	struct space_run r = space_run(c);
	if (r.newline_end)
		return r.newline_end;
	return trailing_space(c, &r);
}

/* DeepSeek Coder: five isolating splits in turn, each finding all its (leftmost, greedy)
 * matches within the pieces the previous ones left; a match and each stretch between
 * matches become pieces:
 *   [\r\n]   \s?\p{L}+   \s?\p{P}+   [一-龥ࠀ-一가-퟿]+   \p{N}
 * Returns the length of stage's match at byte pos of the piece c, or 0. */
static size_t match_deepseek_coder(int stage, const struct cursor *c, size_t pos)
{
	uint32_t c0 = 0, f0 = 0, c1 = 0, f1 = 0;
	uint32_t n0 = peek(c, pos, &c0, &f0);
	switch (stage) {
	case 0:
		return (c0 == '\r' || c0 == '\n') ? n0 : 0;
	case 1:
	case 2: {
		enum run_class cls = stage == 1 ? RUN_LETTER : RUN_PUNCT;
		uint32_t want = stage == 1 ? RS_UNICODE_LETTER : RS_UNICODE_PUNCT;
		if (f0 & want)
			return run_end(c, pos, cls, SIZE_MAX) - pos;
		uint32_t n1 = peek(c, pos + n0, &c1, &f1);
		if ((f0 & RS_UNICODE_SPACE) && n1 && (f1 & want))
			return run_end(c, pos + n0, cls, SIZE_MAX) - pos;
		return 0;
	}
	case 3: {
		size_t q = pos;
		uint32_t cp, flags, n;
		/* 一-龥 (U+4E00-9FA5) and ࠀ-一 (U+0800-4E00) make one range; 가-퟿ (U+AC00-D7FF)
		 */
		while ((n = peek(c, q, &cp, &flags)) &&
		       ((cp >= 0x800 && cp <= 0x9fa5) || (cp >= 0xac00 && cp <= 0xd7ff)))
			q += n;
		return q - pos;
	}
	default:
		return (f0 & RS_UNICODE_NUMBER) ? n0 : 0;
	}
}

static bool bit(const uint8_t *bits, size_t i)
{
	return bits[i / 8] & (1u << (i % 8));
}

static void set_bit(uint8_t *bits, size_t i)
{
	bits[i / 8] |= (uint8_t)(1u << (i % 8));
}

int rs_pretokenize_is_sequence(enum rs_pretokenizer pre)
{
	return pre == RS_PRETOK_DEEPSEEK_CODER;
}

void rs_pretokenize_split(enum rs_pretokenizer pre, const uint8_t *text, size_t len,
			  uint8_t *starts)
{
	if (len == 0)
		return;
	set_bit(starts, 0);
	if (pre != RS_PRETOK_DEEPSEEK_CODER)
		return;
	for (int stage = 0; stage < 5; stage++) {
		for (size_t start = 0; start < len;) {
			size_t end = start + 1;
			while (end < len && !bit(starts, end))
				end++;
			/* The piece [start, end): split it at this stage's matches. Marking
			 * inside it leaves its own end as the loop found it. */
			struct cursor c = {
			    .s = text + start, .len = end - start, .letter = RS_UNICODE_LETTER};
			for (size_t pos = 0; pos < c.len;) {
				size_t m = match_deepseek_coder(stage, &c, pos);
				if (m) {
					set_bit(starts, start + pos);
					if (pos + m < c.len)
						set_bit(starts, start + pos + m);
					pos += m;
				} else {
					uint32_t cp;
					pos += rs_utf8_decode(c.s + pos, c.len - pos, &cp);
				}
			}
			start = end;
		}
	}
}

size_t rs_pretokenize_next(enum rs_pretokenizer pre, const uint8_t *text, size_t len)
{
	struct cursor c = {.s = text, .len = len, .letter = RS_UNICODE_LETTER};
	uint32_t cp, flags;
	size_t n;
	switch (pre) {
	case RS_PRETOK_GPT2:
		n = next_gpt2(&c);
		break;
	case RS_PRETOK_LLAMA3:
		n = next_llama3(&c, 3);
		break;
	case RS_PRETOK_QWEN2:
		n = next_llama3(&c, 1);
		break;
	case RS_PRETOK_QWEN35:
		c.letter = RS_UNICODE_LETTER | RS_UNICODE_MARK;
		n = next_llama3(&c, 1);
		break;
	case RS_PRETOK_DIGITS_GPT2:
		c.digits_split = true;
		if (!peek(&c, 0, &cp, &flags)) /* a digit: a word of its own */
			return rs_utf8_decode(text, len, &cp);
		n = next_gpt2(&c);
		break;
	default:
		return len;
	}
	return n ? n : 1; /* every matcher consumes; this only guards the loop that calls */
}

/* tokenizer.ggml.pre names, as llama.cpp's llama-vocab.cpp maps them; only the names whose
 * pre-tokenizer is exactly one of ours and that need nothing else (no added separators,
 * no whitespace escaping). The first name of each (pre-tokenizer, ignore_merges) is the
 * one rs_pretokenizer_name gives. */
static const struct {
	const char *name;
	enum rs_pretokenizer pre;
	int ignore_merges;
} names[] = {
    /* clang-format off */
	{ "llama-bpe", RS_PRETOK_LLAMA3, 1 },
	{ "llama3", RS_PRETOK_LLAMA3, 1 },
	{ "llama-v3", RS_PRETOK_LLAMA3, 1 },
	{ "falcon3", RS_PRETOK_LLAMA3, 1 },
	{ "pixtral", RS_PRETOK_LLAMA3, 1 },
	{ "dbrx", RS_PRETOK_LLAMA3, 0 },
	{ "smaug-bpe", RS_PRETOK_LLAMA3, 0 },
	{ "gpt-2", RS_PRETOK_GPT2, 0 },
	{ "phi-2", RS_PRETOK_GPT2, 0 },
	{ "mpt", RS_PRETOK_GPT2, 0 },
	{ "olmo", RS_PRETOK_GPT2, 0 },
	{ "jais", RS_PRETOK_GPT2, 0 },
	{ "qwen2", RS_PRETOK_QWEN2, 0 },
	{ "deepseek-r1-qwen", RS_PRETOK_QWEN2, 0 },
	{ "stablelm2", RS_PRETOK_QWEN2, 0 },
	{ "qwen35", RS_PRETOK_QWEN35, 0 },
	{ "deepseek-coder", RS_PRETOK_DEEPSEEK_CODER, 0 },
	{ "starcoder", RS_PRETOK_DIGITS_GPT2, 0 },
	{ "refact", RS_PRETOK_DIGITS_GPT2, 0 },
	{ "command-r", RS_PRETOK_DIGITS_GPT2, 0 },
	{ "smollm", RS_PRETOK_DIGITS_GPT2, 0 },
	{ "codeshell", RS_PRETOK_DIGITS_GPT2, 0 },
	{ "exaone", RS_PRETOK_DIGITS_GPT2, 0 },
	{ "minerva-7b", RS_PRETOK_DIGITS_GPT2, 0 },
    /* clang-format on */
};

int rs_pretokenizer_from_name(const char *name, size_t len, int *ignore_merges)
{
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strlen(names[i].name) == len && memcmp(names[i].name, name, len) == 0) {
			*ignore_merges = names[i].ignore_merges;
			return (int)names[i].pre;
		}
	}
	return -1;
}

const char *rs_pretokenizer_name(uint32_t pre, int ignore_merges)
{
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if ((uint32_t)names[i].pre == pre && names[i].ignore_merges == !!ignore_merges)
			return names[i].name;
	return NULL;
}
