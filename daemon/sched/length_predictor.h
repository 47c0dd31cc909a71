/* Output-length prediction for the multi-bin planner (planner_multibin.c).
 *
 * A request's predicted output length is its client's hint (output_len_hint) when given;
 * else the mean output length of the recent completed requests that shared its prompt's
 * start with the same tenant (a system prompt, a tool's template): the longest of its
 * first 32, 16 and 8 tokens that earlier requests shared, so that a template shorter than
 * 32 tokens followed by each request's own text is still recognised; else its tenant's;
 * else everyone's; else 0 (unknown). Means adapt: each is an average over the last ~64
 * observations (an exponential one once it has that many). The distribution of observed
 * lengths is kept in a histogram (exact to 256 tokens, 16 buckets per doubling above), from
 * which bin boundaries are read as quantiles.
 *
 * Fixed size, no allocation after creation; O(1) per prediction and observation (the
 * quantiles walk the histogram's 448 buckets). */
#ifndef RS_DAEMON_SCHED_LENGTH_PREDICTOR_H
#define RS_DAEMON_SCHED_LENGTH_PREDICTOR_H

#include <stdint.h>

#include "daemon/sched/request.h"

struct rs_length_predictor;

/* The key of a prompt's start: its first tokens (up to 32) with its tenant (the longest
 * of the starts the predictor keys on). */
uint64_t rs_length_prefix_key(const struct rs_request *request);

/* Returns 0, -ENOMEM. max_tenants bounds tenant ids. */
int rs_length_predictor_create(uint32_t max_tenants, struct rs_length_predictor **out);
void rs_length_predictor_destroy(struct rs_length_predictor *p);

/* The predicted output length of a request (its tenant set), never above its
 * max_new_tokens; 0 when nothing is known. */
uint32_t rs_length_predict(const struct rs_length_predictor *p, const struct rs_request *request);

/* A request ended after `length` output tokens. */
void rs_length_observe(struct rs_length_predictor *p, const struct rs_request *request,
		       uint32_t length);

/* The smallest observed length L with at least a q share of the observations <= L (a
 * bucket's upper end above 256); 0 before any observation. */
uint32_t rs_length_quantile(const struct rs_length_predictor *p, double q);
uint64_t rs_length_observations(const struct rs_length_predictor *p);

#endif
