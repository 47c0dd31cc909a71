/* Admission policies: which waiting request the scheduling core admits next.
 *
 * One interface, four policies chosen at start (`--policy`), each in its own file behind
 * a static table of operations (admission_fcfs.c, admission_lpm.c, admission_vtc.c,
 * admission_dlpm.c):
 *
 *   fcfs  first come, first served (arrival order).
 *   lpm   longest cached prefix first (ties: arrival order); not fair.
 *   vtc   Virtual Token Counter (Sheng et al., OSDI 2024): a counter per tenant grows by
 *         w_p per admitted prompt token and w_q per generated token, divided by the
 *         tenant's weight; the tenant with the smallest counter among those with waiting
 *         requests goes next (its oldest request); a tenant that becomes backlogged is
 *         lifted to the smallest counter of the backlogged tenants, or when there are
 *         none to the counter of the last tenant that stopped being backlogged (the
 *         paper's Algorithm 2; without it the fairness bound fails), never lowered.
 *   dlpm  Deficit Longest Prefix Match (Cao et al. 2025): a deficit per tenant; among
 *         waiting requests of tenants with a positive deficit, the one with the longest
 *         cached prefix (ties: arrival order); admission charges w_p per *uncached*
 *         prompt token, each generated token charges w_q; when no waiting request's
 *         tenant has a positive deficit, every backlogged tenant gets quantum Q times its
 *         weight. A tenant that stops being backlogged keeps a debt but no credit.
 *
 * A request's cached prefix is request->waiter.match_blocks, kept current by the prefix
 * cache while the request waits; the core reports each change (rs_admission_match_changed).
 *
 * Cost: every operation is O(log n) in the waiting requests or the tenants, or better;
 * none walks all waiting requests (SGLang falls back from LPM to FCFS above 128 waiting
 * requests because its matching and sorting cost grows with the queue; this never does).
 * Except the quantum refill of dlpm, which visits the backlogged tenants once per round.
 * No allocation after creation: links are intrusive (request.h), per-tenant state lives
 * in arrays indexed by tenant id.
 *
 * The tenant fields deficit (dlpm) and counter (vtc) are the policy's state, kept in the
 * tenant for statistics; the policy reads tenant->weight. Every policy adds each charge
 * to tenant->service (weighted service received, the quantity the fairness bounds are
 * about) and keeps tenant->waiting. */
#ifndef RS_DAEMON_SCHED_ADMISSION_H
#define RS_DAEMON_SCHED_ADMISSION_H

#include <stdint.h>

#include "daemon/sched/request.h"
#include "daemon/sched/tenant.h"

enum rs_admission_policy {
	RS_ADMISSION_FCFS = 0,
	RS_ADMISSION_LPM,
	RS_ADMISSION_VTC,
	RS_ADMISSION_DLPM,
};

struct rs_admission_params {
	enum rs_admission_policy policy;
	uint32_t max_tenants; /* tenant ids are < max_tenants */
	double w_prompt;      /* w_p: charge per (uncached, for dlpm) prompt token; default 1 */
	double w_output;      /* w_q: charge per generated token; default 2 (VTC's artifact) */
	double quantum;	      /* dlpm's Q, in weighted tokens */
};

struct rs_admission;

/* Parse a policy name ("fcfs", "lpm", "vtc", "dlpm"). Returns 0 or -EINVAL. */
int rs_admission_policy_parse(const char *name, enum rs_admission_policy *policy);
const char *rs_admission_policy_name(enum rs_admission_policy policy);

/* Returns 0, -EINVAL (bad params), -ENOMEM. */
int rs_admission_create(const struct rs_admission_params *params, struct rs_admission **out);
void rs_admission_destroy(struct rs_admission *admission);

/* A request (tenant set, waiter.match_blocks current) starts waiting: at the back, or at
 * the front of its tenant's order when it comes back after preemption (front: it was
 * admitted before, and it goes again before its tenant's other requests). */
void rs_admission_enqueue(struct rs_admission *admission, struct rs_request *request, bool front);

/* A waiting request leaves without being admitted (cancelled, client gone). */
void rs_admission_remove(struct rs_admission *admission, struct rs_request *request);

/* The request the policy admits next, left in the queue; NULL when none waits. May
 * change policy state that does not depend on the choice being taken (dlpm's refill). */
struct rs_request *rs_admission_peek(struct rs_admission *admission);

/* The request rs_admission_peek returned is admitted: dequeue it and charge its tenant
 * for its prompt (vtc: w_p per prompt token; dlpm: w_p per uncached_tokens; divided by
 * the tenant's weight; fcfs and lpm keep the same service account without using it). A
 * request admitted again after preemption (request->preemptions > 0) is not charged
 * again: its prompt was paid for once, and the recompute is the server's cost. */
void rs_admission_take(struct rs_admission *admission, struct rs_request *request,
		       uint32_t uncached_tokens);

/* A waiting request's waiter.match_blocks changed from old_blocks. */
void rs_admission_match_changed(struct rs_admission *admission, struct rs_request *request,
				uint32_t old_blocks);

/* A running request of tenant produced n tokens: charge w_q each, divided by the weight. */
void rs_admission_charge_output(struct rs_admission *admission, struct rs_tenant *tenant,
				uint32_t n_tokens);

/* True when the policy orders by cached prefix (lpm, dlpm): only then does the core ask the
 * prefix cache to keep waiting requests' match lengths current (which costs a move per
 * waiter whenever a prefix it waits on is cached or evicted). */
bool rs_admission_orders_by_prefix(const struct rs_admission *admission);

/* The charges in use (the defaults resolved). */
double rs_admission_w_prompt(const struct rs_admission *admission);
double rs_admission_w_output(const struct rs_admission *admission);

/* Requests waiting. */
uint32_t rs_admission_waiting(const struct rs_admission *admission);

#endif
