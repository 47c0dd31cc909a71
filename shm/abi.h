/* The shared-memory ABI between ringserved and its clients (docs/shm-abi.md explains it).
 *
 * A client segment is one memfd, created, sized and sealed by the daemon:
 *
 *   offset 0                 struct rs_segment_header   (4 cache lines, see below)
 *   sq_ring_offset           struct rs_ring_indices      submission ring head/tail
 *   sq_entries_offset        struct rs_sqe[sq_entries]   client produces, daemon consumes
 *   cq_ring_offset           struct rs_ring_indices      completion ring head/tail
 *   cq_entries_offset        struct rs_cqe[cq_entries]   daemon produces, client consumes
 *   slots_offset             slot_count slots of slot_stride bytes each:
 *                              struct rs_slot_header, then prompt[slot_prompt_capacity]
 *                              (uint32 token ids, written by the client), then
 *                              output[slot_output_capacity] (written by the daemon or GPU)
 *
 * Everything is at an offset named in the header, never a pointer; every region starts on a
 * cache line. Ring indices are free-running uint32 counters masked by (entries - 1).
 * All integers are host-endian: the segment never leaves the machine.
 *
 * The daemon treats every byte a client can write as hostile: it copies, then validates. */
#ifndef RS_SHM_ABI_H
#define RS_SHM_ABI_H

#include <assert.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define RS_CACHE_LINE	 64
#define RS_SEGMENT_MAGIC 0x52534731u /* "RSG1" */
#define RS_SHARED_MAGIC	 0x52535231u /* "RSR1" */
#define RS_HELLO_MAGIC	 0x52534831u /* "RSH1" */
#define RS_ABI_VERSION	 3u	     /* 2: the hello names a tenant; 3: chat template, end tokens */

/* Largest sizes a daemon may announce; a client rejects a header that exceeds them. */
#define RS_MAX_RING_ENTRIES (1u << 16)
#define RS_MAX_SLOTS	    (1u << 16)
#define RS_MAX_SLOT_TOKENS  (1u << 20)

/* --- submission and completion entries ---------------------------------------------- */

enum rs_opcode {
	RS_OP_NOP = 0,	    /* completes with status 0; useful to measure the ring itself */
	RS_OP_GENERATE = 1, /* generate up to max_new_tokens after the prompt in `slot` */
	RS_OP_CANCEL = 2,   /* cancel the request running in `slot`; posts no completion itself */
};

/* Request flags. */
#define RS_SQE_IGNORE_EOS (1u << 0) /* keep generating after the end-of-sequence token */

/* One submission: exactly one cache line. */
struct rs_sqe {
	uint64_t user_data; /* echoed in the completion */
	uint8_t opcode;	    /* enum rs_opcode */
	uint8_t reserved0;
	uint16_t flags;		  /* RS_SQE_* */
	uint32_t slot;		  /* request slot holding the prompt and receiving the output */
	uint32_t prompt_len;	  /* tokens in slot.prompt */
	uint32_t max_new_tokens;  /* output tokens at most */
	uint32_t output_len_hint; /* the client's guess of the output length; 0: none */
	uint32_t top_k;		  /* 0: no top-k cut */
	float temperature;	  /* 0: greedy */
	float top_p;		  /* 1: no nucleus cut */
	uint64_t seed;		  /* sampling seed: same seed, same tokens */
	uint8_t reserved1[16];
};

/* Completion flags. */
#define RS_CQE_EOS (1u << 0) /* generation stopped at the end-of-sequence token */

/* One completion: half a cache line. */
struct rs_cqe {
	uint64_t user_data;	/* from the submission */
	uint32_t slot;		/* from the submission (UINT32_MAX when it was out of range) */
	int32_t status;		/* 0, or a negative errno (see docs/client-api.md) */
	uint32_t output_len;	/* tokens in slot.output */
	uint32_t flags;		/* RS_CQE_* */
	uint32_t cached_tokens; /* prompt tokens served from the prefix cache */
	uint32_t reserved;
};

/* --- rings ----------------------------------------------------------------------------- */

/* Head and tail on cache lines of their own: the producer writes only tail, the consumer
 * only head. */
struct rs_ring_indices {
	alignas(RS_CACHE_LINE) _Atomic uint32_t tail; /* written by the producer */
	alignas(RS_CACHE_LINE) _Atomic uint32_t head; /* written by the consumer */
};

/* --- request slots ------------------------------------------------------------------- */

struct rs_slot_header {
	/* Tokens written to output so far: the daemon stores it with release after writing
	 * the tokens (R-progress); a reader loads it with acquire (A-progress) and may then
	 * read that many tokens. The client resets it to 0 before it submits the slot. */
	alignas(RS_CACHE_LINE) _Atomic uint32_t output_count;
	/* Written by the daemon before the request's completion, which publishes them (the
	 * CQ tail's release): microseconds from the submission being taken off the ring to
	 * its admission, to its first output token, and to its end (UINT32_MAX: never, or
	 * more than 71 minutes), and how often it was preempted and recomputed. */
	uint32_t queued_us;
	uint32_t first_token_us;
	uint32_t total_us;
	uint32_t preemptions;
	uint32_t reserved[11];
};

