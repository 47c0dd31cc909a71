/* Creating (daemon) and attaching to (client) the shared-memory segments of shm/abi.h. */
#ifndef RS_SHM_SEGMENT_H
#define RS_SHM_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/abi.h"

/* What the daemon decides for one client segment. */
struct rs_segment_params {
	uint32_t sq_entries; /* power of two */
	uint32_t cq_entries; /* power of two */
	uint32_t slot_count;
	uint32_t slot_prompt_capacity;
	uint32_t slot_output_capacity;
	uint32_t max_inflight;
	uint32_t max_prompt_tokens;
	uint32_t max_output_tokens;
	uint32_t wake_mode; /* enum rs_wake_mode */
	uint32_t client_id;
	uint32_t features; /* RS_FEATURE_* */
};

/* Fill the layout words of hdr (offsets, sizes, limits) from params; the atomics are left
 * zero. Returns 0, or -EINVAL when a parameter is out of range (entries not a power of
 * two, counts over the RS_MAX_* bounds, limits over capacities). */
int rs_segment_layout(const struct rs_segment_params *params, struct rs_segment_header *hdr);

/* Daemon: create a memfd holding a fresh client segment, map it read-write, write its
 * header, and seal it against shrinking, growing and further sealing. On success *fd,
 * *map and *size describe it. Returns 0 or a negative errno. */
int rs_segment_create(const struct rs_segment_params *params, int *fd, void **map, size_t *size);

/* Client: check a mapped segment's header before trusting any offset in it: magic,
 * version, offsets inside the mapping and non-overlapping, sizes within the RS_MAX_*
 * bounds. Returns 0, -EPROTO (bad magic or version) or -EINVAL (bad layout). */
int rs_segment_check(const struct rs_segment_header *hdr, size_t mapped_size);

/* Daemon: create the read-only segment shared by all clients from a header, an optional
 * vocabulary blob and an optional chat template (text, NUL added); it is sealed against
 * writes too. Returns the memfd or a negative errno; *size receives its size. */
int rs_shared_segment_create(const struct rs_shared_header *header, const void *vocab,
			     size_t vocab_bytes, const char *chat_template,
			     size_t chat_template_bytes, size_t *size);

/* Client: check the shared segment's header. Returns 0, -EPROTO or -EINVAL. */
int rs_shared_segment_check(const struct rs_shared_header *hdr, size_t mapped_size);

/* True when name holds a valid tenant name (struct rs_hello): a NUL among its first
 * RS_TENANT_NAME_BYTES bytes, after 1 to 63 bytes of [A-Za-z0-9._@:+-]. Reads no further
 * than the NUL. */
bool rs_tenant_name_valid(const char *name);

/* Addresses inside a segment (the header must have been checked). */
static inline struct rs_slot_header *
rs_segment_slot(void *base, const struct rs_segment_header *hdr, uint32_t slot)
{
	return (struct rs_slot_header *)((unsigned char *)base + hdr->slots_offset +
					 (size_t)slot * hdr->slot_stride);
}

static inline uint32_t *rs_segment_slot_prompt(void *base, const struct rs_segment_header *hdr,
					       uint32_t slot)
{
	return (uint32_t *)((unsigned char *)rs_segment_slot(base, hdr, slot) +
			    hdr->slot_prompt_offset);
}

static inline uint32_t *rs_segment_slot_output(void *base, const struct rs_segment_header *hdr,
					       uint32_t slot)
{
	return (uint32_t *)((unsigned char *)rs_segment_slot(base, hdr, slot) +
			    hdr->slot_output_offset);
}

#endif
