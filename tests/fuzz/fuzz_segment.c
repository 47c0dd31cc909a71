/* libFuzzer target: a client checking the segment headers a daemon sends it. Whatever
 * rs_segment_check / rs_shared_segment_check accept must describe regions that lie
 * inside the mapping, so a client following the offsets never reads out of bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shm/segment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(int condition)
{
	if (!condition)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	/* The first byte scales the claimed mapping size relative to the input. */
	size_t mapped = (size_t)data[0] << 16;
	data++;
	size--;
	struct rs_segment_header hdr;
	if (size >= sizeof(hdr)) {
		memcpy(&hdr, data, sizeof(hdr));
		if (rs_segment_check(&hdr, mapped) == 0) {
			require(hdr.segment_size <= mapped);
			require(hdr.sq_entries_offset + (uint64_t)hdr.sq_entries * sizeof(struct rs_sqe) <=
				hdr.cq_ring_offset);
			require(hdr.cq_entries_offset + (uint64_t)hdr.cq_entries * sizeof(struct rs_cqe) <=
				hdr.slots_offset);
			require(hdr.slots_offset + (uint64_t)hdr.slot_count * hdr.slot_stride <= hdr.segment_size);
			require(hdr.slot_output_offset + (uint64_t)hdr.slot_output_capacity * 4 <= hdr.slot_stride);
		}
	}
	struct rs_shared_header shared;
	if (size >= sizeof(shared)) {
		memcpy(&shared, data, sizeof(shared));
		if (rs_shared_segment_check(&shared, mapped) == 0) {
			require(shared.size <= mapped);
			require(shared.vocab_size_bytes == 0 ||
				shared.vocab_offset + shared.vocab_size_bytes <= shared.size);
			require(memchr(shared.model_name, 0, sizeof(shared.model_name)) != NULL);
		}
	}
	return 0;
}
