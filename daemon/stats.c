/* The daemon's statistics: per-tenant log-scale latency histograms over a sliding window,
 * and the updates of the statistics segment. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "daemon/stats.h"
#include "shm/stats.h"

/* Log-linear buckets of microseconds: values below 8 exactly, then every power of two
 * split into 8 equal sub-buckets (a bucket is at most 1/8 of its lower bound wide; its
 * midpoint is within 6.25% of any value in it), up to 2^32 us (71 minutes). */
#define HIST_SUB_BITS 3
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_BUCKETS  ((32 - HIST_SUB_BITS + 1) * HIST_SUB) /* 240 */

struct histogram {
	uint32_t count[HIST_BUCKETS];
	uint32_t total;
};

/* Per tenant id. The histograms are a two-window ring: [0] the current window, [1] the
 * one before; percentiles merge both. */
struct tenant_stats {
	uint64_t generation; /* the tenant entry's (tenant.h) these figures are for; 0: none */
	uint64_t finished;
	uint64_t failed;
	uint64_t last_active_ns;
	uint64_t window_start_ns;
	struct histogram ttft[2];
	struct histogram latency[2];
};

/* Finishes not yet in the histograms: a run of requests of one tenant that ended at the
 * same time with the same time to first token and latency (requests submitted in one loop
 * turn and finished by one step: the daemon's clock is read once per turn). Applied as
 * one when a finish differs, and before anything reads the figures (rs_stats_publish):
 * the same figures as one at a time, for a compare per request instead of two
 * histogram updates. */
struct pending_finishes {
	uint32_t count; /* 0: none */
	uint32_t id;
	uint64_t generation;
	uint64_t now_ns;
	uint32_t ttft_us, latency_us;
	bool first_token;
};

struct rs_stats_publisher {
	struct pending_finishes pending;
	uint32_t max_tenants;
	uint64_t started_ns;
	struct tenant_stats *tenants; /* max_tenants entries, by tenant id */
	int fd;
	struct rs_stats_segment segment;
	uint64_t last_publish_ns;
	uint64_t last_steps;
	/* Scratch for an update, sized at creation. */
	uint32_t *order; /* tenant ids, when more are in use than the segment holds */
	struct rs_stats_tenant_record records[RS_STATS_TENANT_CAPACITY];
};

