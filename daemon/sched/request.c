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

int rs_request_reserve_heap(struct rs_request *request, uint64_t n_tokens, uint64_t n_blocks)
{
	/* One allocation: the tokens, then the block table. */
	request->tokens = malloc((size_t)(n_tokens + n_blocks) * sizeof(uint32_t));
	if (!request->tokens)
		return -ENOMEM;
	request->blocks = request->tokens + n_tokens;
	request->blocks_capacity = (uint32_t)n_blocks;
	return 0;
}

void rs_request_free_heap(struct rs_request *request)
{
	free_storage(request);
}
