/* Read-only memory mapping of a whole file, for the model and tokenizer loaders. */
#ifndef RS_KERNELS_MAPFILE_H
#define RS_KERNELS_MAPFILE_H

#include <stddef.h>

/* Map path read-only and private. An empty file is an error (there is nothing to load).
 * Returns 0 with *data and *size, or a negative errno with a message naming the file. */
int rs_map_file(const char *path, void **data, size_t *size, char *err, size_t err_size);

/* Undo rs_map_file. NULL is allowed. */
void rs_unmap_file(void *data, size_t size);

#endif
