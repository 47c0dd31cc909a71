/* The output-length predictor (daemon/sched/length_predictor.c) on prompts whose shared
 * start (a tool's template) is shorter than the 32 tokens its longest key covers, followed
 * by each request's own tokens: bench batching's workload, where every 32-token key is
 * unique. Expected values are the means of the lengths observed, by construction:
 *   - a new request of a template seen before is predicted its template's mean (the 8-token
 *     start), not the tenant's mean over all templates;
 *   - a longer shared start wins over a shorter one: requests sharing their first 32 tokens
 *     are predicted from those, even where their first 8 are another template's;
 *   - a start never seen falls back to the tenant's mean; a hint is taken as given;
 *   - never above max_new_tokens. */
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/length_predictor.h"
#include "daemon/sched/tenant.h"
#include "tests/harness/harness.h"

enum { TEMPLATE = 8, PROMPT = 12, LONG_PROMPT = 40, MAX_NEW = 500 };

static uint32_t next_unique = 20000; /* each request's own tokens */

/* A request of tenant t whose prompt is `start` (start_len tokens) then its own tokens. */
static struct rs_request *make(struct rs_tenant *t, const uint32_t *start, uint32_t start_len,
			       uint32_t prompt_len)
{
	struct rs_request *r = calloc(1, sizeof(*r));
	CHECK(r != NULL, "calloc");
	r->tokens = calloc(prompt_len + MAX_NEW, sizeof(uint32_t));
	CHECK(r->tokens != NULL, "calloc");
	for (uint32_t i = 0; i < prompt_len; i++)
		r->tokens[i] = i < start_len ? start[i] : next_unique++;
	r->prompt_len = prompt_len;
	r->max_new_tokens = MAX_NEW;
	r->tenant = t;
	return r;
}

static void drop(struct rs_request *r)
{
	free(r->tokens);
	free(r);
}

static void observe(struct rs_length_predictor *p, struct rs_tenant *t, const uint32_t *start,
		    uint32_t start_len, uint32_t prompt_len, uint32_t length)
{
	struct rs_request *r = make(t, start, start_len, prompt_len);
	rs_length_observe(p, r, length);
	drop(r);
}

static uint32_t predict(struct rs_length_predictor *p, struct rs_tenant *t, const uint32_t *start,
			uint32_t start_len, uint32_t prompt_len, uint32_t hint)
{
	struct rs_request *r = make(t, start, start_len, prompt_len);
	r->output_len_hint = hint;
	uint32_t v = rs_length_predict(p, r);
	drop(r);
	return v;
}

int main(void)
{
	struct rs_length_predictor *p;
	CHECK(rs_length_predictor_create(4, &p) == 0, "create");
	struct rs_tenant tenant = {.id = 1, .in_use = true, .weight = 1};
	uint32_t a[LONG_PROMPT], b[TEMPLATE], c[TEMPLATE], shared[LONG_PROMPT];
	for (uint32_t i = 0; i < TEMPLATE; i++)
		a[i] = 100 + i, b[i] = 200 + i, c[i] = 300 + i;
	/* shared: template a's 8 tokens, then 24 more every request of it has. */
	for (uint32_t i = 0; i < LONG_PROMPT; i++)
		shared[i] = i < TEMPLATE ? a[i] : 400 + i;

	CHECK(predict(p, &tenant, a, TEMPLATE, PROMPT, 0) == 0, "nothing known: 0");
	for (int i = 0; i < 10; i++) {
		observe(p, &tenant, a, TEMPLATE, PROMPT, 20);
		observe(p, &tenant, b, TEMPLATE, PROMPT, 180);
	}
	uint32_t got_a = predict(p, &tenant, a, TEMPLATE, PROMPT, 0),
		 got_b = predict(p, &tenant, b, TEMPLATE, PROMPT, 0);
	printf("template a: %u (observed 20), b: %u (observed 180)\n", got_a, got_b);
	CHECK(got_a == 20 && got_b == 180, "template means: a %u (want 20), b %u (want 180)", got_a,
	      got_b);
	/* Never seen: the tenant's mean, (10 x 20 + 10 x 180) / 20. */
	uint32_t got_c = predict(p, &tenant, c, TEMPLATE, PROMPT, 0);
	CHECK(got_c == 100, "unknown start: %u, the tenant's mean is 100", got_c);
	/* A prompt shorter than 8 tokens has only itself as a start: the tenant's mean too. */
	uint32_t got_short = predict(p, &tenant, a, 4, 6, 0);
	CHECK(got_short == 100, "a 6-token prompt: %u, want the tenant's 100", got_short);

	/* Five requests sharing 32 tokens (starting with template a's 8) with length 60. */
	for (int i = 0; i < 5; i++)
		observe(p, &tenant, shared, 32, LONG_PROMPT, 60);
	uint32_t got_shared = predict(p, &tenant, shared, 32, LONG_PROMPT, 0);
	CHECK(got_shared == 60, "a shared 32-token start: %u, want its 60", got_shared);
	/* Template a alone now: its 8-token start's mean, (10 x 20 + 5 x 60) / 15 = 33.3. */
	got_a = predict(p, &tenant, a, TEMPLATE, PROMPT, 0);
	CHECK(got_a == 33, "template a after the longer ones: %u, want 33", got_a);

	/* Another tenant never matches this one's starts: its own mean, none, so everyone's:
	 * (10 x 20 + 10 x 180 + 5 x 60) / 25 = 92. */
	struct rs_tenant other = {.id = 2, .in_use = true, .weight = 1};
	uint32_t got_other = predict(p, &other, b, TEMPLATE, PROMPT, 0);
	CHECK(got_other == 92, "another tenant: %u, want everyone's mean 92", got_other);
	CHECK(predict(p, &tenant, a, TEMPLATE, PROMPT, 77) == 77, "a hint is taken as given");
	CHECK(predict(p, &tenant, b, TEMPLATE, PROMPT, 900) == MAX_NEW, "capped at max_new_tokens");
	rs_length_predictor_destroy(p);
	return T_EXIT_PASS;
}
