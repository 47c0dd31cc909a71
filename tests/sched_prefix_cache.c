/* The radix prefix cache: a long random workload against a naive model kept here (match
 * results, eviction order (leaves no waiter needs first, then LRU), reference counts, locks,
 * waiters and their hook calls, and every invariant after each operation), locked paths surviving
 * eviction, nothing left locked or leaked after release, inserts below a locked node agreeing
 * with inserts from the root, and 100,000 waiters moving as prefixes are cached. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/sched/prefix_cache.h"
#include "kernels/engine/kv_cache.h"
#include "tests/harness/harness.h"

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)((rng_state >> 16) % n);
}

/* --- the randomized workload ----------------------------------------------------------------- */

#define N_BLOCKS    64
#define MAX_DEPTH   6 /* blocks in a sequence's or a waiter's prompt */
#define MAX_TOKENS  (MAX_DEPTH * 4 + 3)
#define VOCAB	    4
#define N_SEQS	    8
#define N_WAITERS   16
#define N_HELD	    32
#define MODEL_NODES (N_BLOCKS + 1)

struct model_node {
	bool alive;
	uint32_t parent; /* model index; 0 is the root */
	uint32_t depth;
	uint32_t tokens[MAX_TOKENS]; /* the whole prefix */
	uint32_t block;
	uint32_t direct_locks;
	uint64_t tick;
};

struct sequence {
	bool live;
	uint32_t n_tokens;
	uint32_t tokens[MAX_TOKENS];
	uint32_t n_blocks;
	uint32_t blocks[MAX_DEPTH + 1];
};

struct held_lock {
	struct rs_prefix_node *node;
	uint32_t model; /* model index */
};

struct world {
	struct rs_kv_cache *kv;
	struct rs_prefix_cache *cache;
	uint32_t block_size;
	uint64_t clock;
	struct model_node nodes[MODEL_NODES];
	uint32_t refcount[N_BLOCKS]; /* the model's count per block */
	struct sequence seqs[N_SEQS];
	struct held_lock held[N_HELD];
	uint32_t n_held;
	struct rs_prefix_waiter waiters[N_WAITERS];
	uint32_t waiter_tokens[N_WAITERS][MAX_TOKENS];
	bool watched[N_WAITERS];
	uint32_t known[N_WAITERS]; /* match_blocks as the hook calls told */
	uint32_t hook_calls;
};

static void on_match_changed(void *ctx, struct rs_prefix_waiter *waiter, uint32_t old_blocks)
{
	struct world *world = ctx;
	uint32_t i = (uint32_t)(waiter - world->waiters);
	CHECK(i < N_WAITERS && world->watched[i], "hook for an unwatched waiter");
	CHECK(old_blocks == world->known[i], "waiter %u: old %u, last told %u", i, old_blocks,
	      world->known[i]);
	CHECK(waiter->match_blocks == old_blocks + 1 || waiter->match_blocks + 1 == old_blocks,
	      "waiter %u moved %u -> %u", i, old_blocks, waiter->match_blocks);
	world->known[i] = waiter->match_blocks;
	world->hook_calls++;
}

static uint32_t model_child(const struct world *world, uint32_t parent, const uint32_t *block)
{
	uint32_t bs = world->block_size;
	for (uint32_t i = 1; i < MODEL_NODES; i++) {
		const struct model_node *node = &world->nodes[i];
		if (node->alive && node->parent == parent &&
		    memcmp(node->tokens + (node->depth - 1) * bs, block, bs * sizeof(*block)) == 0)
			return i;
	}
	return 0;
}

/* Match without touching: the model node of the deepest match. */
static uint32_t model_walk(const struct world *world, const uint32_t *tokens, uint32_t max_blocks)
{
	uint32_t index = 0;
	for (uint32_t i = 0; i < max_blocks; i++) {
		uint32_t child = model_child(world, index, tokens + i * world->block_size);
		if (!child)
			break;
		index = child;
	}
	return index;
}

static bool model_has_children(const struct world *world, uint32_t index)
{
	for (uint32_t i = 1; i < MODEL_NODES; i++)
		if (world->nodes[i].alive && world->nodes[i].parent == index)
			return true;
	return false;
}

/* Locks on the node and below: a lock pins its ancestors. */
static uint32_t model_locks(const struct world *world, uint32_t index)
{
	uint32_t locks = world->nodes[index].direct_locks;
	for (uint32_t i = 1; i < MODEL_NODES; i++)
		if (world->nodes[i].alive && world->nodes[i].parent == index)
			locks += model_locks(world, i);
	return locks;
}

static void model_touch(struct world *world, uint32_t index)
{
	for (; index; index = world->nodes[index].parent)
		world->nodes[index].tick = world->clock;
}

static void kv_unref(struct world *world, uint32_t block)
{
	CHECK(world->refcount[block] > 0, "model unref of a free block %u", block);
	world->refcount[block]--;
	CHECK(rs_kv_block_unref(world->kv, block) == (int)world->refcount[block], "unref %u",
	      block);
}

