/* lpm: the longest cached prefix first, ties in arrival order, over all tenants. Not fair:
 * a tenant whose prompts never hit the cache waits while others keep hitting it.
 *
 * A pairing heap keyed (match_blocks descending, arrival ascending): peek O(1), enqueue
 * O(1), take, remove and a match change O(log n) amortized (a change is remove + insert),
 * so the cost does not grow with the queue the way sorting it each step would. Requests
 * that arrive in that order (no match yet, by arrival) go to the queue's run instead, at
 * O(1) for everything (admission_ops.h).
 *
 * Requests that come back after preemption (front) go before all others, in a list (the
 * last one put back goes first): they were admitted once already, and holding them behind
 * newer cache hits would stall outputs already under way. */
#include <errno.h>
#include <stdlib.h>

#include "daemon/sched/admission_ops.h"

struct lpm {
	struct rs_pqueue queue;
	struct rs_request *front; /* preempted, waiting again */
};

/* Returns 0 or -ENOMEM. */
static int lpm_init(struct rs_admission *admission)
{
	struct lpm *lpm = calloc(1, sizeof(*lpm));
	if (!lpm)
		return -ENOMEM;
	admission->policy = lpm;
	return 0;
}

/* Requests still queued are not ours to free. */
static void lpm_fini(struct rs_admission *admission)
{
	free(admission->policy);
}

/* Back: into the heap by its key; front: ahead of everything (see the top of the file). */
static void lpm_enqueue(struct rs_admission *admission, struct rs_request *request, bool front)
{
	struct lpm *lpm = admission->policy;
	if (front)
		rs_front_list_push(&lpm->front, request);
	else
		rs_pqueue_insert(&lpm->queue, request, rs_request_longer_match);
}

/* From whichever of the two it is in. */
static void lpm_remove(struct rs_admission *admission, struct rs_request *request)
{
	struct lpm *lpm = admission->policy;
	if (rs_front_list_has(request))
		rs_front_list_remove(&lpm->front, request);
	else
		rs_pqueue_remove(&lpm->queue, request, rs_request_longer_match);
}

/* A preempted request if one waits, else the longest match. */
static struct rs_request *lpm_peek(struct rs_admission *admission)
{
	struct lpm *lpm = admission->policy;
	return lpm->front ? lpm->front : rs_pqueue_first(&lpm->queue, rs_request_longer_match);
}

/* lpm keeps no account of its own: the service account is kept by admission.c. */
static void lpm_take(struct rs_admission *admission, struct rs_request *request, double charge)
{
	lpm_remove(admission, request);
}

/* Reposition the request: its key changed. The front list is not keyed. */
static void lpm_match_changed(struct rs_admission *admission, struct rs_request *request)
{
	struct lpm *lpm = admission->policy;
	if (rs_front_list_has(request))
		return;
	rs_pqueue_remove(&lpm->queue, request, rs_request_longer_match);
	rs_pqueue_insert(&lpm->queue, request, rs_request_longer_match);
}

const struct rs_admission_ops rs_admission_lpm_ops = {
    .name = "lpm",
    .charge_whole_prompt = false,
    .init = lpm_init,
    .fini = lpm_fini,
    .enqueue = lpm_enqueue,
    .remove = lpm_remove,
    .peek = lpm_peek,
    .take = lpm_take,
    .match_changed = lpm_match_changed,
};
