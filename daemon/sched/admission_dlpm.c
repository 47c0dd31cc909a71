/* dlpm: Deficit Longest Prefix Match (Cao et al., "Locality-aware Fair Scheduling in LLM
 * Serving", 2025): deficit round robin across tenants, longest cached prefix within.
 *
 * Among the waiting requests of eligible tenants (backlogged, deficit > 0), the longest
 * cached prefix goes first, ties in arrival order. Admission charges w_p per uncached
 * prompt token, each generated token w_q; both come off tenant->deficit. When no tenant
 * is eligible but some are backlogged, every backlogged tenant gets Q * weight (a round);
 * peek gives as many rounds at once as it takes for one tenant to become eligible, which
 * is what repeated single rounds would do, in O(backlogged).
 *
 * Units. The deficit is in raw weighted tokens (w_p * tokens + w_q * tokens), and the
 * weight scales the quantum (Q * weight per round) rather than dividing the charges: the
 * same thing as DRR with per-tenant quanta. deficit / weight is then a tenant's balance in
 * the units of tenant->service (charges / weight, as for every policy), which is how
 * docs/scheduling.md states the fairness bound: for a backlogged tenant,
 * -(w_p L + S w_q M) / weight <= deficit / weight <= Q.
 *
 * A tenant that stops being backlogged keeps a debt but no credit: a positive deficit is
 * clamped to 0 (credit saved while idle would let it burst later), a negative one stays
 * (reconnecting or pausing does not wipe what it owes). Its running requests keep
 * charging it after that.
 *
 * State per tenant id: a queue of its waiting requests keyed (match_blocks desc, arrival
 * asc; a pairing heap plus a run of those that arrive in order, admission_ops.h) and a
 * front list of those that came back after preemption, which go first (last put back
 * first); its best request is the head of the front list, else the first of the queue. An indexed
 * binary max-heap holds the eligible tenants keyed by their best request, and an array the
 * backlogged ones (for the rounds). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "daemon/sched/admission_ops.h"

struct dlpm_tenant {
	struct rs_tenant *tenant;  /* set at enqueue */
	struct rs_pqueue queue;	   /* its pairing heap and run (admission_ops.h) */
	struct rs_request *front;  /* front list */
	uint32_t backlogged_index; /* in dlpm->backlogged while it has waiting requests */
};

struct dlpm {
	struct dlpm_tenant *tenants; /* by id */
	struct rs_tenant_heap eligible;
	uint32_t *backlogged; /* ids, unordered */
	uint32_t n_backlogged;
	double quantum;
};

/* What the tenant would admit next: a preempted request, else its longest match. */
static struct rs_request *best_request(const struct dlpm_tenant *t)
{
	return t->front ? t->front : rs_pqueue_first(&t->queue, rs_request_longer_match);
}

/* The tenant whose best request goes first (ids are unique tie-breakers already: the best
 * requests' arrivals differ). */
static bool best_before(const void *context, uint32_t a, uint32_t b)
{
	const struct dlpm *dlpm = context;
	return rs_request_longer_match(best_request(&dlpm->tenants[a]),
				       best_request(&dlpm->tenants[b]));
}

/* Also undoes a partial dlpm_init. Requests still queued are not ours to free. */
static void dlpm_fini(struct rs_admission *admission)
{
	struct dlpm *dlpm = admission->policy;
	if (!dlpm)
		return;
	free(dlpm->tenants);
	free(dlpm->eligible.ids);
	free(dlpm->eligible.pos);
	free(dlpm->backlogged);
	free(dlpm);
}

/* Arrays by tenant id, allocated once. Returns 0 or -ENOMEM. */
static int dlpm_init(struct rs_admission *admission)
{
	uint32_t n = admission->params.max_tenants;
	struct dlpm *dlpm = calloc(1, sizeof(*dlpm));
	if (!dlpm)
		return -ENOMEM;
	admission->policy = dlpm;
	dlpm->tenants = calloc(n, sizeof(*dlpm->tenants));
	dlpm->eligible.ids = calloc(n, sizeof(*dlpm->eligible.ids));
	dlpm->eligible.pos = malloc(n * sizeof(*dlpm->eligible.pos));
	dlpm->backlogged = calloc(n, sizeof(*dlpm->backlogged));
	if (!dlpm->tenants || !dlpm->eligible.ids || !dlpm->eligible.pos || !dlpm->backlogged) {
		dlpm_fini(admission);
		admission->policy = NULL;
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++)
		dlpm->eligible.pos[i] = RS_TENANT_HEAP_NONE;
	dlpm->eligible.before = best_before;
	dlpm->eligible.context = dlpm;
	dlpm->quantum = admission->params.quantum;
	return 0;
}

/* Out of line: the heap's loops would make every update_tenant save registers. */
static __attribute__((noinline)) void move_tenant(struct dlpm *dlpm, uint32_t id)
{
	rs_tenant_heap_fix(&dlpm->eligible, id);
}

/* Out of line too, for the same reason: a tenant enters or leaves the heap only when its
 * queue fills or empties or its deficit crosses 0, not at every request. */
static __attribute__((noinline)) void set_eligible(struct dlpm *dlpm, uint32_t id, bool eligible)
{
	if (eligible)
		rs_tenant_heap_push(&dlpm->eligible, id);
	else
		rs_tenant_heap_remove(&dlpm->eligible, id);
}

/* Put the tenant in or out of the eligible heap, or move it there: call after anything
 * that changes its deficit, its waiting count or its best request (best_changed: its key
 * in the heap may have moved; the deficit only decides whether it is in the heap). */
