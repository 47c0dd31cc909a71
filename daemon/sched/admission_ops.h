/* The admission policies' private interface: the operations table each policy file exports,
 * the state common to all (struct rs_admission), and the two intrusive structures they
 * share: a pairing heap of requests and an indexed binary heap of tenant ids.
 *
 * admission.c does what is common to every policy before it calls the table: it keeps
 * tenant->waiting and admission->waiting, applies the defaults, computes each charge and
 * adds charge / weight to tenant->service. The operations see the counts *after* the
 * change (tenant->waiting == 1 in enqueue: the tenant just became backlogged; == 0 in
 * remove or take: it just stopped being). */
#ifndef RS_DAEMON_SCHED_ADMISSION_OPS_H
#define RS_DAEMON_SCHED_ADMISSION_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/sched/admission.h"

struct rs_admission_ops {
	const char *name;
	/* Prompt tokens a first admission is charged for: the whole prompt (vtc) or only
	 * its uncached part (the others). */
	bool charge_whole_prompt;
	/* Allocate the policy's state for admission->params. Returns 0 or -ENOMEM. */
	int (*init)(struct rs_admission *admission);
	void (*fini)(struct rs_admission *admission);
	void (*enqueue)(struct rs_admission *admission, struct rs_request *request, bool front);
	void (*remove)(struct rs_admission *admission, struct rs_request *request);
	struct rs_request *(*peek)(struct rs_admission *admission);
	/* Dequeue the request peek returned; charge is w_p * tokens (0 after preemption),
	 * not yet divided by the weight. */
	void (*take)(struct rs_admission *admission, struct rs_request *request, double charge);
	/* NULL when the policy does not order by match_blocks. */
	void (*match_changed)(struct rs_admission *admission, struct rs_request *request);
	/* charge is w_q * n, not yet divided by the weight. NULL when unused. */
	void (*charge_output)(struct rs_admission *admission, struct rs_tenant *tenant,
			      double charge);
};

extern const struct rs_admission_ops rs_admission_fcfs_ops;
extern const struct rs_admission_ops rs_admission_lpm_ops;
extern const struct rs_admission_ops rs_admission_vtc_ops;
extern const struct rs_admission_ops rs_admission_dlpm_ops;

struct rs_admission {
	const struct rs_admission_ops *ops;
	struct rs_admission_params params; /* defaults applied */
	uint32_t waiting;
	void *policy; /* the policy's own state */
};

/* --- Pairing heap of requests -----------------------------------------------------------
 *
 * Intrusive, on the request's admission links: heap_child is the first child, queue_next
 * the next sibling, queue_prev the previous sibling or, for a first child, the parent (NULL
 * at the root). Insert O(1), pop and remove O(log n) amortized, and a node is removed
 * without knowing its key, so a key change is remove + insert. `before` must be a strict
 * total order (arrival breaks every tie), so the root is exactly the first request. */

typedef bool (*rs_request_before_fn)(const struct rs_request *a, const struct rs_request *b);

static inline struct rs_request *rs_pheap_meld(struct rs_request *a, struct rs_request *b,
					       rs_request_before_fn before)
{
	if (before(b, a)) {
		struct rs_request *t = a;
		a = b;
		b = t;
	}
	b->queue_prev = a;
	b->queue_next = a->heap_child;
	if (a->heap_child)
		a->heap_child->queue_prev = b;
	a->heap_child = b;
	return a;
}

/* Merge a list of siblings into one tree, two-pass: pairs left to right, then the pairs
 * right to left (the order that gives the amortized O(log n)). */
static inline struct rs_request *rs_pheap_combine(struct rs_request *first,
						  rs_request_before_fn before)
{
	struct rs_request *pairs = NULL; /* a stack, linked through queue_next */
	while (first) {
		struct rs_request *a = first, *b = a->queue_next;
		first = b ? b->queue_next : NULL;
		a->queue_next = a->queue_prev = NULL;
		if (b) {
			b->queue_next = b->queue_prev = NULL;
			a = rs_pheap_meld(a, b, before);
		}
		a->queue_next = pairs;
		pairs = a;
	}
	if (!pairs)
		return NULL;
	struct rs_request *root = pairs;
	pairs = pairs->queue_next;
	root->queue_next = NULL;
	while (pairs) {
		struct rs_request *next = pairs->queue_next;
		pairs->queue_next = NULL;
		root = rs_pheap_meld(root, pairs, before);
		pairs = next;
	}
	return root;
}

static inline void rs_pheap_insert(struct rs_request **root, struct rs_request *node,
				   rs_request_before_fn before)
{
	node->heap_child = node->queue_next = node->queue_prev = NULL;
	*root = *root ? rs_pheap_meld(*root, node, before) : node;
}

