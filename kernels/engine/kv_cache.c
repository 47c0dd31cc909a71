/* Paged KV cache block allocator (see kv_cache.h). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels/engine/kv_cache.h"

int rs_kv_cache_create(uint32_t n_blocks, uint32_t block_size, struct rs_kv_cache **out)
{
	*out = NULL;
	if (!n_blocks || !block_size || n_blocks > INT32_MAX)
		return -EINVAL;
	struct rs_kv_cache *kv = calloc(1, sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	kv->free_stack = malloc(sizeof(uint32_t) * n_blocks);
	kv->refcount = calloc(n_blocks, sizeof(uint32_t));
	if (!kv->free_stack || !kv->refcount) {
		rs_kv_cache_destroy(kv);
		return -ENOMEM;
	}
	kv->n_blocks = n_blocks;
	kv->block_size = block_size;
	/* Block 0 on top: a fresh cache hands out 0, 1, 2, ... */
	for (uint32_t i = 0; i < n_blocks; i++)
		kv->free_stack[i] = n_blocks - 1 - i;
	kv->n_free = n_blocks;
	*out = kv;
	return 0;
}

void rs_kv_cache_destroy(struct rs_kv_cache *kv)
{
	if (!kv)
		return;
	free(kv->free_stack);
	free(kv->refcount);
	free(kv);
}
