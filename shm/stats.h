/* The statistics segment: one memfd the daemon creates at start, updates every heartbeat
 * (100 ms) and once more at exit, and hands to clients, which map it read-only
 * (docs/shm-abi.md, "The statistics segment").
 *
 *   offset 0          struct rs_stats_header       layout (line 0), sequence (line 1)
 *   global_offset     struct rs_stats_global_record
 *   tenants_offset    struct rs_stats_tenant_record[tenant_capacity]
 *
 * Offsets, never pointers; every region on a cache line; host-endian integers.
 *
 * Consistency is a seqlock. The single writer (the daemon's scheduler core) makes
 * `sequence` odd, stores the records, and makes it even again; a reader copies the records
 * out between two loads of `sequence` and keeps the copy only when both loads saw the same
 * even value. Every data word is a relaxed atomic (an 8-byte word copied whole), so a
 * reader racing with the writer reads stale or torn records, never undefined behaviour,
 * and throws them away. */
#ifndef RS_SHM_STATS_H
#define RS_SHM_STATS_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/abi.h"

#define RS_STATS_MAGIC		 0x52535331u /* "RSS1" */
#define RS_STATS_VERSION	 1u
#define RS_STATS_TENANT_CAPACITY 64 /* tenant records in the daemon's segment */
#define RS_STATS_POLICY_BYTES	 16

struct rs_stats_header {
	/* Line 0: the layout, written once before the segment is shared. */
	uint32_t magic;	  /* RS_STATS_MAGIC */
	uint32_t version; /* RS_STATS_VERSION */
	uint64_t size;	  /* bytes; sealed at this size */
	uint64_t global_offset;
	uint64_t tenants_offset;
	uint32_t global_size;	  /* sizeof(struct rs_stats_global_record) */
	uint32_t tenant_size;	  /* sizeof(struct rs_stats_tenant_record): the stride */
	uint32_t tenant_capacity; /* records at tenants_offset */
	uint32_t reserved0;

	/* Line 1: the seqlock's generation: odd while the daemon writes the records, even
	 * when they are consistent; it grows by 2 per update. */
	alignas(RS_CACHE_LINE) _Atomic uint64_t sequence;
};

/* Figures about the whole daemon. Every field is 8 bytes (the copy is word by word). */
struct rs_stats_global_record {
	uint64_t updated_ns; /* CLOCK_MONOTONIC when this update was written */
	uint64_t started_ns; /* CLOCK_MONOTONIC when the daemon started */
	uint64_t daemon_pid;
	uint64_t daemon_state;		    /* enum rs_daemon_state (STOPPED: the last update) */
	char policy[RS_STATS_POLICY_BYTES]; /* "dlpm", "vtc", "lpm", "fcfs"; NUL-terminated */
	uint64_t prefix_cache;		    /* 1: on */
	uint64_t kv_blocks_total;
	uint64_t kv_blocks_used;   /* not free: held by sequences or by the prefix cache */
	uint64_t kv_blocks_cached; /* prefix cache nodes (a node owns one block) */
	uint64_t prompt_tokens;	   /* admitted prompt tokens, over the daemon's life */
	uint64_t cached_tokens;	   /* of which the prefix cache served */
	uint64_t steps;		   /* engine steps planned, over the daemon's life */
	double steps_per_second;   /* over the interval since the previous update */
	uint64_t requests_waiting;
	uint64_t requests_running;
	uint64_t requests_completed; /* status 0 */
	uint64_t requests_failed;    /* any other status (cancels included) */
	uint64_t preemptions;
	uint64_t tenants_in_use;
	uint64_t clients_connected;
	uint64_t latency_window_ns; /* percentiles cover the finishes of the last 1-2 windows */
	uint64_t n_tenants;	    /* records filled at tenants_offset (<= tenant_capacity) */
	/* Wake-ups of sleeping clients over the daemon's life (0 from daemons before them):
	 * FUTEX_WAKEs, and writes to clients' eventfds (docs/shm-abi.md). */
	uint64_t client_futex_wakes;
	uint64_t client_event_writes;
	uint64_t reserved[7];
};

