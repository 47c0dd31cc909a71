/* Worker pool (see thread_pool.h). A mutex and two condition variables: the work is
 * coarse (one item is a whole attention head over a sequence), so a lock per run costs
 * nothing measurable, and the code stays obviously correct. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "kernels/thread_pool.h"

struct rs_thread_pool {
	uint32_t n_threads;
	pthread_t *threads;
	pthread_mutex_t lock;
	pthread_cond_t start; /* workers wait here for a new generation */
	pthread_cond_t done;  /* the caller waits here for pending == 0 */
	uint64_t generation;  /* bumped (under lock) for each run */
	uint32_t pending;     /* workers still running the current generation */
	int stop;
	rs_parallel_fn *fn;
	void *ctx;
	uint32_t n_items;
};

struct worker_arg {
	struct rs_thread_pool *pool;
	uint32_t worker;
};

static void run_share(struct rs_thread_pool *pool, uint32_t worker)
{
	for (uint32_t i = worker; i < pool->n_items; i += pool->n_threads)
		pool->fn(pool->ctx, i, worker);
}

static void *worker_main(void *p)
{
	struct worker_arg arg = *(struct worker_arg *)p;
	free(p);
	struct rs_thread_pool *pool = arg.pool;
	uint64_t seen = 0;
	pthread_mutex_lock(&pool->lock);
	for (;;) {
		while (!pool->stop && pool->generation == seen)
			pthread_cond_wait(&pool->start, &pool->lock);
		if (pool->stop)
			break;
		seen = pool->generation;
		pthread_mutex_unlock(&pool->lock);
		/* fn, ctx and n_items were published under the lock we just held. */
		run_share(pool, arg.worker);
		pthread_mutex_lock(&pool->lock);
		if (--pool->pending == 0)
			pthread_cond_signal(&pool->done);
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

int rs_thread_pool_create(uint32_t n_threads, struct rs_thread_pool **out)
{
	*out = NULL;
	if (n_threads < 1 || n_threads > 1024)
		return -EINVAL;
	struct rs_thread_pool *pool = calloc(1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	pool->threads = calloc(n_threads, sizeof(pthread_t));
	if (!pool->threads) {
		free(pool);
		return -ENOMEM;
	}
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->start, NULL);
	pthread_cond_init(&pool->done, NULL);
	pool->n_threads = 1;
	for (uint32_t w = 1; w < n_threads; w++) {
		struct worker_arg *arg = malloc(sizeof(*arg));
		if (!arg) {
			rs_thread_pool_destroy(pool);
			return -ENOMEM;
		}
		*arg = (struct worker_arg){pool, w};
		int rc = pthread_create(&pool->threads[w], NULL, worker_main, arg);
		if (rc) {
			free(arg);
			rs_thread_pool_destroy(pool);
			return -rc;
		}
		pool->n_threads = w + 1;
	}
	*out = pool;
	return 0;
}

void rs_thread_pool_destroy(struct rs_thread_pool *pool)
{
	if (!pool)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stop = 1;
	pthread_cond_broadcast(&pool->start);
	pthread_mutex_unlock(&pool->lock);
	for (uint32_t w = 1; w < pool->n_threads; w++)
		pthread_join(pool->threads[w], NULL);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->start);
	pthread_cond_destroy(&pool->done);
	free(pool->threads);
	free(pool);
}

uint32_t rs_thread_pool_size(const struct rs_thread_pool *pool)
{
	return pool->n_threads;
}

void rs_thread_pool_run(struct rs_thread_pool *pool, uint32_t n_items, rs_parallel_fn *fn,
			void *ctx)
{
	if (pool->n_threads == 1 || n_items <= 1) {
		for (uint32_t i = 0; i < n_items; i++)
			fn(ctx, i, 0);
		return;
	}
	pthread_mutex_lock(&pool->lock);
	pool->fn = fn;
	pool->ctx = ctx;
	pool->n_items = n_items;
	pool->pending = pool->n_threads - 1;
	pool->generation++;
	pthread_cond_broadcast(&pool->start);
	pthread_mutex_unlock(&pool->lock);
	run_share(pool, 0);
	pthread_mutex_lock(&pool->lock);
	while (pool->pending)
		pthread_cond_wait(&pool->done, &pool->lock);
	pthread_mutex_unlock(&pool->lock);
}
