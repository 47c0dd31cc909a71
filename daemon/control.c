/* The io_uring side of the daemon: the control socket (accept, handshake, SCM_RIGHTS),
 * client sockets (EOF means the client is gone), signals, and the doorbell waits the
 * scheduler core sleeps on. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "daemon/systemd.h"
#include "shm/clock.h"
#include "shm/segment.h"

/* IORING_OP_FUTEX_WAIT (Linux 6.7) is newer than the headers we build against. */
#define RS_IORING_OP_FUTEX_WAIT	  51
#define RS_FUTEX2_SIZE_U32	  0x02
#define RS_FUTEX_BITSET_MATCH_ANY 0xffffffffull

/* user_data of our io_uring operations: kind, client generation, client index. */
enum op_kind {
	OP_ACCEPT = 1,
	OP_CLIENT_RECV,
	OP_DOORBELL,
	OP_SIGNAL,
	OP_CANCEL,
	OP_REJECTED,
	OP_LANE,
	OP_ACCEPT_RETRY,
	OP_EVENT_WRITE
};

/* Writes to one client's eventfd in flight at most. A write stays in flight only while
 * the eventfd's counter is full (a client that made it blocking and filled it), and a
 * full counter is readable: the client cannot miss a wake-up we skip then. */
#define RS_MAX_EVENT_WRITES 4

static uint64_t op_data(enum op_kind kind, const struct rs_client *client)
{
	uint64_t data = (uint64_t)kind << 56;
	if (client)
		data |= ((uint64_t)(client->generation & 0xffffff) << 32) | client->index;
	return data;
}

static struct io_uring_sqe *get_sqe(struct rs_daemon *daemon)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&daemon->ring);
	if (!sqe) {
		/* The SQ is full of unsubmitted entries: push them to the kernel. */
		io_uring_submit(&daemon->ring);
		sqe = io_uring_get_sqe(&daemon->ring);
	}
	return sqe;
}

static int arm_accept(struct rs_daemon *daemon)
{
	struct io_uring_sqe *sqe = get_sqe(daemon);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_accept(sqe, daemon->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, op_data(OP_ACCEPT, NULL));
	return 0;
}

/* An accept that failed for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) would fail
 * again at once: retry after a pause instead of spinning on it. */
static bool accept_paused_logged; /* one message per episode, not ten a second */

static void pause_accept(struct rs_daemon *daemon, int error)
{
	static struct __kernel_timespec pause = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
	if (!accept_paused_logged)
		fprintf(stderr, "ringserved: accept: %s; retrying every 100 ms\n", strerror(error));
	accept_paused_logged = true;
	struct io_uring_sqe *sqe = get_sqe(daemon);
	if (!sqe)
		return;
	io_uring_prep_timeout(sqe, &pause, 0, 0);
	io_uring_sqe_set_data64(sqe, op_data(OP_ACCEPT_RETRY, NULL));
}

/* SIGTERM, SIGINT and SIGHUP reach io_uring through an eventfd written by the handler.
 * Not a signalfd: that needs the signals blocked in every thread, and libraries we load
 * (OpenBLAS, CUDA) start threads of their own before main. The handler says which kind
 * came in a flag it sets before the write; the loop clears a flag and acts on it after
 * the read completes, so a signal is never lost: one that sets its flag too late to be
 * seen writes the eventfd after our read, and the read we queue next completes at once. */
static int signal_eventfd = -1;
static volatile sig_atomic_t last_signal;
static _Atomic int drain_requested;  /* SIGTERM or SIGINT */
static _Atomic int reload_requested; /* SIGHUP */
static uint64_t signal_count;

static void on_signal(int signo)
{
	int saved_errno = errno;
	uint64_t one = 1;
	if (signo != SIGHUP)
		last_signal = signo; /* begin_drain names it */
	/* R-signal: pairs with A-signal in handle_signals. Lock-free atomics are
	 * async-signal-safe, and the handler may run on a library's thread. */
	rs_store_release(signo == SIGHUP ? &reload_requested : &drain_requested, 1);
	/* write(2) is async-signal-safe; an overflowing counter cannot happen here. */
	if (write(signal_eventfd, &one, sizeof(one)) < 0)
		last_signal = signo;
	errno = saved_errno;
}

