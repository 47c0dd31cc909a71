/* Memory for the engine's large, long-lived arrays: packed weights and the KV cache. */
#ifndef RS_KERNELS_LARGE_ALLOC_H
#define RS_KERNELS_LARGE_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

/* bytes of uninitialized memory, 64-byte aligned; from 2 MiB up, 2 MiB aligned and
 * advised as transparent huge pages (MADV_HUGEPAGE: where the kernel's THP mode is
 * "madvise", the default here, nothing else gets them). Huge pages take a 512th of the
 * page faults: loading a 1.1B-parameter model spent half its time faulting in the packed
 * copy 4 KiB at a time. Release with free(). NULL when out of memory. */
void *rs_alloc_large(size_t bytes);

/* bytes of zeroed memory, page aligned, 2 MiB aligned and advised as huge pages from
 * 2 MiB up, as a fresh anonymous mapping: the kernel zeroes each page (huge ones too) at
 * its first touch, so nothing is written at allocation and memory becomes resident only
 * where it is used (a large KV pool costs no start-up memset and no RSS until its blocks
 * are written). Release with rs_free_zeroed_large(p, bytes). NULL when out of memory. */
void *rs_alloc_zeroed_large(size_t bytes);
void rs_free_zeroed_large(void *p, size_t bytes);

/* Whether rs_alloc_large can get huge pages: the kernel's transparent huge pages are
 * enabled ("always" or "madvise" in /sys/kernel/mm/transparent_hugepage/enabled). */
bool rs_huge_pages_available(void);

#endif