static void kv_ref(struct world *world, uint32_t block)
{
	world->refcount[block]++;
	CHECK(rs_kv_block_ref(world->kv, block) == (int)world->refcount[block], "ref %u", block);
}

/* Every check that does not disturb the LRU order. */
static void verify(struct world *world)
{
	CHECK(rs_prefix_cache_check(world->cache) == 0, "invariants");
	uint32_t alive = 0, locked = 0;
	for (uint32_t i = 1; i < MODEL_NODES; i++) {
		const struct model_node *node = &world->nodes[i];
		if (!node->alive)
			continue;
		alive++;
		locked += model_locks(world, i) > 0;
		/* A watch matches without touching: is the node's prefix cached? */
		struct rs_prefix_waiter probe = {.tokens = node->tokens, .max_blocks = node->depth};
		rs_prefix_cache_watch(world->cache, &probe);
		CHECK(probe.match_blocks == node->depth, "model node %u (depth %u) matches %u", i,
		      node->depth, probe.match_blocks);
		rs_prefix_cache_unwatch(world->cache, &probe);
	}
	CHECK(rs_prefix_cache_nodes(world->cache) == alive, "%u nodes, model %u",
	      rs_prefix_cache_nodes(world->cache), alive);
	CHECK(rs_prefix_cache_locked_nodes(world->cache) == locked, "%u locked, model %u",
	      rs_prefix_cache_locked_nodes(world->cache), locked);
	uint32_t free_blocks = 0;
	for (uint32_t b = 0; b < N_BLOCKS; b++) {
		CHECK(rs_kv_block_refcount(world->kv, b) == world->refcount[b],
		      "block %u: refcount %u, model %u", b, rs_kv_block_refcount(world->kv, b),
		      world->refcount[b]);
		free_blocks += world->refcount[b] == 0;
	}
	CHECK(rs_kv_free_count(world->kv) == free_blocks, "free count");
	for (uint32_t w = 0; w < N_WAITERS; w++) {
		if (!world->watched[w])
			continue;
		const struct rs_prefix_waiter *waiter = &world->waiters[w];
		uint32_t want =
		    world->nodes[model_walk(world, waiter->tokens, waiter->max_blocks)].depth;
		CHECK(waiter->match_blocks == want, "waiter %u: match %u, model %u", w,
		      waiter->match_blocks, want);
		CHECK(world->known[w] == want, "waiter %u: hooks told %u, model %u", w,
		      world->known[w], want);
	}
}

static void random_tokens(uint32_t *tokens, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		tokens[i] = rnd(VOCAB);
}

static void op_match(struct world *world, const uint32_t *tokens, uint32_t max_blocks)
{
	uint32_t blocks[MAX_DEPTH];
	struct rs_prefix_node *deepest = NULL;
	world->clock++;
	uint32_t n = rs_prefix_cache_match(world->cache, tokens, max_blocks, blocks, &deepest);
	uint32_t index = model_walk(world, tokens, max_blocks);
	CHECK(n == world->nodes[index].depth, "match %u, model %u", n, world->nodes[index].depth);
	CHECK((n == 0) == (deepest == NULL), "deepest");
	for (uint32_t i = index, d = n; i; i = world->nodes[i].parent)
		CHECK(blocks[--d] == world->nodes[i].block, "matched block %u", d);
	model_touch(world, index);
	/* A request runs with the deepest node locked. */
	if (n && world->n_held < N_HELD && rnd(2)) {
		rs_prefix_cache_lock(world->cache, deepest);
		world->nodes[index].direct_locks++;
		world->held[world->n_held++] = (struct held_lock){deepest, index};
	}
}

static void op_unlock(struct world *world)
{
	if (!world->n_held)
		return;
	uint32_t i = rnd(world->n_held);
	struct held_lock held = world->held[i];
	world->held[i] = world->held[--world->n_held];
	rs_prefix_cache_unlock(world->cache, held.node);
	world->nodes[held.model].direct_locks--;
}

/* Some watched waiter's longest cached prefix ends at model node i. */
static bool model_has_waiters(struct world *world, uint32_t i)
{
	for (uint32_t w = 0; w < N_WAITERS; w++) {
		const struct rs_prefix_waiter *waiter = &world->waiters[w];
		if (world->watched[w] && model_walk(world, waiter->tokens, waiter->max_blocks) == i)
			return true;
	}
	return false;
}