static int arm_signal(struct rs_daemon *daemon)
{
	struct io_uring_sqe *sqe = get_sqe(daemon);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_read(sqe, daemon->signal_fd, &signal_count, sizeof(signal_count), 0);
	io_uring_sqe_set_data64(sqe, op_data(OP_SIGNAL, NULL));
	return 0;
}

/* A peer has this long to send its hello; one that connects and says nothing must not
 * hold a client slot and a descriptor forever. */
static struct __kernel_timespec hello_timeout = {.tv_sec = 5};

static int arm_client_recv(struct rs_daemon *daemon, struct rs_client *client)
{
	bool handshake = client->state == RS_CLIENT_HANDSHAKE;
	/* The receive and its linked timeout must sit in the SQ together. */
	if (handshake && io_uring_sq_space_left(&daemon->ring) < 2)
		io_uring_submit(&daemon->ring);
	struct io_uring_sqe *sqe = get_sqe(daemon);
	if (!sqe)
		return -EBUSY;
	/* recvmsg, not recv: RS_CONTROL_EVENT_FD carries a descriptor. */
	client->recv_iov =
	    (struct iovec){.iov_base = client->recv_buf, .iov_len = sizeof(client->recv_buf)};
	memset(&client->recv_control, 0, sizeof(client->recv_control));
	client->recv_msg = (struct msghdr){.msg_iov = &client->recv_iov,
					   .msg_iovlen = 1,
					   .msg_control = client->recv_control.buf,
					   .msg_controllen = sizeof(client->recv_control.buf)};
	io_uring_prep_recvmsg(sqe, client->fd, &client->recv_msg, MSG_CMSG_CLOEXEC);
	io_uring_sqe_set_data64(sqe, op_data(OP_CLIENT_RECV, client));
	client->pending_io++;
	if (handshake) {
		/* Cancels the receive (-ECANCELED: a disconnect) if no hello comes in time. */
		sqe->flags |= IOSQE_IO_LINK;
		struct io_uring_sqe *timeout = io_uring_get_sqe(&daemon->ring);
		io_uring_prep_link_timeout(timeout, &hello_timeout, 0);
		io_uring_sqe_set_data64(timeout, op_data(OP_CANCEL, NULL));
	}
	return 0;
}

int rs_control_arm_doorbell(struct rs_daemon *daemon, struct rs_client *client, uint32_t value)
{
	struct io_uring_sqe *sqe = get_sqe(daemon);
	if (!sqe)
		return -EBUSY;
	if (daemon->wake_mode == RS_WAKE_FUTEX) {
		/* What liburing 2.5's io_uring_prep_futex_wait does: a shared (not
		 * FUTEX2_PRIVATE) 32-bit futex, since the word is in a memfd two processes map. */
		io_uring_prep_rw(RS_IORING_OP_FUTEX_WAIT, sqe, RS_FUTEX2_SIZE_U32,
				 &client->shared->daemon_doorbell, 0, value);
		sqe->addr3 = RS_FUTEX_BITSET_MATCH_ANY;
	} else {
		io_uring_prep_read(sqe, client->eventfd, &client->eventfd_value,
				   sizeof(client->eventfd_value), 0);
	}
	io_uring_sqe_set_data64(sqe, op_data(OP_DOORBELL, client));
	client->pending_io++;
	client->doorbell_armed = true;
	return 0;
}

int rs_control_arm_lane(struct rs_daemon *daemon, uint32_t lane, int fd)
{
	struct io_uring_sqe *sqe = get_sqe(daemon);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_read(sqe, fd, &daemon->lanes[lane].wake_value, sizeof(uint64_t), 0);
	io_uring_sqe_set_data64(sqe, ((uint64_t)OP_LANE << 56) | lane);
	daemon->lanes[lane].wake_armed = true;
	return 0;
}

int rs_control_write_event(struct rs_daemon *daemon, struct rs_client *client)
{
	static const uint64_t one = 1; /* the write's source, alive while it is in flight */
	if (client->event_writes_inflight >= RS_MAX_EVENT_WRITES)
		return -EBUSY;
	struct io_uring_sqe *sqe = get_sqe(daemon);
	if (!sqe)
		return -EAGAIN;
	/* Through io_uring, not write(2): the client shares the eventfd's file and could make
	 * it blocking and fill its counter; a write(2) would then stop the scheduler core. */
	io_uring_prep_write(sqe, client->event_fd, &one, sizeof(one), 0);
	io_uring_sqe_set_data64(sqe, op_data(OP_EVENT_WRITE, client));
	client->pending_io++;
	client->event_writes_inflight++;
	daemon->stats.client_event_writes++;
	return 0;
}

