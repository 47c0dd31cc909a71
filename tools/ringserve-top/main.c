/* ringserve-top: the daemon's statistics, live, like top(1).
 *
 * It reads the daemon's read-only statistics segment (rs_stats_open: no client slot, no
 * tenant) and redraws with plain ANSI escapes every -d milliseconds: a header with the
 * daemon's figures, then one row per tenant. In a terminal, keys: q quits, s takes the
 * next sort key, r reverses the order. --once (or -b, batch) prints plain text without
 * escapes, for scripts. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "client-lib/ringserve.h"

enum sort_key {
	SORT_SERVICE,
	SORT_NAME,
	SORT_WAITING,
	SORT_RUNNING,
	SORT_INFLIGHT,
	SORT_GENERATED,
	SORT_HIT,
	SORT_TTFT,
	SORT_LATENCY,
	SORT_FINISHED,
	SORT_KEYS
};

static const char *const sort_names[SORT_KEYS] = {
    "service",	 "name", "waiting", "running", "inflight",
    "generated", "hit",	 "ttft",    "latency", "finished",
};

struct options {
	const char *socket_path;
	const char *tenant; /* show only this tenant; NULL: all */
	long delay_ms;
	long iterations; /* 0: until q or a signal */
	bool batch;	 /* plain text, no escapes */
	enum sort_key sort;
	bool reverse;
};

static volatile sig_atomic_t stop_requested;
static struct termios saved_termios;
static bool termios_saved;

static void on_signal(int signo)
{
	(void)signo;
	stop_requested = 1;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: ringserve-top [options]\n"
		"  -d, --delay MS        refresh every MS milliseconds (1000)\n"
		"  -n, --iterations N    stop after N refreshes\n"
		"  -b, --batch           plain text, no escapes (for scripts and logs)\n"
		"      --once            one plain snapshot to stdout, then exit (-b -n 1)\n"
		"  -s, --sort KEY        service (default), name, waiting, running, inflight,\n"
		"                        generated, hit, ttft, latency, finished\n"
		"  -r, --reverse         reverse the order\n"
		"      --tenant NAME     show only this tenant\n"
		"      --socket PATH     the daemon's socket (default: as libringserve)\n"
		"keys in a terminal: q quit, s next sort key, r reverse\n"
		"exit status: 0 done, 1 usage, 2 cannot reach the daemon, 3 cannot read\n");
}

static double hit_rate(const struct rs_stats_tenant *t)
{
	return t->prompt_tokens ? (double)t->cached_tokens / (double)t->prompt_tokens : 0.0;
}

/* Larger first for figures, names alphabetically; ties by tenant id. */
static int compare_tenants(const struct rs_stats_tenant *a, const struct rs_stats_tenant *b,
			   enum sort_key key)
{
	double x = 0, y = 0;
	switch (key) {
	case SORT_NAME: {
		int c = strcmp(a->name, b->name);
		if (c)
			return c;
		break;
	}
	case SORT_SERVICE:
		x = a->service, y = b->service;
		break;
	case SORT_WAITING:
		x = a->waiting, y = b->waiting;
		break;
	case SORT_RUNNING:
		x = a->running, y = b->running;
		break;
	case SORT_INFLIGHT:
		x = a->inflight, y = b->inflight;
		break;
	case SORT_GENERATED:
		x = (double)a->generated_tokens, y = (double)b->generated_tokens;
		break;
	case SORT_HIT:
		x = hit_rate(a), y = hit_rate(b);
		break;
	case SORT_TTFT:
		x = a->ttft_p99_ms, y = b->ttft_p99_ms;
		break;
	case SORT_LATENCY:
		x = a->latency_p99_ms, y = b->latency_p99_ms;
		break;
	case SORT_FINISHED:
		x = (double)a->requests_finished, y = (double)b->requests_finished;
		break;
	case SORT_KEYS:
		break;
	}
	if (x != y)
		return x > y ? -1 : 1;
	return a->id < b->id ? -1 : a->id > b->id;
}

static void sort_tenants(struct rs_stats_tenant *t, int n, enum sort_key key, bool reverse)
{
	/* Insertion sort: at most RS_STATS_MAX_TENANTS rows. */
	for (int i = 1; i < n; i++) {
		struct rs_stats_tenant item = t[i];
		int j = i;
		while (j > 0) {
			int c = compare_tenants(&t[j - 1], &item, key);
			if (reverse ? c >= 0 : c <= 0)
				break;
			t[j] = t[j - 1];
			j--;
		}
		t[j] = item;
	}
}

