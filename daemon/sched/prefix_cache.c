/* The radix prefix cache (see prefix_cache.h).
 *
 * Nodes live in one array: index 0 is the root, 1 .. n_blocks the pool, and node i's
 * tokens are tokens[(i - 1) * block_size ..]. Three structures index them, all sized at
 * creation:
 * - children: open addressing with linear probing over node indices, keyed by (parent,
 *   hash of the block's tokens); deletion shifts entries back, so there are no tombstones.
 * - the evictable heap: a binary min-heap of the unlocked non-root leaves, those without
 *   waiters first, then by last_access;
 *   every node knows its place in it.
 * - waiter slots: heads of intrusive lists, keyed by (node, hash of the waiter's next
 *   block). Distinct keys may share a slot's list, so a lookup filters by node and key:
 *   its cost is the waiters sharing the slot, which the slot count keeps near the number
 *   that really match.
 *
 * The clock advances once per match or insert and stamps every node on the path, so a
 * parent is never older than its children and two leaves never share a stamp. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/prefix_cache.h"

#define NONE UINT32_MAX
#define ROOT 0u
/* Slots for waiter keys: spread 100,000 waiters with distinct next blocks out to about
 * one per slot's list, whatever the pool size. */
#define WAITER_SLOTS_MIN (1u << 18)

struct rs_prefix_node {
	uint64_t hash;			  /* of its block's tokens */
	uint64_t last_access;		  /* the clock at the last match / insert through it */
	struct rs_prefix_waiter *waiters; /* hanging here: match_blocks == depth */
	uint32_t parent;		  /* NONE for the root and free nodes */
	uint32_t block;
	uint32_t depth; /* blocks from the root: the prefix is depth * block_size tokens */
	uint32_t n_children;
	uint32_t direct_locks; /* rs_prefix_cache_lock calls on this node */
	uint32_t locks;	       /* direct_locks + the children's locks */
	uint32_t heap_index;   /* in the evictable heap, or NONE */
	/* The child last found or created under it (a hint, maybe stale: a lookup tries it
	 * first, comparing the tokens, and hashes only when it is not the one). A
	 * conversation's or a shared system prompt's next request takes the same path. */
	uint32_t hint;
	bool in_use;
};

struct rs_prefix_cache {
	struct rs_kv_cache *kv;
	struct rs_prefix_cache_hooks hooks;
	uint32_t block_size;
	uint32_t n_blocks; /* pool size: nodes[1 .. n_blocks] */
	uint32_t n_nodes;  /* in the tree, the root not counted */
	uint32_t n_locked; /* nodes with locks > 0 */
	uint64_t clock;

	struct rs_prefix_node *nodes;
	uint32_t *tokens;    /* n_blocks * block_size */
	uint32_t *free_list; /* stack of free node indices */
	uint32_t n_free;

	uint32_t *children; /* node indices or NONE */
	uint32_t children_mask;

	uint32_t *heap;	     /* node indices */
	uint64_t *heap_keys; /* heap_keys[i] == evict_key(the node heap[i]): sifts read these */
	uint32_t heap_size;

	struct rs_prefix_waiter **waiter_slots;
	uint32_t waiter_slots_mask;
	uint32_t n_waiters;
};

/* --- hashing ----------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* Four tokens per round, in two independent lanes of two tokens (one 64-bit load and
 * multiply each); mix64 spreads the result. A block is hashed at every match, insert and
 * watch of a prompt. Only speed depends on its quality: a lookup always compares the
 * tokens. */
static uint64_t block_hash(const uint32_t *tokens, uint32_t block_size)
{
	uint64_t a = 0x9e3779b97f4a7c15ULL, b = 0xc2b2ae3d27d4eb4fULL;
	uint32_t i = 0;
	for (; i + 4 <= block_size; i += 4) {
		uint64_t w0, w1;
		memcpy(&w0, tokens + i, sizeof(w0));
		memcpy(&w1, tokens + i + 2, sizeof(w1));
		a = (a ^ w0) * 0x9fb21c651e98df25ULL;
		b = (b ^ w1) * 0xd6e8feb86659fd93ULL;
		a ^= a >> 31;
		b ^= b >> 29;
	}
	for (; i < block_size; i++)
		a = (a ^ tokens[i] ^ (a >> 31)) * 0x9fb21c651e98df25ULL;
	return mix64(a ^ (b * 0xff51afd7ed558ccdULL));
}

static uint32_t next_pow2(uint64_t n)
{
	uint64_t p = 1;
	while (p < n)
		p <<= 1;
	return p > (1u << 31) ? 0 : (uint32_t)p;
}

static uint32_t node_index(const struct rs_prefix_cache *cache, const struct rs_prefix_node *node)
{
	return (uint32_t)(node - cache->nodes);
}

