/* ringserve-bench ipc: the shared-memory data path on the null engine, measured against
 * two references taken in the same run:
 *   - the floor: a cache-line ping-pong between the two cores the client and the
 *     scheduler core run on (two lines, one written by each side);
 *   - what a user would pick instead: a request/response over a Unix socket carrying the
 *     same payload (16 token ids out, 1 token id back), server in another process.
 * Figures: round-trip latency of a 16-token request with 1 output token (p50, p99,
 * p99.9), pipelined throughput with 1 and 4 clients; and the round trip of a client that
 * sleeps until its completion, on the futex (rs_wait) or in epoll (rs_event_fd), while
 * the daemon spins: what a wake-up costs. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "shm/atomics.h"
#include "shm/clock.h"
#include "tools/ringserve-bench/bench.h"

#define PROMPT_TOKENS 16

struct ipc_options {
	int client_cpu;
	int daemon_cpu;
	uint32_t latency_iterations;
	double throughput_seconds;
};

static void pin_to(int cpu)
{
	if (cpu < 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

struct percentiles {
	double p50, p99, p999, mean;
};

static struct percentiles summarize(uint64_t *samples, uint32_t n)
{
	qsort(samples, n, sizeof(*samples), compare_u64);
	double sum = 0;
	for (uint32_t i = 0; i < n; i++)
		sum += (double)samples[i];
	return (struct percentiles){
	    .p50 = (double)samples[n / 2],
	    .p99 = (double)samples[(uint64_t)n * 99 / 100],
	    .p999 = (double)samples[(uint64_t)n * 999 / 1000],
	    .mean = sum / n,
	};
}

/* --- reference 1: cache-line ping-pong --------------------------------------------- */

static struct {
	alignas(64) _Atomic uint64_t ping;
	alignas(64) _Atomic uint64_t pong;
} pingpong;

static uint64_t pingpong_rounds;
static int pingpong_cpu;

static void *pingpong_responder(void *arg)
{
	pin_to(pingpong_cpu);
	for (uint64_t i = 1; i <= pingpong_rounds; i++) {
		/* A-ping: pairs with the initiator's release store of ping. */
		while (rs_load_acquire(&pingpong.ping) != i)
			rs_cpu_relax();
		rs_store_release(&pingpong.pong, i);
	}
	return NULL;
}

/* Median round trip of a line bounced between client_cpu and daemon_cpu, in ns. */
static double measure_pingpong(const struct ipc_options *options)
{
	const uint32_t batches = 200, per_batch = 1000;
	pingpong_rounds = (uint64_t)batches * per_batch;
	pingpong_cpu = options->daemon_cpu;
	atomic_store(&pingpong.ping, 0);
	atomic_store(&pingpong.pong, 0);
	pthread_t thread;
	pthread_create(&thread, NULL, pingpong_responder, NULL);
	pin_to(options->client_cpu);
	uint64_t samples[200];
	uint64_t i = 0;
	for (uint32_t b = 0; b < batches; b++) {
		uint64_t start = rs_now_ns();
		for (uint32_t k = 0; k < per_batch; k++) {
			i++;
			rs_store_release(&pingpong.ping, i);
			/* A-pong: pairs with the responder's release store of pong. */
			while (rs_load_acquire(&pingpong.pong) != i)
				rs_cpu_relax();
		}
		samples[b] = (rs_now_ns() - start);
	}
	pthread_join(thread, NULL);
	struct percentiles p = summarize(samples, batches);
	return p.p50 / per_batch;
}

/* --- reference 2: Unix-socket RPC ---------------------------------------------------- */

static struct percentiles measure_unix_socket(const struct ipc_options *options,
					      uint32_t iterations)
{
	int pair[2];
	socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pair);
	pid_t server = fork();
	if (server == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		pin_to(options->daemon_cpu);
		close(pair[0]);
		uint32_t request[PROMPT_TOKENS];
		for (;;) {
			ssize_t n = recv(pair[1], request, sizeof(request), 0);
			if (n <= 0)
				_exit(0);
			/* The same "work" as the null engine does: one token from the prompt. */
			uint32_t reply = request[0] ^ request[PROMPT_TOKENS - 1];
			if (send(pair[1], &reply, sizeof(reply), 0) != sizeof(reply))
				_exit(1);
		}
	}
	close(pair[1]);
	pin_to(options->client_cpu);
	uint64_t *samples = malloc(iterations * sizeof(*samples));
	uint32_t request[PROMPT_TOKENS];
	for (uint32_t i = 0; i < PROMPT_TOKENS; i++)
		request[i] = i * 7;
	for (uint32_t i = 0; i < iterations + 1000; i++) {
		uint64_t start = rs_now_ns();
		uint32_t reply;
		if (send(pair[0], request, sizeof(request), 0) < 0 ||
		    recv(pair[0], &reply, sizeof(reply), 0) < 0)
			break;
		if (i >= 1000) /* warm-up excluded */
			samples[i - 1000] = rs_now_ns() - start;
	}
	close(pair[0]);
	waitpid(server, NULL, 0);
	struct percentiles p = summarize(samples, iterations);
	free(samples);
	return p;
}

