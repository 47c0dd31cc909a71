/* A client connection's lifecycle: its segment, its disconnection, its release. */
#include <errno.h>
#include <numa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "shm/clock.h"
#include "shm/futex.h"
#include "shm/segment.h"

int rs_client_setup_segment(struct rs_daemon *daemon, struct rs_client *client, int *memfd)
{
	const struct rs_daemon_config *config = &daemon->config;
	struct rs_segment_params params = {
	    .sq_entries = config->ring_entries,
	    .cq_entries = config->ring_entries,
	    .slot_count = config->slots,
	    .slot_prompt_capacity = config->max_prompt_tokens,
	    .slot_output_capacity = config->max_output_tokens,
	    .max_inflight = config->max_inflight,
	    .max_prompt_tokens = config->max_prompt_tokens,
	    .max_output_tokens = config->max_output_tokens,
	    .wake_mode = daemon->wake_mode,
	    .client_id = client->id,
	    .features = RS_FEATURE_EVENT_FD,
	};
	void *map;
	size_t size;
	int ret = rs_segment_create(&params, memfd, &map, &size);
	if (ret)
		return ret;
	/* Keep the segment on the scheduler core's node: it is the core that polls it. */
	if (daemon->numa_node >= 0)
		numa_tonode_memory(map, size, daemon->numa_node);

	client->eventfd = -1;
	if (daemon->wake_mode == RS_WAKE_EVENTFD) {
		client->eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (client->eventfd < 0) {
			ret = -errno;
			munmap(map, size);
			close(*memfd);
			return ret;
		}
	}
	client->slot_request = calloc(params.slot_count, sizeof(*client->slot_request));
	/* Let the engine's device write tokens straight into the segment. */
	ret = daemon->engine->ops->register_memory
		  ? daemon->engine->ops->register_memory(daemon->engine, map, size)
		  : 0;
	if (!client->slot_request || ret) {
		if (!ret && daemon->engine->ops->unregister_memory)
			daemon->engine->ops->unregister_memory(daemon->engine, map);
		free(client->slot_request);
		client->slot_request = NULL;
		if (client->eventfd >= 0)
			close(client->eventfd);
		client->eventfd = -1; /* the disconnect that follows closes it otherwise */
		munmap(map, size);
		close(*memfd);
		return ret ? ret : -ENOMEM;
	}
	client->segment = map;
	client->segment_size = size;
	client->shared = map;
	/* Our private copy of the layout: we wrote it, and we never read it back from the
	 * segment, where the client could change it. */
	rs_segment_layout(&params, &client->hdr);
	unsigned char *base = map;
	rs_ring_init(&client->sq, (struct rs_ring_indices *)(base + client->hdr.sq_ring_offset),
		     base + client->hdr.sq_entries_offset, sizeof(struct rs_sqe),
		     client->hdr.sq_entries, false);
	rs_ring_init(&client->cq, (struct rs_ring_indices *)(base + client->hdr.cq_ring_offset),
		     base + client->hdr.cq_entries_offset, sizeof(struct rs_cqe),
		     client->hdr.cq_entries, true);
	client->inflight = 0;
	client->alive_requests = 0;
	client->doorbell_armed = false;
	/* Relaxed: the segment is not shared yet; the sendmsg that shares it orders these. */
	rs_store_relaxed(&client->shared->daemon_heartbeat_ns, rs_now_ns());
	rs_store_relaxed(&client->shared->daemon_state,
			 daemon->draining ? RS_DAEMON_DRAINING : RS_DAEMON_RUNNING);
	return 0;
}

void rs_client_disconnect(struct rs_daemon *daemon, struct rs_client *client, const char *why)
{
	if (client->state == RS_CLIENT_CLOSING || client->state == RS_CLIENT_FREE)
		return;
	/* A client closing its socket is routine; anything else is worth a line. */
	if (daemon->config.verbose || strcmp(why, "socket closed") != 0)
		fprintf(stderr, "ringserved: client %u (pid %d): disconnected: %s\n", client->id,
			(int)client->pid, why);
	if (strncmp(why, "protocol:", 9) == 0) /* the client broke the protocol */
		daemon->stats.clients_broken++;
	bool was_active = client->state == RS_CLIENT_ACTIVE;
	/* Orphan its requests while the client is still marked alive, so that nothing frees
	 * it during the walk. Queued requests go now; running ones leave their lane at the
	 * next step boundary, and until then the segment stays mapped for the engine. */
	if (client->slot_request)
		rs_scheduler_cancel_client(daemon, client, -ECONNRESET, true);
	client->state = RS_CLIENT_CLOSING;
	if (was_active) {
		struct rs_client *last = daemon->active[--daemon->n_active_clients];
		daemon->active[client->active_pos] = last;
		last->active_pos = client->active_pos;
	}
	/* Completes the pending receive on the socket (with 0). */
	shutdown(client->fd, SHUT_RDWR);
	rs_control_cancel_doorbell(daemon, client);
	rs_client_maybe_free(daemon, client);
}

void rs_client_activate(struct rs_daemon *daemon, struct rs_client *client)
{
	client->state = RS_CLIENT_ACTIVE;
	client->active_pos = daemon->n_active_clients;
	daemon->active[daemon->n_active_clients++] = client;
}

void rs_client_maybe_free(struct rs_daemon *daemon, struct rs_client *client)
{
	if (client->state != RS_CLIENT_CLOSING || client->pending_io || client->alive_requests)
		return;
	if (client->listed_for_notify) {
		struct rs_client **link = &daemon->notify_list;
		while (*link != client)
			link = &(*link)->next_notify;
		*link = client->next_notify;
		client->listed_for_notify = false;
	}
	if (client->segment) {
		if (daemon->engine->ops->unregister_memory)
			daemon->engine->ops->unregister_memory(daemon->engine, client->segment);
		munmap(client->segment, client->segment_size);
	}
	if (client->eventfd >= 0)
		close(client->eventfd);
	if (client->event_fd >= 0)
		close(client->event_fd);
	close(client->fd);
	if (client->tenant)
		rs_sched_tenant_release(daemon->sched, client->tenant);
	client->tenant = NULL;
	client->broken = NULL;
	free(client->slot_request);
	client->slot_request = NULL;
	client->segment = NULL;
	client->shared = NULL;
	client->eventfd = -1;
	client->event_fd = -1;
	client->notify_reasons = 0;
	client->fd = -1;
	client->generation++;
	client->state = RS_CLIENT_FREE;
}