/* --- segment header ------------------------------------------------------------------- */

enum rs_daemon_state {
	RS_DAEMON_RUNNING = 1,
	RS_DAEMON_DRAINING = 2, /* SIGTERM: finishing in-flight work, accepting none */
	RS_DAEMON_STOPPED = 3,
};

enum rs_wake_mode {
	RS_WAKE_FUTEX = 1,   /* bump the doorbell word, FUTEX_WAKE it */
	RS_WAKE_EVENTFD = 2, /* bump the doorbell word, write 1 to the eventfd sent along */
};

struct rs_segment_header {
	/* Line 0: layout, written once by the daemon before the segment is sent. */
	uint32_t magic;	       /* RS_SEGMENT_MAGIC */
	uint32_t abi_version;  /* RS_ABI_VERSION */
	uint64_t segment_size; /* bytes; the memfd is sealed at this size */
	uint32_t sq_entries;   /* power of two */
	uint32_t cq_entries;   /* power of two */
	uint32_t slot_count;
	uint32_t slot_prompt_capacity; /* tokens */
	uint32_t slot_output_capacity; /* tokens */
	uint32_t client_id;
	uint64_t sq_ring_offset;
	uint64_t sq_entries_offset;
	uint64_t cq_ring_offset;

	/* Line 1: more layout and the limits the daemon enforces on this client. */
	alignas(RS_CACHE_LINE) uint64_t cq_entries_offset;
	uint64_t slots_offset;
	uint64_t slot_stride;	     /* bytes from one slot to the next */
	uint64_t slot_prompt_offset; /* within a slot */
	uint64_t slot_output_offset; /* within a slot */
	uint32_t max_inflight;	     /* requests submitted and not yet completed */
	uint32_t max_prompt_tokens;
	uint32_t max_output_tokens;
	uint32_t wake_mode; /* enum rs_wake_mode */
	uint32_t features;  /* RS_FEATURE_*: what this daemon supports (0 before) */
	uint32_t reserved1;

	/* Line 2: written by the daemon only. */
	alignas(RS_CACHE_LINE) _Atomic uint64_t daemon_heartbeat_ns; /* CLOCK_MONOTONIC */
	_Atomic uint32_t daemon_state;				     /* enum rs_daemon_state */
	/* 1 while the daemon sleeps or is about to (N1); a client that published work
	 * rings daemon_doorbell after a full fence when it reads 1. */
	_Atomic uint32_t daemon_need_wakeup;
	/* The daemon's doorbell for the client: bumped, then woken, when client_need_wakeup
	 * was set. The client futex-waits on it. */
	_Atomic uint32_t client_doorbell;

	/* Line 3: written by the client only. */
	alignas(RS_CACHE_LINE) _Atomic uint32_t
	    daemon_doorbell; /* futex word the daemon waits on */
	/* Non-zero while the client sleeps or is about to: RS_NEED_WAKEUP_* bits saying how
	 * to wake it and for what. The client stores whole values; the daemon only ever
	 * exchanges it to 0, and whoever clears a bit wakes the client for it. */
	_Atomic uint32_t client_need_wakeup;
};

/* Segment features (rs_segment_header.features). */
#define RS_FEATURE_EVENT_FD (1u << 0) /* takes an eventfd for wake-ups (RS_CONTROL_EVENT_FD) */

/* client_need_wakeup bits. Clients from before the event descriptor store 1. */
#define RS_NEED_WAKEUP_FUTEX	  (1u << 0) /* futex-waits on client_doorbell: any news */
#define RS_NEED_WAKEUP_COMPLETION (1u << 1) /* sleeps on its eventfd: for a completion */
#define RS_NEED_WAKEUP_OUTPUT	  (1u << 2) /* sleeps on its eventfd: for output tokens */
#define RS_NEED_WAKEUP_EVENT	  (RS_NEED_WAKEUP_COMPLETION | RS_NEED_WAKEUP_OUTPUT)

/* --- the read-only segment shared by all clients ------------------------------------ */

#define RS_MAX_END_TOKENS 8u

