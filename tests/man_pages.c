/* The man pages (docs/man/) against the programs and the library they describe:
 * - every long option that `ringserved --help`, `ringserve-cli --help` and
 *   `ringserve-top --help` print has an entry in its page (a .TP tag naming \-\-OPTION),
 *   every number in the help's parenthesized default is in that entry, and every option a
 *   tag names is one the program prints (or --help);
 * - every symbol libringserve.map exports is a documented call of libringserve.3: named
 *   in NAME, its prototype in SYNOPSIS, a subsection of its own (.SS NAME());
 * - the example program of libringserve.3 compiles and links against the library;
 * - each page renders without warnings (groff -man -ww -z; that part skips without groff).
 * Runs from the source tree's root, like every test. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/harness/harness.h"

#define MAX_TEXT (256 * 1024)

/* Run a shell command; its exit status, and stdout + stderr in out. */
static int run(const char *command, char *out, size_t size)
{
	char line[4 * PATH_MAX];
	snprintf(line, sizeof(line), "%s 2>&1", command);
	FILE *pipe = popen(line, "r");
	CHECK(pipe, "popen: %s", strerror(errno));
	size_t n = fread(out, 1, size - 1, pipe);
	out[n] = '\0';
	int status = pclose(pipe);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static char *read_file(const char *path)
{
	FILE *file = fopen(path, "r");
	CHECK(file, "%s: %s", path, strerror(errno));
	char *text = malloc(MAX_TEXT);
	CHECK(text, "malloc");
	size_t n = fread(text, 1, MAX_TEXT - 1, file);
	CHECK(n < MAX_TEXT - 1, "%s: larger than %d bytes", path, MAX_TEXT);
	text[n] = '\0';
	fclose(file);
	return text;
}

static bool is_name_char(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '_';
}

/* Whether line names the option --name as troff writes it (\-\-max\-batch), as a whole
 * word: not the start of \-\-max\-batch\-tokens. */
static bool names_option(const char *line, const char *name)
{
	char troff[128] = "\\-\\-";
	size_t len = strlen(troff);
	for (const char *c = name; *c && len < sizeof(troff) - 3; c++) {
		if (*c == '-')
			troff[len++] = '\\';
		troff[len++] = *c;
	}
	troff[len] = '\0';
	for (const char *at = strstr(line, troff); at; at = strstr(at + 1, troff)) {
		const char *after = at + len;
		if (!(after[0] == '\\' && after[1] == '-') && !is_name_char(after[0]))
			return true;
	}
	return false;
}

/* The entry of --name in a page: the paragraph from the .TP tag line that names it to
 * the next .TP, .SS, .SH or .PP (a pointer into page, its length in *len), or NULL. */
static const char *option_entry(const char *page, const char *name, size_t *len)
{
	for (const char *tp = strstr(page, "\n.TP"); tp; tp = strstr(tp + 1, "\n.TP")) {
		const char *tag = strchr(tp + 1, '\n');
		if (!tag)
			return NULL;
		tag++;
		const char *tag_end = strchrnul(tag, '\n');
		char line[512];
		snprintf(line, sizeof(line), "%.*s", (int)(tag_end - tag), tag);
		if (!names_option(line, name))
			continue;
		const char *end = tag_end;
		while (*end && !(end[0] == '\n' && end[1] == '.' &&
				 (!strncmp(end + 2, "TP", 2) || !strncmp(end + 2, "SS", 2) ||
				  !strncmp(end + 2, "SH", 2) || !strncmp(end + 2, "PP", 2))))
			end++;
		*len = (size_t)(end - tag);
		return tag;
	}
	return NULL;
}

/* Whether text[0 .. len) has number as a whole token (not part of f16 or 2048). */
static bool has_number(const char *text, size_t len, const char *number)
{
	size_t n = strlen(number);
	for (size_t i = 0; i + n <= len; i++)
		if (!strncmp(text + i, number, n) &&
		    (i == 0 || !isalnum((unsigned char)text[i - 1])) &&
		    (i + n == len || !isdigit((unsigned char)text[i + n])))
			return true;
	return false;
}

struct option_help {
	char name[64];
	char text[1024]; /* the help's description, continuation lines joined */
};

/* Parse a --help text: an option entry starts at a line whose first non-space character
 * is '-', and continues on lines indented 4 or more that do not start with '-'. Its
 * name is the first long option on its first line. Returns the number of entries. */
static int parse_help(const char *help, struct option_help *out, int max)
{
	int n = 0;
	bool in_entry = false;
	for (const char *line = help; *line;) {
		const char *end = strchrnul(line, '\n');
		const char *first = line;
		while (first < end && *first == ' ')
			first++;
		if (first < end && *first == '-') {
			const char *dash = strstr(first, "--");
			in_entry = dash && dash < end && isalpha((unsigned char)dash[2]);
			if (in_entry) {
				CHECK(n < max, "more than %d options", max);
				size_t len = 0;
				for (const char *c = dash + 2; is_name_char(*c) && len < 63; c++)
					out[n].name[len++] = *c;
				out[n].name[len] = '\0';
				snprintf(out[n].text, sizeof(out[n].text), "%.*s",
					 (int)(end - first), first);
				n++;
			}
		} else if (in_entry && first - line >= 4 && first < end) {
			size_t used = strlen(out[n - 1].text);
			snprintf(out[n - 1].text + used, sizeof(out[n - 1].text) - used, " %.*s",
				 (int)(end - first), first);
		} else {
			in_entry = false;
		}
		line = *end ? end + 1 : end;
	}
	return n;
}

/* The standalone numbers of the last parenthesized group of text (the default). */
static int default_numbers(const char *text, char numbers[][32], int max)
{
	const char *open = strrchr(text, '(');
	if (!open)
		return 0;
	int n = 0;
	for (const char *c = open + 1; *c && *c != ')'; c++)
		if (isdigit((unsigned char)*c) && !isalnum((unsigned char)c[-1]) && n < max) {
			size_t len = 0;
			while (isdigit((unsigned char)c[len]) && len < 31)
				len++;
			if (!isalpha((unsigned char)c[len])) {
				snprintf(numbers[n++], 32, "%.*s", (int)len, c);
			}
			c += len - 1;
		}
	return n;
}

static int failures;

#define EXPECT(cond, ...)                                                                          \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, __VA_ARGS__);                                              \
			fprintf(stderr, "\n");                                                     \
			failures++;                                                                \
		}                                                                                  \
	} while (0)

