/* ringserve._ringserve: the C half of the Python package, a thin layer over libringserve.
 *
 * Connection wraps one rs_connection. Python code (ringserve/__init__.py, aio.py) builds
 * the user-facing API on top of it; here are the parts that must be fast or must touch
 * the library's state:
 *   - a table of the connection's requests by handle, holding each one's completion once
 *     it has been taken off the ring (rs_poll hands out completions for every request of
 *     the connection, and several Python streams may wait on one connection);
 *   - blocking waits with the GIL released, in slices so that Ctrl-C gets through;
 *   - run(): submit, wait, copy the output and release in one call (the 1-token round
 *     trip `make bench` measures);
 *   - pump(): one event-loop turn for asyncio (poll completions, rs_event_arm);
 *   - output views: memoryviews straight over the output tokens in shared memory. A view
 *     pins its request: release() and close() raise BufferError while one is alive, so
 *     a view can never outlive the memory under it.
 *
 * Library errors (negative errno) become OSError with that errno, which Python maps to
 * its subclasses (ConnectionResetError, TimeoutError, ...).
 *
 * Threads: libringserve's connection is single-threaded, so every call into it holds the
 * Connection's lock; a blocking wait holds it with the GIL released. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "client-lib/ringserve.h"

/* A blocking wait sleeps at most this long before checking for signals (Ctrl-C). */
#define WAIT_SLICE_MS 100

enum request_state {
	REQ_FREE = 0,
	REQ_RUNNING, /* submitted, completion not taken yet */
	REQ_DONE,    /* completion taken; output readable until release */
};

struct request_entry {
	uint8_t state;
	bool abandoned;	  /* its Python object is gone: release once done and unexported */
	uint32_t exports; /* live buffer exports (memoryviews) of its output */
	struct rs_completion completion;
};

typedef struct {
	PyObject_HEAD struct rs_connection *conn;
	PyThread_type_lock lock;
	struct request_entry *requests;
	uint32_t n_requests; /* table size; grows with the highest handle seen */
	uint32_t exports;    /* over all requests */
	uint32_t abandoned;  /* entries with abandoned set (a sweep has work) */
	/* Handles abandoned while the lock was taken (a Request collected by a garbage
	 * collection that ran inside one of our own calls, or while another thread waits):
	 * taken care of by the next holder of the lock. Guarded by the GIL. */
	int *deferred;
	uint32_t n_deferred, deferred_size;
} ConnectionObject;

static PyTypeObject ConnectionType;
static PyTypeObject OutputViewType;
static PyTypeObject DetokenizerType;

/* --- errors ------------------------------------------------------------------------- */

/* Raise OSError(errno, "what: strerror"); returns NULL for `return raise_errno(...)`. */
static PyObject *raise_errno(int negative_errno, const char *what)
{
	int err = -negative_errno;
	PyObject *args = Py_BuildValue("(is)", err, "");
	if (!args)
		return NULL;
	PyObject *message = PyUnicode_FromFormat("%s: %s", what, strerror(err));
	if (message) {
		Py_DECREF(args);
		args = Py_BuildValue("(iN)", err, message);
		if (!args)
			return NULL;
	}
	/* OSError(errno, msg) picks the subclass for errno (ConnectionResetError, ...). */
	PyErr_SetObject(PyExc_OSError, args);
	Py_DECREF(args);
	return NULL;
}

/* --- locking ---------------------------------------------------------------------- */

static void abandon_locked(ConnectionObject *self, int handle);

static void conn_lock(ConnectionObject *self)
{
	if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
		Py_BEGIN_ALLOW_THREADS PyThread_acquire_lock(self->lock, WAIT_LOCK);
		Py_END_ALLOW_THREADS
	}
	while (self->n_deferred && self->conn)
		abandon_locked(self, self->deferred[--self->n_deferred]);
}

static void conn_unlock(ConnectionObject *self)
{
	PyThread_release_lock(self->lock);
}

static bool check_open(ConnectionObject *self)
{
	if (!self->conn) {
		PyErr_SetString(PyExc_ValueError, "the connection is closed");
		return false;
	}
	return true;
}

/* --- the request table (lock held) --------------------------------------------------- */

static struct request_entry *entry_for(ConnectionObject *self, int handle)
{
	if (handle < 0 || (uint32_t)handle >= self->n_requests)
		return NULL;
	return &self->requests[handle];
}