/* Take node, anywhere in the heap, out of it. */
static inline void rs_pheap_remove(struct rs_request **root, struct rs_request *node,
				   rs_request_before_fn before)
{
	if (node == *root) {
		*root = rs_pheap_combine(node->heap_child, before);
	} else {
		/* Unlink node (with its subtree) from its siblings, then put its children
		 * back as one tree. */
		if (node->queue_prev->heap_child == node)
			node->queue_prev->heap_child = node->queue_next;
		else
			node->queue_prev->queue_next = node->queue_next;
		if (node->queue_next)
			node->queue_next->queue_prev = node->queue_prev;
		struct rs_request *sub = rs_pheap_combine(node->heap_child, before);
		if (sub)
			*root = rs_pheap_meld(*root, sub, before);
	}
	node->heap_child = node->queue_next = node->queue_prev = NULL;
}

/* --- Priority queue: a pairing heap plus a run in order -------------------------------------
 *
 * Requests mostly arrive in the queue's own order (fcfs: by arrival; lpm and dlpm: prompts
 * that match nothing yet, all at 0 blocks, by arrival). Those go to the tail of a run, a
 * list kept sorted by `before` (a request is appended only when it goes after the tail),
 * at O(1) for insert, pop and remove; the others go into the pairing heap. The first
 * request is the earlier of the run's head and the heap's root. A run member's key must
 * not change while it is queued: a key change is remove + insert, as for the heap. A
 * request in the run has in_run set and its heap_child NULL (queue_prev/queue_next are its
 * neighbours in the run). */

struct rs_pqueue {
	struct rs_request *root;		/* pairing heap */
	struct rs_request *run_head, *run_tail; /* in order */
};

static inline void rs_pqueue_insert(struct rs_pqueue *queue, struct rs_request *node,
				    rs_request_before_fn before)
{
	if (queue->run_tail && !before(queue->run_tail, node)) {
		node->in_run = false;
		rs_pheap_insert(&queue->root, node, before);
		return;
	}
	node->in_run = true;
	node->heap_child = node->queue_next = NULL;
	node->queue_prev = queue->run_tail;
	if (queue->run_tail)
		queue->run_tail->queue_next = node;
	else
		queue->run_head = node;
	queue->run_tail = node;
}

/* Take node, from the run or the heap, out of the queue. */
static inline void rs_pqueue_remove(struct rs_pqueue *queue, struct rs_request *node,
				    rs_request_before_fn before)
{
	if (!node->in_run) {
		rs_pheap_remove(&queue->root, node, before);
		return;
	}
	if (node->queue_prev)
		node->queue_prev->queue_next = node->queue_next;
	else
		queue->run_head = node->queue_next;
	if (node->queue_next)
		node->queue_next->queue_prev = node->queue_prev;
	else
		queue->run_tail = node->queue_prev;
	node->queue_next = node->queue_prev = NULL;
	node->in_run = false;
}

/* The first request, or NULL when empty. */
static inline struct rs_request *rs_pqueue_first(const struct rs_pqueue *queue,
						 rs_request_before_fn before)
{
	struct rs_request *run = queue->run_head, *heap = queue->root;
	if (!run || !heap)
		return run ? run : heap;
	return before(run, heap) ? run : heap;
}

/* Longest cached prefix first, then first come: the order of lpm, and of dlpm within a
 * tenant and across tenants. */
static inline bool rs_request_longer_match(const struct rs_request *a, const struct rs_request *b)
{
	if (a->waiter.match_blocks != b->waiter.match_blocks)
		return a->waiter.match_blocks > b->waiter.match_blocks;
	return a->arrival < b->arrival;
}

/* --- Front lists ---------------------------------------------------------------------------
 *
 * lpm and dlpm keep requests that come back after preemption (enqueued with front) out of
 * their heap, in a list in the order they must go (the last one put in front goes first).
 * A request in such a list has heap_child pointing to itself, which no heap node has: that
 * is how remove and match_changed tell the two apart without a field of their own. */

static inline bool rs_front_list_has(const struct rs_request *request)
{
	return request->heap_child == request;
}

static inline void rs_front_list_push(struct rs_request **head, struct rs_request *request)
{
	request->heap_child = request;
	request->in_run = false;
	request->queue_prev = NULL;
	request->queue_next = *head;
	if (*head)
		(*head)->queue_prev = request;
	*head = request;
}

static inline void rs_front_list_remove(struct rs_request **head, struct rs_request *request)
{
	if (request->queue_prev)
		request->queue_prev->queue_next = request->queue_next;
	else
		*head = request->queue_next;
	if (request->queue_next)
		request->queue_next->queue_prev = request->queue_prev;
	request->heap_child = request->queue_next = request->queue_prev = NULL;
}