/* The descriptors a received message carried (at most 4; more were dropped by the kernel,
 * which sets MSG_CTRUNC). */
static int received_fds(const struct rs_client *client, int fds[4])
{
	int n = 0;
	struct msghdr msg = client->recv_msg; /* the kernel updated msg_controllen */
	if (msg.msg_controllen > sizeof(client->recv_control.buf))
		msg.msg_controllen = sizeof(client->recv_control.buf);
	for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
		if (cmsg->cmsg_len < CMSG_LEN(0))
			break;
		if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
			continue;
		size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count && n < 4; i++)
			memcpy(&fds[n++], CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
	}
	return n;
}

static void close_fds(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

/* An eventfd, by what the kernel calls it: anything else could block or mean something
 * else when written. */
static bool is_eventfd(int fd)
{
	char path[64], target[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = 0;
	return strcmp(target, "anon_inode:[eventfd]") == 0;
}

/* RS_CONTROL_EVENT_FD: keep the client's eventfd (replacing an earlier one) and answer. */
static void handle_event_fd(struct rs_daemon *daemon, struct rs_client *client, const int *fds,
			    int n_fds, bool truncated)
{
	int32_t status = 0;
	if (n_fds != 1 || !is_eventfd(fds[0])) {
		status = truncated && n_fds == 0 ? -EMFILE : -EBADF;
		close_fds(fds, n_fds);
	} else {
		/* Writes in flight hold the old file; they complete on their own. */
		if (client->event_fd >= 0)
			close(client->event_fd);
		client->event_fd = fds[0];
	}
	struct rs_control_msg reply = {
	    .magic = RS_CONTROL_MAGIC, .op = RS_CONTROL_EVENT_FD, .status = status};
	/* The client waits for this answer with an empty receive buffer; one that sends
	 * requests without reading answers loses answers, nothing else. */
	if (send(client->fd, &reply, sizeof(reply), MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ||
	    daemon->config.verbose)
		fprintf(stderr, "ringserved: client %u: event descriptor %s\n", client->id,
			status ? strerror(-status) : "taken");
}

/* A message on an active client's connection. Unknown ones are ignored (as before
 * control messages existed). */
static void handle_client_message(struct rs_daemon *daemon, struct rs_client *client, int len)
{
	int fds[4];
	int n_fds = received_fds(client, fds);
	bool truncated = client->recv_msg.msg_flags & MSG_CTRUNC;
	struct rs_control_msg msg;
	if (len == (int)sizeof(msg)) {
		memcpy(&msg, client->recv_buf, sizeof(msg));
		if (msg.magic == RS_CONTROL_MAGIC && msg.op == RS_CONTROL_EVENT_FD) {
			handle_event_fd(daemon, client, fds, n_fds, truncated);
			return;
		}
	}
	close_fds(fds, n_fds);
}

void rs_control_cancel_doorbell(struct rs_daemon *daemon, struct rs_client *client)
{
	struct io_uring_sqe *sqe;
	if (client->doorbell_armed && (sqe = get_sqe(daemon))) {
		io_uring_prep_cancel64(sqe, op_data(OP_DOORBELL, client), 0);
		io_uring_sqe_set_data64(sqe, op_data(OP_CANCEL, NULL));
	}
	/* Only a write to a full, blocking counter waits; it must not keep the client from
	 * being freed. */
	if (client->event_writes_inflight && (sqe = get_sqe(daemon))) {
		io_uring_prep_cancel64(sqe, op_data(OP_EVENT_WRITE, client),
				       IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, op_data(OP_CANCEL, NULL));
	}
	if (io_uring_sq_ready(&daemon->ring))
		io_uring_submit(&daemon->ring);
}

/* Send the handshake reply, with the descriptors on success. */
static int send_welcome(int fd, const struct rs_welcome *welcome, const int *fds, int n_fds)
{
	struct iovec iov = {.iov_base = (void *)welcome, .iov_len = sizeof(*welcome)};
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} control;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	if (n_fds) {
		memset(&control, 0, sizeof(control));
		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE((size_t)n_fds * sizeof(int));
		struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN((size_t)n_fds * sizeof(int));
		memcpy(CMSG_DATA(cmsg), fds, (size_t)n_fds * sizeof(int));
	}
	/* A fresh SEQPACKET connection has an empty send buffer: this does not block. */
	ssize_t sent = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (sent < 0)
		return -errno;
	return sent == (ssize_t)sizeof(*welcome) ? 0 : -EIO;
}

static void reject(int fd, int32_t status)
{
	struct rs_welcome welcome = {
	    .magic = RS_HELLO_MAGIC, .abi_version = RS_ABI_VERSION, .status = status};
	send_welcome(fd, &welcome, NULL, 0);
}

/* Refuse a connection that has no client slot. Closing a Unix socket with its hello
 * still unread would reset the connection, and the peer would see ECONNRESET instead
 * of our answer: so read the hello (or EOF) first, then close (OP_REJECTED). */
static void reject_connection(struct rs_daemon *daemon, int fd, int32_t status)
{
	static unsigned char discard[sizeof(struct rs_hello)]; /* contents never read */
	reject(fd, status);
	struct io_uring_sqe *sqe = get_sqe(daemon);
	if (!sqe) {
		close(fd);
		return;
	}
	io_uring_prep_recv(sqe, fd, discard, sizeof(discard), 0);
	io_uring_sqe_set_data64(sqe, ((uint64_t)OP_REJECTED << 56) | (uint32_t)fd);
}

/* Whether the peer on fd is in the allow-list: by uid, primary gid or, since the socket
 * file's group is how a service grants access (SocketGroup=), a supplementary group. */
static bool peer_allowed(const struct rs_daemon_config *config, int fd, const struct ucred *cred)
{
	for (uint32_t i = 0; i < config->n_allow_uids; i++)
		if (config->allow_uids[i] == cred->uid)
			return true;
	for (uint32_t i = 0; i < config->n_allow_gids; i++)
		if (config->allow_gids[i] == cred->gid)
			return true;
	if (config->n_allow_gids == 0)
		return false;
	gid_t stack_groups[256], *groups = stack_groups;
	socklen_t len = sizeof(stack_groups);
	int ret = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);
	if (ret < 0 && errno == ERANGE && (groups = malloc(len)))
		ret = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);
	bool allowed = false;
	for (size_t g = 0; ret == 0 && g < len / sizeof(gid_t) && !allowed; g++)
		for (uint32_t i = 0; i < config->n_allow_gids && !allowed; i++)
			allowed = config->allow_gids[i] == groups[g];
	if (groups != stack_groups)
		free(groups);
	return allowed;
}