static int table_reserve(ConnectionObject *self, int handle)
{
	if ((uint32_t)handle < self->n_requests)
		return 0;
	uint32_t size = self->n_requests ? self->n_requests : 64;
	while (size <= (uint32_t)handle)
		size *= 2;
	struct request_entry *grown = PyMem_Realloc(self->requests, size * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	memset(grown + self->n_requests, 0, (size - self->n_requests) * sizeof(*grown));
	self->requests = grown;
	self->n_requests = size;
	return 0;
}

/* Release abandoned requests that are done and no longer exported. */
static void sweep_abandoned(ConnectionObject *self)
{
	if (!self->abandoned)
		return;
	for (uint32_t i = 0; i < self->n_requests; i++) {
		struct request_entry *e = &self->requests[i];
		if (e->abandoned && e->state == REQ_DONE && e->exports == 0) {
			rs_release(self->conn, (int)i);
			*e = (struct request_entry){0};
			self->abandoned--;
		}
	}
}

static void absorb(ConnectionObject *self, const struct rs_completion *done, int n)
{
	for (int i = 0; i < n; i++) {
		struct request_entry *e = entry_for(self, done[i].request);
		if (!e || e->state != REQ_RUNNING)
			continue; /* a no-op's completion, or not ours to track */
		e->completion = done[i];
		e->state = REQ_DONE;
	}
	sweep_abandoned(self);
}

/* Take every completion waiting on the ring. Returns how many, or a negative errno. */
static int poll_all(ConnectionObject *self)
{
	struct rs_completion done[64];
	int total = 0, n;
	do {
		n = rs_poll(self->conn, done, 64);
		if (n < 0)
			return n;
		absorb(self, done, n);
		total += n;
	} while (n == 64);
	return total;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The next slice of a wait that ends at deadline (0: none). Returns -1 when it is over. */
static int slice_ms(uint64_t deadline)
{
	if (!deadline)
		return WAIT_SLICE_MS;
	uint64_t now = now_ns();
	if (now >= deadline)
		return -1;
	uint64_t left = (deadline - now + 999999) / 1000000;
	return left < WAIT_SLICE_MS ? (int)left : WAIT_SLICE_MS;
}

static uint64_t deadline_after(int timeout_ms)
{
	return timeout_ms < 0 ? 0 : now_ns() + (uint64_t)timeout_ms * 1000000u + 1;
}

/* Wait (lock held, GIL held on entry and exit) until handle's completion is taken.
 * Returns 0, -ETIMEDOUT, a library error, or -EINTR with a Python exception set. */
static int wait_done(ConnectionObject *self, int handle, int timeout_ms)
{
	struct request_entry *e = entry_for(self, handle);
	if (!e || e->state == REQ_FREE)
		return -EINVAL;
	int ret = poll_all(self);
	if (ret < 0)
		return ret;
	uint64_t deadline = deadline_after(timeout_ms);
	while (e->state != REQ_DONE) {
		int ms = timeout_ms == 0 ? -1 : slice_ms(deadline);
		if (ms < 0)
			return -ETIMEDOUT;
		struct rs_completion done[64];
		int n;
		Py_BEGIN_ALLOW_THREADS n = rs_wait(self->conn, done, 64, ms);
		Py_END_ALLOW_THREADS if (n > 0)
		{
			absorb(self, done, n);
			e = &self->requests[handle]; /* absorb does not grow the table */
		}
		else if (n != -ETIMEDOUT)
		{
			return n;
		}
		if (PyErr_CheckSignals() < 0)
			return -EINTR;
	}
	return 0;
}

static PyObject *completion_tuple(const struct rs_completion *c)
{
	return Py_BuildValue("(iIIIIIII)", c->status, c->output_len, c->flags, c->cached_tokens,
			     c->queued_us, c->first_token_us, c->total_us, c->preemptions);
}

/* --- Connection --------------------------------------------------------------------- */

static int Connection_init(ConnectionObject *self, PyObject *args, PyObject *kwargs)
{
	static char *keywords[] = {"socket_path", "tenant", "spin_us", NULL};
	PyObject *path_obj = Py_None;
	const char *tenant = NULL;
	long long spin_us = 0;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OzL", keywords, &path_obj, &tenant,
					 &spin_us))
		return -1;
	if (self->conn) {
		PyErr_SetString(PyExc_ValueError, "the connection is already open");
		return -1;
	}
	PyObject *path_bytes = NULL;
	if (path_obj != Py_None && !PyUnicode_FSConverter(path_obj, &path_bytes))
		return -1;
	if (spin_us < -1 || spin_us > 10000000) {
		Py_XDECREF(path_bytes);
		PyErr_SetString(PyExc_ValueError,
				"spin_us: 0 (default), -1 (never spin) or up to 10 s");
		return -1;
	}
	struct rs_connect_options options = {.spin_us = (uint32_t)spin_us, .tenant = tenant};
	const char *path = path_bytes ? PyBytes_AS_STRING(path_bytes) : NULL;
	struct rs_connection *conn = NULL;
	int ret;
	Py_BEGIN_ALLOW_THREADS ret = rs_connect(path, &options, &conn);
	Py_END_ALLOW_THREADS if (ret)
	{
		char what[300];
		snprintf(what, sizeof(what), "connect to ringserved at %s",
			 path ? path : "the default socket");
		Py_XDECREF(path_bytes);
		raise_errno(ret, what);
		return -1;
	}
	Py_XDECREF(path_bytes);
	self->lock = PyThread_allocate_lock();
	if (!self->lock) {
		rs_close(conn);
		PyErr_NoMemory();
		return -1;
	}
	self->conn = conn;
	return 0;
}

static void close_connection(ConnectionObject *self)
{
	rs_close(self->conn);
	self->conn = NULL;
	PyMem_Free(self->requests);
	self->requests = NULL;
	self->n_requests = 0;
	self->abandoned = 0;
	self->n_deferred = 0;
}

