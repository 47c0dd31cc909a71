/* Process-shared futex wait and wake on a 32-bit word in a MAP_SHARED mapping. */
#ifndef RS_SHM_FUTEX_H
#define RS_SHM_FUTEX_H

#include <stdatomic.h>
#include <stdint.h>

/* Sleep while *word == expected, for at most timeout_ns (0: no limit). Returns 0 when
 * woken, -EAGAIN when the word differed, -ETIMEDOUT, or -EINTR. */
int rs_futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns);

/* Wake up to n sleepers on word. Returns how many woke, or a negative errno. */
int rs_futex_wake(_Atomic uint32_t *word, int n);

#endif
