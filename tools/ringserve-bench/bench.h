/* ringserve-bench: one program, one subcommand per benchmark family. Each subcommand
 * prints a human-readable table on stdout and writes its figures as one JSON object
 * (the value only, no trailing newline) to json. */
#ifndef RS_TOOLS_BENCH_H
#define RS_TOOLS_BENCH_H

#include <stdio.h>

/* The IPC data path on the null engine, against a cache-line ping-pong and a Unix-socket RPC. */
int bench_ipc(int argc, char **argv, FILE *json);

/* The model engine: prefill and decode tokens/s at several batch sizes. */
int bench_engine(int argc, char **argv, FILE *json);

/* End to end through the daemon with a model, against the engine run directly. */
int bench_serve(int argc, char **argv, FILE *json);

#endif