/* --- the ring ---------------------------------------------------------------------------- */

static void fill_prompt(uint32_t *prompt, uint32_t seed)
{
	for (uint32_t i = 0; i < PROMPT_TOKENS; i++)
		prompt[i] = (seed * 131 + i * 7) % 32000;
}

/* How the client waits for each completion. */
enum wait_mode {
	WAIT_BUSY_POLL, /* rs_poll in a loop */
	WAIT_FUTEX,	/* rs_wait, never spinning: asleep on the futex */
	WAIT_EPOLL,	/* epoll_wait on rs_event_fd after rs_event_arm */
};

/* Wait for the one completion in flight. Returns rs_poll's count (1), or a negative errno. */
static int wait_completion(struct rs_connection *conn, enum wait_mode mode, int ep,
			   struct rs_completion *done)
{
	int n;
	switch (mode) {
	case WAIT_BUSY_POLL:
		while ((n = rs_poll(conn, done, 1)) == 0)
			rs_cpu_relax();
		return n;
	case WAIT_FUTEX:
		return rs_wait(conn, done, 1, 5000);
	case WAIT_EPOLL:
		while ((n = rs_poll(conn, done, 1)) == 0) {
			int ready = rs_event_arm(conn, RS_EVENT_COMPLETION);
			struct epoll_event ev;
			if (ready < 0)
				return ready;
			if (ready == 0 && epoll_wait(ep, &ev, 1, 5000) != 1)
				return -ETIMEDOUT;
		}
		return n;
	}
	return -EINVAL;
}

