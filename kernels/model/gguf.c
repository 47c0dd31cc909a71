/* GGUF reader: parses and validates a whole file held in memory, then answers look-ups.
 * Everything read from the file goes through struct cursor, whose reads are bounds-checked,
 * so no later code needs to trust a length from the file. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/errmsg.h"
#include "kernels/model/gguf.h"
#include "kernels/model/quant.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "GGUF reader assumes little-endian");

struct rs_gguf {
	const uint8_t *base;
	size_t size;
	uint32_t version;
	uint64_t alignment;
	uint64_t data_offset;
	uint64_t n_kv;
	struct rs_gguf_kv *kvs;
	uint64_t n_tensors;
	struct rs_gguf_tensor *tensors;
	/* Open-addressing hash indexes: slot holds index + 1, 0 is empty. */
	uint32_t *kv_index;
	uint64_t kv_index_mask;
	uint32_t *tensor_index;
	uint64_t tensor_index_mask;
};

struct cursor {
	const uint8_t *base;
	size_t size;
	size_t pos;
	char *err;
	size_t err_size;
};

static const char *const type_names[] = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",	"float32",
    "bool",  "string", "array",	 "uint64", "int64",  "float64",
};

size_t rs_gguf_value_size(uint32_t type)
{
	switch (type) {
	case RS_GGUF_TYPE_UINT8:
	case RS_GGUF_TYPE_INT8:
	case RS_GGUF_TYPE_BOOL:
		return 1;
	case RS_GGUF_TYPE_UINT16:
	case RS_GGUF_TYPE_INT16:
		return 2;
	case RS_GGUF_TYPE_UINT32:
	case RS_GGUF_TYPE_INT32:
	case RS_GGUF_TYPE_FLOAT32:
		return 4;
	case RS_GGUF_TYPE_UINT64:
	case RS_GGUF_TYPE_INT64:
	case RS_GGUF_TYPE_FLOAT64:
		return 8;
	}
	return 0;
}

const char *rs_gguf_tensor_type_name(uint32_t type)
{
	/* ggml_type numbering; the gaps (4, 5, 31-33) are removed types. */
	static const char *const names[] = {
	    [0] = "F32",     [1] = "F16",      [2] = "Q4_0",   [3] = "Q4_1",	[6] = "Q5_0",
	    [7] = "Q5_1",    [8] = "Q8_0",     [9] = "Q8_1",   [10] = "Q2_K",	[11] = "Q3_K",
	    [12] = "Q4_K",   [13] = "Q5_K",    [14] = "Q6_K",  [15] = "Q8_K",	[16] = "IQ2_XXS",
	    [17] = "IQ2_XS", [18] = "IQ3_XXS", [19] = "IQ1_S", [20] = "IQ4_NL", [21] = "IQ3_S",
	    [22] = "IQ2_S",  [23] = "IQ4_XS",  [24] = "I8",    [25] = "I16",	[26] = "I32",
	    [27] = "I64",    [28] = "F64",     [29] = "IQ1_M", [30] = "BF16",	[34] = "TQ1_0",
	    [35] = "TQ2_0",
	};
	if (type < sizeof(names) / sizeof(names[0]) && names[type])
		return names[type];
	return "unknown";
}

int rs_gguf_tensor_dtype(uint32_t type, enum rs_dtype *dtype)
{
	switch (type) {
	case RS_GGUF_TENSOR_F32:
		*dtype = RS_DTYPE_F32;
		return 0;
	case RS_GGUF_TENSOR_F16:
		*dtype = RS_DTYPE_F16;
		return 0;
	case RS_GGUF_TENSOR_BF16:
		*dtype = RS_DTYPE_BF16;
		return 0;
	case RS_GGUF_TENSOR_Q8_0:
		*dtype = RS_DTYPE_Q8_0;
		return 0;
	case RS_GGUF_TENSOR_Q4_0:
		*dtype = RS_DTYPE_Q4_0;
		return 0;
	case RS_GGUF_TENSOR_Q4_K:
		*dtype = RS_DTYPE_Q4_K;
		return 0;
	case RS_GGUF_TENSOR_Q5_K:
		*dtype = RS_DTYPE_Q5_K;
		return 0;
	case RS_GGUF_TENSOR_Q6_K:
		*dtype = RS_DTYPE_Q6_K;
		return 0;
	}
	return -EINVAL;
}

