/* The statistics segment (shm/stats.c) on its own: layout checks, seals, and the seqlock
 * under a concurrent writer (also run under ThreadSanitizer).
 *
 * The writer thread publishes UPDATES updates; update g stores g in every word of the
 * global record (but n_tenants, which cycles through 0 .. capacity + 3, more than the
 * segment holds) and (g << 8 | i) in every word of tenant record i. The reader (the main
 * thread) copies snapshots out as fast as it can and checks that each one is whole: every word of
 * one update, its sequence 2g, the tenant count bounded, and g never going back. The
 * writer waits (boundedly) for the reader to make progress between updates, so that
 * reads both race with writes and complete. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm/atomics.h"
#include "shm/stats.h"
#include "tests/harness/harness.h"

enum { CAPACITY = 8, UPDATES = 20000 };

static struct rs_stats_segment writer_segment;
static const void *reader_map;
static size_t reader_size;
static atomic_bool writer_done;
static atomic_ulong reads_done;

#define WORDS(type) (sizeof(type) / 8)

static void *writer(void *arg)
{
	(void)arg;
	static struct rs_stats_tenant_record tenants[CAPACITY + 3];
	for (uint64_t g = 1; g <= UPDATES; g++) {
		struct rs_stats_global_record global = {0};
		uint64_t *words = (uint64_t *)&global;
		for (size_t w = 0; w < WORDS(global); w++)
			words[w] = g;
		global.n_tenants = g % (CAPACITY + 4);
		for (uint64_t i = 0; i < CAPACITY + 3; i++) {
			uint64_t *t = (uint64_t *)&tenants[i];
			for (size_t w = 0; w < WORDS(tenants[i]); w++)
				t[w] = g << 8 | i;
		}
		unsigned long before = atomic_load(&reads_done);
		rs_stats_segment_write(&writer_segment, &global, tenants);
		/* Let the reader through now and then; bounded, so it cannot hang. */
		for (int spin = 0; spin < 20000 && atomic_load(&reads_done) == before; spin++)
			rs_cpu_relax();
	}
	atomic_store(&writer_done, true);
	return NULL;
}

static void *reader(void *arg)
{
	(void)arg;
	struct rs_stats_segment segment;
	CHECK(rs_stats_segment_attach(&segment, reader_map, reader_size) == 0, "attach");
	static struct rs_stats_tenant_record tenants[CAPACITY];
	uint64_t last = 0;
	unsigned long reads = 0;
	while (!atomic_load(&writer_done)) {
		struct rs_stats_global_record global;
		uint64_t sequence;
		int n = rs_stats_segment_read(&segment, &global, tenants, CAPACITY, &sequence);
		CHECK(n >= 0, "read: %d", n);
		const uint64_t *words = (const uint64_t *)&global;
		uint64_t g = words[0];
		CHECK(sequence == 2 * g, "sequence %llu for update %llu",
		      (unsigned long long)sequence, (unsigned long long)g);
		CHECK(g >= last, "update %llu after %llu", (unsigned long long)g,
		      (unsigned long long)last);
		last = g;
		for (size_t w = 0; w < WORDS(global); w++) {
			if (w == offsetof(struct rs_stats_global_record, n_tenants) / 8)
				continue;
			CHECK(words[w] == g, "torn global record: word %zu is %llu in update %llu",
			      w, (unsigned long long)words[w], (unsigned long long)g);
		}
		if (g == 0) { /* before the first update: all zero */
			CHECK(n == 0, "records before the first update");
		} else {
			uint64_t expected = g % (CAPACITY + 4);
			if (expected > CAPACITY)
				expected = CAPACITY; /* the writer drops what does not fit */
			CHECK(global.n_tenants == expected && (uint64_t)n == expected,
			      "update %llu: %llu records, %d copied", (unsigned long long)g,
			      (unsigned long long)global.n_tenants, n);
		}
		for (int i = 0; i < n; i++) {
			const uint64_t *t = (const uint64_t *)&tenants[i];
			for (size_t w = 0; w < WORDS(tenants[i]); w++)
				CHECK(t[w] == (g << 8 | (uint64_t)i),
				      "torn tenant record %d: word %zu in update %llu", i, w,
				      (unsigned long long)g);
		}
		reads++;
		atomic_fetch_add(&reads_done, 1);
	}
	return (void *)(uintptr_t)reads;
}

