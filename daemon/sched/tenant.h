/* Tenants: the accounts that fairness is about.
 *
 * A tenant is a name a client gives when it connects, scoped by the client's uid: every
 * connection of (uid, name) shares one tenant, so opening more connections earns no more
 * service. The table is fixed-size (no allocation after creation); a tenant's id is its
 * dense index, which the admission policies use to index their own per-tenant arrays.
 * A tenant's entry (and its account, a debt included) outlives its connections: it is
 * reused for another tenant only when the table is full and it is idle (no connection,
 * no request). */
#ifndef RS_DAEMON_SCHED_TENANT_H
#define RS_DAEMON_SCHED_TENANT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct rs_request;

#define RS_TENANT_NAME_MAX 64 /* bytes, with the NUL */

struct rs_tenant {
	uint32_t id; /* index in the table, < capacity */
	bool in_use;
	uint64_t generation; /* new (never 0) each time the entry is given to a tenant */
	uid_t uid;
	char name[RS_TENANT_NAME_MAX];
	double weight;	      /* share of service, > 0; 1 by default */
	uint32_t refs;	      /* connections holding it */
	uint32_t waiting;     /* queued requests */
	uint32_t running;     /* admitted, not yet finished */
	uint32_t step_output; /* tokens of the step being done, not yet charged (the core's) */
	uint32_t kv_blocks;   /* held by its running requests, or promised to them (the core's) */
	struct rs_request *parked_head, *parked_tail; /* over its KV share, in order */

	/* Limits the daemon sets from its configuration file (daemon/tenant_config.h), at
	 * each connect and on reload; 0: none. */
	uint32_t max_connections; /* refs at most (the daemon refuses more with -EUSERS) */
	uint32_t max_inflight;	  /* inflight at most (more: -EAGAIN completions) */
	uint32_t max_kv_blocks;	  /* KV blocks its running requests hold at most (each
				   * counts every block in its table, shared prefix blocks
				   * included): beyond it, its next request waits parked and a
				   * growing one preempts the tenant's own youngest */
	uint32_t inflight;	  /* the data path's: accepted over all connections, not yet
				   * completed (orphans included) */

	/* Accounting, kept by the core whatever the policy (stats, fairness tests). */
	double service;		/* weighted service as the policy charges it: (w_p * prompt tokens
				 * (dlpm: uncached ones) + w_q * generated tokens) / weight */
	uint64_t prompt_tokens; /* admitted prompt tokens */
	uint64_t cached_tokens; /* of which the prefix cache served */
	uint64_t generated_tokens;

	/* The admission policy's state, shown in statistics: DLPM's deficit (weighted
	 * tokens) or VTC's virtual counter. */
	double deficit;
	double counter;
};

struct rs_tenant_table {
	struct rs_tenant *all;
	uint32_t capacity;
	uint32_t in_use;
	uint64_t generations; /* handed out so far */
};

/* Returns 0 or -ENOMEM. */
int rs_tenant_table_init(struct rs_tenant_table *table, uint32_t capacity);
void rs_tenant_table_destroy(struct rs_tenant_table *table);

/* The tenant (uid, name), created with `weight` when new; takes a reference.
 * Returns it, or NULL when the table is full of tenants that are not idle. */
struct rs_tenant *rs_tenant_acquire(struct rs_tenant_table *table, uid_t uid, const char *name,
				    double weight);

/* Drop a connection's reference. */
void rs_tenant_release(struct rs_tenant_table *table, struct rs_tenant *tenant);

#endif
