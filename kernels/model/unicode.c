/* Unicode class lookup (a binary search over the generated runs) and UTF-8 coding. */
#include "kernels/model/unicode.h"

uint32_t rs_unicode_flags(uint32_t cp)
{
	if (cp < 0x80) {
		/* ASCII, the common case, without the search. */
		if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
			return RS_UNICODE_LETTER;
		if (cp >= '0' && cp <= '9')
			return RS_UNICODE_NUMBER;
		if (cp == ' ' || (cp >= 0x09 && cp <= 0x0d))
			return RS_UNICODE_SPACE;
		if (cp < 0x20 || cp == 0x7f)
			return 0;
		/* $ + < = > ^ ` | ~ are symbols, the rest of the printable ASCII punctuation */
		switch (cp) {
		case '$':
		case '+':
		case '<':
		case '=':
		case '>':
		case '^':
		case '`':
		case '|':
		case '~':
			return RS_UNICODE_SYMBOL;
		default:
			return RS_UNICODE_PUNCT;
		}
	}
	if (cp > 0x10ffff)
		return 0;
	/* The last run starting at or below cp. */
	uint32_t lo = 0, hi = rs_unicode_n_runs;
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;
		if ((rs_unicode_runs[mid] >> 8) <= cp)
			lo = mid;
		else
			hi = mid;
	}
	return rs_unicode_runs[lo] & 0xffu;
}

uint32_t rs_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
	uint8_t b = s[0];
	uint32_t len, value;
	uint8_t lo = 0x80, hi = 0xbf; /* the second byte's range (Unicode's table 3-7) */
	*cp = RS_UNICODE_INVALID;
	if (b < 0x80) {
		*cp = b;
		return 1;
	}
	if (b >= 0xc2 && b <= 0xdf) {
		len = 2;
		value = b & 0x1fu;
	} else if (b >= 0xe0 && b <= 0xef) {
		len = 3;
		value = b & 0x0fu;
		if (b == 0xe0)
			lo = 0xa0;
		else if (b == 0xed)
			hi = 0x9f;
	} else if (b >= 0xf0 && b <= 0xf4) {
		len = 4;
		value = b & 0x07u;
		if (b == 0xf0)
			lo = 0x90;
		else if (b == 0xf4)
			hi = 0x8f;
	} else {
		return 1;
	}
	if (n < len || s[1] < lo || s[1] > hi)
		return 1;
	for (uint32_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 1;
		value = (value << 6) | (s[i] & 0x3fu);
	}
	*cp = value;
	return len;
}

uint32_t rs_utf8_encode(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}
