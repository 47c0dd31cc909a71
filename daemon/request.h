/* A request as the daemon keeps it: a private copy of what the client submitted (never
 * re-read from shared memory), plus where its output goes and how far it got. */
#ifndef RS_DAEMON_REQUEST_H
#define RS_DAEMON_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "shm/abi.h"

struct rs_client;

enum rs_request_state {
	RS_REQUEST_FREE = 0,
	RS_REQUEST_QUEUED,  /* waiting for admission */
	RS_REQUEST_RUNNING, /* admitted into a lane */
};

/* Prompts up to this many tokens live inside the request: no allocation on the hot path. */
#define RS_PROMPT_INLINE 32

struct rs_request {
	struct rs_request *next, *prev; /* queue links (waiting queue or free list) */
	struct rs_client *client;
	enum rs_request_state state;
	bool cancelled;      /* complete with cancel_status at the next step boundary */
	bool orphaned;       /* its client is gone: free it without a completion */
	bool hit_eos;
	int32_t cancel_status;

	/* The validated copy of the submission. */
	uint64_t user_data;
	uint32_t slot;
	uint16_t flags; /* RS_SQE_* */
	uint32_t prompt_len;
	uint32_t max_new_tokens;
	uint32_t output_len_hint;
	uint32_t top_k;
	float temperature;
	float top_p;
	uint64_t seed;
	uint32_t *prompt; /* prompt_inline, or heap memory when longer */
	uint32_t prompt_inline[RS_PROMPT_INLINE];

	/* Where the output goes: the client's slot (the daemon's mapping of it). */
	uint32_t *output;
	_Atomic uint32_t *output_count;
	uint32_t generated; /* tokens written to output and published */
	uint32_t last_token; /* the newest output token, our own copy: the next decode input */
	uint32_t prefilled;  /* prompt tokens already in the KV cache */
	bool step_produced;  /* set by the engine: this step wrote output[generated] */

	uint32_t cached_tokens;  /* prompt tokens the engine did not have to prefill (0 until
				  * the prefix cache) */
	void *engine_state;      /* per-sequence state of the engine (KV blocks) */
};

/* A fixed pool of requests: admission never calls malloc for the request itself. */
struct rs_request_pool {
	struct rs_request *all;
	struct rs_request *free_list;
	uint32_t capacity;
	uint32_t in_use;
};

int rs_request_pool_init(struct rs_request_pool *pool, uint32_t capacity);
void rs_request_pool_destroy(struct rs_request_pool *pool);

/* Take a request from the pool, zeroed but for its links. NULL when exhausted. */
struct rs_request *rs_request_get(struct rs_request_pool *pool);

/* Return a request to the pool; frees a heap prompt. */
void rs_request_put(struct rs_request_pool *pool, struct rs_request *request);

/* Give the request room for prompt_len tokens. Returns 0 or -ENOMEM. */
int rs_request_reserve_prompt(struct rs_request *request, uint32_t prompt_len);

/* An intrusive doubly linked FIFO of requests. */
struct rs_request_queue {
	struct rs_request *head, *tail;
	uint32_t length;
};

void rs_queue_push_back(struct rs_request_queue *queue, struct rs_request *request);
void rs_queue_remove(struct rs_request_queue *queue, struct rs_request *request);

#endif