static void op_evict(struct world *world, uint32_t want)
{
	uint32_t model_freed = 0;
	while (model_freed < want) {
		/* Leaves no waiter matches to the end go first, then least recently used. */
		uint32_t victim = 0;
		bool victim_waited = false, tie = false;
		for (uint32_t i = 1; i < MODEL_NODES; i++) {
			const struct model_node *node = &world->nodes[i];
			if (!node->alive || model_has_children(world, i) || model_locks(world, i))
				continue;
			bool waited = model_has_waiters(world, i);
			if (victim && waited == victim_waited &&
			    node->tick == world->nodes[victim].tick)
				tie = true;
			if (!victim || (!waited && victim_waited) ||
			    (waited == victim_waited && node->tick < world->nodes[victim].tick)) {
				victim = i;
				victim_waited = waited;
				tie = false;
			}
		}
		if (!victim)
			break;
		CHECK(!tie, "two leaves share an LRU stamp");
		world->nodes[victim].alive = false;
		world->refcount[world->nodes[victim].block]--;
		model_freed += world->refcount[world->nodes[victim].block] == 0;
	}
	uint32_t freed = rs_prefix_cache_evict(world->cache, want);
	CHECK(freed == model_freed, "evicted %u blocks, model %u", freed, model_freed);
}

static void seq_finish(struct world *world, struct sequence *seq)
{
	for (uint32_t i = 0; i < seq->n_blocks; i++)
		kv_unref(world, seq->blocks[i]);
	seq->live = false;
}

/* A new sequence: its cached prefix shared (as admission does), the rest allocated. */
static void op_start(struct world *world, struct sequence *seq)
{
	uint32_t bs = world->block_size;
	seq->n_tokens = 1 + rnd(MAX_DEPTH * bs + bs - 1);
	/* Half the time a variation of another sequence's prompt, so that prefixes meet. */
	const struct sequence *other = &world->seqs[rnd(N_SEQS)];
	random_tokens(seq->tokens, seq->n_tokens);
	if (rnd(2) && other != seq && other->n_tokens) {
		uint32_t keep = rnd(other->n_tokens + 1);
		memcpy(seq->tokens, other->tokens,
		       (keep < seq->n_tokens ? keep : seq->n_tokens) * sizeof(uint32_t));
	}
	seq->n_blocks = rs_kv_blocks_for(seq->n_tokens, bs);
	uint32_t full = seq->n_tokens / bs;
	uint32_t matched = 0;
	if (rnd(2)) {
		struct rs_prefix_node *deepest;
		world->clock++;
		matched =
		    rs_prefix_cache_match(world->cache, seq->tokens, full, seq->blocks, &deepest);
		uint32_t index = model_walk(world, seq->tokens, full);
		CHECK(matched == world->nodes[index].depth, "start: match");
		model_touch(world, index);
		for (uint32_t i = 0; i < matched; i++)
			kv_ref(world, seq->blocks[i]);
	}
	for (uint32_t i = matched; i < seq->n_blocks; i++) {
		int block = rs_kv_block_alloc(world->kv);
		if (block < 0) {
			op_evict(world, seq->n_blocks - i);
			verify(world);
			block = rs_kv_block_alloc(world->kv);
		}
		if (block < 0) {
			seq->n_blocks = i;
			seq_finish(world, seq);
			return;
		}
		CHECK(world->refcount[block] == 0, "allocated a block in use");
		world->refcount[block] = 1;
		seq->blocks[i] = (uint32_t)block;
	}
	seq->live = true;
}

static void op_insert(struct world *world, struct sequence *seq)
{
	uint32_t bs = world->block_size;
	uint32_t n = rnd(seq->n_tokens / bs + 1);
	uint32_t want[MAX_DEPTH + 1];
	memcpy(want, seq->blocks, sizeof(want));
	world->clock++;
	/* The model first: the cached block wins, new nodes take a reference. */
	uint32_t index = 0;
	for (uint32_t i = 0; i < n; i++) {
		const uint32_t *block = seq->tokens + i * bs;
		uint32_t child = model_child(world, index, block);
		if (child) {
			if (want[i] != world->nodes[child].block) {
				world->refcount[want[i]]--;
				world->refcount[world->nodes[child].block]++;
				want[i] = world->nodes[child].block;
			}
		} else {
			child = 1;
			while (world->nodes[child].alive)
				child++;
			CHECK(child < MODEL_NODES, "model pool");
			struct model_node *node = &world->nodes[child];
			memset(node, 0, sizeof(*node));
			node->alive = true;
			node->parent = index;
			node->depth = world->nodes[index].depth + 1;
			memcpy(node->tokens, seq->tokens,
			       (size_t)node->depth * bs * sizeof(uint32_t));
			node->block = want[i];
			world->refcount[want[i]]++;
		}
		index = child;
	}
	model_touch(world, index);
	struct rs_prefix_node *node =
	    rs_prefix_cache_insert(world->cache, seq->tokens, n, seq->blocks);
	CHECK((node == NULL) == (n == 0), "insert's deepest");
	CHECK(memcmp(want, seq->blocks, sizeof(want)) == 0, "block table after insert");
	if (node && world->n_held < N_HELD && rnd(2)) {
		rs_prefix_cache_lock(world->cache, node);
		world->nodes[index].direct_locks++;
		world->held[world->n_held++] = (struct held_lock){node, index};
	}
}

