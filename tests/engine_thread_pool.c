/* The CPU backend's worker pool: every item runs exactly once per run, on a worker
 * index below the pool size, runs follow each other, and edge sizes work. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/thread_pool.h"
#include "tests/engine_test.h"

struct job {
	uint32_t *hits;      /* per item: how many times it ran */
	uint32_t *worker_of; /* per item: which worker ran it */
	uint32_t size;
	pthread_mutex_t lock;
	int bad_worker;
};

static void item(void *ctx, uint32_t i, uint32_t worker)
{
	struct job *j = ctx;
	/* Items are distinct, so these writes do not race; the flag is rare. */
	j->hits[i]++;
	j->worker_of[i] = worker;
	if (worker >= j->size) {
		pthread_mutex_lock(&j->lock);
		j->bad_worker = 1;
		pthread_mutex_unlock(&j->lock);
	}
}

int main(void)
{
	struct rs_thread_pool *pool = NULL;
	CHECK(rs_thread_pool_create(0, &pool) < 0 && !pool, "zero threads refused");
	uint32_t sizes[] = {1, 2, 3, 5};
	for (int s = 0; s < 4; s++) {
		CHECK(rs_thread_pool_create(sizes[s], &pool) == 0, "create %u", sizes[s]);
		if (!pool)
			continue;
		CHECK(rs_thread_pool_size(pool) == sizes[s], "size");
		struct job j = {.size = sizes[s]};
		pthread_mutex_init(&j.lock, NULL);
		j.hits = calloc(1000, sizeof(uint32_t));
		j.worker_of = calloc(1000, sizeof(uint32_t));
		uint32_t counts[] = {0, 1, 2, 7, 1000};
		for (int round = 0; round < 200; round++) {
			uint32_t n = counts[round % 5];
			memset(j.hits, 0, 1000 * sizeof(uint32_t));
			rs_thread_pool_run(pool, n, item, &j);
			for (uint32_t i = 0; i < 1000; i++)
				CHECK(j.hits[i] == (i < n), "pool %u round %d item %u ran %u times", sizes[s],
				      round, i, j.hits[i]);
			if (test_failures)
				break;
		}
		/* With several workers, the work is shared (static split: item i % size). */
		if (sizes[s] > 1)
			CHECK(j.worker_of[1] == 1, "item 1 ran on worker %u", j.worker_of[1]);
		CHECK(!j.bad_worker, "worker index out of range");
		rs_thread_pool_destroy(pool);
		free(j.hits);
		free(j.worker_of);
		pthread_mutex_destroy(&j.lock);
	}
	rs_thread_pool_destroy(NULL);
	TEST_END();
}