/* Round trips, one request at a time, after `warmup` unmeasured ones. */
static int measure_round_trips(const char *socket_path, enum wait_mode mode, uint32_t warmup,
			       uint32_t iterations, struct percentiles *out)
{
	struct rs_connect_options no_spinning = {.spin_us = UINT32_MAX};
	struct rs_connection *conn;
	int ret = rs_connect(socket_path, mode == WAIT_BUSY_POLL ? NULL : &no_spinning, &conn);
	if (ret)
		return ret;
	int ep = -1;
	if (mode == WAIT_EPOLL) {
		int fd = rs_event_fd(conn);
		struct epoll_event ev = {.events = EPOLLIN};
		ep = epoll_create1(EPOLL_CLOEXEC);
		if (fd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
			ret = fd < 0 ? fd : -EIO;
	}
	uint64_t *samples = malloc(iterations * sizeof(*samples));
	if (!samples)
		ret = -ENOMEM;
	uint32_t prompt[PROMPT_TOKENS];
	struct rs_generate_params params = {
	    .prompt = prompt, .prompt_len = PROMPT_TOKENS, .max_new_tokens = 1};
	for (uint32_t i = 0; i < warmup + iterations && ret == 0; i++) {
		fill_prompt(prompt, i);
		uint64_t start = rs_now_ns();
		int request = rs_submit(conn, &params);
		if (request < 0) {
			ret = request;
			break;
		}
		struct rs_completion done;
		int n = wait_completion(conn, mode, ep, &done);
		uint64_t end = rs_now_ns();
		if (n < 0 || done.status != 0) {
			ret = n < 0 ? n : done.status;
			break;
		}
		rs_release(conn, done.request);
		if (i >= warmup)
			samples[i - warmup] = end - start;
	}
	if (ret == 0)
		*out = summarize(samples, iterations);
	free(samples);
	if (ep >= 0)
		close(ep);
	rs_close(conn);
	return ret;
}

/* Requests per second with up to the in-flight limit outstanding. */
static double pump(const char *socket_path, double seconds)
{
	struct rs_connection *conn;
	if (rs_connect(socket_path, NULL, &conn))
		return -1;
	uint32_t prompt[PROMPT_TOKENS];
	fill_prompt(prompt, 1);
	struct rs_generate_params params = {
	    .prompt = prompt, .prompt_len = PROMPT_TOKENS, .max_new_tokens = 1};
	struct rs_completion done[256];
	uint64_t completed = 0, failed = 0, start = rs_now_ns(),
		 end = start + (uint64_t)(seconds * 1e9);
	uint64_t now = start;
	while (now < end) {
		for (int k = 0; k < 64; k++)
			if (rs_submit(conn, &params) < 0)
				break;
		int n = rs_poll(conn, done, 256);
		if (n < 0)
			break;
		for (int k = 0; k < n; k++) {
			/* Only successes count: an error completion is cheaper than a request. */
			if (done[k].status == 0 && done[k].output_len == 1)
				completed++;
			else
				failed++;
			rs_release(conn, done[k].request);
		}
		now = rs_now_ns();
	}
	rs_close(conn);
	if (failed) {
		fprintf(stderr, "bench ipc: %llu requests failed\n", (unsigned long long)failed);
		return -1;
	}
	return (double)completed / ((double)(now - start) / 1e9);
}

static double measure_throughput(const struct ipc_options *options, const char *socket_path,
				 int clients)
{
	if (clients == 1) {
		pin_to(options->client_cpu);
		return pump(socket_path, options->throughput_seconds);
	}
	/* Each client process reports its rate through a shared page. */
	double *rates = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pids[16];
	for (int c = 0; c < clients; c++) {
		pids[c] = fork();
		if (pids[c] == 0) {
			pin_to(options->client_cpu);
			rates[c] = pump(socket_path, options->throughput_seconds);
			_exit(0);
		}
	}
	double total = 0;
	for (int c = 0; c < clients; c++) {
		waitpid(pids[c], NULL, 0);
		total += rates[c] > 0 ? rates[c] : 0;
	}
	munmap(rates, 4096);
	return total;
}

int bench_ipc(int argc, char **argv, FILE *json)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	struct ipc_options options = {
	    .client_cpu = cpus >= 2 ? 0 : -1,
	    .daemon_cpu = cpus >= 2 ? 1 : -1,
	    .latency_iterations = 200000,
	    .throughput_seconds = 2.0,
	};
	const char *extra[8];
	int n_extra = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--daemon-arg") == 0 && i + 1 < argc && n_extra < 8) {
			extra[n_extra++] = argv[++i];
		} else if (strcmp(argv[i], "--quick") == 0) {
			options.latency_iterations = 20000;
			options.throughput_seconds = 0.5;
		} else if (strcmp(argv[i], "--client-cpu") == 0 && i + 1 < argc) {
			options.client_cpu = atoi(argv[++i]);
		} else if (strcmp(argv[i], "--daemon-cpu") == 0 && i + 1 < argc) {
			options.daemon_cpu = atoi(argv[++i]);
		} else {
			fprintf(stderr,
				"bench ipc: options: [--quick] [--client-cpu N] [--daemon-cpu N] "
				"[--daemon-arg ARG]...\n");
			fprintf(json, "null");
			return 1;
		}
	}

	double pingpong_ns = measure_pingpong(&options);
	struct percentiles unix_rtt = measure_unix_socket(&options, options.latency_iterations / 4);

	char socket_path[128], cpu_arg[16];
	snprintf(socket_path, sizeof(socket_path), "/tmp/ringserve-bench-%d.sock", (int)getpid());
	snprintf(cpu_arg, sizeof(cpu_arg), "%d", options.daemon_cpu);
	const char *daemon_args[16] = {"--null-vocab", "32000"};
	int n_args = 2;
	for (int i = 0; i < n_extra; i++)
		daemon_args[n_args++] = extra[i];
	if (options.daemon_cpu >= 0) {
		daemon_args[n_args++] = "--cpu";
		daemon_args[n_args++] = cpu_arg;
	}
	pid_t daemon = bench_start_daemon(socket_path, daemon_args);
	if (daemon < 0) {
		fprintf(stderr, "bench ipc: could not start ringserved (is it built next to "
				"ringserve-bench?)\n");
		fprintf(json, "null");
		return 1;
	}
	struct percentiles ring_rtt;
	int ret = measure_round_trips(socket_path, WAIT_BUSY_POLL, 1000, options.latency_iterations,
				      &ring_rtt);
	double throughput_1 = ret ? -1 : measure_throughput(&options, socket_path, 1);
	double throughput_4 = ret ? -1 : measure_throughput(&options, socket_path, 4);
	struct percentiles futex_rtt = {0}, epoll_rtt = {0};
	uint32_t sleeping_iterations = options.latency_iterations / 10;
	if (ret == 0)
		ret = measure_round_trips(socket_path, WAIT_FUTEX, 100, sleeping_iterations,
					  &futex_rtt);
	if (ret == 0)
		ret = measure_round_trips(socket_path, WAIT_EPOLL, 100, sleeping_iterations,
					  &epoll_rtt);
	kill(daemon, SIGTERM);
	waitpid(daemon, NULL, 0);
	if (ret) {
		fprintf(stderr, "bench ipc: ring round trips failed: %s\n", strerror(-ret));
		fprintf(json, "null");
		return 1;
	}

	double vs_floor = ring_rtt.p50 / pingpong_ns;
	double vs_socket = unix_rtt.p50 / ring_rtt.p50;
	printf("ringserve-bench ipc (client on CPU %d, scheduler core on CPU %d, null engine)\n",
	       options.client_cpu, options.daemon_cpu);
	printf("  %-44s %10s %10s %10s\n", "round trip, 16 tokens in, 1 out", "p50 ns", "p99 ns",
	       "p99.9 ns");
	printf("  %-44s %10.0f %10s %10s\n", "cache-line ping-pong (floor)", pingpong_ns, "-", "-");
	printf("  %-44s %10.0f %10.0f %10.0f\n", "ringserve rings", ring_rtt.p50, ring_rtt.p99,
	       ring_rtt.p999);
	printf("  %-44s %10.0f %10.0f %10.0f\n", "Unix-socket RPC (same payload)", unix_rtt.p50,
	       unix_rtt.p99, unix_rtt.p999);
	printf("  %-44s %10.0f %10.0f %10.0f\n", "ringserve, client asleep in rs_wait (futex)",
	       futex_rtt.p50, futex_rtt.p99, futex_rtt.p999);
	printf("  %-44s %10.0f %10.0f %10.0f\n", "ringserve, client asleep in epoll (event fd)",
	       epoll_rtt.p50, epoll_rtt.p99, epoll_rtt.p999);
	printf("  %-44s %10.0f requests/s\n", "pipelined, 1 client", throughput_1);
	printf("  %-44s %10.0f requests/s\n", "pipelined, 4 clients", throughput_4);
	printf("  targets: p50 <= 3x floor: %.2fx %s; >= 20x below Unix socket: %.1fx %s; "
	       ">= 1M req/s with 1 client: %.2fM %s\n",
	       vs_floor, vs_floor <= 3 ? "met" : "MISSED", vs_socket,
	       vs_socket >= 20 ? "met" : "MISSED", throughput_1 / 1e6,
	       throughput_1 >= 1e6 ? "met" : "MISSED");

	fprintf(json,
		"{\"client_cpu\": %d, \"daemon_cpu\": %d, \"pingpong_rtt_ns\": %.1f, "
		"\"ring_rtt_ns\": {\"p50\": %.0f, \"p99\": %.0f, \"p999\": %.0f, \"mean\": %.1f}, "
		"\"unix_socket_rtt_ns\": {\"p50\": %.0f, \"p99\": %.0f, \"p999\": %.0f, \"mean\": "
		"%.1f}, "
		"\"throughput_1_client_rps\": %.0f, \"throughput_4_clients_rps\": %.0f, "
		"\"ring_vs_floor\": %.3f, \"socket_vs_ring\": %.2f, "
		"\"futex_sleeper_rtt_ns\": {\"p50\": %.0f, \"p99\": %.0f, \"p999\": %.0f}, "
		"\"epoll_sleeper_rtt_ns\": {\"p50\": %.0f, \"p99\": %.0f, \"p999\": %.0f}}",
		options.client_cpu, options.daemon_cpu, pingpong_ns, ring_rtt.p50, ring_rtt.p99,
		ring_rtt.p999, ring_rtt.mean, unix_rtt.p50, unix_rtt.p99, unix_rtt.p999,
		unix_rtt.mean, throughput_1, throughput_4, vs_floor, vs_socket, futex_rtt.p50,
		futex_rtt.p99, futex_rtt.p999, epoll_rtt.p50, epoll_rtt.p99, epoll_rtt.p999);
	return 0;
}
