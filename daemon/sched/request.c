/* The request pool. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/request.h"

int rs_request_pool_init(struct rs_request_pool *pool, uint32_t capacity)
{
	pool->all = calloc(capacity, sizeof(*pool->all));
	if (!pool->all)
		return -ENOMEM;
	pool->capacity = capacity;
	pool->in_use = 0;
	pool->free_list = NULL;
	for (uint32_t i = capacity; i-- > 0;) {
		pool->all[i].free_next = pool->free_list;
		pool->free_list = &pool->all[i];
	}
	return 0;
}

static void free_storage(struct rs_request *request)
{
	if (request->tokens && request->tokens != request->inline_tokens)
		free(request->tokens);
	request->tokens = NULL;
	request->blocks = NULL;
}

void rs_request_pool_destroy(struct rs_request_pool *pool)
{
	for (uint32_t i = 0; i < pool->capacity; i++)
		free_storage(&pool->all[i]);
	free(pool->all);
	pool->all = NULL;
}

struct rs_request *rs_request_get(struct rs_request_pool *pool)
{
	struct rs_request *request = pool->free_list;
	if (!request)
		return NULL;
	pool->free_list = request->free_next;
	pool->in_use++;
	/* Zero the data path's part only: rs_sched_submit sets every field of the core's
	 * (all but the storage rs_request_reserve sets), and the inline arrays are
	 * overwritten by the copy-in. A whole-struct memset cost 50 instructions a request. */
	memset(request, 0, offsetof(struct rs_request, state));
	return request;
}

void rs_request_put(struct rs_request_pool *pool, struct rs_request *request)
{
	free_storage(request);
	request->state = RS_REQUEST_FREE;
	request->owner = NULL;
	request->tenant = NULL;
	request->free_next = pool->free_list;
	pool->free_list = request;
	pool->in_use--;
}

int rs_request_reserve(struct rs_request *request, uint32_t prompt_len, uint32_t max_new_tokens,
		       uint32_t block_size)
{
	uint64_t n_tokens = (uint64_t)prompt_len + max_new_tokens;
	uint64_t n_blocks = (n_tokens + block_size - 1) / block_size;
	request->prompt_len = prompt_len;
	request->max_new_tokens = max_new_tokens;
	if (n_tokens <= RS_REQUEST_INLINE_TOKENS && n_blocks <= RS_REQUEST_INLINE_BLOCKS) {
		request->tokens = request->inline_tokens;
		request->blocks = request->inline_blocks;
	} else {
		/* One allocation: the tokens, then the block table. */
		request->tokens = malloc((size_t)(n_tokens + n_blocks) * sizeof(uint32_t));
		if (!request->tokens)
			return -ENOMEM;
		request->blocks = request->tokens + n_tokens;
	}
	request->blocks_capacity = (uint32_t)n_blocks;
	return 0;
}
