/* Process-shared futexes: no FUTEX_PRIVATE_FLAG, because the word lives in a memfd
 * mapped by two processes. */
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "shm/futex.h"

int rs_futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns)
{
	struct timespec relative = {
		.tv_sec = (time_t)(timeout_ns / 1000000000ull),
		.tv_nsec = (long)(timeout_ns % 1000000000ull),
	};
	long ret = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected,
			   timeout_ns ? &relative : NULL, NULL, 0);
	return ret == 0 ? 0 : -errno;
}

int rs_futex_wake(_Atomic uint32_t *word, int n)
{
	long ret = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
	return ret >= 0 ? (int)ret : -errno;
}
