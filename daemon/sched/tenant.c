/* The tenant table. Lookups happen at connect, not per request: a linear scan is enough. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/tenant.h"

int rs_tenant_table_init(struct rs_tenant_table *table, uint32_t capacity)
{
	table->all = calloc(capacity, sizeof(*table->all));
	if (!table->all)
		return -ENOMEM;
	table->capacity = capacity;
	table->in_use = 0;
	table->generations = 0;
	for (uint32_t i = 0; i < capacity; i++)
		table->all[i].id = i;
	return 0;
}

void rs_tenant_table_destroy(struct rs_tenant_table *table)
{
	free(table->all);
	table->all = NULL;
	table->capacity = 0;
}

static bool tenant_idle(const struct rs_tenant *tenant)
{
	return tenant->refs == 0 && tenant->waiting == 0 && tenant->running == 0;
}

struct rs_tenant *rs_tenant_acquire(struct rs_tenant_table *table, uid_t uid, const char *name,
				    double weight)
{
	struct rs_tenant *unused = NULL, *idle = NULL;
	for (uint32_t i = 0; i < table->capacity; i++) {
		struct rs_tenant *tenant = &table->all[i];
		if (!tenant->in_use) {
			if (!unused)
				unused = tenant;
			continue;
		}
		if (tenant->uid == uid && strcmp(tenant->name, name) == 0) {
			tenant->refs++;
			return tenant;
		}
		if (!idle && tenant_idle(tenant))
			idle = tenant;
	}
	/* An idle tenant keeps its account (a debt included) until its entry is needed:
	 * reconnecting does not wipe what a tenant owes. */
	struct rs_tenant *entry = unused ? unused : idle;
	if (!entry)
		return NULL;
	if (!entry->in_use)
		table->in_use++;
	uint32_t id = entry->id;
	memset(entry, 0, sizeof(*entry));
	entry->id = id;
	entry->in_use = true;
	entry->generation = ++table->generations;
	entry->uid = uid;
	snprintf(entry->name, sizeof(entry->name), "%s", name);
	entry->weight = weight > 0 ? weight : 1.0;
	entry->refs = 1;
	return entry;
}

void rs_tenant_release(struct rs_tenant_table *table, struct rs_tenant *tenant)
{
	tenant->refs--;
}
