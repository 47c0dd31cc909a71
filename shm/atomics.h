/* The one place where ringserve touches atomics. C11 <stdatomic.h> underneath.
 *
 * Every call site names the access it pairs with, in the DPDK manner:
 *   "A1: pairs with R1 in ..." for an acquire load that synchronizes with a release store.
 * A relaxed access says why relaxed is enough. */
#ifndef RS_SHM_ATOMICS_H
#define RS_SHM_ATOMICS_H

#include <stdatomic.h>
#include <stdint.h>

#define rs_load_acquire(p) atomic_load_explicit((p), memory_order_acquire)
#define rs_load_relaxed(p) atomic_load_explicit((p), memory_order_relaxed)
#define rs_store_release(p, v) atomic_store_explicit((p), (v), memory_order_release)
#define rs_store_relaxed(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
#define rs_fetch_add_release(p, v) atomic_fetch_add_explicit((p), (v), memory_order_release)
#define rs_fetch_add_relaxed(p, v) atomic_fetch_add_explicit((p), (v), memory_order_relaxed)
#define rs_exchange_acq_rel(p, v) atomic_exchange_explicit((p), (v), memory_order_acq_rel)

/* A full fence: orders a preceding store before a following load (the Dekker pattern of
 * the need-wakeup protocol, which acquire/release alone cannot give). */
static inline void rs_fence_seq_cst(void)
{
	atomic_thread_fence(memory_order_seq_cst);
}

/* Fences for the seqlock of the statistics segment (shm/stats.c), whose data words are
 * relaxed atomics. Release: no access before it moves past a store after it. Acquire: no
 * load before it moves past an access after it. */
static inline void rs_fence_release(void)
{
	atomic_thread_fence(memory_order_release);
}

static inline void rs_fence_acquire(void)
{
	atomic_thread_fence(memory_order_acquire);
}

/* Tell the core we are spinning (PAUSE on x86). */
static inline void rs_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif
