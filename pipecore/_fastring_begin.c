/* The begin of a call: its caller's site, the bytes waiting to be read, and its slot; and
 * Calls.begin_call, the same for the Python methods. */
#include "_fastring.h"

#include <sys/ioctl.h>

/* Receiving ops (recv, recv_bytes, recv_bytes_into, poll) use the end's second slot. */
static const int RECEIVING[NUM_OPS] = {0, 64, 0, 64, 64, 64, 0};
static const uint64_t NAN_BITS = 0x7ff8000000000000ULL; /* struct.pack("<d", math.nan) */

int get_ll(PyObject *obj, PyObject *name, Py_ssize_t off, long long *out)
{
    PyObject *v = conn_get(obj, name, off);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* The site id of the user's frame at or above `frame` (borrowed, may be NULL); mirrors
 * Recorder.begin_call. */
static int caller_site(Calls *self, PyFrameObject *frame, long long *site)
{
    if (frame == NULL) {
        *site = 0;
        return 0;
    }
    PyCodeObject *code = PyFrame_GetCode(frame);
    int lasti = PyFrame_GetLasti(frame);
    SiteEntry *e = &self->sites[(((uintptr_t)code >> 4) ^ (uintptr_t)lasti) % SITE_CACHE];
    if (e->code == (const void *)code && e->lasti == lasti) {
        *site = e->site;
        Py_DECREF(code);
        return 0;
    }
    int rc = -1;
    long long sid = -1;
    PyObject *sites = PyObject_GetAttr((PyObject *)self, s_sites);
    PyObject *key = Py_BuildValue("(NL)", PyLong_FromVoidPtr(code), (long long)lasti);
    if (sites == NULL || key == NULL || !PyDict_Check(sites))
        goto done;
    PyObject *found = PyDict_GetItemWithError(sites, key); /* borrowed */
    if (found == NULL && PyErr_Occurred())
        goto done;
    if (found != NULL) {
        sid = PyLong_AsLongLong(found);
        if (sid == -1 && PyErr_Occurred())
            goto done;
    }
    if (sid >= 0) {
        /* The recorder keeps every code in `sites` alive: the pointer stays valid. */
        e->code = code;
        e->lasti = lasti;
        e->site = (int)sid;
    }
    else {
        /* A new site, or a library frame whose user site lies further up. */
        PyObject *r = PyObject_CallMethodOneArg((PyObject *)self, s_site, (PyObject *)frame);
        if (r == NULL)
            goto done;
        sid = PyLong_AsLongLong(r);
        Py_DECREF(r);
        if (sid == -1 && PyErr_Occurred())
            goto done;
    }
    *site = sid;
    rc = 0;
done:
    Py_XDECREF(sites);
    Py_XDECREF(key);
    Py_DECREF(code);
    return rc;
}

/* Bytes waiting in the kernel for `conn` (FIONREAD), or -1; mirrors TracedConnection._queued. */
static int measure_queued(PyObject *conn, long long t, long long *queued)
{
    long long at;
    *queued = -1;
    if (get_ll(conn, s_queued_at, off_queued_at, &at) < 0)
        return -1;
    if (t - at < QUEUED_INTERVAL_NS)
        return 0;
    PyObject *tv = PyLong_FromLongLong(t);
    if (tv == NULL)
        return -1;
    int rc = PyObject_SetAttr(conn, s_queued_at, tv);
    Py_DECREF(tv);
    if (rc < 0)
        return -1;
    PyObject *h = conn_get(conn, s_handle, off_handle);
    if (h == NULL)
        return -1;
    if (PyLong_Check(h)) {
        long fd = PyLong_AsLong(h);
        unsigned int n = 0;
        if (!(fd == -1 && PyErr_Occurred()) && ioctl((int)fd, FIONREAD, &n) == 0)
            *queued = n;
        PyErr_Clear();
    }
    Py_DECREF(h);
    return 0;
}

/* Wait for a step grant if step mode is on, give `conn` its end id, and write the begin of
 * `op` called from `frame` into the end's slot (a record for an end without one). */
int begin(Calls *self, PyObject *conn, long op, PyFrameObject *frame, Begin *b)
{
    if (!self->bound) {
        PyErr_SetString(PyExc_ValueError, "expected an open ring, got a closed one");
        return -1;
    }
    if (((const char *)self->control.buf)[STEP_FLAG_OFFSET]) {
        PyObject *r = PyObject_CallMethodNoArgs((PyObject *)self, s_wait_step);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    PyObject *owner = conn_get(conn, s_tl_rec, off_tl_rec);
    if (owner == NULL)
        return -1;
    Py_DECREF(owner); /* only its identity matters */
    if (owner != (PyObject *)self) {
        PyObject *r = PyObject_CallMethodOneArg((PyObject *)self, s_define_end, conn);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    long long site, slot, queued = -1;
    if (caller_site(self, frame, &site) < 0)
        return -1;
    unsigned long long pseq = ++self->pseq;
    long long t = now_ns();
    int receiving = RECEIVING[op];
    /* recv, recv_bytes and recv_bytes_into measure what waits; poll passes -1. */
    if (receiving && op != 5 && measure_queued(conn, t, &queued) < 0)
        return -1;
    if (get_ll(conn, s_tl_slot, off_tl_slot, &slot) < 0)
        return -1;
    if (slot && self->bound && slot + receiving + SLOT_SIZE <= self->ring.len) {
        char *p = (char *)self->ring.buf + slot + receiving;
        /* pseq first and last, so a reader that finds both copies equal read a whole slot. */
        __atomic_store_n((uint64_t *)p, (uint64_t)pseq, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE); /* the first copy before the body */
        put64(p + 8, (uint64_t)t);
        put32(p + 16, (uint32_t)site);
        put16(p + 20, (uint16_t)op);
        put16(p + 22, 0);
        put64(p + 24, (uint64_t)queued);
        put64(p + 32, NAN_BITS);
        __atomic_store_n((uint64_t *)(p + SLOT_LAST), (uint64_t)pseq, __ATOMIC_RELEASE);
    }
    else {
        PyObject *r = PyObject_CallMethod((PyObject *)self, "begin_at", "OlKLLLd", conn, op,
                                          pseq, t, site, queued, Py_NAN);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    b->pseq = pseq;
    b->t = t;
    b->site = site;
    b->queued = queued;
    return 0;
}

/* begin_call(conn, op) -> (pseq, t, site, queued): see Recorder.begin_call. */
PyObject *Calls_begin_call(Calls *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "begin_call expected 2 arguments (conn, op), got %zd",
                     nargs);
        return NULL;
    }
    long op = PyLong_AsLong(args[1]);
    if (op == -1 && PyErr_Occurred())
        return NULL;
    if (op < 0 || op >= NUM_OPS) {
        PyErr_Format(PyExc_ValueError, "expected an op in 0..%d, got %ld", NUM_OPS - 1, op);
        return NULL;
    }
    /* Called from the traced method: the site is its caller's. */
    PyFrameObject *here = PyEval_GetFrame();
    PyFrameObject *caller = here == NULL ? NULL : PyFrame_GetBack(here);
    Begin b;
    int rc = begin(self, args[0], op, caller, &b);
    Py_XDECREF(caller);
    if (rc < 0)
        return NULL;
    return Py_BuildValue("(KLLL)", b.pseq, b.t, b.site, b.queued);
}
