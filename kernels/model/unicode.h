/* Unicode classes and UTF-8 decoding for the BPE pre-tokenizers (libc only: the client
 * library carries it with the tokenizer).
 *
 * The classes are those of the pre-tokenizer regexes: \p{L} letters, \p{N} numbers, \s
 * (the White_Space property), plus marks, punctuation and symbols. The table is generated
 * (tools/gen-unicode-table.py, from Python's unicodedata) into unicode_table.c. */
#ifndef RS_KERNELS_UNICODE_H
#define RS_KERNELS_UNICODE_H

#include <stddef.h>
#include <stdint.h>

#define RS_UNICODE_LETTER 0x01u /* \p{L}: Lu Ll Lt Lm Lo */
#define RS_UNICODE_NUMBER 0x02u /* \p{N}: Nd Nl No */
#define RS_UNICODE_SPACE  0x04u /* \s: White_Space */
#define RS_UNICODE_MARK	  0x08u /* \p{M} */
#define RS_UNICODE_PUNCT  0x10u /* \p{P} */
#define RS_UNICODE_SYMBOL 0x20u /* \p{S} */

/* Not a code point: what rs_utf8_decode yields for a byte that starts no valid character. */
#define RS_UNICODE_INVALID 0xffffffffu

extern const char rs_unicode_version[];
extern const uint32_t rs_unicode_runs[];
extern const uint32_t rs_unicode_n_runs;

/* The RS_UNICODE_* flags of code point cp (0 for unassigned, controls, separators that are
 * not white space, and RS_UNICODE_INVALID). */
uint32_t rs_unicode_flags(uint32_t cp);

/* Decode the UTF-8 character at s (n >= 1 bytes left) into *cp and return its length. A
 * byte that does not start a well-formed character (a stray continuation, an overlong
 * form, a surrogate, a truncated sequence, above U+10FFFF) is a character of its own:
 * length 1, *cp = RS_UNICODE_INVALID. */
uint32_t rs_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);

/* Encode code point cp (<= 0x10FFFF) as UTF-8 into out (4 bytes); returns the length. */
uint32_t rs_utf8_encode(uint32_t cp, char *out);

#endif
