/* The model's tokenizer: two kinds of vocabulary.
 *
 * SentencePiece-style BPE with byte fallback (Llama 1/2, TinyLlama, llama2.c; GGUF
 * tokenizer.ggml.model "llama"). Encoding works as llama.cpp's SPM tokenizer (and, for
 * ordinary text, as llama2.c's run.c):
 *   1. normalize: with RS_TOKENIZER_ADD_SPACE_PREFIX a space is put in front of a non-empty
 *      text (SentencePiece's "dummy prefix"); with RS_TOKENIZER_METASPACE every space then
 *      becomes U+2581 "▁", the character SentencePiece vocabularies (and GGUF files) use.
 *      llama2.c's tokenizer.bin stores plain " " in its pieces, so it is loaded without
 *      RS_TOKENIZER_METASPACE and spaces stay spaces;
 *   2. split into UTF-8 characters (an invalid byte is a character of its own);
 *   3. repeatedly merge the adjacent pair whose concatenation is a vocabulary piece with the
 *      highest score (ties: the leftmost pair);
 *   4. a remaining character that is not a piece becomes its bytes' <0xNN> tokens (byte
 *      fallback), or <unk> when the vocabulary has no byte tokens.
 * Only NORMAL and USER_DEFINED pieces take part in step 3: text can never turn into <s>,
 * </s> or a byte token by spelling it.
 * Decoding maps byte tokens back to their byte, "▁" back to a space (METASPACE), control,
 * unknown and unused tokens to nothing, and drops the dummy-prefix space of the first token
 * of a text (after BOS or at the start of a decoded sequence).
 *
 * Byte-level BPE (GPT-2, Llama 3, Qwen2/3.5, StarCoder, ...; GGUF tokenizer.ggml.model "gpt2"),
 * as Hugging Face's tokenizers library encodes:
 *   1. USER_DEFINED tokens are cut out of the text first, wherever they occur (longest
 *      first, then the lowest id; leftmost occurrences), as added tokens are; CONTROL
 *      tokens never are: text never turns into <|begin_of_text|> by spelling it;
 *   2. the pre-tokenizer (enum rs_pretokenizer, pretokenize.h; GGUF tokenizer.ggml.pre)
 *      splits each remaining stretch into words;
 *   3. a word's bytes become the characters of GPT-2's byte-to-unicode map (a space is "Ġ"),
 *      one token each; with RS_TOKENIZER_IGNORE_MERGES a word that is a token as a whole
 *      is that token; otherwise the adjacent pair with the lowest merge rank is merged
 *      (ties: the leftmost) until no pair of the word is a merge.
 * Decoding maps every character of a NORMAL piece back to its byte, gives USER_DEFINED
 * pieces as they are and CONTROL, UNKNOWN and UNUSED tokens as nothing. A token may end
 * in the middle of a UTF-8 character: the incremental decoder of the client library holds
 * such bytes back (rs_detok_*).
 *
 * The core (this header's functions except the loaders at the end) uses only libc, so the
 * client library can tokenize from the serialized vocabulary the daemon publishes. */
#ifndef RS_KERNELS_TOKENIZER_H
#define RS_KERNELS_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Token types, numbered as GGUF's tokenizer.ggml.token_type (llama_token_type). */
enum rs_token_type {
	RS_TOKEN_UNDEFINED = 0,
	RS_TOKEN_NORMAL = 1,
	RS_TOKEN_UNKNOWN = 2,
	RS_TOKEN_CONTROL = 3,
	RS_TOKEN_USER_DEFINED = 4,
	RS_TOKEN_UNUSED = 5,
	RS_TOKEN_BYTE = 6,
};