uint32_t rs_gguf_tensor_type(enum rs_dtype dtype)
{
	switch (dtype) {
	case RS_DTYPE_F16:
		return RS_GGUF_TENSOR_F16;
	case RS_DTYPE_BF16:
		return RS_GGUF_TENSOR_BF16;
	case RS_DTYPE_Q8_0:
		return RS_GGUF_TENSOR_Q8_0;
	case RS_DTYPE_Q4_0:
		return RS_GGUF_TENSOR_Q4_0;
	case RS_DTYPE_Q4_K:
		return RS_GGUF_TENSOR_Q4_K;
	case RS_DTYPE_Q5_K:
		return RS_GGUF_TENSOR_Q5_K;
	case RS_DTYPE_Q6_K:
		return RS_GGUF_TENSOR_Q6_K;
	default:
		return RS_GGUF_TENSOR_F32;
	}
}

/* Whether a tensor type is supported. */
static bool tensor_type_known(uint32_t type)
{
	enum rs_dtype dtype;
	return rs_gguf_tensor_dtype(type, &dtype) == 0;
}

/* Bytes left after the cursor. */
static size_t remaining(const struct cursor *c)
{
	return c->size - c->pos;
}

/* Copy n bytes out of the file, or fail naming what was being read. */
static int read_bytes(struct cursor *c, void *dst, size_t n, const char *what)
{
	if (n > remaining(c))
		return rs_errmsg(c->err, c->err_size, -EINVAL,
				 "GGUF truncated: %s at offset %zu needs %zu bytes, file has %zu",
				 what, c->pos, n, c->size);
	memcpy(dst, c->base + c->pos, n);
	c->pos += n;
	return 0;
}

/* A little-endian u32, or fail naming what. */
static int read_u32(struct cursor *c, uint32_t *v, const char *what)
{
	return read_bytes(c, v, sizeof(*v), what);
}

/* A little-endian u64, or fail naming what. */
static int read_u64(struct cursor *c, uint64_t *v, const char *what)
{
	return read_bytes(c, v, sizeof(*v), what);
}

/* A string: u64 length, then that many bytes, which must lie inside the file. */
static int read_string(struct cursor *c, struct rs_gguf_str *s, const char *what)
{
	uint64_t len = 0;
	int ret = read_u64(c, &len, what);
	if (ret)
		return ret;
	if (len > remaining(c))
		return rs_errmsg(c->err, c->err_size, -EINVAL,
				 "GGUF: %s at offset %zu has length %" PRIu64
				 ", beyond the end of the file (%zu bytes left)",
				 what, c->pos - 8, len, remaining(c));
	s->ptr = (const char *)c->base + c->pos;
	s->len = len;
	c->pos += (size_t)len;
	return 0;
}

/* FNV-1a of n bytes. */
static uint64_t hash_bytes(const char *p, uint64_t n)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (uint64_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 0x100000001b3ull;
	return h;
}

/* Whether the file string a equals b[0..b_len). */
static bool str_eq(struct rs_gguf_str a, const char *b, size_t b_len)
{
	return a.len == b_len && memcmp(a.ptr, b, b_len) == 0;
}

/* Allocate an index with room for n entries at load factor <= 1/2. */
static int index_alloc(uint64_t n, uint32_t **slots, uint64_t *mask)
{
	uint64_t cap = 16;
	while (cap < 2 * n)
		cap <<= 1;
	*slots = calloc(cap, sizeof(**slots));
	if (!*slots)
		return -ENOMEM;
	*mask = cap - 1;
	return 0;
}

/* Look name up in an index over arr[i].field; result is the index, or -1 when absent. */
#define INDEX_FIND(slots, mask, arr, field, name, name_len, result)                                \
	do {                                                                                       \
		uint64_t h_ = hash_bytes((name), (name_len)) & (mask);                             \
		(result) = -1;                                                                     \
		while ((slots)[h_]) {                                                              \
			uint32_t i_ = (slots)[h_] - 1;                                             \
			if (str_eq((arr)[i_].field, (name), (name_len))) {                         \
				(result) = (int64_t)i_;                                            \
				break;                                                             \
			}                                                                          \
			h_ = (h_ + 1) & (mask);                                                    \
		}                                                                                  \
	} while (0)