static void Connection_dealloc(ConnectionObject *self)
{
	/* Output views hold a reference, so none is alive here. */
	if (self->conn)
		close_connection(self);
	if (self->lock)
		PyThread_free_lock(self->lock);
	PyMem_Free(self->deferred);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Connection_close(ConnectionObject *self, PyObject *unused)
{
	if (!self->conn)
		Py_RETURN_NONE;
	conn_lock(self);
	if (self->exports) {
		conn_unlock(self);
		PyErr_Format(PyExc_BufferError,
			     "close: %u memoryview(s) of request output still exist; release them "
			     "first (memoryview.release() or `with`)",
			     self->exports);
		return NULL;
	}
	close_connection(self);
	conn_unlock(self);
	Py_RETURN_NONE;
}

static PyObject *Connection_closed(ConnectionObject *self, void *unused)
{
	return PyBool_FromLong(self->conn == NULL);
}

static PyObject *Connection_model_info(ConnectionObject *self, PyObject *unused)
{
	if (!check_open(self))
		return NULL;
	struct rs_model_info info;
	conn_lock(self);
	int ret = rs_model_info(self->conn, &info);
	conn_unlock(self);
	if (ret)
		return raise_errno(ret, "model_info");
	PyObject *bos =
	    info.bos_token == UINT32_MAX ? Py_None : PyLong_FromUnsignedLong(info.bos_token);
	PyObject *eos =
	    info.eos_token == UINT32_MAX ? Py_None : PyLong_FromUnsignedLong(info.eos_token);
	if (bos == Py_None)
		Py_INCREF(bos);
	if (eos == Py_None)
		Py_INCREF(eos);
	return Py_BuildValue(
	    "{s:I,s:N,s:N,s:I,s:I,s:I,s:I,s:I,s:s,s:s,s:O}", "vocab_size", info.vocab_size,
	    "bos_token", bos, "eos_token", eos, "max_seq_len", info.max_seq_len,
	    "max_prompt_tokens", info.max_prompt_tokens, "max_output_tokens",
	    info.max_output_tokens, "max_inflight", info.max_inflight, "client_id", info.client_id,
	    "model_name", info.model_name ? info.model_name : "", "engine_name",
	    info.engine_name ? info.engine_name : "", "has_vocab", info.vocab ? Py_True : Py_False);
}

/* Token ids from a sequence of ints or a buffer of uint32 ('I'/'L' of 4 bytes). */
struct id_array {
	uint32_t *ids;
	uint32_t n;
	uint32_t small[64];
};

static int ids_from_object(PyObject *obj, struct id_array *out)
{
	out->ids = out->small;
	Py_ssize_t n = PySequence_Length(obj);
	if (n < 0)
		return -1;
	if (n > UINT32_MAX / 2) {
		PyErr_SetString(PyExc_ValueError, "prompt too long");
		return -1;
	}
	if (n > 64) {
		out->ids = PyMem_Malloc((size_t)n * sizeof(uint32_t));
		if (!out->ids) {
			PyErr_NoMemory();
			return -1;
		}
	}
	out->n = (uint32_t)n;
	PyObject *fast = PySequence_Fast(obj, "prompt: a str, or a sequence of token ids");
	if (!fast)
		goto fail;
	PyObject **items = PySequence_Fast_ITEMS(fast);
	for (Py_ssize_t i = 0; i < n; i++) {
		unsigned long v = PyLong_AsUnsignedLong(items[i]);
		if (v == (unsigned long)-1 && PyErr_Occurred()) {
			PyErr_Format(PyExc_ValueError,
				     "prompt[%zd]: token ids are ints in 0 .. 2**32-1", i);
			Py_DECREF(fast);
			goto fail;
		}
		if (v > UINT32_MAX) {
			PyErr_Format(PyExc_ValueError, "prompt[%zd]: %lu is not a 32-bit token id",
				     i, v);
			Py_DECREF(fast);
			goto fail;
		}
		out->ids[i] = (uint32_t)v;
	}
	Py_DECREF(fast);
	return 0;
fail:
	if (out->ids != out->small)
		PyMem_Free(out->ids);
	out->ids = out->small;
	return -1;
}

static void ids_free(struct id_array *a)
{
	if (a->ids != a->small)
		PyMem_Free(a->ids);
}

static char *submit_keywords[] = {
    "prompt",	       "max_new_tokens", "temperature", "top_p",      "top_k", "seed",
    "output_len_hint", "flags",		 "user_data",	"timeout_ms", NULL};

struct submit_args {
	PyObject *prompt;
	struct rs_generate_params params;
	int timeout_ms;
};

static int parse_submit(PyObject *args, PyObject *kwargs, struct submit_args *s)
{
	s->params = (struct rs_generate_params){.top_p = 1.0f};
	unsigned long long seed = 0, user_data = 0;
	unsigned int max_new = 16, top_k = 0, hint = 0, flags = 0;
	s->timeout_ms = -1;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|IffIKIIKi", submit_keywords, &s->prompt,
					 &max_new, &s->params.temperature, &s->params.top_p, &top_k,
					 &seed, &hint, &flags, &user_data, &s->timeout_ms))
		return -1;
	s->params.max_new_tokens = max_new;
	s->params.top_k = top_k;
	s->params.seed = seed;
	s->params.output_len_hint = hint;
	s->params.flags = flags;
	s->params.user_data = user_data;
	return 0;
}

