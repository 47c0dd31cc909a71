/* The scheduling core's options (daemon/sched/options.h), shared by ringserved and
 * ringserve-sim:
 *   - each option sets its field to what docs/running.md says the value means, through
 *     getopt_long over a merged table as both programs parse;
 *   - bad values are refused, with what the option takes;
 *   - both programs refuse the same bad values (exit 2, naming the option) and list every
 *     shared option in their help. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sched/options.h"
#include "tests/harness/harness.h"

/* What a program's configuration holds, that the options point at. */
struct settings {
	struct rs_admission_params admission;
	bool prefix_cache, multibin;
	struct rs_multibin_params multibin_params;
	struct rs_dispatch_params dispatch;
};

/* Parse argv (NULL-terminated, after the program name) as a program whose own options
 * are "own-flag" and "own-value": 0, or the first error. */
static int parse(struct settings *settings, const char *const *args, char *why, size_t size)
{
	const struct rs_sched_options o = {.admission = &settings->admission,
					   .prefix_cache = &settings->prefix_cache,
					   .multibin = &settings->multibin,
					   .multibin_params = &settings->multibin_params,
					   .dispatch = &settings->dispatch};
	static const struct option own[] = {{"own-flag", no_argument, 0, 256},
					    {"own-value", required_argument, 0, 257},
					    {0, 0, 0, 0}};
	struct option table[3 + RS_SCHED_OPTION_COUNT];
	rs_sched_options_merge(own, table);
	char *argv[64] = {"prog"};
	int argc = 1;
	for (; args[argc - 1]; argc++)
		argv[argc] = (char *)args[argc - 1];
	optind = 1;
	opterr = 0;
	int opt, ret = 0;
	while (!ret && (opt = getopt_long(argc, argv, "", table, NULL)) != -1) {
		if (opt == 256 || opt == 257)
			continue;
		CHECK(rs_sched_option_is(opt), "getopt_long gave %d", opt);
		ret = rs_sched_option_parse(&o, opt, optarg, why, size);
	}
	return ret;
}

static void check_values(void)
{
	struct settings o = {.prefix_cache = true};
	char why[128] = "";
	const char *args[] = {"--policy",
			      "vtc",
			      "--quantum",
			      "512",
			      "--own-flag",
			      "--w-prompt",
			      "0.5",
			      "--w-output",
			      "3",
			      "--no-prefix-cache",
			      "--planner",
			      "multibin",
			      "--bins",
			      "3",
			      "--own-value",
			      "x",
			      "--bin-batch",
			      "4",
			      "--bin-mode",
			      "continuous",
			      "--bin-deadline-ms",
			      "5",
			      "--bin-boundaries",
			      "8,8,64",
			      "--dispatch",
			      "cache-aware",
			      "--load-threshold",
			      "7",
			      "--cache-threshold",
			      "1",
			      "--dispatch-quantum",
			      "1024",
			      "--dispatch-lookahead",
			      "2",
			      "--dispatch-at",
			      "arrival",
			      NULL};
	CHECK(parse(&o, args, why, sizeof(why)) == 0, "good values refused: %s", why);
	CHECK(o.admission.policy == RS_ADMISSION_VTC && o.admission.quantum == 512 &&
		  o.admission.w_prompt == 0.5 && o.admission.w_output == 3,
	      "admission");
	CHECK(!o.prefix_cache && o.multibin, "flags");
	CHECK(o.multibin_params.bins == 3 && o.multibin_params.batch == 4 &&
		  o.multibin_params.continuous && o.multibin_params.deadline_ns == 5000000ull,
	      "multibin");
	CHECK(o.multibin_params.boundaries[0] == 8 && o.multibin_params.boundaries[1] == 8 &&
		  o.multibin_params.boundaries[2] == 64 && o.multibin_params.boundaries[3] == 0,
	      "boundaries");
	CHECK(o.dispatch.policy == RS_DISPATCH_CACHE_AWARE && o.dispatch.load_threshold == 7 &&
		  o.dispatch.cache_threshold == 1 && o.dispatch.quantum == 1024 &&
		  o.dispatch.lookahead == 2 && o.dispatch.at_arrival,
	      "dispatch");
	/* A second --bin-boundaries replaces the first, also where it is shorter. */
	const char *again[] = {"--bin-boundaries", "5", NULL};
	CHECK(parse(&o, again, why, sizeof(why)) == 0 && o.multibin_params.boundaries[0] == 5 &&
		  o.multibin_params.boundaries[1] == 0 && o.multibin_params.boundaries[2] == 0,
	      "boundaries given twice");
	/* Between options: k bins take k - 1 boundaries, or none (learned). */
	const struct rs_sched_options view = {.multibin_params = &o.multibin_params};
	o.multibin_params.bins = 2;
	CHECK(rs_sched_options_check(&view, why, sizeof(why)) == 0, "2 bins, 1 boundary: %s", why);
	o.multibin_params.bins = 4;
	CHECK(rs_sched_options_check(&view, why, sizeof(why)) == -EINVAL && strstr(why, "bins - 1"),
	      "4 bins, 1 boundary accepted");
	memset(o.multibin_params.boundaries, 0, sizeof(o.multibin_params.boundaries));
	CHECK(rs_sched_options_check(&view, why, sizeof(why)) == 0, "no boundaries: %s", why);
	/* The other words of the two-word options. */
	const char *back[] = {"--planner",     "continuous", "--bin-mode", "static",
			      "--dispatch-at", "admission",  NULL};
	CHECK(parse(&o, back, why, sizeof(why)) == 0 && !o.multibin &&
		  !o.multibin_params.continuous && !o.dispatch.at_arrival,
	      "second words");
}

