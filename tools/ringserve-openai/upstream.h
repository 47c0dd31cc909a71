/* One ringserve connection per tenant (API key group), shared by every HTTP request of
 * that tenant, so ringserved's per-tenant fairness holds per key.
 *
 * A connection is single-threaded (client-lib/ringserve.h), so each has a lock, held
 * around every rs_* call, and a pump thread that sleeps on the connection's event
 * descriptor, takes completions, notices new output and wakes the HTTP request it
 * belongs to through that request's eventfd. A daemon that dies (or stops answering)
 * marks the connection dead: every request on it is woken and finishes with the error,
 * and the next request for the tenant connects afresh. */
#ifndef RS_OPENAI_UPSTREAM_H
#define RS_OPENAI_UPSTREAM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "client-lib/ringserve.h"

struct upstream;

/* A tenant's slot: which connection it uses now. */
struct tenant_link {
	char tenant[64];
	const char *socket_path; /* NULL: rs_connect's default */
	pthread_mutex_t lock;	 /* guards up */
	struct upstream *up;	 /* NULL before the first request, or after a death */
};

/* One generation request in flight on an upstream; owned by one HTTP request. */
struct bridge_request {
	struct upstream *up;
	int handle;    /* ringserve's request handle */
	int notify_fd; /* eventfd: readable when output grew or the request ended */
	/* Below: guarded by the upstream's lock. */
	bool done;
	bool abandoned; /* its HTTP request went away first: the pump releases it */
	int32_t status;
	uint32_t completion_flags;
	uint32_t seen; /* output count the pump last reported */
	struct bridge_request *next;
};

/* Counters for GET /ringserve/stats (relaxed atomics; for tests and operators). */
struct bridge_counters {
	uint64_t requests_total;  /* generation requests submitted to ringserved */
	uint64_t requests_active; /* submitted and not yet given back */
	uint64_t cancels;	  /* requests cancelled: stop sequence or client gone */
	uint64_t client_gone;	  /* HTTP clients that disconnected mid-request */
	uint64_t upstream_deaths; /* connections found dead */
	uint64_t upstream_connects;
};
extern struct bridge_counters bridge_counters;

void tenant_link_init(struct tenant_link *link, const char *tenant, const char *socket_path);

/* The tenant's live connection (connecting when it has none), with a reference the
 * caller gives back with upstream_put. Returns 0, or rs_connect's negative errno. */
int upstream_acquire(struct tenant_link *link, struct upstream **out);
void upstream_put(struct upstream *up);

/* The model behind the connection (copied at connect). */
const struct rs_model_info *upstream_model(const struct upstream *up);

/* Count the prompt's tokens as rs_submit_text will make them (BOS included). Returns the
 * count or a negative errno (rs_tokenize's). */
int upstream_count_tokens(struct upstream *up, const char *text, size_t len);

/* A chat laid out by the model's own chat template and tokenized (rs_chat_tokenize);
 * *ids is malloc'd. Returns the id count, or -ENOENT (the model has no template) /
 * -ENOTSUP (one the library does not format): the caller falls back to its own layout;
 * -EINVAL (a role the template has no place for), or another negative errno. */
int upstream_chat_tokens(struct upstream *up, const struct rs_chat_message *messages, size_t n,
			 uint32_t **ids);

/* Submit text (NULL: params->prompt's ids); on success *out is a new request (ended with
 * bridge_request_end). Returns 0, or rs_submit_text's (rs_submit's) negative errno,
 * -ECONNRESET for a dead connection. */
int upstream_submit(struct upstream *up, const struct rs_generate_params *params, const char *text,
		    size_t len, struct bridge_request **out);

/* Start a detokenizer on the request's output (rs_detok_init under the lock). */
int bridge_request_detok_init(struct bridge_request *req, struct rs_detok *detok);

/* The request's state now: its output so far (*tokens, valid until bridge_request_end),
 * whether it is done and its status (-ECONNRESET / -EHOSTDOWN once the daemon is gone).
 * Returns the number of output tokens (>= 0). */
uint32_t bridge_request_state(struct bridge_request *req, const uint32_t **tokens, bool *done,
			      int32_t *status, uint32_t *completion_flags);

/* Wait until the request's notify_fd fires or client_fd (the HTTP socket, -1: none) hangs
 * up. Returns 0, or -ECONNABORTED when the client hung up. */
int bridge_request_wait(struct bridge_request *req, int client_fd);

/* End the request: release it if it completed, else cancel it (the pump releases it when
 * its completion arrives). Frees req and drops its upstream reference. */
void bridge_request_end(struct bridge_request *req);

#endif
