/* ringserved's state: configuration, clients, lanes, and the loop that ties them.
 *
 * One thread does everything on the serving path: the scheduler core. It busy-polls the
 * clients' submission rings and the engine's lanes while there is work, peeks at its
 * io_uring completion queue (control socket, client sockets, signals) without a system
 * call, and sleeps in io_uring when idle (wakeup.c). No locks: nothing is shared with
 * another thread of ours, only with client processes through the rings. */
#ifndef RS_DAEMON_DAEMON_H
#define RS_DAEMON_DAEMON_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "daemon/engine.h"
#include "daemon/sched/sched.h"
#include "daemon/stats.h"
#include "daemon/tenant_config.h"
#include "shm/abi.h"
#include "shm/ring.h"

#define RS_MAX_ALLOW 32

struct rs_daemon_config {
	const char *socket_path;
	mode_t socket_mode;
	uid_t allow_uids[RS_MAX_ALLOW];
	uint32_t n_allow_uids;
	gid_t allow_gids[RS_MAX_ALLOW];
	uint32_t n_allow_gids;
	int cpu; /* pin the scheduler core here; -1: no pinning */
	uint32_t max_clients;
	/* Per-client segment geometry and limits. */
	uint32_t ring_entries; /* SQ and CQ entries, power of two */
	uint32_t slots;
	uint32_t max_inflight;
	uint32_t max_prompt_tokens;
	uint32_t max_output_tokens;
	uint64_t spin_ns;      /* busy-poll this long without work before sleeping */
	uint64_t grace_ns;     /* SIGTERM: let in-flight work finish this long */
	uint64_t heartbeat_ns; /* write the heartbeat this often (also while asleep) */
	bool force_eventfd;    /* do not use IORING_OP_FUTEX_WAIT even when available */
	/* Scheduling (docs/scheduling.md). */
	struct rs_admission_params admission;	   /* --policy, --quantum, --w-prompt, --w-output */
	bool prefix_cache;			   /* --no-prefix-cache clears it */
	bool multibin;				   /* --planner multibin */
	struct rs_multibin_params multibin_params; /* --bins, --bin-batch, --bin-mode, ... */
	struct rs_dispatch_params dispatch; /* --dispatch, --load-threshold, ... (--workers) */
	uint32_t max_tenants;
	/* --config: weights, limits and allowed uids per tenant name. The daemon takes the
	 * parsed configuration over (frees it; replaces it on SIGHUP from the file at
	 * tenant_config_path). NULL: weight 1, no limits, any uid. */
	const char *tenant_config_path;
	struct rs_tenant_config *tenants;
	bool verbose;
};

/* Fill a configuration with the documented defaults (docs/running.md). */
void rs_daemon_config_defaults(struct rs_daemon_config *config);

enum rs_client_state {
	RS_CLIENT_FREE = 0,
	RS_CLIENT_HANDSHAKE, /* accepted, waiting for its hello */
	RS_CLIENT_ACTIVE,
	RS_CLIENT_CLOSING, /* gone; waiting for io_uring and lanes to let go of it */
};

struct rs_client {
	enum rs_client_state state;
	uint32_t index;	     /* in rs_daemon.clients */
	uint32_t active_pos; /* in rs_daemon.active while ACTIVE */
	uint32_t generation; /* bumped on reuse: io_uring completions carry it */
	uint32_t id;	     /* client id, unique for the daemon's lifetime */
	int fd;		     /* its control-socket connection */
	int eventfd;	     /* RS_WAKE_EVENTFD: the doorbell's companion; else -1 */
	int event_fd;	     /* the client's own eventfd (RS_CONTROL_EVENT_FD), or -1 */
	pid_t pid;
	uid_t uid;
	gid_t gid;

	/* The segment, as mapped by the daemon. hdr is the daemon's own copy of the layout,
	 * the only one it trusts; shared points into the segment for the atomics. */
	void *segment;
	size_t segment_size;
	struct rs_segment_header hdr;
	struct rs_segment_header *shared;
	struct rs_ring sq; /* we consume */
	struct rs_ring cq; /* we produce */