static void handle_accept(struct rs_daemon *daemon, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		close(fd);
		return;
	}
	if (!peer_allowed(&daemon->config, fd, &cred)) {
		fprintf(stderr,
			"ringserved: refused pid %d (uid %u, gid %u): not in the allow-list\n",
			(int)cred.pid, (unsigned)cred.uid, (unsigned)cred.gid);
		daemon->stats.clients_rejected++;
		reject_connection(daemon, fd, -EPERM);
		return;
	}
	struct rs_client *client = NULL;
	for (uint32_t i = 0; i < daemon->config.max_clients; i++) {
		if (daemon->clients[i].state == RS_CLIENT_FREE) {
			client = &daemon->clients[i];
			break;
		}
	}
	if (!client || daemon->draining) {
		daemon->stats.clients_rejected++;
		reject_connection(daemon, fd, client ? -ESHUTDOWN : -EUSERS);
		return;
	}
	client->state = RS_CLIENT_HANDSHAKE;
	client->fd = fd;
	client->eventfd = -1;
	client->event_fd = -1;
	client->event_writes_inflight = 0;
	client->event_write_owed = false;
	client->notify_reasons = 0;
	client->pid = cred.pid;
	client->uid = cred.uid;
	client->gid = cred.gid;
	client->id = ++daemon->next_client_id;
	client->pending_io = 0;
	if (arm_client_recv(daemon, client) < 0)
		rs_client_disconnect(daemon, client, "out of io_uring entries");
}

/* A tenant's weight and limits as its rule says. The admission policies read
 * tenant->weight at each decision: a new weight counts from the next one. */
static void apply_rule(struct rs_tenant *tenant, const struct rs_tenant_rule *rule)
{
	tenant->weight = rule->weight;
	tenant->max_connections = rule->max_connections;
	tenant->max_inflight = rule->max_inflight;
	tenant->max_kv_blocks = rule->max_kv_blocks;
}

/* A statistics reader (RS_HELLO_STATS): it gets the statistics segment and nothing else,
 * no tenant and no client segment, and the connection ends here, quietly. */