/* A program's options against its page. */
static void check_options(const char *program, const char *page_path)
{
	static char help[MAX_TEXT];
	char command[PATH_MAX + 64];
	snprintf(command, sizeof(command), "'%s/%s' --help", test_build_dir(), program);
	CHECK(run(command, help, sizeof(help)) == 0, "%s: %s", command, help);
	char *page = read_file(page_path);
	static struct option_help options[128];
	int n = parse_help(help, options, 128);
	CHECK(n >= 5, "%s --help: only %d options parsed: %s", program, n, help);

	/* Every long option anywhere in the help text (also those named in a description). */
	for (const char *at = strstr(help, "--"); at; at = strstr(at + 2, "--")) {
		if ((at > help && is_name_char(at[-1])) || !isalpha((unsigned char)at[2]))
			continue;
		char name[64];
		size_t len = 0;
		for (const char *c = at + 2; is_name_char(*c) && len < 63; c++)
			name[len++] = *c;
		name[len] = '\0';
		size_t entry_len;
		EXPECT(option_entry(page, name, &entry_len), "%s: --%s (in %s --help) has no entry",
		       page_path, name, program);
	}
	/* The defaults the help gives in parentheses. */
	for (int i = 0; i < n; i++) {
		size_t entry_len;
		const char *entry = option_entry(page, options[i].name, &entry_len);
		if (!entry)
			continue; /* reported above */
		char numbers[8][32];
		int k = default_numbers(options[i].text, numbers, 8);
		for (int j = 0; j < k; j++)
			EXPECT(has_number(entry, entry_len, numbers[j]),
			       "%s: the entry of --%s lacks the default '%s' of the help: \"%s\"",
			       page_path, options[i].name, numbers[j], options[i].text);
	}
	/* Every option a tag names exists. */
	for (const char *tp = strstr(page, "\n.TP"); tp; tp = strstr(tp + 1, "\n.TP")) {
		const char *tag = strchr(tp + 1, '\n');
		if (!tag)
			break;
		tag++;
		const char *tag_end = strchrnul(tag, '\n');
		for (const char *at = strstr(tag, "\\-\\-"); at && at < tag_end;
		     at = strstr(at + 4, "\\-\\-")) {
			char name[64], pattern[70];
			size_t len = 0;
			for (const char *c = at + 4; len < 63 && (is_name_char(*c) || *c == '\\');
			     c++)
				if (*c != '\\')
					name[len++] = *c;
			name[len] = '\0';
			snprintf(pattern, sizeof(pattern), "--%s", name);
			bool known = !strcmp(name, "help");
			for (const char *h = strstr(help, pattern); h && !known;
			     h = strstr(h + 1, pattern))
				known = !is_name_char(h[strlen(pattern)]);
			EXPECT(known, "%s: an entry for --%s, which %s --help does not print",
			       page_path, name, program);
		}
	}
	free(page);
}