/* --- Indexed binary heap of tenant ids -----------------------------------------------------
 *
 * ids[0..n) is the heap, pos[id] the index of id in it or RS_TENANT_HEAP_NONE, both sized
 * max_tenants when the policy is created. `before(context, a, b)`: tenant a goes first; a
 * strict total order (the tenant id breaks ties where keys can be equal). */

#define RS_TENANT_HEAP_NONE UINT32_MAX

typedef bool (*rs_tenant_before_fn)(const void *context, uint32_t a, uint32_t b);

struct rs_tenant_heap {
	uint32_t *ids;
	uint32_t *pos;
	uint32_t n;
	rs_tenant_before_fn before;
	const void *context;
};

static inline bool rs_tenant_heap_has(const struct rs_tenant_heap *heap, uint32_t id)
{
	return heap->pos[id] != RS_TENANT_HEAP_NONE;
}

static inline void rs_tenant_heap_set(struct rs_tenant_heap *heap, uint32_t i, uint32_t id)
{
	heap->ids[i] = id;
	heap->pos[id] = i;
}

static inline void rs_tenant_heap_up(struct rs_tenant_heap *heap, uint32_t i)
{
	uint32_t id = heap->ids[i];
	while (i > 0) {
		uint32_t parent = (i - 1) / 2;
		if (!heap->before(heap->context, id, heap->ids[parent]))
			break;
		rs_tenant_heap_set(heap, i, heap->ids[parent]);
		i = parent;
	}
	rs_tenant_heap_set(heap, i, id);
}

static inline void rs_tenant_heap_down(struct rs_tenant_heap *heap, uint32_t i)
{
	uint32_t id = heap->ids[i];
	for (;;) {
		uint32_t child = 2 * i + 1;
		if (child >= heap->n)
			break;
		if (child + 1 < heap->n &&
		    heap->before(heap->context, heap->ids[child + 1], heap->ids[child]))
			child++;
		if (!heap->before(heap->context, heap->ids[child], id))
			break;
		rs_tenant_heap_set(heap, i, heap->ids[child]);
		i = child;
	}
	rs_tenant_heap_set(heap, i, id);
}

static inline void rs_tenant_heap_push(struct rs_tenant_heap *heap, uint32_t id)
{
	heap->ids[heap->n] = id;
	heap->pos[id] = heap->n;
	rs_tenant_heap_up(heap, heap->n++);
}

/* id's key changed, either way. */
static inline void rs_tenant_heap_fix(struct rs_tenant_heap *heap, uint32_t id)
{
	uint32_t i = heap->pos[id];
	rs_tenant_heap_up(heap, i);
	rs_tenant_heap_down(heap, heap->pos[id]);
}

static inline void rs_tenant_heap_remove(struct rs_tenant_heap *heap, uint32_t id)
{
	uint32_t i = heap->pos[id];
	heap->pos[id] = RS_TENANT_HEAP_NONE;
	uint32_t last = heap->ids[--heap->n];
	if (i == heap->n)
		return;
	rs_tenant_heap_set(heap, i, last);
	rs_tenant_heap_fix(heap, last);
}

/* --- The hot calls of admission.h, inline for the core (sched.c) --------------------------
 *
 * rs_admission_enqueue, rs_admission_peek and rs_admission_take are these; the core calls
 * them directly, one call less per request for each. */

/* Count it, then queue it: the policy sees tenant->waiting == 1 for a newly backlogged
 * tenant. */
static inline void rs_admission_enqueue_inline(struct rs_admission *admission,
					       struct rs_request *request, bool front)
{
	request->tenant->waiting++;
	admission->waiting++;
	admission->ops->enqueue(admission, request, front);
}

/* NULL when nothing waits; the policies may assume something does. */
static inline struct rs_request *rs_admission_peek_inline(struct rs_admission *admission)
{
	if (admission->waiting == 0)
		return NULL;
	return admission->ops->peek(admission);
}

/* Charge the prompt once: a request admitted again after preemption was paid for. */
static inline void rs_admission_take_inline(struct rs_admission *admission,
					    struct rs_request *request, uint32_t uncached_tokens)
{
	struct rs_tenant *tenant = request->tenant;
	double charge = 0;
	if (request->preemptions == 0) {
		uint32_t tokens =
		    admission->ops->charge_whole_prompt ? request->prompt_len : uncached_tokens;
		charge = admission->params.w_prompt * tokens;
	}
	tenant->service += charge / tenant->weight;
	tenant->waiting--;
	admission->waiting--;
	admission->ops->take(admission, request, charge);
}

#endif