/* Submit (lock held). Returns the handle, or a negative errno; -EINTR: exception set. */
static int submit_locked(ConnectionObject *self, struct submit_args *s)
{
	int handle;
	if (PyBytes_Check(s->prompt) || PyByteArray_Check(s->prompt)) {
		PyErr_SetString(PyExc_TypeError,
				"prompt: a str or a sequence of token ids, not bytes (decode it)");
		return -EINTR;
	}
	if (PyUnicode_Check(s->prompt)) {
		Py_ssize_t len;
		const char *text = PyUnicode_AsUTF8AndSize(s->prompt, &len);
		if (!text)
			return -EINTR;
		handle = rs_submit_text(self->conn, &s->params, text, (size_t)len);
		if (handle == -EAGAIN && self->abandoned && poll_all(self) > 0)
			handle = rs_submit_text(self->conn, &s->params, text, (size_t)len);
	} else {
		struct id_array ids;
		if (ids_from_object(s->prompt, &ids) < 0)
			return -EINTR;
		s->params.prompt = ids.ids;
		s->params.prompt_len = ids.n;
		handle = rs_submit(self->conn, &s->params);
		if (handle == -EAGAIN && self->abandoned && poll_all(self) > 0)
			handle = rs_submit(self->conn, &s->params); /* abandoned slots came free */
		ids_free(&ids);
	}
	if (handle < 0)
		return handle;
	if (table_reserve(self, handle) < 0) {
		/* Untracked, it could never be released: cancel it and let rs_close end it. */
		rs_cancel(self->conn, handle);
		PyErr_NoMemory();
		return -EINTR;
	}
	self->requests[handle] = (struct request_entry){.state = REQ_RUNNING};
	return handle;
}

static PyObject *Connection_submit(ConnectionObject *self, PyObject *args, PyObject *kwargs)
{
	struct submit_args s;
	if (parse_submit(args, kwargs, &s) < 0 || !check_open(self))
		return NULL;
	conn_lock(self);
	int handle = submit_locked(self, &s);
	conn_unlock(self);
	if (handle == -EINTR)
		return NULL;
	if (handle < 0)
		return raise_errno(handle, "submit");
	return PyLong_FromLong(handle);
}

static PyObject *output_list(ConnectionObject *self, int handle, uint32_t start)
{
	const uint32_t *tokens;
	int n = rs_output(self->conn, handle, &tokens);
	if (n < 0)
		return raise_errno(n, "output");
	if ((uint32_t)n < start)
		start = (uint32_t)n;
	PyObject *list = PyList_New(n - (int)start);
	if (!list)
		return NULL;
	for (int i = (int)start; i < n; i++) {
		PyObject *v = PyLong_FromUnsignedLong(tokens[i]);
		if (!v) {
			Py_DECREF(list);
			return NULL;
		}
		PyList_SET_ITEM(list, i - (int)start, v);
	}
	return list;
}

/* run(prompt, ...): submit, wait for the completion, copy the output, release.
 * Returns (tokens, completion tuple). */
static PyObject *Connection_run(ConnectionObject *self, PyObject *args, PyObject *kwargs)
{
	struct submit_args s;
	if (parse_submit(args, kwargs, &s) < 0 || !check_open(self))
		return NULL;
	conn_lock(self);
	PyObject *result = NULL;
	int handle = submit_locked(self, &s);
	if (handle < 0) {
		if (handle != -EINTR)
			raise_errno(handle, "submit");
		goto out;
	}
	int ret = wait_done(self, handle, s.timeout_ms);
	if (ret < 0) {
		/* Not done (timeout, Ctrl-C, daemon gone): cancel; released when it completes. */
		rs_cancel(self->conn, handle);
		self->requests[handle].abandoned = true;
		self->abandoned++;
		if (ret != -EINTR)
			raise_errno(ret, "wait for the completion");
		goto out;
	}
	PyObject *tokens = output_list(self, handle, 0);
	PyObject *completion = completion_tuple(&self->requests[handle].completion);
	rs_release(self->conn, handle);
	self->requests[handle] = (struct request_entry){0};
	if (tokens && completion)
		result = PyTuple_Pack(2, tokens, completion);
	Py_XDECREF(tokens);
	Py_XDECREF(completion);
out:
	conn_unlock(self);
	return result;
}

/* Parse one handle argument and check it is a request of ours (lock held after). */
static struct request_entry *locked_entry(ConnectionObject *self, int handle)
{
	if (!check_open(self))
		return NULL;
	conn_lock(self);
	struct request_entry *e = entry_for(self, handle);
	if (!e || e->state == REQ_FREE) {
		conn_unlock(self);
		PyErr_Format(PyExc_ValueError, "request %d is not in use on this connection",
			     handle);
		return NULL;
	}
	return e;
}

/* locked_entry for a method whose one argument is the handle: sets *handle. */
static struct request_entry *locked_entry_arg(ConnectionObject *self, PyObject *arg, int *handle)
{
	*handle = PyLong_AsLong(arg);
	if (*handle == -1 && PyErr_Occurred())
		return NULL;
	return locked_entry(self, *handle);
}