static void op_watch(struct world *world, uint32_t w)
{
	uint32_t bs = world->block_size;
	struct rs_prefix_waiter *waiter = &world->waiters[w];
	if (world->watched[w]) {
		rs_prefix_cache_unwatch(world->cache, waiter);
		world->watched[w] = false;
		return;
	}
	uint32_t n_tokens = 1 + rnd(MAX_DEPTH * bs);
	random_tokens(world->waiter_tokens[w], n_tokens);
	const struct sequence *other = &world->seqs[rnd(N_SEQS)];
	if (rnd(4) && other->n_tokens)
		memcpy(world->waiter_tokens[w], other->tokens,
		       (other->n_tokens < n_tokens ? other->n_tokens : n_tokens) *
			   sizeof(uint32_t));
	memset(waiter, 0, sizeof(*waiter));
	waiter->tokens = world->waiter_tokens[w];
	waiter->max_blocks = rnd(n_tokens / bs + 1);
	rs_prefix_cache_watch(world->cache, waiter);
	world->watched[w] = true;
	world->known[w] = waiter->match_blocks;
}

static void random_workload(uint64_t seed, uint32_t ops)
{
	struct world *world = calloc(1, sizeof(*world));
	CHECK(world, "calloc");
	rng_state = seed * 0x9e3779b97f4a7c15ULL + 1;
	world->block_size = 2 + rnd(3);
	CHECK(rs_kv_cache_create(N_BLOCKS, world->block_size, &world->kv) == 0, "kv");
	struct rs_prefix_cache_hooks hooks = {.match_changed = on_match_changed, .ctx = world};
	CHECK(rs_prefix_cache_create(world->kv, &hooks, &world->cache) == 0, "create");
	verify(world);
	for (uint32_t op = 0; op < ops; op++) {
		struct sequence *seq = &world->seqs[rnd(N_SEQS)];
		switch (rnd(10)) {
		case 0:
		case 1:
			if (seq->live)
				seq_finish(world, seq);
			else
				op_start(world, seq);
			break;
		case 2:
		case 3:
			if (seq->live)
				op_insert(world, seq);
			break;
		case 4: {
			uint32_t tokens[MAX_TOKENS];
			uint32_t n = rnd(MAX_DEPTH + 1);
			random_tokens(tokens, n * world->block_size);
			if (seq->n_tokens && rnd(4)) {
				uint32_t keep = seq->n_tokens < n * world->block_size
						    ? seq->n_tokens
						    : n * world->block_size;
				memcpy(tokens, seq->tokens, keep * sizeof(uint32_t));
			}
			op_match(world, tokens, n);
			break;
		}
		case 5:
			op_unlock(world);
			break;
		case 6:
			op_evict(world, 1 + rnd(8));
			break;
		default:
			op_watch(world, rnd(N_WAITERS));
			break;
		}
		verify(world);
	}
	/* Wind down: nothing locked, watched or held is left, and nothing leaks. */
	while (world->n_held)
		op_unlock(world);
	for (uint32_t w = 0; w < N_WAITERS; w++)
		if (world->watched[w])
			op_watch(world, w);
	op_evict(world, UINT32_MAX);
	verify(world);
	CHECK(rs_prefix_cache_nodes(world->cache) == 0, "all evicted");
	for (uint32_t s = 0; s < N_SEQS; s++)
		if (world->seqs[s].live)
			seq_finish(world, &world->seqs[s]);
	CHECK(rs_kv_free_count(world->kv) == N_BLOCKS, "blocks leaked");
	rs_prefix_cache_destroy(world->cache);
	rs_kv_cache_destroy(world->kv);
	free(world);
}

/* --- locked paths survive eviction; a client that goes away leaves nothing ---------------- */

#define FIXED_BS     4
#define FIXED_BLOCKS 256

/* Insert n random sequences of up to 8 blocks, each sharing a random part of the previous
 * one's prompt, and give their blocks back: only the cache holds them then. */
static void fill(struct rs_kv_cache *kv, struct rs_prefix_cache *cache, uint32_t prompts[][32],
		 uint32_t n)
{
	for (uint32_t s = 0; s < n; s++) {
		random_tokens(prompts[s], 32);
		if (s && rnd(2))
			memcpy(prompts[s], prompts[s - 1], rnd(33) * sizeof(uint32_t));
		uint32_t blocks[8], n_blocks = 1 + rnd(8);
		for (uint32_t i = 0; i < n_blocks; i++) {
			int block = rs_kv_block_alloc(kv);
			CHECK(block >= 0, "alloc");
			blocks[i] = (uint32_t)block;
		}
		CHECK(rs_prefix_cache_insert(cache, prompts[s], n_blocks, blocks), "insert");
		for (uint32_t i = 0; i < n_blocks; i++)
			rs_kv_block_unref(kv, blocks[i]);
		CHECK(rs_prefix_cache_check(cache) == 0, "invariants after insert");
	}
}