/* Insert arr[i] into an index; ok is false when its name is already there. */
#define INDEX_INSERT(slots, mask, arr, field, i, ok)                                               \
	do {                                                                                       \
		struct rs_gguf_str n_ = (arr)[i].field;                                            \
		uint64_t h_ = hash_bytes(n_.ptr, n_.len) & (mask);                                 \
		(ok) = true;                                                                       \
		while ((slots)[h_]) {                                                              \
			uint32_t j_ = (slots)[h_] - 1;                                             \
			if (str_eq((arr)[j_].field, n_.ptr, n_.len)) {                             \
				(ok) = false;                                                      \
				break;                                                             \
			}                                                                          \
			h_ = (h_ + 1) & (mask);                                                    \
		}                                                                                  \
		if (ok)                                                                            \
			(slots)[h_] = (uint32_t)(i) + 1;                                           \
	} while (0)

/* Read one value of the given type into kv (kv->type already set). */
static int read_value(struct cursor *c, struct rs_gguf_kv *kv, const char *what)
{
	uint32_t type = kv->type;
	size_t vsize = rs_gguf_value_size(type);
	if (vsize) {
		uint8_t raw[8] = {0};
		int ret = read_bytes(c, raw, vsize, what);
		if (ret)
			return ret;
		switch (type) {
		case RS_GGUF_TYPE_UINT8:
			kv->v.u = raw[0];
			break;
		case RS_GGUF_TYPE_INT8:
			kv->v.i = (int8_t)raw[0];
			break;
		case RS_GGUF_TYPE_BOOL:
			kv->v.b = raw[0] != 0;
			break;
		case RS_GGUF_TYPE_UINT16: {
			uint16_t x;
			memcpy(&x, raw, 2);
			kv->v.u = x;
			break;
		}
		case RS_GGUF_TYPE_INT16: {
			int16_t x;
			memcpy(&x, raw, 2);
			kv->v.i = x;
			break;
		}
		case RS_GGUF_TYPE_UINT32: {
			uint32_t x;
			memcpy(&x, raw, 4);
			kv->v.u = x;
			break;
		}
		case RS_GGUF_TYPE_INT32: {
			int32_t x;
			memcpy(&x, raw, 4);
			kv->v.i = x;
			break;
		}
		case RS_GGUF_TYPE_FLOAT32: {
			float x;
			memcpy(&x, raw, 4);
			kv->v.f = x;
			break;
		}
		case RS_GGUF_TYPE_UINT64:
			memcpy(&kv->v.u, raw, 8);
			break;
		case RS_GGUF_TYPE_INT64:
			memcpy(&kv->v.i, raw, 8);
			break;
		case RS_GGUF_TYPE_FLOAT64:
			memcpy(&kv->v.f, raw, 8);
			break;
		}
		return 0;
	}
	if (type == RS_GGUF_TYPE_STRING)
		return read_string(c, &kv->v.str, what);
	if (type != RS_GGUF_TYPE_ARRAY)
		return rs_errmsg(c->err, c->err_size, -EINVAL, "GGUF: %s has unknown value type %u",
				 what, type);

	struct rs_gguf_array *arr = &kv->v.arr;
	int ret = read_u32(c, &arr->elem_type, what);
	if (!ret)
		ret = read_u64(c, &arr->n, what);
	if (ret)
		return ret;
	size_t start = c->pos;
	size_t esize = rs_gguf_value_size(arr->elem_type);
	if (esize) {
		if (arr->n > remaining(c) / esize)
			return rs_errmsg(c->err, c->err_size, -EINVAL,
					 "GGUF: %s is an array of %" PRIu64
					 " %s values, more than the file holds (%zu bytes left)",
					 what, arr->n, type_names[arr->elem_type], remaining(c));
		c->pos += (size_t)(arr->n * esize);
	} else if (arr->elem_type == RS_GGUF_TYPE_STRING) {
		/* Each string takes at least its 8-byte length. */
		if (arr->n > remaining(c) / 8)
			return rs_errmsg(c->err, c->err_size, -EINVAL,
					 "GGUF: %s is an array of %" PRIu64
					 " strings, more than the file holds (%zu bytes left)",
					 what, arr->n, remaining(c));
		for (uint64_t i = 0; i < arr->n; i++) {
			struct rs_gguf_str s;
			ret = read_string(c, &s, what);
			if (ret)
				return ret;
		}
	} else if (arr->elem_type == RS_GGUF_TYPE_ARRAY) {
		return rs_errmsg(c->err, c->err_size, -EINVAL,
				 "GGUF: %s is an array of arrays, which is not supported", what);
	} else {
		return rs_errmsg(c->err, c->err_size, -EINVAL,
				 "GGUF: %s is an array of unknown value type %u", what,
				 arr->elem_type);
	}
	arr->data = c->base + start;
	arr->bytes = c->pos - start;
	return 0;
}

