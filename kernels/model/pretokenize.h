/* Pre-tokenizers of byte-level BPE vocabularies: each splits text into the words that BPE
 * then merges within, as the regex its tokenizer.json names would (the regexes are below,
 * each next to its splitter). No regex engine: every splitter is a small hand-written
 * matcher of its one regex, trying the alternatives in order at each position as a
 * backtracking regex engine does (leftmost alternative first, greedy). libc only. */
#ifndef RS_KERNELS_PRETOKENIZE_H
#define RS_KERNELS_PRETOKENIZE_H

#include <stddef.h>
#include <stdint.h>

/* Pre-tokenizers, numbered as they are serialized (never renumber). The regexes are in
 * pretokenize.c, each next to its matcher. */
enum rs_pretokenizer {
	RS_PRETOK_NONE = 0,	      /* no split: the whole text is one word (SentencePiece) */
	RS_PRETOK_GPT2 = 1,	      /* GPT-2, MPT, OLMo, phi-2 */
	RS_PRETOK_LLAMA3 = 2,	      /* Llama 3 ("llama-bpe"), DBRX, Smaug */
	RS_PRETOK_QWEN2 = 3,	      /* Qwen2, StableLM 2: Llama 3's with single digits */
	RS_PRETOK_DIGITS_GPT2 = 4,    /* StarCoder, Refact, SmolLM, Command-R: every digit on its
				       * own, then GPT-2's within the rest */
	RS_PRETOK_QWEN35 = 5,	      /* Qwen3.5: Qwen2's with marks as letters */
	RS_PRETOK_DEEPSEEK_CODER = 6, /* DeepSeek Coder: a sequence of splits (see below) */
	RS_PRETOK_DEEPSEEK_LLM = 7,   /* DeepSeek LLM: a sequence of splits */
	RS_PRETOK_FALCON = 8,	      /* Falcon: a sequence of splits */
	RS_PRETOK_COUNT
};

/* The pre-tokenizer of a GGUF tokenizer.ggml.pre name (name[0..len)), or -1 when it is not
 * one ringserve implements. *ignore_merges says whether the vocabulary takes a word that
 * is a token as it is, before merging (Llama 3's tokenizer.json "ignore_merges"). */
int rs_pretokenizer_from_name(const char *name, size_t len, int *ignore_merges);

/* The tokenizer.ggml.pre name that stands for pre (with or without ignore_merges), or NULL
 * for RS_PRETOK_NONE and unknown values. */
const char *rs_pretokenizer_name(uint32_t pre, int ignore_merges);

/* The length in bytes (>= 1) of the first word of text[0..len) (len >= 1) under pre, for a
 * pre-tokenizer that is one regex (not rs_pretokenize_is_sequence). */
size_t rs_pretokenize_next(enum rs_pretokenizer pre, const uint8_t *text, size_t len);

/* Whether pre is a sequence of splits (each regex splitting the pieces the previous ones
 * left, as Hugging Face's Sequence of Split pre-tokenizers): its words come from
 * rs_pretokenize_split, which sees the whole text at once. */
int rs_pretokenize_is_sequence(enum rs_pretokenizer pre);

/* Mark where the words of text[0..len) start: bit i of starts (len / 8 + 1 bytes, zeroed
 * by the caller) is set when a word starts at byte i (bit 0 always is, for len >= 1). */
void rs_pretokenize_split(enum rs_pretokenizer pre, const uint8_t *text, size_t len,
			  uint8_t *starts);

#endif
