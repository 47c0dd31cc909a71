/* The statistics segment: layout, creation and sealing, the seqlock's writer and reader. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm/atomics.h"
#include "shm/clock.h"
#include "shm/stats.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010 /* Linux 5.1 */
#endif

/* Give up a read after this long without a consistent copy. */
#define READ_PATIENCE_NS (100 * 1000 * 1000ull)

static uint64_t align_line(uint64_t x)
{
	return (x + RS_CACHE_LINE - 1) & ~(uint64_t)(RS_CACHE_LINE - 1);
}

/* The one definition of the layout: everything follows from the capacity. */
static void stats_layout(uint32_t tenant_capacity, struct rs_stats_header *layout)
{
	memset(layout, 0, sizeof(*layout));
	layout->magic = RS_STATS_MAGIC;
	layout->version = RS_STATS_VERSION;
	layout->global_offset = sizeof(struct rs_stats_header);
	layout->global_size = sizeof(struct rs_stats_global_record);
	layout->tenants_offset = align_line(layout->global_offset + layout->global_size);
	layout->tenant_size = sizeof(struct rs_stats_tenant_record);
	layout->tenant_capacity = tenant_capacity;
	layout->size = layout->tenants_offset + (uint64_t)tenant_capacity * layout->tenant_size;
}

