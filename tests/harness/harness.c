/* Test harness implementation. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

const char *test_build_dir(void)
{
	const char *dir = getenv("RS_BUILD_DIR");
	return dir && *dir ? dir : "build";
}

/* The daemon a failing test leaves behind is killed at exit. */
static pid_t started_daemon;

static void kill_started_daemon(void)
{
	if (started_daemon > 0)
		kill(started_daemon, SIGKILL);
}

void test_daemon_start(struct test_daemon *daemon, const char *const *extra_args)
{
	strcpy(daemon->dir, "/tmp/ringserve-test-XXXXXX");
	CHECK(mkdtemp(daemon->dir), "mkdtemp: %s", strerror(errno));
	snprintf(daemon->socket_path, sizeof(daemon->socket_path), "%s/sock", daemon->dir);
	int ready[2];
	CHECK(pipe(ready) == 0, "pipe: %s", strerror(errno));
	char binary[512], ready_arg[16];
	snprintf(binary, sizeof(binary), "%s/ringserved", test_build_dir());
	snprintf(ready_arg, sizeof(ready_arg), "%d", ready[1]);
	const char *argv[64] = {binary, "--socket", daemon->socket_path, "--ready-fd", ready_arg};
	int argc = 5;
	for (int i = 0; extra_args && extra_args[i] && argc < 62; i++)
		argv[argc++] = extra_args[i];
	argv[argc] = NULL;
	daemon->pid = fork();
	CHECK(daemon->pid >= 0, "fork: %s", strerror(errno));
	if (daemon->pid == 0) {
		/* Die with the test, even when the runner's timeout kills it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		const char *nofile = getenv("RS_TEST_DAEMON_NOFILE");
		if (nofile) { /* a descriptor limit for the daemon only */
			struct rlimit limit = {.rlim_cur = (rlim_t)atoi(nofile),
					       .rlim_max = (rlim_t)atoi(nofile)};
			setrlimit(RLIMIT_NOFILE, &limit);
		}
		close(ready[0]);
		execv(binary, (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", binary, strerror(errno));
		_exit(127);
	}
	close(ready[1]);
	if (started_daemon == 0)
		atexit(kill_started_daemon);
	started_daemon = daemon->pid;
	char byte;
	ssize_t n;
	do
		n = read(ready[0], &byte, 1);
	while (n < 0 && errno == EINTR);
	close(ready[0]);
	CHECK(n == 1, "ringserved did not come up (see its messages above)");
}

int test_daemon_stop(struct test_daemon *daemon)
{
	int status = 0;
	kill(daemon->pid, SIGTERM);
	CHECK(waitpid(daemon->pid, &status, 0) == daemon->pid, "waitpid: %s", strerror(errno));
	if (started_daemon == daemon->pid)
		started_daemon = 0;
	rmdir(daemon->dir);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void test_daemon_kill(struct test_daemon *daemon)
{
	kill(daemon->pid, SIGKILL);
	waitpid(daemon->pid, NULL, 0);
	if (started_daemon == daemon->pid)
		started_daemon = 0;
	unlink(daemon->socket_path);
	rmdir(daemon->dir);
}

unsigned test_null_token(const unsigned *prompt, unsigned prompt_len, unsigned index,
			 unsigned vocab_size)
{
	/* FNV-1a, 64-bit, each token id XORed in whole. */
	uint64_t hash = 14695981039346656037ull;
	for (unsigned i = 0; i < prompt_len; i++)
		hash = (hash ^ prompt[i]) * 1099511628211ull;
	/* splitmix64 of hash + index (Vigna's reference constants). */
	uint64_t z = hash + index + 0x9E3779B97F4A7C15ull;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	z ^= z >> 31;
	return (unsigned)(z % vocab_size);
}

void test_null_request(struct rs_connection *conn, const unsigned *prompt, unsigned prompt_len,
		       unsigned max_new, unsigned vocab_size)
{
	struct rs_generate_params params = {
	    .prompt = prompt, .prompt_len = prompt_len, .max_new_tokens = max_new};
	int request = rs_submit(conn, &params);
	CHECK(request >= 0, "submit: %s", strerror(-request));
	struct rs_completion done;
	int n = rs_wait(conn, &done, 1, 5000);
	CHECK(n == 1, "wait: %d (%s)", n, n < 0 ? strerror(-n) : "");
	CHECK(done.request == request, "completion for %d, expected %d", done.request, request);
	CHECK(done.status == 0 && done.output_len == max_new, "status %d, %u tokens", done.status,
	      done.output_len);
	const uint32_t *tokens;
	CHECK(rs_output(conn, request, &tokens) == (int)max_new, "output count");
	for (unsigned i = 0; i < max_new; i++) {
		unsigned expected = test_null_token(prompt, prompt_len, i, vocab_size);
		CHECK(tokens[i] == expected, "token %u: %u, expected %u", i, tokens[i], expected);
	}
	CHECK(rs_release(conn, request) == 0, "release");
}

/* schedstat's first field is the nanoseconds a thread ran: exact, where the ticks of
 * /proc/PID/stat are sampled, and a timer-driven wakeup is charged a whole tick whenever
 * it runs across one. Summed over the threads alive now, or (loop_only) over the main
 * thread, where the daemon's event loop runs, and io_uring's workers ("iou-..."). */
static double cpu_seconds(pid_t pid, bool loop_only)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *dir = opendir(path);
	CHECK(dir, "open %s", path);
	unsigned long long total_ns = 0;
	for (struct dirent *entry; (entry = readdir(dir));) {
		if (entry->d_name[0] == '.')
			continue;
		char file[352], comm[32] = "";
		if (loop_only && atoi(entry->d_name) != (int)pid) {
			snprintf(file, sizeof(file), "%s/%s/comm", path, entry->d_name);
			FILE *f = fopen(file, "r");
			if (!f)
				continue;
			bool worker = fgets(comm, sizeof(comm), f) && strncmp(comm, "iou-", 4) == 0;
			fclose(f);
			if (!worker)
				continue;
		}
		snprintf(file, sizeof(file), "%s/%s/schedstat", path, entry->d_name);
		FILE *f = fopen(file, "r");
		if (!f)
			continue; /* the thread exited meanwhile */
		unsigned long long ns = 0;
		if (fscanf(f, "%llu", &ns) == 1)
			total_ns += ns;
		fclose(f);
	}
	closedir(dir);
	return (double)total_ns / 1e9;
}

double test_process_cpu_seconds(pid_t pid)
{
	return cpu_seconds(pid, false);
}

double test_event_loop_cpu_seconds(pid_t pid)
{
	return cpu_seconds(pid, true);
}

int test_run_command(const char *command, char *out, size_t size)
{
	FILE *pipe = popen(command, "r");
	CHECK(pipe, "popen %s: %s", command, strerror(errno));
	size_t n = fread(out, 1, size - 1, pipe);
	out[n] = '\0';
	int status = pclose(pipe);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

uint32_t test_parse_ids(const char *text, uint32_t *ids, uint32_t max)
{
	uint32_t n = 0;
	char *end;
	while (n < max) {
		unsigned long v = strtoul(text, &end, 10);
		if (end == text)
			break;
		ids[n++] = (uint32_t)v;
		text = end;
	}
	return n;
}