/* The exported symbols against libringserve.3. */
static void check_library(void)
{
	char *map = read_file("client-lib/libringserve.map");
	char *page = read_file("docs/man/libringserve.3");
	const char *name_section = strstr(page, "\n.SH NAME\n");
	const char *synopsis = strstr(page, "\n.SH SYNOPSIS\n");
	const char *description = strstr(page, "\n.SH DESCRIPTION\n");
	CHECK(name_section && synopsis && description && name_section < synopsis &&
		  synopsis < description,
	      "libringserve.3: NAME, SYNOPSIS, DESCRIPTION missing or out of order");
	const char *global = strstr(map, "global:"), *local = strstr(map, "local:");
	CHECK(global && local && global < local, "libringserve.map: no global:/local:");
	int symbols = 0;
	for (const char *c = global + 7; c < local;) {
		while (c < local && !isalpha((unsigned char)*c))
			c++;
		if (c >= local)
			break;
		char name[64], pattern[80];
		size_t len = 0;
		while (is_name_char(*c) && len < 63)
			name[len++] = *c++;
		name[len] = '\0';
		symbols++;
		/* In NAME, as a whole word. */
		bool named = false;
		for (const char *at = strstr(name_section, name); at && at < synopsis && !named;
		     at = strstr(at + 1, name))
			named = !is_name_char(at[-1]) && !is_name_char(at[len]);
		EXPECT(named, "libringserve.3: %s is not in NAME", name);
		snprintf(pattern, sizeof(pattern), " %s(", name);
		const char *proto = strstr(synopsis, pattern);
		EXPECT(proto && proto < description,
		       "libringserve.3: no prototype of %s in SYNOPSIS", name);
		snprintf(pattern, sizeof(pattern), "\n.SS %s()\n", name);
		EXPECT(strstr(page, pattern), "libringserve.3: no subsection '.SS %s()'", name);
	}
	CHECK(symbols >= 20, "libringserve.map: only %d symbols read", symbols);
	/* And no subsection for a call that is not exported. */
	for (const char *ss = strstr(page, "\n.SS rs_"); ss; ss = strstr(ss + 1, "\n.SS rs_")) {
		char name[64];
		size_t len = 0;
		for (const char *c = ss + 5; is_name_char(*c) && len < 63; c++)
			name[len++] = *c;
		name[len] = '\0';
		char pattern[80];
		snprintf(pattern, sizeof(pattern), "%s;", name);
		EXPECT(strstr(map, pattern),
		       "libringserve.3: a subsection for %s, which "
		       "libringserve.map does not export",
		       name);
	}
	free(map);
	free(page);
}