static void welcome_stats_reader(struct rs_daemon *daemon, struct rs_client *client)
{
	struct rs_welcome welcome = {.magic = RS_HELLO_MAGIC, .abi_version = RS_ABI_VERSION};
	int fd = rs_stats_publisher_fd(daemon->stats_publisher);
	int ret = send_welcome(client->fd, &welcome, &fd, 1);
	if (daemon->config.verbose)
		fprintf(stderr, "ringserved: statistics reader (pid %d, uid %u)%s\n",
			(int)client->pid, (unsigned)client->uid, ret ? ": cannot send" : "");
	shutdown(client->fd, SHUT_RDWR);
	client->state = RS_CLIENT_CLOSING;
	rs_client_maybe_free(daemon, client);
}

/* The hello arrived: check it, build the segment, send it. */
static void handle_hello(struct rs_daemon *daemon, struct rs_client *client, int len)
{
	int stray[4];
	close_fds(stray, received_fds(client, stray)); /* a hello carries none */
	struct rs_hello hello;
	if (len != (int)sizeof(hello)) {
		reject(client->fd, -EPROTO);
		rs_client_disconnect(daemon, client, "protocol: bad hello size");
		return;
	}
	memcpy(&hello, client->recv_buf, sizeof(hello));
	if (hello.magic != RS_HELLO_MAGIC || hello.abi_version != RS_ABI_VERSION ||
	    (hello.flags & ~RS_HELLO_STATS)) {
		reject(client->fd, -EPROTO);
		rs_client_disconnect(daemon, client,
				     "protocol: bad hello (magic, version or flags)");
		return;
	}
	if (hello.flags & RS_HELLO_STATS) {
		welcome_stats_reader(daemon, client);
		return;
	}
	if (!rs_tenant_name_valid(hello.tenant)) {
		reject(client->fd, -EINVAL);
		rs_client_disconnect(daemon, client, "protocol: bad tenant name");
		return;
	}
	const struct rs_tenant_rule *rule =
	    rs_tenant_config_lookup(daemon->config.tenants, hello.tenant);
	if (!rs_tenant_rule_allows(rule, client->uid)) {
		char why[160];
		snprintf(why, sizeof(why), "tenant '%s' is not open to uid %u (%s, line %u)",
			 hello.tenant, (unsigned)client->uid, daemon->config.tenant_config_path,
			 rule->line);
		daemon->stats.clients_rejected++;
		reject(client->fd, -EPERM);
		rs_client_disconnect(daemon, client, why);
		return;
	}
	/* Scoped by the uid the kernel vouches for: a name alone reaches no one else's. */
	client->tenant =
	    rs_sched_tenant_acquire(daemon->sched, client->uid, hello.tenant, rule->weight);
	if (!client->tenant) {
		reject(client->fd, -EUSERS);
		rs_client_disconnect(daemon, client, "tenant table full");
		return;
	}
	apply_rule(client->tenant, rule);
	if (rule->max_connections && client->tenant->refs > rule->max_connections) {
		char why[160];
		snprintf(why, sizeof(why), "tenant '%s' (uid %u) has its %u connection(s)",
			 hello.tenant, (unsigned)client->uid, rule->max_connections);
		daemon->stats.clients_rejected++;
		reject(client->fd, -EUSERS);
		rs_client_disconnect(daemon, client, why); /* releases its reference */
		return;
	}
	int memfd;
	int ret = rs_client_setup_segment(daemon, client, &memfd);
	if (ret) {
		reject(client->fd, ret);
		rs_client_disconnect(daemon, client, "cannot create its segment");
		return;
	}
	struct rs_welcome welcome = {
	    .magic = RS_HELLO_MAGIC,
	    .abi_version = RS_ABI_VERSION,
	    .status = 0,
	    .client_id = client->id,
	    .segment_size = client->segment_size,
	    .shared_size = daemon->shared_size,
	};
	/* The statistics segment last: a client that expects fewer descriptors closes it. */
	int fds[4] = {memfd, daemon->shared_fd, client->eventfd, -1};
	int n_fds = client->eventfd >= 0 ? 3 : 2;
	fds[n_fds++] = rs_stats_publisher_fd(daemon->stats_publisher);
	ret = send_welcome(client->fd, &welcome, fds, n_fds);
	/* The mapping keeps the segment alive; the client has its own descriptor now. */
	close(memfd);
	if (ret) {
		rs_client_disconnect(daemon, client, "cannot send its segment");
		return;
	}
	rs_client_activate(daemon, client);
	daemon->stats.clients_accepted++;
	if (daemon->config.verbose)
		fprintf(stderr, "ringserved: client %u (pid %d, uid %u) connected\n", client->id,
			(int)client->pid, (unsigned)client->uid);
	if (arm_client_recv(daemon, client) < 0)
		rs_client_disconnect(daemon, client, "out of io_uring entries");
}

