/* The scheduling core's command-line options (options.h): one table of names, usage
 * lines and rules that ringserved and ringserve-sim both parse with. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/options.h"

/* In the order of the table below. */
enum {
	SCHED_POLICY,
	SCHED_QUANTUM,
	SCHED_W_PROMPT,
	SCHED_W_OUTPUT,
	SCHED_NO_PREFIX_CACHE,
	SCHED_PLANNER,
	SCHED_BINS,
	SCHED_BIN_BATCH,
	SCHED_BIN_MODE,
	SCHED_BIN_DEADLINE,
	SCHED_BIN_BOUNDARIES,
	SCHED_DISPATCH,
	SCHED_LOAD_THRESHOLD,
	SCHED_CACHE_THRESHOLD,
	SCHED_DISPATCH_QUANTUM,
	SCHED_DISPATCH_LOOKAHEAD,
	SCHED_DISPATCH_AT,
};

static const struct sched_option {
	const char *name;
	int has_arg;
	enum rs_sched_usage_part part;
	const char *usage; /* its lines of --help */
} sched_options[RS_SCHED_OPTION_COUNT] = {
    [SCHED_POLICY] = {"policy", required_argument, RS_SCHED_USAGE_BATCHING,
		      "  --policy NAME         admission: dlpm, vtc, lpm or fcfs (dlpm; "
		      "docs/scheduling.md)\n"},
    [SCHED_QUANTUM] = {"quantum", required_argument, RS_SCHED_USAGE_BATCHING,
		       "  --quantum N           dlpm: weighted tokens a backlogged tenant gets per "
		       "round (2048)\n"},
    [SCHED_W_PROMPT] = {"w-prompt", required_argument, RS_SCHED_USAGE_BATCHING,
			"  --w-prompt X          charge per (dlpm: uncached) prompt token (1)\n"},
    [SCHED_W_OUTPUT] = {"w-output", required_argument, RS_SCHED_USAGE_BATCHING,
			"  --w-output X          charge per generated token (2)\n"},
    [SCHED_NO_PREFIX_CACHE] = {"no-prefix-cache", no_argument, RS_SCHED_USAGE_BATCHING,
			       "  --no-prefix-cache     never share cached prompt prefixes "
			       "between requests\n"},
    [SCHED_PLANNER] = {"planner", required_argument, RS_SCHED_USAGE_BATCHING,
		       "  --planner NAME        batches: continuous or multibin (continuous)\n"},
    [SCHED_BINS] = {"bins", required_argument, RS_SCHED_USAGE_BATCHING,
		    "  --bins K              multibin: bins of predicted output length (4)\n"},
    [SCHED_BIN_BATCH] = {"bin-batch", required_argument, RS_SCHED_USAGE_BATCHING,
			 "  --bin-batch N         multibin: requests a batch gathers "
			 "(--max-batch)\n"},
    [SCHED_BIN_MODE] = {"bin-mode", required_argument, RS_SCHED_USAGE_BATCHING,
			"  --bin-mode MODE       multibin: static (a batch runs to its last "
			"member) or\n"
			"                        continuous (freed seats refilled from the bin) "
			"(static)\n"},
    [SCHED_BIN_DEADLINE] = {"bin-deadline-ms", required_argument, RS_SCHED_USAGE_BATCHING,
			    "  --bin-deadline-ms N   multibin: a bin waits at most N ms to fill "
			    "(1000)\n"},
    [SCHED_BIN_BOUNDARIES] = {"bin-boundaries", required_argument, RS_SCHED_USAGE_BATCHING,
			      "  --bin-boundaries L,.. multibin: fixed upper lengths of bins "
			      "0..K-2 (default: the\n"
			      "                        observed lengths' quantiles)\n"},
    [SCHED_DISPATCH] = {"dispatch", required_argument, RS_SCHED_USAGE_DISPATCH,
			"  --dispatch NAME       which worker a request runs on: d2lpm, "
			"round-robin,\n"
			"                        least-loaded, cache-aware (d2lpm; "
			"docs/scheduling.md)\n"},
    [SCHED_LOAD_THRESHOLD] = {"load-threshold", required_argument, RS_SCHED_USAGE_DISPATCH,
			      "  --load-threshold N    d2lpm: leave the best-cached worker when "
			      "its load exceeds\n"
			      "                        the least-loaded's by more than N requests "
			      "(max batch / 2)\n"},
    [SCHED_CACHE_THRESHOLD] = {"cache-threshold", required_argument, RS_SCHED_USAGE_DISPATCH,
			       "  --cache-threshold X   cache-aware: cached share of the prompt "
			       "to follow (0.5)\n"},
    [SCHED_DISPATCH_QUANTUM] = {"dispatch-quantum", required_argument, RS_SCHED_USAGE_DISPATCH,
				"  --dispatch-quantum N  d2lpm: weighted tokens per tenant per "
				"worker a round (65536)\n"},
    [SCHED_DISPATCH_LOOKAHEAD] = {"dispatch-lookahead", required_argument, RS_SCHED_USAGE_DISPATCH,
				  "  --dispatch-lookahead N d2lpm: waiting requests per tenant a "
				  "free seat matches (4)\n"},
    [SCHED_DISPATCH_AT] = {"dispatch-at", required_argument, RS_SCHED_USAGE_DISPATCH,
			   "  --dispatch-at WHEN    baselines: admission (among workers with a "
			   "free seat, by\n"
			   "                        their caches) or arrival (SGLang's router) "
			   "(admission)\n"},
};