static PyObject *Connection_wait(ConnectionObject *self, PyObject *args)
{
	int handle, timeout_ms = -1;
	if (!PyArg_ParseTuple(args, "i|i", &handle, &timeout_ms))
		return NULL;
	if (!locked_entry(self, handle))
		return NULL;
	int ret = wait_done(self, handle, timeout_ms);
	PyObject *result = NULL;
	if (ret == 0)
		result = completion_tuple(&self->requests[handle].completion);
	else if (ret != -EINTR)
		raise_errno(ret, "wait for the completion");
	conn_unlock(self);
	return result;
}

/* completion(handle): the completion tuple if it has been taken (polling first), else
 * None. */
static PyObject *Connection_completion(ConnectionObject *self, PyObject *arg)
{
	int handle;
	if (!locked_entry_arg(self, arg, &handle))
		return NULL;
	PyObject *result;
	if (self->requests[handle].state != REQ_DONE) {
		int ret = poll_all(self);
		if (ret < 0) {
			conn_unlock(self);
			return raise_errno(ret, "poll");
		}
	}
	if (self->requests[handle].state == REQ_DONE) {
		result = completion_tuple(&self->requests[handle].completion);
	} else {
		result = Py_None;
		Py_INCREF(result);
	}
	conn_unlock(self);
	return result;
}

/* tokens(handle, start=0): a copy of the output from start on. */
static PyObject *Connection_tokens(ConnectionObject *self, PyObject *args)
{
	int handle;
	unsigned int start = 0;
	if (!PyArg_ParseTuple(args, "i|I", &handle, &start))
		return NULL;
	if (!locked_entry(self, handle))
		return NULL;
	PyObject *list = output_list(self, handle, start);
	conn_unlock(self);
	return list;
}

/* progress(handle): (output tokens so far, completed) without copying anything and
 * without polling: what pump() has taken in. The asyncio dispatcher asks it for each
 * waiting task, so that only the tasks whose request moved are woken. */
static PyObject *Connection_progress(ConnectionObject *self, PyObject *arg)
{
	int handle;
	if (!locked_entry_arg(self, arg, &handle))
		return NULL;
	const uint32_t *tokens;
	int count = rs_output(self->conn, handle, &tokens);
	bool done = self->requests[handle].state == REQ_DONE;
	conn_unlock(self);
	if (count < 0)
		return raise_errno(count, "output");
	return Py_BuildValue("(iO)", count, done ? Py_True : Py_False);
}

/* wait_output(handle, have, timeout_ms=-1): wait until the request has more than `have`
 * tokens or has completed. Returns (count, done). */
static PyObject *Connection_wait_output(ConnectionObject *self, PyObject *args)
{
	int handle, timeout_ms = -1;
	unsigned int have;
	if (!PyArg_ParseTuple(args, "iI|i", &handle, &have, &timeout_ms))
		return NULL;
	if (!locked_entry(self, handle))
		return NULL;
	uint64_t deadline = deadline_after(timeout_ms);
	int ret;
	for (;;) {
		struct request_entry *e = &self->requests[handle];
		const uint32_t *tokens;
		int count = rs_output(self->conn, handle, &tokens);
		if (count < 0) {
			ret = count;
			break;
		}
		if ((uint32_t)count > have || e->state == REQ_DONE) {
			conn_unlock(self);
			return Py_BuildValue("(iO)", count,
					     e->state == REQ_DONE ? Py_True : Py_False);
		}
		int ms = timeout_ms == 0 ? -1 : slice_ms(deadline);
		if (ms < 0) {
			ret = -ETIMEDOUT;
			break;
		}
		Py_BEGIN_ALLOW_THREADS ret = rs_wait_output(self->conn, handle, have, ms);
		Py_END_ALLOW_THREADS if (ret ==
					 -ENODATA) /* completed: its completion waits on the ring */
		    ret = poll_all(self);
		if (ret < 0 && ret != -ETIMEDOUT)
			break;
		if (PyErr_CheckSignals() < 0) {
			conn_unlock(self);
			return NULL;
		}
	}
	conn_unlock(self);
	return raise_errno(ret, "wait for output");
}

static PyObject *Connection_cancel(ConnectionObject *self, PyObject *arg)
{
	int handle;
	if (!locked_entry_arg(self, arg, &handle))
		return NULL;
	int ret = 0;
	if (self->requests[handle].state == REQ_RUNNING) {
		ret = rs_cancel(self->conn, handle);
		if (ret == -EINVAL) /* it completed in the meantime */
			ret = 0;
	}
	conn_unlock(self);
	if (ret)
		return raise_errno(ret, "cancel");
	Py_RETURN_NONE;
}

static PyObject *Connection_release(ConnectionObject *self, PyObject *arg)
{
	int handle;
	struct request_entry *e = locked_entry_arg(self, arg, &handle);
	if (!e)
		return NULL;
	if (e->exports) {
		conn_unlock(self);
		PyErr_Format(PyExc_BufferError,
			     "release: %u memoryview(s) of request %d's output still exist; "
			     "release them first (memoryview.release() or `with`)",
			     e->exports, handle);
		return NULL;
	}
	if (e->state != REQ_DONE) {
		conn_unlock(self);
		PyErr_Format(PyExc_ValueError,
			     "release: request %d has not completed (cancel it and wait first)",
			     handle);
		return NULL;
	}
	int ret = rs_release(self->conn, handle);
	if (e->abandoned)
		self->abandoned--;
	*e = (struct request_entry){0};
	conn_unlock(self);
	if (ret)
		return raise_errno(ret, "release");
	Py_RETURN_NONE;
}