/* SIGHUP: read the configuration file again. A good one replaces the old one and applies
 * to every tenant at once (connections already open stay, even beyond a lowered limit or
 * for a uid no longer allowed; new ones follow the new rules); a malformed one changes
 * nothing. */
static void reload_config(struct rs_daemon *daemon)
{
	const char *path = daemon->config.tenant_config_path;
	if (!path) {
		fprintf(stderr, "ringserved: SIGHUP: no --config file to reload\n");
		return;
	}
	struct rs_tenant_config *fresh;
	char message[512];
	if (rs_tenant_config_load(path, &fresh, message, sizeof(message))) {
		fprintf(stderr, "ringserved: SIGHUP: keeping the old configuration: %s\n", message);
		return;
	}
	rs_tenant_config_free(daemon->config.tenants);
	daemon->config.tenants = fresh;
	/* The core owns the table; between its decisions (we are one thread) the data path
	 * may set the fields it sets at connect. */
	const struct rs_tenant_table *table = rs_sched_tenants(daemon->sched);
	for (uint32_t i = 0; i < table->capacity; i++) {
		struct rs_tenant *tenant = &table->all[i];
		if (!tenant->in_use)
			continue;
		const struct rs_tenant_rule *rule = rs_tenant_config_lookup(fresh, tenant->name);
		if (daemon->config.verbose && tenant->weight != rule->weight)
			fprintf(stderr, "ringserved: tenant '%s' (uid %u): weight %g -> %g\n",
				tenant->name, (unsigned)tenant->uid, tenant->weight, rule->weight);
		apply_rule(tenant, rule);
	}
	fprintf(stderr, "ringserved: SIGHUP: reloaded %s (%u tenant line(s))\n", path,
		fresh->n_rules);
}

static void begin_drain(struct rs_daemon *daemon)
{
	if (daemon->draining) {
		/* A second signal: no more grace. */
		fprintf(stderr, "ringserved: signal %d again: failing what is in flight now\n",
			(int)last_signal);
		daemon->drain_deadline_ns = rs_now_ns();
		return;
	}
	fprintf(stderr, "ringserved: signal %d: draining (%u requests in flight, grace %.1f s)\n",
		(int)last_signal, daemon->pool.in_use, (double)daemon->config.grace_ns / 1e9);
	daemon->draining = true;
	daemon->drain_deadline_ns = rs_now_ns() + daemon->config.grace_ns;
	int ret = rs_systemd_notify("STOPPING=1");
	if (ret)
		fprintf(stderr, "ringserved: sd_notify STOPPING=1: %s\n", strerror(-ret));
	rs_control_stop_listening(daemon);
	for (uint32_t i = 0; i < daemon->n_active_clients; i++)
		/* Relaxed: a hint for rs_submit; the error completion is the authority. */
		rs_store_relaxed(&daemon->active[i]->shared->daemon_state, RS_DAEMON_DRAINING);
}

/* The signal eventfd was read: act on what the handler flagged. */
static void handle_signals(struct rs_daemon *daemon)
{
	/* A-signal: pairs with R-signal in on_signal. */
	if (rs_exchange_acq_rel(&reload_requested, 0))
		reload_config(daemon);
	if (rs_exchange_acq_rel(&drain_requested, 0))
		begin_drain(daemon);
}