static const uint32_t *node_tokens(const struct rs_prefix_cache *cache, uint32_t index)
{
	return cache->tokens + (size_t)(index - 1) * cache->block_size;
}

/* The engines' block size: with it known, memcmp and memcpy compile to a few 64-bit or
 * vector moves instead of library calls. */
#define COMMON_BLOCK_SIZE 16

static bool same_block(const struct rs_prefix_cache *cache, const uint32_t *a, const uint32_t *b)
{
	if (cache->block_size == COMMON_BLOCK_SIZE)
		return memcmp(a, b, sizeof(*a) * COMMON_BLOCK_SIZE) == 0;
	return memcmp(a, b, sizeof(*a) * cache->block_size) == 0;
}

/* A new node's tokens, copied once (from the sequence that computed its block). */
static void copy_block(const struct rs_prefix_cache *cache, uint32_t *to, const uint32_t *from)
{
	if (cache->block_size == COMMON_BLOCK_SIZE)
		memcpy(to, from, sizeof(*to) * COMMON_BLOCK_SIZE);
	else
		memcpy(to, from, sizeof(*to) * cache->block_size);
}

/* --- children ------------------------------------------------------------------------------ */

/* The parent's hinted child when it holds exactly these tokens, else NONE. A free node's
 * parent is NONE, so a hint to a node evicted since fails the parent test; a node reused
 * under the same parent fails the token test. */
static uint32_t child_hinted(const struct rs_prefix_cache *cache, uint32_t parent,
			     const uint32_t *tokens)
{
	uint32_t hint = cache->nodes[parent].hint;
	if (hint == NONE || cache->nodes[hint].parent != parent)
		return NONE;
	const uint32_t *cached = node_tokens(cache, hint);
	return cached[0] == tokens[0] && same_block(cache, cached, tokens) ? hint : NONE;
}

static uint32_t child_slot(const struct rs_prefix_cache *cache, uint32_t parent, uint64_t hash)
{
	return (uint32_t)mix64(hash ^ ((uint64_t)parent * 0x9e3779b97f4a7c15ULL)) &
	       cache->children_mask;
}

/* The child of parent holding exactly these tokens (of hash), or NONE. */
static uint32_t child_find(const struct rs_prefix_cache *cache, uint32_t parent, uint64_t hash,
			   const uint32_t *tokens)
{
	for (uint32_t slot = child_slot(cache, parent, hash);;
	     slot = (slot + 1) & cache->children_mask) {
		uint32_t index = cache->children[slot];
		if (index == NONE)
			return NONE;
		const struct rs_prefix_node *node = &cache->nodes[index];
		if (node->parent == parent && node->hash == hash &&
		    same_block(cache, node_tokens(cache, index), tokens))
			return index;
	}
}

static void child_add(struct rs_prefix_cache *cache, uint32_t index)
{
	const struct rs_prefix_node *node = &cache->nodes[index];
	uint32_t slot = child_slot(cache, node->parent, node->hash);
	while (cache->children[slot] != NONE)
		slot = (slot + 1) & cache->children_mask;
	cache->children[slot] = index;
}

/* Backward-shift deletion: every entry after the hole that may move into it does, so
 * probe chains stay unbroken without tombstones. */
static void child_remove(struct rs_prefix_cache *cache, uint32_t index)
{
	const struct rs_prefix_node *node = &cache->nodes[index];
	uint32_t mask = cache->children_mask;
	uint32_t hole = child_slot(cache, node->parent, node->hash);
	while (cache->children[hole] != index)
		hole = (hole + 1) & mask;
	for (uint32_t slot = (hole + 1) & mask; cache->children[slot] != NONE;
	     slot = (slot + 1) & mask) {
		const struct rs_prefix_node *other = &cache->nodes[cache->children[slot]];
		uint32_t home = child_slot(cache, other->parent, other->hash);
		/* It stays when its home lies cyclically in (hole, slot]. */
		if (((slot - home) & mask) < ((slot - hole) & mask))
			continue;
		cache->children[hole] = cache->children[slot];
		hole = slot;
	}
	cache->children[hole] = NONE;
}

/* --- the evictable heap -------------------------------------------------------------------- */

/* Eviction order: leaves no waiting request would hit first, then least recently used.
 * Evicting a prefix that waiting requests match throws away work they are about to reuse,
 * and moves every one of them up a level. As one number: a waiter bit above the stamp
 * (the clock counts matches and inserts, far below 2^63), one compare of two loads. */
static inline uint64_t evict_key(const struct rs_prefix_node *node)
{
	return (uint64_t)(node->waiters != NULL) << 63 | node->last_access;
}

static bool evict_before(const struct rs_prefix_node *a, const struct rs_prefix_node *b)
{
	return evict_key(a) < evict_key(b);
}