#define RS_TOKENIZER_METASPACE	      0x1u	     /* pieces spell a space as U+2581 */
#define RS_METASPACE_UTF8	      "\xe2\x96\x81" /* U+2581 LOWER ONE EIGHTH BLOCK, 3 bytes */
#define RS_TOKENIZER_ADD_SPACE_PREFIX 0x2u	     /* encode prepends a space (dummy prefix) */
#define RS_TOKENIZER_ADD_BOS	      0x4u  /* the model expects BOS first (advice to callers) */
#define RS_TOKENIZER_ADD_EOS	      0x8u  /* the model expects EOS last (advice to callers) */
#define RS_TOKENIZER_IGNORE_MERGES    0x10u /* BPE: a word that is a token is taken whole */
#define RS_TOKENIZER_FLAGS_ALL	      0x1fu

/* Kinds of vocabulary (serialized: never renumber). */
enum rs_tokenizer_kind {
	RS_TOKENIZER_SPM = 0, /* SentencePiece-style: merges by score, byte fallback */
	RS_TOKENIZER_BPE = 1, /* byte-level BPE: pre-tokenizer, merges by rank */
};

#define RS_TOKENIZER_MAX_MERGES (1u << 23)

#define RS_TOKENIZER_MAX_VOCAB (1u << 22)
#define RS_TOKENIZER_MAX_PIECE 4096 /* bytes per piece */

/* encode flags */
#define RS_ENCODE_BOS 0x1u
#define RS_ENCODE_EOS 0x2u

/* A vocabulary to build a tokenizer from (see rs_tokenizer_create). */
struct rs_tokenizer_vocab {
	uint32_t n;		   /* number of tokens; ids are 0..n-1 */
	const char *const *pieces; /* n pieces */
	const uint32_t *lens;	   /* n lengths, or NULL: pieces are NUL-terminated */
	const float *scores;	   /* n merge scores (higher merges first), or NULL: all 0 */
	const uint8_t *types;	   /* n enum rs_token_type, or NULL: derived (see below) */
	int32_t bos, eos, unk;	   /* ids, or -1 when the vocabulary has none */
	uint32_t flags;		   /* RS_TOKENIZER_* */
	/* Byte-level BPE only (kind RS_TOKENIZER_BPE): */
	uint32_t kind;		   /* enum rs_tokenizer_kind; 0 is SentencePiece */
	uint32_t pre;		   /* enum rs_pretokenizer */
	uint32_t n_merges;	   /* merges, in rank order (the first merges first), given */
	const char *const *merges; /* as GGUF spells them, "left right" (lens: merge_lens or
				    * NUL-terminated), or */
	const uint32_t *merge_lens;
	const uint32_t *merge_ids; /* as 2 * n_merges ids: left, right of each */
};

struct rs_tokenizer;

/* Build a tokenizer, copying the vocabulary. Without types, a token is CONTROL when it is
 * bos or eos, UNKNOWN when it is unk, BYTE when its piece is "<0xNN>", NORMAL otherwise.
 * A BYTE token's piece must be "<0xNN>". Equal pieces: the lowest id wins.
 * BPE: both sides of every merge and their concatenation must be pieces of the vocabulary
 * (a later duplicate of a merge is ignored); pre must be a pre-tokenizer ringserve has.
 * Returns 0 and *out, -EINVAL (err names the problem), -ENOMEM. */
int rs_tokenizer_create(const struct rs_tokenizer_vocab *vocab, struct rs_tokenizer **out,
			char *err, size_t err_size);

/* Release a tokenizer. NULL is allowed. */
void rs_tokenizer_free(struct rs_tokenizer *tok);

uint32_t rs_tokenizer_vocab_size(const struct rs_tokenizer *tok);
int32_t rs_tokenizer_bos(const struct rs_tokenizer *tok); /* -1 when none */
int32_t rs_tokenizer_eos(const struct rs_tokenizer *tok); /* -1 when none */
int32_t rs_tokenizer_unk(const struct rs_tokenizer *tok); /* -1 when none */
uint32_t rs_tokenizer_flags(const struct rs_tokenizer *tok);
enum rs_tokenizer_kind rs_tokenizer_kind(const struct rs_tokenizer *tok);
uint32_t rs_tokenizer_pretokenizer(const struct rs_tokenizer *tok); /* enum rs_pretokenizer */
uint32_t rs_tokenizer_n_merges(const struct rs_tokenizer *tok);