/* Describe key/value i for messages: "key 'name'" with the name cut to 80 bytes. */
static void describe_key(char *buf, size_t size, const struct rs_gguf_kv *kv, uint64_t i)
{
	if (kv->key.ptr)
		snprintf(buf, size, "key %" PRIu64 " '%.*s'", i,
			 (int)(kv->key.len < 80 ? kv->key.len : 80), kv->key.ptr);
	else
		snprintf(buf, size, "key %" PRIu64, i);
}

/* Read every key/value, indexing the keys and refusing duplicates. */
static int parse_kvs(struct rs_gguf *g, struct cursor *c)
{
	char what[128];
	int ret = index_alloc(g->n_kv, &g->kv_index, &g->kv_index_mask);
	if (ret)
		return ret;
	for (uint64_t i = 0; i < g->n_kv; i++) {
		struct rs_gguf_kv *kv = &g->kvs[i];
		describe_key(what, sizeof(what), kv, i);
		ret = read_string(c, &kv->key, what);
		if (ret)
			return ret;
		describe_key(what, sizeof(what), kv, i);
		if (kv->key.len == 0 || kv->key.len > RS_GGUF_MAX_KEY)
			return rs_errmsg(c->err, c->err_size, -EINVAL,
					 "GGUF: %s has length %" PRIu64 " (must be 1..%u)", what,
					 kv->key.len, RS_GGUF_MAX_KEY);
		ret = read_u32(c, &kv->type, what);
		if (ret)
			return ret;
		ret = read_value(c, kv, what);
		if (ret)
			return ret;
		bool ok;
		INDEX_INSERT(g->kv_index, g->kv_index_mask, g->kvs, key, i, ok);
		if (!ok)
			return rs_errmsg(c->err, c->err_size, -EINVAL, "GGUF: duplicate %s", what);
	}
	return 0;
}

/* general.alignment, or the default: a power of two up to 2^30. */
static int parse_alignment(struct rs_gguf *g, struct cursor *c)
{
	uint64_t alignment;
	int ret = rs_gguf_get_u64(g, "general.alignment", &alignment);
	if (ret == -ENOENT) {
		g->alignment = RS_GGUF_DEFAULT_ALIGNMENT;
		return 0;
	}
	if (ret || alignment == 0 || (alignment & (alignment - 1)) || alignment > (1u << 30))
		return rs_errmsg(
		    c->err, c->err_size, -EINVAL,
		    "GGUF: general.alignment must be an integer power of two up to 2^30");
	g->alignment = alignment;
	return 0;
}

/* Describe tensor i for messages: "tensor i 'name'" with the name cut to 80 bytes. */
static void describe_tensor(char *buf, size_t size, const struct rs_gguf_tensor *t, uint64_t i)
{
	if (t->name.ptr)
		snprintf(buf, size, "tensor %" PRIu64 " '%.*s'", i,
			 (int)(t->name.len < 80 ? t->name.len : 80), t->name.ptr);
	else
		snprintf(buf, size, "tensor %" PRIu64, i);
}

