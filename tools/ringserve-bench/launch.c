/* Starting the ringserved that sits next to ringserve-bench, for the benchmarks that go
 * through the daemon. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tools/ringserve-bench/bench.h"

pid_t bench_start_daemon(const char *socket_path, const char *const *extra_args)
{
	char self[512], daemon_path[600], ready_arg[16];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return -1;
	self[n] = 0;
	*strrchr(self, '/') = 0;
	snprintf(daemon_path, sizeof(daemon_path), "%s/ringserved", self);
	int ready[2];
	if (pipe(ready) < 0)
		return -1;
	snprintf(ready_arg, sizeof(ready_arg), "%d", ready[1]);
	const char *argv[32] = {daemon_path, "--socket", socket_path, "--ready-fd", ready_arg};
	int argc = 5;
	for (int i = 0; extra_args[i] && argc < 31; i++)
		argv[argc++] = extra_args[i];
	argv[argc] = NULL;
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the benchmark */
		close(ready[0]);
		execv(daemon_path, (char *const *)argv);
		fprintf(stderr, "exec %s: failed\n", daemon_path);
		_exit(127);
	}
	close(ready[1]);
	/* The daemon writes one byte once it listens; EOF without it means it failed. */
	char byte;
	ssize_t got = pid > 0 ? read(ready[0], &byte, 1) : -1;
	close(ready[0]);
	if (got != 1) {
		if (pid > 0)
			waitpid(pid, NULL, 0);
		return -1;
	}
	return pid;
}