/* Values refused, each with the reason's first word. */
static const struct {
	const char *option, *value, *why;
} bad_values[] = {
    {"--policy", "lottery", "fcfs"},
    {"--quantum", "0", "a positive"},
    {"--quantum", "-5", "a positive"},
    {"--quantum", "inf", "a positive"},
    {"--w-prompt", "0", "a positive"}, /* 0 would silently be the core's default */
    {"--w-output", "nan", "a positive"},
    {"--planner", "greedy", "continuous"},
    {"--bins", "0", "a whole"},
    {"--bins", "33", "a whole"}, /* RS_MULTIBIN_MAX_BINS is 32 */
    {"--bins", "2.5", "a whole"},
    {"--bin-batch", "65537", "a whole"},
    {"--bin-mode", "dynamic", "static"},
    {"--bin-deadline-ms", "0", "a whole"},
    {"--bin-boundaries", "8,4", "ascending"},
    {"--bin-boundaries", "0", "ascending"},
    {"--bin-boundaries", "", "ascending"},
    {"--dispatch", "random", "d2lpm"},
    {"--load-threshold", "-1", "a whole"},
    {"--cache-threshold", "0", "a share"},
    {"--cache-threshold", "1.5", "a share"},
    {"--dispatch-quantum", "0", "a positive"},
    {"--dispatch-lookahead", "0", "a whole"},
    {"--dispatch-at", "now", "admission"},
};
#define N_BAD (sizeof(bad_values) / sizeof(bad_values[0]))

static void check_bad_values(void)
{
	for (size_t i = 0; i < N_BAD; i++) {
		struct settings o = {0};
		char why[128] = "";
		const char *args[] = {bad_values[i].option, bad_values[i].value, NULL};
		int ret = parse(&o, args, why, sizeof(why));
		CHECK(ret == -EINVAL, "%s '%s' accepted", args[0], args[1]);
		CHECK(strncmp(why, bad_values[i].why, strlen(bad_values[i].why)) == 0,
		      "%s '%s': told \"%s\"", args[0], args[1], why);
	}
	/* 31 boundaries fill 32 bins; one more is refused. */
	char many[32 * 4] = "";
	for (int i = 1; i <= 31; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), "%s%d", i > 1 ? "," : "",
			 i);
	struct settings o = {0};
	char why[128];
	const char *args[] = {"--bin-boundaries", many, NULL};
	CHECK(parse(&o, args, why, sizeof(why)) == 0 && o.multibin_params.boundaries[30] == 31,
	      "31 boundaries: %s", why);
	strcat(many, ",32");
	CHECK(parse(&o, args, why, sizeof(why)) == -EINVAL, "32 boundaries accepted");
}

/* Both programs refuse each bad value with status 2 and a message naming the option,
 * before doing anything (the sim would otherwise run, the daemon listen). */
