/* libringserve's private state of a connection. */
#ifndef RS_CLIENT_CONNECTION_H
#define RS_CLIENT_CONNECTION_H

#include <stdbool.h>
#include <stdint.h>

#include "client-lib/ringserve.h"
#include "shm/abi.h"
#include "shm/ring.h"

enum rs_slot_state {
	RS_SLOT_FREE = 0,
	RS_SLOT_SUBMITTED, /* the daemon owns its output area */
	RS_SLOT_COMPLETED, /* completion taken; output readable until rs_release */
};

struct rs_connection {
	int fd;      /* control socket: EOF when the daemon dies */
	int eventfd; /* RS_WAKE_EVENTFD mode: rung with the doorbell; else -1 */
	void *segment;
	size_t segment_size;
	struct rs_segment_header hdr; /* checked copy of the layout */
	struct rs_segment_header *shared;
	const struct rs_shared_header *model;
	size_t model_size;
	struct rs_ring sq; /* we produce */
	struct rs_ring cq; /* we consume */
	uint8_t *slot_state;     /* enum rs_slot_state per slot */
	uint32_t *free_slots;    /* stack of free slot indices */
	uint32_t n_free_slots;
	uint64_t spin_ns;
	int error; /* sticky: once the daemon is gone, every call returns it */
};

/* Ring the daemon's doorbell if it sleeps (the client half of the protocol in
 * daemon/wakeup.c). Call after publishing to the SQ or freeing CQ entries. */
void rs_conn_ring_doorbell(struct rs_connection *conn);

/* Check that the daemon is alive: socket EOF, STOPPED state, stale heartbeat. Costs a
 * system call; sets and returns conn->error (0 when alive). */
int rs_conn_check_daemon(struct rs_connection *conn);

#endif
