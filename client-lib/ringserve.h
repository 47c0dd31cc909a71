/* libringserve: the client library of ringserve, an LLM serving daemon for processes on
 * the same machine. Requests travel through shared-memory rings: submitting one and
 * reading its tokens costs a few cache-line transfers, not system calls.
 *
 *   struct rs_connection *conn;
 *   int ret = rs_connect(NULL, NULL, &conn);             // the default socket
 *   uint32_t prompt[] = {1, 15043, 3186};
 *   struct rs_generate_params params = {.prompt = prompt, .prompt_len = 3,
 *                                       .max_new_tokens = 16, .top_p = 1.0f};
 *   int request = rs_submit(conn, &params);               // >= 0: a request handle
 *   struct rs_completion done;
 *   ret = rs_wait(conn, &done, 1, 5000);                  // one completion, 5 s at most
 *   const uint32_t *tokens;
 *   int n = rs_output(conn, done.request, &tokens);       // zero-copy view of the output
 *   rs_release(conn, done.request);                       // the handle may be reused now
 *   rs_close(conn);
 *
 * Errors: every function returns a negative errno on failure and leaves errno alone.
 * Once the daemon is gone (its socket closed, its state STOPPED, or its heartbeat older
 * than two seconds), every call on the connection fails with -ECONNRESET (or -EHOSTDOWN
 * for a daemon that stopped answering), and waiting calls notice within 100 ms.
 *
 * Threads: a connection is single-threaded: one thread at a time may use it (lock
 * around it, or open one connection per thread, which is what the rings are made for).
 * Different connections are independent. Nothing here creates a thread or a signal.
 *
 * docs/client-api.md has the long form. */
#ifndef RINGSERVE_H
#define RINGSERVE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct rs_connection;

/* Options for rs_connect; a NULL pointer means all defaults. */
struct rs_connect_options {
	/* Busy-poll this long (microseconds) in rs_wait / rs_wait_output before sleeping
	 * on the futex; 0 means the default of 50 us. Use -1 (UINT32_MAX) to never spin. */
	uint32_t spin_us;
	/* The tenant this connection's requests are charged to (fair sharing is between
	 * tenants, scoped by our uid: more connections earn no more service). NULL:
	 * $RINGSERVE_TENANT if set, else "default". 1 to 63 bytes of [A-Za-z0-9._@:+-]. */
	const char *tenant;
};

/* Connect to the daemon at socket_path (NULL: $RINGSERVE_SOCKET if set, else
 * $XDG_RUNTIME_DIR/ringserve.sock, else /run/ringserve/ringserve.sock) and map the
 * segments it sends. On success *out is a new connection.
 * Returns 0, or:
 *   -ENOENT, -ECONNREFUSED   no daemon listens there
 *   -EPERM                   the daemon's allow-list refused our uid/gid
 *   -EUSERS                  the daemon has its maximum number of clients
 *   -ESHUTDOWN               the daemon is shutting down
 *   -EINVAL                  a bad tenant name (also when the daemon refuses it)
 *   -EPROTO                  the daemon speaks another ABI version, or sent garbage
 *   -ETIMEDOUT               the daemon did not answer the handshake within 5 s
 *   -EMFILE, -ENOMEM         the daemon is out of descriptors or memory for a segment
 *   -ENOMEM, -ENAMETOOLONG, or another errno from socket(2), connect(2), mmap(2). */
int rs_connect(const char *socket_path, const struct rs_connect_options *options,
	       struct rs_connection **out);

/* Close a connection: the daemon cancels whatever is still running. NULL is allowed.
 * Output views (rs_output) die with it. */
void rs_close(struct rs_connection *conn);

/* What the daemon serves, from the read-only segment it shares with every client. */
struct rs_model_info {
	uint32_t vocab_size;  /* token ids are < vocab_size */
	uint32_t bos_token;   /* UINT32_MAX: none */
	uint32_t eos_token;   /* UINT32_MAX: none */
	uint32_t max_seq_len; /* prompt + output tokens per request at most */
	uint32_t max_prompt_tokens;  /* this connection's limits */
	uint32_t max_output_tokens;
	uint32_t max_inflight;
	uint32_t client_id;
	const char *model_name;
	const char *engine_name; /* "null", "cpu", "cuda" */
	const void *vocab;       /* serialized vocabulary, or NULL */
	uint64_t vocab_bytes;
};

/* Fill *info. Returns 0 (the strings live as long as the connection). */
int rs_model_info(struct rs_connection *conn, struct rs_model_info *info);

#define RS_GENERATE_IGNORE_EOS (1u << 0) /* keep going after the end-of-sequence token */

