/* The paged KV block allocator: exhaustion, reference counts, refused double frees,
 * and a long random workload checked against a model kept here. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/engine/kv_cache.h"
#include "tests/engine_test.h"

int main(void)
{
	struct rs_kv_cache *kv = NULL;
	CHECK(rs_kv_cache_create(0, 16, &kv) == -EINVAL, "zero blocks");
	CHECK(rs_kv_cache_create(8, 0, &kv) == -EINVAL, "zero block size");
	CHECK(rs_kv_cache_create(8, 16, &kv) == 0 && kv, "create");
	if (!kv)
		TEST_END();
	CHECK(rs_kv_n_blocks(kv) == 8 && rs_kv_block_size(kv) == 16, "sizes");
	CHECK(rs_kv_free_count(kv) == 8, "all free");

	/* Exhaustion: 8 distinct ids, then -ENOMEM, and the pool is unchanged by it. */
	int ids[8], seen[8] = {0};
	for (int i = 0; i < 8; i++) {
		ids[i] = rs_kv_block_alloc(kv);
		CHECK(ids[i] >= 0 && ids[i] < 8, "alloc %d: %d", i, ids[i]);
		if (ids[i] >= 0 && ids[i] < 8) {
			CHECK(!seen[ids[i]], "block %d handed out twice", ids[i]);
			seen[ids[i]] = 1;
			CHECK(rs_kv_block_refcount(kv, (uint32_t)ids[i]) == 1, "fresh refcount");
		}
	}
	CHECK(rs_kv_free_count(kv) == 0, "none free");
	CHECK(rs_kv_block_alloc(kv) == -ENOMEM, "exhausted");
	CHECK(rs_kv_block_alloc(kv) == -ENOMEM, "still exhausted");

	/* Sharing: a block with two holders is free only after both let go. */
	uint32_t b = (uint32_t)ids[3];
	CHECK(rs_kv_block_ref(kv, b) == 2, "ref -> 2");
	CHECK(rs_kv_block_refcount(kv, b) == 2, "refcount 2");
	CHECK(rs_kv_block_unref(kv, b) == 1, "unref -> 1");
	CHECK(rs_kv_free_count(kv) == 0, "still held");
	CHECK(rs_kv_block_alloc(kv) == -ENOMEM, "still exhausted while shared");
	CHECK(rs_kv_block_unref(kv, b) == 0, "unref -> 0");
	CHECK(rs_kv_free_count(kv) == 1, "one free");

	/* Double free and references to free or unknown blocks are refused. */
	CHECK(rs_kv_block_unref(kv, b) == -EINVAL, "double free refused");
	CHECK(rs_kv_free_count(kv) == 1, "double free did not grow the free list");
	CHECK(rs_kv_block_ref(kv, b) == -EINVAL, "ref of a free block refused");
	CHECK(rs_kv_block_ref(kv, 8) == -EINVAL, "ref out of range");
	CHECK(rs_kv_block_unref(kv, 1000) == -EINVAL, "unref out of range");
	CHECK(rs_kv_block_refcount(kv, 8) == 0, "refcount out of range");
	int again = rs_kv_block_alloc(kv);
	CHECK(again == (int)b, "the freed block is reused: %d", again);
	CHECK(rs_kv_block_alloc(kv) == -ENOMEM, "exhausted again");
	for (int i = 0; i < 8; i++)
		CHECK(rs_kv_block_unref(kv, (uint32_t)ids[i]) == 0, "release %d", i);
	CHECK(rs_kv_free_count(kv) == 8, "all free again");
	rs_kv_cache_destroy(kv);

	/* Random workload against a model of the refcounts. */
	enum { N = 64 };
	CHECK(rs_kv_cache_create(N, 4, &kv) == 0, "create");
	uint32_t model[N] = {0};
	uint64_t s = 99;
	for (int step = 0; step < 200000; step++) {
		uint32_t op = (uint32_t)(test_rand(&s) % 3), id = (uint32_t)(test_rand(&s) % (N + 2));
		uint32_t free_model = 0;
		for (int i = 0; i < N; i++)
			free_model += model[i] == 0;
		if (op == 0) {
			int got = rs_kv_block_alloc(kv);
			if (free_model == 0) {
				CHECK(got == -ENOMEM, "step %d: alloc with none free: %d", step, got);
			} else {
				CHECK(got >= 0 && got < N && model[got] == 0, "step %d: alloc gave %d",
				      step, got);
				if (got >= 0 && got < N)
					model[got] = 1;
			}
		} else if (op == 1) {
			int got = rs_kv_block_ref(kv, id);
			int want = id < N && model[id] ? (int)++model[id] : -EINVAL;
			CHECK(got == want, "step %d: ref %u: %d want %d", step, id, got, want);
		} else {
			int got = rs_kv_block_unref(kv, id);
			int want = id < N && model[id] ? (int)--model[id] : -EINVAL;
			CHECK(got == want, "step %d: unref %u: %d want %d", step, id, got, want);
		}
		free_model = 0;
		for (int i = 0; i < N; i++)
			free_model += model[i] == 0;
		CHECK(rs_kv_free_count(kv) == free_model, "step %d: free count", step);
		if (test_failures)
			break;
	}
	rs_kv_cache_destroy(kv);
	rs_kv_cache_destroy(NULL);
	TEST_END();
}
