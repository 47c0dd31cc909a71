/* Paged KV cache: the block allocator.
 *
 * The cache is a pool of n_blocks fixed-size blocks, each holding the keys and values of
 * block_size consecutive positions of one sequence, in every layer. The storage lives in
 * the backend (fp32 host memory on the CPU, device memory on CUDA) with the layout
 * [layer][block][block_size][n_kv_heads * head_dim], once for K and once for V; this
 * allocator only hands out block ids and counts references, so it is backend-neutral.
 *
 * Block tables belong to the caller (the daemon's scheduler): a sequence is an array of
 * block ids, position p living in block table[p / block_size], slot p % block_size.
 *
 * Sharing contract (prefix caching): only full blocks are shared, each holder taking a
 * reference with rs_kv_block_ref. A step writes the K/V of positions start_pos ..
 * start_pos + n_tokens - 1 only, and every block those positions fall into must be private
 * to the sequence (reference count 1). In practice a sequence writes only into its last,
 * private block(s); to extend a sequence whose last block is shared and partly filled,
 * copy it into a fresh block first (copy-on-write is the caller's business).
 *
 * Not thread-safe: one owner (the scheduler thread) allocates and releases. */
#ifndef RS_KERNELS_KV_CACHE_H
#define RS_KERNELS_KV_CACHE_H

#include <errno.h>
#include <stdint.h>

struct rs_kv_cache;

/* Create an allocator for n_blocks blocks of block_size positions, all free.
 * Returns 0, -EINVAL (zero or n_blocks > INT32_MAX), -ENOMEM. */
int rs_kv_cache_create(uint32_t n_blocks, uint32_t block_size, struct rs_kv_cache **out);

/* Release the allocator. NULL is allowed. */
void rs_kv_cache_destroy(struct rs_kv_cache *kv);

/* The allocator's state, in the header so that the calls below inline: the scheduler
 * makes several a request (allocate, reference, release, count), each a call frame for
 * a few loads and stores otherwise. Only these functions touch it. */
struct rs_kv_cache {
	uint32_t n_blocks;
	uint32_t block_size;
	uint32_t n_free;
	uint32_t *free_stack; /* ids of free blocks; the top is reused first (warm memory) */
	uint32_t *refcount;   /* per block; 0 == free */
};

/* Take a free block; its reference count becomes 1.
 * Returns the block id (>= 0), or -ENOMEM when every block is in use. */
static inline int rs_kv_block_alloc(struct rs_kv_cache *kv)
{
	if (!kv->n_free)
		return -ENOMEM;
	uint32_t block = kv->free_stack[--kv->n_free];
	kv->refcount[block] = 1;
	return (int)block;
}

/* Add a reference to a block in use (to share it with another sequence).
 * Returns the new count, or -EINVAL for an id out of range or a free block. */
static inline int rs_kv_block_ref(struct rs_kv_cache *kv, uint32_t block)
{
	if (block >= kv->n_blocks || kv->refcount[block] == 0 || kv->refcount[block] == INT32_MAX)
		return -EINVAL;
	return (int)++kv->refcount[block];
}

/* Drop a reference; the block returns to the free list when the count reaches 0.
 * Returns the remaining count, or -EINVAL for an id out of range or a block already
 * free (a double free is refused, never corrupts the free list). */
static inline int rs_kv_block_unref(struct rs_kv_cache *kv, uint32_t block)
{
	if (block >= kv->n_blocks || kv->refcount[block] == 0)
		return -EINVAL;
	uint32_t left = --kv->refcount[block];
	if (left == 0)
		kv->free_stack[kv->n_free++] = block;
	return (int)left;
}

/* The block's reference count (0: free; also 0 for an id out of range). */
static inline uint32_t rs_kv_block_refcount(const struct rs_kv_cache *kv, uint32_t block)
{
	return block < kv->n_blocks ? kv->refcount[block] : 0;
}

/* Number of free blocks. */
static inline uint32_t rs_kv_free_count(const struct rs_kv_cache *kv)
{
	return kv->n_free;
}

static inline uint32_t rs_kv_n_blocks(const struct rs_kv_cache *kv)
{
	return kv->n_blocks;
}

static inline uint32_t rs_kv_block_size(const struct rs_kv_cache *kv)
{
	return kv->block_size;
}

/* Blocks needed to hold n_tokens positions. */
static inline uint32_t rs_kv_blocks_for(uint32_t n_tokens, uint32_t block_size)
{
	return (n_tokens + block_size - 1) / block_size;
}

#endif
