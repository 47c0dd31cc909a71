/* The daemon's statistics: per-tenant latency histograms and the read-only statistics
 * segment (shm/stats.h) it publishes for clients and ringserve-top.
 *
 * Everything runs on the scheduler core: rs_stats_record_finish from the finish hook,
 * rs_stats_publish from the loop every heartbeat (100 ms) and once at exit. Nothing here
 * allocates after rs_stats_publisher_create. */
#ifndef RS_DAEMON_STATS_H
#define RS_DAEMON_STATS_H

#include <stdbool.h>
#include <stdint.h>

struct rs_daemon;
struct rs_request;
struct rs_stats_publisher;

/* Percentiles cover the requests that finished in the current window and the one before:
 * the last 30 to 60 seconds. */
#define RS_STATS_LATENCY_WINDOW_NS (30ull * 1000 * 1000 * 1000)

/* Create the statistics for a tenant table of max_tenants entries (histograms per tenant
 * id) and the segment (RS_STATS_TENANT_CAPACITY tenant records). now_ns is the daemon's
 * start. Returns 0, -EINVAL, -ENOMEM or a memfd error. */
int rs_stats_publisher_create(uint32_t max_tenants, uint64_t now_ns,
			      struct rs_stats_publisher **out);

/* Free them and unmap the segment (clients keep their mappings). NULL is allowed. */
void rs_stats_publisher_destroy(struct rs_stats_publisher *stats);

/* The segment's memfd, for the welcome (SCM_RIGHTS). */
int rs_stats_publisher_fd(const struct rs_stats_publisher *stats);

/* A request of tenant ended with status at now_ns (the finish hook): count it and, with
 * status 0, put its time to first token (when it had one) and its latency, both in
 * microseconds from its submission (the finish hook computes them once, for the slot's
 * timings too), into the tenant's histograms. */
void rs_stats_record_finish(struct rs_stats_publisher *stats, const struct rs_tenant *tenant,
			    int32_t status, bool first_token, uint32_t ttft_us, uint32_t latency_us,
			    uint64_t now_ns);

/* Publish an update of the segment from the daemon's state at now_ns. */
void rs_stats_publish(struct rs_stats_publisher *stats, const struct rs_daemon *daemon,
		      uint64_t now_ns);

#endif