/* A frame is built in memory, then written at once. */
struct frame {
	char buf[64 * 1024];
	size_t len;
	bool ansi;
	int width;     /* characters per line at most (terminal); 0: no limit */
	int max_lines; /* 0: no limit */
	int lines;
	size_t line_start;
};

static void frame_line(struct frame *f, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static void frame_line(struct frame *f, const char *format, ...)
{
	if (f->max_lines && f->lines >= f->max_lines)
		return;
	size_t room = sizeof(f->buf) - f->len;
	if (room < 16)
		return;
	va_list args;
	va_start(args, format);
	int n = vsnprintf(f->buf + f->len, room - 8, format, args);
	va_end(args);
	if (n < 0)
		return;
	size_t written = (size_t)n < room - 8 ? (size_t)n : room - 9;
	if (f->width > 0 && written > (size_t)f->width && !f->ansi)
		written = (size_t)f->width;
	else if (f->width > 0 && f->ansi) {
		/* Count printable characters only (escapes start with ESC, end with a letter). */
		int shown = 0;
		size_t i = 0;
		while (i < written) {
			if (f->buf[f->len + i] == '\x1b') {
				while (i < written && !((f->buf[f->len + i] | 0x20) >= 'a' &&
							(f->buf[f->len + i] | 0x20) <= 'z'))
					i++;
				i++;
				continue;
			}
			if (shown == f->width)
				break;
			shown++;
			i++;
		}
		if (i < written) {
			written = i;
			/* Whatever attribute was on, end it. */
			memcpy(f->buf + f->len + written, "\x1b[0m", 4);
			written += 4;
		}
	}
	f->len += written;
	if (f->ansi) {
		memcpy(f->buf + f->len, "\x1b[K", 3); /* clear the rest of the line */
		f->len += 3;
	}
	f->buf[f->len++] = '\n';
	f->lines++;
}

static void format_ms(char *out, size_t size, uint32_t samples, double ms)
{
	if (samples == 0)
		snprintf(out, size, "-");
	else
		snprintf(out, size, "%.1f", ms);
}

static const char *state_name(const struct rs_stats *s, uint64_t now_ns)
{
	if (s->daemon_state == RS_STATS_STOPPED)
		return "stopped";
	if (now_ns > s->updated_ns && now_ns - s->updated_ns > 2000000000ull)
		return "not-responding";
	return s->daemon_state == RS_STATS_DRAINING ? "draining" : "running";
}

static uint64_t monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void build_frame(struct frame *f, const struct options *opt, const struct rs_stats *s,
			struct rs_stats_tenant *tenants, int n, const char *note)
{
	double up = (double)s->uptime_ns / 1e9;
	frame_line(f, "ringserve-top  pid %d  %s  up %.1fs  policy %s  prefix-cache %s%s%s",
		   (int)s->daemon_pid, state_name(s, monotonic_ns()), up, s->policy,
		   s->prefix_cache ? "on" : "off", note ? "  " : "", note ? note : "");
	frame_line(f,
		   "requests  waiting %u  running %u  completed %llu  failed %llu  preemptions "
		   "%llu  steps/s %.1f",
		   s->requests_waiting, s->requests_running,
		   (unsigned long long)s->requests_completed,
		   (unsigned long long)s->requests_failed, (unsigned long long)s->preemptions,
		   s->steps_per_second);
	frame_line(f, "kv-blocks  total %u  used %u  cached %u  cache-hit %.1f%%",
		   s->kv_blocks_total, s->kv_blocks_used, s->kv_blocks_cached,
		   100.0 * s->cache_hit_rate);

	int shown = 0;
	for (int i = 0; i < n; i++)
		if (!opt->tenant || strcmp(tenants[i].name, opt->tenant) == 0)
			tenants[shown++] = tenants[i];
	sort_tenants(tenants, shown, opt->sort, opt->reverse);
	frame_line(f, "clients %u  tenants %u  shown %d  sort %s%s  window %us",
		   s->clients_connected, s->tenants_in_use, shown, sort_names[opt->sort],
		   opt->reverse ? "-reversed" : "", s->latency_window_s);
	frame_line(f, "%s", "");

	int name_width = 6;
	for (int i = 0; i < shown; i++) {
		int len = (int)strlen(tenants[i].name);
		if (len > name_width)
			name_width = len;
	}
	if (f->ansi && name_width > 20)
		name_width = 20;
	bool dlpm = strcmp(s->policy, "dlpm") == 0, vtc = strcmp(s->policy, "vtc") == 0;
	frame_line(f,
		   "%s%-*s %6s %6s %10s %10s %5s %5s %5s %4s %10s %5s %10s %8s %6s %8s %8s %8s "
		   "%8s%s",
		   f->ansi ? "\x1b[7m" : "", name_width, "TENANT", "UID", "WEIGHT", "SERVICE",
		   vtc ? "COUNTER" : "DEFICIT", "WAIT", "RUN", "INFL", "CONN", "PROMPT", "HIT%",
		   "GEN", "DONE", "FAIL", "TTFT50", "TTFT99", "LAT50", "LAT99",
		   f->ansi ? "\x1b[0m" : "");
	int room = f->max_lines ? f->max_lines - f->lines : shown;
	for (int i = 0; i < shown; i++) {
		const struct rs_stats_tenant *t = &tenants[i];
		if (room <= 1 && i < shown - 1 && f->max_lines) {
			frame_line(f, "... %d more (a taller terminal, or --tenant)", shown - i);
			break;
		}
		room--;
		char balance[32], ttft50[16], ttft99[16], lat50[16], lat99[16];
		if (dlpm)
			snprintf(balance, sizeof(balance), "%.0f", t->deficit);
		else if (vtc)
			snprintf(balance, sizeof(balance), "%.0f", t->counter);
		else
			snprintf(balance, sizeof(balance), "-");
		format_ms(ttft50, sizeof(ttft50), t->ttft_samples, t->ttft_p50_ms);
		format_ms(ttft99, sizeof(ttft99), t->ttft_samples, t->ttft_p99_ms);
		format_ms(lat50, sizeof(lat50), t->latency_samples, t->latency_p50_ms);
		format_ms(lat99, sizeof(lat99), t->latency_samples, t->latency_p99_ms);
		frame_line(f,
			   "%-*.*s %6u %6g %10.0f %10s %5u %5u %5u %4u %10llu %5.1f %10llu %8llu "
			   "%6llu %8s %8s %8s %8s",
			   name_width, name_width, t->name, t->uid, t->weight, t->service, balance,
			   t->waiting, t->running, t->inflight, t->connections,
			   (unsigned long long)t->prompt_tokens, 100.0 * hit_rate(t),
			   (unsigned long long)t->generated_tokens,
			   (unsigned long long)t->requests_finished,
			   (unsigned long long)t->requests_failed, ttft50, ttft99, lat50, lat99);
	}
}

static void restore_terminal(void)
{
	if (termios_saved)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
	termios_saved = false;
}

/* Keys without Enter and without echo, while we run. */
static void raw_keys(void)
{
	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_termios) < 0)
		return;
	struct termios raw = saved_termios;
	raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	raw.c_cc[VMIN] = 0;
	raw.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0)
		termios_saved = true;
}

