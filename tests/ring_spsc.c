/* The SPSC ring: a producer and a consumer thread move millions of entries in order,
 * with free-running indices that wrap around 2^32; impossible peer indices are refused. */
#include <pthread.h>
#include <stdalign.h>
#include <string.h>

#include "shm/ring.h"
#include "tests/harness/harness.h"

#define ENTRIES 64
#define TOTAL (2u * 1000 * 1000)

struct entry {
	uint64_t sequence;
	uint64_t check; /* ~sequence: a torn or stale entry shows */
	uint8_t fill[48];
};

static struct {
	alignas(64) struct rs_ring_indices indices;
	alignas(64) struct entry entries[ENTRIES];
} shared;

static uint32_t start_index;

static void *producer(void *arg)
{
	struct rs_ring ring;
	rs_ring_init(&ring, &shared.indices, shared.entries, sizeof(struct entry), ENTRIES, true);
	uint64_t sent = 0;
	while (sent < TOTAL) {
		int64_t space = rs_ring_producer_space(&ring);
		CHECK(space >= 0, "producer saw an impossible head");
		uint32_t batch = (uint32_t)space < 7 ? (uint32_t)space : 7; /* odd batches */
		for (uint32_t i = 0; i < batch && sent + i < TOTAL; i++) {
			struct entry *e = rs_ring_producer_slot(&ring, i);
			e->sequence = sent + i;
			e->check = ~(sent + i);
			memset(e->fill, (int)((sent + i) & 0xff), sizeof(e->fill));
		}
		if (sent + batch > TOTAL)
			batch = (uint32_t)(TOTAL - sent);
		if (batch)
			rs_ring_producer_publish(&ring, batch);
		else
			rs_cpu_relax();
		sent += batch;
	}
	return NULL;
}

static void *consumer(void *arg)
{
	struct rs_ring ring;
	rs_ring_init(&ring, &shared.indices, shared.entries, sizeof(struct entry), ENTRIES, false);
	uint64_t received = 0;
	while (received < TOTAL) {
		int64_t ready = rs_ring_consumer_ready(&ring);
		CHECK(ready >= 0, "consumer saw an impossible tail");
		if (ready == 0) {
			rs_cpu_relax();
			continue;
		}
		for (uint32_t i = 0; i < (uint32_t)ready; i++) {
			const struct entry *e = rs_ring_consumer_slot(&ring, i);
			CHECK(e->sequence == received + i && e->check == ~(received + i),
			      "entry %llu holds %llu", (unsigned long long)(received + i),
			      (unsigned long long)e->sequence);
			CHECK(e->fill[0] == ((received + i) & 0xff) && e->fill[47] == e->fill[0], "fill");
		}
		rs_ring_consumer_release(&ring, (uint32_t)ready);
		received += (uint64_t)ready;
	}
	return NULL;
}

static void run_threads(uint32_t initial)
{
	memset(&shared, 0, sizeof(shared));
	start_index = initial;
	atomic_store(&shared.indices.head, initial);
	atomic_store(&shared.indices.tail, initial);
	pthread_t p, c;
	CHECK(pthread_create(&p, NULL, producer, NULL) == 0, "pthread_create");
	CHECK(pthread_create(&c, NULL, consumer, NULL) == 0, "pthread_create");
	pthread_join(p, NULL);
	pthread_join(c, NULL);
	CHECK(atomic_load(&shared.indices.head) == (uint32_t)(initial + TOTAL), "final head");
}

static void hostile_indices(void)
{
	memset(&shared, 0, sizeof(shared));
	struct rs_ring consumer_ring, producer_ring;
	rs_ring_init(&consumer_ring, &shared.indices, shared.entries, sizeof(struct entry), ENTRIES, false);
	rs_ring_init(&producer_ring, &shared.indices, shared.entries, sizeof(struct entry), ENTRIES, true);
	/* A tail a full ring ahead is possible; one more is not. */
	atomic_store(&shared.indices.tail, ENTRIES);
	CHECK(rs_ring_consumer_refresh(&consumer_ring) == ENTRIES, "full ring");
	atomic_store(&shared.indices.tail, ENTRIES + 1);
	CHECK(rs_ring_consumer_refresh(&consumer_ring) == -1, "tail beyond a ring");
	atomic_store(&shared.indices.tail, (uint32_t)-1);
	CHECK(rs_ring_consumer_refresh(&consumer_ring) == -1, "tail behind head");
	/* Producer: a head ahead of our tail is impossible. */
	atomic_store(&shared.indices.head, 5);
	CHECK(rs_ring_producer_refresh(&producer_ring) == -1, "head ahead of tail");
	atomic_store(&shared.indices.head, 0);
	CHECK(rs_ring_producer_refresh(&producer_ring) == ENTRIES, "empty ring: all free");
}

int main(void)
{
	hostile_indices();
	run_threads(0);
	run_threads(UINT32_MAX - 1000); /* indices wrap around 2^32 mid-run */
	return T_EXIT_PASS;
}
