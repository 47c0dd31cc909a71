/* A fixed pool of worker threads for data-parallel loops (the CPU backend's attention).
 *
 * rs_thread_pool_run splits items 0 .. n-1 statically, item i going to worker
 * i % n_threads, the calling thread being worker 0, and returns when all are done. One
 * caller at a time. */
#ifndef RS_KERNELS_THREAD_POOL_H
#define RS_KERNELS_THREAD_POOL_H

#include <stdint.h>

struct rs_thread_pool;

typedef void rs_parallel_fn(void *ctx, uint32_t item, uint32_t worker);

/* Start n_threads - 1 workers (n_threads >= 1; 1 means the caller does everything).
 * Returns 0, -EINVAL, -ENOMEM or the error of pthread_create (negated). */
int rs_thread_pool_create(uint32_t n_threads, struct rs_thread_pool **out);

/* Stop and join the workers. NULL is allowed. */
void rs_thread_pool_destroy(struct rs_thread_pool *pool);

uint32_t rs_thread_pool_size(const struct rs_thread_pool *pool);

/* Run fn(ctx, item, worker) for every item < n_items across the pool; returns when all
 * have run. worker < rs_thread_pool_size() identifies per-thread scratch. */
void rs_thread_pool_run(struct rs_thread_pool *pool, uint32_t n_items, rs_parallel_fn *fn,
			void *ctx);

#endif
