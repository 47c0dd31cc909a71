/* Segment layout, creation (memfd + seals) and checking. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm/segment.h"

static bool is_power_of_two(uint32_t x)
{
	return x && !(x & (x - 1));
}

static uint64_t align_line(uint64_t x)
{
	return (x + RS_CACHE_LINE - 1) & ~(uint64_t)(RS_CACHE_LINE - 1);
}

int rs_segment_layout(const struct rs_segment_params *p, struct rs_segment_header *hdr)
{
	if (!is_power_of_two(p->sq_entries) || !is_power_of_two(p->cq_entries) ||
	    p->sq_entries > RS_MAX_RING_ENTRIES || p->cq_entries > RS_MAX_RING_ENTRIES ||
	    p->slot_count == 0 || p->slot_count > RS_MAX_SLOTS || p->slot_prompt_capacity == 0 ||
	    p->slot_prompt_capacity > RS_MAX_SLOT_TOKENS || p->slot_output_capacity == 0 ||
	    p->slot_output_capacity > RS_MAX_SLOT_TOKENS ||
	    p->max_prompt_tokens > p->slot_prompt_capacity ||
	    p->max_output_tokens > p->slot_output_capacity || p->max_inflight == 0 ||
	    p->max_inflight > p->cq_entries || p->max_inflight > p->slot_count ||
	    (p->wake_mode != RS_WAKE_FUTEX && p->wake_mode != RS_WAKE_EVENTFD))
		return -EINVAL;

	memset(hdr, 0, sizeof(*hdr));
	hdr->magic = RS_SEGMENT_MAGIC;
	hdr->abi_version = RS_ABI_VERSION;
	hdr->sq_entries = p->sq_entries;
	hdr->cq_entries = p->cq_entries;
	hdr->slot_count = p->slot_count;
	hdr->slot_prompt_capacity = p->slot_prompt_capacity;
	hdr->slot_output_capacity = p->slot_output_capacity;
	hdr->client_id = p->client_id;
	hdr->max_inflight = p->max_inflight;
	hdr->max_prompt_tokens = p->max_prompt_tokens;
	hdr->max_output_tokens = p->max_output_tokens;
	hdr->wake_mode = p->wake_mode;
	hdr->features = p->features;

	uint64_t at = sizeof(struct rs_segment_header);
	hdr->sq_ring_offset = at;
	at += sizeof(struct rs_ring_indices);
	hdr->sq_entries_offset = at;
	at = align_line(at + (uint64_t)p->sq_entries * sizeof(struct rs_sqe));
	hdr->cq_ring_offset = at;
	at += sizeof(struct rs_ring_indices);
	hdr->cq_entries_offset = at;
	at = align_line(at + (uint64_t)p->cq_entries * sizeof(struct rs_cqe));
	hdr->slots_offset = at;
	hdr->slot_prompt_offset = sizeof(struct rs_slot_header);
	hdr->slot_output_offset = align_line(hdr->slot_prompt_offset +
					     (uint64_t)p->slot_prompt_capacity * sizeof(uint32_t));
	hdr->slot_stride = align_line(hdr->slot_output_offset +
				      (uint64_t)p->slot_output_capacity * sizeof(uint32_t));
	hdr->segment_size = at + hdr->slot_stride * p->slot_count;
	return 0;
}

int rs_segment_create(const struct rs_segment_params *params, int *fd_out, void **map_out,
		      size_t *size_out)
{
	struct rs_segment_header hdr;
	int ret = rs_segment_layout(params, &hdr);
	if (ret)
		return ret;
	int fd = memfd_create("ringserve-client", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	void *map = MAP_FAILED;
	if (ftruncate(fd, (off_t)hdr.segment_size) < 0)
		goto fail_errno;
	map = mmap(NULL, hdr.segment_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		goto fail_errno;
	/* The file is fresh, so everything else (ring indices, slot counters) reads 0. */
	memcpy(map, &hdr, sizeof(hdr));
	/* Shrinking would turn the daemon's accesses into SIGBUS; growing and re-sealing are
	 * not needed by anyone. Writes stay allowed: that is the point of the segment. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		goto fail_errno;
	*fd_out = fd;
	*map_out = map;
	*size_out = hdr.segment_size;
	return 0;

fail_errno:
	ret = -errno;
	if (map != MAP_FAILED)
		munmap(map, hdr.segment_size);
	close(fd);
	return ret;
}

/* [offset, offset + len) lies inside [0, size) without overflow. */
static bool range_inside(uint64_t offset, uint64_t len, uint64_t size)
{
	return offset <= size && len <= size - offset;
}

