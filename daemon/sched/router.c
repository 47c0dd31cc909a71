/* Dispatch at arrival, as SGLang's router does it (router.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/router.h"

struct rs_router {
	uint32_t workers, block_size, slots;
	uint64_t *table; /* [worker * slots + slot]: a prefix chain's hash; 0: empty */
	uint32_t *used;	 /* entries per worker */
	uint32_t *load;	 /* requests routed per worker, not ended */
};

int rs_router_create(uint32_t workers, uint32_t block_size, uint32_t slots, struct rs_router **out)
{
	slots = slots ? slots : 32768;
	if (!workers || !block_size || (slots & (slots - 1)))
		return -EINVAL;
	struct rs_router *router = calloc(1, sizeof(*router));
	if (!router)
		return -ENOMEM;
	router->workers = workers;
	router->block_size = block_size;
	router->slots = slots;
	router->table = calloc((size_t)workers * slots, sizeof(*router->table));
	router->used = calloc(workers, sizeof(*router->used));
	router->load = calloc(workers, sizeof(*router->load));
	if (!router->table || !router->used || !router->load) {
		rs_router_destroy(router);
		return -ENOMEM;
	}
	*out = router;
	return 0;
}

void rs_router_destroy(struct rs_router *router)
{
	if (!router)
		return;
	free(router->table);
	free(router->used);
	free(router->load);
	free(router);
}

/* The chain's hash after one more block (never 0: 0 marks an empty slot). */
static uint64_t chain(uint64_t h, const uint32_t *block, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		h ^= block[i] + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
		h *= 0xff51afd7ed558ccdull;
	}
	h ^= h >> 33;
	return h ? h : 1;
}

/* The slot holding h in the worker's table, or the empty slot where it would go. */
static uint64_t *slot_of(const struct rs_router *router, uint32_t worker, uint64_t h)
{
	uint64_t *table = &router->table[(size_t)worker * router->slots];
	uint32_t mask = router->slots - 1;
	for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask)
		if (table[i] == h || table[i] == 0)
			return &table[i];
}

uint32_t rs_router_match_blocks(const struct rs_router *router, uint32_t worker,
				const uint32_t *tokens, uint32_t prompt_len)
{
	uint32_t full = prompt_len / router->block_size;
	uint64_t h = 0;
	for (uint32_t b = 0; b < full; b++) {
		h = chain(h, tokens + (size_t)b * router->block_size, router->block_size);
		if (*slot_of(router, worker, h) != h)
			return b;
	}
	return full;
}

static void record(struct rs_router *router, uint32_t worker, const uint32_t *tokens,
		   uint32_t prompt_len)
{
	/* At most 3/4 of the table: open addressing needs an empty slot to stop at, and a
	 * prompt's first blocks are the ones a later prompt can match. */
	uint32_t room = router->slots / 4 * 3, full = prompt_len / router->block_size;
	full = full < room ? full : room;
	if (router->used[worker] + full > room) {
		/* Full: forget everything routed there (the tree's eviction, crudely). */
		memset(&router->table[(size_t)worker * router->slots], 0,
		       router->slots * sizeof(*router->table));
		router->used[worker] = 0;
	}
	uint64_t h = 0;
	for (uint32_t b = 0; b < full; b++) {
		h = chain(h, tokens + (size_t)b * router->block_size, router->block_size);
		uint64_t *slot = slot_of(router, worker, h);
		if (*slot == 0) {
			*slot = h;
			router->used[worker]++;
		}
	}
}

uint32_t rs_router_route(struct rs_router *router, struct rs_dispatch *dispatch,
			 const struct rs_request *request, const bool *in_service,
			 struct rs_dispatch_candidate *scratch)
{
	uint32_t n = 0;
	for (uint32_t w = 0; w < router->workers; w++) {
		if (!in_service[w])
			continue;
		uint32_t matched =
		    rs_router_match_blocks(router, w, request->tokens, request->prompt_len);
		scratch[n++] =
		    (struct rs_dispatch_candidate){.worker = w,
						   .matched_tokens = matched * router->block_size,
						   .load = router->load[w],
						   .cached_blocks = router->used[w]};
	}
	uint32_t worker = scratch[rs_dispatch_choose(dispatch, request, scratch, n)].worker;
	record(router, worker, request->tokens, request->prompt_len);
	router->load[worker]++;
	return worker;
}

void rs_router_done(struct rs_router *router, uint32_t worker)
{
	router->load[worker]--;
}

uint32_t rs_router_load(const struct rs_router *router, uint32_t worker)
{
	return router->load[worker];
}