/* Cancel a request nobody will look at again, and release it once it is done and no
 * view of it is left (lock held). */
static void abandon_locked(ConnectionObject *self, int handle)
{
	struct request_entry *e = entry_for(self, handle);
	if (!e || e->state == REQ_FREE || e->abandoned)
		return;
	if (e->state == REQ_RUNNING)
		rs_cancel(self->conn, handle); /* an error here: rs_close ends it */
	e->abandoned = true;
	self->abandoned++;
	sweep_abandoned(self);
}

/* abandon(handle): its Python object is going away. Never raises for a closed connection
 * or a handle not in use, and never blocks: it runs from __del__, possibly inside one of
 * our own calls (a garbage collection) with the lock taken; then the next holder of the
 * lock does it. */
static PyObject *Connection_abandon(ConnectionObject *self, PyObject *arg)
{
	int handle = PyLong_AsLong(arg);
	if (handle == -1 && PyErr_Occurred())
		return NULL;
	if (!self->conn)
		Py_RETURN_NONE;
	if (PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
		abandon_locked(self, handle);
		conn_unlock(self);
		Py_RETURN_NONE;
	}
	if (self->n_deferred == self->deferred_size) {
		uint32_t size = self->deferred_size ? self->deferred_size * 2 : 16;
		int *grown = PyMem_Realloc(self->deferred, size * sizeof(*grown));
		if (!grown)
			Py_RETURN_NONE; /* rs_close will end it */
		self->deferred = grown;
		self->deferred_size = size;
	}
	self->deferred[self->n_deferred++] = handle;
	Py_RETURN_NONE;
}

static PyObject *Connection_event_fd(ConnectionObject *self, PyObject *unused)
{
	if (!check_open(self))
		return NULL;
	conn_lock(self);
	int fd = rs_event_fd(self->conn);
	conn_unlock(self);
	if (fd < 0)
		return raise_errno(fd, "event descriptor");
	return PyLong_FromLong(fd);
}

/* pump(events): one event-loop turn. Takes the completions waiting, and arms the event
 * descriptor for `events` (RS_EVENT_*); while rs_event_arm reports news, marks running
 * requests' output as seen (the streams compare counts themselves) and goes round again.
 * Returns True when there was news (the caller wakes its waiters), False when armed with
 * nothing new (sleep until the descriptor is readable). */
static PyObject *Connection_pump(ConnectionObject *self, PyObject *arg)
{
	unsigned events = (unsigned)PyLong_AsUnsignedLong(arg);
	if (PyErr_Occurred())
		return NULL;
	if (!check_open(self))
		return NULL;
	conn_lock(self);
	bool news = false;
	int ret = 0;
	for (int round = 0; round < 4; round++) {
		ret = poll_all(self);
		if (ret < 0)
			break;
		news |= ret > 0;
		ret = rs_event_arm(self->conn, events);
		if (ret <= 0)
			break;
		news = true;
		if (ret & RS_EVENT_OUTPUT) {
			for (uint32_t i = 0; i < self->n_requests; i++) {
				const uint32_t *tokens;
				if (self->requests[i].state == REQ_RUNNING)
					rs_output(self->conn, (int)i, &tokens);
			}
		}
		ret = 0;
	}
	conn_unlock(self);
	if (ret < 0)
		return raise_errno(ret, "event loop");
	return PyBool_FromLong(news);
}

static PyObject *Connection_tokenize(ConnectionObject *self, PyObject *args, PyObject *kwargs)
{
	static char *keywords[] = {"text", "bos", NULL};
	const char *text;
	Py_ssize_t len;
	int bos = 0;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s#|p", keywords, &text, &len, &bos))
		return NULL;
	if (!check_open(self))
		return NULL;
	unsigned flags = bos ? RS_TOKENIZE_BOS : 0;
	conn_lock(self);
	int n = rs_tokenize(self->conn, text, (size_t)len, NULL, 0, flags);
	PyObject *list = NULL;
	if (n < 0) {
		raise_errno(n, "tokenize");
		goto out;
	}
	uint32_t *ids = PyMem_Malloc(((size_t)n + 1) * sizeof(uint32_t));
	if (!ids) {
		PyErr_NoMemory();
		goto out;
	}
	n = rs_tokenize(self->conn, text, (size_t)len, ids, (uint32_t)n, flags);
	if (n < 0) {
		raise_errno(n, "tokenize");
	} else if ((list = PyList_New(n))) {
		for (int i = 0; i < n; i++)
			PyList_SET_ITEM(list, i, PyLong_FromUnsignedLong(ids[i]));
	}
	PyMem_Free(ids);
out:
	conn_unlock(self);
	return list;
}

/* --- output views ---------------------------------------------------------------------- */

typedef struct {
	PyObject_HEAD ConnectionObject *connection;
	int handle;
	uint32_t count;
	const uint32_t *tokens;
	Py_ssize_t shape;
} OutputViewObject;

