#include <stdio.h>

#include "tools/ringserve-bench/bench.h"

int bench_engine(int argc, char **argv, FILE *json)
{
	fprintf(stderr, "bench engine: not built yet\n");
	fprintf(json, "null");
	return 1;
}
