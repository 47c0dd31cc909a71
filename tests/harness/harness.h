/* Test harness: start and stop a daemon, check conditions, fail loudly.
 * Exit codes as in liburing: 0 pass, 1 fail, 77 skip. */
#ifndef RS_TESTS_HARNESS_H
#define RS_TESTS_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#define T_EXIT_PASS 0
#define T_EXIT_FAIL 1
#define T_EXIT_SKIP 77

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);   \
			fprintf(stderr, __VA_ARGS__);                                              \
			fprintf(stderr, "\n");                                                     \
			exit(T_EXIT_FAIL);                                                         \
		}                                                                                  \
	} while (0)

struct test_daemon {
	pid_t pid;
	char dir[64];
	char socket_path[128];
};

/* The build folder holding ringserved and the tools ($RS_BUILD_DIR, default "build"). */
const char *test_build_dir(void);

/* Run a shell command; what it writes to stdout (at most size - 1 bytes) into out,
 * NUL-terminated. Returns its exit status (128 when it did not exit). Exits on failure
 * to start it. */
int test_run_command(const char *command, char *out, size_t size);

/* Whitespace-separated decimal ids from text into ids (at most max); returns the count. */
uint32_t test_parse_ids(const char *text, uint32_t *ids, uint32_t max);

/* Start ringserved on a fresh socket with extra arguments (NULL-terminated list), and
 * return once it accepts connections (it signals through --ready-fd). Exits on failure.
 * $RS_TEST_DAEMON_NOFILE, when set, is the daemon's descriptor limit. */
void test_daemon_start(struct test_daemon *daemon, const char *const *extra_args);

/* SIGTERM the daemon and wait for it; returns its exit status (or 128 + signal). */
int test_daemon_stop(struct test_daemon *daemon);

/* SIGKILL the daemon and reap it. */
void test_daemon_kill(struct test_daemon *daemon);

/* The null engine's token, computed independently of daemon/engine_null.c from the
 * definition in docs/shm-abi.md. */
unsigned test_null_token(const unsigned *prompt, unsigned prompt_len, unsigned index,
			 unsigned vocab_size);

struct rs_connection;

/* Run one null-engine request (the only one in flight on conn) to completion and check
 * every token against test_null_token. Exits on any difference. */
void test_null_request(struct rs_connection *conn, const unsigned *prompt, unsigned prompt_len,
		       unsigned max_new, unsigned vocab_size);

/* CPU time of a process's threads in seconds, from /proc/PID/task/TID/schedstat. */
double test_process_cpu_seconds(pid_t pid);
/* CPU time of the process's event loop: its main thread and io_uring's workers, not the
 * threads libraries start (OpenBLAS's spin for a while after the process starts). */
double test_event_loop_cpu_seconds(pid_t pid);

#endif