static PyObject *Connection_view(ConnectionObject *self, PyObject *arg)
{
	int handle;
	if (!locked_entry_arg(self, arg, &handle))
		return NULL;
	const uint32_t *tokens;
	int n = rs_output(self->conn, handle, &tokens);
	conn_unlock(self);
	if (n < 0)
		return raise_errno(n, "output");
	OutputViewObject *view = PyObject_New(OutputViewObject, &OutputViewType);
	if (!view)
		return NULL;
	Py_INCREF(self);
	view->connection = self;
	view->handle = handle;
	view->count = (uint32_t)n;
	view->tokens = tokens;
	view->shape = n;
	/* The memoryview holds the view object; the view holds the connection. */
	PyObject *memory = PyMemoryView_FromObject((PyObject *)view);
	Py_DECREF(view);
	return memory;
}

static int OutputView_getbuffer(OutputViewObject *self, Py_buffer *buffer, int flags)
{
	ConnectionObject *c = self->connection;
	if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE) {
		PyErr_SetString(PyExc_BufferError, "request output is read-only");
		return -1;
	}
	struct request_entry *e = c->conn ? entry_for(c, self->handle) : NULL;
	if (!e || e->state == REQ_FREE) {
		PyErr_SetString(PyExc_BufferError, "the request was released");
		return -1;
	}
	/* No library call: the lock is not needed, and the GIL orders the counters. */
	buffer->buf = (void *)self->tokens;
	buffer->obj = (PyObject *)self;
	Py_INCREF(self);
	buffer->len = (Py_ssize_t)self->count * 4;
	buffer->readonly = 1;
	buffer->itemsize = 4;
	buffer->format = (flags & PyBUF_FORMAT) ? "I" : NULL;
	buffer->ndim = 1;
	buffer->shape = (flags & PyBUF_ND) ? &self->shape : NULL;
	buffer->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? &buffer->itemsize : NULL;
	buffer->suboffsets = NULL;
	buffer->internal = NULL;
	e->exports++;
	c->exports++;
	return 0;
}

static void OutputView_releasebuffer(OutputViewObject *self, Py_buffer *buffer)
{
	ConnectionObject *c = self->connection;
	struct request_entry *e = entry_for(c, self->handle);
	/* An abandoned request is released at the next call that holds the lock (taking it
	 * here could deadlock against a thread waiting with the GIL released). */
	if (e && e->exports)
		e->exports--;
	if (c->exports)
		c->exports--;
}

static void OutputView_dealloc(OutputViewObject *self)
{
	Py_XDECREF(self->connection);
	PyObject_Free(self);
}

static PyBufferProcs OutputView_buffer = {
    .bf_getbuffer = (getbufferproc)OutputView_getbuffer,
    .bf_releasebuffer = (releasebufferproc)OutputView_releasebuffer,
};

static PyTypeObject OutputViewType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ringserve._ringserve.OutputView",
    .tp_basicsize = sizeof(OutputViewObject),
    .tp_dealloc = (destructor)OutputView_dealloc,
    .tp_as_buffer = &OutputView_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The buffer behind a memoryview of a request's output in shared memory.",
};

/* --- detokenizer ---------------------------------------------------------------------- */

typedef struct {
	PyObject_HEAD ConnectionObject *connection;
	struct rs_detok detok;
	char *buffer;
	size_t buffer_size;
} DetokenizerObject;

static int Detokenizer_init(DetokenizerObject *self, PyObject *args, PyObject *kwargs)
{
	static char *keywords[] = {"connection", "request", NULL};
	ConnectionObject *conn;
	int request = RS_DETOK_START;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!|i", keywords, &ConnectionType, &conn,
					 &request))
		return -1;
	if (!check_open(conn))
		return -1;
	conn_lock(conn);
	int ret = rs_detok_init(conn->conn, &self->detok, request);
	conn_unlock(conn);
	if (ret) {
		raise_errno(ret, "detokenizer");
		return -1;
	}
	Py_INCREF(conn);
	Py_XSETREF(self->connection, conn);
	return 0;
}

