/* libFuzzer target: the tenant configuration parser (daemon/tenant_config.c). Any input
 * either parses or is refused with a position inside the text; what parses must be
 * well-formed (valid, unique names; weights in range; the lookup finds every rule) and
 * must read back the same when written out again. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/tenant_config.h"
#include "shm/segment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rule(const struct rs_tenant_rule *rule)
{
	if (!(rule->weight > 0) || !(rule->weight <= RS_TENANT_CONFIG_MAX_WEIGHT) ||
	    rule->n_uids > RS_TENANT_CONFIG_MAX_UIDS)
		abort();
}

/* Write a rule as a line the parser accepts; returns the bytes written. */
static size_t write_rule(char *out, size_t cap, const struct rs_tenant_rule *rule, bool is_default)
{
	size_t n = 0;
	n += (size_t)snprintf(out + n, cap - n, is_default ? "default" : "tenant %s", rule->name);
	n += (size_t)snprintf(out + n, cap - n, " weight=%.17g", rule->weight);
	if (rule->max_connections)
		n += (size_t)snprintf(out + n, cap - n, " max_connections=%u",
				      rule->max_connections);
	if (rule->max_inflight)
		n += (size_t)snprintf(out + n, cap - n, " max_inflight=%u", rule->max_inflight);
	if (rule->max_kv_blocks)
		n += (size_t)snprintf(out + n, cap - n, " max_kv_blocks=%u", rule->max_kv_blocks);
	for (uint32_t i = 0; i < rule->n_uids; i++)
		n += (size_t)snprintf(out + n, cap - n, "%s%u",
				      i ? "," : " uids=", (unsigned)rule->uids[i]);
	n += (size_t)snprintf(out + n, cap - n, "\n");
	return n;
}

static bool same_rule(const struct rs_tenant_rule *a, const struct rs_tenant_rule *b)
{
	return strcmp(a->name, b->name) == 0 && a->weight == b->weight &&
	       a->max_connections == b->max_connections && a->max_inflight == b->max_inflight &&
	       a->max_kv_blocks == b->max_kv_blocks && a->n_uids == b->n_uids &&
	       memcmp(a->uids, b->uids, a->n_uids * sizeof(a->uids[0])) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rs_tenant_config *config;
	struct rs_tenant_config_error error;
	int ret = rs_tenant_config_parse((const char *)data, size, &config, &error);
	if (ret) {
		/* Refused: somewhere in the text, with a reason. */
		if (ret != -EINVAL || error.message[0] == '\0' || error.line == 0 ||
		    error.column == 0 || error.line > size + 1 || error.column > size + 1)
			abort();
		return 0;
	}
	check_rule(&config->fallback);
	/* Each line is at most ~80 + 64 * 11 bytes. */
	size_t cap = (size_t)(config->n_rules + 1) * 1024;
	char *text = malloc(cap);
	if (!text)
		abort();
	size_t len = config->fallback.line ? write_rule(text, cap, &config->fallback, true) : 0;
	for (uint32_t i = 0; i < config->n_rules; i++) {
		const struct rs_tenant_rule *rule = &config->rules[i];
		check_rule(rule);
		if (!rs_tenant_name_valid(rule->name) ||
		    rs_tenant_config_lookup(config, rule->name) != rule)
			abort();
		len += write_rule(text + len, cap - len, rule, false);
	}
	struct rs_tenant_config *again;
	if (rs_tenant_config_parse(text, len, &again, &error) != 0 ||
	    again->n_rules != config->n_rules)
		abort();
	for (uint32_t i = 0; i < config->n_rules; i++)
		if (!same_rule(&config->rules[i], &again->rules[i]))
			abort();
	if (config->fallback.line && !same_rule(&config->fallback, &again->fallback))
		abort();
	rs_tenant_config_free(again);
	rs_tenant_config_free(config);
	free(text);
	return 0;
}
