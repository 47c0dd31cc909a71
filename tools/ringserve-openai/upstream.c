/* Tenant connections to ringserved and their pump threads (upstream.h). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "tools/ringserve-openai/upstream.h"

struct bridge_counters bridge_counters;

#define COUNT(field, delta) __atomic_add_fetch(&bridge_counters.field, (delta), __ATOMIC_RELAXED)

struct upstream {
	pthread_mutex_t lock; /* held around every rs_* call and the fields below */
	struct rs_connection *conn;
	struct rs_model_info info;
	int event_fd; /* rs_event_fd's, owned by conn */
	int wake_fd;  /* eventfd: a new request, for the pump to re-arm */
	bool dead;
	int32_t dead_status;
	unsigned refs; /* the tenant link, the pump, each request */
	struct bridge_request *requests;
};

static void notify(int fd)
{
	uint64_t one = 1;
	/* An eventfd write fails only when the counter would overflow: it is readable then. */
	if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		fprintf(stderr, "ringserve-openai: eventfd write: %s\n", strerror(errno));
}

static void drain(int fd)
{
	uint64_t value;
	while (read(fd, &value, sizeof(value)) > 0)
		;
}

void tenant_link_init(struct tenant_link *link, const char *tenant, const char *socket_path)
{
	memset(link, 0, sizeof(*link));
	snprintf(link->tenant, sizeof(link->tenant), "%s", tenant);
	link->socket_path = socket_path;
	pthread_mutex_init(&link->lock, NULL);
}

void upstream_put(struct upstream *up)
{
	pthread_mutex_lock(&up->lock);
	bool last = --up->refs == 0;
	pthread_mutex_unlock(&up->lock);
	if (!last)
		return;
	rs_close(up->conn); /* closes event_fd too */
	close(up->wake_fd);
	pthread_mutex_destroy(&up->lock);
	free(up);
}

/* The connection is gone: fail every request on it (under the lock). Abandoned ones are
 * freed here; the others learn it from bridge_request_state. */
static void mark_dead(struct upstream *up, int32_t status)
{
	up->dead = true;
	up->dead_status = status == -EHOSTDOWN ? -EHOSTDOWN : -ECONNRESET;
	COUNT(upstream_deaths, 1);
	struct bridge_request **link = &up->requests;
	while (*link) {
		struct bridge_request *req = *link;
		if (req->abandoned) {
			*link = req->next;
			close(req->notify_fd);
			free(req);
			COUNT(requests_active, -1);
			up->refs--; /* the request's reference; the pump's keeps it alive */
			continue;
		}
		notify(req->notify_fd);
		link = &req->next;
	}
}

static struct bridge_request *find_request(struct upstream *up, int handle)
{
	for (struct bridge_request *req = up->requests; req; req = req->next)
		if (req->handle == handle)
			return req;
	return NULL;
}

/* Take every waiting completion (under the lock). */
static int take_completions(struct upstream *up)
{
	struct rs_completion done[32];
	int n;
	while ((n = rs_poll(up->conn, done, 32)) > 0) {
		for (int i = 0; i < n; i++) {
			struct bridge_request *req = find_request(up, done[i].request);
			if (!req)
				continue; /* not ours (cannot happen: every submit is recorded) */
			req->done = true;
			req->status = done[i].status;
			req->completion_flags = done[i].flags;
			if (!req->abandoned) {
				notify(req->notify_fd);
				continue;
			}
			int ret = rs_release(up->conn, req->handle);
			if (ret < 0)
				fprintf(stderr, "ringserve-openai: release: %s\n", strerror(-ret));
			struct bridge_request **link = &up->requests;
			while (*link != req)
				link = &(*link)->next;
			*link = req->next;
			close(req->notify_fd);
			free(req);
			COUNT(requests_active, -1);
			up->refs--;
		}
	}
	return n;
}

/* Wake every request whose output grew (under the lock). */
static void report_output(struct upstream *up)
{
	for (struct bridge_request *req = up->requests; req; req = req->next) {
		if (req->done || req->abandoned)
			continue;
		const uint32_t *tokens;
		int n = rs_output(up->conn, req->handle, &tokens);
		if (n > 0 && (uint32_t)n > req->seen) {
			req->seen = (uint32_t)n;
			notify(req->notify_fd);
		}
	}
}