static void check_layout_and_seals(int fd)
{
	/* Clients can only read: no writable mapping, no write, no resize. */
	void *writable = mmap(NULL, writer_segment.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	int seals = fcntl(fd, F_GET_SEALS);
	CHECK(seals >= 0 && (seals & F_SEAL_SHRINK) && (seals & F_SEAL_GROW) &&
		  (seals & F_SEAL_SEAL),
	      "seals %#x", seals);
	if (seals & 0x0010 /* F_SEAL_FUTURE_WRITE */) {
		CHECK(writable == MAP_FAILED && errno == EPERM, "a writable mapping was allowed");
		CHECK(pwrite(fd, "x", 1, 0) < 0 && errno == EPERM, "a write was allowed");
	} else if (writable != MAP_FAILED) {
		munmap(writable, writer_segment.size);
	}
	CHECK(ftruncate(fd, 0) < 0 && errno == EPERM, "shrinking was allowed");

	void *map = mmap(NULL, writer_segment.size, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(map != MAP_FAILED, "read-only mapping: %s", strerror(errno));
	struct rs_stats_segment segment;
	CHECK(rs_stats_segment_attach(&segment, map, writer_segment.size) == 0, "attach");
	CHECK(segment.layout.tenant_capacity == CAPACITY &&
		  segment.layout.tenants_offset % RS_CACHE_LINE == 0 &&
		  segment.layout.tenants_offset >=
		      segment.layout.global_offset + sizeof(struct rs_stats_global_record),
	      "layout");
	CHECK(rs_stats_segment_attach(&segment, map, writer_segment.size - 1) == -EINVAL,
	      "a short mapping passed");
	CHECK(rs_stats_segment_attach(&segment, map, 16) == -EINVAL, "a tiny mapping passed");

	/* A header copy with a wrong field fails; the writer's own mapping is writable. */
	static unsigned char bad[4096];
	CHECK(writer_segment.size <= sizeof(bad), "segment size %zu", writer_segment.size);
	struct {
		size_t offset;
		uint32_t value;
		int expected;
	} cases[] = {
	    {offsetof(struct rs_stats_header, magic), 0x12345678, -EPROTO},
	    {offsetof(struct rs_stats_header, version), RS_STATS_VERSION + 1, -EPROTO},
	    {offsetof(struct rs_stats_header, tenant_capacity), CAPACITY + 1, -EINVAL},
	    {offsetof(struct rs_stats_header, tenant_capacity), 0, -EINVAL},
	    {offsetof(struct rs_stats_header, tenant_size), 8, -EINVAL},
	    {offsetof(struct rs_stats_header, global_offset), 0, -EINVAL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memcpy(bad, map, writer_segment.size);
		memcpy(bad + cases[i].offset, &cases[i].value, sizeof(cases[i].value));
		int ret = rs_stats_segment_attach(&segment, bad, writer_segment.size);
		CHECK(ret == cases[i].expected, "case %zu: %d", i, ret);
	}
	munmap(map, writer_segment.size);
}

int main(void)
{
	int fd = rs_stats_segment_create(CAPACITY, &writer_segment);
	CHECK(fd >= 0, "create: %s", strerror(-fd));
	CHECK(rs_stats_segment_create(0, &(struct rs_stats_segment){0}) == -EINVAL, "capacity 0");
	check_layout_and_seals(fd);

	/* Readers map the descriptor read-only, as clients do. */
	reader_size = writer_segment.size;
	reader_map = mmap(NULL, reader_size, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(reader_map != MAP_FAILED, "mmap: %s", strerror(errno));

	/* The main thread reads: one thread of ours exits, never two at once (every test
	 * links cuBLAS, whose thread-exit handlers TSan reports when threads exit together). */
	pthread_t writer_thread;
	CHECK(pthread_create(&writer_thread, NULL, writer, NULL) == 0, "pthread_create");
	unsigned long total = (unsigned long)(uintptr_t)reader(NULL);
	pthread_join(writer_thread, NULL);
	CHECK(total >= 100, "only %lu consistent reads", total);

	/* The last update, read once more, is whole. */
	struct rs_stats_segment segment;
	CHECK(rs_stats_segment_attach(&segment, reader_map, reader_size) == 0, "attach");
	struct rs_stats_global_record global;
	uint64_t sequence;
	int n = rs_stats_segment_read(&segment, &global, NULL, 0, &sequence);
	CHECK(n == 0 && sequence == 2ull * UPDATES && global.updated_ns == UPDATES,
	      "final: %d, sequence %llu", n, (unsigned long long)sequence);

	/* A writer that died mid-update (odd sequence): the reader gives up, it does not hang. */
	struct rs_stats_header *shared = (struct rs_stats_header *)writer_segment.base;
	rs_store_relaxed(&shared->sequence, 2ull * UPDATES + 1);
	CHECK(rs_stats_segment_read(&segment, &global, NULL, 0, NULL) == -EAGAIN,
	      "an odd sequence must give -EAGAIN");

	munmap((void *)reader_map, reader_size);
	munmap(writer_segment.base, writer_segment.size);
	close(fd);
	printf("shm_stats: %lu consistent reads of %d updates\n", total, UPDATES);
	return T_EXIT_PASS;
}
