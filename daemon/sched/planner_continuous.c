/* Continuous batching: a lane's running requests are refilled at every step.
 *
 * A step's token budget goes first to one decode token per running request (so a long
 * prompt never stalls the others' streams), then to prefill chunks of running requests
 * in admission order, then to newly admitted requests while seats and budget last. */
#include "daemon/sched/sched_internal.h"

static uint32_t min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

bool rs_planner_plan_seated(struct rs_sched *sched, struct rs_sched_lane *lane, uint32_t *budget)
{
	/* Preemption in rs_sched_reserve takes requests not yet planned from the tail of
	 * lane->running, never one before index i, and leaves holes (NULL). */
	for (uint32_t i = 0; i < lane->n_running && *budget; i++) {
		struct rs_request *request = lane->running[i];
		if (!request || rs_sched_context(request) - request->computed != 1)
			continue; /* still prefilling: below */
		if (rs_sched_reserve(sched, lane, request, request->computed + 1) < 0)
			return false;
		rs_sched_plan_add(sched, lane, request, 1);
		(*budget)--;
	}
	for (uint32_t i = 0; i < lane->n_running && *budget; i++) {
		struct rs_request *request = lane->running[i];
		if (!request || request->in_step)
			continue;
		uint32_t chunk = min_u32(rs_sched_context(request) - request->computed, *budget);
		if (rs_sched_reserve(sched, lane, request, request->computed + chunk) < 0)
			return false;
		rs_sched_plan_add(sched, lane, request, chunk);
		*budget -= chunk;
	}
	return true;
}

static void plan_continuous(struct rs_sched *sched, struct rs_sched_lane *lane)
{
	uint32_t budget = sched->config.max_batch_tokens;
	if (!rs_planner_plan_seated(sched, lane, &budget))
		return; /* out of blocks: no admission this step either */
	struct rs_request *request;
	while (budget && (request = rs_sched_admit_next(sched, lane))) {
		uint32_t chunk = min_u32(rs_sched_context(request) - request->computed, budget);
		if (rs_sched_reserve(sched, lane, request, request->computed + chunk) < 0)
			break;
		rs_sched_plan_add(sched, lane, request, chunk);
		budget -= chunk;
	}
}

static uint64_t continuous_next_wakeup(const struct rs_sched *sched)
{
	return 0; /* it plans only when a step ends or a request arrives */
}

const struct rs_planner_ops rs_planner_continuous = {
    .name = "continuous",
    .plan = plan_continuous,
    .next_wakeup_ns = continuous_next_wakeup,
};