/* The pump: sleeps on the event descriptor (and on wake_fd, for new requests) and hands
 * out news. A poll timeout of one second lets rs_event_arm notice a daemon that stopped
 * answering without dying (its heartbeat gets old). */
static void *pump_main(void *arg)
{
	struct upstream *up = arg;
	struct pollfd fds[2] = {{.fd = up->event_fd, .events = POLLIN},
				{.fd = up->wake_fd, .events = POLLIN}};
	pthread_mutex_lock(&up->lock);
	for (;;) {
		int ready = rs_event_arm(up->conn, RS_EVENT_COMPLETION | RS_EVENT_OUTPUT);
		if (ready < 0) {
			mark_dead(up, ready);
			break;
		}
		if (ready == 0) {
			pthread_mutex_unlock(&up->lock);
			poll(fds, 2, 1000);
			drain(up->wake_fd);
			pthread_mutex_lock(&up->lock);
			continue;
		}
		if (ready & RS_EVENT_OUTPUT)
			report_output(up);
		int ret = take_completions(up);
		if (ret < 0) {
			mark_dead(up, ret);
			break;
		}
	}
	pthread_mutex_unlock(&up->lock);
	upstream_put(up);
	return NULL;
}

/* A new connection for the tenant, its pump running; refs: the link's and the caller's. */
static int upstream_connect(struct tenant_link *link, struct upstream **out)
{
	struct upstream *up = calloc(1, sizeof(*up));
	if (!up)
		return -ENOMEM;
	struct rs_connect_options options = {.tenant = link->tenant};
	int ret = rs_connect(link->socket_path, &options, &up->conn);
	if (ret < 0)
		goto fail_free;
	rs_model_info(up->conn, &up->info);
	ret = rs_event_fd(up->conn);
	if (ret < 0)
		goto fail_close;
	up->event_fd = ret;
	up->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (up->wake_fd < 0) {
		ret = -errno;
		goto fail_close;
	}
	pthread_mutex_init(&up->lock, NULL);
	up->refs = 3; /* link, caller, pump */
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_t pump;
	ret = -pthread_create(&pump, &attr, pump_main, up);
	pthread_attr_destroy(&attr);
	if (ret < 0) {
		close(up->wake_fd);
		pthread_mutex_destroy(&up->lock);
		goto fail_close;
	}
	COUNT(upstream_connects, 1);
	*out = up;
	return 0;
fail_close:
	rs_close(up->conn);
fail_free:
	free(up);
	return ret;
}

int upstream_acquire(struct tenant_link *link, struct upstream **out)
{
	pthread_mutex_lock(&link->lock);
	struct upstream *up = link->up;
	if (up) {
		pthread_mutex_lock(&up->lock);
		bool dead = up->dead;
		if (!dead)
			up->refs++;
		pthread_mutex_unlock(&up->lock);
		if (dead) {
			link->up = NULL;
			upstream_put(up); /* the link's reference */
			up = NULL;
		}
	}
	int ret = 0;
	if (!up) {
		ret = upstream_connect(link, &up);
		if (ret == 0)
			link->up = up;
	}
	pthread_mutex_unlock(&link->lock);
	if (ret == 0)
		*out = up;
	return ret;
}

const struct rs_model_info *upstream_model(const struct upstream *up)
{
	return &up->info;
}

int upstream_count_tokens(struct upstream *up, const char *text, size_t len)
{
	pthread_mutex_lock(&up->lock);
	int ret =
	    up->dead ? up->dead_status : rs_tokenize(up->conn, text, len, NULL, 0, RS_TOKENIZE_BOS);
	pthread_mutex_unlock(&up->lock);
	return ret;
}

int upstream_chat_tokens(struct upstream *up, const struct rs_chat_message *messages, size_t n,
			 uint32_t **ids)
{
	*ids = NULL;
	pthread_mutex_lock(&up->lock);
	int count = up->dead ? up->dead_status
			     : rs_chat_tokenize(up->conn, RS_CHAT_TEMPLATE_MODEL, messages, n,
						RS_CHAT_ADD_ASSISTANT, NULL, 0);
	/* The ids of one call: llama3.2's date is read at each, and may change between the
	 * size query and the fill (midnight); then the fill asks for more room. */
	uint32_t room = count >= 0 ? (uint32_t)count + 16 : 0;
	for (int tries = 0; tries < 4 && (count >= 0 || count == -ENOSPC); tries++) {
		uint32_t *grown = realloc(*ids, (size_t)room * sizeof(**ids));
		if (!grown) {
			count = -ENOMEM;
			break;
		}
		*ids = grown;
		count = rs_chat_tokenize(up->conn, RS_CHAT_TEMPLATE_MODEL, messages, n,
					 RS_CHAT_ADD_ASSISTANT, *ids, room);
		if (count >= 0)
			break;
		room *= 2;
	}
	pthread_mutex_unlock(&up->lock);
	if (count < 0) {
		free(*ids);
		*ids = NULL;
	}
	return count;
}

