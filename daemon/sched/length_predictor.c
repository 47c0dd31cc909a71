/* Output-length prediction (length_predictor.h). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "daemon/sched/length_predictor.h"
#include "daemon/sched/tenant.h"

enum {
	EXACT = 256,	   /* lengths 1..256 have a bucket each */
	PER_DOUBLING = 16, /* then 16 buckets per doubling, */
	DOUBLINGS = 12,	   /* up to 256 * 2^12 = 1M tokens */
	BUCKETS = EXACT + PER_DOUBLING * DOUBLINGS,
	PREFIXES = 4096, /* prompt starts remembered (direct-mapped by key) */
	KEY_TOKENS = 32, /* the longest start a key covers */
	KEY_LEVELS = 3,	 /* starts of 32, 16 and 8 tokens (KEY_TOKENS >> level) */
	WINDOW = 64,	 /* a mean covers about this many recent observations */
};

struct mean {
	double value;
	uint32_t n; /* observations, up to WINDOW */
};

struct prefix_entry {
	uint64_t key;
	struct mean mean;
};

struct rs_length_predictor {
	uint32_t max_tenants;
	struct mean global;
	struct mean *tenants;
	struct prefix_entry prefixes[PREFIXES];
	uint64_t histogram[BUCKETS];
	uint64_t observations;
};

/* FNV-1a over the tenant id and the first tokens, read once for every level; a level's
 * key also hashes its length, so that the levels of one prompt never share an entry. A
 * prompt shorter than a level's start gives that level the key of the whole prompt. */
static void prefix_keys(const struct rs_request *request, uint64_t keys[KEY_LEVELS])
{
	uint64_t h = 0xcbf29ce484222325ull ^ (request->tenant ? request->tenant->id : 0);
	uint32_t n = request->prompt_len < KEY_TOKENS ? request->prompt_len : KEY_TOKENS;
	for (uint32_t i = 0, level = KEY_LEVELS; level-- > 0;) {
		uint32_t end = KEY_TOKENS >> level;
		for (; i < end && i < n; i++) {
			h ^= request->tokens[i];
			h *= 0x100000001b3ull;
		}
		keys[level] = ((h ^ end) * 0x100000001b3ull) | 1; /* 0 marks a free entry */
	}
}

uint64_t rs_length_prefix_key(const struct rs_request *request)
{
	uint64_t keys[KEY_LEVELS];
	prefix_keys(request, keys);
	return keys[0];
}

int rs_length_predictor_create(uint32_t max_tenants, struct rs_length_predictor **out)
{
	struct rs_length_predictor *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->max_tenants = max_tenants;
	p->tenants = calloc(max_tenants ? max_tenants : 1, sizeof(*p->tenants));
	if (!p->tenants) {
		free(p);
		return -ENOMEM;
	}
	*out = p;
	return 0;
}

void rs_length_predictor_destroy(struct rs_length_predictor *p)
{
	if (!p)
		return;
	free(p->tenants);
	free(p);
}

static void mean_add(struct mean *m, double v)
{
	if (m->n < WINDOW)
		m->n++;
	m->value += (v - m->value) / m->n;
}

static uint32_t bucket_of(uint32_t length)
{
	if (length <= EXACT)
		return length ? length - 1 : 0;
	uint32_t b = EXACT + (uint32_t)(PER_DOUBLING * log2((double)length / EXACT));
	return b < BUCKETS ? b : BUCKETS - 1;
}

/* The largest length in bucket b. */
static uint32_t bucket_top(uint32_t b)
{
	if (b < EXACT)
		return b + 1;
	return (uint32_t)ceil(EXACT * exp2((double)(b - EXACT + 1) / PER_DOUBLING)) - 1;
}

static const struct mean *tenant_mean(const struct rs_length_predictor *p,
				      const struct rs_request *request)
{
	if (!request->tenant || request->tenant->id >= p->max_tenants)
		return NULL;
	return &p->tenants[request->tenant->id];
}

uint32_t rs_length_predict(const struct rs_length_predictor *p, const struct rs_request *request)
{
	double v = 0;
	if (request->output_len_hint) {
		v = request->output_len_hint;
	} else {
		/* The longest start with observations: a template shorter than KEY_TOKENS,
		 * followed by each request's own text, still has its 8- or 16-token start in
		 * common with its other requests. */
		uint64_t keys[KEY_LEVELS];
		prefix_keys(request, keys);
		const struct mean *t = tenant_mean(p, request);
		for (uint32_t level = 0; level < KEY_LEVELS && v == 0; level++) {
			const struct prefix_entry *e = &p->prefixes[keys[level] % PREFIXES];
			if (e->key == keys[level] && e->mean.n)
				v = e->mean.value;
		}
		if (v == 0 && t && t->n)
			v = t->value;
		else if (v == 0 && p->global.n)
			v = p->global.value;
	}
	uint32_t predicted = (uint32_t)(v + 0.5);
	if (v > 0 && predicted == 0)
		predicted = 1;
	return predicted < request->max_new_tokens ? predicted : request->max_new_tokens;
}

void rs_length_observe(struct rs_length_predictor *p, const struct rs_request *request,
		       uint32_t length)
{
	uint64_t keys[KEY_LEVELS];
	prefix_keys(request, keys);
	for (uint32_t level = 0; level < KEY_LEVELS; level++) {
		struct prefix_entry *e = &p->prefixes[keys[level] % PREFIXES];
		if (e->key != keys[level])
			*e = (struct prefix_entry){.key = keys[level]};
		mean_add(&e->mean, length);
	}
	if (request->tenant && request->tenant->id < p->max_tenants)
		mean_add(&p->tenants[request->tenant->id], length);
	mean_add(&p->global, length);
	p->histogram[bucket_of(length)]++;
	p->observations++;
}

uint32_t rs_length_quantile(const struct rs_length_predictor *p, double q)
{
	if (!p->observations)
		return 0;
	double want = q * p->observations;
	uint64_t seen = 0;
	for (uint32_t b = 0; b < BUCKETS; b++) {
		seen += p->histogram[b];
		if (seen && seen >= want)
			return bucket_top(b);
	}
	return bucket_top(BUCKETS - 1);
}

uint64_t rs_length_observations(const struct rs_length_predictor *p)
{
	return p->observations;
}