static void locked_survive(uint64_t seed)
{
	rng_state = seed;
	struct rs_kv_cache *kv;
	struct rs_prefix_cache *cache;
	CHECK(rs_kv_cache_create(FIXED_BLOCKS, FIXED_BS, &kv) == 0, "kv");
	CHECK(rs_prefix_cache_create(kv, NULL, &cache) == 0, "create");
	uint32_t prompts[24][32];
	fill(kv, cache, prompts, 24);
	struct rs_prefix_node *locked[8];
	uint32_t depth[8], blocks[8][8], locked_prompts[8][32];
	for (uint32_t i = 0; i < 8; i++) {
		memcpy(locked_prompts[i], prompts[rnd(24)], sizeof(locked_prompts[i]));
		depth[i] = rs_prefix_cache_match(cache, locked_prompts[i], 1 + rnd(8), blocks[i],
						 &locked[i]);
		CHECK(depth[i] > 0, "a filled prompt matches");
		rs_prefix_cache_lock(cache, locked[i]);
	}
	uint32_t before = rs_prefix_cache_nodes(cache);
	rs_prefix_cache_evict(cache, UINT32_MAX);
	CHECK(rs_prefix_cache_check(cache) == 0, "invariants after evicting all");
	CHECK(rs_prefix_cache_nodes(cache) <= before, "evicted");
	CHECK(rs_prefix_cache_nodes(cache) == rs_prefix_cache_locked_nodes(cache),
	      "only locked nodes survive (%u nodes, %u locked)", rs_prefix_cache_nodes(cache),
	      rs_prefix_cache_locked_nodes(cache));
	for (uint32_t i = 0; i < 8; i++) {
		for (uint32_t b = 0; b < depth[i]; b++)
			CHECK(rs_kv_block_refcount(kv, blocks[i][b]) >= 1,
			      "a locked block was freed");
		struct rs_prefix_waiter probe = {.tokens = locked_prompts[i],
						 .max_blocks = depth[i]};
		rs_prefix_cache_watch(cache, &probe);
		CHECK(probe.match_blocks == depth[i], "lock %u: %u of %u blocks left", i,
		      probe.match_blocks, depth[i]);
		rs_prefix_cache_unwatch(cache, &probe);
	}
	/* The client goes away: every lock undone, everything evictable and nothing leaks. */
	for (uint32_t i = 0; i < 8; i++)
		rs_prefix_cache_unlock(cache, locked[i]);
	CHECK(rs_prefix_cache_locked_nodes(cache) == 0, "locks left");
	CHECK(rs_prefix_cache_check(cache) == 0, "invariants after unlock");
	rs_prefix_cache_evict(cache, UINT32_MAX);
	CHECK(rs_prefix_cache_nodes(cache) == 0, "nodes left");
	CHECK(rs_kv_free_count(kv) == FIXED_BLOCKS, "blocks leaked");
	rs_prefix_cache_destroy(cache);
	rs_kv_cache_destroy(kv);
}

/* Sequences still running hold their blocks; release is destroy dropping the rest. */
static void release_all(uint64_t seed)
{
	rng_state = seed;
	struct rs_kv_cache *kv;
	struct rs_prefix_cache *cache;
	CHECK(rs_kv_cache_create(FIXED_BLOCKS, FIXED_BS, &kv) == 0, "kv");
	CHECK(rs_prefix_cache_create(kv, NULL, &cache) == 0, "create");
	uint32_t prompts[24][32];
	fill(kv, cache, prompts, 24);
	/* Requests admitted over cached prefixes: a reference each and a lock. */
	struct rs_prefix_node *locked[16];
	uint32_t blocks[16][8], n[16];
	for (uint32_t i = 0; i < 16; i++) {
		n[i] = rs_prefix_cache_match(cache, prompts[rnd(24)], 8, blocks[i], &locked[i]);
		rs_prefix_cache_lock(cache, locked[i]);
		for (uint32_t b = 0; b < n[i]; b++)
			rs_kv_block_ref(kv, blocks[i][b]);
	}
	CHECK(rs_prefix_cache_locked_nodes(cache) > 0, "locked");
	rs_prefix_cache_evict(cache, UINT32_MAX);
	CHECK(rs_prefix_cache_nodes(cache) == rs_prefix_cache_locked_nodes(cache), "evict");
	for (uint32_t i = 0; i < 16; i++)
		rs_prefix_cache_unlock(cache, locked[i]);
	CHECK(rs_prefix_cache_locked_nodes(cache) == 0, "locks left after release");
	CHECK(rs_prefix_cache_check(cache) == 0, "invariants after release");
	/* Evicting a node whose block a request still holds frees nothing yet. */
	rs_prefix_cache_evict(cache, UINT32_MAX);
	CHECK(rs_prefix_cache_nodes(cache) == 0, "nodes left");
	for (uint32_t i = 0; i < 16; i++)
		for (uint32_t b = 0; b < n[i]; b++)
			rs_kv_block_unref(kv, blocks[i][b]);
	CHECK(rs_kv_free_count(kv) == FIXED_BLOCKS, "blocks leaked");
	/* Destroy drops the references of what is still cached. */
	fill(kv, cache, prompts, 8);
	CHECK(rs_kv_free_count(kv) < FIXED_BLOCKS, "cached");
	rs_prefix_cache_destroy(cache);
	CHECK(rs_kv_free_count(kv) == FIXED_BLOCKS, "destroy leaked blocks");
	rs_kv_cache_destroy(kv);
}

