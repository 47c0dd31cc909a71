/* The systemd units (tools/systemd/) as systemd reads them: `systemd-analyze verify`
 * finds nothing to say about ringserved.service and ringserved.socket, and the
 * service's hardening keeps its exposure at or below 2.0 (`systemd-analyze security`,
 * 0 = locked down, 10 = none; the units as written score 1.2). Skips without
 * systemd-analyze. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/harness/harness.h"

/* Run a shell command in dir; returns its exit status, its output in out. */
static int run(const char *dir, const char *command, char *out, size_t size)
{
	char line[5 * PATH_MAX];
	snprintf(line, sizeof(line), "cd '%s' && %s 2>&1", dir, command);
	FILE *pipe = popen(line, "r");
	CHECK(pipe, "popen: %s", strerror(errno));
	size_t n = fread(out, 1, size - 1, pipe);
	out[n] = '\0';
	int status = pclose(pipe);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

int main(void)
{
	char out[16384];
	if (system("command -v systemd-analyze >/dev/null 2>&1") != 0) {
		printf("systemd-analyze not installed\n");
		return T_EXIT_SKIP;
	}
	char dir[] = "/tmp/ringserve-units-XXXXXX", bindir[PATH_MAX], command[4 * PATH_MAX];
	CHECK(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	CHECK(realpath(test_build_dir(), bindir), "realpath %s", test_build_dir());
	char source[PATH_MAX];
	CHECK(getcwd(source, sizeof(source)), "getcwd");
	/* ExecStart must name an existing program: the one just built. */
	snprintf(
	    command, sizeof(command),
	    "sed 's|@BINDIR@|%s|' '%s/tools/systemd/ringserved.service.in' > ringserved.service"
	    " && cp '%s/tools/systemd/ringserved.socket' .",
	    bindir, source, source);
	CHECK(run(dir, command, out, sizeof(out)) == 0, "prepare: %s", out);

	int rc =
	    run(dir, "systemd-analyze verify --man=no ./ringserved.service ./ringserved.socket",
		out, sizeof(out));
	CHECK(rc == 0 && out[0] == '\0', "verify: exit %d: %s", rc, out);

	rc = run(dir, "systemd-analyze security --offline=true --threshold=20 ./ringserved.service",
		 out, sizeof(out));
	const char *level = strstr(out, "Overall exposure level");
	CHECK(rc == 0, "exposure above 2.0 (exit %d): %s", rc, level ? level : out);

	snprintf(command, sizeof(command), "rm -rf '%s'", dir);
	CHECK(system(command) == 0, "cleanup");
	return T_EXIT_PASS;
}
