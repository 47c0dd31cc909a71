/* Whole-file read-only mappings. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/model/errmsg.h"
#include "kernels/model/mapfile.h"

int rs_map_file(const char *path, void **data, size_t *size, char *err, size_t err_size)
{
	struct stat st;
	int ret = 0;

	*data = NULL;
	*size = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		return rs_errmsg(err, err_size, ret, "%s: %s", path, strerror(-ret));
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		rs_errmsg(err, err_size, ret, "%s: %s", path, strerror(-ret));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = rs_errmsg(err, err_size, -EINVAL, "%s: not a regular file", path);
		goto out;
	}
	if (st.st_size == 0) {
		ret = rs_errmsg(err, err_size, -EINVAL, "%s: empty file", path);
		goto out;
	}
	if ((uint64_t)st.st_size > SIZE_MAX) {
		ret = rs_errmsg(err, err_size, -EFBIG, "%s: too large to map", path);
		goto out;
	}
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) {
		ret = -errno;
		rs_errmsg(err, err_size, ret, "%s: mmap: %s", path, strerror(-ret));
		goto out;
	}
	*data = p;
	*size = (size_t)st.st_size;
out:
	close(fd);
	return ret;
}

void rs_mapping_drop_pages(void *data, size_t size, const void *p, size_t bytes)
{
	uintptr_t begin = (uintptr_t)data, end = begin + size, from = (uintptr_t)p;
	if (!data || from < begin || from > end || bytes > end - from)
		return;
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t first = (from + page - 1) & ~(page - 1), last = (from + bytes) & ~(page - 1);
	if (first < last)
		(void)madvise((void *)first, last - first, MADV_DONTNEED); /* advice: may fail */
}

void rs_unmap_file(void *data, size_t size)
{
	if (data)
		munmap(data, size);
}