/* A full pool stops an insert early with the prefix so far: a caller can hand the same
 * block twice (or nodes can outnumber distinct blocks no other way), so fake it. */
static void pool_exhausted(void)
{
	struct rs_kv_cache *kv;
	struct rs_prefix_cache *cache;
	CHECK(rs_kv_cache_create(2, 1, &kv) == 0, "kv");
	CHECK(rs_prefix_cache_create(kv, NULL, &cache) == 0, "create");
	int block = rs_kv_block_alloc(kv);
	CHECK(block >= 0, "alloc");
	uint32_t tokens[3] = {7, 8, 9},
		 blocks[3] = {(uint32_t)block, (uint32_t)block, (uint32_t)block};
	struct rs_prefix_node *node = rs_prefix_cache_insert(cache, tokens, 3, blocks);
	CHECK(node && rs_prefix_cache_nodes(cache) == 2, "stopped at the pool's size");
	uint32_t matched[3];
	struct rs_prefix_node *deepest;
	CHECK(rs_prefix_cache_match(cache, tokens, 3, matched, &deepest) == 2 && deepest == node,
	      "the prefix so far");
	CHECK(rs_prefix_cache_check(cache) == 0, "invariants");
	CHECK(rs_prefix_cache_evict(cache, UINT32_MAX) == 0, "the sequence still holds it");
	CHECK(rs_kv_block_unref(kv, (uint32_t)block) == 0, "last reference");
	rs_prefix_cache_destroy(cache);
	rs_kv_cache_destroy(kv);
}

/* --- insert_below agrees with insert -----------------------------------------------------------
 */

/* One of three caches run side by side: the same operations, one inserting from the root, the
 * others below the node the sequence holds locked; the third inserts prompt + output at the
 * end with rs_prefix_cache_insert_released (its table must stay as it was, and the cache
 * and the pool must end up as the others'). */
struct twin {
	struct rs_kv_cache *kv;
	struct rs_prefix_cache *cache;
	bool below;
	bool released;
};

#define TWIN_PROMPTS 12
#define TWIN_TOKENS  (8 * 4) /* 8 blocks of 4 */

/* A request's life on one twin: match and lock its prompt, insert the prompt once computed
 * (locking what the insert returns), then prompt + output at its end. Returns the blocks
 * the two inserts left in its table, for the caller to compare. */
static void twin_request(struct twin *twin, const uint32_t *tokens, uint32_t prompt_blocks,
			 uint32_t all_blocks, uint32_t *table)
{
	struct rs_prefix_node *locked = NULL;
	uint32_t matched =
	    rs_prefix_cache_match(twin->cache, tokens, prompt_blocks, table, &locked);
	rs_prefix_cache_lock(twin->cache, locked);
	for (uint32_t i = 0; i < matched; i++)
		CHECK(rs_kv_block_ref(twin->kv, table[i]) >= 2, "share a cached block");
	for (uint32_t i = matched; i < all_blocks; i++) {
		int block = rs_kv_block_alloc(twin->kv);
		CHECK(block >= 0, "alloc");
		table[i] = (uint32_t)block;
	}
	struct rs_prefix_node *node =
	    twin->below
		? rs_prefix_cache_insert_below(twin->cache, locked, tokens, prompt_blocks, table)
		: rs_prefix_cache_insert(twin->cache, tokens, prompt_blocks, table);
	rs_prefix_cache_lock(twin->cache, node);
	rs_prefix_cache_unlock(twin->cache, locked);
	locked = node;
	CHECK(rs_prefix_cache_check(twin->cache) == 0, "invariants after the prompt");
	uint32_t before_end[8];
	memcpy(before_end, table, all_blocks * sizeof(uint32_t));
	if (twin->released) {
		rs_prefix_cache_insert_released(twin->cache, locked, tokens, all_blocks, table);
		CHECK(memcmp(before_end, table, all_blocks * sizeof(uint32_t)) == 0,
		      "a released insert leaves the table alone");
	} else if (twin->below)
		rs_prefix_cache_insert_below(twin->cache, locked, tokens, all_blocks, table);
	else
		rs_prefix_cache_insert(twin->cache, tokens, all_blocks, table);
	rs_prefix_cache_unlock(twin->cache, locked);
	CHECK(rs_prefix_cache_check(twin->cache) == 0, "invariants after the end");
	for (uint32_t i = 0; i < all_blocks; i++)
		rs_kv_block_unref(twin->kv, table[i]);
}

