#include <stdio.h>

#include "tools/ringserve-bench/bench.h"

int bench_ipc(int argc, char **argv, FILE *json)
{
	fprintf(stderr, "bench ipc: not built yet\n");
	fprintf(json, "null");
	return 1;
}