	struct rs_tenant *tenant; /* its account (uid, tenant name) */
	const char *broken;	  /* a protocol error found where it could not disconnect it
				   * at once: the loop disconnects it (rs_scheduler_notify_clients) */
	uint32_t inflight;	  /* accepted requests not yet completed: each owns a CQE */
	uint32_t alive_requests;  /* requests still referencing this client (incl. orphans) */
	struct rs_request **slot_request; /* the request running in each slot, or NULL */
	uint32_t pending_io;		  /* io_uring operations that still reference this client */
	bool doorbell_armed;		  /* a FUTEX_WAIT or eventfd read is queued */
	bool notify_pending; /* new completions or tokens since the last wakeup check */
	bool listed_for_notify;
	uint8_t notify_reasons;		/* NOTIFY_* (scheduler.c) since the last wakeup check */
	uint32_t event_writes_inflight; /* io_uring writes to event_fd not completed yet */
	bool event_write_owed;		/* its flag was cleared, the write found no SQE */
	struct rs_client *next_notify;
	uint64_t eventfd_value;	     /* read target for the eventfd */
	unsigned char recv_buf[128]; /* larger than a hello: a longer message is an error */
	/* The socket is read with recvmsg: a control message may carry a descriptor. */
	struct msghdr recv_msg;
	struct iovec recv_iov;
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} recv_control;
};

/* A lane as the data path sees it: whether the engine runs a step on it. What runs there
 * is the scheduling core's business. */
struct rs_lane {
	bool step_in_flight;
	bool wake_armed;     /* an io_uring read on the engine's step_fd is queued */
	uint64_t wake_value; /* its read target */
};

struct rs_daemon {
	struct rs_daemon_config config;
	struct rs_serving_engine *engine;
	struct io_uring ring;
	bool ring_ready;
	bool futex_wait_supported; /* IORING_OP_FUTEX_WAIT probed at start */
	uint32_t wake_mode;	   /* enum rs_wake_mode used for new clients */
	int listen_fd;
	bool socket_activated;		 /* listen_fd came from systemd, which owns the file */
	char activated_socket_path[108]; /* its path; config.socket_path points here */
	int signal_fd;
	int shared_fd; /* the read-only segment every client gets */
	size_t shared_size;
	int numa_node; /* of the scheduler core, or -1 */

	struct rs_client *clients; /* max_clients entries */
	struct rs_client **active; /* the ACTIVE ones, packed: what the loop polls */
	uint32_t n_active_clients;
	uint32_t next_client_id;
	struct rs_client *notify_list; /* clients with notify_pending set */
	/* The last finished request's timings in microseconds and the times they came from
	 * (scheduler.c): requests taken off the rings in one loop turn and ended by one step
	 * share them, and then they are not computed again. */
	struct {
		uint64_t submitted_ns, admitted_ns, first_token_ns, now_ns;
		uint32_t queued_us, first_token_us, total_us;
	} last_timings;

	struct rs_request_pool pool;
	struct rs_sched *sched;			    /* the scheduling core */
	struct rs_stats_publisher *stats_publisher; /* the statistics segment (daemon/stats.h) */
	struct rs_lane *lanes;

	bool draining; /* SIGTERM seen: no new connections or requests */
	uint64_t drain_deadline_ns;
	bool drain_expired;
	bool stop;
	uint64_t last_heartbeat_ns;
	uint64_t now_ns; /* refreshed once per loop iteration */

	struct { /* counters for --verbose and tests */
		uint64_t requests_completed;
		uint64_t requests_failed;
		uint64_t sleeps;
		uint64_t clients_accepted;
		uint64_t clients_rejected;
		uint64_t clients_broken;
		uint64_t client_futex_wakes;  /* FUTEX_WAKEs of sleeping clients */
		uint64_t client_event_writes; /* writes to clients' eventfds */
	} stats;
};

/* Set up the daemon: engine (taken over), control socket, io_uring, shared segment,
 * pinning. Returns 0 or a negative errno, with a message on stderr. */
int rs_daemon_init(struct rs_daemon *daemon, const struct rs_daemon_config *config,
		   struct rs_serving_engine *engine);

