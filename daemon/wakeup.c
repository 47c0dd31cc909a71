/* Sleeping without losing a wakeup: io_uring's SQPOLL need-wakeup protocol, applied to
 * our submission rings.
 *
 *   daemon (here)                          client (client-lib/submit.c)
 *   N1 store daemon_need_wakeup = 1        C1 store sq tail (R-tail)
 *   F1 full fence                          F2 full fence
 *   N2 load doorbell -> v (acquire)        C2 load daemon_need_wakeup
 *   N3 re-check every SQ tail              C3 if 1: doorbell += 1 (release), FUTEX_WAKE
 *   N4 sleep in io_uring on FUTEX_WAIT(doorbell, v)
 *
 * F1/F2 make it impossible for both N3 to miss C1 and C2 to miss N1. If C3's increment
 * precedes N2, v includes it and (release/acquire) N3 sees C1; if it follows, the futex
 * wait finds doorbell != v or is woken. Either way the daemon does not sleep on work. */
#include <errno.h>

#include "daemon/daemon.h"
#include "shm/clock.h"

/* Work a client could give us now: submissions, and credit to accept them (a client
 * sitting on its completions blocks its own SQ; it rings when it frees the CQ). */
static bool client_has_work(struct rs_client *client)
{
	int64_t ready = rs_ring_consumer_refresh(&client->sq);
	if (ready < 0)
		return true; /* broken: let the poll path disconnect it */
	if (ready == 0)
		return false;
	int64_t space = rs_ring_producer_refresh(&client->cq);
	return space < 0 || space > client->inflight;
}

int rs_wakeup_sleep(struct rs_daemon *daemon)
{
	uint32_t n = daemon->n_active_clients;
	for (uint32_t i = 0; i < n; i++)
		/* N1: relaxed store, ordered by F1. */
		rs_store_relaxed(&daemon->active[i]->shared->daemon_need_wakeup, 1);
	/* F1: pairs with F2 in the client's submit path. */
	rs_fence_seq_cst();
	bool work = false;
	for (uint32_t i = 0; i < n && !work; i++) {
		struct rs_client *client = daemon->active[i];
		/* N2 (A-bell): pairs with the client's release increment C3. */
		uint32_t bell = rs_load_acquire(&client->shared->daemon_doorbell);
		if (client_has_work(client)) /* N3 */
			work = true;
		else if (!client->doorbell_armed)
			rs_control_arm_doorbell(daemon, client, bell);
	}
	if (!work) {
		/* Steps of unknown length wake us through their completion descriptor. */
		struct rs_serving_engine *engine = daemon->engine;
		for (uint32_t l = 0; l < engine->lanes && engine->ops->step_fd; l++) {
			int fd = engine->ops->step_fd(engine, l);
			if (daemon->lanes[l].step_in_flight && fd >= 0 && !daemon->lanes[l].wake_armed)
				rs_control_arm_lane(daemon, l, fd);
		}
		/* N4: until a doorbell, a socket event, a step, the heartbeat or a deadline. */
		uint64_t now = rs_now_ns();
		uint64_t wake_at = daemon->last_heartbeat_ns + daemon->config.heartbeat_ns;
		uint64_t deadline = rs_scheduler_next_deadline(daemon);
		if (deadline && deadline < wake_at)
			wake_at = deadline;
		if (daemon->draining && daemon->drain_deadline_ns < wake_at)
			wake_at = daemon->drain_deadline_ns;
		daemon->stats.sleeps++;
		if (wake_at > now)
			rs_control_wait(daemon, wake_at - now);
	}
	for (uint32_t i = 0; i < daemon->n_active_clients; i++)
		/* Relaxed: clearing only costs a client a needless doorbell if seen late. */
		rs_store_relaxed(&daemon->active[i]->shared->daemon_need_wakeup, 0);
	return 0;
}