/* One generation request. Fields left 0 take their default: temperature 0 is greedy,
 * top_p 0 means 1 (no nucleus cut), top_k 0 means no cut, seed 0 is a valid seed. */
struct rs_generate_params {
	const uint32_t *prompt;   /* token ids, copied into shared memory by rs_submit */
	uint32_t prompt_len;      /* 1 .. max_prompt_tokens */
	uint32_t max_new_tokens;  /* 1 .. max_output_tokens */
	float temperature;
	float top_p;
	uint32_t top_k;
	uint64_t seed;
	uint32_t output_len_hint; /* your guess of the output length, for batching; 0: none */
	uint32_t flags;           /* RS_GENERATE_* */
	uint64_t user_data;       /* returned in the completion */
};

/* Submit a request. Returns a request handle (>= 0), valid until rs_release, or:
 *   -EAGAIN       no free request slot or the submission ring is full: wait for
 *                 completions (and release them), then retry
 *   -EINVAL       NULL prompt, prompt_len 0, max_new_tokens 0
 *   -E2BIG        prompt_len or max_new_tokens above this connection's limits
 *   -ESHUTDOWN    the daemon is draining (SIGTERM) and takes no new work
 *   -ECONNRESET   the daemon is gone
 * The daemon checks everything again and may still answer with an error completion
 * (see rs_completion.status). */
int rs_submit(struct rs_connection *conn, const struct rs_generate_params *params);

/* Submit a no-op: it completes at once with status 0 and request -1 (measures the rings). */
int rs_submit_nop(struct rs_connection *conn, uint64_t user_data);

/* A finished request. */
struct rs_completion {
	uint64_t user_data;
	int32_t request;      /* the handle from rs_submit; -1 for a no-op */
	int32_t status;       /* 0, or a negative errno:
			       *   -ECANCELED   rs_cancel
			       *   -EINVAL      a field the daemon rejected
			       *   -E2BIG       prompt + output over the model's context
			       *   -ERANGE      a prompt token id >= vocab_size
			       *   -EAGAIN      over the in-flight limit
			       *   -ESHUTDOWN   the daemon drained and gave up on it
			       *   -EPROTO      its output area was overwritten while
			       *                it was being generated
			       *   -EIO         the engine failed the step it was in
			       *   -ENOMEM      the daemon ran out of memory for it */
	uint32_t output_len;  /* tokens generated (also on error: what was produced) */
	uint32_t flags;       /* RS_COMPLETION_EOS */
	uint32_t cached_tokens; /* prompt tokens the prefix cache served */
};

#define RS_COMPLETION_EOS (1u << 0) /* stopped at the end-of-sequence token */

/* Take up to max completions without waiting. Returns how many (0 is fine), or
 * -ECONNRESET. A completed request's output stays readable until rs_release. */
int rs_poll(struct rs_connection *conn, struct rs_completion *out, unsigned max);

/* Like rs_poll, but wait up to timeout_ms (-1: no limit) for at least one.
 * Returns >= 1, or -ETIMEDOUT, -ECONNRESET (daemon gone), -EHOSTDOWN (daemon stopped
 * answering), -EINTR is never returned (signals are absorbed). */
int rs_wait(struct rs_connection *conn, struct rs_completion *out, unsigned max, int timeout_ms);

/* Zero-copy view of a request's output so far: *tokens points into shared memory and
 * stays valid until rs_release. Works while the request runs (streaming) and after it
 * completed. Returns the number of tokens written so far, or -EINVAL for a handle that
 * is not in use. */
int rs_output(struct rs_connection *conn, int request, const uint32_t **tokens);

/* Wait until request has more than `have` output tokens. Returns the new count, or
 * -ENODATA when the request has completed with no more than `have` (its completion is
 * waiting for rs_poll), -ETIMEDOUT, -EINVAL, -ECONNRESET, -EHOSTDOWN. */
int rs_wait_output(struct rs_connection *conn, int request, uint32_t have, int timeout_ms);

/* Ask the daemon to stop a request; it completes with -ECANCELED at its next step (or
 * normally, if it finished first). Returns 0, -EINVAL (not running), -EAGAIN (ring
 * full: retry), -ECONNRESET. */
int rs_cancel(struct rs_connection *conn, int request);

/* Give a completed request's handle back (its output view dies). Returns 0, -EINVAL
 * (not a handle in use), -EBUSY (not completed yet: cancel it and wait). */
int rs_release(struct rs_connection *conn, int request);

/* The descriptor that becomes readable (EOF) when the daemon dies, for poll loops. */
int rs_fd(struct rs_connection *conn);

#ifdef __cplusplus
}
#endif

#endif
