/* Dispatch at arrival, as SGLang's router does it (`dispatch.at_arrival`, the baselines):
 * each request is assigned a worker when it is submitted, before any admission, by the
 * router's own view of the workers: the requests it routed to each and that have not ended
 * (its "load"), and the prompts it routed to each (its approximate prefix tree, which it
 * updates when it routes, not when the worker computes). The worker then admits its own
 * queue in arrival order (SGLang's default `--schedule-policy fcfs`).
 *
 * The router's tree is modelled by the hashes of each routed prompt's full-block prefixes
 * (a prompt of n full blocks adds the chains of its first 1 .. n blocks, n at most three
 * quarters of the table), per worker, in an open-addressed table of fixed size; when a
 * table is three quarters full it is
 * emptied (SGLang evicts its tree's least recently used leaves past max_tree_size: ours is
 * cruder, and both forget). A request's match on a worker: its longest prefix of full
 * blocks present there; the tree's size: the entries present. No allocation after
 * creation. */
#ifndef RS_DAEMON_SCHED_ROUTER_H
#define RS_DAEMON_SCHED_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/sched/dispatch.h"
#include "daemon/sched/request.h"

struct rs_router;

/* For `workers` workers, prompts cut in blocks of block_size tokens, tables of `slots`
 * entries per worker (a power of two; 0: 32768). Returns 0, -EINVAL, -ENOMEM. */
int rs_router_create(uint32_t workers, uint32_t block_size, uint32_t slots, struct rs_router **out);
void rs_router_destroy(struct rs_router *router);

/* The worker the request goes to, among those with in_service[w] true (at least one),
 * chosen by the dispatch policy from the router's view (candidates filled in scratch, one
 * entry per worker); the prompt is recorded there and the request counted in its load. */
uint32_t rs_router_route(struct rs_router *router, struct rs_dispatch *dispatch,
			 const struct rs_request *request, const bool *in_service,
			 struct rs_dispatch_candidate *scratch);

/* A request routed to the worker ended (whatever its state). */
void rs_router_done(struct rs_router *router, uint32_t worker);

/* Requests routed to the worker and not ended. */
uint32_t rs_router_load(const struct rs_router *router, uint32_t worker);

/* Full blocks of the prompt the router's view of the worker holds (a read). */
uint32_t rs_router_match_blocks(const struct rs_router *router, uint32_t worker,
				const uint32_t *tokens, uint32_t prompt_len);

#endif
