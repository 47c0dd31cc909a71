/* Batch planners: what a lane's next step runs, within its token budget, and when the
 * planner next needs to run even if nothing happens.
 *
 * A planner decides which running requests continue, which waiting ones are admitted
 * (the admission policy says which request is next; the planner says whether there is a
 * seat and budget for it), and how a long prompt is chunked. It builds the plan through
 * the core's services (sched_internal.h), which take the KV blocks, evicting or
 * preempting as needed. The multi-bin planner plugs in here beside the continuous one. */
#ifndef RS_DAEMON_SCHED_PLANNER_H
#define RS_DAEMON_SCHED_PLANNER_H

#include <stdint.h>

struct rs_request;
struct rs_sched;
struct rs_sched_lane;

struct rs_planner_ops {
	const char *name;
	/* Optional: set up sched->planner_state from sched->config; 0 or -errno. */
	int (*create)(struct rs_sched *sched);
	void (*destroy)(struct rs_sched *sched);
	/* Fill lane->plan for the lane's next step (the lane is idle). */
	void (*plan)(struct rs_sched *sched, struct rs_sched_lane *lane);
	/* The next time (core clock) the planner wants to plan without an event; 0: none. */
	uint64_t (*next_wakeup_ns)(const struct rs_sched *sched);
	/* Optional: a request ended normally after `generated` tokens (its length, for
	 * predictions), before the core lets go of it. */
	void (*finished)(struct rs_sched *sched, const struct rs_request *request);
	/* Optional: a staged request left without being seated (cancelled, its client
	 * gone). */
	void (*unstaged)(struct rs_sched *sched, const struct rs_request *request);
};

/* Continuous batching (iteration-level): every step, each running request decodes one
 * token, then prompts are prefilled in chunks in the budget left, and free seats are
 * refilled from the admission policy. */
extern const struct rs_planner_ops rs_planner_continuous;

/* Multi-Bin Batching (Guldogan et al. 2024; planner_multibin.c): admitted requests are
 * sorted into bins by predicted output length, and a lane runs a batch of one bin. */
extern const struct rs_planner_ops rs_planner_multibin;

#endif