void rs_sched_options_merge(const struct option *own, struct option *table)
{
	size_t n = 0;
	for (; own[n].name; n++)
		table[n] = own[n];
	for (int i = 0; i < RS_SCHED_OPTION_COUNT; i++)
		table[n++] = (struct option){sched_options[i].name, sched_options[i].has_arg, NULL,
					     RS_SCHED_OPTION_FIRST + i};
	table[n] = (struct option){0};
}

const char *rs_option_name(const struct option *table, int opt)
{
	for (; table->name; table++)
		if (table->val == opt)
			return table->name;
	return "?";
}

bool rs_sched_option_is(int opt)
{
	return opt >= RS_SCHED_OPTION_FIRST && opt < RS_SCHED_OPTION_FIRST + RS_SCHED_OPTION_COUNT;
}

void rs_sched_options_usage(FILE *out, enum rs_sched_usage_part part)
{
	for (int i = 0; i < RS_SCHED_OPTION_COUNT; i++)
		if (sched_options[i].part == part)
			fputs(sched_options[i].usage, out);
}

int rs_parse_unsigned(const char *text, int base, unsigned long min, unsigned long max,
		      unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long value = strtoul(text, &end, base);
	if (errno || end == text || *end || value < min || value > max || text[0] == '-')
		return -EINVAL;
	*out = value;
	return 0;
}

int rs_parse_positive(const char *text, double *out)
{
	char *end;
	errno = 0;
	double value = strtod(text, &end);
	if (errno || end == text || *end || !(value > 0) || !isfinite(value))
		return -EINVAL;
	*out = value;
	return 0;
}

/* "L1,L2,..." ascending lengths >= 1, at most RS_MULTIBIN_MAX_BINS - 1 of them. */
static int parse_boundaries(const char *text, uint32_t *out)
{
	uint32_t n = 0;
	/* a second --bin-boundaries replaces the first, shorter or not */
	memset(out, 0, (RS_MULTIBIN_MAX_BINS - 1) * sizeof(*out));
	for (const char *p = text; *p;) {
		char *end;
		errno = 0;
		unsigned long v = strtoul(p, &end, 10);
		if (errno || end == p || v == 0 || v > UINT32_MAX ||
		    n == RS_MULTIBIN_MAX_BINS - 1 || (n && v < out[n - 1]) || (*end && *end != ','))
			return -EINVAL;
		out[n++] = (uint32_t)v;
		p = *end ? end + 1 : end;
	}
	return n ? 0 : -EINVAL;
}

/* text is one of the two words: *second tells which. */
static int parse_choice(const char *text, const char *first, const char *second_word, bool *second)
{
	*second = strcmp(text, second_word) == 0;
	return *second || strcmp(text, first) == 0 ? 0 : -EINVAL;
}

/* A whole number in [min, max] into *out; what it takes into why on failure. */
static int parse_count(const char *text, unsigned long min, unsigned long max, uint32_t *out,
		       char *why, size_t why_size)
{
	unsigned long value;
	if (rs_parse_unsigned(text, 10, min, max, &value)) {
		snprintf(why, why_size, "a whole number in [%lu, %lu]", min, max);
		return -EINVAL;
	}
	*out = (uint32_t)value;
	return 0;
}

