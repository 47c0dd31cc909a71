/* Read-only memory mapping of a whole file, for the model and tokenizer loaders. */
#ifndef RS_KERNELS_MAPFILE_H
#define RS_KERNELS_MAPFILE_H

#include <stddef.h>

/* Map path read-only and private. An empty file is an error (there is nothing to load).
 * Returns 0 with *data and *size, or a negative errno with a message naming the file. */
int rs_map_file(const char *path, void **data, size_t *size, char *err, size_t err_size);

/* Give back the pages of [p, p + bytes) that lie wholly inside the mapping [data, data +
 * size) (MADV_DONTNEED: they leave this process's resident memory; a later read faults
 * them in again from the file, unchanged, since the mapping is read-only). For loaders
 * that copied those bytes elsewhere. Nothing happens for a range outside the mapping. */
void rs_mapping_drop_pages(void *data, size_t size, const void *p, size_t bytes);

/* Undo rs_map_file. NULL is allowed. */
void rs_unmap_file(void *data, size_t size);

#endif
