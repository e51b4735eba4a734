/* The worker's hot record writes in C: a call's begin slot and its end record,
 * written straight into the ring map in the layout pipecore/ring.py defines; and the
 * traced connection's send, recv, send_bytes, recv_bytes and recv_bytes_into, which write
 * them around the standard connection's I/O without a Python frame of their own.
 *
 * `Calls` is a base type of pipecore.recorder.FastRecorder. Its members (write_pos,
 * fast_base, fast_limit) are the ones the Python writer uses, so the Python slow
 * paths (reservation, JSON records, errors, polls) and these fast paths share one
 * write position. Every record goes in under the recorder's lock, and the write
 * position is published with a release store after the record is complete.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <zlib.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the ring layout is little-endian; this writer stores fields natively"
#endif

/* Mirrors of pipecore/ring.py; pipecore.recorder refuses this module if they differ. */
#define SLOT_BASE 256
#define SLOT_SIZE 64
#define SLOTS 256
#define HEADER_BYTES (SLOT_BASE + SLOTS * SLOT_SIZE)
#define WRITE_POS_OFFSET 64
#define STEP_FLAG_OFFSET 8
#define SLOT_LAST 40
#define REC_END 2
#define CALL_SIZE 72
#define HEAD_STORE 192
#define HASH_FULL_LIMIT 1024
#define SAMPLE_COUNT 64
#define SAMPLE_MIN_STRIDE 16
#define SAMPLE_MAX_STRIDE 4096
#define FLAG_HASHED 2
#define FLAG_SAMPLED 4
#define QUEUED_INTERVAL_NS 1000000LL
#define NUM_OPS 7
#define SITE_CACHE 64

/* Receiving ops (recv, recv_bytes, recv_bytes_into, poll) use the end's second slot. */
static const int RECEIVING[NUM_OPS] = {0, 64, 0, 64, 64, 64, 0};
static const uint64_t NAN_BITS = 0x7ff8000000000000ULL; /* struct.pack("<d", math.nan) */

/* A plain lock, as threading.Lock, that this writer takes without a Python call. */
typedef struct {
    PyObject_HEAD
    PyThread_type_lock lk;
} Lock;

static int lock_take(Lock *self)
{
    if (PyThread_acquire_lock(self->lk, NOWAIT_LOCK))
        return 0;
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = PyThread_acquire_lock(self->lk, WAIT_LOCK);
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "expected to acquire the writer lock, got a failure");
        return -1;
    }
    return 0;
}

