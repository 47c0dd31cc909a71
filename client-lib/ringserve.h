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
 * Text (the end of this header): rs_tokenize, rs_submit_text and the incremental
 * detokenizer rs_detok_* turn text into ids and back with the vocabulary the daemon
 * shares; the daemon itself only ever sees token ids.
 *
 * docs/client-api.md has the long form. */
#ifndef RINGSERVE_H
#define RINGSERVE_H

#include <stddef.h>
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
 * $XDG_RUNTIME_DIR/ringserve.sock when that exists (a daemon of the user's session), else
 * /run/ringserve/ringserve.sock (the system service's)) and map the
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
	uint32_t vocab_size;	    /* token ids are < vocab_size */
	uint32_t bos_token;	    /* UINT32_MAX: none */
	uint32_t eos_token;	    /* UINT32_MAX: none */
	uint32_t max_seq_len;	    /* prompt + output tokens per request at most */
	uint32_t max_prompt_tokens; /* this connection's limits */
	uint32_t max_output_tokens;
	uint32_t max_inflight;
	uint32_t client_id;
	const char *model_name;
	const char *engine_name; /* "null", "cpu", "cuda" */
	const void *vocab;	 /* serialized vocabulary, or NULL */
	uint64_t vocab_bytes;
};

/* Fill *info. Returns 0 (the strings live as long as the connection). */
int rs_model_info(struct rs_connection *conn, struct rs_model_info *info);

#define RS_GENERATE_IGNORE_EOS (1u << 0) /* keep going after the end-of-sequence token */
#define RS_GENERATE_NO_BOS                                                                         \
	(1u << 1) /* rs_submit_text: no BOS before the text (a                                     \
		   * continuation); rs_submit ignores it */

/* One generation request. Fields left 0 take their default: temperature 0 is greedy,
 * top_p 0 means 1 (no nucleus cut), top_k 0 means no cut, seed 0 is a valid seed. */
struct rs_generate_params {
	const uint32_t *prompt;	 /* token ids, copied into shared memory by rs_submit */
	uint32_t prompt_len;	 /* 1 .. max_prompt_tokens */
	uint32_t max_new_tokens; /* 1 .. max_output_tokens */
	float temperature;
	float top_p;
	uint32_t top_k;
	uint64_t seed;
	uint32_t output_len_hint; /* your guess of the output length, for batching; 0: none */
	uint32_t flags;		  /* RS_GENERATE_* */
	uint64_t user_data;	  /* returned in the completion */
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

/* Submit a no-op: it completes at once with status 0 and request -1 (measures the rings).
 * Returns 0, or -EAGAIN (the submission ring is full), -ESHUTDOWN, -ECONNRESET as rs_submit. */
int rs_submit_nop(struct rs_connection *conn, uint64_t user_data);

/* A finished request. */
struct rs_completion {
	uint64_t user_data;
	int32_t request;	/* the handle from rs_submit; -1 for a no-op */
	int32_t status;		/* 0, or a negative errno:
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
	uint32_t output_len;	/* tokens generated (also on error: what was produced) */
	uint32_t flags;		/* RS_COMPLETION_EOS */
	uint32_t cached_tokens; /* prompt tokens the prefix cache served */
	/* Timings on the daemon's clock, in microseconds from the daemon taking the request
	 * off the ring: to its admission (queueing), to its first output token (time to
	 * first token), to its end. UINT32_MAX: it never got there (an error, a cancel), or
	 * more than 71 minutes. For no-ops and rejected submissions all are 0. */
	uint32_t queued_us;
	uint32_t first_token_us;
	uint32_t total_us;
	uint32_t preemptions; /* times the daemon preempted it for memory and recomputed */
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
 * is not in use. The count returned is the one RS_EVENT_OUTPUT compares with. */
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

/* --- event loops -------------------------------------------------------------------------
 * To sleep in your own epoll/poll loop instead of in rs_wait: add rs_event_fd's
 * descriptor for reading (EPOLLIN), and before each sleep call rs_event_arm, which says
 * whether there is news already; sleep only when it returns 0. The descriptor becomes
 * readable when news arrives after that (the daemon writes an eventfd, with the same
 * need-wakeup protocol as rs_wait's futex: no wake-up is lost, and a client that is busy
 * polling costs the daemon no system call), and when the daemon dies.
 *
 *   int fd = rs_event_fd(conn);                              // once; add it to epoll
 *   for (;;) {
 *           int ready = rs_event_arm(conn, RS_EVENT_COMPLETION | RS_EVENT_OUTPUT);
 *           if (ready < 0) break;                            // -ECONNRESET: daemon gone
 *           if (ready == 0) epoll_wait(ep, events, n, -1);  // wakes for news or death
 *           // rs_poll for completions, rs_output for tokens, other descriptors ...
 *   }
 *
 * docs/client-api.md has a complete loop (tests/client_event_loop.c compiles it). */

#define RS_EVENT_COMPLETION (1u << 0) /* a completion waits for rs_poll */
#define RS_EVENT_OUTPUT                                                                            \
	(1u << 1) /* a request that has not completed has more output                              \
		   * than rs_output or rs_wait_output last returned for it */

/* The connection's event-loop descriptor: readable when something rs_event_arm armed for
 * has happened since (or happens after) it returned 0, and when the daemon is gone (EOF
 * of the connection). It is an epoll descriptor (of an eventfd and the connection's
 * socket): poll it, add it to your epoll (it nests) or select it; never read it. The
 * first call creates it and hands the eventfd to the daemon (one round trip on the
 * socket); later calls return the same descriptor. It lives until rs_close, which closes
 * it (remove it from your epoll first). Returns the descriptor (close-on-exec), or:
 *   -ENOTSUP      the daemon is older than event descriptors
 *   -ECONNRESET   the daemon is gone
 *   -ETIMEDOUT    the daemon did not answer within 5 s
 *   -EPROTO       a malformed answer; or an errno of eventfd(2), epoll_create1(2). */
int rs_event_fd(struct rs_connection *conn);

/* Arm the event descriptor for `events` (RS_EVENT_COMPLETION and/or RS_EVENT_OUTPUT) and
 * say what is ready now. Returns 0: nothing; sleep until the descriptor is readable (it
 * stays readable, level-triggered, until the next rs_event_arm). > 0: the RS_EVENT_*
 * bits that are ready: handle them (rs_poll; rs_output per running request) and call
 * again, without sleeping. Or:
 *   -EINVAL       no rs_event_fd yet, events 0 or unknown bits
 *   -ECONNRESET   the daemon is gone (sticky, as for every call)
 *   -EHOSTDOWN    the daemon's heartbeat is older than 2 s (it may come back)
 * Call it before each sleep, also after waking for another descriptor of yours: a
 * readable event descriptor is cleared only here. It may run alongside rs_wait and
 * rs_wait_output, which leave it armed. RS_EVENT_OUTPUT scans the running requests
 * (one shared cache line each); RS_EVENT_COMPLETION alone reads the completion ring, and
 * the daemon then does not wake the loop for tokens. A daemon that stops answering
 * without dying (SIGSTOP) makes nothing readable: use a timeout to notice it. */
int rs_event_arm(struct rs_connection *conn, unsigned events);

/* --- text --------------------------------------------------------------------------------
 * The library tokenizes and detokenizes with the model's vocabulary, which the daemon
 * publishes in the read-only segment (rs_model_info's vocab). It is checked and copied
 * into private memory on the first text call on a connection (a one-off cost that grows
 * with the vocabulary: milliseconds for 32k tokens, tens for 128k-token BPE vocabularies).
 * Tokenization is the engine's own (SentencePiece-style BPE with byte fallback, or
 * byte-level BPE with the model's pre-tokenizer: GPT-2, Llama 3, Qwen2, StarCoder), so ids
 * match what the model was trained on and what `ringserve-generate --prompt` feeds it.
 *
 * Every text call fails with:
 *   -ENOTSUP   the daemon serves no vocabulary (the null engine, or a model without one)
 *   -EPROTO    the daemon's vocabulary is malformed */

#define RS_TOKENIZE_BOS                                                                            \
	(1u << 0) /* put BOS first, when the model expects one (its                                \
		   * vocabulary says so, as Llama's do) */
/* Read special tokens in the text: a control or user-defined token's text
 * (<|im_start|>, <s>, [INST]) becomes that token, as llama.cpp's parse_special does
 * (without it, control tokens are only ever spelled out). For text you wrote, not for a
 * user's: rs_chat_tokenize keeps message content plain. */
#define RS_TOKENIZE_SPECIAL (1u << 1)

/* Tokenize text[0 .. len) (any bytes, need not be NUL-terminated; NULL when len is 0) into
 * ids[0 .. max_ids). With ids NULL and max_ids 0 nothing is written and the return value
 * is the number of ids the text needs (a buffer of 3 * len + 5 ids is always enough).
 * Returns the number of ids, or:
 *   -ENOSPC    more than max_ids ids are needed (ask with ids NULL, max_ids 0)
 *   -EINVAL    text NULL with len > 0, ids NULL with max_ids > 0, an unknown flag
 *   -E2BIG     len over 512 MiB
 *   -EILSEQ    a byte the vocabulary cannot spell (no byte tokens and no <unk>)
 *   -ENOMEM, -ENOTSUP, -EPROTO */
int rs_tokenize(struct rs_connection *conn, const char *text, size_t len, uint32_t *ids,
		uint32_t max_ids, unsigned flags);

/* Submit text as the prompt: like rs_submit, with params->prompt and prompt_len ignored;
 * the text is tokenized straight into the request's prompt area in shared memory, BOS
 * first when the model expects one (unless params->flags has RS_GENERATE_NO_BOS).
 * Returns a request handle (>= 0), or:
 *   -EINVAL    text NULL with len > 0, max_new_tokens 0, an unknown flag, or a text that
 *              gives no token at all (empty, and no BOS)
 *   -E2BIG     the text needs more than max_prompt_tokens ids (rs_model_info), or
 *              max_new_tokens is over this connection's limit
 *   -EILSEQ, -ENOMEM, -ENOTSUP, -EPROTO as rs_tokenize
 *   -EAGAIN, -ESHUTDOWN, -ECONNRESET as rs_submit */
int rs_submit_text(struct rs_connection *conn, const struct rs_generate_params *params,
		   const char *text, size_t len);

/* The incremental detokenizer: feed it ids as they arrive, get back text that is always
 * whole UTF-8 characters. A character spelled by several tokens (byte fallback:
 * <0xE3><0x81><0x82> is "あ"; byte-level BPE splits characters between tokens too) is
 * held back until its last byte arrives; a byte sequence
 * that cannot be (or, at rs_detok_flush, did not become) valid UTF-8 comes out as U+FFFD
 * per maximal invalid subpart, so every chunk is valid UTF-8 on its own. For valid text
 * the bytes are exactly those of the engine's decoder (tools/ringserve-generate), and
 * they do not depend on how the ids are split between calls. Spaces are decoded as the
 * engine does: SentencePiece's "▁" becomes " ", and the leading space the tokenizer adds
 * in front of a text is dropped again at the start of a text (or right after BOS); a
 * byte-level BPE token gives back exactly the bytes it was made of.
 * Control tokens (BOS, EOS) and <unk> decode to nothing.
 *
 * Caller-allocated; its fields are private. It borrows the connection's vocabulary: use
 * it only while the connection is open. It is not tied to the connection's thread (the
 * vocabulary is read-only), but one detokenizer is for one thread at a time. */
struct rs_detok {
	const void *vocab;    /* private */
	int32_t prev;	      /* private: the last token fed, -1 at the start of a text */
	uint32_t pending_len; /* private */
	unsigned char pending[4];
	uint32_t reserved;
};

#define RS_DETOK_START (-1) /* rs_detok_init: the ids start a text */

/* Bytes that rs_detok_feed of n ids (any vocabulary, any ids) never exceeds: 3 output
 * bytes per input byte (U+FFFD for a lone invalid byte), up to 4096 bytes per token and
 * up to 3 bytes held from before. Pieces of real vocabularies are a few bytes, so a much
 * smaller buffer usually does: a call that does not fit fails whole and can be retried. */
#define RS_DETOK_MAX_OUTPUT(n) (3 * (4096 * (size_t)(n) + 3))

/* Start a detokenizer. request is a handle in use from rs_submit or rs_submit_text: the
 * ids fed will be its output, decoded as the continuation of its prompt (its last
 * prompt token decides whether the first output token's leading space is kept, exactly
 * as the engine's decoder does); or RS_DETOK_START: the ids fed start a text.
 * Returns 0, or -EINVAL (request is neither), -ENOMEM, -ENOTSUP, -EPROTO. */
int rs_detok_init(struct rs_connection *conn, struct rs_detok *detok, int request);

/* Decode n ids into out (out_size bytes; not NUL-terminated) and return the number of
 * bytes of complete text written (0 is fine: an incomplete character is held). Either
 * all ids are consumed or none is (the detokenizer is then unchanged). Errors:
 *   -ENOSPC    the text does not fit in out_size bytes (RS_DETOK_MAX_OUTPUT(n) always
 *              does): retry with a larger buffer or fewer ids
 *   -ERANGE    an id has no piece in the vocabulary (>= its size)
 *   -EINVAL    detok not initialized, ids NULL with n > 0, out NULL with out_size > 0 */
int rs_detok_feed(struct rs_detok *detok, const uint32_t *ids, uint32_t n, char *out,
		  size_t out_size);

/* End of the stream: write what is held back (an incomplete character, which becomes
 * U+FFFD, 3 bytes) into out and return the number of bytes (0 to 3). The detokenizer
 * may go on being fed afterwards. Returns -ENOSPC when out_size is too small (nothing
 * changes; 3 bytes always do), -EINVAL as rs_detok_feed. */
int rs_detok_flush(struct rs_detok *detok, char *out, size_t out_size);

/* --- statistics ---------------------------------------------------------------------
 * The daemon publishes its figures in a read-only shared segment, updated every 100 ms
 * and once more when it stops; reading them is a copy out of shared memory, no system
 * call, and never blocks the daemon (a seqlock: the reader retries while an update is
 * being written). Any client the daemon admits can read every tenant's figures.
 *
 * Two ways in: rs_stats_snapshot on a connection (its welcome carried the segment), or
 * rs_stats_open for a reader that is not a client (ringserve-top): it holds no client
 * slot, no tenant and no socket, and its mapping outlives the daemon (then the figures
 * stop moving: daemon_state says RS_STATS_STOPPED, or updated_ns gets old).
 *
 * Errors of the reading calls:
 *   -EAGAIN    no consistent copy within 100 ms (a daemon killed in the middle of an
 *              update leaves it so): try again later
 *   -ENOTSUP   the daemon sent no statistics segment (rs_stats_snapshot)
 *   -EPROTO    the segment is not one this library understands
 *   -EINVAL    stats NULL, or tenants NULL with max_tenants > 0 */

#define RS_STATS_MAX_TENANTS 64 /* tenant records the daemon publishes at most */

/* The daemon's state (daemon_state). */
#define RS_STATS_RUNNING  1
#define RS_STATS_DRAINING 2 /* SIGTERM: finishing what is in flight */
#define RS_STATS_STOPPED  3 /* the last update */

/* The whole daemon. Counters run over the daemon's life. */
struct rs_stats {
	uint64_t sequence;   /* the update's generation: grows with every update */
	uint64_t updated_ns; /* CLOCK_MONOTONIC when the daemon wrote it */
	uint64_t uptime_ns;  /* daemon start to updated_ns */
	int32_t daemon_pid;
	uint32_t daemon_state; /* RS_STATS_RUNNING, _DRAINING, _STOPPED */
	char policy[16];       /* admission policy: "dlpm", "vtc", "lpm", "fcfs" */
	uint32_t prefix_cache; /* 1: prompt prefixes are cached and shared */
	uint32_t kv_blocks_total;
	uint32_t kv_blocks_used;   /* not free: held by requests or by the prefix cache */
	uint32_t kv_blocks_cached; /* held by the prefix cache */
	uint64_t prompt_tokens;	   /* admitted */
	uint64_t cached_tokens;	   /* of which the prefix cache served */
	double cache_hit_rate;	   /* cached_tokens / prompt_tokens; 0 before any */
	uint64_t steps;		   /* engine steps */
	double steps_per_second;   /* over the 100 ms before the update */
	uint32_t requests_waiting;
	uint32_t requests_running;
	uint64_t requests_completed; /* status 0 */
	uint64_t requests_failed;    /* any other status, cancels included */
	uint64_t preemptions;
	uint32_t tenants_in_use;
	uint32_t clients_connected;
	uint32_t n_tenants;	   /* tenant records published (<= RS_STATS_MAX_TENANTS) */
	uint32_t latency_window_s; /* percentiles cover the finishes of the last 1-2 windows */
	/* Wake-ups of sleeping clients, over the daemon's life: futex wakes (rs_wait and
	 * rs_wait_output sleepers) and eventfd writes (rs_event_arm sleepers). A client
	 * that is busy polling costs the daemon neither. */
	uint64_t client_futex_wakes;
	uint64_t client_event_writes;
	uint64_t reserved[6];
};

/* One tenant: an account (uid, name), shared by all its connections. The daemon publishes
 * every tenant in use, or, with more than RS_STATS_MAX_TENANTS, those with the most recent
 * activity (requests in flight count as activity now). */
struct rs_stats_tenant {
	char name[64];
	uint32_t uid;
	uint32_t id;	/* the daemon's tenant id */
	double weight;	/* share of service */
	double service; /* weighted service: charges divided by the weight */
	double deficit; /* dlpm: credit left in this round (weighted tokens; < 0: a debt) */
	double counter; /* vtc: virtual token counter */
	uint32_t waiting;
	uint32_t running;
	uint32_t inflight; /* accepted and not yet completed, over all its connections */
	uint32_t connections;
	uint64_t prompt_tokens;
	uint64_t cached_tokens; /* prompt tokens the prefix cache served */
	uint64_t generated_tokens;
	uint64_t requests_finished; /* status 0 */
	uint64_t requests_failed;
	/* Over the requests that finished with status 0 in the last 1-2 latency windows
	 * (rs_stats.latency_window_s): time to first token and latency (to the end), from
	 * the daemon taking the request off the ring; percentiles from log-scale histograms
	 * (within about 6%); 0 without samples. */
	uint32_t ttft_samples;
	uint32_t latency_samples;
	double ttft_p50_ms;
	double ttft_p99_ms;
	double latency_p50_ms;
	double latency_p99_ms;
	uint64_t last_active_ns; /* CLOCK_MONOTONIC of its last activity; 0: none yet */
	uint64_t reserved[4];
};

/* Copy the daemon's latest figures out: *stats, and the first min(stats->n_tenants,
 * max_tenants) tenant records, in the daemon's order (by tenant id, or by recent
 * activity when it has more tenants than it publishes). Returns the number of tenant
 * records written, or -EAGAIN, -ENOTSUP, -EPROTO, -EINVAL (above). */
int rs_stats_snapshot(struct rs_connection *conn, struct rs_stats *stats,
		      struct rs_stats_tenant *tenants, unsigned max_tenants);

struct rs_stats_reader;

/* Open a statistics reader on the daemon at socket_path (NULL: as rs_connect). It
 * connects, receives the segment, maps it read-only and closes the socket.
 * Returns 0, or as rs_connect: -ENOENT, -ECONNREFUSED, -EPERM, -ESHUTDOWN, -EPROTO,
 * -ETIMEDOUT, -ENOMEM, -ENAMETOOLONG, or an errno of mmap(2). */
int rs_stats_open(const char *socket_path, struct rs_stats_reader **out);

/* As rs_stats_snapshot, from a reader. */
int rs_stats_read(struct rs_stats_reader *reader, struct rs_stats *stats,
		  struct rs_stats_tenant *tenants, unsigned max_tenants);

/* Unmap and free a reader. NULL is allowed. */
void rs_stats_close(struct rs_stats_reader *reader);

/* --- chat --------------------------------------------------------------------------------
 * Chat models are trained on conversations laid out by a template (the GGUF key
 * tokenizer.chat_template, a Jinja program). The library formats the common families
 * itself, byte for byte as their templates do (tests/client_chat checks it against the
 * real templates rendered by Jinja2), and recognizes a model's template from its text the
 * way llama.cpp does. Templates that insert a default system prompt of their own when the
 * conversation has none (Mistral Small 3.x, Devstral) are formatted without it; Gemma's,
 * which refuses a system message, gets it in front of the first user message, as
 * llama.cpp does. docs/client-api.md lists the families and where each one comes from. */

enum rs_chat_template {
	RS_CHAT_TEMPLATE_MODEL = 0,    /* the model's own (rs_chat_tokenize) */
	RS_CHAT_LLAMA2 = 1,	       /* "llama2": <s>[INST] <<SYS>> .. [/INST] .. </s> */
	RS_CHAT_LLAMA3 = 2,	       /* "llama3": Llama 3.0 <|start_header_id|> turns */
	RS_CHAT_LLAMA31 = 3,	       /* "llama3.1": 3.0 + the Cutting Knowledge system
					* header dated 26 Jul 2024 (3.1, 3.3) */
	RS_CHAT_LLAMA32 = 4,	       /* "llama3.2": dated today (local time, read at
					* each call), as strftime_now */
	RS_CHAT_CHATML = 5,	       /* "chatml": <|im_start|>role\n..<|im_end|>\n */
	RS_CHAT_QWEN25 = 6,	       /* "qwen2.5": chatml + Qwen's default system prompt */
	RS_CHAT_QWEN3 = 7,	       /* "qwen3": chatml, <think> kept for the last turn only */
	RS_CHAT_MISTRAL_V3_TEKKEN = 8, /* "mistral-v3-tekken": Mistral Nemo */
	RS_CHAT_MISTRAL_V7_TEKKEN = 9, /* "mistral-v7-tekken": [SYSTEM_PROMPT] (Small 3.x) */
	RS_CHAT_GEMMA = 10,	       /* "gemma": <start_of_turn>user\n..<end_of_turn>\n */
	RS_CHAT_PHI3 = 11,	       /* "phi3": <|user|>\n..<|end|>\n */
	RS_CHAT_MISTRAL_V1 = 12,       /* "mistral-v1": <s> [INST] .. [/INST] ..</s>
					* (Mistral-7B-Instruct v0.1/v0.2, Mixtral) */
	RS_CHAT_MISTRAL_V3 = 13,       /* "mistral-v3": <s>[INST] ..[/INST] ..</s>
					* (Mistral-7B-Instruct-v0.3, Large 2407) */
	RS_CHAT_MISTRAL_V7 = 14,       /* "mistral-v7": [SYSTEM_PROMPT] .. (Large 2411) */
	RS_CHAT_MISTRAL_LEGACY = 15,   /* "mistral-legacy": <s>[INST] .. [/INST]..</s>, the
					* first template of Mistral-7B-Instruct v0.1/v0.2 */
};

/* One message: role "system", "user" or "assistant" (llama3 and chatml take any role
 * name, llama3.1 and llama3.2 any but "tool" and "ipython", which their templates write
 * otherwise), content any UTF-8 text. Both NUL-terminated. */
struct rs_chat_message {
	const char *role;
	const char *content;
};

#define RS_CHAT_ADD_ASSISTANT                                                                      \
	(1u << 0) /* end with the assistant's turn opened (Jinja's                                 \
		   * add_generation_prompt): what a prompt needs */

/* The template a Jinja template text is (or its name, as rs_chat_template_name gives).
 * Returns an enum rs_chat_template (> 0), or -ENOENT: none that ringserve formats (use
 * an explicit one: ringserve-cli --chat-template NAME), -EINVAL: jinja NULL. */
int rs_chat_template_detect(const char *jinja, size_t len);

/* The template called name ("llama3", "chatml", ...; rs_chat_template_name's names).
 * Returns an enum rs_chat_template (> 0) or -ENOENT. */
int rs_chat_template_by_name(const char *name);

/* The name of template tmpl, or NULL for a value that is not one. The names, in enum
 * order, for i = 1 while rs_chat_template_name(i) != NULL. */
const char *rs_chat_template_name(int tmpl);

/* Format messages[0 .. n) as template tmpl lays them out (flags: RS_CHAT_*) into
 * out[0 .. out_size), NUL-terminated, like snprintf: the return value is the length of
 * the whole text (without the NUL), which was cut when it is >= out_size (out may be
 * NULL with out_size 0 to ask). Special tokens come as text (<|im_start|>, [INST]):
 * tokenize the result with RS_TOKENIZE_SPECIAL, or better use rs_chat_tokenize, which
 * never reads special tokens in message content. Returns the length, or -EINVAL (tmpl
 * not a template, a role the template has no place for, a NULL role or content, messages
 * NULL with n > 0, an unknown flag), -E2BIG (over 512 MiB), -ENOMEM. */
int rs_chat_format(int tmpl, const struct rs_chat_message *messages, size_t n, unsigned flags,
		   char *out, size_t out_size);

/* The model's chat template from the daemon's shared segment: *jinja points at its text
 * (len bytes, NUL-terminated; lives as long as the connection; a malformed file's may hold
 * NULs of its own, counted in len: use len, not strlen), and the return value
 * is the template it is (> 0), or -ENOTSUP: the model has one that ringserve does not
 * format (*jinja still set), -ENOENT: the model has none (*jinja NULL). */
int rs_chat_model_template(struct rs_connection *conn, const char **jinja, size_t *len);

/* The model's end-of-turn tokens (<|eot_id|>, <|im_end|>, <end_of_turn>, <|end|>, EOS
 * ...), at which the daemon ends every generation as it does at EOS (unless
 * RS_GENERATE_IGNORE_EOS): *ids points at them (lives as long as the connection).
 * Returns their number (0 to 8). */
int rs_chat_end_tokens(struct rs_connection *conn, const uint32_t **ids);

/* Format messages with template tmpl (RS_CHAT_TEMPLATE_MODEL: the model's) and tokenize
 * the text: special tokens in the template's text become their ids, message content is
 * tokenized as plain text (a user who writes "<|im_end|>" gets those characters, not the
 * token). No BOS is added: templates that want one write it. ids and max_ids as
 * rs_tokenize. Returns the number of ids, or the errors of rs_chat_format and
 * rs_tokenize, and for the model's template -ENOENT / -ENOTSUP as
 * rs_chat_model_template.
 * llama3.2 writes today's date, read at each call: a size query (ids NULL) and the call
 * that fills can straddle midnight and disagree in ids (the date's bytes are as many,
 * its tokens need not be). Use the ids of one call: give room (3 * rs_chat_format's
 * length + 5 ids is always enough) or retry with more on -ENOSPC. */
int rs_chat_tokenize(struct rs_connection *conn, int tmpl, const struct rs_chat_message *messages,
		     size_t n, unsigned flags, uint32_t *ids, uint32_t max_ids);

#ifdef __cplusplus
}
#endif

#endif
