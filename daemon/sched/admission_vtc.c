/* vtc: the Virtual Token Counter (Sheng et al., "Fairness in Serving Large Language
 * Models", OSDI 2024, Algorithm 2).
 *
 * Each tenant's counter (tenant->counter) grows by its charges divided by its weight:
 * w_p per prompt token at admission (the whole prompt: VTC does not discount cache hits)
 * and w_q per generated token. The backlogged tenant (one with waiting requests) with the
 * smallest counter goes next, its oldest request first. A tenant that becomes backlogged
 * is lifted to the smallest counter among the backlogged tenants, or, when none is, to the
 * counter of the last tenant that stopped being backlogged (as the paper's Algorithm 2
 * does: without it, a tenant that was idle while another was served alone keeps its low
 * counter and, once both are backlogged, takes every admission until it has caught up,
 * an unbounded service difference). Counters are never lowered.
 *
 * State: a FIFO of waiting requests per tenant (queue_next/queue_prev; a request that
 * comes back after preemption goes to its head) and an indexed binary min-heap of the
 * backlogged tenants keyed (counter, id). Every operation is O(1) or O(log tenants). */
#include <errno.h>
#include <stdlib.h>

#include "daemon/sched/admission_ops.h"

struct vtc_fifo {
	struct rs_request *head, *tail;
};

struct vtc {
	struct rs_tenant **tenants; /* by id, set at enqueue */
	struct vtc_fifo *fifos;	    /* by id */
	struct rs_tenant_heap backlogged;
	double floor; /* counter of the last tenant to leave an empty heap */
};

/* Smaller counter first, then smaller id. */
static bool counter_before(const void *context, uint32_t a, uint32_t b)
{
	const struct vtc *vtc = context;
	double ca = vtc->tenants[a]->counter, cb = vtc->tenants[b]->counter;
	if (ca != cb)
		return ca < cb;
	return a < b;
}

/* Also undoes a partial vtc_init. Requests still queued are not ours to free. */
static void vtc_fini(struct rs_admission *admission)
{
	struct vtc *vtc = admission->policy;
	if (!vtc)
		return;
	free(vtc->tenants);
	free(vtc->fifos);
	free(vtc->backlogged.ids);
	free(vtc->backlogged.pos);
	free(vtc);
}

/* Arrays by tenant id, allocated once. Returns 0 or -ENOMEM. */
static int vtc_init(struct rs_admission *admission)
{
	uint32_t n = admission->params.max_tenants;
	struct vtc *vtc = calloc(1, sizeof(*vtc));
	if (!vtc)
		return -ENOMEM;
	admission->policy = vtc;
	vtc->tenants = calloc(n, sizeof(*vtc->tenants));
	vtc->fifos = calloc(n, sizeof(*vtc->fifos));
	vtc->backlogged.ids = calloc(n, sizeof(*vtc->backlogged.ids));
	vtc->backlogged.pos = malloc(n * sizeof(*vtc->backlogged.pos));
	if (!vtc->tenants || !vtc->fifos || !vtc->backlogged.ids || !vtc->backlogged.pos) {
		vtc_fini(admission);
		admission->policy = NULL;
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++)
		vtc->backlogged.pos[i] = RS_TENANT_HEAP_NONE;
	vtc->backlogged.before = counter_before;
	vtc->backlogged.context = vtc;
	return 0;
}

/* The tenant just became backlogged: lift its counter (see the top of the file). */
static void vtc_lift(struct vtc *vtc, struct rs_tenant *tenant)
{
	double low = vtc->floor;
	if (vtc->backlogged.n > 0)
		low = vtc->tenants[vtc->backlogged.ids[0]]->counter;
	if (tenant->counter < low)
		tenant->counter = low;
}

/* Back: the tail of its tenant's FIFO; front: the head. A newly backlogged tenant is
 * lifted, then joins the heap. */
static void vtc_enqueue(struct rs_admission *admission, struct rs_request *request, bool front)
{
	struct vtc *vtc = admission->policy;
	struct rs_tenant *tenant = request->tenant;
	struct vtc_fifo *fifo = &vtc->fifos[tenant->id];
	request->heap_child = NULL;
	if (front) {
		request->queue_prev = NULL;
		request->queue_next = fifo->head;
		if (fifo->head)
			fifo->head->queue_prev = request;
		else
			fifo->tail = request;
		fifo->head = request;
	} else {
		request->queue_next = NULL;
		request->queue_prev = fifo->tail;
		if (fifo->tail)
			fifo->tail->queue_next = request;
		else
			fifo->head = request;
		fifo->tail = request;
	}
	if (tenant->waiting == 1) {
		vtc->tenants[tenant->id] = tenant;
		vtc_lift(vtc, tenant);
		rs_tenant_heap_push(&vtc->backlogged, tenant->id);
	}
}

/* Unlink the request; a tenant left with nothing waiting leaves the heap. */
static void vtc_remove(struct rs_admission *admission, struct rs_request *request)
{
	struct vtc *vtc = admission->policy;
	struct rs_tenant *tenant = request->tenant;
	struct vtc_fifo *fifo = &vtc->fifos[tenant->id];
	if (request->queue_prev)
		request->queue_prev->queue_next = request->queue_next;
	else
		fifo->head = request->queue_next;
	if (request->queue_next)
		request->queue_next->queue_prev = request->queue_prev;
	else
		fifo->tail = request->queue_prev;
	request->queue_next = request->queue_prev = NULL;
	if (tenant->waiting == 0) {
		rs_tenant_heap_remove(&vtc->backlogged, tenant->id);
		if (vtc->backlogged.n == 0 && vtc->floor < tenant->counter)
			vtc->floor = tenant->counter;
	}
}

/* The oldest request of the backlogged tenant with the smallest counter. */
static struct rs_request *vtc_peek(struct rs_admission *admission)
{
	struct vtc *vtc = admission->policy;
	if (vtc->backlogged.n == 0)
		return NULL;
	return vtc->fifos[vtc->backlogged.ids[0]].head;
}

/* counter += charge / weight; a larger key only ever moves down the min-heap. */
static void vtc_charge(struct vtc *vtc, struct rs_tenant *tenant, double charge)
{
	tenant->counter += charge / tenant->weight;
	if (rs_tenant_heap_has(&vtc->backlogged, tenant->id))
		rs_tenant_heap_down(&vtc->backlogged, vtc->backlogged.pos[tenant->id]);
}

/* Charge before the tenant can leave the heap, so the floor includes this prompt. */
static void vtc_take(struct rs_admission *admission, struct rs_request *request, double charge)
{
	struct vtc *vtc = admission->policy;
	vtc_charge(vtc, request->tenant, charge);
	vtc_remove(admission, request);
}

/* Charged whether backlogged or not: running requests keep costing their tenant. */
static void vtc_charge_output(struct rs_admission *admission, struct rs_tenant *tenant,
			      double charge)
{
	vtc_charge(admission->policy, tenant, charge);
}

const struct rs_admission_ops rs_admission_vtc_ops = {
    .name = "vtc",
    .charge_whole_prompt = true,
    .init = vtc_init,
    .fini = vtc_fini,
    .enqueue = vtc_enqueue,
    .remove = vtc_remove,
    .peek = vtc_peek,
    .take = vtc_take,
    .charge_output = vtc_charge_output,
};