static PyObject *Lock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Lock() takes no arguments");
        return NULL;
    }
    Lock *self = (Lock *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->lk = PyThread_allocate_lock();
    if (self->lk == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void Lock_dealloc(Lock *self)
{
    if (self->lk != NULL) {
        /* Free or held (a forked child's copy), it is held after this: release it. */
        PyThread_acquire_lock(self->lk, NOWAIT_LOCK);
        PyThread_release_lock(self->lk);
        PyThread_free_lock(self->lk);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Lock_acquire(Lock *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "acquire expected at most 1 argument (blocking), got %zd",
                     nargs);
        return NULL;
    }
    if (nargs == 1) {
        int blocking = PyObject_IsTrue(args[0]);
        if (blocking < 0)
            return NULL;
        if (!blocking)
            return PyBool_FromLong(PyThread_acquire_lock(self->lk, NOWAIT_LOCK));
    }
    if (lock_take(self) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *Lock_release(Lock *self, PyObject *Py_UNUSED(ignored))
{
    if (PyThread_acquire_lock(self->lk, NOWAIT_LOCK)) {
        PyThread_release_lock(self->lk);
        PyErr_SetString(PyExc_RuntimeError, "expected a held lock to release, got a free one");
        return NULL;
    }
    PyThread_release_lock(self->lk);
    Py_RETURN_NONE;
}

static PyObject *Lock_exit(Lock *self, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(n))
{
    PyThread_release_lock(self->lk);
    Py_RETURN_NONE;
}

static PyObject *Lock_locked(Lock *self, PyObject *Py_UNUSED(ignored))
{
    if (PyThread_acquire_lock(self->lk, NOWAIT_LOCK)) {
        PyThread_release_lock(self->lk);
        Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

static PyMethodDef Lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))Lock_acquire, METH_FASTCALL,
     "acquire(blocking=True) -> bool"},
    {"release", (PyCFunction)Lock_release, METH_NOARGS, "Release the lock."},
    {"__enter__", (PyCFunction)(void (*)(void))Lock_acquire, METH_FASTCALL, "Acquire."},
    {"__exit__", (PyCFunction)(void (*)(void))Lock_exit, METH_FASTCALL, "Release."},
    {"locked", (PyCFunction)Lock_locked, METH_NOARGS, "Whether the lock is held."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LockType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pipecore._fastring.Lock",
    .tp_basicsize = sizeof(Lock),
    .tp_dealloc = (destructor)Lock_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A lock like threading.Lock that the C writer takes without a Python call.",
    .tp_methods = Lock_methods,
    .tp_new = Lock_new,
};

typedef struct {
    const void *code; /* kept alive by the recorder's site_codes */
    int lasti;
    int site;
} SiteEntry;

typedef struct {
    PyObject_HEAD
    long long write_pos;
    long long fast_base;
    long long fast_limit;
    unsigned long long pseq;
    int bound;
    Py_buffer ring;
    Py_buffer control;
    Lock *lock;
    SiteEntry sites[SITE_CACHE];
} Calls;

/* TracedConnection, and the offsets of its slots the writer reads in place (0: by name). */
static PyTypeObject *traced_type;
static Py_ssize_t off_tl_rec, off_tl_slot, off_tl_eid, off_queued_at, off_handle, off_readable,
    off_writable;

static PyObject *s_readable, *s_writable;
static PyObject *s_tl_rec, *s_tl_slot, *s_tl_eid, *s_queued_at, *s_handle, *s_wait_step,
    *s_define_end, *s_site, *s_sites;

static inline long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void put64(char *p, uint64_t v) { memcpy(p, &v, 8); }
static inline void put32(char *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put16(char *p, uint16_t v) { memcpy(p, &v, 2); }

static void unbind(Calls *self)
{
    if (self->bound) {
        self->bound = 0;
        PyBuffer_Release(&self->ring);
        PyBuffer_Release(&self->control);
    }
    Py_CLEAR(self->lock);
}

static void Calls_dealloc(Calls *self)
{
    unbind(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Calls_bind(Calls *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "bind expected 3 arguments (ring, control, lock), got %zd",
                     nargs);
        return NULL;
    }
    unbind(self);
    if (PyObject_GetBuffer(args[0], &self->ring, PyBUF_WRITABLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &self->control, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&self->ring);
        return NULL;
    }
    self->bound = 1;
    if (self->ring.len < HEADER_BYTES || self->control.len <= STEP_FLAG_OFFSET) {
        PyErr_Format(PyExc_ValueError, "expected a ring of at least %d bytes, got %zd",
                     HEADER_BYTES, self->ring.len);
        unbind(self);
        return NULL;
    }
    if (!PyObject_TypeCheck(args[2], &LockType)) {
        PyErr_Format(PyExc_TypeError, "expected a pipecore._fastring.Lock, got %s",
                     Py_TYPE(args[2])->tp_name);
        unbind(self);
        return NULL;
    }
    Py_INCREF(args[2]);
    self->lock = (Lock *)args[2];
    memset(self->sites, 0, sizeof(self->sites));
    Py_RETURN_NONE;
}

static PyObject *Calls_unbind(Calls *self, PyObject *Py_UNUSED(ignored))
{
    unbind(self);
    Py_RETURN_NONE;
}

static PyObject *Calls_take_pseq(Calls *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(++self->pseq);
}

/* conn.<name> (a new reference): read in place when conn is a TracedConnection whose
 * slot `off` is set. */
static inline PyObject *conn_get(PyObject *conn, PyObject *name, Py_ssize_t off)
{
    if (off && traced_type != NULL && PyObject_TypeCheck(conn, traced_type)) {
        PyObject *v = *(PyObject **)((char *)conn + off);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
    }
    return PyObject_GetAttr(conn, name);
}

static int get_ll(PyObject *obj, PyObject *name, Py_ssize_t off, long long *out)
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

/* The begin of a call, kept by the caller until its end. */
typedef struct {
    unsigned long long pseq;
    long long t;
    long long site;
    long long queued;
} Begin;

/* Wait for a step grant if step mode is on, give `conn` its end id, and write the begin of
 * `op` called from `frame` into the end's slot (a record for an end without one). */
static int begin(Calls *self, PyObject *conn, long op, PyFrameObject *frame, Begin *b)
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
static PyObject *Calls_begin_call(Calls *self, PyObject *const *args, Py_ssize_t nargs)
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

static uint32_t sampled_crc(const unsigned char *p, Py_ssize_t n)
{
    /* CRC-32 of the bytes at n-1, n-1-s, n-1-2s, ... as ring.frame_sample. */
    Py_ssize_t s = n / SAMPLE_COUNT;
    if (s < SAMPLE_MIN_STRIDE)
        s = SAMPLE_MIN_STRIDE;
    if (s > SAMPLE_MAX_STRIDE)
        s = SAMPLE_MAX_STRIDE;
    unsigned char picked[512];
    uLong crc = crc32(0L, Z_NULL, 0);
    size_t k = 0;
    for (Py_ssize_t i = n - 1; i >= 0; i -= s) {
        picked[k++] = p[i];
        if (k == sizeof(picked)) {
            crc = crc32(crc, picked, (uInt)k);
            k = 0;
        }
    }
    if (k)
        crc = crc32(crc, picked, (uInt)k);
    return (uint32_t)crc;
}

/* Write the end record of `op` on `conn` (begun as pseq0 at t0) with `frame` (None: no
 * frame): see Recorder.end. */
static int write_end(Calls *self, PyObject *conn, long long op, unsigned long long pseq0,
                     long long t0, long long site, PyObject *frame, long long queued)
{
    long long eid;
    if (get_ll(conn, s_tl_eid, off_tl_eid, &eid) < 0)
        return -1;
    Py_buffer view;
    int have_view = 0;
    long long nbytes = -1;
    Py_ssize_t hlen = 0;
    uint32_t h = 0;
    uint16_t flags = 0;
    if (frame != Py_None) {
        if (PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE) < 0)
            return -1;
        have_view = 1;
        nbytes = view.len;
        if (nbytes <= HEAD_STORE) {
            /* The collector hashes the stored head: it is the whole frame. */
            hlen = view.len;
        }
        else {
            hlen = HEAD_STORE;
            if (nbytes <= HASH_FULL_LIMIT) {
                h = (uint32_t)crc32(0L, (const Bytef *)view.buf, (uInt)view.len);
                flags = FLAG_HASHED;
            }
            else {
                h = sampled_crc((const unsigned char *)view.buf, view.len);
                flags = FLAG_SAMPLED;
            }
        }
    }
    long long need = (CALL_SIZE + hlen + 7) & ~7LL;
    int res = -1;
    if (!self->bound) {
        PyErr_SetString(PyExc_ValueError, "expected an open ring, got a closed one");
        goto out;
    }
    Lock *lock = self->lock;
    Py_INCREF(lock); /* unbind() while waiting for space must not free it */
    if (lock_take(lock) < 0) {
        Py_DECREF(lock);
        goto out;
    }
    if (!self->bound) {
        PyErr_SetString(PyExc_ValueError, "expected an open ring, got a closed one");
        goto unlock;
    }
    long long w = self->write_pos;
    long long off;
    if (w + need <= self->fast_limit) {
        off = w - self->fast_base;
    }
    else {
        PyObject *o = PyObject_CallMethod((PyObject *)self, "_reserve", "L", need);
        if (o == NULL)
            goto unlock;
        off = PyLong_AsLongLong(o);
        Py_DECREF(o);
        if (off == -1 && PyErr_Occurred())
            goto unlock;
        w = self->write_pos;
        if (!self->bound) { /* closed while waiting for space */
            PyErr_SetString(PyExc_ValueError, "expected an open ring, got a closed one");
            goto unlock;
        }
    }
    if (off < HEADER_BYTES || off + need > self->ring.len) {
        PyErr_Format(PyExc_ValueError, "expected a record offset in %d..%zd, got %lld",
                     HEADER_BYTES, self->ring.len - need, off);
        goto unlock;
    }
    char *p = (char *)self->ring.buf + off;
    put32(p, (uint32_t)need);
    p[4] = REC_END;
    p[5] = (char)op;
    put16(p + 6, (uint16_t)hlen);
    put64(p + 8, (uint64_t)t0);
    put64(p + 16, (uint64_t)pseq0);
    put64(p + 24, (uint64_t)now_ns());
    put64(p + 32, (uint64_t)++self->pseq);
    put64(p + 40, (uint64_t)queued);
    put32(p + 48, (uint32_t)eid);
    put32(p + 52, (uint32_t)site);
    put64(p + 56, (uint64_t)nbytes);
    put32(p + 64, h);
    put16(p + 68, flags);
    p[70] = (char)op;
    p[71] = 0;
    if (hlen)
        memcpy(p + CALL_SIZE, view.buf, (size_t)hlen);
    w += need;
    self->write_pos = w;
    /* The record is complete before the position that covers it becomes visible. */
    __atomic_store_n((uint64_t *)((char *)self->ring.buf + WRITE_POS_OFFSET), (uint64_t)w,
                     __ATOMIC_RELEASE);
    res = 0;
unlock:
    PyThread_release_lock(lock->lk);
    Py_DECREF(lock);
out:
    if (have_view)
        PyBuffer_Release(&view);
    return res;
}

/* end(conn, op, pseq0, t0, site, frame=None, queued=-1): see Recorder.end. */
static PyObject *Calls_end(Calls *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 5 || nargs > 7) {
        PyErr_Format(PyExc_TypeError,
                     "end expected 5 to 7 arguments (conn, op, pseq0, t0, site, frame, "
                     "queued), got %zd",
                     nargs);
        return NULL;
    }
    long long op, t0, site, queued = -1;
    unsigned long long pseq0;
    op = PyLong_AsLongLong(args[1]);
    pseq0 = PyLong_AsUnsignedLongLong(args[2]);
    t0 = PyLong_AsLongLong(args[3]);
    site = PyLong_AsLongLong(args[4]);
    if (nargs == 7)
        queued = PyLong_AsLongLong(args[6]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *frame = nargs >= 6 ? args[5] : Py_None;
    if (write_end(self, args[0], op, pseq0, t0, site, frame, queued) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef Calls_methods[] = {
    {"bind", (PyCFunction)(void (*)(void))Calls_bind, METH_FASTCALL,
     "bind(ring, control, lock): write into the ring map under lock."},
    {"unbind", (PyCFunction)Calls_unbind, METH_NOARGS, "Release the ring and control maps."},
    {"take_pseq", (PyCFunction)Calls_take_pseq, METH_NOARGS, "The next pseq of this ring."},
    {"begin_call", (PyCFunction)(void (*)(void))Calls_begin_call, METH_FASTCALL,
     "begin_call(conn, op) -> (pseq, t, site, queued)"},
    {"end", (PyCFunction)(void (*)(void))Calls_end, METH_FASTCALL,
     "end(conn, op, pseq0, t0, site, frame=None, queued=-1)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Calls_members[] = {
    {"write_pos", T_LONGLONG, offsetof(Calls, write_pos), 0, "bytes written, ever"},
    {"fast_base", T_LONGLONG, offsetof(Calls, fast_base), 0, "write_pos minus map offset"},
    {"fast_limit", T_LONGLONG, offsetof(Calls, fast_limit), 0, "end of the unchecked span"},
    {"pseq", T_ULONGLONG, offsetof(Calls, pseq), READONLY, "the last pseq taken"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CallsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pipecore._fastring.Calls",
    .tp_basicsize = sizeof(Calls),
    .tp_dealloc = (destructor)Calls_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The begin slot and end record writes of a recorder, in C.",
    .tp_methods = Calls_methods,
    .tp_members = Calls_members,
    .tp_new = PyType_GenericNew,
};

/* -- the traced connection's frame-moving methods ----------------------------------------
 *
 * send, recv, send_bytes, recv_bytes and recv_bytes_into of
 * pipecore.tracedconnection.TracedConnection, as method descriptors: the begin, the
 * standard connection's `_send_bytes`/`_recv_bytes`, and the end or error record, without a
 * Python frame of their own. They do what the Python
 * methods they replace do (those stay the reference): outside a run they call the
 * standard method; with the Python recorder, or with arguments of other types than the
 * usual ones (keywords, a non-int offset), they call the Python method itself.
 */

enum { OP_SEND = 0, OP_RECV = 1, OP_SEND_BYTES = 2, OP_RECV_BYTES = 3, OP_RECV_BYTES_INTO = 4 };
/* _send_bytes writes the header and a frame up to this size as one bytes object. */
#define SMALL_FRAME 16384

static PyObject *telemetry_ns; /* pipecore.telemetry's namespace: `_recorder` */
static PyObject *plain_send, *plain_recv, *plain_send_bytes, *plain_recv_bytes,
    *plain_recv_bytes_into;
static PyObject *py_send, *py_recv, *py_send_bytes, *py_recv_bytes, *py_recv_bytes_into;
static PyObject *buffer_too_short; /* multiprocessing.BufferTooShort */
static PyObject *dumps_fn, *loads_fn;
static PyObject *s_recorder, *s_check_closed, *s_check_readable,
    *s_check_writable, *s_send_bytes, *s_recv_bytes, *s_bad_message_length, *s_getbuffer,
    *s_getvalue, *s_release, *s_error, *s_cast, *s_B, *s_tell, *s_readinto;

/* func(conn, *args, **kwargs) from a vectorcall argument list. */
static PyObject *call_with_self(PyObject *func, PyObject *conn, PyObject *const *args,
                                Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t total = nargs + (kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames));
    PyObject *small[8];
    PyObject **stack = small;
    if (total + 1 > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
        stack = PyMem_Malloc((size_t)(total + 1) * sizeof(PyObject *));
        if (stack == NULL)
            return PyErr_NoMemory();
    }
    stack[0] = conn;
    if (total)
        memcpy(stack + 1, args, (size_t)total * sizeof(PyObject *));
    PyObject *r = PyObject_Vectorcall(func, stack, nargs + 1, kwnames);
    if (stack != small)
        PyMem_Free(stack);
    return r;
}

/* The process's recorder as a C recorder (a new reference), or NULL with *other set to
 * what the Python method should handle: Py_None outside a run, else another recorder.
 * NULL with *other NULL: an error. */
static Calls *fast_recorder(PyObject **other)
{
    *other = NULL;
    if (telemetry_ns == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "expected installed traced methods, got none");
        return NULL;
    }
    PyObject *rec = PyDict_GetItemWithError(telemetry_ns, s_recorder); /* borrowed */
    if (rec == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError,
                            "expected pipecore.telemetry._recorder, got no such name");
        return NULL;
    }
    if (rec != Py_None && PyObject_TypeCheck(rec, &CallsType) && ((Calls *)rec)->bound) {
        Py_INCREF(rec); /* a deactivation while the call blocks must not free it */
        return (Calls *)rec;
    }
    *other = rec;
    return NULL;
}

static int call_check(PyObject *conn, PyObject *name)
{
    PyObject *r = PyObject_CallMethodNoArgs(conn, name);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* The standard checks, closed first, then readable or writable (`flag`); the standard
 * methods raise their own errors. */
static int check_open(PyObject *conn, PyObject *flag, Py_ssize_t flag_off, PyObject *check)
{
    PyObject *h = conn_get(conn, s_handle, off_handle);
    if (h == NULL)
        return -1;
    int closed = h == Py_None;
    Py_DECREF(h);
    if (closed && call_check(conn, s_check_closed) < 0)
        return -1;
    PyObject *f = conn_get(conn, flag, flag_off);
    if (f == NULL)
        return -1;
    int ok = PyObject_IsTrue(f);
    Py_DECREF(f);
    if (ok < 0)
        return -1;
    if (!ok && call_check(conn, check) < 0)
        return -1;
    return 0;
}

/* Record the error raised by the call begun as `b` (`frame`: a frame it consumed, or
 * None) and raise it again; an error of the recorder replaces it, with it as context. */
static void record_error(Calls *self, PyObject *conn, long op, const Begin *b, PyObject *frame)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *r = PyObject_CallMethod((PyObject *)self, "error", "Ol(KLL)OOL", conn, op, b->pseq,
                                      b->t, b->site, value, frame, b->queued);
    if (r != NULL) {
        Py_DECREF(r);
        PyErr_Restore(type, value, tb);
        return;
    }
    PyObject *type2, *value2, *tb2;
    PyErr_Fetch(&type2, &value2, &tb2);
    PyErr_NormalizeException(&type2, &value2, &tb2);
    if (value2 != value)
        PyException_SetContext(value2, value); /* steals value */
    else
        Py_DECREF(value);
    Py_DECREF(type);
    Py_XDECREF(tb);
    PyErr_Restore(type2, value2, tb2);
}

/* The end record of a call that returned, and the recorder's reference dropped. */
static PyObject *finish(Calls *self, PyObject *conn, long op, const Begin *b, PyObject *frame,
                        PyObject *result)
{
    if (write_end(self, conn, op, b->pseq, b->t, b->site, frame, b->queued) < 0)
        Py_CLEAR(result);
    Py_DECREF(self);
    return result;
}

static PyObject *traced_send(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    PyObject *other;
    if (nargs != 1 || kwnames != NULL)
        return call_with_self(py_send, conn, args, nargs, kwnames);
    Calls *self = fast_recorder(&other);
    if (self == NULL) {
        if (other == NULL)
            return NULL;
        return call_with_self(other == Py_None ? plain_send : py_send, conn, args, nargs, NULL);
    }
    Begin b;
    if (begin(self, conn, OP_SEND, PyEval_GetFrame(), &b) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    PyObject *buf = NULL, *r;
    if (check_open(conn, s_writable, off_writable, s_check_writable) < 0)
        goto failed;
    buf = PyObject_CallOneArg(dumps_fn, args[0]);
    if (buf == NULL)
        goto failed;
    r = PyObject_CallMethodOneArg(conn, s_send_bytes, buf);
    if (r == NULL)
        goto failed;
    Py_DECREF(r);
    Py_INCREF(Py_None);
    r = finish(self, conn, OP_SEND, &b, buf, Py_None);
    Py_DECREF(buf);
    return r;
failed:
    Py_XDECREF(buf);
    record_error(self, conn, OP_SEND, &b, Py_None);
    Py_DECREF(self);
    return NULL;
}

static PyObject *traced_recv(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    PyObject *other;
    if (nargs != 0 || kwnames != NULL)
        return call_with_self(py_recv, conn, args, nargs, kwnames);
    Calls *self = fast_recorder(&other);
    if (self == NULL) {
        if (other == NULL)
            return NULL;
        return call_with_self(other == Py_None ? plain_recv : py_recv, conn, args, 0, NULL);
    }
    Begin b;
    if (begin(self, conn, OP_RECV, PyEval_GetFrame(), &b) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    PyObject *received = NULL, *frame = NULL, *obj = NULL;
    if (check_open(conn, s_readable, off_readable, s_check_readable) < 0)
        goto failed;
    received = PyObject_CallMethodNoArgs(conn, s_recv_bytes);
    if (received == NULL)
        goto failed;
    frame = PyObject_CallMethodNoArgs(received, s_getbuffer);
    Py_DECREF(received);
    if (frame == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    obj = PyObject_CallOneArg(loads_fn, frame);
    if (obj == NULL) {
        record_error(self, conn, OP_RECV, &b, frame);
        Py_DECREF(self);
    }
    else {
        obj = finish(self, conn, OP_RECV, &b, frame, obj);
    }
    /* As `with buf.getbuffer() as frame`: the view is released when the call returns. */
    if (Py_REFCNT(frame) > 1) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *r = PyObject_CallMethodNoArgs(frame, s_release);
        if (r == NULL) {
            Py_CLEAR(obj);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        }
        else {
            Py_DECREF(r);
            PyErr_Restore(type, value, tb);
        }
    }
    Py_DECREF(frame);
    return obj;
failed:
    record_error(self, conn, OP_RECV, &b, Py_None);
    Py_DECREF(self);
    return NULL;
}

/* An int argument that fits a long long, or NULL (None or absent) for the default; 0: it
 * does not (the Python method handles it). */
static int small_int(PyObject *arg, int none_ok, long long *out, int *given)
{
    *given = 0;
    if (arg == NULL || (none_ok && arg == Py_None))
        return 1;
    if (!PyLong_CheckExact(arg))
        return 0;
    int overflow;
    *out = PyLong_AsLongLongAndOverflow(arg, &overflow);
    if (overflow || (*out == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *given = 1;
    return 1;
}

static PyObject *traced_send_bytes(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    PyObject *other;
    long long offset = 0, size = 0;
    int has_offset, has_size;
    if (nargs < 1 || nargs > 3 || kwnames != NULL ||
        !small_int(nargs > 1 ? args[1] : NULL, 0, &offset, &has_offset) ||
        !small_int(nargs > 2 ? args[2] : NULL, 1, &size, &has_size))
        return call_with_self(py_send_bytes, conn, args, nargs, kwnames);
    Calls *self = fast_recorder(&other);
    if (self == NULL) {
        if (other == NULL)
            return NULL;
        return call_with_self(other == Py_None ? plain_send_bytes : py_send_bytes, conn, args,
                              nargs, NULL);
    }
    Begin b;
    if (begin(self, conn, OP_SEND_BYTES, PyEval_GetFrame(), &b) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    PyObject *buf = args[0], *m = NULL, *frame = NULL, *r;
    long long n;
    if (check_open(conn, s_writable, off_writable, s_check_writable) < 0)
        goto failed;
    if (PyBytes_CheckExact(buf)) {
        n = PyBytes_GET_SIZE(buf);
    }
    else {
        m = PyMemoryView_FromObject(buf);
        if (m == NULL)
            goto failed;
        if (PyMemoryView_GET_BUFFER(m)->itemsize > 1) {
            PyObject *cast = PyObject_CallMethodOneArg(m, s_cast, s_B);
            Py_SETREF(m, cast);
            if (m == NULL)
                goto failed;
        }
        n = PyMemoryView_GET_BUFFER(m)->len;
    }
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "offset is negative");
        goto failed;
    }
    if (n < offset) {
        PyErr_SetString(PyExc_ValueError, "buffer length < offset");
        goto failed;
    }
    if (!has_size) {
        size = n - offset;
    }
    else if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size is negative");
        goto failed;
    }
    else if (offset + size > n) {
        PyErr_SetString(PyExc_ValueError, "buffer length < offset + size");
        goto failed;
    }
    if (m == NULL && offset == 0 && size == n && n <= SMALL_FRAME) {
        /* The same bytes on the wire as its view: _send_bytes joins them to the header. */
        Py_INCREF(buf);
        frame = buf;
    }
    else {
        if (m == NULL && (m = PyMemoryView_FromObject(buf)) == NULL)
            goto failed;
        frame = PySequence_GetSlice(m, (Py_ssize_t)offset, (Py_ssize_t)(offset + size));
        if (frame == NULL)
            goto failed;
    }
    r = PyObject_CallMethodOneArg(conn, s_send_bytes, frame);
    if (r == NULL)
        goto failed;
    Py_DECREF(r);
    Py_INCREF(Py_None);
    r = finish(self, conn, OP_SEND_BYTES, &b, frame, Py_None);
    Py_DECREF(frame);
    Py_XDECREF(m);
    return r;
failed:
    Py_XDECREF(frame);
    Py_XDECREF(m);
    record_error(self, conn, OP_SEND_BYTES, &b, Py_None);
    Py_DECREF(self);
    return NULL;
}

static PyObject *traced_recv_bytes(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    PyObject *other;
    long long maxlength = 0;
    int has_max;
    if (nargs > 1 || kwnames != NULL || !small_int(nargs ? args[0] : NULL, 1, &maxlength, &has_max))
        return call_with_self(py_recv_bytes, conn, args, nargs, kwnames);
    Calls *self = fast_recorder(&other);
    if (self == NULL) {
        if (other == NULL)
            return NULL;
        return call_with_self(other == Py_None ? plain_recv_bytes : py_recv_bytes, conn, args,
                              nargs, NULL);
    }
    Begin b;
    if (begin(self, conn, OP_RECV_BYTES, PyEval_GetFrame(), &b) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    PyObject *received = NULL, *data;
    if (check_open(conn, s_readable, off_readable, s_check_readable) < 0)
        goto failed;
    if (has_max && maxlength < 0) {
        PyErr_SetString(PyExc_ValueError, "negative maxlength");
        goto failed;
    }
    received = PyObject_CallMethodOneArg(conn, s_recv_bytes, nargs ? args[0] : Py_None);
    if (received == NULL)
        goto failed;
    if (received == Py_None) {
        if (call_check(conn, s_bad_message_length) < 0)
            goto failed;
    }
    data = PyObject_CallMethodNoArgs(received, s_getvalue);
    Py_CLEAR(received);
    if (data == NULL)
        goto failed;
    return finish(self, conn, OP_RECV_BYTES, &b, data, data);
failed:
    Py_XDECREF(received);
    record_error(self, conn, OP_RECV_BYTES, &b, Py_None);
    Py_DECREF(self);
    return NULL;
}

/* The standard method's order: the checks, the buffer's size in bytes (itemsize times its
 * length) and the offset, then the frame; a frame longer than the room after the offset
 * raises BufferTooShort with the whole frame, consumed. */
static PyObject *traced_recv_bytes_into(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
                                        PyObject *kwnames)
{
    PyObject *other;
    long long offset = 0;
    int has_offset;
    if (nargs < 1 || nargs > 2 || kwnames != NULL ||
        !small_int(nargs > 1 ? args[1] : NULL, 0, &offset, &has_offset))
        return call_with_self(py_recv_bytes_into, conn, args, nargs, kwnames);
    Calls *self = fast_recorder(&other);
    if (self == NULL) {
        if (other == NULL)
            return NULL;
        return call_with_self(other == Py_None ? plain_recv_bytes_into : py_recv_bytes_into, conn,
                              args, nargs, NULL);
    }
    Begin b;
    if (begin(self, conn, OP_RECV_BYTES_INTO, PyEval_GetFrame(), &b) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    PyObject *m = NULL, *received = NULL, *frame = NULL, *consumed = Py_None, *r;
    Py_INCREF(consumed);
    Py_ssize_t size = 0;
    if (check_open(conn, s_readable, off_readable, s_check_readable) < 0)
        goto failed;
    m = PyMemoryView_FromObject(args[0]);
    if (m == NULL)
        goto failed;
    Py_ssize_t itemsize = PyMemoryView_GET_BUFFER(m)->itemsize;
    Py_ssize_t length = PyObject_Size(m);
    if (length < 0)
        goto failed;
    long long bytesize = (long long)itemsize * length;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "negative offset");
        goto failed;
    }
    if (offset > bytesize) {
        PyErr_SetString(PyExc_ValueError, "offset too large");
        goto failed;
    }
    received = PyObject_CallMethodNoArgs(conn, s_recv_bytes);
    if (received == NULL)
        goto failed;
    r = PyObject_CallMethodNoArgs(received, s_tell);
    if (r == NULL)
        goto failed;
    size = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    if (size == -1 && PyErr_Occurred())
        goto failed;
    if (bytesize < offset + size) {
        Py_SETREF(consumed, PyObject_CallMethodNoArgs(received, s_getvalue));
        if (consumed == NULL) {
            consumed = Py_NewRef(Py_None);
            goto failed;
        }
        PyErr_SetObject(buffer_too_short, consumed);
        goto failed;
    }
    frame = PyObject_CallMethodNoArgs(received, s_getbuffer);
    if (frame == NULL)
        goto failed;
    const Py_buffer *dst = PyMemoryView_GET_BUFFER(m);
    if (itemsize == 1 && PyBuffer_IsContiguous(dst, 'C') && !dst->readonly) {
        /* As readinto into m[offset:offset + size]: the bytes land at the offset. */
        if (size)
            memcpy((char *)dst->buf + offset, PyMemoryView_GET_BUFFER(frame)->buf, (size_t)size);
    }
    else {
        PyObject *part = PySequence_GetSlice(m, (Py_ssize_t)(offset / itemsize),
                                             (Py_ssize_t)((offset + size) / itemsize));
        if (part == NULL)
            goto failed;
        r = PyObject_CallMethod(received, "seek", "i", 0);
        if (r != NULL) {
            Py_DECREF(r);
            r = PyObject_CallMethodOneArg(received, s_readinto, part);
        }
        Py_DECREF(part);
        if (r == NULL)
            goto failed;
        Py_DECREF(r);
    }
    PyObject *result = PyLong_FromSsize_t(size);
    if (result == NULL)
        goto failed;
    if (write_end(self, conn, OP_RECV_BYTES_INTO, b.pseq, b.t, b.site, frame, b.queued) < 0)
        Py_CLEAR(result);
    r = PyObject_CallMethodNoArgs(frame, s_release);
    if (r == NULL)
        Py_CLEAR(result);
    else
        Py_DECREF(r);
    r = PyObject_CallMethodNoArgs(m, s_release); /* as `with memoryview(buf)` */
    if (r == NULL)
        Py_CLEAR(result);
    else
        Py_DECREF(r);
    Py_DECREF(frame);
    Py_DECREF(received);
    Py_DECREF(m);
    Py_DECREF(consumed);
    Py_DECREF(self);
    return result;
failed:
    if (frame != NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        r = PyObject_CallMethodNoArgs(frame, s_release);
        Py_XDECREF(r);
        PyErr_Clear();
        PyErr_Restore(type, value, tb);
        Py_DECREF(frame);
    }
    if (m != NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        r = PyObject_CallMethodNoArgs(m, s_release);
        Py_XDECREF(r);
        PyErr_Clear();
        PyErr_Restore(type, value, tb);
        Py_DECREF(m);
    }
    if (received != NULL && consumed == Py_None) {
        /* A frame read before the error is consumed all the same: recorded with it. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *v = PyObject_CallMethodNoArgs(received, s_getvalue);
        if (v == NULL)
            PyErr_Clear();
        else
            Py_SETREF(consumed, v);
        PyErr_Restore(type, value, tb);
    }
    Py_XDECREF(received);
    record_error(self, conn, OP_RECV_BYTES_INTO, &b, consumed);
    Py_DECREF(consumed);
    Py_DECREF(self);
    return NULL;
}

static PyMethodDef traced_methods[] = {
    {"send", (PyCFunction)(void (*)(void))traced_send, METH_FASTCALL | METH_KEYWORDS,
     "send($self, obj)\n--\n\nSend a (picklable) object."},
    {"recv", (PyCFunction)(void (*)(void))traced_recv, METH_FASTCALL | METH_KEYWORDS,
     "recv($self)\n--\n\nReceive a (picklable) object."},
    {"send_bytes", (PyCFunction)(void (*)(void))traced_send_bytes, METH_FASTCALL | METH_KEYWORDS,
     "send_bytes($self, buf, offset=0, size=None)\n--\n\n"
     "Send the bytes data from a bytes-like object."},
    {"recv_bytes", (PyCFunction)(void (*)(void))traced_recv_bytes, METH_FASTCALL | METH_KEYWORDS,
     "recv_bytes($self, maxlength=None)\n--\n\nReceive bytes data as a bytes object."},
    {"recv_bytes_into", (PyCFunction)(void (*)(void))traced_recv_bytes_into,
     METH_FASTCALL | METH_KEYWORDS,
     "recv_bytes_into($self, buf, offset=0)\n--\n\n"
     "Receive bytes data into a writeable bytes-like object; return its size."},
    {NULL, NULL, 0, NULL},
};

/* The number of methods in traced_methods. */
#define TRACED 5

/* install_methods(cls, plain_cls, telemetry_namespace, dumps, loads): replace cls's five
 * frame-moving methods with traced_methods, keeping the Python ones for what they hand on. */
static PyObject *install_methods(PyObject *Py_UNUSED(module), PyObject *const *args,
                                 Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError,
                     "install_methods expected 5 arguments (cls, plain_cls, namespace, dumps, "
                     "loads), got %zd",
                     nargs);
        return NULL;
    }
    PyObject *cls = args[0], *plain_cls = args[1];
    if (!PyType_Check(cls) || !PyType_Check(plain_cls) || !PyDict_Check(args[2])) {
        PyErr_Format(PyExc_TypeError, "expected two classes and a dict, got %s, %s and %s",
                     Py_TYPE(cls)->tp_name, Py_TYPE(plain_cls)->tp_name,
                     Py_TYPE(args[2])->tp_name);
        return NULL;
    }
    PyObject **plain[] = {&plain_send, &plain_recv, &plain_send_bytes, &plain_recv_bytes,
                          &plain_recv_bytes_into};
    PyObject **python[] = {&py_send, &py_recv, &py_send_bytes, &py_recv_bytes,
                           &py_recv_bytes_into};
    PyObject *got_plain[TRACED] = {NULL}, *got_python[TRACED] = {NULL}, *descrs[TRACED] = {NULL};
    if (buffer_too_short == NULL) {
        PyObject *mp = PyImport_ImportModule("multiprocessing");
        if (mp == NULL)
            return NULL;
        buffer_too_short = PyObject_GetAttrString(mp, "BufferTooShort");
        Py_DECREF(mp);
        if (buffer_too_short == NULL)
            return NULL;
    }
    for (int i = 0; i < TRACED; i++) {
        const char *name = traced_methods[i].ml_name;
        got_python[i] = PyObject_GetAttrString(cls, name);
        got_plain[i] = PyObject_GetAttrString(plain_cls, name);
        if (got_python[i] == NULL || got_plain[i] == NULL)
            goto fail;
        if (!PyFunction_Check(got_python[i])) {
            PyErr_Format(PyExc_TypeError, "expected %s.%s to be a Python function, got %s",
                         ((PyTypeObject *)cls)->tp_name, name, Py_TYPE(got_python[i])->tp_name);
            goto fail;
        }
        descrs[i] = PyDescr_NewMethod((PyTypeObject *)cls, &traced_methods[i]);
        if (descrs[i] == NULL)
            goto fail;
    }
    for (int i = 0; i < TRACED; i++) {
        if (PyObject_SetAttrString(cls, traced_methods[i].ml_name, descrs[i]) < 0)
            goto fail;
    }
    for (int i = 0; i < TRACED; i++) {
        Py_XSETREF(*plain[i], got_plain[i]);
        Py_XSETREF(*python[i], got_python[i]);
        Py_DECREF(descrs[i]);
    }
    struct {
        Py_ssize_t *off;
        PyObject *name;
    } fields[] = {
        {&off_tl_rec, s_tl_rec},     {&off_tl_slot, s_tl_slot},   {&off_tl_eid, s_tl_eid},
        {&off_queued_at, s_queued_at}, {&off_handle, s_handle},   {&off_readable, s_readable},
        {&off_writable, s_writable},
    };
    Py_XSETREF(traced_type, NULL); /* no in-place reads while the offsets change */
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        /* A slot of cls is a member descriptor in its own dict; anything else is read by name. */
        PyObject *d = PyDict_GetItemWithError(((PyTypeObject *)cls)->tp_dict, fields[i].name);
        if (d == NULL && PyErr_Occurred())
            return NULL;
        *fields[i].off = 0;
        if (d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            if (m->type == T_OBJECT_EX && !(m->flags & READONLY))
                *fields[i].off = m->offset;
        }
    }
    Py_INCREF(cls);
    traced_type = (PyTypeObject *)cls;
    Py_INCREF(args[2]);
    Py_XSETREF(telemetry_ns, args[2]);
    Py_INCREF(args[3]);
    Py_XSETREF(dumps_fn, args[3]);
    Py_INCREF(args[4]);
    Py_XSETREF(loads_fn, args[4]);
    Py_RETURN_NONE;
fail:
    for (int i = 0; i < TRACED; i++) {
        Py_XDECREF(got_plain[i]);
        Py_XDECREF(got_python[i]);
        Py_XDECREF(descrs[i]);
    }
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"install_methods", (PyCFunction)(void (*)(void))install_methods, METH_FASTCALL,
     "install_methods(cls, plain_cls, namespace, dumps, loads): the traced methods in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pipecore._fastring", "The worker's hot record writes in C.", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastring(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_tl_rec, "_tl_rec"},       {&s_tl_slot, "_tl_slot"},     {&s_tl_eid, "_tl_eid"},
        {&s_queued_at, "_queued_at"}, {&s_handle, "_handle"},       {&s_wait_step, "wait_step"},
        {&s_define_end, "define_end"}, {&s_site, "site"},           {&s_sites, "sites"},
        {&s_recorder, "_recorder"},   {&s_readable, "_readable"},   {&s_writable, "_writable"},
        {&s_check_closed, "_check_closed"},     {&s_check_readable, "_check_readable"},
        {&s_check_writable, "_check_writable"}, {&s_send_bytes, "_send_bytes"},
        {&s_recv_bytes, "_recv_bytes"},         {&s_bad_message_length, "_bad_message_length"},
        {&s_getbuffer, "getbuffer"},  {&s_getvalue, "getvalue"},    {&s_release, "release"},
        {&s_error, "error"},          {&s_cast, "cast"},            {&s_B, "B"},
        {&s_tell, "tell"},            {&s_readinto, "readinto"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL)
            return NULL;
    }
    if (PyType_Ready(&CallsType) < 0 || PyType_Ready(&LockType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CallsType);
    if (PyModule_AddObject(m, "Calls", (PyObject *)&CallsType) < 0) {
        Py_DECREF(&CallsType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&LockType);
    if (PyModule_AddObject(m, "Lock", (PyObject *)&LockType) < 0) {
        Py_DECREF(&LockType);
        Py_DECREF(m);
        return NULL;
    }
    /* The layout this writer was built for, checked against pipecore.ring at import. */
    if (PyModule_AddIntConstant(m, "HEADER_BYTES", HEADER_BYTES) < 0 ||
        PyModule_AddIntConstant(m, "WRITE_POS_OFFSET", WRITE_POS_OFFSET) < 0 ||
        PyModule_AddIntConstant(m, "STEP_FLAG_OFFSET", STEP_FLAG_OFFSET) < 0 ||
        PyModule_AddIntConstant(m, "SLOT_SIZE", SLOT_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "SLOT_LAST", SLOT_LAST) < 0 ||
        PyModule_AddIntConstant(m, "REC_END", REC_END) < 0 ||
        PyModule_AddIntConstant(m, "CALL_SIZE", CALL_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "HEAD_STORE", HEAD_STORE) < 0 ||
        PyModule_AddIntConstant(m, "HASH_FULL_LIMIT", HASH_FULL_LIMIT) < 0 ||
        PyModule_AddIntConstant(m, "QUEUED_INTERVAL_NS", QUEUED_INTERVAL_NS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
