/* Dispatch policies: which worker an admitted request runs on (dispatch.h). */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/dispatch.h"

struct rs_dispatch {
	struct rs_dispatch_params params;
	uint32_t workers, max_tenants;
	double w_prompt, w_output;
	uint32_t next;	 /* round-robin's turn */
	double *deficit; /* d2lpm: [tenant id * workers + worker] */
};

static const char *const names[] = {
    [RS_DISPATCH_D2LPM] = "d2lpm",
    [RS_DISPATCH_ROUND_ROBIN] = "round-robin",
    [RS_DISPATCH_LEAST_LOADED] = "least-loaded",
    [RS_DISPATCH_CACHE_AWARE] = "cache-aware",
};

int rs_dispatch_policy_parse(const char *name, enum rs_dispatch_policy *policy)
{
	for (uint32_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i]) == 0) {
			*policy = (enum rs_dispatch_policy)i;
			return 0;
		}
	return -EINVAL;
}

const char *rs_dispatch_policy_name(enum rs_dispatch_policy policy)
{
	return (unsigned)policy < sizeof(names) / sizeof(names[0]) ? names[policy] : "?";
}

int rs_dispatch_create(const struct rs_dispatch_params *params, uint32_t workers,
		       uint32_t max_tenants, double w_prompt, double w_output,
		       struct rs_dispatch **out)
{
	if ((unsigned)params->policy > RS_DISPATCH_CACHE_AWARE || !workers || !max_tenants ||
	    params->cache_threshold < 0 || params->cache_threshold > 1 || params->quantum < 0 ||
	    params->balance_rel < 0 || !(w_prompt > 0) || !(w_output > 0))
		return -EINVAL;
	struct rs_dispatch *dispatch = calloc(1, sizeof(*dispatch));
	if (!dispatch)
		return -ENOMEM;
	dispatch->params = *params;
	if (!dispatch->params.cache_threshold)
		dispatch->params.cache_threshold = 0.5;
	if (!dispatch->params.quantum)
		dispatch->params.quantum = 65536;
	if (!dispatch->params.balance_abs)
		dispatch->params.balance_abs = 32;
	if (!dispatch->params.balance_rel)
		dispatch->params.balance_rel = 1.0001;
	if (!dispatch->params.lookahead)
		dispatch->params.lookahead = 4;
	if (!dispatch->params.load_threshold)
		dispatch->params.load_threshold = 1; /* the core passes max_batch / 2 */
	dispatch->workers = workers;
	dispatch->max_tenants = max_tenants;
	dispatch->w_prompt = w_prompt;
	dispatch->w_output = w_output;
	if (params->policy == RS_DISPATCH_D2LPM) {
		dispatch->deficit = calloc((size_t)workers * max_tenants, sizeof(double));
		if (!dispatch->deficit) {
			free(dispatch);
			return -ENOMEM;
		}
	}
	*out = dispatch;
	return 0;
}

void rs_dispatch_destroy(struct rs_dispatch *dispatch)
{
	if (!dispatch)
		return;
	free(dispatch->deficit);
	free(dispatch);
}

/* The least-loaded candidate (ties: the first, i.e. the lower worker index). */
static uint32_t least_loaded(const struct rs_dispatch_candidate *c, uint32_t n)
{
	uint32_t best = 0;
	for (uint32_t i = 1; i < n; i++)
		if (c[i].load < c[best].load)
			best = i;
	return best;
}

/* Longer match first, then lower load, then the first. `allowed` may be NULL. */
static uint32_t longest_match(const struct rs_dispatch_candidate *c, uint32_t n,
			      const bool *allowed)
{
	uint32_t best = UINT32_MAX;
	for (uint32_t i = 0; i < n; i++) {
		if (allowed && !allowed[i])
			continue;
		if (best == UINT32_MAX || c[i].matched_tokens > c[best].matched_tokens ||
		    (c[i].matched_tokens == c[best].matched_tokens && c[i].load < c[best].load))
			best = i;
	}
	return best;
}

static double *deficit_of(const struct rs_dispatch *d, const struct rs_tenant *tenant,
			  uint32_t worker)
{
	return &d->deficit[(size_t)tenant->id * d->workers + worker];
}