static int parse_weight(const char *text, double *out, char *why, size_t why_size)
{
	if (rs_parse_positive(text, out)) {
		snprintf(why, why_size, "a positive number");
		return -EINVAL;
	}
	return 0;
}

int rs_sched_option_parse(const struct rs_sched_options *o, int opt, const char *arg, char *why,
			  size_t why_size)
{
	const char *expected = NULL; /* for the options that take words */
	int ret = 0;
	unsigned long value;
	switch (opt - RS_SCHED_OPTION_FIRST) {
	case SCHED_POLICY:
		ret = rs_admission_policy_parse(arg, &o->admission->policy);
		expected = "fcfs, lpm, vtc or dlpm";
		break;
	case SCHED_QUANTUM:
		return parse_weight(arg, &o->admission->quantum, why, why_size);
	case SCHED_W_PROMPT:
		return parse_weight(arg, &o->admission->w_prompt, why, why_size);
	case SCHED_W_OUTPUT:
		return parse_weight(arg, &o->admission->w_output, why, why_size);
	case SCHED_NO_PREFIX_CACHE:
		*o->prefix_cache = false;
		return 0;
	case SCHED_PLANNER:
		ret = parse_choice(arg, "continuous", "multibin", o->multibin);
		expected = "continuous or multibin";
		break;
	case SCHED_BINS:
		return parse_count(arg, 1, RS_MULTIBIN_MAX_BINS, &o->multibin_params->bins, why,
				   why_size);
	case SCHED_BIN_BATCH:
		return parse_count(arg, 1, 65536, &o->multibin_params->batch, why, why_size);
	case SCHED_BIN_MODE:
		ret = parse_choice(arg, "static", "continuous", &o->multibin_params->continuous);
		expected = "static or continuous";
		break;
	case SCHED_BIN_DEADLINE:
		if (rs_parse_unsigned(arg, 10, 1, 1u << 30, &value)) {
			snprintf(why, why_size, "a whole number of ms in [1, %u]", 1u << 30);
			return -EINVAL;
		}
		o->multibin_params->deadline_ns = (uint64_t)value * 1000000;
		return 0;
	case SCHED_BIN_BOUNDARIES:
		ret = parse_boundaries(arg, o->multibin_params->boundaries);
		expected = "ascending lengths L1,L2,... (at most 31)";
		break;
	case SCHED_DISPATCH:
		ret = rs_dispatch_policy_parse(arg, &o->dispatch->policy);
		expected = "d2lpm, round-robin, least-loaded or cache-aware";
		break;
	case SCHED_LOAD_THRESHOLD:
		return parse_count(arg, 1, 1u << 20, &o->dispatch->load_threshold, why, why_size);
	case SCHED_CACHE_THRESHOLD: {
		double share;
		if (rs_parse_positive(arg, &share) || share > 1) {
			snprintf(why, why_size, "a share in (0, 1]");
			return -EINVAL;
		}
		o->dispatch->cache_threshold = share;
		return 0;
	}
	case SCHED_DISPATCH_QUANTUM:
		return parse_weight(arg, &o->dispatch->quantum, why, why_size);
	case SCHED_DISPATCH_LOOKAHEAD:
		return parse_count(arg, 1, 1u << 20, &o->dispatch->lookahead, why, why_size);
	case SCHED_DISPATCH_AT:
		ret = parse_choice(arg, "admission", "arrival", &o->dispatch->at_arrival);
		expected = "admission or arrival";
		break;
	default:
		snprintf(why, why_size, "not a scheduling option");
		return -EINVAL;
	}
	if (ret) {
		snprintf(why, why_size, "%s", expected);
		return -EINVAL;
	}
	return 0;
}

int rs_sched_options_check(const struct rs_sched_options *options, char *why, size_t why_size)
{
	const struct rs_multibin_params *p = options->multibin_params;
	uint32_t given = 0;
	while (given < RS_MULTIBIN_MAX_BINS - 1 && p->boundaries[given])
		given++;
	if (given && given != p->bins - 1) {
		snprintf(why, why_size,
			 "--bin-boundaries gives %u boundaries; --bins %u takes %u (bins - 1)",
			 given, p->bins, p->bins - 1);
		return -EINVAL;
	}
	return 0;
}
