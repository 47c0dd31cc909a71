/* rs_alloc_large (see large_alloc.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels/cpu/large_alloc.h"

enum { HUGE_PAGE = 2 << 20 };

void *rs_alloc_large(size_t bytes)
{
	size_t align = bytes >= HUGE_PAGE ? HUGE_PAGE : 64;
	size_t rounded = (bytes + align - 1) & ~(align - 1); /* aligned_alloc's rule */
	if (rounded < bytes)
		return NULL; /* overflow */
	void *p = aligned_alloc(align, rounded ? rounded : align);
#ifdef MADV_HUGEPAGE
	/* Advice only: without THP the memory is the same, in small pages. */
	if (p && align == HUGE_PAGE)
		(void)madvise(p, rounded, MADV_HUGEPAGE);
#endif
	return p;
}

/* The length mapped for bytes: whole huge pages from 2 MiB up, else whole small pages. */
static size_t zeroed_length(size_t bytes)
{
	size_t page = bytes >= HUGE_PAGE ? HUGE_PAGE : 4096;
	size_t rounded = (bytes + page - 1) & ~(page - 1);
	return rounded < bytes ? 0 : rounded ? rounded : page;
}

void *rs_alloc_zeroed_large(size_t bytes)
{
	size_t length = zeroed_length(bytes);
	if (!length)
		return NULL; /* overflow */
	/* A huge-page boundary: map one huge page more and give back the ends. */
	size_t slack = length >= HUGE_PAGE ? HUGE_PAGE : 0;
	if (length + slack < length)
		return NULL;
	uint8_t *map =
	    mmap(NULL, length + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		return NULL;
	uint8_t *p = map;
	if (slack) {
		p = (uint8_t *)(((uintptr_t)map + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
		if (p > map)
			munmap(map, (size_t)(p - map));
		if (p + length < map + length + slack)
			munmap(p + length, (size_t)(map + length + slack - (p + length)));
#ifdef MADV_HUGEPAGE
		(void)madvise(p, length, MADV_HUGEPAGE); /* advice only, as rs_alloc_large */
#endif
	}
	return p;
}

void rs_free_zeroed_large(void *p, size_t bytes)
{
	if (p)
		munmap(p, zeroed_length(bytes));
}

bool rs_huge_pages_available(void)
{
	char mode[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
	if (!f)
		return false;
	bool read = fgets(mode, sizeof(mode), f) != NULL;
	fclose(f);
	/* The selected mode is the bracketed one: "always [madvise] never". */
	return read && (strstr(mode, "[always]") || strstr(mode, "[madvise]"));
}