static void insert_below_agrees(uint64_t seed)
{
	rng_state = seed;
	struct twin twins[3] = {
	    {.below = false}, {.below = true}, {.below = true, .released = true}};
	for (int t = 0; t < 3; t++) {
		CHECK(rs_kv_cache_create(48, 4, &twins[t].kv) == 0, "kv");
		CHECK(rs_prefix_cache_create(twins[t].kv, NULL, &twins[t].cache) == 0, "create");
	}
	uint32_t prompts[TWIN_PROMPTS][TWIN_TOKENS];
	for (uint32_t p = 0; p < TWIN_PROMPTS; p++) {
		random_tokens(prompts[p], TWIN_TOKENS);
		if (p && rnd(2)) /* shares a prefix with the one before */
			memcpy(prompts[p], prompts[p - 1],
			       (1 + rnd(TWIN_TOKENS)) * sizeof(uint32_t));
	}
	for (uint32_t op = 0; op < 400; op++) {
		const uint32_t *tokens = prompts[rnd(TWIN_PROMPTS)];
		uint32_t prompt_blocks = rnd(6), all_blocks = prompt_blocks + rnd(3);
		if (rnd(4) == 0) {
			uint32_t want = 1 + rnd(4);
			uint32_t freed0 = rs_prefix_cache_evict(twins[0].cache, want);
			uint32_t freed1 = rs_prefix_cache_evict(twins[1].cache, want);
			uint32_t freed2 = rs_prefix_cache_evict(twins[2].cache, want);
			CHECK(freed0 == freed1 && freed0 == freed2, "evicted %u, %u and %u blocks",
			      freed0, freed1, freed2);
		}
		/* Room for the request, evicting alike on both. */
		uint32_t free0 = rs_kv_free_count(twins[0].kv);
		if (free0 < all_blocks) {
			rs_prefix_cache_evict(twins[0].cache, all_blocks - free0);
			rs_prefix_cache_evict(twins[1].cache, all_blocks - free0);
			rs_prefix_cache_evict(twins[2].cache, all_blocks - free0);
		}
		if (rs_kv_free_count(twins[0].kv) < all_blocks)
			continue;
		uint32_t table0[8], table1[8], table2[8];
		twin_request(&twins[0], tokens, prompt_blocks, all_blocks, table0);
		twin_request(&twins[1], tokens, prompt_blocks, all_blocks, table1);
		twin_request(&twins[2], tokens, prompt_blocks, all_blocks, table2);
		CHECK(rs_prefix_cache_nodes(twins[2].cache) ==
			      rs_prefix_cache_nodes(twins[0].cache) &&
			  rs_kv_free_count(twins[2].kv) == rs_kv_free_count(twins[0].kv),
		      "a released insert: the same nodes and free blocks");
		CHECK(memcmp(table0, table1, all_blocks * sizeof(uint32_t)) == 0, "same tables");
		CHECK(rs_prefix_cache_nodes(twins[0].cache) ==
			  rs_prefix_cache_nodes(twins[1].cache),
		      "same nodes");
		/* Same cached prefixes, looked up without touching the LRU order. */
		for (uint32_t p = 0; p < TWIN_PROMPTS; p++) {
			struct rs_prefix_waiter probe0 = {.tokens = prompts[p], .max_blocks = 8};
			struct rs_prefix_waiter probe1 = probe0, probe2 = probe0;
			rs_prefix_cache_watch(twins[0].cache, &probe0);
			rs_prefix_cache_watch(twins[1].cache, &probe1);
			rs_prefix_cache_watch(twins[2].cache, &probe2);
			CHECK(probe0.match_blocks == probe1.match_blocks &&
				  probe0.match_blocks == probe2.match_blocks,
			      "prompt %u: %u, %u and %u blocks", p, probe0.match_blocks,
			      probe1.match_blocks, probe2.match_blocks);
			rs_prefix_cache_unwatch(twins[0].cache, &probe0);
			rs_prefix_cache_unwatch(twins[1].cache, &probe1);
			rs_prefix_cache_unwatch(twins[2].cache, &probe2);
		}
	}
	for (int t = 0; t < 3; t++) {
		rs_prefix_cache_destroy(twins[t].cache);
		rs_kv_cache_destroy(twins[t].kv);
	}
}

/* --- 100,000 waiters ------------------------------------------------------------------------- */

#define SCALE_WAITERS  100000
#define SCALE_PREFIXES 100
#define SCALE_DEPTH    64
#define SCALE_BS       16
#define SCALE_TOKENS   (SCALE_DEPTH * SCALE_BS + SCALE_BS)

static uint64_t scale_hook_calls;

static void count_hook(void *ctx, struct rs_prefix_waiter *waiter, uint32_t old_blocks)
{
	scale_hook_calls++;
}