static void handle_cqe(struct rs_daemon *daemon, const struct io_uring_cqe *cqe)
{
	uint64_t data = cqe->user_data;
	enum op_kind kind = (enum op_kind)(data >> 56);
	struct rs_client *client = NULL;
	if (kind == OP_CLIENT_RECV || kind == OP_DOORBELL || kind == OP_EVENT_WRITE) {
		uint32_t index = (uint32_t)data;
		client = &daemon->clients[index];
		/* Every operation that names a client holds it (pending_io), so the
		 * generation always matches; the check guards against our own bugs. */
		if (index >= daemon->config.max_clients ||
		    (client->generation & 0xffffff) != ((data >> 32) & 0xffffff)) {
			fprintf(stderr, "ringserved: stale io_uring completion %#llx\n",
				(unsigned long long)data);
			return;
		}
		client->pending_io--;
	}
	switch (kind) {
	case OP_ACCEPT:
		if (cqe->res >= 0) {
			accept_paused_logged = false;
			handle_accept(daemon, cqe->res);
		}
		if (daemon->listen_fd < 0 || daemon->draining)
			break;
		if (cqe->res == -EMFILE || cqe->res == -ENFILE || cqe->res == -ENOBUFS ||
		    cqe->res == -ENOMEM)
			pause_accept(daemon, -cqe->res);
		else
			arm_accept(daemon);
		break;
	case OP_ACCEPT_RETRY:
		if (daemon->listen_fd >= 0 && !daemon->draining)
			arm_accept(daemon);
		break;
	case OP_CLIENT_RECV:
		if (client->state == RS_CLIENT_CLOSING) {
			if (cqe->res > 0) {
				int fds[4];
				close_fds(fds, received_fds(client, fds));
			}
			rs_client_maybe_free(daemon, client);
		} else if (cqe->res <= 0)
			rs_client_disconnect(daemon, client,
					     cqe->res == 0 ? "socket closed"
					     : cqe->res == -ECANCELED
						 ? "protocol: no hello within 5 s"
						 : "socket error");
		else if (client->state == RS_CLIENT_HANDSHAKE)
			handle_hello(daemon, client, cqe->res);
		else {
			handle_client_message(daemon, client, cqe->res);
			if (arm_client_recv(daemon, client) < 0)
				rs_client_disconnect(daemon, client, "out of io_uring entries");
		}
		break;
	case OP_EVENT_WRITE:
		/* Failed writes need nothing: -EAGAIN means the counter is full, so readable. */
		client->event_writes_inflight--;
		if (client->state == RS_CLIENT_CLOSING)
			rs_client_maybe_free(daemon, client);
		break;
	case OP_DOORBELL:
		client->doorbell_armed = false;
		if (client->state == RS_CLIENT_CLOSING)
			rs_client_maybe_free(daemon, client);
		break;
	case OP_SIGNAL:
		if (cqe->res == (int)sizeof(signal_count))
			handle_signals(daemon);
		arm_signal(daemon);
		break;
	case OP_LANE:
		/* The step is done (or was, before we slept): the loop polls the lane. */
		daemon->lanes[(uint32_t)data].wake_armed = false;
		break;
	case OP_REJECTED:
		close((int)(uint32_t)data);
		break;
	case OP_CANCEL:
		break;
	}
}

int rs_control_poll(struct rs_daemon *daemon)
{
	if (io_uring_sq_ready(&daemon->ring))
		io_uring_submit(&daemon->ring);
	struct io_uring_cqe *cqes[32];
	int handled = 0;
	for (;;) {
		unsigned n = io_uring_peek_batch_cqe(&daemon->ring, cqes, 32);
		if (n == 0)
			break;
		/* Copy first: handlers may queue SQEs and submit, which is fine, but the CQ
		 * entries must be released before a long handler runs. */
		struct io_uring_cqe copies[32];
		for (unsigned i = 0; i < n; i++)
			copies[i] = *cqes[i];
		io_uring_cq_advance(&daemon->ring, n);
		for (unsigned i = 0; i < n; i++)
			handle_cqe(daemon, &copies[i]);
		handled += (int)n;
	}
	if (handled && io_uring_sq_ready(&daemon->ring))
		io_uring_submit(&daemon->ring);
	return handled;
}

int rs_control_wait(struct rs_daemon *daemon, uint64_t timeout_ns)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts = {
	    .tv_sec = (long long)(timeout_ns / 1000000000ull),
	    .tv_nsec = (long long)(timeout_ns % 1000000000ull),
	};
	int ret =
	    io_uring_submit_and_wait_timeout(&daemon->ring, &cqe, 1, timeout_ns ? &ts : NULL, NULL);
	return ret == -ETIME || ret == -EINTR ? 0 : (ret < 0 ? ret : 0);
}

