/* ringserve-bench SUBCOMMAND [--json FILE] [options]
 *   ipc      the shared-memory data path (bench_ipc.c)
 *   engine   the model engine (bench_engine.c)
 *   serve    the daemon serving a model, against the engine run directly (bench_serve.c)
 *   tenants  several tenants with shared prefixes under each admission policy (bench_tenants.c)
 *   sched    the scheduling core alone: admission decisions with many waiting (bench_sched.c)
 *   batching multi-bin batching on the real CPU engine (bench_batching.c)
 *   openai   the OpenAI-compatible bridge's added latency against the C client (bench_openai.c)
 *   simcheck ringserve-sim's prediction against ringserved on the same workload (bench_simcheck.c)
 *   all      every subcommand, one JSON object keyed by subcommand */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/ringserve-bench/bench.h"

struct subcommand {
	const char *name;
	int (*run)(int argc, char **argv, FILE *json);
};

static const struct subcommand subcommands[] = {
    {"ipc", bench_ipc},	      {"engine", bench_engine},	    {"serve", bench_serve},
    {"sched", bench_sched},   {"tenants", bench_tenants},   {"batching", bench_batching},
    {"openai", bench_openai}, {"simcheck", bench_simcheck},
};
#define N_SUBCOMMANDS (sizeof(subcommands) / sizeof(subcommands[0]))

static void usage(void)
{
	fprintf(
	    stderr,
	    "usage: ringserve-bench ipc|engine|serve|sched|tenants|batching|openai|simcheck|all "
	    "[--json FILE] [options]\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage();
		return 2;
	}
	const char *which = argv[1];
	const char *json_path = NULL;
	/* Strip --json FILE; the rest goes to the subcommand. */
	int sub_argc = 0;
	char **sub_argv = calloc((size_t)argc + 1, sizeof(char *));
	if (!sub_argv)
		return 1;
	sub_argv[sub_argc++] = argv[1];
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
			json_path = argv[++i];
		else
			sub_argv[sub_argc++] = argv[i];
	}
	FILE *json = json_path ? fopen(json_path, "w") : fopen("/dev/null", "w");
	if (!json) {
		perror(json_path);
		return 1;
	}
	int failed = 0, ran = 0;
	fprintf(json, "{");
	for (size_t i = 0; i < N_SUBCOMMANDS; i++) {
		if (strcmp(which, "all") != 0 && strcmp(which, subcommands[i].name) != 0)
			continue;
		fprintf(json, "%s\"%s\": ", ran ? ", " : "", subcommands[i].name);
		fflush(json);
		if (subcommands[i].run(sub_argc, sub_argv, json) != 0)
			failed = 1;
		ran++;
	}
	fprintf(json, "}\n");
	fclose(json);
	free(sub_argv);
	if (!ran) {
		usage();
		return 2;
	}
	if (json_path)
		printf("JSON written to %s\n", json_path);
	return failed;
}