static void check_programs(void)
{
	char command[1024], out[8192];
	for (size_t i = 0; i < N_BAD; i++) {
		snprintf(command, sizeof(command),
			 "%s/ringserved --socket /nonexistent/x.sock %s '%s' 2>&1",
			 test_build_dir(), bad_values[i].option, bad_values[i].value);
		int status = test_run_command(command, out, sizeof(out));
		char want[128];
		snprintf(want, sizeof(want), "ringserved: bad value for %s: %s\n",
			 bad_values[i].option, bad_values[i].value);
		CHECK(status == 2 && strstr(out, want), "ringserved %s '%s': %d %s",
		      bad_values[i].option, bad_values[i].value, status, out);
		snprintf(command, sizeof(command), "%s/ringserve-sim run --requests 1 %s '%s' 2>&1",
			 test_build_dir(), bad_values[i].option, bad_values[i].value);
		status = test_run_command(command, out, sizeof(out));
		snprintf(want, sizeof(want), "ringserve-sim: %s: expected %s", bad_values[i].option,
			 bad_values[i].why);
		CHECK(status == 2 && strstr(out, want), "ringserve-sim %s '%s': %d %s",
		      bad_values[i].option, bad_values[i].value, status, out);
	}
	/* Both refuse boundaries that do not fit the bins, saying why. */
	const char *programs[] = {"ringserved --socket /nonexistent/x.sock", "ringserve-sim run"};
	for (int i = 0; i < 2; i++) {
		snprintf(command, sizeof(command), "%s/%s --bins 4 --bin-boundaries 10,20 2>&1",
			 test_build_dir(), programs[i]);
		int status = test_run_command(command, out, sizeof(out));
		CHECK(status == 2 && strstr(out, "--bin-boundaries gives 2 boundaries; --bins 4"),
		      "%s: %d %s", command, status, out);
	}
	/* The sim runs with every shared option given a good value. */
	snprintf(command, sizeof(command),
		 "%s/ringserve-sim run --requests 40 --policy vtc --quantum 512 --w-prompt 0.5 "
		 "--w-output 3 --no-prefix-cache --planner multibin --bins 2 --bin-batch 4 "
		 "--bin-mode continuous --bin-deadline-ms 5 --bin-boundaries 64 --workers 2 "
		 "--dispatch least-loaded --load-threshold 7 --cache-threshold 1 "
		 "--dispatch-quantum 1024 --dispatch-lookahead 2 --dispatch-at arrival 2>&1",
		 test_build_dir());
	CHECK(test_run_command(command, out, sizeof(out)) == 0 && strstr(out, "prefix cache off") &&
		  strstr(out, "| least-loaded |"),
	      "ringserve-sim with every shared option:\n%s", out);

	/* Both helps list each shared option, with the same line. */
	static char daemon_help[16384], sim_help[16384];
	snprintf(command, sizeof(command), "%s/ringserved --help", test_build_dir());
	CHECK(test_run_command(command, daemon_help, sizeof(daemon_help)) == 0,
	      "ringserved --help");
	snprintf(command, sizeof(command), "%s/ringserve-sim 2>&1", test_build_dir());
	CHECK(test_run_command(command, sim_help, sizeof(sim_help)) == 2, "ringserve-sim usage");
	const char *names[] = {"policy",
			       "quantum",
			       "w-prompt",
			       "w-output",
			       "no-prefix-cache",
			       "planner",
			       "bins",
			       "bin-batch",
			       "bin-mode",
			       "bin-deadline-ms",
			       "bin-boundaries",
			       "dispatch",
			       "load-threshold",
			       "cache-threshold",
			       "dispatch-quantum",
			       "dispatch-lookahead",
			       "dispatch-at"};
	CHECK(sizeof(names) / sizeof(names[0]) == RS_SCHED_OPTION_COUNT, "names");
	for (size_t i = 0; i < RS_SCHED_OPTION_COUNT; i++) {
		char tag[64];
		snprintf(tag, sizeof(tag), "\n  --%s ", names[i]);
		const char *in_daemon = strstr(daemon_help, tag), *in_sim = strstr(sim_help, tag);
		CHECK(in_daemon && in_sim, "--%s missing from a help", names[i]);
		size_t line = strcspn(in_daemon + 1, "\n");
		CHECK(strncmp(in_daemon, in_sim, line + 1) == 0, "--%s's help lines differ",
		      names[i]);
	}
}

int main(void)
{
	check_values();
	check_bad_values();
	check_programs();
	return T_EXIT_PASS;
}
