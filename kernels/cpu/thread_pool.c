/* Worker pool (see thread_pool.h).
 *
 * A decode step runs seven pool runs per layer (nine for prefill), each a few tens of µs
 * long. Parking every worker on a condition variable between them cost a futex wake and
 * a context switch per run, which in a VM came to a fifth of the step (perf: the
 * hypervisor's irq-enable path under futex_wait/futex_wake). So both sides spin first:
 * a worker polls the generation counter, the caller polls the pending count, each for
 * at most SPIN_NS, and only then park on the mutex and condition variables. An idle
 * pool therefore sleeps after SPIN_NS: no CPU is burnt between requests.
 *
 * Wake-ups use the Dekker pattern: the sleeper publishes "I am parking" and re-checks
 * the condition after a full fence; the waker changes the condition, fences, and looks
 * for a sleeper. One of the two must see the other's store. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/cpu/thread_pool.h"
#include "shm/atomics.h"

/* Longer than the serial work between two runs of a step (norms, rope, cache stores:
 * a few microseconds), short enough that an idle daemon stops spinning at once. */
#define SPIN_NS 200000

struct rs_thread_pool {
	uint32_t n_threads;
	pthread_t *threads;
	/* The run: written by the caller before R1, read by workers after A1. */
	rs_parallel_fn *fn;
	void *ctx;
	uint32_t n_items;
	int stop;

	/* Bumped for each run (R1) and to stop. Own cache line: polled by every worker. */
	_Alignas(64) _Atomic uint64_t generation;
	/* Workers still running the current generation; the last one to finish brings it to
	 * 0 (R2). Own line: written by every worker once per run, polled by the caller. */
	_Alignas(64) _Atomic uint32_t pending;
	_Alignas(64) _Atomic uint32_t sleepers;	 /* workers parked or parking on start */
	_Atomic uint32_t caller_sleeping;	 /* the caller is parked or parking on done */
	pthread_mutex_t lock;
	pthread_cond_t start; /* workers park here for a new generation */
	pthread_cond_t done;  /* the caller parks here for pending == 0 */
};

struct worker_arg {
	struct rs_thread_pool *pool;
	uint32_t worker;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void run_share(struct rs_thread_pool *pool, uint32_t worker)
{
	for (uint32_t i = worker; i < pool->n_items; i += pool->n_threads)
		pool->fn(pool->ctx, i, worker);
}

/* Whether a spin loop at iteration spins is still within SPIN_NS of its start (the
 * clock is read every 64 iterations; *deadline starts at 0). */
static bool keep_spinning(uint32_t spins, uint64_t *deadline)
{
	if ((spins & 63) != 63)
		return true;
	uint64_t t = now_ns();
	if (!*deadline)
		*deadline = t + SPIN_NS;
	return t <= *deadline;
}

/* The first generation other than seen: spin, then park. */
static uint64_t wait_generation(struct rs_thread_pool *pool, uint64_t seen)
{
	uint64_t g, deadline = 0;
	for (uint32_t spins = 0; keep_spinning(spins, &deadline); spins++) {
		/* A1: pairs with R1 in rs_thread_pool_run (and destroy): the run's fn, ctx,
		 * n_items and stop are visible once the new generation is. */
		g = rs_load_acquire(&pool->generation);
		if (g != seen)
			return g;
		rs_cpu_relax();
	}
	pthread_mutex_lock(&pool->lock);
	/* Relaxed: the fence orders it; the lock orders it against other workers. */
	rs_store_relaxed(&pool->sleepers, rs_load_relaxed(&pool->sleepers) + 1);
	rs_fence_seq_cst(); /* F1: pairs with F1' in rs_thread_pool_run */
	while ((g = rs_load_acquire(&pool->generation)) == seen) /* A1 again */
		pthread_cond_wait(&pool->start, &pool->lock);
	rs_store_relaxed(&pool->sleepers, rs_load_relaxed(&pool->sleepers) - 1);
	pthread_mutex_unlock(&pool->lock);
	return g;
}

static void *worker_main(void *p)
{
	struct worker_arg arg = *(struct worker_arg *)p;
	free(p);
	struct rs_thread_pool *pool = arg.pool;
	uint64_t seen = 0;
	for (;;) {
		seen = wait_generation(pool, seen);
		if (pool->stop)
			break;
		run_share(pool, arg.worker);
		/* R2: publishes this worker's results; pairs with A2 in rs_thread_pool_run
		 * (the decrements form one release sequence, so the caller's acquire of 0
		 * synchronizes with every worker). */
		if (rs_fetch_add_release(&pool->pending, (uint32_t)-1) == 1) {
			rs_fence_seq_cst(); /* F2: pairs with F3 in rs_thread_pool_run */
			if (rs_load_relaxed(&pool->caller_sleeping)) {
				pthread_mutex_lock(&pool->lock);
				pthread_cond_signal(&pool->done);
				pthread_mutex_unlock(&pool->lock);
			}
		}
	}
	return NULL;
}

int rs_thread_pool_create(uint32_t n_threads, struct rs_thread_pool **out)
{
	*out = NULL;
	if (n_threads < 1 || n_threads > 1024)
		return -EINVAL;
	struct rs_thread_pool *pool = aligned_alloc(64, (sizeof(*pool) + 63) & ~(size_t)63);
	if (!pool)
		return -ENOMEM;
	*pool = (struct rs_thread_pool){0};
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

/* Publish a new generation (R1) and wake the workers that parked. */
static void start_generation(struct rs_thread_pool *pool)
{
	/* R1: pairs with A1 in wait_generation. Only this thread writes generation. */
	rs_store_release(&pool->generation, rs_load_relaxed(&pool->generation) + 1);
	rs_fence_seq_cst(); /* F1': pairs with F1 in wait_generation */
	if (rs_load_relaxed(&pool->sleepers)) {
		pthread_mutex_lock(&pool->lock);
		pthread_cond_broadcast(&pool->start);
		pthread_mutex_unlock(&pool->lock);
	}
}

void rs_thread_pool_destroy(struct rs_thread_pool *pool)
{
	if (!pool)
		return;
	pool->stop = 1;
	start_generation(pool);
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
	pool->fn = fn;
	pool->ctx = ctx;
	pool->n_items = n_items;
	/* Relaxed: ordered before the workers' decrements by R1/A1. */
	rs_store_relaxed(&pool->pending, pool->n_threads - 1);
	start_generation(pool);
	run_share(pool, 0);

	uint64_t deadline = 0;
	for (uint32_t spins = 0; keep_spinning(spins, &deadline); spins++) {
		/* A2: pairs with R2 in worker_main: the workers' results are visible. */
		if (!rs_load_acquire(&pool->pending))
			return;
		rs_cpu_relax();
	}
	pthread_mutex_lock(&pool->lock);
	rs_store_relaxed(&pool->caller_sleeping, 1);
	rs_fence_seq_cst(); /* F3: pairs with F2 in worker_main */
	while (rs_load_acquire(&pool->pending)) /* A2 again */
		pthread_cond_wait(&pool->done, &pool->lock);
	rs_store_relaxed(&pool->caller_sleeping, 0);
	pthread_mutex_unlock(&pool->lock);
}
