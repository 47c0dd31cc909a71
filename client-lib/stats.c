/* Statistics: mapping the daemon's statistics segment read-only, the stand-alone reader
 * (rs_stats_open), and the copy out into the public structures. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client-lib/connection.h"
#include "shm/stats.h"

static_assert(RS_STATS_MAX_TENANTS == RS_STATS_TENANT_CAPACITY, "the daemon's capacity");
static_assert(RS_STATS_RUNNING == RS_DAEMON_RUNNING && RS_STATS_DRAINING == RS_DAEMON_DRAINING &&
		  RS_STATS_STOPPED == RS_DAEMON_STOPPED,
	      "daemon states as in shm/abi.h");
static_assert(sizeof(((struct rs_stats *)0)->policy) == RS_STATS_POLICY_BYTES, "policy name");
static_assert(sizeof(((struct rs_stats_tenant *)0)->name) ==
		  sizeof(((struct rs_stats_tenant_record *)0)->name),
	      "tenant name");

struct rs_stats_reader {
	struct rs_stats_segment segment;
};

/* Map fd read-only (its size from fstat: the welcome does not carry it) and check it. */
static int map_stats(int fd, struct rs_stats_segment *segment)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size <= 0 || (uint64_t)st.st_size > (1ull << 30))
		return -EPROTO;
	size_t size = (size_t)st.st_size;
	void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	int ret = rs_stats_segment_attach(segment, map, size);
	if (ret)
		munmap(map, size);
	return ret;
}

void rs_conn_map_stats(struct rs_connection *conn, int fd)
{
	conn->stats_status = map_stats(fd, &conn->stats);
	if (conn->stats_status)
		memset(&conn->stats, 0, sizeof(conn->stats));
}

void rs_conn_unmap_stats(struct rs_connection *conn)
{
	if (conn->stats.base)
		munmap(conn->stats.base, conn->stats.size);
	conn->stats.base = NULL;
}

static uint32_t clamp32(uint64_t x)
{
	return x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
}

static void convert_global(const struct rs_stats_global_record *g, uint64_t sequence,
			   struct rs_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->sequence = sequence;
	out->updated_ns = g->updated_ns;
	out->uptime_ns = g->updated_ns >= g->started_ns ? g->updated_ns - g->started_ns : 0;
	out->daemon_pid = (int32_t)g->daemon_pid;
	out->daemon_state = clamp32(g->daemon_state);
	memcpy(out->policy, g->policy, sizeof(out->policy));
	out->policy[sizeof(out->policy) - 1] = 0;
	out->prefix_cache = g->prefix_cache != 0;
	out->kv_blocks_total = clamp32(g->kv_blocks_total);
	out->kv_blocks_used = clamp32(g->kv_blocks_used);
	out->kv_blocks_cached = clamp32(g->kv_blocks_cached);
	out->prompt_tokens = g->prompt_tokens;
	out->cached_tokens = g->cached_tokens;
	out->cache_hit_rate =
	    g->prompt_tokens ? (double)g->cached_tokens / (double)g->prompt_tokens : 0.0;
	out->steps = g->steps;
	out->steps_per_second = g->steps_per_second;
	out->requests_waiting = clamp32(g->requests_waiting);
	out->requests_running = clamp32(g->requests_running);
	out->requests_completed = g->requests_completed;
	out->requests_failed = g->requests_failed;
	out->preemptions = g->preemptions;
	out->tenants_in_use = clamp32(g->tenants_in_use);
	out->clients_connected = clamp32(g->clients_connected);
	out->n_tenants = clamp32(g->n_tenants);
	out->latency_window_s = clamp32(g->latency_window_ns / 1000000000ull);
	out->client_futex_wakes = g->client_futex_wakes;
	out->client_event_writes = g->client_event_writes;
}

