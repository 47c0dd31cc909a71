/* ringserve-bench: one program, one subcommand per benchmark family. Each subcommand
 * prints a human-readable table on stdout and writes its figures as one JSON object
 * (the value only, no trailing newline) to json. */
#ifndef RS_TOOLS_BENCH_H
#define RS_TOOLS_BENCH_H

#include <stdio.h>
#include <sys/types.h>

/* The IPC data path on the null engine, against a cache-line ping-pong and a Unix-socket RPC. */
int bench_ipc(int argc, char **argv, FILE *json);

/* The model engine: prefill and decode tokens/s at several batch sizes. */
int bench_engine(int argc, char **argv, FILE *json);

/* End to end through the daemon with a model, against the engine run directly. */
int bench_serve(int argc, char **argv, FILE *json);

/* The scheduling core alone: admission decision times with 10,000 and 100,000 waiting. */
int bench_sched(int argc, char **argv, FILE *json);

/* Several tenants with long shared prefixes under each admission policy: throughput,
 * cache hits, per-tenant latency, service differences, against the engine directly. */
int bench_tenants(int argc, char **argv, FILE *json);

/* Multi-bin batching on the real CPU engine: k = 1, 2, 4, 8 static bins, continuous
 * lanes, plain continuous batching, and predicted instead of hinted lengths. */
int bench_batching(int argc, char **argv, FILE *json);

/* The OpenAI-compatible bridge (ringserve-openai) against the C client on one daemon: added
 * latency per request and per streamed token. */
int bench_openai(int argc, char **argv, FILE *json);

/* The simulator (tools/ringserve-sim) against ringserved on the same workload, per
 * admission policy: throughput, latency, TTFT and cache hits both ways. */
int bench_simcheck(int argc, char **argv, FILE *json);

/* Start the ringserved next to this program on socket_path with the extra arguments
 * (NULL-terminated) and return its pid once it listens, or -1. It dies with us. */
pid_t bench_start_daemon(const char *socket_path, const char *const *extra_args);

#endif