/* The two tokens that merge at rank (0 <= rank < rs_tokenizer_n_merges). Returns 0 or
 * -EINVAL. */
int rs_tokenizer_merge(const struct rs_tokenizer *tok, uint32_t rank, uint32_t *left,
		       uint32_t *right);

/* The raw piece of token id (not NUL-terminated; "▁" not replaced), its score and type.
 * Returns 0 or -EINVAL for an id out of range. */
int rs_tokenizer_piece(const struct rs_tokenizer *tok, uint32_t id, const char **piece,
		       size_t *len);
int rs_tokenizer_token_info(const struct rs_tokenizer *tok, uint32_t id, float *score,
			    uint8_t *type);

/* The id of a piece given exactly (any type), or -ENOENT. */
int32_t rs_tokenizer_find(const struct rs_tokenizer *tok, const char *piece, size_t len);

/* Upper bound of the ids rs_tokenizer_encode can produce for text_len bytes: every byte can
 * become a byte token, and a space three of them (U+2581), plus prefix, BOS and EOS (byte-
 * level BPE needs at most one per byte). */
static inline size_t rs_tokenizer_max_tokens(size_t text_len)
{
	return 3 * text_len + 5;
}

/* Encode text[0..len) (any bytes; need not be NUL-terminated) into ids, with BOS first
 * and/or EOS last as flags say (RS_ENCODE_*; ignored when the vocabulary has none).
 * Returns the number of ids, -ENOSPC when more than max_ids are needed, -EILSEQ when a
 * byte cannot be encoded (no byte token and no <unk>), -ENOMEM. */
int rs_tokenizer_encode(const struct rs_tokenizer *tok, const char *text, size_t len,
			unsigned flags, uint32_t *ids, size_t max_ids);

/* Decode token id that follows token prev (-1: id starts the text) into buf as text; the
 * result is NUL-terminated. The dummy-prefix space is dropped after BOS or at the start
 * (SentencePiece; BPE ignores prev). A byte token yields one raw byte, and a BPE token may
 * end inside a character, so a UTF-8 character may span several calls.
 * Returns the number of bytes (without the NUL), -EINVAL (id out of range), -ENOSPC. */
int rs_tokenizer_decode_token(const struct rs_tokenizer *tok, int32_t prev, uint32_t id, char *buf,
			      size_t size);

/* Decode a whole sequence (as if it were a text: its first token starts it) into buf,
 * NUL-terminated. Returns the number of bytes, -EINVAL (an id out of range), -ENOSPC. */
int rs_tokenizer_decode(const struct rs_tokenizer *tok, const uint32_t *ids, size_t n, char *buf,
			size_t size);

/* --- serialized vocabulary (for a read-only shared segment) ----------------------------
 * Layout, little-endian, no pointers: a 48-byte header (magic "RSTK", version, header size,
 * n, flags, bos, eos, unk, blob size, kind, pre-tokenizer, merge count), float scores[n],
 * u32 offsets[n + 1], u8 types[n], zero padding to 4 bytes, the pieces' bytes (piece i is
 * blob[offsets[i] .. offsets[i + 1])), zero padding to 4 bytes, u32 merges[2 * merge
 * count] (left and right token ids, in rank order). */
#define RS_TOKENIZER_SERIAL_MAGIC   0x4b545352u /* "RSTK" */
#define RS_TOKENIZER_SERIAL_VERSION 2u

/* Bytes rs_tokenizer_serialize writes. */
size_t rs_tokenizer_serialized_size(const struct rs_tokenizer *tok);

