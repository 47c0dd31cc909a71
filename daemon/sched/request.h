/* A request as the daemon keeps it: a private copy of what the client submitted (never
 * re-read from shared memory), where its output goes, and how far it got.
 *
 * Two owners, separate fields. The data path (daemon/scheduler.c) fills the submission
 * part and `output` before rs_sched_submit, and reads `generated`, `cached_tokens` and
 * the timings when the core reports a token or the end. Everything under "core" belongs
 * to the scheduling core (daemon/sched/sched.c): it alone moves a request's progress. */
#ifndef RS_DAEMON_SCHED_REQUEST_H
#define RS_DAEMON_SCHED_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct rs_tenant;
struct rs_prefix_node;

enum rs_request_state {
	RS_REQUEST_FREE = 0,
	RS_REQUEST_WAITING, /* queued for admission */
	RS_REQUEST_RUNNING, /* admitted into a lane */
	RS_REQUEST_PARKED,  /* its tenant holds its KV share: set aside until it frees some */
	RS_REQUEST_STAGED,  /* admitted, held by the batch planner until it seats it in a lane
			     * (the multi-bin planner gathers a bin's batch) */
};

/* Requests whose prompt + output fit in this many tokens, and whose block table fits in
 * RS_REQUEST_INLINE_BLOCKS, need no allocation at all. */
#define RS_REQUEST_INLINE_TOKENS 48
#define RS_REQUEST_INLINE_BLOCKS 8

/* A waiting request as the prefix cache tracks it (prefix_cache.h): the cache keeps
 * match_blocks current while the cache changes under it. */
struct rs_prefix_waiter {
	const uint32_t *tokens; /* the prompt */
	uint32_t max_blocks;	/* full blocks that may match (see prefix_cache.h) */
	uint32_t match_blocks;	/* leading full blocks cached now */
	/* The cache's private links. */
	struct rs_prefix_node *node;
	struct rs_prefix_waiter *node_next, *node_prev;
	struct rs_prefix_waiter *key_next, *key_prev;
	uint64_t next_key;
};

struct rs_request {
	/* --- the data path --------------------------------------------------------------- */
	struct rs_request *free_next; /* the pool's free list */
	void *owner;		      /* the data path's client */
	uint64_t user_data;
	uint32_t slot;
	bool orphaned;			/* its client is gone: no completion */
	uint32_t *output;		/* the engine writes output token i to output[i]
					 * (the client's slot: zero-copy); NULL: the core's
					 * scratch */
	_Atomic uint32_t *output_count; /* the slot's progress counter */

	/* --- the submission, validated by the data path ------------------------------------ */
	struct rs_tenant *tenant;
	bool ignore_eos; /* the end-of-sequence token does not end it */
	uint32_t prompt_len;
	uint32_t max_new_tokens;
	uint32_t output_len_hint; /* the client's guess, for the multi-bin planner (issue 10) */
	uint32_t top_k;
	float temperature;
	float top_p;
	uint64_t seed;
	/* The sequence: prompt_len prompt tokens, then the output so far (our own copy of
	 * each token, checked when it was produced). prompt_len + max_new_tokens entries. */
	uint32_t *tokens;

	/* --- the core ---------------------------------------------------------------------- */
	enum rs_request_state state;
	uint64_t arrival; /* submission order, for first-come ties */
	uint64_t submitted_ns, admitted_ns, first_token_ns; /* the core's clock */
	uint32_t generated;				    /* output tokens produced and checked */
	uint32_t computed;	/* positions whose K/V is in its blocks */
	uint32_t cached_tokens; /* of the prompt, served by the prefix cache (at the
				 * first admission) */
	uint32_t *blocks;	/* its KV block table, one reference each */
	uint32_t n_blocks;
	uint32_t blocks_capacity;
	uint32_t promised; /* blocks promised at admission, not yet taken */
	uint32_t lane;
	uint32_t worker;	   /* the worker it was dispatched to at admission (sched.h) */
	uint32_t seat;		   /* index in its lane's running array */
	uint32_t predicted_output; /* the planner's guess at its output length; 0: none */
	uint32_t bin;		   /* the multi-bin planner's bin for it */
	uint32_t preemptions;
	bool in_step;	/* part of a lane's step in flight */
	bool cancelled; /* leave at the next step boundary with cancel_status */
	bool hit_eos;
	bool watched; /* the prefix cache tracks its waiter */
	int32_t cancel_status;
	struct rs_prefix_node *locked;	/* deepest prefix-cache node it locks, or NULL */
	struct rs_prefix_waiter waiter; /* while waiting */
	/* The admission policy's links (one structure at a time; while staged, the core's
	 * list of staged requests). */
	struct rs_request *queue_next, *queue_prev, *heap_child;
	bool in_run; /* in a queue's run, not its heap (admission_ops.h) */
	struct rs_request *parked_next, *parked_prev; /* in its tenant's parked list */
	/* While waiting, when workers choose their requests (d2lpm): its tenant's waiting
	 * list in the core, in admission order (sched.c). */
	struct rs_request *pull_next, *pull_prev;

	uint32_t inline_tokens[RS_REQUEST_INLINE_TOKENS];
	uint32_t inline_blocks[RS_REQUEST_INLINE_BLOCKS];
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

/* Out of line: prompts too long for the inline arrays (rs_request_reserve), and their
 * storage freed (rs_request_put). */
int rs_request_reserve_heap(struct rs_request *request, uint64_t n_tokens, uint64_t n_blocks);
void rs_request_free_heap(struct rs_request *request);

/* Take a request from the pool, its data path's part (the fields before `state`) zeroed;
 * the core's part is set by rs_sched_submit, its storage by rs_request_reserve. NULL when
 * exhausted. Inline, as rs_request_put and rs_request_reserve: they run once a request,
 * from the data path's file (no call frame for a few stores). */
static inline struct rs_request *rs_request_get(struct rs_request_pool *pool)
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

/* Return a request to the pool; frees heap storage. */
static inline void rs_request_put(struct rs_request_pool *pool, struct rs_request *request)
{
	if (request->tokens != request->inline_tokens)
		rs_request_free_heap(request); /* NULL too: it only clears the pointers */
	request->tokens = NULL;
	request->blocks = NULL;
	request->state = RS_REQUEST_FREE;
	request->owner = NULL;
	request->tenant = NULL;
	request->free_next = pool->free_list;
	pool->free_list = request;
	pool->in_use--;
}

/* Give the request room for prompt_len + max_new_tokens tokens and the block table of
 * that many positions (blocks of block_size): inline when they fit, else one heap
 * allocation. Sets prompt_len and max_new_tokens. Returns 0 or -ENOMEM. */
static inline int rs_request_reserve(struct rs_request *request, uint32_t prompt_len,
				     uint32_t max_new_tokens, uint32_t block_size)
{
	uint64_t n_tokens = (uint64_t)prompt_len + max_new_tokens;
	uint64_t n_blocks = (n_tokens + block_size - 1) / block_size;
	request->prompt_len = prompt_len;
	request->max_new_tokens = max_new_tokens;
	if (n_tokens > RS_REQUEST_INLINE_TOKENS || n_blocks > RS_REQUEST_INLINE_BLOCKS)
		return rs_request_reserve_heap(request, n_tokens, n_blocks);
	request->tokens = request->inline_tokens;
	request->blocks = request->inline_blocks;
	request->blocks_capacity = (uint32_t)n_blocks;
	return 0;
}

#endif
