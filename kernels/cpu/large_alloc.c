/* rs_alloc_large (see large_alloc.h). */
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
