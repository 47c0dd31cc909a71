/* libringserve's private state of a connection. */
#ifndef RS_CLIENT_CONNECTION_H
#define RS_CLIENT_CONNECTION_H

#include <stdbool.h>
#include <stdint.h>

#include "client-lib/ringserve.h"
#include "client-lib/special_tokens.h"
#include "shm/abi.h"
#include "shm/ring.h"
#include "shm/stats.h"

struct rs_tokenizer;

enum rs_slot_state {
	RS_SLOT_FREE = 0,
	RS_SLOT_SUBMITTED, /* the daemon owns its output area */
	RS_SLOT_COMPLETED, /* completion taken; output readable until rs_release */
};

struct rs_connection {
	int fd;	     /* control socket: EOF when the daemon dies */
	int eventfd; /* RS_WAKE_EVENTFD mode: rung with the doorbell; else -1 */
	/* The event-loop descriptor (event.c): our eventfd, which the daemon has, and the
	 * epoll set of it and the socket that rs_event_fd hands out; -1 until asked for. */
	int event_fd;
	int event_poll_fd;
	/* RS_NEED_WAKEUP_EVENT bits rs_event_arm left in client_need_wakeup (the daemon may
	 * have cleared them since, and written the eventfd): the futex waits keep them. */
	uint32_t event_armed;
	void *segment;
	size_t segment_size;
	struct rs_segment_header hdr; /* checked copy of the layout */
	struct rs_segment_header *shared;
	const struct rs_shared_header *model;
	size_t model_size;
	struct rs_ring sq;    /* we produce */
	struct rs_ring cq;    /* we consume */
	uint8_t *slot_state;  /* enum rs_slot_state per slot */
	uint32_t *free_slots; /* stack of free slot indices */
	uint32_t n_free_slots;
	uint32_t *slot_last_prompt; /* per slot: its prompt's last token (rs_detok_init) */
	uint32_t *slot_seen;	    /* per slot: the output count rs_output or rs_wait_output last
				     * returned (RS_EVENT_OUTPUT is the news beyond it) */
	uint64_t spin_ns;
	int error; /* sticky: once the daemon is gone, every call returns it */
	/* The daemon's vocabulary, built on first use by text.c (0: not tried yet). */
	struct rs_tokenizer *tokenizer;
	int tokenizer_status; /* 0 untried, 1 built, or the negative errno it failed with */
	/* Its special tokens (RS_TOKENIZE_SPECIAL, rs_chat_tokenize), collected on first use. */
	struct rs_special_tokens specials;
	bool specials_built;
	/* The daemon's statistics segment, mapped read-only (stats.c); base NULL when it
	 * sent none or it failed its check (stats_status says why). */
	struct rs_stats_segment stats;
	int stats_status;
};

/* Ring the daemon's doorbell if it sleeps (the client half of the protocol in
 * daemon/wakeup.c). Call after publishing to the SQ or freeing CQ entries. */
void rs_conn_ring_doorbell(struct rs_connection *conn);

/* Check that the daemon is alive: socket EOF, STOPPED state, stale heartbeat. Costs a
 * system call; sets and returns conn->error (0 when alive). */
int rs_conn_check_daemon(struct rs_connection *conn);

/* Take a free slot for a submission and mark it submitted (submit.c). Checks that the
 * daemon takes work and that the SQ has room first. Returns the slot, or -EAGAIN,
 * -ESHUTDOWN, -ECONNRESET, -EPROTO. */
int rs_conn_take_slot(struct rs_connection *conn);

/* Give a slot from rs_conn_take_slot back unsubmitted. */
void rs_conn_return_slot(struct rs_connection *conn, uint32_t slot);

/* Submit a taken slot whose prompt area holds prompt_len ids (1 .. max_prompt_tokens;
 * params->prompt is not read). Returns the slot as a request handle. */
int rs_conn_submit_slot(struct rs_connection *conn, uint32_t slot,
			const struct rs_generate_params *params, uint32_t prompt_len);

/* Connect to the daemon at socket_path (NULL: $RINGSERVE_SOCKET, else
 * $XDG_RUNTIME_DIR/ringserve.sock, else the system path), send hello and take the
 * welcome with up to 4 descriptors (connect.c). Returns the descriptor count, with the
 * connected socket in *fd; or the welcome's refusal status, -ENAMETOOLONG, -ETIMEDOUT,
 * -ECONNRESET, -EPROTO, another -errno, with nothing left open and *fd -1. */
int rs_conn_handshake(const char *socket_path, const struct rs_hello *hello, int *fd,
		      struct rs_welcome *welcome, int fds[4]);

/* Map the statistics segment the welcome carried (stats.c); the descriptor stays the
 * caller's. Sets stats_status. Unmap it at close. */
void rs_conn_map_stats(struct rs_connection *conn, int fd);
void rs_conn_unmap_stats(struct rs_connection *conn);

/* Free the connection's tokenizer (text.c). */
void rs_conn_free_text(struct rs_connection *conn);

/* Tokenize as rs_tokenize (flags RS_TOKENIZE_*, checked by the caller), with the literal
 * ranges ([start, end), sorted) never read for special tokens (text.c). */
int rs_conn_tokenize(struct rs_connection *conn, const char *text, size_t len,
		     const size_t (*literal)[2], size_t n_literal, unsigned flags, uint32_t *ids,
		     uint32_t max_ids);

#endif