static inline void update_tenant(struct dlpm *dlpm, struct rs_tenant *tenant, bool best_changed)
{
	bool eligible = tenant->waiting > 0 && tenant->deficit > 0;
	bool in_heap = rs_tenant_heap_has(&dlpm->eligible, tenant->id);
	if (eligible == in_heap) {
		/* A heap of one has nowhere to move it (one tenant at a time is common). */
		if (eligible && best_changed && dlpm->eligible.n > 1)
			move_tenant(dlpm, tenant->id);
		return;
	}
	set_eligible(dlpm, tenant->id, eligible);
}

/* Back: into the tenant's heap; front: the head of its front list. A newly backlogged
 * tenant joins the backlogged array (its deficit is what it was: a debt stays). */
static void dlpm_enqueue(struct rs_admission *admission, struct rs_request *request, bool front)
{
	struct dlpm *dlpm = admission->policy;
	struct rs_tenant *tenant = request->tenant;
	struct dlpm_tenant *t = &dlpm->tenants[tenant->id];
	if (front)
		rs_front_list_push(&t->front, request);
	else
		rs_pqueue_insert(&t->queue, request, rs_request_longer_match);
	if (tenant->waiting == 1) {
		t->tenant = tenant;
		t->backlogged_index = dlpm->n_backlogged;
		dlpm->backlogged[dlpm->n_backlogged++] = tenant->id;
	}
	update_tenant(dlpm, tenant, true);
}

/* Unlink the request. A tenant left with nothing waiting leaves the backlogged set and
 * keeps its debt but not its credit. Inlined into take (once an admission) and remove. */
static inline __attribute__((always_inline)) void unlink_request(struct dlpm *dlpm,
								 struct rs_request *request)
{
	struct rs_tenant *tenant = request->tenant;
	struct dlpm_tenant *t = &dlpm->tenants[tenant->id];
	if (rs_front_list_has(request))
		rs_front_list_remove(&t->front, request);
	else
		rs_pqueue_remove(&t->queue, request, rs_request_longer_match);
	if (tenant->waiting == 0) {
		uint32_t last = dlpm->backlogged[--dlpm->n_backlogged];
		dlpm->backlogged[t->backlogged_index] = last;
		dlpm->tenants[last].backlogged_index = t->backlogged_index;
		if (tenant->deficit > 0)
			tenant->deficit = 0;
	}
	update_tenant(dlpm, tenant, true);
}

/* Cancelled: no charge. */
static void dlpm_remove(struct rs_admission *admission, struct rs_request *request)
{
	unlink_request(admission->policy, request);
}

/* No backlogged tenant has a positive deficit: give each backlogged tenant the rounds it
 * takes for the first of them to get one. k rounds, k = min over them of
 * floor(-deficit / (Q * weight)) + 1; every tenant that needed k or more ends at most at
 * Q * weight, so the bound on the deficit holds as with single rounds. */
static void refill(struct dlpm *dlpm)
{
	double rounds = INFINITY;
	for (uint32_t i = 0; i < dlpm->n_backlogged; i++) {
		const struct rs_tenant *tenant = dlpm->tenants[dlpm->backlogged[i]].tenant;
		double need = floor(-tenant->deficit / (dlpm->quantum * tenant->weight)) + 1;
		if (need < rounds)
			rounds = need;
	}
	/* Rounding can leave the nearest tenant at 0 or below: then more rounds, doubling so
	 * that a quantum below the deficit's precision cannot loop forever. */
	for (double more = 1; dlpm->eligible.n == 0; more *= 2) {
		for (uint32_t i = 0; i < dlpm->n_backlogged; i++) {
			struct rs_tenant *tenant = dlpm->tenants[dlpm->backlogged[i]].tenant;
			tenant->deficit += rounds * dlpm->quantum * tenant->weight;
			update_tenant(dlpm, tenant, false);
		}
		rounds = more;
	}
}

/* The best request of the eligible tenant whose best request goes first; refills first
 * when no tenant is eligible. */
static struct rs_request *dlpm_peek(struct rs_admission *admission)
{
	struct dlpm *dlpm = admission->policy;
	if (dlpm->n_backlogged == 0)
		return NULL;
	if (dlpm->eligible.n == 0)
		refill(dlpm);
	return best_request(&dlpm->tenants[dlpm->eligible.ids[0]]);
}

/* Charge before unlinking: a tenant that takes its last request with too small a deficit
 * keeps the debt. */
static void dlpm_take(struct rs_admission *admission, struct rs_request *request, double charge)
{
	request->tenant->deficit -= charge;
	unlink_request(admission->policy, request);
}

/* Reposition the request in its tenant's heap (the front list is not keyed), and the
 * tenant in the eligible heap: its best request may have changed either way. */
static void dlpm_match_changed(struct rs_admission *admission, struct rs_request *request)
{
	struct dlpm *dlpm = admission->policy;
	struct dlpm_tenant *t = &dlpm->tenants[request->tenant->id];
	if (!rs_front_list_has(request)) {
		rs_pqueue_remove(&t->queue, request, rs_request_longer_match);
		rs_pqueue_insert(&t->queue, request, rs_request_longer_match);
	}
	update_tenant(dlpm, request->tenant, true);
}

/* Charged whether backlogged or not: running requests keep costing their tenant. */
static void dlpm_charge_output(struct rs_admission *admission, struct rs_tenant *tenant,
			       double charge)
{
	tenant->deficit -= charge;
	if (tenant->waiting > 0)
		update_tenant(admission->policy, tenant, false);
}

const struct rs_admission_ops rs_admission_dlpm_ops = {
    .name = "dlpm",
    .charge_whole_prompt = false,
    .init = dlpm_init,
    .fini = dlpm_fini,
    .enqueue = dlpm_enqueue,
    .remove = dlpm_remove,
    .peek = dlpm_peek,
    .take = dlpm_take,
    .match_changed = dlpm_match_changed,
    .charge_output = dlpm_charge_output,
};