static void convert_tenant(const struct rs_stats_tenant_record *t, struct rs_stats_tenant *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->name, t->name, sizeof(out->name));
	out->name[sizeof(out->name) - 1] = 0;
	out->uid = clamp32(t->uid);
	out->id = clamp32(t->id);
	out->weight = t->weight;
	out->service = t->service;
	out->deficit = t->deficit;
	out->counter = t->counter;
	out->waiting = clamp32(t->waiting);
	out->running = clamp32(t->running);
	out->inflight = clamp32(t->inflight);
	out->connections = clamp32(t->connections);
	out->prompt_tokens = t->prompt_tokens;
	out->cached_tokens = t->cached_tokens;
	out->generated_tokens = t->generated_tokens;
	out->requests_finished = t->requests_finished;
	out->requests_failed = t->requests_failed;
	out->ttft_samples = clamp32(t->ttft_samples);
	out->latency_samples = clamp32(t->latency_samples);
	out->ttft_p50_ms = (double)t->ttft_p50_us / 1000.0;
	out->ttft_p99_ms = (double)t->ttft_p99_us / 1000.0;
	out->latency_p50_ms = (double)t->latency_p50_us / 1000.0;
	out->latency_p99_ms = (double)t->latency_p99_us / 1000.0;
	out->last_active_ns = t->last_active_ns;
}

static int read_segment(const struct rs_stats_segment *segment, struct rs_stats *stats,
			struct rs_stats_tenant *tenants, unsigned max_tenants)
{
	if (!stats || (!tenants && max_tenants))
		return -EINVAL;
	struct rs_stats_global_record global;
	struct rs_stats_tenant_record records[RS_STATS_TENANT_CAPACITY];
	unsigned max =
	    max_tenants < RS_STATS_TENANT_CAPACITY ? max_tenants : RS_STATS_TENANT_CAPACITY;
	uint64_t sequence;
	int n = rs_stats_segment_read(segment, &global, records, max, &sequence);
	if (n < 0)
		return n;
	convert_global(&global, sequence, stats);
	for (int i = 0; i < n; i++)
		convert_tenant(&records[i], &tenants[i]);
	return n;
}

int rs_stats_snapshot(struct rs_connection *conn, struct rs_stats *stats,
		      struct rs_stats_tenant *tenants, unsigned max_tenants)
{
	if (!conn->stats.base)
		return conn->stats_status ? conn->stats_status : -ENOTSUP;
	return read_segment(&conn->stats, stats, tenants, max_tenants);
}

int rs_stats_read(struct rs_stats_reader *reader, struct rs_stats *stats,
		  struct rs_stats_tenant *tenants, unsigned max_tenants)
{
	return read_segment(&reader->segment, stats, tenants, max_tenants);
}

int rs_stats_open(const char *socket_path, struct rs_stats_reader **out)
{
	struct rs_stats_reader *reader = calloc(1, sizeof(*reader));
	if (!reader)
		return -ENOMEM;
	struct rs_hello hello = {
	    .magic = RS_HELLO_MAGIC, .abi_version = RS_ABI_VERSION, .flags = RS_HELLO_STATS};
	struct rs_welcome welcome;
	int fds[4] = {-1, -1, -1, -1};
	int fd, ret;
	int n_fds = rs_conn_handshake(socket_path, &hello, &fd, &welcome, fds);
	if (n_fds < 0) {
		ret = n_fds;
		n_fds = 0;
		goto out;
	}
	if (n_fds != 1) {
		ret = -EPROTO;
		goto out;
	}
	ret = map_stats(fds[0], &reader->segment);

out:
	for (int i = 0; i < n_fds; i++)
		close(fds[i]);
	if (fd >= 0)
		close(fd);
	if (ret) {
		free(reader);
		return ret;
	}
	*out = reader;
	return 0;
}

void rs_stats_close(struct rs_stats_reader *reader)
{
	if (!reader)
		return;
	if (reader->segment.base)
		munmap(reader->segment.base, reader->segment.size);
	free(reader);
}
