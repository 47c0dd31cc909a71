/* --cpu N pins the scheduler core: the daemon's main thread may run on CPU N only.
 * A CPU that does not exist is refused at start-up with a message, not ignored. */
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/harness/harness.h"

static void allowed_cpus(pid_t pid, char *out, size_t size)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, (int)pid);
	FILE *f = fopen(path, "r");
	CHECK(f, "open %s", path);
	out[0] = 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Cpus_allowed_list: %63s", out) == 1)
			break;
	fclose(f);
	(void)size;
}

int main(void)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int cpu = cpus >= 2 ? 1 : 0;
	char cpu_arg[16], expected[16], got[64];
	snprintf(cpu_arg, sizeof(cpu_arg), "%d", cpu);
	snprintf(expected, sizeof(expected), "%d", cpu);
	struct test_daemon daemon;
	const char *args[] = {"--cpu", cpu_arg, NULL};
	test_daemon_start(&daemon, args);
	allowed_cpus(daemon.pid, got, sizeof(got));
	CHECK(strcmp(got, expected) == 0, "scheduler core allowed on CPUs %s, expected %s", got, expected);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");

	/* A CPU out of range: the daemon exits 1 before it listens. */
	char binary[512];
	snprintf(binary, sizeof(binary), "%s/ringserved", test_build_dir());
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		execl(binary, binary, "--socket", "/tmp/ringserve-pin-unused.sock", "--cpu", "4095", (char *)NULL);
		_exit(127);
	}
	int status;
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %#x for --cpu 4095", status);
	return T_EXIT_PASS;
}