/* Read the tensor infos: names, shapes, types and offsets (checked once data_offset is known). */
static int parse_tensor_infos(struct rs_gguf *g, struct cursor *c)
{
	char what[128];
	int ret = index_alloc(g->n_tensors, &g->tensor_index, &g->tensor_index_mask);
	if (ret)
		return ret;
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		struct rs_gguf_tensor *t = &g->tensors[i];
		describe_tensor(what, sizeof(what), t, i);
		ret = read_string(c, &t->name, what);
		if (ret)
			return ret;
		describe_tensor(what, sizeof(what), t, i);
		if (t->name.len == 0 || t->name.len >= RS_GGUF_MAX_NAME)
			return rs_errmsg(c->err, c->err_size, -EINVAL,
					 "GGUF: %s has a name of length %" PRIu64
					 " (must be 1..%u)",
					 what, t->name.len, RS_GGUF_MAX_NAME - 1);
		ret = read_u32(c, &t->n_dims, what);
		if (ret)
			return ret;
		if (t->n_dims == 0 || t->n_dims > RS_GGUF_MAX_DIMS)
			return rs_errmsg(c->err, c->err_size, -EINVAL,
					 "GGUF: %s has %u dimensions (must be 1..%u)", what,
					 t->n_dims, RS_GGUF_MAX_DIMS);
		uint64_t n_elements = 1;
		for (uint32_t d = 0; d < RS_GGUF_MAX_DIMS; d++) {
			t->ne[d] = 1;
			if (d >= t->n_dims)
				continue;
			ret = read_u64(c, &t->ne[d], what);
			if (ret)
				return ret;
			if (t->ne[d] == 0 || t->ne[d] > INT64_MAX ||
			    __builtin_mul_overflow(n_elements, t->ne[d], &n_elements) ||
			    n_elements > INT64_MAX)
				return rs_errmsg(c->err, c->err_size, -EINVAL,
						 "GGUF: %s has dimension %u of size %" PRIu64
						 ", zero or too large",
						 what, d, t->ne[d]);
		}
		ret = read_u32(c, &t->type, what);
		if (!ret)
			ret = read_u64(c, &t->offset, what);
		if (ret)
			return ret;
		if (!tensor_type_known(t->type))
			return rs_errmsg(c->err, c->err_size, -EINVAL,
					 "GGUF: %s has type %u (%s), which is not supported "
					 "(only F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K and Q6_K)",
					 what, t->type, rs_gguf_tensor_type_name(t->type));
		enum rs_dtype dtype;
		rs_gguf_tensor_dtype(t->type, &dtype);
		/* A block format packs whole blocks along each row (ne[0]). */
		uint32_t block = rs_dtype_block_elems(dtype);
		if (t->ne[0] % block)
			return rs_errmsg(
			    c->err, c->err_size, -EINVAL,
			    "GGUF: %s is %s, whose rows are blocks of %u elements, but "
			    "its row length ne[0] = %" PRIu64 " is not a multiple of %u",
			    what, rs_gguf_tensor_type_name(t->type), block, t->ne[0], block);
		t->n_elements = n_elements;
		if (__builtin_mul_overflow(n_elements / block,
					   (uint64_t)rs_dtype_block_bytes(dtype), &t->nbytes))
			return rs_errmsg(c->err, c->err_size, -EINVAL, "GGUF: %s is too large",
					 what);
		bool ok;
		INDEX_INSERT(g->tensor_index, g->tensor_index_mask, g->tensors, name, i, ok);
		if (!ok)
			return rs_errmsg(c->err, c->err_size, -EINVAL, "GGUF: duplicate %s", what);
	}
	return 0;
}

