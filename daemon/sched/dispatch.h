/* Dispatch: which worker an admitted request runs on, when the core has several.
 *
 * A worker is an engine instance with its own KV pool, its own prefix cache and its own
 * lanes (sched.h). The admission policy (admission.h) says which request is admitted next,
 * over all workers; the dispatch policy then says on which worker it runs, for its whole
 * life (its blocks live in that worker's pool). Four policies, chosen at start
 * (`--dispatch`, docs/scheduling.md states each rule):
 *
 *   d2lpm         DLPM across workers (Cao et al. 2025): a deficit per tenant per worker,
 *                 and the *worker* chooses the request (the core, sched.c, with the calls
 *                 at the end of this file): a worker with a free seat takes, among the
 *                 waiting requests of tenants with a positive deficit there (the first
 *                 `lookahead` of each), the one with the longest prefix in its own cache,
 *                 unless another worker with a free seat caches strictly more of it (load
 *                 within load_threshold of the least-loaded). Admitting on worker w charges
 *                 the tenant's deficit there w_p per prompt token uncached on w; each token
 *                 generated there, w_q. Rounds per worker as DLPM's. The core does not
 *                 call rs_dispatch_choose under d2lpm.
 *   round-robin   the next worker in turn.
 *   least-loaded  the worker with the fewest requests running (ties: lower index).
 *   cache-aware   SGLang's router: when loads are imbalanced (max - min > balance_abs
 *                 and max > balance_rel x min), the least-loaded ("shortest queue");
 *                 else when the longest cached prefix over the workers covers more than
 *                 cache_threshold of the prompt, that worker; else the worker whose
 *                 prefix cache holds the fewest blocks (the most room to cache).
 *
 * Baselines: candidates are the workers with a free seat (load below its lanes x
 * max_batch); the core admits only when one exists. Load: requests admitted to the worker and not
 * yet finished. No allocation after creation. */
#ifndef RS_DAEMON_SCHED_DISPATCH_H
#define RS_DAEMON_SCHED_DISPATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/sched/request.h"
#include "daemon/sched/tenant.h"

enum rs_dispatch_policy {
	RS_DISPATCH_D2LPM = 0,
	RS_DISPATCH_ROUND_ROBIN,
	RS_DISPATCH_LEAST_LOADED,
	RS_DISPATCH_CACHE_AWARE,
};

struct rs_dispatch_params {
	enum rs_dispatch_policy policy;
	uint32_t load_threshold; /* d2lpm: requests; 0: max_batch / 2, at least 1 */
	double cache_threshold;	 /* cache-aware: share of the prompt; 0: 0.5 (SGLang's) */
	uint32_t balance_abs;	 /* cache-aware: load gap in requests; 0: 32 (SGLang's) */
	double balance_rel;	 /* cache-aware: load ratio; 0: 1.0001 (SGLang's) */
	double quantum;		 /* d2lpm: weighted tokens per round per worker; 0: 65536 */
	uint32_t lookahead;	 /* d2lpm: waiting requests per tenant a free seat matches
				  * against its worker's cache; 0: 4 */
	/* A worker whose steps fail this many times in a row is taken out of service (the
	 * core, sched.c): no more dispatch to it, its staged and seated requests wait again
	 * for another worker. Never the last one in service. 0: never. */
	uint32_t max_failures;
	/* Baselines: assign the worker when the request arrives, from the router's view
	 * (router.h: SGLang's router), each worker then admitting its own queue in arrival
	 * order; false: when it is admitted, among the workers with a free seat, from their
	 * real caches. Not with d2lpm (its workers choose at admission). */
	bool at_arrival;
};

/* What the core tells the policy about one candidate worker. */
struct rs_dispatch_candidate {
	uint32_t worker;
	uint32_t matched_tokens; /* of the request's prompt, cached on that worker */
	uint32_t load;		 /* requests running or staged there */
	uint32_t cached_blocks;	 /* blocks its prefix cache holds (its tree's size) */
};

struct rs_dispatch;

/* Parse "d2lpm", "round-robin", "least-loaded", "cache-aware". Returns 0 or -EINVAL. */
int rs_dispatch_policy_parse(const char *name, enum rs_dispatch_policy *policy);
const char *rs_dispatch_policy_name(enum rs_dispatch_policy policy);

/* For `workers` workers and tenant ids below max_tenants; w_prompt and w_output as the
 * admission policy's (resolved, nonzero). Returns 0, -EINVAL, -ENOMEM. */
int rs_dispatch_create(const struct rs_dispatch_params *params, uint32_t workers,
		       uint32_t max_tenants, double w_prompt, double w_output,
		       struct rs_dispatch **out);
void rs_dispatch_destroy(struct rs_dispatch *dispatch);

/* The index in candidates[0 .. n) (n >= 1) of the worker the request goes to, under the
 * baselines (d2lpm: the longest match; the core lets its workers choose instead). */
uint32_t rs_dispatch_choose(struct rs_dispatch *dispatch, const struct rs_request *request,
			    const struct rs_dispatch_candidate *candidates, uint32_t n);

/* The tenant generated n tokens on the worker (d2lpm charges its deficit there). */
void rs_dispatch_charge_output(struct rs_dispatch *dispatch, const struct rs_tenant *tenant,
			       uint32_t worker, uint32_t n_tokens);

/* --- d2lpm: the worker chooses the request (docs/scheduling.md, "Workers and dispatch") ---
 *
 * Under d2lpm the core does not follow the admission policy's order: a worker with a free
 * seat runs DLPM over the waiting requests with *its own* deficits and *its own* prefix
 * cache (sched.c, pull_choose), and the calls below keep those deficits. Each worker's
 * deficits behave as one DLPM instance's over the tenants backlogged in the core: every
 * admission on a worker happens with the tenant's deficit there positive, a round on a
 * worker happens only when no backlogged tenant has a positive deficit there and goes to
 * every backlogged tenant, and a tenant that stops being backlogged keeps its debts but
 * not its credits. */

/* True when the workers choose their requests (d2lpm). */
bool rs_dispatch_worker_chooses(const struct rs_dispatch *dispatch);

/* Waiting requests per tenant a free seat looks at (the lookahead, resolved). */
uint32_t rs_dispatch_lookahead(const struct rs_dispatch *dispatch);

/* The tenant may be admitted on the worker: its deficit there is positive. */
bool rs_dispatch_eligible(const struct rs_dispatch *dispatch, const struct rs_tenant *tenant,
			  uint32_t worker);

/* No tenant of backlogged[0 .. n) (n >= 1) is eligible on the worker: give each the rounds
 * on that worker it takes for the first of them to become eligible (DLPM's refill). */
void rs_dispatch_round(struct rs_dispatch *dispatch, uint32_t worker,
		       struct rs_tenant *const *backlogged, uint32_t n);

/* The tenant's request was admitted on the worker with uncached_tokens of its prompt not
 * cached there: charge w_p each (the caller skips readmissions after preemption). */
void rs_dispatch_charge_prompt(struct rs_dispatch *dispatch, const struct rs_tenant *tenant,
			       uint32_t worker, uint32_t uncached_tokens);

/* The tenant has no waiting request any more: its positive deficits go to 0. */
void rs_dispatch_tenant_idle(struct rs_dispatch *dispatch, const struct rs_tenant *tenant);

/* d2lpm's deficit of the tenant on the worker (weighted tokens); 0 under other policies. */
double rs_dispatch_deficit(const struct rs_dispatch *dispatch, const struct rs_tenant *tenant,
			   uint32_t worker);

#endif