static double seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void scale(void)
{
	double start = seconds();
	struct rs_kv_cache *kv;
	struct rs_prefix_cache *cache;
	const uint32_t n_blocks = SCALE_PREFIXES * SCALE_DEPTH + 1024;
	CHECK(rs_kv_cache_create(n_blocks, SCALE_BS, &kv) == 0, "kv");
	struct rs_prefix_cache_hooks hooks = {.match_changed = count_hook};
	CHECK(rs_prefix_cache_create(kv, &hooks, &cache) == 0, "create");
	/* Prefix p, then one token telling the waiter apart: max_blocks 64 of 65 blocks. */
	uint32_t(*prompts)[SCALE_TOKENS] = malloc(sizeof(*prompts) * SCALE_PREFIXES);
	struct rs_prefix_waiter *waiters = calloc(SCALE_WAITERS, sizeof(*waiters));
	CHECK(prompts && waiters, "malloc");
	for (uint32_t p = 0; p < SCALE_PREFIXES; p++)
		for (uint32_t t = 0; t < SCALE_TOKENS; t++)
			prompts[p][t] = p * 100003u + t * 7u + (t % 5u);
	for (uint32_t w = 0; w < SCALE_WAITERS; w++) {
		waiters[w].tokens = prompts[w % SCALE_PREFIXES];
		/* Half of each prefix's waiters want it whole, the others a part of it. */
		waiters[w].max_blocks =
		    (w / SCALE_PREFIXES) % 2 ? SCALE_DEPTH : 1 + (w / 2) % SCALE_DEPTH;
		rs_prefix_cache_watch(cache, &waiters[w]);
		CHECK(waiters[w].match_blocks == 0, "nothing cached yet");
	}
	/* Cache every prefix: each waiter moves down to its max_blocks, one call a block. */
	uint64_t want_calls = 0;
	for (uint32_t w = 0; w < SCALE_WAITERS; w++)
		want_calls += waiters[w].max_blocks;
	uint32_t blocks[SCALE_DEPTH];
	for (uint32_t p = 0; p < SCALE_PREFIXES; p++) {
		for (uint32_t i = 0; i < SCALE_DEPTH; i++)
			blocks[i] = (uint32_t)rs_kv_block_alloc(kv);
		CHECK(rs_prefix_cache_insert(cache, prompts[p], SCALE_DEPTH, blocks), "insert");
		for (uint32_t i = 0; i < SCALE_DEPTH; i++)
			rs_kv_block_unref(kv, blocks[i]);
	}
	CHECK(scale_hook_calls == want_calls, "%llu hook calls, want %llu",
	      (unsigned long long)scale_hook_calls, (unsigned long long)want_calls);
	CHECK(rs_prefix_cache_nodes(cache) == SCALE_PREFIXES * SCALE_DEPTH, "nodes");
	for (uint32_t w = 0; w < SCALE_WAITERS; w++)
		CHECK(waiters[w].match_blocks == waiters[w].max_blocks, "waiter %u: %u of %u", w,
		      waiters[w].match_blocks, waiters[w].max_blocks);
	CHECK(rs_prefix_cache_check(cache) == 0, "invariants after inserts");
	/* Every leaf has waiters (and keeps some: an evicted node's move up to its parent), so
	 * the order is LRU: the oldest prefix loses its last 8 blocks, and only its waiters
	 * deeper than 56 move up. */
	scale_hook_calls = 0;
	CHECK(rs_prefix_cache_evict(cache, 8) == 8, "evict 8");
	want_calls = 0;
	for (uint32_t w = 0; w < SCALE_WAITERS; w += SCALE_PREFIXES) {
		uint32_t want = waiters[w].max_blocks < 56 ? waiters[w].max_blocks : 56;
		want_calls += waiters[w].max_blocks - want;
		CHECK(waiters[w].match_blocks == want, "waiter %u after eviction: %u, want %u", w,
		      waiters[w].match_blocks, want);
	}
	CHECK(scale_hook_calls == want_calls, "hook calls on eviction");
	CHECK(waiters[SCALE_PREFIXES + 1].match_blocks == SCALE_DEPTH, "another prefix untouched");
	for (uint32_t w = 0; w < SCALE_WAITERS; w++)
		rs_prefix_cache_unwatch(cache, &waiters[w]);
	rs_prefix_cache_evict(cache, UINT32_MAX);
	CHECK(rs_prefix_cache_nodes(cache) == 0 && rs_kv_free_count(kv) == n_blocks, "all gone");
	CHECK(rs_prefix_cache_check(cache) == 0, "invariants at the end");
	rs_prefix_cache_destroy(cache);
	rs_kv_cache_destroy(kv);
	free(waiters);
	free(prompts);
	fprintf(stderr, "scale: %d waiters over %d prefixes of %d blocks in %.3f s\n",
		SCALE_WAITERS, SCALE_PREFIXES, SCALE_DEPTH, seconds() - start);
}

int main(void)
{
	for (uint64_t seed = 1; seed <= 20; seed++)
		random_workload(seed, 3000);
	for (uint64_t seed = 1; seed <= 20; seed++) {
		locked_survive(seed);
		release_all(seed);
	}
	pool_exhausted();
	for (uint64_t seed = 1; seed <= 20; seed++)
		insert_below_agrees(seed);
	scale();
	return T_EXIT_PASS;
}
