/* ringserve-sim's command line (tools/ringserve-sim/main.c), run as a user runs it:
 *   - `compare` runs each admission policy in turn (fcfs, lpm, vtc, dlpm) with one worker,
 *     each named in its JSON result;
 *   - `--service-log` writes one block per run whose last line is each tenant's weighted
 *     service when the run ended. With no shared prefixes (nothing cached: every policy
 *     charges every prompt token), fixed lengths and weights w_p = 1, w_q = 2, the
 *     tenants' services must add up to N * (prompt + 2 * output), the same for every
 *     policy (derived from the workload alone). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tests/harness/harness.h"

enum { N = 300, PROMPT = 12, OUTPUT = 5, TENANTS = 3 };

int main(void)
{
	char dir[] = "/tmp/rs-sim-cli-XXXXXX";
	CHECK(mkdtemp(dir), "mkdtemp");
	char json[96], log[96], cmd[1024];
	snprintf(json, sizeof(json), "%s/out.json", dir);
	snprintf(log, sizeof(log), "%s/service.log", dir);
	snprintf(cmd, sizeof(cmd),
		 "%s/ringserve-sim compare --requests %d --rate 50 --tenants %d --skew 3 "
		 "--prefixes 0 --suffix-len fixed:%d --output-len fixed:%d --max-batch 4 "
		 "--json %s --service-log %s --service-log-every 0.5 > /dev/null",
		 test_build_dir(), N, TENANTS, PROMPT, OUTPUT, json, log);
	CHECK(system(cmd) == 0, "%s failed", cmd);

	/* The JSON names the four policies in order. */
	FILE *f = fopen(json, "r");
	CHECK(f, "%s", json);
	char text[65536];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	const char *policies[] = {"fcfs", "lpm", "vtc", "dlpm"};
	const char *at = text;
	for (int i = 0; i < 4; i++) {
		char key[64];
		snprintf(key, sizeof(key), "\"policy\": \"%s\"", policies[i]);
		const char *p = strstr(at, key);
		CHECK(p, "result %d is not %s: %s", i, policies[i], text);
		at = p + 1;
	}

	/* The service log: four blocks, each headed by its policy, times ascending, the
	 * last line's services adding up to the workload's whole charge. */
	f = fopen(log, "r");
	CHECK(f, "%s", log);
	char line[512];
	int blocks = 0, lines = 0;
	double last_time = -1, total = 0;
	const double expected = (double)N * (PROMPT + 2.0 * OUTPUT);
	while (fgets(line, sizeof(line), f)) {
		if (line[0] == '#' || line[0] == '\n') {
			if (line[0] == '#') {
				if (blocks)
					CHECK(total == expected,
					      "%s: services add up to %.0f, not %.0f",
					      policies[blocks - 1], total, expected);
				CHECK(blocks < 4 && strstr(line, policies[blocks]), "block %d: %s",
				      blocks, line);
				blocks++;
				last_time = -1;
			}
			continue;
		}
		double t, s[TENANTS];
		CHECK(sscanf(line, "%lf %lf %lf %lf", &t, &s[0], &s[1], &s[2]) == 4, "line: %s",
		      line);
		CHECK(t >= last_time, "time went back: %s", line);
		last_time = t;
		total = s[0] + s[1] + s[2];
		lines++;
	}
	fclose(f);
	CHECK(blocks == 4, "%d blocks", blocks);
	CHECK(total == expected, "dlpm: services add up to %.0f, not %.0f", total, expected);
	CHECK(lines > 4 * 3, "only %d samples", lines);
	/* --dispatch-at arrival with d2lpm (the default dispatch) is refused, as ringserved
	 * refuses it, not run at admission in silence; compare with workers sets the
	 * policies itself and runs d2lpm's row at admission. */
	snprintf(cmd, sizeof(cmd),
		 "%s/ringserve-sim run --workers 2 --dispatch-at arrival --requests 10 "
		 "> /dev/null 2>&1",
		 test_build_dir());
	int rc = system(cmd);
	CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "%s: status %d", cmd, rc);
	snprintf(cmd, sizeof(cmd),
		 "%s/ringserve-sim compare --workers 2 --dispatch-at arrival --requests 20 "
		 "--max-batch 4 > /dev/null",
		 test_build_dir());
	CHECK(system(cmd) == 0, "%s failed", cmd);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0, "%s", cmd);
	printf("compare: four policies; service log: 4 blocks, %d samples, totals %.0f\n", lines,
	       expected);
	return T_EXIT_PASS;
}
