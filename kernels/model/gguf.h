/* GGUF files (the llama.cpp model format, versions 2 and 3): a reader over bytes already in
 * memory (usually a read-only mapping of the file), the mapping of a Llama model's keys and
 * tensors onto struct rs_model, and a writer.
 *
 * Layout (little-endian): "GGUF", u32 version, u64 tensor count, u64 key/value count; the
 * key/value pairs (string key, u32 type, value); the tensor infos (string name, u32 n_dims,
 * u64 ne[n_dims], u32 type, u64 offset); padding to general.alignment (default 32); the
 * tensor data, each tensor at data_offset + offset. A string is u64 length + bytes, no NUL.
 *
 * The reader treats the file as hostile: every length, count, offset and dimension is
 * checked against the file size with overflow-safe arithmetic before anything is read, so
 * a malformed file gives -EINVAL (or -ENOMEM, -EOVERFLOW) and a message, never a crash.
 * Only F32, F16 and BF16 tensors are accepted. */
#ifndef RS_KERNELS_GGUF_H
#define RS_KERNELS_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/model/model.h"

#define RS_GGUF_MAGIC		  0x46554747u /* "GGUF" read as a little-endian u32 */
#define RS_GGUF_VERSION		  3
#define RS_GGUF_DEFAULT_ALIGNMENT 32
#define RS_GGUF_MAX_DIMS	  4
#define RS_GGUF_MAX_NAME	  64	/* tensor names, as llama.cpp's GGML_MAX_NAME */
#define RS_GGUF_MAX_KEY		  65535 /* key length limit of the spec */
#define RS_GGUF_MAX_TENSORS	  (1u << 20)
#define RS_GGUF_MAX_KV		  (1u << 20)

/* Value types of metadata. */
enum rs_gguf_type {
	RS_GGUF_TYPE_UINT8 = 0,
	RS_GGUF_TYPE_INT8 = 1,
	RS_GGUF_TYPE_UINT16 = 2,
	RS_GGUF_TYPE_INT16 = 3,
	RS_GGUF_TYPE_UINT32 = 4,
	RS_GGUF_TYPE_INT32 = 5,
	RS_GGUF_TYPE_FLOAT32 = 6,
	RS_GGUF_TYPE_BOOL = 7,
	RS_GGUF_TYPE_STRING = 8,
	RS_GGUF_TYPE_ARRAY = 9,
	RS_GGUF_TYPE_UINT64 = 10,
	RS_GGUF_TYPE_INT64 = 11,
	RS_GGUF_TYPE_FLOAT64 = 12,
	RS_GGUF_TYPE_COUNT
};

/* Size in bytes of a fixed-size value type; 0 for STRING, ARRAY and unknown types. */
size_t rs_gguf_value_size(uint32_t type);

/* Tensor element types (ggml_type numbers) that ringserve reads. */
enum rs_gguf_tensor_type {
	RS_GGUF_TENSOR_F32 = 0,
	RS_GGUF_TENSOR_F16 = 1,
	RS_GGUF_TENSOR_BF16 = 30,
	RS_GGUF_TENSOR_Q4_0 = 2,
	RS_GGUF_TENSOR_Q8_0 = 8,
	RS_GGUF_TENSOR_Q4_K = 12,
	RS_GGUF_TENSOR_Q5_K = 13,
	RS_GGUF_TENSOR_Q6_K = 14,
};

/* The one mapping between the two: the rs_dtype of a tensor type (0, or -EINVAL for a
 * type ringserve does not read), and the tensor type of an rs_dtype. */
int rs_gguf_tensor_dtype(uint32_t type, enum rs_dtype *dtype);
uint32_t rs_gguf_tensor_type(enum rs_dtype dtype);

/* A string inside the file: not NUL-terminated. */
struct rs_gguf_str {
	const char *ptr;
	uint64_t len;
};

/* An array value: n elements of elem_type packed at data (bytes long; not aligned). */
struct rs_gguf_array {
	uint32_t elem_type;
	uint64_t n;
	const uint8_t *data;
	uint64_t bytes;
};

struct rs_gguf_kv {
	struct rs_gguf_str key;
	uint32_t type; /* enum rs_gguf_type */
	union {
		uint64_t u; /* UINT8..UINT64 */
		int64_t i;  /* INT8..INT64 */
		double f;   /* FLOAT32, FLOAT64 */
		bool b;	    /* BOOL */
		struct rs_gguf_str str;
		struct rs_gguf_array arr;
	} v;
};