/* Sift with a hole: the moving node is written once, where it stops (an eviction sifts
 * the last leaf down from the root, log2(nodes) levels, each a compare of the two
 * children and of the moving node). */
static void heap_up(struct rs_prefix_cache *cache, uint32_t i)
{
	uint32_t *heap = cache->heap;
	uint64_t *keys = cache->heap_keys;
	uint32_t moving = heap[i];
	uint64_t key = keys[i];
	while (i > 0) {
		uint32_t parent = (i - 1) / 2;
		if (!(key < keys[parent]))
			break;
		heap[i] = heap[parent];
		keys[i] = keys[parent];
		cache->nodes[heap[i]].heap_index = i;
		i = parent;
	}
	heap[i] = moving;
	keys[i] = key;
	cache->nodes[moving].heap_index = i;
}

static void heap_down(struct rs_prefix_cache *cache, uint32_t i)
{
	uint32_t *heap = cache->heap, size = cache->heap_size;
	uint64_t *keys = cache->heap_keys;
	uint32_t moving = heap[i];
	uint64_t key = keys[i];
	for (;;) {
		uint32_t child = 2 * i + 1;
		if (child >= size)
			break;
		if (child + 1 < size && keys[child + 1] < keys[child])
			child++;
		if (!(keys[child] < key))
			break;
		heap[i] = heap[child];
		keys[i] = keys[child];
		cache->nodes[heap[i]].heap_index = i;
		i = child;
	}
	heap[i] = moving;
	keys[i] = key;
	cache->nodes[moving].heap_index = i;
}

/* The node's order changed (stamp or waiters): its key, if it is in the heap. */
static bool heap_rekey(struct rs_prefix_cache *cache, uint32_t index)
{
	const struct rs_prefix_node *node = &cache->nodes[index];
	if (node->heap_index == NONE)
		return false;
	cache->heap_keys[node->heap_index] = evict_key(node);
	return true;
}

static void heap_push(struct rs_prefix_cache *cache, uint32_t index)
{
	uint32_t i = cache->heap_size++;
	cache->heap[i] = index;
	cache->heap_keys[i] = evict_key(&cache->nodes[index]);
	cache->nodes[index].heap_index = i;
	heap_up(cache, i);
}

static void heap_remove(struct rs_prefix_cache *cache, uint32_t index)
{
	uint32_t i = cache->nodes[index].heap_index;
	uint32_t last = --cache->heap_size;
	cache->nodes[index].heap_index = NONE;
	if (i == last)
		return;
	cache->heap[i] = cache->heap[last];
	cache->heap_keys[i] = cache->heap_keys[last];
	cache->nodes[cache->heap[i]].heap_index = i;
	heap_up(cache, i);
	heap_down(cache, cache->nodes[cache->heap[i]].heap_index);
}

static bool evictable(const struct rs_prefix_cache *cache, uint32_t index)
{
	const struct rs_prefix_node *node = &cache->nodes[index];
	return index != ROOT && node->n_children == 0 && node->locks == 0;
}

/* Put the node in the heap or take it out, as its state now says. */
static void heap_update(struct rs_prefix_cache *cache, uint32_t index)
{
	bool in_heap = cache->nodes[index].heap_index != NONE;
	if (evictable(cache, index) && !in_heap)
		heap_push(cache, index);
	else if (!evictable(cache, index) && in_heap)
		heap_remove(cache, index);
}

/* Stamp the node with the current clock; stamps only grow, so it can only sink. */
static void touch(struct rs_prefix_cache *cache, uint32_t index)
{
	struct rs_prefix_node *node = &cache->nodes[index];
	node->last_access = cache->clock;
	/* Sinking needs a child in the heap below it (a heap of one is common). */
	if (heap_rekey(cache, index) && 2 * node->heap_index + 1 < cache->heap_size)
		heap_down(cache, node->heap_index);
}

/* --- waiters ------------------------------------------------------------------------------- */

static struct rs_prefix_waiter **waiter_slot(const struct rs_prefix_cache *cache, uint32_t node,
					     uint64_t key)
{
	uint64_t h = mix64(key ^ ((uint64_t)node * 0xc2b2ae3d27d4eb4fULL));
	return &cache->waiter_slots[h & cache->waiter_slots_mask];
}

/* Hang the waiter at node (match_blocks already its depth): in the node's list, and
 * under (node, its next block) when a next block may still match. */
