/* Segments: the layout is sane and line-aligned, the memfd is sealed (cannot shrink or
 * grow), the shared segment is read-only, and rs_segment_check refuses corrupt headers. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm/segment.h"
#include "tests/harness/harness.h"

int main(void)
{
	struct rs_segment_params params = {.sq_entries = 64,
					   .cq_entries = 128,
					   .slot_count = 10,
					   .slot_prompt_capacity = 100,
					   .slot_output_capacity = 33,
					   .max_inflight = 10,
					   .max_prompt_tokens = 100,
					   .max_output_tokens = 33,
					   .wake_mode = RS_WAKE_FUTEX,
					   .client_id = 9};
	int fd;
	void *map;
	size_t size;
	CHECK(rs_segment_create(&params, &fd, &map, &size) == 0, "create");
	const struct rs_segment_header *hdr = map;
	CHECK(rs_segment_check(hdr, size) == 0, "fresh header passes");
	/* Regions are line-aligned, in order, non-overlapping and inside the segment. */
	uint64_t offsets[] = {hdr->sq_ring_offset, hdr->sq_entries_offset, hdr->cq_ring_offset,
			      hdr->cq_entries_offset, hdr->slots_offset};
	uint64_t sizes[] = {128, 64 * 64, 128, 128 * 32, 10 * hdr->slot_stride};
	uint64_t end = sizeof(struct rs_segment_header);
	for (int i = 0; i < 5; i++) {
		CHECK(offsets[i] % 64 == 0, "region %d aligned", i);
		CHECK(offsets[i] >= end, "region %d overlaps the previous", i);
		end = offsets[i] + sizes[i];
	}
	CHECK(end <= size, "regions inside the segment");
	CHECK(hdr->slot_output_offset >= hdr->slot_prompt_offset + 100 * 4, "prompt fits");
	CHECK(hdr->slot_stride >= hdr->slot_output_offset + 33 * 4, "output fits");

	/* Seals: the size cannot change, and the seals cannot be removed or added to. */
	int seals = fcntl(fd, F_GET_SEALS);
	CHECK(seals == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), "seals %#x", seals);
	CHECK(ftruncate(fd, 4096) < 0 && errno == EPERM, "shrink refused");
	CHECK(ftruncate(fd, (off_t)size * 2) < 0 && errno == EPERM, "grow refused");
	CHECK(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) < 0, "sealing is sealed");

	/* Corrupt headers are refused. */
	struct rs_segment_header copy = *hdr;
	copy.magic ^= 1;
	CHECK(rs_segment_check(&copy, size) == -EPROTO, "magic");
	copy = *hdr;
	copy.abi_version = 99;
	CHECK(rs_segment_check(&copy, size) == -EPROTO, "version");
	copy = *hdr;
	copy.slots_offset += 64;
	CHECK(rs_segment_check(&copy, size) == -EINVAL, "moved slots");
	copy = *hdr;
	copy.sq_entries = 63;
	CHECK(rs_segment_check(&copy, size) == -EINVAL, "not a power of two");
	copy = *hdr;
	copy.slot_count = 1u << 30;
	CHECK(rs_segment_check(&copy, size) == -EINVAL, "huge slot count");
	CHECK(rs_segment_check(hdr, size - 64) == -EINVAL, "mapping smaller than the segment");
	munmap(map, size);
	close(fd);

	/* Bad parameters. */
	params.max_inflight = 11;
	CHECK(rs_segment_create(&params, &fd, &map, &size) == -EINVAL, "inflight > slots");

	/* The shared segment is sealed read-only. */
	struct rs_shared_header shared = {.vocab_size = 5, .max_seq_len = 10};
	strcpy(shared.model_name, "m");
	strcpy(shared.engine_name, "null");
	const char vocab[] = "abcdef";
	const char chat_template[] = "{{ messages }}";
	shared.n_end_tokens = 2;
	shared.end_tokens[0] = 3;
	shared.end_tokens[1] = 4;
	int sfd = rs_shared_segment_create(&shared, vocab, sizeof(vocab), chat_template,
					   strlen(chat_template), &size);
	CHECK(sfd >= 0, "shared create: %s", strerror(-sfd));
	CHECK(mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0) == MAP_FAILED,
	      "a writable mapping of the shared segment must fail");
	const struct rs_shared_header *ro = mmap(NULL, size, PROT_READ, MAP_SHARED, sfd, 0);
	CHECK(ro != MAP_FAILED, "read-only mapping");
	CHECK(rs_shared_segment_check(ro, size) == 0, "shared check");
	CHECK(memcmp((const char *)ro + ro->vocab_offset, vocab, sizeof(vocab)) == 0,
	      "vocab bytes");
	CHECK(ro->chat_template_bytes == strlen(chat_template) &&
		  memcmp((const char *)ro + ro->chat_template_offset, chat_template,
			 sizeof(chat_template)) == 0,
	      "chat template bytes and their NUL");
	CHECK(ro->chat_template_offset >= ro->vocab_offset + sizeof(vocab), "template after vocab");
	CHECK(ro->n_end_tokens == 2 && ro->end_tokens[1] == 4, "end tokens");
	struct rs_shared_header bad = *ro;
	bad.chat_template_bytes = size; /* runs past the segment */
	CHECK(rs_shared_segment_check(&bad, size) == -EINVAL, "template outside the segment");
	bad = *ro;
	bad.n_end_tokens = RS_MAX_END_TOKENS + 1;
	CHECK(rs_shared_segment_check(&bad, size) == -EINVAL, "too many end tokens");
	CHECK(pwrite(sfd, "x", 1, 0) < 0 && errno == EPERM, "write refused");
	return T_EXIT_PASS;
}