/* With data_offset known: every tensor's bytes must lie inside the file, aligned. */
static int place_tensors(struct rs_gguf *g, struct cursor *c)
{
	char what[128];
	uint64_t data_size = g->data_offset <= g->size ? g->size - g->data_offset : 0;
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		struct rs_gguf_tensor *t = &g->tensors[i];
		describe_tensor(what, sizeof(what), t, i);
		if (t->offset % g->alignment)
			return rs_errmsg(c->err, c->err_size, -EINVAL,
					 "GGUF: %s has offset %" PRIu64
					 ", not a multiple of the alignment %" PRIu64,
					 what, t->offset, g->alignment);
		if (g->data_offset > g->size || t->offset > data_size ||
		    t->nbytes > data_size - t->offset)
			return rs_errmsg(c->err, c->err_size, -EINVAL,
					 "GGUF: %s (%" PRIu64 " bytes at data offset %" PRIu64
					 ") lies beyond the end of the file (data section %" PRIu64
					 " bytes from offset %" PRIu64 ")",
					 what, t->nbytes, t->offset, data_size, g->data_offset);
		t->data = g->base + g->data_offset + t->offset;
		/* The backends read elements in place: they must be naturally aligned. */
		enum rs_dtype dtype;
		rs_gguf_tensor_dtype(t->type, &dtype);
		size_t align = rs_dtype_is_quant(dtype) ? 2 : rs_dtype_block_bytes(dtype);
		if ((uintptr_t)t->data % align)
			return rs_errmsg(c->err, c->err_size, -EINVAL,
					 "GGUF: %s data is misaligned for %s elements", what,
					 rs_gguf_tensor_type_name(t->type));
	}
	return 0;
}

int rs_gguf_parse(const void *data, size_t size, struct rs_gguf **out, char *err, size_t err_size)
{
	struct cursor c = {.base = data, .size = size, .err = err, .err_size = err_size};
	struct rs_gguf *g = calloc(1, sizeof(*g));
	uint32_t magic;
	int ret;

	*out = NULL;
	if (!g)
		return -ENOMEM;
	g->base = data;
	g->size = size;

	ret = read_u32(&c, &magic, "magic");
	if (ret)
		goto fail;
	if (magic != RS_GGUF_MAGIC) {
		ret = rs_errmsg(err, err_size, -EINVAL, "not a GGUF file (magic 0x%08x)", magic);
		goto fail;
	}
	ret = read_u32(&c, &g->version, "version");
	if (ret)
		goto fail;
	if (g->version == 1) {
		ret = rs_errmsg(err, err_size, -EINVAL,
				"GGUF version 1 is not supported (only 2 and 3); convert the model "
				"again with a current llama.cpp");
		goto fail;
	}
	if (g->version != 2 && g->version != 3) {
		/* A big-endian file reads as a byte-swapped small number. */
		bool swapped =
		    g->version && !(g->version & 0xffff) && __builtin_bswap32(g->version) <= 3;
		ret = rs_errmsg(err, err_size, -EINVAL, "GGUF version %u is not supported%s",
				g->version,
				swapped ? " (the file is big-endian)" : " (only 2 and 3)");
		goto fail;
	}
	ret = read_u64(&c, &g->n_tensors, "tensor count");
	if (!ret)
		ret = read_u64(&c, &g->n_kv, "key/value count");
	if (ret)
		goto fail;
	/* A tensor info takes at least 8 (name length) + 1 + 4 + 8 + 4 + 8 bytes, a key/value
	 * at least 8 + 1 + 4 + 1: counts beyond that cannot be genuine. */
	if (g->n_tensors > RS_GGUF_MAX_TENSORS || g->n_tensors > remaining(&c) / 33) {
		ret = rs_errmsg(err, err_size, -EINVAL,
				"GGUF: tensor count %" PRIu64 " is absurd for a file of %zu bytes",
				g->n_tensors, size);
		goto fail;
	}
	if (g->n_kv > RS_GGUF_MAX_KV || g->n_kv > remaining(&c) / 14) {
		ret =
		    rs_errmsg(err, err_size, -EINVAL,
			      "GGUF: key/value count %" PRIu64 " is absurd for a file of %zu bytes",
			      g->n_kv, size);
		goto fail;
	}
	g->kvs = calloc(g->n_kv ? g->n_kv : 1, sizeof(*g->kvs));
	g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof(*g->tensors));
	if (!g->kvs || !g->tensors) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = parse_kvs(g, &c);
	if (!ret)
		ret = parse_alignment(g, &c);
	if (!ret)
		ret = parse_tensor_infos(g, &c);
	if (ret)
		goto fail;
	g->data_offset = c.pos + (g->alignment - c.pos % g->alignment) % g->alignment;
	ret = place_tensors(g, &c);
	if (ret)
		goto fail;
	*out = g;
	return 0;
