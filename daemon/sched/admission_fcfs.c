/* fcfs: first come, first served, over all tenants.
 *
 * One queue keyed by arrival (admission_ops.h: new arrivals append to its run in O(1), a
 * request that comes back after preemption goes into its pairing heap) rather than a list: a
 * request that comes back after preemption goes exactly where its arrival puts it (before every
 * later arrival, after any earlier one also waiting again), and nothing depends on enqueues coming
 * in arrival order. front is therefore not needed: arrival order already puts a preempted request
 * before its tenant's later requests. */
#include <errno.h>
#include <stdlib.h>

#include "daemon/sched/admission_ops.h"

struct fcfs {
	struct rs_pqueue queue;
};

/* The pairing heap's order: arrivals are unique, so it is total. */
static bool arrived_before(const struct rs_request *a, const struct rs_request *b)
{
	return a->arrival < b->arrival;
}

/* Returns 0 or -ENOMEM. */
static int fcfs_init(struct rs_admission *admission)
{
	struct fcfs *fcfs = calloc(1, sizeof(*fcfs));
	if (!fcfs)
		return -ENOMEM;
	admission->policy = fcfs;
	return 0;
}

/* Requests still queued are not ours to free. */
static void fcfs_fini(struct rs_admission *admission)
{
	free(admission->policy);
}

/* In arrival order whatever front says (see the top of the file). */
static void fcfs_enqueue(struct rs_admission *admission, struct rs_request *request, bool front)
{
	struct fcfs *fcfs = admission->policy;
	rs_pqueue_insert(&fcfs->queue, request, arrived_before);
}

/* O(1) from the run, O(log n) amortized from anywhere in the heap. */
static void fcfs_remove(struct rs_admission *admission, struct rs_request *request)
{
	struct fcfs *fcfs = admission->policy;
	rs_pqueue_remove(&fcfs->queue, request, arrived_before);
}

/* The earliest arrival. */
static struct rs_request *fcfs_peek(struct rs_admission *admission)
{
	struct fcfs *fcfs = admission->policy;
	return rs_pqueue_first(&fcfs->queue, arrived_before);
}

/* fcfs keeps no account of its own: the service account is kept by admission.c. */
static void fcfs_take(struct rs_admission *admission, struct rs_request *request, double charge)
{
	fcfs_remove(admission, request);
}

const struct rs_admission_ops rs_admission_fcfs_ops = {
    .name = "fcfs",
    .charge_whole_prompt = false,
    .init = fcfs_init,
    .fini = fcfs_fini,
    .enqueue = fcfs_enqueue,
    .remove = fcfs_remove,
    .peek = fcfs_peek,
    .take = fcfs_take,
};