/* Write len bytes of buf (0: a string, up to its NUL). */
static void write_all(const char *buf, size_t len)
{
	if (len == 0)
		len = strlen(buf);
	while (len > 0) {
		ssize_t n = write(STDOUT_FILENO, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		buf += n;
		len -= (size_t)n;
	}
}

/* Wait up to delay_ms for a key; act on it. Returns false to quit. */
static bool wait_for_key(struct options *opt, long delay_ms)
{
	struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
	bool keys = termios_saved;
	int ret = poll(keys ? &pfd : NULL, keys ? 1 : 0, (int)delay_ms);
	if (stop_requested)
		return false;
	if (ret <= 0 || !keys)
		return true;
	char c;
	if (read(STDIN_FILENO, &c, 1) != 1)
		return true;
	if (c == 'q' || c == 'Q')
		return false;
	if (c == 's')
		opt->sort = (enum sort_key)((opt->sort + 1) % SORT_KEYS);
	if (c == 'r')
		opt->reverse = !opt->reverse;
	return true;
}

static int parse_long(const char *text, long min, long max, long *out)
{
	char *end;
	errno = 0;
	long value = strtol(text, &end, 10);
	if (errno || end == text || *end || value < min || value > max)
		return -EINVAL;
	*out = value;
	return 0;
}

int main(int argc, char **argv)
{
	struct options opt = {.delay_ms = 1000};
	enum { OPT_ONCE = 256, OPT_TENANT, OPT_SOCKET };
	static const struct option long_options[] = {
	    {"delay", required_argument, 0, 'd'},
	    {"iterations", required_argument, 0, 'n'},
	    {"batch", no_argument, 0, 'b'},
	    {"once", no_argument, 0, OPT_ONCE},
	    {"sort", required_argument, 0, 's'},
	    {"reverse", no_argument, 0, 'r'},
	    {"tenant", required_argument, 0, OPT_TENANT},
	    {"socket", required_argument, 0, OPT_SOCKET},
	    {"help", no_argument, 0, 'h'},
	    {0, 0, 0, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "d:n:bs:rh", long_options, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (parse_long(optarg, 10, 3600 * 1000, &opt.delay_ms)) {
				fprintf(stderr, "ringserve-top: -d: 10 to 3600000 ms\n");
				return 1;
			}
			break;
		case 'n':
			if (parse_long(optarg, 1, LONG_MAX, &opt.iterations)) {
				fprintf(stderr, "ringserve-top: -n: a positive count\n");
				return 1;
			}
			break;
		case 'b':
			opt.batch = true;
			break;
		case OPT_ONCE:
			opt.batch = true;
			opt.iterations = 1;
			break;
		case 's': {
			int key = -1;
			for (int i = 0; i < SORT_KEYS; i++)
				if (strcmp(optarg, sort_names[i]) == 0)
					key = i;
			if (key < 0) {
				fprintf(stderr, "ringserve-top: unknown sort key '%s'\n", optarg);
				usage(stderr);
				return 1;
			}
			opt.sort = (enum sort_key)key;
			break;
		}
		case 'r':
			opt.reverse = true;
			break;
		case OPT_TENANT:
			opt.tenant = optarg;
			break;
		case OPT_SOCKET:
			opt.socket_path = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 1;
	}

	struct rs_stats_reader *reader;
	int ret = rs_stats_open(opt.socket_path, &reader);
	if (ret) {
		fprintf(stderr, "ringserve-top: cannot reach the daemon: %s\n", strerror(-ret));
		return 2;
	}
	struct sigaction action = {.sa_handler = on_signal}; /* no SA_RESTART: poll returns */
	sigemptyset(&action.sa_mask);
	sigaction(SIGINT, &action, NULL);
	sigaction(SIGTERM, &action, NULL);
	bool ansi = !opt.batch && isatty(STDOUT_FILENO);
	if (ansi) {
		raw_keys();
		write_all("\x1b[?25l\x1b[H\x1b[2J", 0); /* hide the cursor, clear */
	}

	static struct frame frame;
	static struct rs_stats_tenant tenants[RS_STATS_MAX_TENANTS];
	struct rs_stats stats = {0};
	int n = 0, status = 0;
	bool have = false;
	for (long iteration = 0; !stop_requested; iteration++) {
		const char *note = NULL;
		int got = rs_stats_read(reader, &stats, tenants, RS_STATS_MAX_TENANTS);
		if (got >= 0) {
			n = got;
			have = true;
		} else if (!have) {
			fprintf(stderr, "ringserve-top: cannot read the statistics: %s\n",
				strerror(-got));
			status = 3;
			break;
		} else {
			note = "(stale: update not readable)";
		}
		frame.len = 0;
		frame.lines = 0;
		frame.ansi = ansi;
		frame.width = 0;
		frame.max_lines = 0;
		if (ansi) {
			struct winsize ws;
			if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0) {
				frame.width = ws.ws_col;
				frame.max_lines = ws.ws_row - 1;
			}
			memcpy(frame.buf, "\x1b[H", 3); /* home: redraw over the last frame */
			frame.len = 3;
		}
		build_frame(&frame, &opt, &stats, tenants, n, note);
		if (ansi) {
			memcpy(frame.buf + frame.len, "\x1b[J", 3); /* clear below */
			frame.len += 3;
		} else if (!(opt.iterations == 1)) {
			frame.buf[frame.len++] = '\n'; /* batch: a blank line between snapshots */
		}
		write_all(frame.buf, frame.len);
		if (opt.iterations && iteration + 1 >= opt.iterations)
			break;
		if (!wait_for_key(&opt, opt.delay_ms))
			break;
	}
	if (ansi) {
		restore_terminal();
		write_all("\x1b[?25h", 0); /* show the cursor */
	}
	rs_stats_close(reader);
	return status;
}