fail:
	if (ret == -ENOMEM)
		rs_errmsg(err, err_size, ret, "GGUF: out of memory");
	rs_gguf_free(g);
	return ret;
}

void rs_gguf_free(struct rs_gguf *gguf)
{
	if (!gguf)
		return;
	free(gguf->kvs);
	free(gguf->tensors);
	free(gguf->kv_index);
	free(gguf->tensor_index);
	free(gguf);
}

uint32_t rs_gguf_version(const struct rs_gguf *gguf)
{
	return gguf->version;
}

uint64_t rs_gguf_alignment(const struct rs_gguf *gguf)
{
	return gguf->alignment;
}

uint64_t rs_gguf_data_offset(const struct rs_gguf *gguf)
{
	return gguf->data_offset;
}

uint64_t rs_gguf_n_kv(const struct rs_gguf *gguf)
{
	return gguf->n_kv;
}

uint64_t rs_gguf_n_tensors(const struct rs_gguf *gguf)
{
	return gguf->n_tensors;
}

const struct rs_gguf_kv *rs_gguf_kv_at(const struct rs_gguf *gguf, uint64_t i)
{
	return i < gguf->n_kv ? &gguf->kvs[i] : NULL;
}

const struct rs_gguf_kv *rs_gguf_find_kv(const struct rs_gguf *gguf, const char *key)
{
	int64_t i;
	if (!gguf->kv_index)
		return NULL;
	INDEX_FIND(gguf->kv_index, gguf->kv_index_mask, gguf->kvs, key, key, strlen(key), i);
	return i < 0 ? NULL : &gguf->kvs[i];
}

const struct rs_gguf_tensor *rs_gguf_tensor_at(const struct rs_gguf *gguf, uint64_t i)
{
	return i < gguf->n_tensors ? &gguf->tensors[i] : NULL;
}

const struct rs_gguf_tensor *rs_gguf_find_tensor(const struct rs_gguf *gguf, const char *name)
{
	int64_t i;
	if (!gguf->tensor_index)
		return NULL;
	INDEX_FIND(gguf->tensor_index, gguf->tensor_index_mask, gguf->tensors, name, name,
		   strlen(name), i);
	return i < 0 ? NULL : &gguf->tensors[i];
}

/* Whether a value type is an unsigned integer. */
static bool is_unsigned(uint32_t type)
{
	return type == RS_GGUF_TYPE_UINT8 || type == RS_GGUF_TYPE_UINT16 ||
	       type == RS_GGUF_TYPE_UINT32 || type == RS_GGUF_TYPE_UINT64;
}

/* Whether a value type is a signed integer. */
static bool is_signed(uint32_t type)
{
	return type == RS_GGUF_TYPE_INT8 || type == RS_GGUF_TYPE_INT16 ||
	       type == RS_GGUF_TYPE_INT32 || type == RS_GGUF_TYPE_INT64;
}

int rs_gguf_get_u64(const struct rs_gguf *gguf, const char *key, uint64_t *out)
{
	const struct rs_gguf_kv *kv = rs_gguf_find_kv(gguf, key);
	if (!kv)
		return -ENOENT;
	if (is_unsigned(kv->type)) {
		*out = kv->v.u;
		return 0;
	}
	if (is_signed(kv->type)) {
		if (kv->v.i < 0)
			return -ERANGE;
		*out = (uint64_t)kv->v.i;
		return 0;
	}
	return -EINVAL;
}

int rs_gguf_get_u32(const struct rs_gguf *gguf, const char *key, uint32_t *out)
{
	uint64_t v;
	int ret = rs_gguf_get_u64(gguf, key, &v);
	if (ret)
		return ret;
	if (v > UINT32_MAX)
		return -ERANGE;
	*out = (uint32_t)v;
	return 0;
}

int rs_gguf_get_f32(const struct rs_gguf *gguf, const char *key, float *out)
{
	const struct rs_gguf_kv *kv = rs_gguf_find_kv(gguf, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != RS_GGUF_TYPE_FLOAT32 && kv->type != RS_GGUF_TYPE_FLOAT64)
		return -EINVAL;
	*out = (float)kv->v.f;
	return 0;
}