int rs_segment_check(const struct rs_segment_header *hdr, size_t mapped_size)
{
	if (mapped_size < sizeof(*hdr))
		return -EINVAL;
	if (hdr->magic != RS_SEGMENT_MAGIC || hdr->abi_version != RS_ABI_VERSION)
		return -EPROTO;
	/* Recompute the layout from the sizes and demand that the header agrees: one
	 * definition of the layout, in rs_segment_layout. */
	struct rs_segment_params params = {
	    .sq_entries = hdr->sq_entries,
	    .cq_entries = hdr->cq_entries,
	    .slot_count = hdr->slot_count,
	    .slot_prompt_capacity = hdr->slot_prompt_capacity,
	    .slot_output_capacity = hdr->slot_output_capacity,
	    .max_inflight = hdr->max_inflight,
	    .max_prompt_tokens = hdr->max_prompt_tokens,
	    .max_output_tokens = hdr->max_output_tokens,
	    .wake_mode = hdr->wake_mode,
	    .client_id = hdr->client_id,
	    .features = hdr->features,
	};
	struct rs_segment_header expected;
	if (rs_segment_layout(&params, &expected))
		return -EINVAL;
	if (expected.segment_size != hdr->segment_size || hdr->segment_size > mapped_size ||
	    expected.sq_ring_offset != hdr->sq_ring_offset ||
	    expected.sq_entries_offset != hdr->sq_entries_offset ||
	    expected.cq_ring_offset != hdr->cq_ring_offset ||
	    expected.cq_entries_offset != hdr->cq_entries_offset ||
	    expected.slots_offset != hdr->slots_offset ||
	    expected.slot_stride != hdr->slot_stride ||
	    expected.slot_prompt_offset != hdr->slot_prompt_offset ||
	    expected.slot_output_offset != hdr->slot_output_offset)
		return -EINVAL;
	return 0;
}

int rs_shared_segment_create(const struct rs_shared_header *header, const void *vocab,
			     size_t vocab_bytes, const char *chat_template,
			     size_t chat_template_bytes, size_t *size_out)
{
	struct rs_shared_header hdr = *header;
	if (hdr.n_end_tokens > RS_MAX_END_TOKENS)
		return -EINVAL;
	hdr.magic = RS_SHARED_MAGIC;
	hdr.abi_version = RS_ABI_VERSION;
	hdr.vocab_offset = vocab_bytes ? align_line(sizeof(hdr)) : 0;
	hdr.vocab_size_bytes = vocab_bytes;
	hdr.size = align_line(sizeof(hdr)) + vocab_bytes;
	hdr.chat_template_offset = chat_template ? align_line(hdr.size) : 0;
	hdr.chat_template_bytes = chat_template ? chat_template_bytes : 0;
	if (chat_template)
		hdr.size = hdr.chat_template_offset + chat_template_bytes + 1; /* + its NUL */

	int fd = memfd_create("ringserve-shared", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	int ret;
	/* Written with pwrite, never mapped writable, so F_SEAL_WRITE can be added. */
	if (ftruncate(fd, (off_t)hdr.size) < 0 || pwrite(fd, &hdr, sizeof(hdr), 0) != sizeof(hdr) ||
	    (vocab_bytes &&
	     pwrite(fd, vocab, vocab_bytes, (off_t)hdr.vocab_offset) != (ssize_t)vocab_bytes) ||
	    (chat_template &&
	     pwrite(fd, chat_template, chat_template_bytes, (off_t)hdr.chat_template_offset) !=
		 (ssize_t)chat_template_bytes))
		goto fail_errno;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		goto fail_errno;
	*size_out = hdr.size;
	return fd;

fail_errno:
	ret = errno ? -errno : -EIO;
	close(fd);
	return ret;
}

int rs_shared_segment_check(const struct rs_shared_header *hdr, size_t mapped_size)
{
	if (mapped_size < sizeof(*hdr))
		return -EINVAL;
	if (hdr->magic != RS_SHARED_MAGIC || hdr->abi_version != RS_ABI_VERSION)
		return -EPROTO;
	if (hdr->size > mapped_size || hdr->vocab_size == 0 ||
	    (hdr->vocab_size_bytes &&
	     !range_inside(hdr->vocab_offset, hdr->vocab_size_bytes, hdr->size)) ||
	    (hdr->chat_template_offset &&
	     (hdr->chat_template_bytes == UINT64_MAX ||
	      !range_inside(hdr->chat_template_offset, hdr->chat_template_bytes + 1, hdr->size))) ||
	    hdr->n_end_tokens > RS_MAX_END_TOKENS ||
	    memchr(hdr->model_name, 0, sizeof(hdr->model_name)) == NULL ||
	    memchr(hdr->engine_name, 0, sizeof(hdr->engine_name)) == NULL)
		return -EINVAL;
	return 0;
}

bool rs_tenant_name_valid(const char *name)
{
	size_t len = strnlen(name, RS_TENANT_NAME_BYTES);
	if (len == 0 || len == RS_TENANT_NAME_BYTES)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || strchr("._@:+-", c) != NULL;
		if (!ok)
			return false;
	}
	return true;
}
