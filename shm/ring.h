/* Single-producer/single-consumer rings of fixed-size entries in shared memory.
 *
 * Each side keeps its own index in private memory and only publishes it to the shared
 * one: the producer never reads back the shared tail, the consumer never reads back the
 * shared head. That is what makes a ring safe against a hostile peer: the peer's index is
 * the only thing read from shared memory, and it is checked (rs_ring_*_refresh) before it
 * is used.
 *
 * Ordering (labels used in comments throughout ringserve):
 *   R-tail: the producer's release store of tail, after writing the entries;
 *   A-tail: the consumer's acquire load of tail, before reading them. R-tail -> A-tail
 *           makes the entries visible.
 *   R-head: the consumer's release store of head, after it has copied entries out;
 *   A-head: the producer's acquire load of head, before overwriting them. R-head -> A-head
 *           guarantees the consumer is done with a line before it is reused. */
#ifndef RS_SHM_RING_H
#define RS_SHM_RING_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "shm/abi.h"
#include "shm/atomics.h"

struct rs_ring {
	struct rs_ring_indices *indices; /* shared */
	unsigned char *entries;          /* shared, entry_count * entry_size bytes */
	uint32_t entry_size;
	uint32_t entry_count; /* power of two */
	uint32_t mask;
	uint32_t local;  /* producer: our tail; consumer: our head (both private) */
	uint32_t cached; /* producer: last head seen; consumer: last tail seen */
};

/* Attach to a ring; `as_producer` picks which shared index is ours. The local copy starts
 * from the shared value, which the owner of the segment initialised to 0. */
static inline void rs_ring_init(struct rs_ring *ring, struct rs_ring_indices *indices, void *entries,
				uint32_t entry_size, uint32_t entry_count, bool as_producer)
{
	ring->indices = indices;
	ring->entries = entries;
	ring->entry_size = entry_size;
	ring->entry_count = entry_count;
	ring->mask = entry_count - 1;
	/* Relaxed: attaching happens before the ring is shared with the peer's traffic. */
	ring->local = as_producer ? rs_load_relaxed(&indices->tail) : rs_load_relaxed(&indices->head);
	ring->cached = ring->local;
}

static inline void *rs_ring_entry(const struct rs_ring *ring, uint32_t index)
{
	return ring->entries + (size_t)(index & ring->mask) * ring->entry_size;
}

/* Producer: free entries, after re-reading the consumer's head. Returns -1 when the head
 * read is impossible (ahead of our tail or further behind than the ring is long): the
 * peer is broken or hostile. */
static inline int64_t rs_ring_producer_refresh(struct rs_ring *ring)
{
	/* A-head: pairs with R-head in rs_ring_consumer_release. */
	uint32_t head = rs_load_acquire(&ring->indices->head);
	uint32_t used = ring->local - head;
	if (used > ring->entry_count)
		return -1;
	ring->cached = head;
	return ring->entry_count - used;
}

/* Producer: free entries without touching shared memory when the cached head shows some. */
static inline int64_t rs_ring_producer_space(struct rs_ring *ring)
{
	uint32_t space = ring->entry_count - (ring->local - ring->cached);
	return space ? (int64_t)space : rs_ring_producer_refresh(ring);
}

/* Producer: the entry to fill next (the i-th after the last published one). */
static inline void *rs_ring_producer_slot(struct rs_ring *ring, uint32_t i)
{
	return rs_ring_entry(ring, ring->local + i);
}

/* Producer: publish n filled entries. */
static inline void rs_ring_producer_publish(struct rs_ring *ring, uint32_t n)
{
	ring->local += n;
	/* R-tail: pairs with A-tail in rs_ring_consumer_refresh; makes the entries visible. */
	rs_store_release(&ring->indices->tail, ring->local);
}

/* Consumer: entries ready, after re-reading the producer's tail. Returns -1 when the
 * tail is impossible (behind our head or more than a ring ahead). */
static inline int64_t rs_ring_consumer_refresh(struct rs_ring *ring)
{
	/* A-tail: pairs with R-tail in rs_ring_producer_publish. */
	uint32_t tail = rs_load_acquire(&ring->indices->tail);
	uint32_t ready = tail - ring->local;
	if (ready > ring->entry_count)
		return -1;
	ring->cached = tail;
	return ready;
}

/* Consumer: entries ready, touching shared memory only when the cached tail shows none. */
static inline int64_t rs_ring_consumer_ready(struct rs_ring *ring)
{
	uint32_t ready = ring->cached - ring->local;
	return ready ? (int64_t)ready : rs_ring_consumer_refresh(ring);
}

/* Consumer: the i-th unconsumed entry. Copy it out before validating it: the producer
 * may be hostile and rewrite it while we look. */
static inline const void *rs_ring_consumer_slot(const struct rs_ring *ring, uint32_t i)
{
	return rs_ring_entry(ring, ring->local + i);
}

/* Consumer: hand n entries back to the producer. */
static inline void rs_ring_consumer_release(struct rs_ring *ring, uint32_t n)
{
	ring->local += n;
	/* R-head: pairs with A-head in rs_ring_producer_refresh; we are done reading. */
	rs_store_release(&ring->indices->head, ring->local);
}

#endif