static inline unsigned bucket_of(uint64_t us)
{
	if (us < HIST_SUB)
		return (unsigned)us;
	if (us >= (1ull << 32))
		return HIST_BUCKETS - 1;
	unsigned k = 63 - (unsigned)__builtin_clzll(us); /* 2^k <= us < 2^(k+1), k >= 3 */
	return (k - HIST_SUB_BITS + 1) * HIST_SUB +
	       (unsigned)((us >> (k - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* The midpoint of a bucket, in microseconds (exact below 16). */
static uint64_t bucket_value(unsigned index)
{
	if (index < 2 * HIST_SUB)
		return index;
	unsigned k = index / HIST_SUB + HIST_SUB_BITS - 1;
	uint64_t width = 1ull << (k - HIST_SUB_BITS);
	return ((uint64_t)(HIST_SUB + index % HIST_SUB) << (k - HIST_SUB_BITS)) + width / 2;
}

/* The p-quantile (0 < p <= 1) of two histograms merged: the smallest bucket whose
 * cumulative count reaches ceil(p * total). 0 when both are empty. */
static uint64_t percentile(const struct histogram pair[2], double p)
{
	uint64_t total = (uint64_t)pair[0].total + pair[1].total;
	if (total == 0)
		return 0;
	uint64_t rank = (uint64_t)(p * (double)total);
	if ((double)rank < p * (double)total)
		rank++;
	if (rank == 0)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += (uint64_t)pair[0].count[i] + pair[1].count[i];
		if (seen >= rank)
			return bucket_value(i);
	}
	return bucket_value(HIST_BUCKETS - 1);
}

/* n samples of us (as n single adds: the total saturates, and what does not fit is
 * dropped). */
static inline void histogram_add(struct histogram *h, uint64_t us, uint32_t n)
{
	uint32_t room = UINT32_MAX - h->total; /* 4 billion in one window: keep what we have */
	if (n > room)
		n = room;
	h->count[bucket_of(us)] += n;
	h->total += n;
}

/* Move the window forward to now, a window or more after its start: the current becomes
 * the previous after one window, both empty after two. Out of line, as is a restart: the
 * finish of every request goes through tenant_stats_of. */
static __attribute__((noinline)) void slide_window(struct tenant_stats *t, uint64_t now_ns)
{
	uint64_t age = now_ns - t->window_start_ns;
	if (age < 2 * RS_STATS_LATENCY_WINDOW_NS) {
		t->ttft[1] = t->ttft[0];
		t->latency[1] = t->latency[0];
		t->window_start_ns += RS_STATS_LATENCY_WINDOW_NS;
	} else {
		memset(&t->ttft[1], 0, sizeof(t->ttft[1]));
		memset(&t->latency[1], 0, sizeof(t->latency[1]));
		t->window_start_ns = now_ns;
	}
	memset(&t->ttft[0], 0, sizeof(t->ttft[0]));
	memset(&t->latency[0], 0, sizeof(t->latency[0]));
}

/* The tenant id may have been given to another (uid, name) since we last saw it (the
 * table reuses idle entries when full, with a new generation): then its figures start
 * over. */
static __attribute__((noinline)) void restart(struct tenant_stats *t, uint64_t generation,
					      uint64_t now_ns)
{
	memset(t, 0, sizeof(*t));
	t->generation = generation;
	t->window_start_ns = now_ns;
}

/* The figures of tenant id in its entry's generation (tenant.h). */
static inline struct tenant_stats *tenant_stats_of(struct rs_stats_publisher *stats, uint32_t id,
						   uint64_t generation, uint64_t now_ns)
{
	if (id >= stats->max_tenants)
		return NULL;
	struct tenant_stats *t = &stats->tenants[id];
	if (t->generation != generation)
		restart(t, generation, now_ns);
	if (now_ns - t->window_start_ns >= RS_STATS_LATENCY_WINDOW_NS)
		slide_window(t, now_ns);
	return t;
}

int rs_stats_publisher_create(uint32_t max_tenants, uint64_t now_ns,
			      struct rs_stats_publisher **out)
{
	if (max_tenants == 0)
		return -EINVAL;
	struct rs_stats_publisher *stats = calloc(1, sizeof(*stats));
	if (!stats)
		return -ENOMEM;
	stats->fd = -1;
	stats->max_tenants = max_tenants;
	stats->started_ns = now_ns;
	stats->last_publish_ns = now_ns;
	/* About 4 KiB per tenant id; pages of ids never used are never touched. */
	stats->tenants = calloc(max_tenants, sizeof(*stats->tenants));
	stats->order = calloc(max_tenants, sizeof(*stats->order));
	if (!stats->tenants || !stats->order) {
		rs_stats_publisher_destroy(stats);
		return -ENOMEM;
	}
	int fd = rs_stats_segment_create(RS_STATS_TENANT_CAPACITY, &stats->segment);
	if (fd < 0) {
		rs_stats_publisher_destroy(stats);
		return fd;
	}
	stats->fd = fd;
	*out = stats;
	return 0;
}

void rs_stats_publisher_destroy(struct rs_stats_publisher *stats)
{
	if (!stats)
		return;
	if (stats->segment.base)
		munmap(stats->segment.base, stats->segment.size);
	if (stats->fd >= 0)
		close(stats->fd);
	free(stats->tenants);
	free(stats->order);
	free(stats);
}

int rs_stats_publisher_fd(const struct rs_stats_publisher *stats)
{
	return stats->fd;
}

/* The pending run into the tenant's figures. */
static void flush_pending(struct rs_stats_publisher *stats)
{
	struct pending_finishes *p = &stats->pending;
	if (!p->count)
		return;
	struct tenant_stats *t = tenant_stats_of(stats, p->id, p->generation, p->now_ns);
	if (t) {
		t->last_active_ns = p->now_ns;
		t->finished += p->count;
		if (p->first_token)
			histogram_add(&t->ttft[0], p->ttft_us, p->count);
		histogram_add(&t->latency[0], p->latency_us, p->count);
	}
	p->count = 0;
}

void rs_stats_record_finish(struct rs_stats_publisher *stats, const struct rs_tenant *tenant,
			    int32_t status, bool first_token, uint32_t ttft_us, uint32_t latency_us,
			    uint64_t now_ns)
{
	struct pending_finishes *p = &stats->pending;
	if (status == 0 && p->count && p->id == tenant->id && p->now_ns == now_ns &&
	    p->latency_us == latency_us && p->ttft_us == ttft_us && p->first_token == first_token &&
	    p->generation == tenant->generation) {
		p->count++;
		return;
	}
	/* Figures are applied in the order they came: a later time may slide the window. */
	flush_pending(stats);
	if (status == 0) {
		*p = (struct pending_finishes){.count = 1,
					       .id = tenant->id,
					       .generation = tenant->generation,
					       .now_ns = now_ns,
					       .ttft_us = ttft_us,
					       .latency_us = latency_us,
					       .first_token = first_token};
		return;
	}
	struct tenant_stats *t = tenant_stats_of(stats, tenant->id, tenant->generation, now_ns);
	if (!t)
		return;
	t->last_active_ns = now_ns;
	t->failed++;
}

/* Which tenants go into the segment when more are in use than it holds: those with the
 * most recent activity (requests in flight count as activity now), ties by id. */
static int by_recent_activity(const void *a, const void *b, void *ctx)
{
	const struct rs_stats_publisher *stats = ctx;
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	uint64_t tx = stats->tenants[x].last_active_ns;
	uint64_t ty = stats->tenants[y].last_active_ns;
	if (tx != ty)
		return tx > ty ? -1 : 1;
	return x < y ? -1 : x > y;
}

static void fill_tenant(struct rs_stats_tenant_record *record, const struct rs_tenant *tenant,
			const struct tenant_stats *t)
{
	memset(record, 0, sizeof(*record));
	memcpy(record->name, tenant->name, sizeof(record->name));
	record->name[sizeof(record->name) - 1] = 0;
	record->uid = tenant->uid;
	record->id = tenant->id;
	record->weight = tenant->weight;
	record->service = tenant->service;
	record->deficit = tenant->deficit;
	record->counter = tenant->counter;
	record->waiting = tenant->waiting;
	record->running = tenant->running;
	record->inflight = tenant->inflight;
	record->connections = tenant->refs;
	record->prompt_tokens = tenant->prompt_tokens;
	record->cached_tokens = tenant->cached_tokens;
	record->generated_tokens = tenant->generated_tokens;
	record->requests_finished = t->finished;
	record->requests_failed = t->failed;
	record->ttft_samples = (uint64_t)t->ttft[0].total + t->ttft[1].total;
	record->ttft_p50_us = percentile(t->ttft, 0.50);
	record->ttft_p99_us = percentile(t->ttft, 0.99);
	record->latency_samples = (uint64_t)t->latency[0].total + t->latency[1].total;
	record->latency_p50_us = percentile(t->latency, 0.50);
	record->latency_p99_us = percentile(t->latency, 0.99);
	record->last_active_ns = t->last_active_ns;
}

void rs_stats_publish(struct rs_stats_publisher *stats, const struct rs_daemon *daemon,
		      uint64_t now_ns)
{
	struct rs_sched *sched = daemon->sched;
	const struct rs_sched_stats *core = rs_sched_stats(sched);
	const struct rs_tenant_table *table = rs_sched_tenants(sched);
	struct rs_prefix_cache *cache = rs_sched_prefix_cache(sched);
	flush_pending(stats);
	/* Over every worker's pool and cache (one unless --workers). */
	uint64_t kv_total = 0, kv_used = 0, kv_cached = 0;
	for (uint32_t w = 0; w < rs_sched_workers(sched); w++) {
		struct rs_kv_cache *pool = rs_sched_worker_kv(sched, w);
		struct rs_prefix_cache *tree = rs_sched_worker_cache(sched, w);
		kv_total += rs_kv_n_blocks(pool);
		kv_used += rs_kv_n_blocks(pool) - rs_kv_free_count(pool);
		kv_cached += tree ? rs_prefix_cache_nodes(tree) : 0;
	}

	/* The tenants in use, their figures brought up to date. */
	uint32_t n_used = 0;
	uint32_t limit =
	    table->capacity < stats->max_tenants ? table->capacity : stats->max_tenants;
	for (uint32_t id = 0; id < limit; id++) {
		const struct rs_tenant *tenant = &table->all[id];
		if (!tenant->in_use)
			continue;
		struct tenant_stats *t =
		    tenant_stats_of(stats, tenant->id, tenant->generation, now_ns);
		if (tenant->inflight || tenant->waiting || tenant->running)
			t->last_active_ns = now_ns;
		stats->order[n_used++] = id;
	}
	if (n_used > RS_STATS_TENANT_CAPACITY) {
		qsort_r(stats->order, n_used, sizeof(*stats->order), by_recent_activity, stats);
		n_used = RS_STATS_TENANT_CAPACITY;
	}
	for (uint32_t i = 0; i < n_used; i++)
		fill_tenant(&stats->records[i], &table->all[stats->order[i]],
			    &stats->tenants[stats->order[i]]);

	struct rs_stats_global_record global = {
	    .updated_ns = now_ns,
	    .started_ns = stats->started_ns,
	    .daemon_pid = (uint64_t)getpid(),
	    .daemon_state = daemon->stop       ? RS_DAEMON_STOPPED
			    : daemon->draining ? RS_DAEMON_DRAINING
					       : RS_DAEMON_RUNNING,
	    .prefix_cache = cache != NULL,
	    .kv_blocks_total = kv_total,
	    .kv_blocks_used = kv_used,
	    .kv_blocks_cached = kv_cached,
	    .prompt_tokens = core->prompt_tokens,
	    .cached_tokens = core->cached_tokens,
	    .steps = core->steps,
	    .requests_waiting = rs_sched_waiting(sched),
	    .requests_running = rs_sched_running(sched),
	    .requests_completed = daemon->stats.requests_completed,
	    .requests_failed = daemon->stats.requests_failed,
	    .preemptions = core->preemptions,
	    .tenants_in_use = table->in_use,
	    .clients_connected = daemon->n_active_clients,
	    .latency_window_ns = RS_STATS_LATENCY_WINDOW_NS,
	    .n_tenants = n_used,
	    .client_futex_wakes = daemon->stats.client_futex_wakes,
	    .client_event_writes = daemon->stats.client_event_writes,
	};
	snprintf(global.policy, sizeof(global.policy), "%s",
		 rs_admission_policy_name(daemon->config.admission.policy));
	uint64_t interval = now_ns - stats->last_publish_ns;
	if (interval > 0)
		global.steps_per_second =
		    (double)(core->steps - stats->last_steps) * 1e9 / (double)interval;
	stats->last_publish_ns = now_ns;
	stats->last_steps = core->steps;
	rs_stats_segment_write(&stats->segment, &global, stats->records);
}