void rs_control_stop_listening(struct rs_daemon *daemon)
{
	if (daemon->listen_fd < 0)
		return;
	struct io_uring_sqe *sqe = get_sqe(daemon);
	if (sqe) {
		io_uring_prep_cancel64(sqe, op_data(OP_ACCEPT, NULL), 0);
		io_uring_sqe_set_data64(sqe, op_data(OP_CANCEL, NULL));
		io_uring_submit(&daemon->ring);
	}
	if (!daemon->socket_activated)
		unlink(daemon->config.socket_path);
	close(daemon->listen_fd);
	daemon->listen_fd = -1;
}

/* Bind the control socket, replacing a stale one (a socket file nobody listens on). */
static int bind_control_socket(struct rs_daemon *daemon)
{
	const char *path = daemon->config.socket_path;
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "ringserved: socket path too long: %s\n", path);
		return -ENAMETOOLONG;
	}
	strcpy(addr.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int rc = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	if (rc < 0 && errno == EADDRINUSE) {
		int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		int alive =
		    probe >= 0 && connect(probe, (struct sockaddr *)&addr, sizeof(addr)) == 0;
		if (probe >= 0)
			close(probe);
		if (alive) {
			fprintf(stderr, "ringserved: another daemon is listening on %s\n", path);
			close(fd);
			return -EADDRINUSE;
		}
		unlink(path); /* stale: its daemon is gone */
		rc = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	}
	if (rc < 0) {
		int ret = -errno;
		fprintf(stderr, "ringserved: bind %s: %s\n", path, strerror(errno));
		close(fd);
		return ret;
	}
	if (chmod(path, daemon->config.socket_mode) < 0 || listen(fd, 128) < 0) {
		int ret = -errno;
		fprintf(stderr, "ringserved: socket %s: %s\n", path, strerror(errno));
		unlink(path);
		close(fd);
		return ret;
	}
	daemon->listen_fd = fd;
	return 0;
}

int rs_control_init(struct rs_daemon *daemon)
{
	int ret = io_uring_queue_init(256, &daemon->ring, 0);
	if (ret < 0) {
		fprintf(stderr, "ringserved: io_uring_queue_init: %s\n", strerror(-ret));
		return ret;
	}
	daemon->ring_ready = true;
	struct io_uring_probe *probe = io_uring_get_probe_ring(&daemon->ring);
	daemon->futex_wait_supported =
	    probe && io_uring_opcode_supported(probe, RS_IORING_OP_FUTEX_WAIT);
	if (probe)
		io_uring_free_probe(probe);
	daemon->wake_mode = daemon->futex_wait_supported && !daemon->config.force_eventfd
				? RS_WAKE_FUTEX
				: RS_WAKE_EVENTFD;

	if (!daemon->config.tenants && (ret = rs_tenant_config_default(&daemon->config.tenants)))
		return ret;
	/* Under systemd the socket unit binds the socket and passes it in. */
	int activated = rs_systemd_listen_fd(daemon->activated_socket_path,
					     sizeof(daemon->activated_socket_path));
	if (activated >= 0) {
		daemon->listen_fd = activated;
		daemon->socket_activated = true;
		daemon->config.socket_path = daemon->activated_socket_path;
	} else if (activated != -ENOENT) {
		return activated;
	} else if ((ret = bind_control_socket(daemon))) {
		return ret;
	}

	daemon->signal_fd = eventfd(0, EFD_CLOEXEC);
	if (daemon->signal_fd < 0)
		return -errno;
	signal_eventfd = daemon->signal_fd;
	struct sigaction action = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
	sigemptyset(&action.sa_mask);
	if (sigaction(SIGTERM, &action, NULL) < 0 || sigaction(SIGINT, &action, NULL) < 0 ||
	    sigaction(SIGHUP, &action, NULL) < 0)
		return -errno;
	if (arm_accept(daemon) || arm_signal(daemon))
		return -EBUSY;
	ret = io_uring_submit(&daemon->ring);
	return ret < 0 ? ret : 0;
}

void rs_control_destroy(struct rs_daemon *daemon)
{
	if (daemon->listen_fd >= 0) {
		if (!daemon->socket_activated)
			unlink(daemon->config.socket_path);
		close(daemon->listen_fd);
		daemon->listen_fd = -1;
	}
	if (daemon->signal_fd >= 0) {
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal_eventfd = -1;
		close(daemon->signal_fd);
	}
	daemon->signal_fd = -1;
	rs_tenant_config_free(daemon->config.tenants);
	daemon->config.tenants = NULL;
	if (daemon->ring_ready)
		io_uring_queue_exit(&daemon->ring);
	daemon->ring_ready = false;
}