struct rs_gguf_tensor {
	struct rs_gguf_str name;
	uint32_t n_dims;
	uint64_t ne[RS_GGUF_MAX_DIMS]; /* ne[0] is the column count (fastest varying); unused: 1 */
	uint32_t type;		       /* enum rs_gguf_tensor_type */
	uint64_t offset;	       /* from the start of the data section */
	uint64_t n_elements;
	uint64_t nbytes;
	const void *data; /* inside the caller's buffer */
};

struct rs_gguf;

/* Parse the GGUF file held in data[0..size). data must stay valid (and unchanged) while the
 * returned object and anything taken from it is used; nothing is copied.
 * Returns 0 and *out, or -EINVAL (malformed, unsupported version or tensor type: err names
 * the problem), -ENOMEM. */
int rs_gguf_parse(const void *data, size_t size, struct rs_gguf **out, char *err, size_t err_size);

/* Release a parsed file (not the bytes it was parsed from). NULL is allowed. */
void rs_gguf_free(struct rs_gguf *gguf);

uint32_t rs_gguf_version(const struct rs_gguf *gguf);
uint64_t rs_gguf_alignment(const struct rs_gguf *gguf);
uint64_t rs_gguf_data_offset(const struct rs_gguf *gguf);
uint64_t rs_gguf_n_kv(const struct rs_gguf *gguf);
uint64_t rs_gguf_n_tensors(const struct rs_gguf *gguf);

/* Key/value i (0 <= i < rs_gguf_n_kv), or NULL. */
const struct rs_gguf_kv *rs_gguf_kv_at(const struct rs_gguf *gguf, uint64_t i);

/* The key/value named key (a NUL-terminated string), or NULL when absent. */
const struct rs_gguf_kv *rs_gguf_find_kv(const struct rs_gguf *gguf, const char *key);

/* Typed getters. Each returns 0, -ENOENT when the key is absent, -EINVAL when its value has
 * an incompatible type, -ERANGE when it does not fit. Integers of any width and signedness
 * are accepted where they fit; floats accept FLOAT32 and FLOAT64. */
int rs_gguf_get_u32(const struct rs_gguf *gguf, const char *key, uint32_t *out);
int rs_gguf_get_u64(const struct rs_gguf *gguf, const char *key, uint64_t *out);
int rs_gguf_get_f32(const struct rs_gguf *gguf, const char *key, float *out);
int rs_gguf_get_bool(const struct rs_gguf *gguf, const char *key, bool *out);
int rs_gguf_get_string(const struct rs_gguf *gguf, const char *key, struct rs_gguf_str *out);
int rs_gguf_get_array(const struct rs_gguf *gguf, const char *key, struct rs_gguf_array *out);

/* Element i of a numeric array as a double / as an int64 (floats are rejected by the latter).
 * Returns 0, -ERANGE (i out of range, or a uint64 above INT64_MAX), -EINVAL (not numeric). */
int rs_gguf_array_f64(const struct rs_gguf_array *arr, uint64_t i, double *out);
int rs_gguf_array_i64(const struct rs_gguf_array *arr, uint64_t i, int64_t *out);

/* Iterate over a string array: *cursor starts at 0; each call yields the next string.
 * Returns 0, -ENOENT past the end, -EINVAL when arr is not a string array. */
int rs_gguf_array_next_string(const struct rs_gguf_array *arr, uint64_t *cursor,
			      struct rs_gguf_str *out);

/* Tensor i, or NULL. */
const struct rs_gguf_tensor *rs_gguf_tensor_at(const struct rs_gguf *gguf, uint64_t i);

/* The tensor named name (NUL-terminated), or NULL when absent. */
const struct rs_gguf_tensor *rs_gguf_find_tensor(const struct rs_gguf *gguf, const char *name);

/* Name of a ggml tensor type number ("F32", "Q4_0", ...), or "unknown". */
const char *rs_gguf_tensor_type_name(uint32_t type);

/* Fill model's config and weight tensors from a parsed Llama GGUF: general.architecture
 * must be "llama", the llama.* keys give the config, and every tensor's type and shape is
 * checked against it (output.weight absent: tied to token_embd.weight). model->layers is
 * allocated (freed by rs_model_free); tensors point into the parsed bytes; the tokenizer is
 * not touched. Returns 0, -EINVAL (err names the key or tensor), -ENOMEM. */
int rs_gguf_build_model(const struct rs_gguf *gguf, struct rs_model *model, char *err,
			size_t err_size);

/* --- writer ------------------------------------------------------------------------- */

struct rs_gguf_writer;