static void waiter_hang(struct rs_prefix_cache *cache, struct rs_prefix_waiter *waiter,
			uint32_t index)
{
	struct rs_prefix_node *node = &cache->nodes[index];
	bool first = node->waiters == NULL;
	waiter->node = node;
	waiter->node_prev = NULL;
	waiter->node_next = node->waiters;
	if (node->waiters)
		node->waiters->node_prev = waiter;
	node->waiters = waiter;
	if (first && heap_rekey(cache, index))
		heap_down(cache,
			  node->heap_index); /* now evicted after the leaves nobody waits on */

	waiter->key_prev = waiter->key_next = NULL;
	waiter->next_key = 0;
	if (waiter->match_blocks >= waiter->max_blocks)
		return; /* fully matched: only an eviction can move it */
	const uint32_t *next = waiter->tokens + (size_t)waiter->match_blocks * cache->block_size;
	waiter->next_key = block_hash(next, cache->block_size);
	/* At the head: an insert walking this slot from a saved next never meets it again. */
	struct rs_prefix_waiter **slot = waiter_slot(cache, index, waiter->next_key);
	waiter->key_next = *slot;
	if (*slot)
		(*slot)->key_prev = waiter;
	*slot = waiter;
}

static void waiter_unhang(struct rs_prefix_cache *cache, struct rs_prefix_waiter *waiter)
{
	struct rs_prefix_node *node = waiter->node;
	if (waiter->node_prev)
		waiter->node_prev->node_next = waiter->node_next;
	else
		node->waiters = waiter->node_next;
	if (waiter->node_next)
		waiter->node_next->node_prev = waiter->node_prev;

	if (waiter->match_blocks < waiter->max_blocks) {
		if (waiter->key_prev)
			waiter->key_prev->key_next = waiter->key_next;
		else
			*waiter_slot(cache, node_index(cache, node), waiter->next_key) =
			    waiter->key_next;
		if (waiter->key_next)
			waiter->key_next->key_prev = waiter->key_prev;
	}
	if (!node->waiters && heap_rekey(cache, node_index(cache, node)))
		heap_up(cache, node->heap_index); /* nobody waits on it now: evicted sooner */
	waiter->node = NULL;
	waiter->node_next = waiter->node_prev = waiter->key_next = waiter->key_prev = NULL;
}

/* The hook runs with the cache in mid-change: it must not call back into the cache. */
static void waiter_move(struct rs_prefix_cache *cache, struct rs_prefix_waiter *waiter,
			uint32_t index)
{
	uint32_t old_blocks = waiter->match_blocks;
	waiter_unhang(cache, waiter);
	waiter->match_blocks = cache->nodes[index].depth;
	waiter_hang(cache, waiter, index);
	if (cache->hooks.match_changed)
		cache->hooks.match_changed(cache->hooks.ctx, waiter, old_blocks);
}

/* A child was just created under parent: the waiters there whose next block it holds move
 * down to it. Those sharing the slot with another key or a colliding hash stay; the cost
 * is the waiters in the slot, the movers and the few that share it by chance. */
static void waiters_move_down(struct rs_prefix_cache *cache, uint32_t parent, uint32_t child)
{
	const struct rs_prefix_node *node = &cache->nodes[child];
	const struct rs_prefix_node *parent_node = &cache->nodes[parent];
	const uint32_t *tokens = node_tokens(cache, child);
	struct rs_prefix_waiter *waiter = *waiter_slot(cache, parent, node->hash);
	while (waiter) {
		struct rs_prefix_waiter *next = waiter->key_next;
		if (waiter->node == parent_node && waiter->next_key == node->hash &&
		    same_block(cache,
			       waiter->tokens + (size_t)waiter->match_blocks * cache->block_size,
			       tokens))
			waiter_move(cache, waiter, child);
		waiter = next;
	}
}

/* --- the tree ------------------------------------------------------------------------------ */

/* The deepest node matching tokens[0 .. max_blocks * block_size), optionally writing the
 * blocks and stamping the path. */
static uint32_t walk(struct rs_prefix_cache *cache, const uint32_t *tokens, uint32_t max_blocks,
		     uint32_t *blocks, bool stamp)
{
	uint32_t index = ROOT;
	for (uint32_t i = 0; i < max_blocks; i++) {
		const uint32_t *block = tokens + (size_t)i * cache->block_size;
		uint32_t child = child_hinted(cache, index, block);
		if (child == NONE) {
			child =
			    child_find(cache, index, block_hash(block, cache->block_size), block);
			if (child == NONE)
				break;
			if (stamp) /* a use: the next lookup tries it first */
				cache->nodes[index].hint = child;
		}
		index = child;
		if (blocks)
			blocks[i] = cache->nodes[index].block;
		if (stamp)
			touch(cache, index);
	}
	return index;
}

