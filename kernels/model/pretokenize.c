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

/* Sequences of isolating splits: each regex in turn finds all its (leftmost, greedy)
 * matches within the pieces the previous ones left; a match and each stretch between
 * matches become pieces.
 *
 * DeepSeek Coder:  [\r\n]   \s?\p{L}+   \s?\p{P}+   [一-龥ࠀ-一가-퟿]+   \p{N}
 * DeepSeek LLM:    [\r\n]   \s?[A-Za-zµÀ-ÖØ-ö...]+   \s?[!-/:-~！-／：-～‘-‟　-。]+   \s+$
 *                  [一-龥ࠀ-一가-퟿]+   \p{N}+
 * (DeepSeek LLM's letters are the cased letters its tokenizer.json lists, as ranges.) */
struct cp_range {
	uint32_t lo, hi;
};
/* clang-format off */
static const struct cp_range deepseek_letters[] = {
	{ 0x41, 0x5a }, { 0x61, 0x7a }, { 0xb5, 0xb5 }, { 0xc0, 0xd6 }, { 0xd8, 0xf6 },
	{ 0xf8, 0x1ba }, { 0x1bc, 0x1bf }, { 0x1c4, 0x293 }, { 0x295, 0x2af }, { 0x370, 0x373 },
	{ 0x376, 0x377 }, { 0x37b, 0x37d }, { 0x37f, 0x37f }, { 0x386, 0x386 }, { 0x388, 0x38a },
	{ 0x38c, 0x38c }, { 0x38e, 0x3a1 }, { 0x3a3, 0x3f5 }, { 0x3f7, 0x481 }, { 0x48a, 0x52f },
	{ 0x531, 0x556 }, { 0x10a0, 0x10c5 }, { 0x13a0, 0x13f5 }, { 0x13f8, 0x13fd },
	{ 0x1c90, 0x1cba }, { 0x1cbd, 0x1cbf }, { 0x1d00, 0x1d2b }, { 0x1d6b, 0x1d77 },
	{ 0x1d79, 0x1d9a }, { 0x1e00, 0x1f15 }, { 0x1f18, 0x1f1d }, { 0x1f20, 0x1f45 },
	{ 0x1f48, 0x1f4d }, { 0x1f50, 0x1f57 }, { 0x1f59, 0x1f59 }, { 0x1f5b, 0x1f5b },
	{ 0x1f5d, 0x1f5d }, { 0x1f5f, 0x1f7d }, { 0x1f80, 0x1fb4 }, { 0x1fb6, 0x1fbc },
	{ 0x1fbe, 0x1fbe }, { 0x1fc2, 0x1fc4 }, { 0x1fc6, 0x1fcc }, { 0x1fd0, 0x1fd3 },
	{ 0x1fd6, 0x1fdb }, { 0x1fe0, 0x1fec }, { 0x1ff2, 0x1ff4 }, { 0x1ff6, 0x1ffc },
	{ 0x2102, 0x2102 }, { 0x2107, 0x2107 }, { 0x210a, 0x2113 }, { 0x2115, 0x2115 },
	{ 0x2119, 0x211d }, { 0x2124, 0x2124 }, { 0x2126, 0x2126 }, { 0x2128, 0x2128 },
	{ 0x212a, 0x212d }, { 0x212f, 0x2134 }, { 0x2139, 0x2139 }, { 0x213c, 0x213f },
	{ 0x2145, 0x2149 }, { 0x214e, 0x214e }, { 0x2183, 0x2184 }, { 0x2c00, 0x2c7b },
	{ 0x2c7e, 0x2ce4 }, { 0x2ceb, 0x2cee }, { 0x2cf2, 0x2cf3 }, { 0xa640, 0xa66d },
	{ 0xa680, 0xa69b }, { 0xa722, 0xa76f }, { 0xa771, 0xa787 }, { 0xa78b, 0xa78e },
	{ 0xab70, 0xabbf }, { 0xfb00, 0xfb06 }, { 0xfb13, 0xfb17 }, { 0xff21, 0xff3a },
	{ 0xff41, 0xff5a }, { 0x10400, 0x1044f }, { 0x104b0, 0x104d3 }, { 0x104d8, 0x104fb },
	{ 0x10c80, 0x10cb2 }, { 0x10cc0, 0x10cf2 }, { 0x118a0, 0x118df }, { 0x1e900, 0x1e943 },
};
static const struct cp_range deepseek_punct[] = {
	{ 0x21, 0x2f }, { 0x3a, 0x7e }, { 0x2018, 0x201f }, { 0x3000, 0x3002 }, { 0xff01, 0xff0f },
	{ 0xff1a, 0xff5e },
};
/* clang-format on */

