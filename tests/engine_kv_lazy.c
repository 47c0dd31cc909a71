/* The CPU backend's KV pool costs nothing until used (rs_alloc_zeroed_large):
 *   - the allocator gives memory that reads as zero (the engine relies on it only so that a
 *     never-written slot, a caller bug, reads as a finite 0), aligned as documented, also
 *     where the same range held other data before (a fresh mapping, not reused heap);
 *   - allocating does not make it resident: RSS grows by far less than its size, and
 *     creating a CPU engine with a 256 MiB pool (K and V) grows RSS by far less than the
 *     pool (it used to memset all of it at create). */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "kernels/cpu/large_alloc.h"
#include "kernels/engine/engine.h"
#include "kernels/model/model_random.h"
#include "tests/engine_test.h"

/* Resident bytes of this process (/proc/self/statm's second field, in pages). */
static size_t resident_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, resident = 0;
	if (!f || fscanf(f, "%lu %lu", &size, &resident) != 2)
		resident = 0;
	if (f)
		fclose(f);
	return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* Whether every byte of p[0 .. n) is zero (reading maps the zero page: no RSS). */
static bool all_zero(const uint8_t *p, size_t n)
{
	uint8_t any = 0;
	for (size_t i = 0; i < n; i++)
		any |= p[i];
	return any == 0;
}

static void check_allocator(void)
{
	/* Small: page aligned (at least the 64 bytes the engine's vectors need). */
	uint8_t *small = rs_alloc_zeroed_large(100);
	CHECK(small && ((uintptr_t)small & 4095) == 0 && all_zero(small, 100), "small");
	memset(small, 0x5a, 100);
	rs_free_zeroed_large(small, 100);

	/* Large: 2 MiB aligned, zero, not resident until written. */
	size_t bytes = (64u << 20) + 123;
	size_t before = resident_bytes();
	uint8_t *big = rs_alloc_zeroed_large(bytes);
	CHECK(big && ((uintptr_t)big & ((2u << 20) - 1)) == 0, "2 MiB aligned: %p", (void *)big);
	if (!big)
		return;
	size_t grown = resident_bytes() - before;
	CHECK(grown < bytes / 8, "allocating 64 MiB made %zu KiB resident", grown >> 10);
	CHECK(all_zero(big, bytes), "fresh memory reads as zero");
	/* Written, released, allocated again: zero again, whatever the range held. */
	memset(big, 0xa5, bytes);
	rs_free_zeroed_large(big, bytes);
	big = rs_alloc_zeroed_large(bytes);
	CHECK(big && all_zero(big, bytes), "reallocated memory reads as zero");
	rs_free_zeroed_large(big, bytes);
}

static void check_engine_pool(void)
{
	struct rs_model_config cfg = test_config();
	struct rs_model *model = NULL;
	CHECK(rs_model_random(&cfg, RS_DTYPE_F32, 3, true, &model) == 0, "model");
	if (!model)
		return;
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = "cpu";
	opts.threads = 1;
	opts.kv_dtype = "f32";
	opts.block_size = 16;
	/* K and V of [layer][block][16][n_kv_heads * head_dim] f32: 128 MiB each. */
	size_t per_block = 16u * cfg.n_kv_heads * cfg.head_dim * sizeof(float) * cfg.n_layers;
	opts.kv_blocks = (uint32_t)((128u << 20) / per_block);
	size_t pool = 2 * (size_t)opts.kv_blocks * per_block;
	size_t before = resident_bytes();
	struct rs_engine *e = NULL;
	char err[256] = "";
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) == 0 && e, "create: %s", err);
	size_t grown = resident_bytes() - before;
	printf("CPU engine with a %zu MiB KV pool: RSS grew %zu MiB at create\n", pool >> 20,
	       grown >> 20);
	CHECK(grown < pool / 4, "a %zu MiB pool made %zu MiB resident at create", pool >> 20,
	      grown >> 20);
	rs_engine_destroy(e);
	rs_model_free(model);
}

int main(void)
{
	check_allocator();
	check_engine_pool();
	TEST_END();
}