/* One tenant. Every field is 8 bytes. */
struct rs_stats_tenant_record {
	char name[64]; /* NUL-terminated */
	uint64_t uid;
	uint64_t id; /* the daemon's tenant id (a table index; reused for another tenant
		      * only when the table is full and this one is idle) */
	double weight;
	double service; /* weighted service (docs/scheduling.md) */
	double deficit; /* dlpm's deficit (weighted tokens) */
	double counter; /* vtc's virtual counter */
	uint64_t waiting;
	uint64_t running;
	uint64_t inflight; /* accepted, not yet completed, over all its connections */
	uint64_t connections;
	uint64_t prompt_tokens;
	uint64_t cached_tokens;
	uint64_t generated_tokens;
	uint64_t requests_finished; /* status 0 */
	uint64_t requests_failed;
	uint64_t ttft_samples; /* in the latency window */
	uint64_t ttft_p50_us;  /* 0 without samples */
	uint64_t ttft_p99_us;
	uint64_t latency_samples;
	uint64_t latency_p50_us;
	uint64_t latency_p99_us;
	uint64_t last_active_ns; /* last finish, or last update with requests in flight */
	uint64_t reserved[2];
};

static_assert(sizeof(struct rs_stats_header) == 2 * RS_CACHE_LINE, "stats header: 2 lines");
static_assert(offsetof(struct rs_stats_header, sequence) == RS_CACHE_LINE,
	      "the sequence on a line of its own");
static_assert(sizeof(struct rs_stats_global_record) == 4 * RS_CACHE_LINE, "global record: 4 lines");
static_assert(sizeof(struct rs_stats_tenant_record) == 4 * RS_CACHE_LINE, "tenant record: 4 lines");
static_assert(sizeof(struct rs_stats_global_record) % 8 == 0 &&
		  sizeof(struct rs_stats_tenant_record) % 8 == 0,
	      "records are copied in 8-byte words");
static_assert(sizeof(_Atomic uint64_t) == 8 && ATOMIC_LLONG_LOCK_FREE == 2,
	      "8-byte lock-free atomics");

/* One side's view of a mapped statistics segment: its base and a private, checked copy of
 * the layout (never read back from the segment). */
struct rs_stats_segment {
	unsigned char *base;
	size_t size;
	struct rs_stats_header layout; /* magic .. reserved0; sequence unused */
	uint64_t sequence;	       /* writer: the last value it stored */
};

/* Daemon: create the memfd with room for tenant_capacity tenant records, map it
 * read-write into *segment, write the layout and seal it against shrinking, growing and
 * (where the kernel has F_SEAL_FUTURE_WRITE, Linux 5.1) any new writable mapping or
 * write: clients can only map it read-only. Returns the memfd or a negative errno. */
int rs_stats_segment_create(uint32_t tenant_capacity, struct rs_stats_segment *segment);

/* Daemon: publish one update (the seqlock's writer): the global record and
 * tenants[0 .. global->n_tenants), n_tenants <= the capacity (more are dropped). */
void rs_stats_segment_write(struct rs_stats_segment *segment,
			    const struct rs_stats_global_record *global,
			    const struct rs_stats_tenant_record *tenants);

/* Client: check a mapping of mapped_size bytes (magic, version, sizes, offsets inside the
 * mapping and apart) and keep a private copy of its layout in *segment.
 * Returns 0, -EPROTO (magic or version) or -EINVAL (layout). */
int rs_stats_segment_attach(struct rs_stats_segment *segment, const void *map, size_t mapped_size);

/* Client: copy a consistent snapshot out (the seqlock's reader): the global record and
 * the first min(its n_tenants, max_tenants) tenant records (tenants may be NULL when
 * max_tenants is 0). *sequence (may be NULL) receives the snapshot's generation.
 * Retries while the writer is in the middle of an update. Returns the number of tenant
 * records copied, or -EAGAIN when no consistent copy came within 100 ms (a daemon killed
 * in the middle of an update leaves the sequence odd). */
int rs_stats_segment_read(const struct rs_stats_segment *segment,
			  struct rs_stats_global_record *global,
			  struct rs_stats_tenant_record *tenants, uint32_t max_tenants,
			  uint64_t *sequence);

#endif
