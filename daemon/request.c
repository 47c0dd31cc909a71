/* The request pool and request queues. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/request.h"

int rs_request_pool_init(struct rs_request_pool *pool, uint32_t capacity)
{
	pool->all = calloc(capacity, sizeof(*pool->all));
	if (!pool->all)
		return -ENOMEM;
	pool->capacity = capacity;
	pool->in_use = 0;
	pool->free_list = NULL;
	for (uint32_t i = capacity; i-- > 0;) {
		pool->all[i].next = pool->free_list;
		pool->free_list = &pool->all[i];
	}
	return 0;
}

void rs_request_pool_destroy(struct rs_request_pool *pool)
{
	for (uint32_t i = 0; i < pool->capacity; i++)
		if (pool->all[i].prompt != pool->all[i].prompt_inline)
			free(pool->all[i].prompt);
	free(pool->all);
	pool->all = NULL;
}

struct rs_request *rs_request_get(struct rs_request_pool *pool)
{
	struct rs_request *request = pool->free_list;
	if (!request)
		return NULL;
	pool->free_list = request->next;
	pool->in_use++;
	/* Zero only the fixed part; the inline prompt is overwritten by the copy-in. */
	memset(request, 0, offsetof(struct rs_request, prompt_inline));
	request->prompt = request->prompt_inline;
	memset(&request->output, 0, sizeof(*request) - offsetof(struct rs_request, output));
	return request;
}

void rs_request_put(struct rs_request_pool *pool, struct rs_request *request)
{
	if (request->prompt != request->prompt_inline)
		free(request->prompt);
	request->prompt = request->prompt_inline;
	request->state = RS_REQUEST_FREE;
	request->client = NULL;
	request->prev = NULL;
	request->next = pool->free_list;
	pool->free_list = request;
	pool->in_use--;
}

int rs_request_reserve_prompt(struct rs_request *request, uint32_t prompt_len)
{
	if (prompt_len <= RS_PROMPT_INLINE) {
		request->prompt = request->prompt_inline;
		return 0;
	}
	request->prompt = malloc((size_t)prompt_len * sizeof(uint32_t));
	if (!request->prompt) {
		request->prompt = request->prompt_inline;
		return -ENOMEM;
	}
	return 0;
}

void rs_queue_push_back(struct rs_request_queue *queue, struct rs_request *request)
{
	request->next = NULL;
	request->prev = queue->tail;
	if (queue->tail)
		queue->tail->next = request;
	else
		queue->head = request;
	queue->tail = request;
	queue->length++;
}

void rs_queue_remove(struct rs_request_queue *queue, struct rs_request *request)
{
	if (request->prev)
		request->prev->next = request->next;
	else
		queue->head = request->next;
	if (request->next)
		request->next->prev = request->prev;
	else
		queue->tail = request->prev;
	request->next = request->prev = NULL;
	queue->length--;
}