int rs_stats_segment_create(uint32_t tenant_capacity, struct rs_stats_segment *segment)
{
	struct rs_stats_header layout;
	if (tenant_capacity == 0 || tenant_capacity > 65536)
		return -EINVAL;
	stats_layout(tenant_capacity, &layout);
	int fd = memfd_create("ringserve-stats", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	void *map = MAP_FAILED;
	int ret;
	if (ftruncate(fd, (off_t)layout.size) < 0)
		goto fail_errno;
	map = mmap(NULL, layout.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		goto fail_errno;
	/* A fresh file reads 0: sequence 0 (even) and no tenants until the first update. */
	memcpy(map, &layout, offsetof(struct rs_stats_header, sequence));
	/* Shrinking would turn our stores into SIGBUS. F_SEAL_FUTURE_WRITE keeps our own
	 * writable mapping but refuses writes and writable mappings to everyone else: the
	 * clients that receive the descriptor can only read. Older kernels lack it; the
	 * clients then map it read-only by convention. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
		goto fail_errno;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) < 0 && errno != EINVAL)
		goto fail_errno;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL) < 0)
		goto fail_errno;
	memset(segment, 0, sizeof(*segment));
	segment->base = map;
	segment->size = layout.size;
	segment->layout = layout;
	return fd;

fail_errno:
	ret = -errno;
	if (map != MAP_FAILED)
		munmap(map, layout.size);
	close(fd);
	return ret;
}

/* Relaxed word copies: the data words race with the other side by design (the seqlock
 * decides afterwards whether the copy counts), so each is a whole atomic access. */
static void store_words(_Atomic uint64_t *dst, const void *src, size_t bytes)
{
	const unsigned char *from = src;
	for (size_t i = 0; i < bytes / 8; i++) {
		uint64_t word;
		memcpy(&word, from + 8 * i, 8);
		rs_store_relaxed(&dst[i], word);
	}
}

static void load_words(void *dst, const _Atomic uint64_t *src, size_t bytes)
{
	unsigned char *to = dst;
	for (size_t i = 0; i < bytes / 8; i++) {
		/* Relaxed: ordered against the sequence loads by A-seq and F-read. */
		uint64_t word = rs_load_relaxed((_Atomic uint64_t *)&src[i]);
		memcpy(to + 8 * i, &word, 8);
	}
}

void rs_stats_segment_write(struct rs_stats_segment *segment,
			    const struct rs_stats_global_record *global,
			    const struct rs_stats_tenant_record *tenants)
{
	const struct rs_stats_header *layout = &segment->layout;
	struct rs_stats_header *shared = (struct rs_stats_header *)segment->base;
	struct rs_stats_global_record record = *global;
	if (record.n_tenants > layout->tenant_capacity)
		record.n_tenants = layout->tenant_capacity;
	/* W-odd: relaxed; what makes a reader see it is F-write's pairing with F-read. */
	rs_store_relaxed(&shared->sequence, segment->sequence + 1);
	/* F-write: pairs with F-read in rs_stats_segment_read: a reader that loads any data
	 * word stored below also sees the odd sequence (or a later value) in its second
	 * load, and throws its copy away. */
	rs_fence_release();
	store_words((_Atomic uint64_t *)(segment->base + layout->global_offset), &record,
		    sizeof(record));
	for (uint64_t i = 0; i < record.n_tenants; i++)
		store_words((_Atomic uint64_t *)(segment->base + layout->tenants_offset +
						 i * layout->tenant_size),
			    &tenants[i], sizeof(tenants[i]));
	segment->sequence += 2;
	/* R-seq: pairs with A-seq in rs_stats_segment_read: a reader that loads this even
	 * value sees every data store above. */
	rs_store_release(&shared->sequence, segment->sequence);
}

int rs_stats_segment_attach(struct rs_stats_segment *segment, const void *map, size_t mapped_size)
{
	struct rs_stats_header copy;
	if (mapped_size < sizeof(copy))
		return -EINVAL;
	memcpy(&copy, map, offsetof(struct rs_stats_header, sequence));
	if (copy.magic != RS_STATS_MAGIC || copy.version != RS_STATS_VERSION)
		return -EPROTO;
	/* Recompute the layout from the capacity and demand that the header agrees. */
	struct rs_stats_header expected;
	if (copy.tenant_capacity == 0 || copy.tenant_capacity > 65536)
		return -EINVAL;
	stats_layout(copy.tenant_capacity, &expected);
	if (copy.size != expected.size || copy.size > mapped_size ||
	    copy.global_offset != expected.global_offset ||
	    copy.global_size != expected.global_size ||
	    copy.tenants_offset != expected.tenants_offset ||
	    copy.tenant_size != expected.tenant_size)
		return -EINVAL;
	memset(segment, 0, sizeof(*segment));
	segment->base = (unsigned char *)map;
	segment->size = mapped_size;
	segment->layout = expected;
	return 0;
}

int rs_stats_segment_read(const struct rs_stats_segment *segment,
			  struct rs_stats_global_record *global,
			  struct rs_stats_tenant_record *tenants, uint32_t max_tenants,
			  uint64_t *sequence)
{
	const struct rs_stats_header *layout = &segment->layout;
	struct rs_stats_header *shared = (struct rs_stats_header *)segment->base;
	uint64_t give_up_at = 0;
	for (uint32_t attempt = 0;; attempt++) {
		if ((attempt & 63) == 63) {
			uint64_t now = rs_now_ns();
			if (give_up_at == 0)
				give_up_at = now + READ_PATIENCE_NS;
			else if (now >= give_up_at)
				return -EAGAIN;
		}
		/* A-seq: pairs with R-seq in rs_stats_segment_write. */
		uint64_t before = rs_load_acquire(&shared->sequence);
		if (before & 1) {
			rs_cpu_relax();
			continue;
		}
		load_words(global,
			   (const _Atomic uint64_t *)(segment->base + layout->global_offset),
			   sizeof(*global));
		/* A torn copy may hold any count: bound it before using it. */
		uint64_t n = global->n_tenants;
		if (n > layout->tenant_capacity)
			n = layout->tenant_capacity;
		if (n > max_tenants)
			n = max_tenants;
		for (uint64_t i = 0; i < n; i++)
			load_words(&tenants[i],
				   (const _Atomic uint64_t *)(segment->base +
							      layout->tenants_offset +
							      i * layout->tenant_size),
				   sizeof(tenants[i]));
		/* F-read: pairs with F-write: orders the data loads above before the load
		 * below, so a copy that saw any store of a later update sees its odd value. */
		rs_fence_acquire();
		/* Relaxed: F-read orders it. */
		uint64_t after = rs_load_relaxed(&shared->sequence);
		if (after != before)
			continue;
		if (global->n_tenants > layout->tenant_capacity)
			return -EPROTO; /* consistent, and wrong: not our daemon's writing */
		if (sequence)
			*sequence = before;
		/* The strings are ours now: make sure they end. */
		global->policy[sizeof(global->policy) - 1] = 0;
		for (uint64_t i = 0; i < n; i++)
			tenants[i].name[sizeof(tenants[i].name) - 1] = 0;
		return (int)n;
	}
}