struct rs_shared_header {
	uint32_t magic; /* RS_SHARED_MAGIC */
	uint32_t abi_version;
	uint64_t size;
	uint32_t vocab_size;   /* token ids are < vocab_size */
	uint32_t bos_token;    /* UINT32_MAX: none */
	uint32_t eos_token;    /* UINT32_MAX: none */
	uint32_t max_seq_len;  /* prompt + output tokens at most, per request */
	uint64_t vocab_offset; /* serialized tokenizer vocabulary (0 when absent) */
	uint64_t vocab_size_bytes;
	char model_name[64];  /* NUL-terminated */
	char engine_name[32]; /* NUL-terminated: "null", "cpu", "cuda" */
	/* The model's chat template (GGUF tokenizer.chat_template, Jinja text), followed by
	 * a NUL that chat_template_bytes does not count; offset 0 when it has none. */
	uint64_t chat_template_offset;
	uint64_t chat_template_bytes;
	/* Tokens that end a turn (<|eot_id|>, <|im_end|>, <end_of_turn>, <|end|>, EOS): the
	 * daemon ends a generation at any of them as at eos_token. */
	uint32_t n_end_tokens; /* <= RS_MAX_END_TOKENS */
	uint32_t end_tokens[RS_MAX_END_TOKENS];
};

/* --- handshake over the control socket (SOCK_SEQPACKET) ------------------------------ */

#define RS_TENANT_NAME_BYTES 64

struct rs_hello {
	uint32_t magic;	      /* RS_HELLO_MAGIC */
	uint32_t abi_version; /* RS_ABI_VERSION */
	uint32_t flags;	      /* RS_HELLO_*; other bits must be 0 */
	uint32_t reserved;
	/* The tenant whose account this connection's requests are charged to, scoped by the
	 * connecting uid: 1 to 63 bytes of [A-Za-z0-9._@:+-], NUL-padded. */
	char tenant[RS_TENANT_NAME_BYTES];
};

/* A statistics reader (ringserve-top): the welcome carries only the statistics segment
 * (shm/stats.h), the tenant is ignored, and the daemon closes the connection. */
#define RS_HELLO_STATS (1u << 0)

/* The reply; on status 0 it carries, by SCM_RIGHTS, the client segment's memfd, the
 * shared segment's memfd, in RS_WAKE_EVENTFD mode the daemon's eventfd, and last the
 * statistics segment's memfd (shm/stats.h). To an RS_HELLO_STATS hello: only the last,
 * with client_id and both sizes 0. */
struct rs_welcome {
	uint32_t magic; /* RS_HELLO_MAGIC */
	uint32_t abi_version;
	int32_t status; /* 0 or a negative errno (-EPERM, -EPROTO, -EUSERS, -ESHUTDOWN,
			 * -EINVAL: a bad tenant name) */
	uint32_t client_id;
	uint64_t segment_size;
	uint64_t shared_size;
};

/* After the welcome, a client may send a control message on the connection. The one
 * there is: the client hands the daemon an eventfd (SCM_RIGHTS, exactly one descriptor)
 * to be written, instead of or besides the futex wake, when client_need_wakeup has
 * RS_NEED_WAKEUP_EVENT bits; the daemon answers with the same message, status 0 or a
 * negative errno (-EBADF: no descriptor or not an eventfd; -EMFILE: the daemon could not
 * receive it). A second one replaces the first. Only where the segment's features have
 * RS_FEATURE_EVENT_FD: an older daemon ignores it and never answers. */
#define RS_CONTROL_MAGIC 0x52534331u /* "RSC1" */

enum rs_control_op {
	RS_CONTROL_EVENT_FD = 1,
};

struct rs_control_msg {
	uint32_t magic; /* RS_CONTROL_MAGIC */
	uint32_t op;	/* enum rs_control_op */
	int32_t status; /* the daemon's answer: 0 or a negative errno; 0 from the client */
	uint32_t reserved;
};

/* --- compile-time checks ------------------------------------------------------------ */

static_assert(sizeof(struct rs_sqe) == RS_CACHE_LINE, "an SQE is one cache line");
static_assert(sizeof(struct rs_cqe) == RS_CACHE_LINE / 2, "a CQE is half a cache line");
static_assert(sizeof(struct rs_ring_indices) == 2 * RS_CACHE_LINE, "head, tail: a line each");
static_assert(offsetof(struct rs_ring_indices, head) == RS_CACHE_LINE, "head on its own line");
static_assert(sizeof(struct rs_slot_header) == RS_CACHE_LINE, "slot header is one line");
static_assert(offsetof(struct rs_segment_header, cq_entries_offset) == 1 * RS_CACHE_LINE, "line 1");
static_assert(offsetof(struct rs_segment_header, daemon_heartbeat_ns) == 2 * RS_CACHE_LINE,
	      "daemon-written words on line 2");
static_assert(offsetof(struct rs_segment_header, daemon_doorbell) == 3 * RS_CACHE_LINE,
	      "client-written words on line 3");
static_assert(sizeof(struct rs_segment_header) == 4 * RS_CACHE_LINE, "header is 4 lines");
static_assert(sizeof(struct rs_hello) == 16 + RS_TENANT_NAME_BYTES, "hello: no padding");
static_assert(sizeof(struct rs_control_msg) == 16, "control message: no padding");
static_assert(sizeof(_Atomic uint32_t) == 4 && sizeof(_Atomic uint64_t) == 8,
	      "atomics have the size of the plain integer");
static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2,
	      "shared-memory atomics must be lock-free");

#endif