int rs_prefix_cache_create(struct rs_kv_cache *kv, const struct rs_prefix_cache_hooks *hooks,
			   struct rs_prefix_cache **out)
{
	*out = NULL;
	struct rs_prefix_cache *cache = calloc(1, sizeof(*cache));
	if (!cache)
		return -ENOMEM;
	cache->kv = kv;
	if (hooks)
		cache->hooks = *hooks;
	cache->block_size = rs_kv_block_size(kv);
	cache->n_blocks = rs_kv_n_blocks(kv);
	uint32_t n = cache->n_blocks;
	/* At most half full: probe chains stay short. */
	uint32_t children_slots = next_pow2(2 * ((uint64_t)n + 1));
	uint64_t waiter_slots = 2 * ((uint64_t)n + 1);
	waiter_slots = next_pow2(waiter_slots < WAITER_SLOTS_MIN ? WAITER_SLOTS_MIN : waiter_slots);
	if (!children_slots || !waiter_slots)
		goto fail;
	cache->nodes = calloc((size_t)n + 1, sizeof(*cache->nodes));
	cache->tokens = malloc(sizeof(*cache->tokens) * (size_t)n * cache->block_size);
	cache->free_list = malloc(sizeof(*cache->free_list) * n);
	cache->children = malloc(sizeof(*cache->children) * children_slots);
	cache->heap = malloc(sizeof(*cache->heap) * n);
	cache->heap_keys = malloc(sizeof(*cache->heap_keys) * n);
	cache->waiter_slots = calloc(waiter_slots, sizeof(*cache->waiter_slots));
	if (!cache->nodes || !cache->tokens || !cache->free_list || !cache->children ||
	    !cache->heap || !cache->heap_keys || !cache->waiter_slots)
		goto fail;
	memset(cache->children, 0xff, sizeof(*cache->children) * children_slots);
	cache->children_mask = children_slots - 1;
	cache->waiter_slots_mask = (uint32_t)waiter_slots - 1;
	for (uint32_t i = 0; i <= n; i++) {
		cache->nodes[i].parent = NONE;
		cache->nodes[i].heap_index = NONE;
		cache->nodes[i].hint = NONE;
	}
	cache->nodes[ROOT].in_use = true;
	cache->nodes[ROOT].block = NONE;
	/* Node 1 on top: a fresh cache hands out 1, 2, 3, ... */
	for (uint32_t i = 0; i < n; i++)
		cache->free_list[i] = n - i;
	cache->n_free = n;
	*out = cache;
	return 0;
fail:
	cache->kv = NULL; /* nothing cached: destroy must not unref */
	rs_prefix_cache_destroy(cache);
	return -ENOMEM;
}

void rs_prefix_cache_destroy(struct rs_prefix_cache *cache)
{
	if (!cache)
		return;
	if (cache->kv && cache->nodes)
		for (uint32_t i = 1; i <= cache->n_blocks; i++)
			if (cache->nodes[i].in_use)
				rs_kv_block_unref(cache->kv, cache->nodes[i].block);
	free(cache->waiter_slots);
	free(cache->heap);
	free(cache->heap_keys);
	free(cache->children);
	free(cache->free_list);
	free(cache->tokens);
	free(cache->nodes);
	free(cache);
}

uint32_t rs_prefix_cache_match(struct rs_prefix_cache *cache, const uint32_t *tokens,
			       uint32_t max_blocks, uint32_t *blocks,
			       struct rs_prefix_node **deepest)
{
	cache->clock++;
	uint32_t index = walk(cache, tokens, max_blocks, blocks, true);
	*deepest = index == ROOT ? NULL : &cache->nodes[index];
	return cache->nodes[index].depth;
}

uint32_t rs_prefix_cache_match_length(const struct rs_prefix_cache *cache, const uint32_t *tokens,
				      uint32_t max_blocks)
{
	/* walk only writes when asked to stamp or to fill blocks. */
	struct rs_prefix_cache *readonly = (struct rs_prefix_cache *)cache;
	return readonly->nodes[walk(readonly, tokens, max_blocks, NULL, false)].depth;
}

void rs_prefix_cache_lock(struct rs_prefix_cache *cache, struct rs_prefix_node *node)
{
	if (!node)
		return;
	node->direct_locks++;
	for (uint32_t index = node_index(cache, node); index != NONE;
	     index = cache->nodes[index].parent) {
		if (cache->nodes[index].locks++ == 0 && index != ROOT)
			cache->n_locked++;
	}
	/* Only the node itself can be a leaf: its ancestors have a child. */
	heap_update(cache, node_index(cache, node));
}

void rs_prefix_cache_unlock(struct rs_prefix_cache *cache, struct rs_prefix_node *node)
{
	if (!node)
		return;
	node->direct_locks--;
	for (uint32_t index = node_index(cache, node); index != NONE;
	     index = cache->nodes[index].parent) {
		if (--cache->nodes[index].locks == 0 && index != ROOT)
			cache->n_locked--;
	}
	heap_update(cache, node_index(cache, node));
}

struct rs_prefix_node *rs_prefix_cache_insert(struct rs_prefix_cache *cache, const uint32_t *tokens,
					      uint32_t n_blocks, uint32_t *blocks)
{
	return rs_prefix_cache_insert_below(cache, NULL, tokens, n_blocks, blocks);
}

