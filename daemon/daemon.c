/* The daemon's lifetime: set-up, the scheduler core's loop, drain and tear-down. */
#include <errno.h>
#include <numa.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "daemon/sched/planner.h"
#include "shm/clock.h"
#include "shm/futex.h"
#include "shm/segment.h"

void rs_daemon_config_defaults(struct rs_daemon_config *config)
{
	memset(config, 0, sizeof(*config));
	config->socket_path = NULL;
	config->socket_mode = 0660;
	config->cpu = -1;
	config->max_clients = 64;
	config->ring_entries = 256;
	config->slots = 256;
	config->max_inflight = 256;
	config->max_prompt_tokens = 4096;
	config->max_output_tokens = 4096;
	config->spin_ns = 200 * 1000;
	config->grace_ns = 10ull * 1000 * 1000 * 1000;
	config->heartbeat_ns = 100 * 1000 * 1000;
	config->admission.policy = RS_ADMISSION_DLPM;
	config->prefix_cache = true;
	config->multibin_params.bins = 4;
	config->max_tenants = 1024;
}

/* Pin the calling thread (the scheduler core) and prefer its NUMA node's memory. */
static int pin_scheduler_core(struct rs_daemon *daemon)
{
	daemon->numa_node = -1;
	int cpu = daemon->config.cpu;
	if (cpu < 0)
		return 0;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0) {
		int ret = -errno;
		fprintf(stderr, "ringserved: cannot pin to CPU %d: %s\n", cpu, strerror(errno));
		return ret;
	}
	if (numa_available() >= 0) {
		daemon->numa_node = numa_node_of_cpu(cpu);
		if (daemon->numa_node >= 0)
			numa_set_preferred(daemon->numa_node);
	}
	return 0;
}

/* The scheduling core's clock: the loop's time, read once per iteration. */
static uint64_t clock_now(void *ctx)
{
	return ((struct rs_daemon *)ctx)->now_ns;
}

/* Free KV blocks the loop keeps by evicting cached prefixes when it has nothing else to
 * do (rs_sched_idle): 1/64 of the pool (what the cache gives up), at most 16 (a request
 * of 256 tokens), so that an admission into a full pool does not evict while its client
 * waits. None under 64 blocks, where every cached block counts. */
static uint32_t kv_reserve_blocks(uint32_t n_blocks)
{
	return n_blocks / 64 < 16 ? n_blocks / 64 : 16;
}

static int create_shared_segment(struct rs_daemon *daemon)
{
	const struct rs_serving_engine *engine = daemon->engine;
	struct rs_shared_header header = {
	    .vocab_size = engine->vocab_size,
	    .bos_token = engine->bos_token,
	    .eos_token = engine->eos_token,
	    .max_seq_len = engine->max_seq_len,
	    .n_end_tokens = engine->n_end_tokens,
	};
	memcpy(header.end_tokens, engine->end_tokens, sizeof(header.end_tokens));
	snprintf(header.model_name, sizeof(header.model_name), "%s", engine->model_name);
	snprintf(header.engine_name, sizeof(header.engine_name), "%s", engine->name);
	int fd = rs_shared_segment_create(&header, engine->vocab, engine->vocab_bytes,
					  engine->chat_template, engine->chat_template_bytes,
					  &daemon->shared_size);
	if (fd < 0)
		return fd;
	daemon->shared_fd = fd;
	return 0;
}