/* Serve until SIGTERM/SIGINT has been handled (drained) or a fatal error. Returns 0 or a
 * negative errno. */
int rs_daemon_run(struct rs_daemon *daemon);

/* Release everything; removes the socket. */
void rs_daemon_destroy(struct rs_daemon *daemon);

/* control.c: the io_uring side. */
int rs_control_init(struct rs_daemon *daemon);
void rs_control_destroy(struct rs_daemon *daemon);
/* Handle io_uring completions without blocking. Returns how many were handled. */
int rs_control_poll(struct rs_daemon *daemon);
/* Block in io_uring until a completion arrives or timeout_ns passes (0: no limit). */
int rs_control_wait(struct rs_daemon *daemon, uint64_t timeout_ns);
/* Queue a doorbell wait (FUTEX_WAIT, or an eventfd read) for a client, expecting value. */
int rs_control_arm_doorbell(struct rs_daemon *daemon, struct rs_client *client, uint32_t value);
/* Queue a read of the lane's step-completion descriptor. */
int rs_control_arm_lane(struct rs_daemon *daemon, uint32_t lane, int fd);
/* Cancel a client's queued doorbell wait and eventfd writes, if any (their completions
 * drop pending_io). */
void rs_control_cancel_doorbell(struct rs_daemon *daemon, struct rs_client *client);
/* Queue a write of 1 to the client's event_fd (submitted by the caller). Returns 0,
 * -EBUSY (RS_MAX_EVENT_WRITES in flight: the counter is full, so the descriptor is
 * readable anyway), or -EAGAIN (no SQE: try again later, the wake-up is owed). */
int rs_control_write_event(struct rs_daemon *daemon, struct rs_client *client);
/* Stop accepting connections and remove the socket (draining). */
void rs_control_stop_listening(struct rs_daemon *daemon);

/* client.c: connection lifecycle. */
int rs_client_setup_segment(struct rs_daemon *daemon, struct rs_client *client, int *memfd);
/* The client went away or broke the protocol: drop its queued work, cancel its running
 * work at the next step boundary, and free it once nothing references it. `why` is
 * logged; it starts with "protocol:" when the client is at fault. */
void rs_client_disconnect(struct rs_daemon *daemon, struct rs_client *client, const char *why);
/* Add to / remove from the packed array of active clients. */
void rs_client_activate(struct rs_daemon *daemon, struct rs_client *client);
/* Free a closing client if nothing references it any more. */
void rs_client_maybe_free(struct rs_daemon *daemon, struct rs_client *client);

/* scheduler.c: the serving path. */
/* Consume the client's submissions. Returns how many entries were consumed. */
int rs_scheduler_poll_client(struct rs_daemon *daemon, struct rs_client *client);
/* Report finished steps to the scheduling core and start the steps it plans. Returns a
 * count of things done (0: idle). */
int rs_scheduler_run_lanes(struct rs_daemon *daemon);
/* Wake clients that sleep and got completions or tokens. */
void rs_scheduler_notify_clients(struct rs_daemon *daemon);
/* The scheduling core's hooks: publish a token; complete a request (publish), then
 * account for it and free it (finish). */
void rs_scheduler_on_token(void *daemon, struct rs_request *request);
void rs_scheduler_on_publish(void *daemon, struct rs_request *request, int32_t status);
void rs_scheduler_on_finish(void *daemon, struct rs_request *request, int32_t status);
/* Cancel every request of a client; queued ones go at once. Orphans when `orphan`. */
void rs_scheduler_cancel_client(struct rs_daemon *daemon, struct rs_client *client, int32_t status,
				bool orphan);
/* Earliest engine deadline among lanes with a step in flight, or 0. */
uint64_t rs_scheduler_next_deadline(struct rs_daemon *daemon);
/* True while any request is queued or running. */
bool rs_scheduler_busy(const struct rs_daemon *daemon);

/* wakeup.c: sleeping without losing a wakeup. */
/* Called when the loop found no work for spin_ns: publish need-wakeup, re-check, sleep. */
int rs_wakeup_sleep(struct rs_daemon *daemon);

#endif