static uint32_t choose_cache_aware(const struct rs_dispatch *d, const struct rs_request *request,
				   const struct rs_dispatch_candidate *c, uint32_t n)
{
	uint32_t least = least_loaded(c, n), most = 0;
	for (uint32_t i = 1; i < n; i++)
		if (c[i].load > c[most].load)
			most = i;
	if (c[most].load - c[least].load > d->params.balance_abs &&
	    c[most].load > d->params.balance_rel * c[least].load)
		return least; /* imbalanced: shortest queue */
	uint32_t best = longest_match(c, n, NULL);
	if ((double)c[best].matched_tokens > d->params.cache_threshold * request->prompt_len)
		return best;
	uint32_t smallest = 0; /* the most room to cache (ties: the first) */
	for (uint32_t i = 1; i < n; i++)
		if (c[i].cached_blocks < c[smallest].cached_blocks)
			smallest = i;
	return smallest;
}

uint32_t rs_dispatch_choose(struct rs_dispatch *dispatch, const struct rs_request *request,
			    const struct rs_dispatch_candidate *candidates, uint32_t n)
{
	switch (dispatch->params.policy) {
	case RS_DISPATCH_D2LPM: /* the core lets d2lpm's workers choose (sched.c) instead */
		return longest_match(candidates, n, NULL);
	case RS_DISPATCH_ROUND_ROBIN: {
		/* The first candidate at or after the turn, in worker order. */
		uint32_t best = 0, best_distance = UINT32_MAX;
		for (uint32_t i = 0; i < n; i++) {
			uint32_t distance =
			    (candidates[i].worker + dispatch->workers - dispatch->next) %
			    dispatch->workers;
			if (distance < best_distance) {
				best_distance = distance;
				best = i;
			}
		}
		dispatch->next = (candidates[best].worker + 1) % dispatch->workers;
		return best;
	}
	case RS_DISPATCH_LEAST_LOADED:
		return least_loaded(candidates, n);
	case RS_DISPATCH_CACHE_AWARE:
		return choose_cache_aware(dispatch, request, candidates, n);
	}
	return 0;
}

void rs_dispatch_charge_output(struct rs_dispatch *dispatch, const struct rs_tenant *tenant,
			       uint32_t worker, uint32_t n_tokens)
{
	if (dispatch->deficit)
		*deficit_of(dispatch, tenant, worker) -= dispatch->w_output * n_tokens;
}

double rs_dispatch_deficit(const struct rs_dispatch *dispatch, const struct rs_tenant *tenant,
			   uint32_t worker)
{
	return dispatch->deficit ? *deficit_of(dispatch, tenant, worker) : 0;
}

bool rs_dispatch_worker_chooses(const struct rs_dispatch *dispatch)
{
	return dispatch->params.policy == RS_DISPATCH_D2LPM;
}

uint32_t rs_dispatch_lookahead(const struct rs_dispatch *dispatch)
{
	return dispatch->params.lookahead;
}

bool rs_dispatch_eligible(const struct rs_dispatch *dispatch, const struct rs_tenant *tenant,
			  uint32_t worker)
{
	return *deficit_of(dispatch, tenant, worker) > 0;
}

/* As admission_dlpm.c's refill, on one worker's deficits: k rounds, k = min over the
 * backlogged of floor(-deficit / (Q * weight)) + 1, so that every tenant ends at most at
 * Q * weight; more (doubling) only when rounding left nobody eligible. */
void rs_dispatch_round(struct rs_dispatch *dispatch, uint32_t worker,
		       struct rs_tenant *const *backlogged, uint32_t n)
{
	double rounds = INFINITY, quantum = dispatch->params.quantum;
	for (uint32_t i = 0; i < n; i++) {
		double need = floor(-*deficit_of(dispatch, backlogged[i], worker) /
				    (quantum * backlogged[i]->weight)) +
			      1;
		if (need < rounds)
			rounds = need;
	}
	for (double more = 1;; more *= 2) {
		bool any = false;
		for (uint32_t i = 0; i < n; i++) {
			double *deficit = deficit_of(dispatch, backlogged[i], worker);
			*deficit += rounds * quantum * backlogged[i]->weight;
			any |= *deficit > 0;
		}
		if (any || !n)
			return;
		rounds = more;
	}
}

void rs_dispatch_charge_prompt(struct rs_dispatch *dispatch, const struct rs_tenant *tenant,
			       uint32_t worker, uint32_t uncached_tokens)
{
	if (dispatch->deficit)
		*deficit_of(dispatch, tenant, worker) -= dispatch->w_prompt * uncached_tokens;
}

void rs_dispatch_tenant_idle(struct rs_dispatch *dispatch, const struct rs_tenant *tenant)
{
	for (uint32_t w = 0; dispatch->deficit && w < dispatch->workers; w++)
		if (*deficit_of(dispatch, tenant, w) > 0)
			*deficit_of(dispatch, tenant, w) = 0;
}