int upstream_submit(struct upstream *up, const struct rs_generate_params *params, const char *text,
		    size_t len, struct bridge_request **out)
{
	struct bridge_request *req = calloc(1, sizeof(*req));
	if (!req)
		return -ENOMEM;
	req->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (req->notify_fd < 0) {
		int ret = -errno;
		free(req);
		return ret;
	}
	req->up = up;
	pthread_mutex_lock(&up->lock);
	int ret = up->dead ? up->dead_status
		  : text   ? rs_submit_text(up->conn, params, text, len)
			   : rs_submit(up->conn, params);
	if (ret >= 0) {
		req->handle = ret;
		req->next = up->requests;
		up->requests = req;
		up->refs++;
		ret = 0;
	}
	pthread_mutex_unlock(&up->lock);
	if (ret < 0) {
		close(req->notify_fd);
		free(req);
		return ret;
	}
	COUNT(requests_total, 1);
	COUNT(requests_active, 1);
	notify(up->wake_fd); /* the pump re-arms with the new request in its scan */
	*out = req;
	return 0;
}

int bridge_request_detok_init(struct bridge_request *req, struct rs_detok *detok)
{
	pthread_mutex_lock(&req->up->lock);
	int ret =
	    req->up->dead ? req->up->dead_status : rs_detok_init(req->up->conn, detok, req->handle);
	pthread_mutex_unlock(&req->up->lock);
	return ret;
}

uint32_t bridge_request_state(struct bridge_request *req, const uint32_t **tokens, bool *done,
			      int32_t *status, uint32_t *completion_flags)
{
	struct upstream *up = req->up;
	uint32_t count = 0;
	pthread_mutex_lock(&up->lock);
	if (up->dead && !req->done) {
		*done = true;
		*status = up->dead_status;
		*completion_flags = 0;
		*tokens = NULL;
	} else {
		/* done first: a completed request's count read after it is final. */
		*done = req->done;
		*status = req->status;
		*completion_flags = req->completion_flags;
		int n = rs_output(up->conn, req->handle, tokens);
		count = n > 0 ? (uint32_t)n : 0;
	}
	pthread_mutex_unlock(&up->lock);
	return count;
}

int bridge_request_wait(struct bridge_request *req, int client_fd)
{
	struct pollfd fds[2] = {{.fd = req->notify_fd, .events = POLLIN},
				{.fd = client_fd, .events = POLLRDHUP}};
	for (;;) {
		int n = poll(fds, client_fd >= 0 ? 2 : 1, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (client_fd >= 0 && (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
			return -ECONNABORTED;
		drain(req->notify_fd);
		return 0;
	}
}

void bridge_request_end(struct bridge_request *req)
{
	struct upstream *up = req->up;
	pthread_mutex_lock(&up->lock);
	bool free_now = true;
	if (up->dead) {
		/* nothing to give back to a daemon that is gone */
	} else if (req->done) {
		int ret = rs_release(up->conn, req->handle);
		if (ret < 0)
			fprintf(stderr, "ringserve-openai: release: %s\n", strerror(-ret));
	} else {
		int ret = rs_cancel(up->conn, req->handle);
		/* -EINVAL: it finished on its own and its completion is on the way. */
		if (ret < 0 && ret != -EINVAL)
			fprintf(stderr, "ringserve-openai: cancel: %s\n", strerror(-ret));
		COUNT(cancels, 1);
		req->abandoned = true;
		free_now = false;
		notify(up->wake_fd);
	}
	if (free_now) {
		struct bridge_request **link = &up->requests;
		while (*link != req)
			link = &(*link)->next;
		*link = req->next;
		close(req->notify_fd);
		free(req);
		COUNT(requests_active, -1);
	}
	pthread_mutex_unlock(&up->lock);
	if (free_now)
		upstream_put(up);
}