/* Whether cp is in one of n ranges sorted by lo and disjoint (a binary search). */
static bool in_ranges(const struct cp_range *r, size_t n, uint32_t cp)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (cp < r[mid].lo)
			hi = mid;
		else if (cp > r[mid].hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

/* What a character is for the sequences' classes: RS_UNICODE_* flags, plus these. */
#define CLASS_CJK	0x100u	/* [一-龥ࠀ-一가-퟿] */
#define CLASS_DS_LETTER 0x200u	/* DeepSeek LLM's letters */
#define CLASS_DS_PUNCT	0x400u	/* DeepSeek LLM's punctuation */
#define CLASS_FALCON	0x1000u /* [\p{P}\$\+<=>\^~\|`] */
/* The classes among want that cp (whose RS_UNICODE_* flags are flags) is in. */
static uint32_t seq_class(uint32_t cp, uint32_t flags, uint32_t want)
{
	/* 一-龥 (U+4E00-9FA5) and ࠀ-一 (U+0800-4E00) make one range; 가-퟿ (U+AC00-D7FF) */
	if ((want & CLASS_CJK) && ((cp >= 0x800 && cp <= 0x9fa5) || (cp >= 0xac00 && cp <= 0xd7ff)))
		flags |= CLASS_CJK;
	if ((want & CLASS_DS_LETTER) &&
	    in_ranges(deepseek_letters, sizeof(deepseek_letters) / sizeof(deepseek_letters[0]), cp))
		flags |= CLASS_DS_LETTER;
	if ((want & CLASS_FALCON) &&
	    ((flags & RS_UNICODE_PUNCT) || (cp < 0x80 && (flags & RS_UNICODE_SYMBOL))))
		flags |= CLASS_FALCON; /* ASCII's symbols are exactly $ + < = > ^ ` | ~ */
	if ((want & CLASS_DS_PUNCT) &&
	    in_ranges(deepseek_punct, sizeof(deepseek_punct) / sizeof(deepseek_punct[0]), cp))
		flags |= CLASS_DS_PUNCT;
	return flags & want;
}

/* End of the run from pos of characters of class want (at most max of them). */
static size_t class_run(const struct cursor *c, size_t pos, uint32_t want, size_t max)
{
	uint32_t cp, flags, n;
	for (size_t count = 0; count < max && (n = peek(c, pos, &cp, &flags)); count++) {
		if (!seq_class(cp, flags, want))
			break;
		pos += n;
	}
	return pos;
}

/* \s?[want]+ at pos: the match's length, or 0. */
static size_t space_then_run(const struct cursor *c, size_t pos, uint32_t want)
{
	uint32_t c0, f0, c1, f1;
	uint32_t n0 = peek(c, pos, &c0, &f0);
	if (seq_class(c0, f0, want))
		return class_run(c, pos, want, SIZE_MAX) - pos;
	uint32_t n1 = peek(c, pos + n0, &c1, &f1);
	if ((f0 & RS_UNICODE_SPACE) && n1 && seq_class(c1, f1, want))
		return class_run(c, pos + n0, want, SIZE_MAX) - pos;
	return 0;
}

/* One stage of a sequence: \s?WANT+ (space_run), WANT+ (run), WANT (one character),
 * \s+$ (trailing), [0-9][0-9][0-9] (three digits), or GPT-2's regex (gpt2 words: its
 * \s+(?!\S) without the \s+ that GPT-2's own ends with makes no difference, since what
 * that \s+ would match is left between matches, a piece of its own just the same). */
enum stage_kind { ONE, RUN, SPACE_RUN, TRAILING, THREE_DIGITS, GPT2_WORDS };
struct stage {
	enum stage_kind kind;
	uint32_t want;
};
#define NEWLINE_CLASS 0x800u /* [\r\n], set by stage_match itself */
static const struct stage deepseek_coder_stages[] = {
    {ONE, NEWLINE_CLASS}, {SPACE_RUN, RS_UNICODE_LETTER}, {SPACE_RUN, RS_UNICODE_PUNCT},
    {RUN, CLASS_CJK},	  {ONE, RS_UNICODE_NUMBER},
};
static const struct stage deepseek_llm_stages[] = {
    {ONE, NEWLINE_CLASS},
    {SPACE_RUN, CLASS_DS_LETTER},
    {SPACE_RUN, CLASS_DS_PUNCT},
    {TRAILING, RS_UNICODE_SPACE},
    {RUN, CLASS_CJK},
    {RUN, RS_UNICODE_NUMBER},
};

static const struct stage falcon_stages[] = {
    {RUN, CLASS_FALCON},
    {GPT2_WORDS, 0},
    {THREE_DIGITS, 0},
};

static size_t next_gpt2(const struct cursor *c);

/* The stage's match at pos of piece c: its length, or 0 and *skip, how far on the next
 * match can start at the earliest. */
static size_t stage_match(const struct stage *st, const struct cursor *c, size_t pos, size_t *skip)
{
	uint32_t cp = 0, flags = 0;
	uint32_t n = peek(c, pos, &cp, &flags);
	*skip = n ? n : 1;
	if (st->kind == ONE) {
		uint32_t cls = seq_class(cp, flags, st->want) |
			       ((cp == '\r' || cp == '\n') ? NEWLINE_CLASS : 0);
		return (cls & st->want) ? n : 0;
	}
	if (st->kind == RUN)
		return class_run(c, pos, st->want, SIZE_MAX) - pos;
	if (st->kind == SPACE_RUN)
		return space_then_run(c, pos, st->want);
	if (st->kind == THREE_DIGITS) {
		for (size_t k = 0; k < 3; k++)
			if (pos + k >= c->len || c->s[pos + k] < '0' || c->s[pos + k] > '9')
				return 0;
		return 3;
	}
	if (st->kind == GPT2_WORDS) {
		struct cursor rest = *c;
		rest.s += pos;
		rest.len -= pos;
		return next_gpt2(&rest);
	}
	/* \s+$: a whitespace run that reaches the piece's end; one that does not cannot
	 * end a match anywhere inside it either. */
	size_t end = class_run(c, pos, RS_UNICODE_SPACE, SIZE_MAX);
	if (end == c->len && end > pos)
		return end - pos;
	if (end > pos)
		*skip = end - pos;
	return 0;
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
	return pre == RS_PRETOK_DEEPSEEK_CODER || pre == RS_PRETOK_DEEPSEEK_LLM ||
	       pre == RS_PRETOK_FALCON;
}

void rs_pretokenize_split(enum rs_pretokenizer pre, const uint8_t *text, size_t len,
			  uint8_t *starts)
{
	const struct stage *stages = NULL;
	size_t n_stages = 0;
	if (pre == RS_PRETOK_DEEPSEEK_CODER) {
		stages = deepseek_coder_stages;
		n_stages = sizeof(deepseek_coder_stages) / sizeof(deepseek_coder_stages[0]);
	} else if (pre == RS_PRETOK_DEEPSEEK_LLM) {
		stages = deepseek_llm_stages;
		n_stages = sizeof(deepseek_llm_stages) / sizeof(deepseek_llm_stages[0]);
	} else if (pre == RS_PRETOK_FALCON) {
		stages = falcon_stages;
		n_stages = sizeof(falcon_stages) / sizeof(falcon_stages[0]);
	}
	if (len == 0)
		return;
	set_bit(starts, 0);
	for (size_t stage = 0; stage < n_stages; stage++) {
		for (size_t start = 0; start < len;) {
			size_t end = start + 1;
			while (end < len && !bit(starts, end))
				end++;
			/* The piece [start, end): split it at this stage's matches. Marking
			 * inside it leaves its own end as the loop found it. */
			struct cursor c = {
			    .s = text + start, .len = end - start, .letter = RS_UNICODE_LETTER};
			for (size_t pos = 0; pos < c.len;) {
				size_t skip, m = stage_match(&stages[stage], &c, pos, &skip);
				if (m) {
					set_bit(starts, start + pos);
					if (pos + m < c.len)
						set_bit(starts, start + pos + m);
					pos += m;
				} else {
					pos += skip;
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
	{ "deepseek-llm", RS_PRETOK_DEEPSEEK_LLM, 0 },
	{ "falcon", RS_PRETOK_FALCON, 0 },
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