/* Serialize into buf (size bytes). Returns the bytes written or -ENOSPC. */
int64_t rs_tokenizer_serialize(const struct rs_tokenizer *tok, void *buf, size_t size);

/* Build a tokenizer from a serialized buffer, which is treated as hostile (every field is
 * checked; nothing points into buf afterwards). Returns 0 and *out, -EINVAL, -ENOMEM. */
int rs_tokenizer_load_serialized(const void *buf, size_t size, struct rs_tokenizer **out);

/* --- loaders (tokenizer_io.c; need the GGUF reader) ------------------------------------ */
struct rs_gguf;

/* From a GGUF file's tokenizer.ggml.* keys: model "llama" (tokens, scores, token_type,
 * bos/eos/unknown_token_id, add_space_prefix, add_bos_token, add_eos_token) or "gpt2"
 * (tokens, token_type, merges, pre, the ids and add_bos/eos_token; ids absent: none).
 * Returns 0, -ENOENT when the file has no tokenizer, -EINVAL (unsupported model or
 * pre-tokenizer, or malformed: err says which), -ENOMEM. */
int rs_tokenizer_load_gguf(const struct rs_gguf *gguf, struct rs_tokenizer **out, char *err,
			   size_t err_size);

/* From llama2.c's tokenizer.bin bytes: i32 max_token_length, then per token f32 score,
 * i32 length, bytes. vocab_size tokens are read and the data must end there (0: read tokens
 * until the end). BOS is 1, EOS 2, <unk> 0, as in llama2.c. Returns 0, -EINVAL, -ENOMEM. */
int rs_tokenizer_load_llama2c(const void *data, size_t size, uint32_t vocab_size,
			      struct rs_tokenizer **out, char *err, size_t err_size);

/* Load a tokenizer file: GGUF (by its magic) or llama2.c tokenizer.bin (vocab_size as for
 * rs_tokenizer_load_llama2c). Returns 0 or a negative errno with a message. */
int rs_tokenizer_load_file(const char *path, uint32_t vocab_size, struct rs_tokenizer **out,
			   char *err, size_t err_size);

/* Write tok as a llama2.c tokenizer.bin ("▁" written as " ", as llama2.c's tokenizer.py
 * does). Returns 0 or a negative errno. */
int rs_tokenizer_write_llama2c(const struct rs_tokenizer *tok, const char *path);

/* --- demo vocabulary (vocab_demo.c) ---------------------------------------------------
 * A deterministic vocabulary of n_tokens (>= 259) for generated models: <unk> 0, <s> 1,
 * </s> 2, <0x00>..<0xFF> 3..258, "▁" and printable ASCII, BPE merges learnt from a built-in
 * English text (score -rank), then <unusedN> tokens if the text runs out of pairs.
 * Flags: METASPACE | ADD_SPACE_PREFIX | ADD_BOS. Returns 0, -EINVAL, -ENOMEM. */
int rs_tokenizer_demo(uint32_t n_tokens, struct rs_tokenizer **out, char *err, size_t err_size);

/* A deterministic byte-level BPE vocabulary of n_tokens for generated models, shaped as
 * Llama 3's (pre RS_PRETOK_LLAMA3: <|begin_of_text|> BOS added, <|end_of_text|> EOS,
 * merges ignored for whole words) or Qwen2's (RS_PRETOK_QWEN2: <|endoftext|> BOS and EOS,
 * no BOS added, <|im_start|>, <|im_end|>): the 256 byte characters of GPT-2's map in
 * byte order (id b is byte b), merges learnt from the demo text (words with their leading
 * space "Ġ"), <|reserved_special_token_N|> padding, then the special tokens last.
 * Returns 0, -EINVAL, -ENOMEM. */
int rs_tokenizer_demo_bpe(uint32_t n_tokens, uint32_t pre, struct rs_tokenizer **out, char *err,
			  size_t err_size);

#endif