int rs_gguf_get_bool(const struct rs_gguf *gguf, const char *key, bool *out)
{
	const struct rs_gguf_kv *kv = rs_gguf_find_kv(gguf, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != RS_GGUF_TYPE_BOOL)
		return -EINVAL;
	*out = kv->v.b;
	return 0;
}

int rs_gguf_get_string(const struct rs_gguf *gguf, const char *key, struct rs_gguf_str *out)
{
	const struct rs_gguf_kv *kv = rs_gguf_find_kv(gguf, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != RS_GGUF_TYPE_STRING)
		return -EINVAL;
	*out = kv->v.str;
	return 0;
}

int rs_gguf_get_array(const struct rs_gguf *gguf, const char *key, struct rs_gguf_array *out)
{
	const struct rs_gguf_kv *kv = rs_gguf_find_kv(gguf, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != RS_GGUF_TYPE_ARRAY)
		return -EINVAL;
	*out = kv->v.arr;
	return 0;
}

int rs_gguf_array_f64(const struct rs_gguf_array *arr, uint64_t i, double *out)
{
	size_t esize = rs_gguf_value_size(arr->elem_type);
	if (!esize || arr->elem_type == RS_GGUF_TYPE_BOOL)
		return -EINVAL;
	if (i >= arr->n)
		return -ERANGE;
	const uint8_t *p = arr->data + i * esize;
	if (arr->elem_type == RS_GGUF_TYPE_FLOAT32) {
		float f;
		memcpy(&f, p, 4);
		*out = f;
		return 0;
	}
	if (arr->elem_type == RS_GGUF_TYPE_FLOAT64) {
		memcpy(out, p, 8);
		return 0;
	}
	int64_t v;
	int ret = rs_gguf_array_i64(arr, i, &v);
	if (ret)
		return ret;
	*out = (double)v;
	return 0;
}

int rs_gguf_array_i64(const struct rs_gguf_array *arr, uint64_t i, int64_t *out)
{
	size_t esize = rs_gguf_value_size(arr->elem_type);
	if (!is_signed(arr->elem_type) && !is_unsigned(arr->elem_type))
		return -EINVAL;
	if (i >= arr->n)
		return -ERANGE;
	const uint8_t *p = arr->data + i * esize;
	switch (arr->elem_type) {
	case RS_GGUF_TYPE_UINT8:
		*out = p[0];
		return 0;
	case RS_GGUF_TYPE_INT8:
		*out = (int8_t)p[0];
		return 0;
	case RS_GGUF_TYPE_UINT16: {
		uint16_t x;
		memcpy(&x, p, 2);
		*out = x;
		return 0;
	}
	case RS_GGUF_TYPE_INT16: {
		int16_t x;
		memcpy(&x, p, 2);
		*out = x;
		return 0;
	}
	case RS_GGUF_TYPE_UINT32: {
		uint32_t x;
		memcpy(&x, p, 4);
		*out = x;
		return 0;
	}
	case RS_GGUF_TYPE_INT32: {
		int32_t x;
		memcpy(&x, p, 4);
		*out = x;
		return 0;
	}
	case RS_GGUF_TYPE_UINT64: {
		uint64_t x;
		memcpy(&x, p, 8);
		if (x > INT64_MAX)
			return -ERANGE;
		*out = (int64_t)x;
		return 0;
	}
	case RS_GGUF_TYPE_INT64:
		memcpy(out, p, 8);
		return 0;
	}
	return -EINVAL;
}

int rs_gguf_array_next_string(const struct rs_gguf_array *arr, uint64_t *cursor,
			      struct rs_gguf_str *out)
{
	uint64_t len;
	if (arr->elem_type != RS_GGUF_TYPE_STRING)
		return -EINVAL;
	/* The parser checked every length; these checks only guard a misused cursor. */
	if (*cursor > arr->bytes || arr->bytes - *cursor < 8)
		return -ENOENT;
	memcpy(&len, arr->data + *cursor, 8);
	if (len > arr->bytes - *cursor - 8)
		return -ENOENT;
	out->ptr = (const char *)arr->data + *cursor + 8;
	out->len = len;
	*cursor += 8 + len;
	return 0;
}