int rs_daemon_init(struct rs_daemon *daemon, const struct rs_daemon_config *config,
		   struct rs_serving_engine *engine)
{
	memset(daemon, 0, sizeof(*daemon));
	daemon->config = *config;
	daemon->engine = engine;
	daemon->listen_fd = -1;
	daemon->signal_fd = -1;
	daemon->shared_fd = -1;
	int ret;
	if (config->max_inflight > config->ring_entries || config->max_inflight > config->slots ||
	    config->max_clients == 0) {
		fprintf(stderr,
			"ringserved: --max-inflight must not exceed --ring-entries or --slots\n");
		return -EINVAL;
	}
	if ((ret = pin_scheduler_core(daemon)))
		return ret;
	daemon->clients = calloc(config->max_clients, sizeof(*daemon->clients));
	daemon->active = calloc(config->max_clients, sizeof(*daemon->active));
	daemon->lanes = calloc(engine->lanes, sizeof(*daemon->lanes));
	if (!daemon->clients || !daemon->active || !daemon->lanes)
		return -ENOMEM;
	struct rs_sched_config sched_config = {
	    .lanes = engine->lanes,
	    .max_batch = engine->max_batch,
	    .max_batch_tokens = engine->max_batch_tokens,
	    .max_tenants = config->max_tenants,
	    .vocab_size = engine->vocab_size,
	    .eos_token = engine->eos_token,
	    .n_end_tokens = engine->n_end_tokens,
	    .prefix_cache = config->prefix_cache,
	    .kv_reserve_blocks = kv_reserve_blocks(rs_kv_n_blocks(engine->kv)),
	    .admission = config->admission,
	    .planner = config->multibin ? &rs_planner_multibin : NULL,
	    .multibin = config->multibin_params,
	    .workers = engine->workers,
	    .dispatch = config->dispatch,
	};
	struct rs_sched_hooks hooks = {
	    .now_ns = clock_now,
	    .token = rs_scheduler_on_token,
	    .finish = rs_scheduler_on_finish,
	    .publish = rs_scheduler_on_publish,
	    .ctx = daemon,
	};
	_Static_assert(sizeof(sched_config.end_tokens) == sizeof(engine->end_tokens),
		       "the scheduler takes every end token the segment has");
	memcpy(sched_config.end_tokens, engine->end_tokens, sizeof(sched_config.end_tokens));
	if (engine->workers > 1)
		sched_config.lanes = engine->lanes / engine->workers; /* per worker */
	ret =
	    engine->workers > 1
		? rs_sched_create_workers(&sched_config, engine->worker_kv, &hooks, &daemon->sched)
		: rs_sched_create(&sched_config, engine->kv, &hooks, &daemon->sched);
	if (ret) {
		fprintf(stderr, "ringserved: scheduler: %s\n", strerror(-ret));
		return ret;
	}
	for (uint32_t i = 0; i < config->max_clients; i++) {
		daemon->clients[i].index = i;
		daemon->clients[i].fd = -1;
		daemon->clients[i].eventfd = -1;
		daemon->clients[i].event_fd = -1;
	}
	/* Every request a client can have in flight, for every client: admission never
	 * runs out of requests before a client hits its own limit. */
	if ((ret = rs_request_pool_init(&daemon->pool, config->max_clients * config->max_inflight)))
		return ret;
	if ((ret = create_shared_segment(daemon)))
		return ret;
	if ((ret = rs_stats_publisher_create(config->max_tenants, rs_now_ns(),
					     &daemon->stats_publisher))) {
		fprintf(stderr, "ringserved: statistics segment: %s\n", strerror(-ret));
		return ret;
	}
	if ((ret = rs_control_init(daemon)))
		return ret;
	daemon->last_heartbeat_ns = rs_now_ns();
	daemon->now_ns = daemon->last_heartbeat_ns;
	rs_stats_publish(daemon->stats_publisher, daemon, daemon->now_ns); /* readable at once */
	fprintf(
	    stderr,
	    "ringserved: listening on %s%s (engine %s, model %s, %u lane(s), wakeups by %s%s)\n",
	    daemon->config.socket_path, daemon->socket_activated ? " (passed by systemd)" : "",
	    engine->name, engine->model_name, engine->lanes,
	    daemon->wake_mode == RS_WAKE_FUTEX ? "io_uring FUTEX_WAIT" : "eventfd",
	    daemon->futex_wait_supported ? "" : " (IORING_OP_FUTEX_WAIT not supported)");
	return 0;
}

static void write_heartbeats(struct rs_daemon *daemon)
{
	daemon->last_heartbeat_ns = daemon->now_ns;
	for (uint32_t i = 0; i < daemon->n_active_clients; i++)
		/* Relaxed: a liveness hint; nothing is published through it. */
		rs_store_relaxed(&daemon->active[i]->shared->daemon_heartbeat_ns, daemon->now_ns);
	/* The statistics segment goes at the same pace (and so also while we sleep). */
	rs_stats_publish(daemon->stats_publisher, daemon, daemon->now_ns);
}

/* SIGTERM handling, once per iteration while draining. */
static void drain_step(struct rs_daemon *daemon)
{
	if (!daemon->drain_expired && daemon->now_ns >= daemon->drain_deadline_ns &&
	    rs_scheduler_busy(daemon)) {
		fprintf(stderr,
			"ringserved: grace period over: failing %u request(s) with -ESHUTDOWN\n",
			daemon->pool.in_use);
		daemon->drain_expired = true;
		/* Downwards: see the poll loop in rs_daemon_run. */
		for (uint32_t i = daemon->n_active_clients; i-- > 0;)
			rs_scheduler_cancel_client(daemon, daemon->active[i], -ESHUTDOWN, false);
	}
	if (!rs_scheduler_busy(daemon))
		daemon->stop = true;
}

