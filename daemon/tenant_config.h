/* The tenant configuration file (ringserved --config FILE; docs/running.md): weights,
 * per-tenant limits and which uids may use which tenant names.
 *
 *     # comment
 *     default weight=1 max_inflight=128
 *     tenant batch weight=0.5 max_connections=4 max_inflight=64 max_kv_blocks=4096
 *     tenant web weight=2 uids=1000,1001
 *
 * One directive per line; words separated by spaces or tabs; '#' starts a comment. A
 * `tenant NAME` line sets the values for that name (for every uid: a tenant is scoped by
 * uid, each (uid, NAME) account gets the limits); the `default` line (at most one) sets
 * them for names that have no line. A key left out means weight 1, no limit, any uid.
 *
 * rs_tenant_config_parse reads a buffer and does no I/O (tests and the fuzzer feed it
 * strings); rs_tenant_config_load reads a file. */
#ifndef RS_DAEMON_TENANT_CONFIG_H
#define RS_DAEMON_TENANT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/sched/tenant.h"

#define RS_TENANT_CONFIG_MAX_UIDS    64	  /* uids= entries on one line */
#define RS_TENANT_CONFIG_MAX_TENANTS 4096 /* tenant lines in one file */
#define RS_TENANT_CONFIG_MAX_BYTES   (1u << 20)
#define RS_TENANT_CONFIG_MAX_WEIGHT  1e6

/* What one line says about a tenant name. A limit of 0 means none. */
struct rs_tenant_rule {
	char name[RS_TENANT_NAME_MAX]; /* "" for the default rule */
	double weight;		       /* > 0 */
	uint32_t max_connections;      /* connections of one (uid, name) account at once */
	uint32_t max_inflight;	       /* requests in flight over all its connections */
	uint32_t max_kv_blocks;	       /* KV blocks its requests hold (recorded only) */
	uint32_t n_uids;	       /* 0: any uid (that the socket's allow-list admits) */
	uid_t uids[RS_TENANT_CONFIG_MAX_UIDS];
	uint32_t line; /* where it was defined; 0 for the built-in default */
};

struct rs_tenant_config {
	struct rs_tenant_rule fallback; /* the `default` line, or weight 1 and no limits */
	struct rs_tenant_rule *rules;	/* the `tenant` lines, in file order, names unique */
	uint32_t n_rules;
};

/* Where and why a file was refused. line and column count from 1 (the column in bytes);
 * line 0 when the problem is the file as a whole. */
struct rs_tenant_config_error {
	uint32_t line;
	uint32_t column;
	char message[160];
};

/* Parse len bytes of text (not NUL-terminated; a NUL byte in it is an error). On success
 * *out is a new configuration (free it with rs_tenant_config_free).
 * Returns 0, -EINVAL (malformed: *error says where and why) or -ENOMEM. */
int rs_tenant_config_parse(const char *text, size_t len, struct rs_tenant_config **out,
			   struct rs_tenant_config_error *error);

/* Read and parse the file at path. On failure, message (when not NULL) gets
 * "PATH:LINE:COLUMN: what is wrong" (or "PATH: strerror").
 * Returns 0, -EINVAL (malformed), -EFBIG (over RS_TENANT_CONFIG_MAX_BYTES), -ENOMEM, or
 * the errno of open(2)/read(2). */
int rs_tenant_config_load(const char *path, struct rs_tenant_config **out, char *message,
			  size_t message_size);

/* The configuration built in when there is no file: weight 1, no limits, any uid.
 * Returns 0 or -ENOMEM. */
int rs_tenant_config_default(struct rs_tenant_config **out);

void rs_tenant_config_free(struct rs_tenant_config *config);

/* The rule for a tenant name: its `tenant` line, else the default rule. Never NULL. */
const struct rs_tenant_rule *rs_tenant_config_lookup(const struct rs_tenant_config *config,
						     const char *name);

/* Whether the rule lets uid use its tenant name. */
bool rs_tenant_rule_allows(const struct rs_tenant_rule *rule, uid_t uid);

#endif