/* A new node under parent for block (of hash), owning a reference to kv_block; the
 * parent's waiters whose next block it is move down to it. NONE when the node pool is
 * exhausted or the block cannot take a reference. Out of line: an insert mostly finds
 * its blocks cached, and this would make every insert save registers. */
static __attribute__((noinline)) uint32_t add_child(struct rs_prefix_cache *cache, uint32_t index,
						    const uint32_t *block, uint64_t hash,
						    uint32_t kv_block)
{
	if (!cache->n_free || rs_kv_block_ref(cache->kv, kv_block) < 0)
		return NONE;
	uint32_t child = cache->free_list[--cache->n_free];
	struct rs_prefix_node *node = &cache->nodes[child];
	copy_block(cache, cache->tokens + (size_t)(child - 1) * cache->block_size, block);
	node->hash = hash;
	node->last_access = cache->clock;
	node->waiters = NULL;
	node->parent = index;
	node->block = kv_block;
	node->depth = cache->nodes[index].depth + 1;
	node->n_children = 0;
	node->direct_locks = node->locks = 0;
	node->heap_index = NONE;
	node->hint = NONE;
	node->in_use = true;
	cache->nodes[index].hint = child;
	child_add(cache, child);
	cache->n_nodes++;
	cache->nodes[index].n_children++;
	heap_update(cache, index);
	heap_push(cache, child);
	/* (Its slot is a random line of a table of 2 MiB: not read when nobody waits.) */
	if (cache->n_waiters)
		waiters_move_down(cache, index, child);
	return child;
}

/* The insert of both entry points; adopt: switch the sequence's table to blocks already
 * cached (a sequence that goes on using its table), else leave its table alone (one that
 * lets go of it at once: the swap would only move references back and forth). */
static struct rs_prefix_node *insert_from(struct rs_prefix_cache *cache,
					  struct rs_prefix_node *start, const uint32_t *tokens,
					  uint32_t n_blocks, uint32_t *blocks, bool adopt)
{
	cache->clock++;
	uint32_t index = ROOT, first = 0;
	if (start && start->depth <= n_blocks) {
		/* Its path is the sequence's first blocks: stamped as a walk down would. */
		index = node_index(cache, start);
		first = start->depth;
		for (uint32_t i = index; i != ROOT; i = cache->nodes[i].parent)
			touch(cache, i);
	}
	for (uint32_t i = first; i < n_blocks; i++) {
		const uint32_t *block = tokens + (size_t)i * cache->block_size;
		uint32_t child = child_hinted(cache, index, block);
		uint64_t hash = 0;
		if (child == NONE) {
			hash = block_hash(block, cache->block_size);
			child = child_find(cache, index, hash, block);
			if (child != NONE)
				cache->nodes[index].hint = child;
		}
		if (child != NONE) {
			uint32_t cached = cache->nodes[child].block;
			if (adopt && blocks[i] != cached) {
				/* The same tokens after the same prefix: the same K/V. */
				rs_kv_block_unref(cache->kv, blocks[i]);
				rs_kv_block_ref(cache->kv, cached);
				blocks[i] = cached;
			}
			index = child;
			touch(cache, index);
			continue;
		}
		child = add_child(cache, index, block, hash, blocks[i]);
		if (child == NONE)
			break; /* the prefix so far is still correct */
		index = child;
	}
	return index == ROOT ? NULL : &cache->nodes[index];
}

struct rs_prefix_node *rs_prefix_cache_insert_below(struct rs_prefix_cache *cache,
						    struct rs_prefix_node *start,
						    const uint32_t *tokens, uint32_t n_blocks,
						    uint32_t *blocks)
{
	return insert_from(cache, start, tokens, n_blocks, blocks, true);
}

void rs_prefix_cache_insert_released(struct rs_prefix_cache *cache, struct rs_prefix_node *start,
				     const uint32_t *tokens, uint32_t n_blocks,
				     const uint32_t *blocks)
{
	/* Not adopting, insert_from never writes the table. */
	insert_from(cache, start, tokens, n_blocks, (uint32_t *)blocks, false);
}

uint32_t rs_prefix_cache_evict(struct rs_prefix_cache *cache, uint32_t blocks)
{
	uint32_t freed = 0;
	while (freed < blocks && cache->heap_size) {
		uint32_t index = cache->heap[0];
		struct rs_prefix_node *node = &cache->nodes[index];
		uint32_t parent = node->parent;
		heap_remove(cache, index);
		child_remove(cache, index);
		/* Its waiters' next block is now this one, under the parent. */
		while (node->waiters)
			waiter_move(cache, node->waiters, parent);
		if (rs_kv_block_unref(cache->kv, node->block) == 0)
			freed++;
		node->in_use = false;
		node->parent = NONE;
		cache->free_list[cache->n_free++] = index;
		cache->n_nodes--;
		cache->nodes[parent].n_children--;
		heap_update(cache, parent);
	}
	return freed;
}

