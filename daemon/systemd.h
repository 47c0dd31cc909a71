/* The two parts of systemd's service protocol ringserved speaks, without libsystemd:
 * socket activation (sd_listen_fds(3): the control socket passed in as descriptor 3 with
 * LISTEN_PID and LISTEN_FDS) and readiness notification (sd_notify(3): "READY=1" and
 * "STOPPING=1" sent to $NOTIFY_SOCKET). Both are no-ops outside systemd. */
#ifndef RS_DAEMON_SYSTEMD_H
#define RS_DAEMON_SYSTEMD_H

#include <stddef.h>

/* The listening socket systemd passed us, if any. Returns its descriptor (close-on-exec
 * set, the LISTEN_* variables removed from the environment so children do not inherit
 * them) with its bound path in path[path_size]; -ENOENT when nothing was passed (no
 * LISTEN_FDS, or LISTEN_PID names another process); or, with a message on stderr,
 * -EINVAL when the variables are malformed or name more than one descriptor and
 * -ENOTSOCK when the descriptor is not a listening Unix SOCK_SEQPACKET socket bound to
 * a path. */
int rs_systemd_listen_fd(char *path, size_t path_size);

/* Send state ("READY=1", "STOPPING=1", ...) to the service manager. Returns 0 when sent
 * or when there is no manager to tell ($NOTIFY_SOCKET unset), else a negative errno. */
int rs_systemd_notify(const char *state);

#endif
