/* The router's view of the workers (daemon/sched/router.h), on its own: a prompt with
 * more full blocks than its table of a worker can hold must neither hang the router nor
 * leave the table without an empty slot (open addressing looks for one). Tables of 8
 * slots, blocks of 2 tokens, one worker, round-robin:
 *   - a prompt of 10 blocks (more than the 8 slots): routing it returns; the tree keeps
 *     at most 3/4 of the slots (6 blocks), and those are a prefix of the prompt, so its
 *     match is 1 .. 6 blocks; another prompt matches nothing;
 *   - a prompt of exactly 8 blocks: afterwards a prompt the table does not hold is still
 *     looked up (an entirely full table would have no empty slot to stop at);
 * each under an alarm, so a hang fails the test at once. */
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "daemon/sched/router.h"
#include "tests/harness/harness.h"

enum { SLOTS = 8, BLOCK = 2, MAX_TOKENS = 64 };

static uint32_t route(struct rs_router *router, struct rs_dispatch *dispatch, uint32_t *tokens,
		      uint32_t len)
{
	struct rs_request request;
	memset(&request, 0, sizeof(request));
	request.tokens = tokens;
	request.prompt_len = len;
	bool in_service[1] = {true};
	struct rs_dispatch_candidate scratch[1];
	return rs_router_route(router, dispatch, &request, in_service, scratch);
}

int main(void)
{
	struct rs_dispatch_params params = {.policy = RS_DISPATCH_ROUND_ROBIN};
	struct rs_dispatch *dispatch;
	CHECK(rs_dispatch_create(&params, 1, 4, 1.0, 1.0, &dispatch) == 0, "dispatch");
	uint32_t a[MAX_TOKENS], b[MAX_TOKENS];
	for (uint32_t i = 0; i < MAX_TOKENS; i++) {
		a[i] = 1000 + i;
		b[i] = 5000 + i;
	}

	struct rs_router *router;
	CHECK(rs_router_create(1, BLOCK, SLOTS, &router) == 0, "router");
	alarm(10);
	CHECK(route(router, dispatch, a, 10 * BLOCK) == 0, "one worker");
	uint32_t matched = rs_router_match_blocks(router, 0, a, 10 * BLOCK);
	CHECK(matched >= 1 && matched <= SLOTS / 4 * 3, "a prompt of 10 blocks matches %u",
	      matched);
	CHECK(rs_router_match_blocks(router, 0, b, 10 * BLOCK) == 0, "another prompt matches");
	CHECK(rs_router_load(router, 0) == 1, "load %u", rs_router_load(router, 0));
	rs_router_done(router, 0);
	rs_router_destroy(router);

	CHECK(rs_router_create(1, BLOCK, SLOTS, &router) == 0, "router");
	route(router, dispatch, a, SLOTS * BLOCK);
	CHECK(rs_router_match_blocks(router, 0, b, SLOTS * BLOCK) == 0, "another prompt matches");
	route(router, dispatch, b, 3 * BLOCK);
	CHECK(rs_router_match_blocks(router, 0, b, 3 * BLOCK) == 3, "b's 3 blocks after routing");
	alarm(0);
	rs_router_destroy(router);
	rs_dispatch_destroy(dispatch);
	return T_EXIT_PASS;
}
