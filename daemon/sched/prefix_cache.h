/* The radix prefix cache: which token prefixes already have their K/V in the paged cache.
 *
 * A tree over token ids, block-aligned with the paged KV cache (kernels/engine/kv_cache.h):
 * every node but the root stands for one full block of block_size tokens and owns one
 * reference to the KV block that holds their K/V. A node's path from the root spells a
 * prefix; children are found by (parent, the block's tokens) in a hash table, and the
 * tokens are compared exactly, so a hash collision never shares the wrong K/V.
 *
 * Only full blocks are cached, so a sequence never writes into a cached block: the engine
 * requires every block a step writes to be private (reference count 1), and a sequence
 * that reads a cached block holds its own reference to it (count >= 2).
 *
 * Locking: a running request locks the deepest node it uses; a lock pins that node and
 * all its ancestors. Eviction takes unlocked leaves, least recently used first (a match
 * or an insert touches every node on its path); a parent whose last child goes becomes a
 * leaf in its turn.
 *
 * Waiters: the cache keeps each waiting request's match length current as blocks are
 * inserted and evicted, so that admission policies can pick the longest cached prefix
 * among 100,000 waiting requests without matching them again. A waiter hangs at the
 * deepest node it matches, indexed by (that node, the hash of its next block); an insert
 * moves down exactly the waiters whose next block it caches, and an eviction moves the
 * evicted node's waiters up to its parent. Each move calls hooks->match_changed. The work
 * is proportional to the waiters that move, never to all of them.
 *
 * No allocation after creation: nodes come from a pool of kv n_blocks entries (a node
 * owns a distinct block, so there can be no more nodes than blocks), the hash tables are
 * sized for them at creation, and waiters are intrusive (request.h).
 *
 * Not thread-safe: the scheduling core owns it. */
#ifndef RS_DAEMON_SCHED_PREFIX_CACHE_H
#define RS_DAEMON_SCHED_PREFIX_CACHE_H

#include <stdint.h>

#include "daemon/sched/request.h"
#include "kernels/engine/kv_cache.h"

struct rs_prefix_cache;
struct rs_prefix_node;

struct rs_prefix_cache_hooks {
	/* A waiter's match_blocks changed (old_blocks before). May be NULL. */
	void (*match_changed)(void *ctx, struct rs_prefix_waiter *waiter, uint32_t old_blocks);
	void *ctx;
};

/* Create a cache over the allocator kv (block size from it). The clock of the LRU order is
 * a counter the cache advances itself. Returns 0, -ENOMEM. */
int rs_prefix_cache_create(struct rs_kv_cache *kv, const struct rs_prefix_cache_hooks *hooks,
			   struct rs_prefix_cache **out);

/* Drop every cached block's reference and free the cache. Waiters must be gone and no
 * node locked. NULL is allowed. */
void rs_prefix_cache_destroy(struct rs_prefix_cache *cache);

/* The longest cached prefix of tokens[0 .. max_blocks * block_size): writes the ids of
 * the matching blocks to blocks[0 .. n) (no reference taken), sets *deepest to the last
 * matching node (NULL when n is 0) and returns n. Touches the path (LRU). */
uint32_t rs_prefix_cache_match(struct rs_prefix_cache *cache, const uint32_t *tokens,
			       uint32_t max_blocks, uint32_t *blocks,
			       struct rs_prefix_node **deepest);

/* The same length without any side effect (no LRU touch, no block ids): for a scheduler
 * comparing candidates it may not take. */
uint32_t rs_prefix_cache_match_length(const struct rs_prefix_cache *cache, const uint32_t *tokens,
				      uint32_t max_blocks);

/* Pin node and its ancestors against eviction / undo one such pin. NULL: no-op. */
void rs_prefix_cache_lock(struct rs_prefix_cache *cache, struct rs_prefix_node *node);
void rs_prefix_cache_unlock(struct rs_prefix_cache *cache, struct rs_prefix_node *node);

/* Cache the first n_blocks full blocks of a sequence: tokens[0 .. n_blocks * block_size)
 * whose K/V is in blocks[0 .. n_blocks) (the sequence's table, one reference each held by
 * the sequence). For each block not cached yet, a node is created and takes its own
 * reference to the sequence's block. For each block already cached (by this sequence's
 * match or by another sequence that computed the same prefix), the sequence's table
 * entry is switched to the cached block: its reference to its own block is dropped and a
 * reference to the cached block taken instead (the contents are identical: same tokens,
 * same prefix). Waiters whose next block was just cached move down.
 * Returns the deepest node of the prefix (NULL when n_blocks is 0). When the node pool is
 * exhausted it stops early and returns the deepest node cached so far (a shorter prefix
 * is still correct). The caller locks what it keeps using. */
struct rs_prefix_node *rs_prefix_cache_insert(struct rs_prefix_cache *cache, const uint32_t *tokens,
					      uint32_t n_blocks, uint32_t *blocks);

/* rs_prefix_cache_insert, starting below `start` instead of at the root: start (locked by
 * the caller, or NULL for the root) is a node whose path spells the sequence's first
 * start->depth blocks, and blocks[0 .. start->depth) already are that path's blocks (as
 * after the sequence's own match or insert of them). Those blocks are not hashed or
 * looked up again, only stamped; the rest is inserted as rs_prefix_cache_insert does.
 * A start deeper than n_blocks is ignored (the insert starts at the root). */
struct rs_prefix_node *rs_prefix_cache_insert_below(struct rs_prefix_cache *cache,
						    struct rs_prefix_node *start,
						    const uint32_t *tokens, uint32_t n_blocks,
						    uint32_t *blocks);

/* rs_prefix_cache_insert_below for a sequence that drops its table right after (a request
 * that ends): the same nodes and references in the cache, but its table is left as it
 * is (the cached blocks are not swapped in: the table's references go back at once). */
void rs_prefix_cache_insert_released(struct rs_prefix_cache *cache, struct rs_prefix_node *start,
				     const uint32_t *tokens, uint32_t n_blocks,
				     const uint32_t *blocks);

/* Evict unlocked leaves, least recently used first, until `blocks` KV blocks have gone
 * back to the allocator or nothing is left to evict (a node whose block some sequence
 * still references is dropped from the tree but frees no block). Waiters at an evicted
 * node move up. Returns the number of KV blocks freed. */
uint32_t rs_prefix_cache_evict(struct rs_prefix_cache *cache, uint32_t blocks);

/* Start tracking a waiter (tokens and max_blocks set by the caller): sets match_blocks
 * without calling the hook. Stop tracking it (before it is admitted or dropped). */
void rs_prefix_cache_watch(struct rs_prefix_cache *cache, struct rs_prefix_waiter *waiter);
void rs_prefix_cache_unwatch(struct rs_prefix_cache *cache, struct rs_prefix_waiter *waiter);

/* Nodes in the tree (= blocks the cache references) and how many of them are locked. */
uint32_t rs_prefix_cache_nodes(const struct rs_prefix_cache *cache);
uint32_t rs_prefix_cache_locked_nodes(const struct rs_prefix_cache *cache);

/* Check every invariant (tree shape, hash tables, LRU heap, lock counts, waiter indexes,
 * reference counts against kv); for tests. Returns 0 or -EUCLEAN, with the broken
 * invariant printed on stderr. */
int rs_prefix_cache_check(const struct rs_prefix_cache *cache);

#endif
