/* The scheduling core's command-line options, shared by ringserved and ringserve-sim:
 * the admission policy and its weights, the prefix cache, the batch planner and its bins,
 * and the dispatch policy (--workers stays each program's: it counts their engines). One
 * name, one rule and one field for each, so the simulator takes exactly what the daemon
 * takes (docs/simulator.md: "as ringserved's").
 *
 *   struct option table[N_OWN + RS_SCHED_OPTION_COUNT];
 *   rs_sched_options_merge(own_options, table);     getopt_long over table
 *   default: if (rs_sched_option_is(opt)) ret = rs_sched_option_parse(&sched, opt, optarg,
 *                                                                     why, sizeof(why));
 */
#ifndef RS_DAEMON_SCHED_OPTIONS_H
#define RS_DAEMON_SCHED_OPTIONS_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "daemon/sched/admission.h"
#include "daemon/sched/dispatch.h"
#include "daemon/sched/sched.h"

/* Where the options write: the fields of a program's own configuration, set to its
 * defaults before parsing. */
struct rs_sched_options {
	struct rs_admission_params *admission; /* --policy, --quantum, --w-prompt, --w-output */
	bool *prefix_cache;		       /* --no-prefix-cache clears it */
	bool *multibin;			       /* --planner multibin */
	struct rs_multibin_params *multibin_params; /* --bins, --bin-batch, --bin-mode, ... */
	struct rs_dispatch_params *dispatch; /* --dispatch, --load-threshold, ... --dispatch-at */
};

/* getopt_long values of the shared options: RS_SCHED_OPTION_FIRST + i, clear of a
 * program's own (which count from 256). */
#define RS_SCHED_OPTION_FIRST 0x1000
#define RS_SCHED_OPTION_COUNT 17

/* Copy own (terminated by a zero entry) then the shared options and a terminator into
 * table, which has room for own's entries + RS_SCHED_OPTION_COUNT + 1. */
void rs_sched_options_merge(const struct option *own, struct option *table);

/* The long name of getopt_long's value opt in table, or "?". */
const char *rs_option_name(const struct option *table, int opt);

/* Whether getopt_long's value opt is a shared option. */
bool rs_sched_option_is(int opt);

/* Set what option opt (a getopt_long value, rs_sched_option_is) says, from its argument
 * arg (NULL for a flag). Returns 0, or -EINVAL with what the option takes written to
 * why[0 .. why_size) ("fcfs, lpm, vtc or dlpm", "a whole number in [1, 32]"). */
int rs_sched_option_parse(const struct rs_sched_options *options, int opt, const char *arg,
			  char *why, size_t why_size);

/* The rules between options, once all are parsed (--bin-boundaries gives bins - 1
 * lengths). Returns 0, or -EINVAL with the reason in why[0 .. why_size). */
int rs_sched_options_check(const struct rs_sched_options *options, char *why, size_t why_size);

/* The usage lines of the shared options, in two parts: admission and planner
 * (--policy .. --bin-boundaries), then dispatch (--dispatch .. --dispatch-at), which a
 * program's own --workers line goes between. */
enum rs_sched_usage_part { RS_SCHED_USAGE_BATCHING, RS_SCHED_USAGE_DISPATCH };
void rs_sched_options_usage(FILE *out, enum rs_sched_usage_part part);

/* The number parsers both programs' options use. An unsigned decimal (base 10) or octal
 * (8) number in [min, max]; a positive, finite decimal number. Return 0 or -EINVAL. */
int rs_parse_unsigned(const char *text, int base, unsigned long min, unsigned long max,
		      unsigned long *out);
int rs_parse_positive(const char *text, double *out);

#endif