/* A writer collects metadata and tensors, then writes the file in one go.
 * Returns 0 and *out, or -ENOMEM. */
int rs_gguf_writer_create(struct rs_gguf_writer **out);
void rs_gguf_writer_free(struct rs_gguf_writer *w);

/* Metadata setters; keys and strings are copied. Return 0, -ENOMEM, -EINVAL (bad key). */
int rs_gguf_writer_set_u32(struct rs_gguf_writer *w, const char *key, uint32_t value);
int rs_gguf_writer_set_i32(struct rs_gguf_writer *w, const char *key, int32_t value);
int rs_gguf_writer_set_u64(struct rs_gguf_writer *w, const char *key, uint64_t value);
int rs_gguf_writer_set_f32(struct rs_gguf_writer *w, const char *key, float value);
int rs_gguf_writer_set_bool(struct rs_gguf_writer *w, const char *key, bool value);
int rs_gguf_writer_set_string(struct rs_gguf_writer *w, const char *key, const char *value);
/* A string of len bytes (GGUF strings have a length: it may hold NULs). */
int rs_gguf_writer_set_string_len(struct rs_gguf_writer *w, const char *key, const char *value,
				  uint64_t len);
/* Any fixed-size scalar type (UINT8..FLOAT64 but STRING and ARRAY; BOOL is one byte) from
 * its little-endian bytes at value. */
int rs_gguf_writer_set_value(struct rs_gguf_writer *w, const char *key, uint32_t type,
			     const void *value);
/* An array of n fixed-size values of elem_type (any type but STRING and ARRAY; a BOOL is
 * one byte), packed little-endian at values. */
int rs_gguf_writer_set_array(struct rs_gguf_writer *w, const char *key, uint32_t elem_type,
			     const void *values, uint64_t n);
/* An array of n strings; lens may be NULL (then each is NUL-terminated). */
int rs_gguf_writer_set_string_array(struct rs_gguf_writer *w, const char *key,
				    const char *const *strings, const uint32_t *lens, uint64_t n);

/* Add a tensor; its data is referenced, not copied, until rs_gguf_writer_write. ne[0] is the
 * column count. Returns 0, -EINVAL (bad name/type/shape, duplicate), -ENOMEM. */
int rs_gguf_writer_add_tensor(struct rs_gguf_writer *w, const char *name, uint32_t type,
			      const uint64_t *ne, uint32_t n_dims, const void *data);

/* Set general.alignment (a power of two; default 32). Returns 0 or -EINVAL. */
int rs_gguf_writer_set_alignment(struct rs_gguf_writer *w, uint32_t alignment);

/* Write the file (created or truncated). Returns 0 or a negative errno. */
int rs_gguf_writer_write(struct rs_gguf_writer *w, const char *path);

/* Writes the nbytes of the tensor added with data = tag into buf; 0 or a negative errno. */
typedef int (*rs_gguf_tensor_fill_fn)(void *ctx, const void *tag, void *buf, uint64_t nbytes);

/* rs_gguf_writer_write, except that each tensor's bytes come from fill, called once per
 * tensor in file order as the file is written, with the tensor's data pointer as its tag:
 * one tensor's bytes are in memory at a time, not the model's. */
int rs_gguf_writer_write_filled(struct rs_gguf_writer *w, const char *path,
				rs_gguf_tensor_fill_fn fill, void *ctx);

/* Write model (its tensors in their own dtypes; output.weight omitted when tied) with the
 * llama.* keys and, when tok is not NULL, the tokenizer.ggml.* keys, as a GGUF v3 file.
 * Returns 0 or a negative errno with a message in err. */
struct rs_tokenizer;
int rs_gguf_write_model(const char *path, const struct rs_model *model,
			const struct rs_tokenizer *tok, char *err, size_t err_size);

/* Writes the rows * row bytes of model tensor t (in the model's own layout) into buf. */
typedef int (*rs_model_tensor_fill_fn)(void *ctx, const struct rs_tensor *t, void *buf);

/* rs_gguf_write_model, with each tensor's bytes from fill (called once per tensor, in file
 * order, with a pointer to one of model's tensors) instead of its data, which then only
 * marks presence and tying (a layout model: see rs_model_quantize_layout and
 * rs_model_random_layout). fill NULL: the tensors' data, as rs_gguf_write_model. */
int rs_gguf_write_model_filled(const char *path, const struct rs_model *model,
			       const struct rs_tokenizer *tok, rs_model_tensor_fill_fn fill,
			       void *fill_ctx, char *err, size_t err_size);

#endif