/* The EXAMPLES program of libringserve.3 (the first .EX block after .SH EXAMPLES), with
 * troff's escapes undone, compiles without warnings and links. */
static void check_library_example(void)
{
	static char out[MAX_TEXT];
	if (system("command -v cc >/dev/null 2>&1") != 0) {
		printf("no cc: the example of libringserve.3 is not compiled\n");
		return;
	}
	char *page = read_file("docs/man/libringserve.3");
	const char *examples = strstr(page, "\n.SH EXAMPLES\n");
	CHECK(examples, "libringserve.3: no EXAMPLES");
	const char *start = strstr(examples, "\n.EX\n"),
		   *end = start ? strstr(start, "\n.EE\n") : NULL;
	CHECK(start && end, "libringserve.3: no .EX/.EE block in EXAMPLES");
	char dir[] = "/tmp/ringserve-man-XXXXXX", source[PATH_MAX], command[4 * PATH_MAX];
	CHECK(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	snprintf(source, sizeof(source), "%s/example.c", dir);
	FILE *file = fopen(source, "w");
	CHECK(file, "%s: %s", source, strerror(errno));
	for (const char *c = start + 5; c < end + 1; c++) {
		if (c[0] == '\\' && (c[1] == '-' || c[1] == 'e')) {
			fputc(c[1] == '-' ? '-' : '\\', file);
			c++;
		} else {
			CHECK(c[0] != '\\',
			      "libringserve.3: an escape the test does not undo: %.20s", c);
			fputc(*c, file);
		}
	}
	CHECK(fclose(file) == 0, "write %s", source);
	/* A sanitizer build's library needs the sanitizer's runtime: take its -fsanitize=. */
	char config_path[PATH_MAX], sanitize[128] = "";
	snprintf(config_path, sizeof(config_path), "%s/config", test_build_dir());
	FILE *config = fopen(config_path, "r");
	if (config) {
		char line[4096];
		const char *flag;
		if (fgets(line, sizeof(line), config) && (flag = strstr(line, "-fsanitize=")))
			snprintf(sanitize, sizeof(sanitize), "%.*s", (int)strcspn(flag, " \n"),
				 flag);
		fclose(config);
	}
	snprintf(command, sizeof(command),
		 "cc -std=gnu11 -Wall -Wextra -Werror %s -Iclient-lib -o '%s/example' '%s' "
		 "'%s/libringserve.a' -lpthread",
		 sanitize, dir, source, test_build_dir());
	int rc = run(command, out, sizeof(out));
	EXPECT(rc == 0, "libringserve.3: the example does not build (exit %d): %s", rc, out);
	snprintf(command, sizeof(command), "rm -rf '%s'", dir);
	CHECK(system(command) == 0, "cleanup");
	free(page);
}

int main(void)
{
	static const char *const pages[] = {"docs/man/ringserved.8", "docs/man/ringserve-cli.1",
					    "docs/man/ringserve-top.1", "docs/man/libringserve.3"};
	check_options("ringserved", pages[0]);
	check_options("ringserve-cli", pages[1]);
	check_options("ringserve-top", pages[2]);
	check_library();
	check_library_example();

	if (system("command -v groff >/dev/null 2>&1") != 0) {
		printf("groff not installed: the pages are not rendered (tools/deps.sh has "
		       "groff-base)\n");
	} else {
		static char out[MAX_TEXT];
		for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
			char command[PATH_MAX];
			snprintf(command, sizeof(command), "groff -man -Tutf8 -ww -z '%s'",
				 pages[i]);
			int rc = run(command, out, sizeof(out));
			EXPECT(rc == 0 && out[0] == '\0', "%s: exit %d: %s", command, rc, out);
		}
	}
	if (failures) {
		fprintf(stderr, "%d problem(s) in the man pages\n", failures);
		return T_EXIT_FAIL;
	}
	return T_EXIT_PASS;
}