static void Detokenizer_dealloc(DetokenizerObject *self)
{
	Py_XDECREF(self->connection);
	PyMem_Free(self->buffer);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The detokenizer borrows the connection's vocabulary: only while it is open. */
static bool detok_usable(DetokenizerObject *self)
{
	if (!self->connection) {
		PyErr_SetString(PyExc_ValueError, "Detokenizer.__init__ was not called");
		return false;
	}
	return check_open(self->connection);
}

static PyObject *Detokenizer_feed(DetokenizerObject *self, PyObject *arg)
{
	if (!detok_usable(self))
		return NULL;
	struct id_array ids;
	if (ids_from_object(arg, &ids) < 0)
		return NULL;
	PyObject *result = NULL;
	size_t size = self->buffer_size ? self->buffer_size : 256;
	for (;;) {
		if (size > self->buffer_size) {
			char *grown = PyMem_Realloc(self->buffer, size);
			if (!grown) {
				PyErr_NoMemory();
				break;
			}
			self->buffer = grown;
			self->buffer_size = size;
		}
		int n =
		    rs_detok_feed(&self->detok, ids.ids, ids.n, self->buffer, self->buffer_size);
		if (n >= 0) {
			result = PyUnicode_DecodeUTF8(self->buffer, n, "replace");
			break;
		}
		if (n != -ENOSPC || size >= RS_DETOK_MAX_OUTPUT(ids.n)) {
			raise_errno(n, "detokenize");
			break;
		}
		size =
		    size * 4 < RS_DETOK_MAX_OUTPUT(ids.n) ? size * 4 : RS_DETOK_MAX_OUTPUT(ids.n);
	}
	ids_free(&ids);
	return result;
}

static PyObject *Detokenizer_flush(DetokenizerObject *self, PyObject *unused)
{
	if (!detok_usable(self))
		return NULL;
	char out[8];
	int n = rs_detok_flush(&self->detok, out, sizeof(out));
	if (n < 0)
		return raise_errno(n, "detokenize");
	return PyUnicode_DecodeUTF8(out, n, "replace");
}

static PyMethodDef Detokenizer_methods[] = {
    {"feed", (PyCFunction)Detokenizer_feed, METH_O,
     "feed(ids) -> str: the complete text the ids add (an unfinished character is held)"},
    {"flush", (PyCFunction)Detokenizer_flush, METH_NOARGS,
     "flush() -> str: what is held back, as U+FFFD (end of the stream)"},
    {NULL},
};

static PyTypeObject DetokenizerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ringserve._ringserve.Detokenizer",
    .tp_basicsize = sizeof(DetokenizerObject),
    .tp_dealloc = (destructor)Detokenizer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Detokenizer(connection, request=-1): libringserve's incremental detokenizer "
	      "(rs_detok_*); request: decode as the continuation of that request's prompt",
    .tp_methods = Detokenizer_methods,
    .tp_init = (initproc)Detokenizer_init,
    .tp_new = PyType_GenericNew,
};

/* --- module ------------------------------------------------------------------------- */

static PyMethodDef Connection_methods[] = {
    {"close", (PyCFunction)Connection_close, METH_NOARGS, NULL},
    {"model_info", (PyCFunction)Connection_model_info, METH_NOARGS, NULL},
    {"submit", (PyCFunction)(void (*)(void))Connection_submit, METH_VARARGS | METH_KEYWORDS, NULL},
    {"run", (PyCFunction)(void (*)(void))Connection_run, METH_VARARGS | METH_KEYWORDS, NULL},
    {"wait", (PyCFunction)Connection_wait, METH_VARARGS, NULL},
    {"completion", (PyCFunction)Connection_completion, METH_O, NULL},
    {"tokens", (PyCFunction)Connection_tokens, METH_VARARGS, NULL},
    {"view", (PyCFunction)Connection_view, METH_O, NULL},
    {"wait_output", (PyCFunction)Connection_wait_output, METH_VARARGS, NULL},
    {"cancel", (PyCFunction)Connection_cancel, METH_O, NULL},
    {"release", (PyCFunction)Connection_release, METH_O, NULL},
    {"abandon", (PyCFunction)Connection_abandon, METH_O, NULL},
    {"event_fd", (PyCFunction)Connection_event_fd, METH_NOARGS, NULL},
    {"pump", (PyCFunction)Connection_pump, METH_O, NULL},
    {"progress", (PyCFunction)Connection_progress, METH_O, NULL},
    {"tokenize", (PyCFunction)(void (*)(void))Connection_tokenize, METH_VARARGS | METH_KEYWORDS,
     NULL},
    {NULL},
};

static PyGetSetDef Connection_getset[] = {
    {"closed", (getter)Connection_closed, NULL, NULL, NULL},
    {NULL},
};

static PyTypeObject ConnectionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ringserve._ringserve.Connection",
    .tp_basicsize = sizeof(ConnectionObject),
    .tp_dealloc = (destructor)Connection_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Connection(socket_path=None, tenant=None, spin_us=0): one libringserve "
	      "connection (the low-level half of ringserve.Client)",
    .tp_methods = Connection_methods,
    .tp_getset = Connection_getset,
    .tp_init = (initproc)Connection_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ringserve._ringserve",
    .m_doc = "libringserve bindings (use the ringserve package)",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__ringserve(void)
{
	if (PyType_Ready(&ConnectionType) < 0 || PyType_Ready(&OutputViewType) < 0 ||
	    PyType_Ready(&DetokenizerType) < 0)
		return NULL;
	PyObject *m = PyModule_Create(&module);
	if (!m)
		return NULL;
	if (PyModule_AddObjectRef(m, "Connection", (PyObject *)&ConnectionType) < 0 ||
	    PyModule_AddObjectRef(m, "Detokenizer", (PyObject *)&DetokenizerType) < 0 ||
	    PyModule_AddIntConstant(m, "EVENT_COMPLETION", RS_EVENT_COMPLETION) < 0 ||
	    PyModule_AddIntConstant(m, "EVENT_OUTPUT", RS_EVENT_OUTPUT) < 0 ||
	    PyModule_AddIntConstant(m, "GENERATE_IGNORE_EOS", RS_GENERATE_IGNORE_EOS) < 0 ||
	    PyModule_AddIntConstant(m, "GENERATE_NO_BOS", RS_GENERATE_NO_BOS) < 0 ||
	    PyModule_AddIntConstant(m, "COMPLETION_EOS", RS_COMPLETION_EOS) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