void rs_prefix_cache_watch(struct rs_prefix_cache *cache, struct rs_prefix_waiter *waiter)
{
	/* Waiting is not a use: the path keeps its place in the LRU order. */
	uint32_t index = walk(cache, waiter->tokens, waiter->max_blocks, NULL, false);
	waiter->match_blocks = cache->nodes[index].depth;
	waiter_hang(cache, waiter, index);
	cache->n_waiters++;
}

void rs_prefix_cache_unwatch(struct rs_prefix_cache *cache, struct rs_prefix_waiter *waiter)
{
	if (!waiter->node)
		return;
	waiter_unhang(cache, waiter);
	cache->n_waiters--;
}

uint32_t rs_prefix_cache_nodes(const struct rs_prefix_cache *cache)
{
	return cache->n_nodes;
}

uint32_t rs_prefix_cache_locked_nodes(const struct rs_prefix_cache *cache)
{
	return cache->n_locked;
}

/* --- the check ----------------------------------------------------------------------------- */

#define BROKEN(...)                                                                                \
	do {                                                                                       \
		fprintf(stderr, "prefix cache: " __VA_ARGS__);                                     \
		fprintf(stderr, "\n");                                                             \
		ret = -EUCLEAN;                                                                    \
		goto out;                                                                          \
	} while (0)

/* Does the waiter's prompt spell the path from the root to index? */
static bool waiter_on_path(const struct rs_prefix_cache *cache,
			   const struct rs_prefix_waiter *waiter, uint32_t index)
{
	for (; index != ROOT; index = cache->nodes[index].parent) {
		uint32_t depth = cache->nodes[index].depth;
		const uint32_t *prompt = waiter->tokens + (size_t)(depth - 1) * cache->block_size;
		if (!same_block(cache, prompt, node_tokens(cache, index)))
			return false;
	}
	return true;
}

/* Is other a waiter hanging in the tree and keyed into slot? */
static bool key_neighbour(const struct rs_prefix_cache *cache, const struct rs_prefix_waiter *other,
			  struct rs_prefix_waiter *const *slot)
{
	return other->node && other->match_blocks < other->max_blocks &&
	       waiter_slot(cache, node_index(cache, other->node), other->next_key) == slot;
}