int rs_daemon_run(struct rs_daemon *daemon)
{
	uint64_t idle_since = rs_now_ns();
	while (!daemon->stop) {
		daemon->now_ns = rs_now_ns();
		int did = rs_control_poll(daemon);
		/* Downwards: a client disconnected during its turn (a protocol error) is
		 * replaced in active[] by the last one, which this order has already visited;
		 * upwards, that one would be skipped. */
		for (uint32_t i = daemon->n_active_clients; i-- > 0;)
			did += rs_scheduler_poll_client(daemon, daemon->active[i]);
		did += rs_scheduler_run_lanes(daemon);
		rs_scheduler_notify_clients(daemon);
		/* Clients have this turn's answers: evictions for the KV reserve now, not in
		 * the next admission while its client waits. (Only a turn's work takes free
		 * blocks: nothing to refill after an idle turn.) */
		if (did)
			rs_sched_idle(daemon->sched);
		if (daemon->now_ns - daemon->last_heartbeat_ns >= daemon->config.heartbeat_ns)
			write_heartbeats(daemon);
		if (daemon->draining)
			drain_step(daemon);
		if (did) {
			idle_since = daemon->now_ns;
			continue;
		}
		if (daemon->now_ns - idle_since < daemon->config.spin_ns ||
		    rs_scheduler_next_deadline(daemon) == UINT64_MAX) {
			rs_cpu_relax();
			continue;
		}
		rs_wakeup_sleep(daemon);
		idle_since = rs_now_ns();
	}
	/* The last update: STOPPED, with the final counts. */
	daemon->now_ns = rs_now_ns();
	rs_stats_publish(daemon->stats_publisher, daemon, daemon->now_ns);
	/* Tell every client we are gone before the sockets close. */
	for (uint32_t i = 0; i < daemon->n_active_clients; i++) {
		struct rs_client *client = daemon->active[i];
		/* R-state: release, so a client that sees STOPPED sees our last completions. */
		rs_store_release(&client->shared->daemon_state, RS_DAEMON_STOPPED);
		rs_fetch_add_release(&client->shared->client_doorbell, 1);
		rs_futex_wake(&client->shared->client_doorbell, 1 << 30);
	}
	fprintf(stderr,
		"ringserved: stopped (%llu requests completed, %llu failed; %llu clients served, "
		"%llu refused, %llu disconnected for protocol errors; slept %llu times)\n",
		(unsigned long long)daemon->stats.requests_completed,
		(unsigned long long)daemon->stats.requests_failed,
		(unsigned long long)daemon->stats.clients_accepted,
		(unsigned long long)daemon->stats.clients_rejected,
		(unsigned long long)daemon->stats.clients_broken,
		(unsigned long long)daemon->stats.sleeps);
	return 0;
}

void rs_daemon_destroy(struct rs_daemon *daemon)
{
	/* What each worker served, for the operator (and tests/daemon_workers). */
	uint32_t workers = daemon->sched && daemon->engine ? daemon->engine->workers : 0;
	for (uint32_t w = 0; workers > 1 && w < workers; w++)
		fprintf(stderr, "ringserved: worker %u served %llu requests%s\n", w,
			(unsigned long long)rs_sched_worker_served(daemon->sched, w),
			rs_sched_worker_in_service(daemon->sched, w)
			    ? ""
			    : " (taken out of service: --worker-max-failures)");
	rs_control_destroy(daemon);
	if (daemon->clients) {
		for (uint32_t i = 0; i < daemon->config.max_clients; i++) {
			struct rs_client *client = &daemon->clients[i];
			if (client->state == RS_CLIENT_FREE)
				continue;
			if (client->segment)
				munmap(client->segment, client->segment_size);
			if (client->eventfd >= 0)
				close(client->eventfd);
			if (client->event_fd >= 0)
				close(client->event_fd);
			if (client->fd >= 0)
				close(client->fd);
			free(client->slot_request);
		}
	}
	/* The engine's lanes are idle (the loop drained them, or never started). */
	rs_sched_destroy(daemon->sched);
	daemon->sched = NULL;
	if (daemon->pool.all)
		rs_request_pool_destroy(&daemon->pool);
	if (daemon->shared_fd >= 0)
		close(daemon->shared_fd);
	rs_stats_publisher_destroy(daemon->stats_publisher);
	daemon->stats_publisher = NULL;
	free(daemon->clients);
	free(daemon->active);
	free(daemon->lanes);
	if (daemon->engine)
		daemon->engine->ops->destroy(daemon->engine);
	daemon->engine = NULL;
}