int rs_prefix_cache_check(const struct rs_prefix_cache *cache)
{
	int ret = 0;
	uint32_t n = cache->n_blocks;
	/* Per node: children counted, locks summed over children; per block: nodes owning it. */
	uint32_t *children = calloc((size_t)n + 1, sizeof(*children));
	uint32_t *child_locks = calloc((size_t)n + 1, sizeof(*child_locks));
	uint32_t *owners = calloc(n, sizeof(*owners));
	if (!children || !child_locks || !owners) {
		fprintf(stderr, "prefix cache: check: out of memory\n");
		ret = -EUCLEAN;
		goto out;
	}

	uint32_t in_use = 0, locked = 0, evictable_count = 0, hanging = 0;
	const struct rs_prefix_node *root = &cache->nodes[ROOT];
	if (!root->in_use || root->parent != NONE || root->depth != 0 || root->heap_index != NONE)
		BROKEN("root malformed");
	for (uint32_t i = 1; i <= n; i++) {
		const struct rs_prefix_node *node = &cache->nodes[i];
		if (!node->in_use) {
			if (node->heap_index != NONE)
				BROKEN("free node %u in the heap", i);
			continue;
		}
		in_use++;
		if (node->parent == NONE || node->parent > n || !cache->nodes[node->parent].in_use)
			BROKEN("node %u: parent %u not in the tree", i, node->parent);
		const struct rs_prefix_node *parent = &cache->nodes[node->parent];
		if (node->depth != parent->depth + 1)
			BROKEN("node %u: depth %u under depth %u", i, node->depth, parent->depth);
		if (node->parent != ROOT && node->last_access > parent->last_access)
			BROKEN("node %u used after its parent", i);
		if (node->hash != block_hash(node_tokens(cache, i), cache->block_size))
			BROKEN("node %u: stale hash", i);
		if (child_find(cache, node->parent, node->hash, node_tokens(cache, i)) != i)
			BROKEN("node %u: not found under its parent", i);
		if (node->block >= n)
			BROKEN("node %u: block %u out of range", i, node->block);
		owners[node->block]++;
		children[node->parent]++;
		child_locks[node->parent] += node->locks;
	}
	if (in_use != cache->n_nodes || in_use + cache->n_free != n)
		BROKEN("%u nodes in use, %u counted, %u free of %u", in_use, cache->n_nodes,
		       cache->n_free, n);
	for (uint32_t i = 0; i < cache->n_free; i++)
		if (cache->free_list[i] == ROOT || cache->free_list[i] > n ||
		    cache->nodes[cache->free_list[i]].in_use)
			BROKEN("free list entry %u: node %u", i, cache->free_list[i]);
	for (uint32_t b = 0; b < n; b++)
		if (owners[b] && rs_kv_block_refcount(cache->kv, b) < owners[b])
			BROKEN("block %u: %u references for %u nodes", b,
			       rs_kv_block_refcount(cache->kv, b), owners[b]);

	uint32_t entries = 0;
	for (uint32_t slot = 0; slot <= cache->children_mask; slot++) {
		uint32_t index = cache->children[slot];
		if (index == NONE)
			continue;
		entries++;
		if (index == ROOT || index > n || !cache->nodes[index].in_use)
			BROKEN("children slot %u: node %u not in the tree", slot, index);
	}
	if (entries != in_use)
		BROKEN("%u children entries for %u nodes", entries, in_use);

	for (uint32_t i = 0; i <= n; i++) {
		const struct rs_prefix_node *node = &cache->nodes[i];
		if (!node->in_use)
			continue;
		if (node->n_children != children[i])
			BROKEN("node %u: %u children, %u counted", i, children[i],
			       node->n_children);
		if (node->locks != node->direct_locks + child_locks[i])
			BROKEN("node %u: locks %u != %u direct + %u below", i, node->locks,
			       node->direct_locks, child_locks[i]);
		if (i != ROOT && node->locks)
			locked++;
		bool want = i != ROOT && node->n_children == 0 && node->locks == 0;
		if (want != (node->heap_index != NONE))
			BROKEN("node %u: evictable %d, in heap %d", i, want,
			       node->heap_index != NONE);
		evictable_count += want;
		const struct rs_prefix_waiter *prev = NULL;
		for (const struct rs_prefix_waiter *w = node->waiters; w;
		     prev = w, w = w->node_next) {
			hanging++;
			if (w->node != node || w->node_prev != prev)
				BROKEN("node %u: waiter list links", i);
			if (w->match_blocks != node->depth || w->match_blocks > w->max_blocks)
				BROKEN("node %u: waiter matches %u of %u blocks at depth %u", i,
				       w->match_blocks, w->max_blocks, node->depth);
			if (!waiter_on_path(cache, w, i))
				BROKEN("node %u: a waiter's prompt is not its path", i);
			if (w->match_blocks == w->max_blocks) {
				if (w->key_next || w->key_prev)
					BROKEN("node %u: fully matched waiter keyed", i);
				continue;
			}
			const uint32_t *next =
			    w->tokens + (size_t)w->match_blocks * cache->block_size;
			if (w->next_key != block_hash(next, cache->block_size))
				BROKEN("node %u: waiter's next key stale", i);
			if (child_find(cache, i, w->next_key, next) != NONE)
				BROKEN("node %u: a waiter's next block is cached", i);
			/* Its neighbours, not a scan of every slot: the check runs after each
			 * step in tests, and the slot table is large. */
			struct rs_prefix_waiter *const *slot = waiter_slot(cache, i, w->next_key);
			if (w->key_prev ? !key_neighbour(cache, w->key_prev, slot) ||
					      w->key_prev->key_next != w
					: *slot != w)
				BROKEN("node %u: waiter not linked under its key", i);
			if (w->key_next && (!key_neighbour(cache, w->key_next, slot) ||
					    w->key_next->key_prev != w))
				BROKEN("node %u: waiter's next under its key is stale", i);
		}
	}
	if (locked != cache->n_locked)
		BROKEN("%u locked nodes, %u counted", locked, cache->n_locked);
	if (hanging != cache->n_waiters)
		BROKEN("%u waiters hang, %u watched", hanging, cache->n_waiters);

	if (evictable_count != cache->heap_size)
		BROKEN("%u evictable, heap holds %u", evictable_count, cache->heap_size);
	for (uint32_t i = 0; i < cache->heap_size; i++) {
		uint32_t index = cache->heap[i];
		if (index != ROOT && index <= n &&
		    cache->heap_keys[i] != evict_key(&cache->nodes[index]))
			BROKEN("heap entry %u: key %llx, node %u's order is %llx", i,
			       (unsigned long long)cache->heap_keys[i], index,
			       (unsigned long long)evict_key(&cache->nodes[index]));
		if (index == ROOT || index > n || cache->nodes[index].heap_index != i)
			BROKEN("heap entry %u: node %u", i, index);
		if (i &&
		    evict_before(&cache->nodes[index], &cache->nodes[cache->heap[(i - 1) / 2]]))
			BROKEN("heap entry %u goes before its parent entry", i);
	}

out:
	free(owners);
	free(child_locks);
	free(children);
	return ret;
}
