/* What the sources of pipecore._fastring share: the ring layout, the writer's types, the
 * interned names and the steps one source calls in another. */
#ifndef PIPECORE_FASTRING_H
#define PIPECORE_FASTRING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>
#include <time.h>

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

/* Shared between these sources only: nothing but PyInit__fastring leaves the module. */
#pragma GCC visibility push(hidden)

/* A plain lock, as threading.Lock, that this writer takes without a Python call. */
typedef struct {
    PyObject_HEAD
    PyThread_type_lock lk;
} Lock;

static inline int lock_take(Lock *self)
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

extern PyTypeObject LockType;

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

extern PyTypeObject CallsType;

/* TracedConnection, and the offsets of its slots the writer reads in place (0: by name). */
extern PyTypeObject *traced_type;
extern Py_ssize_t off_tl_rec, off_tl_slot, off_tl_eid, off_queued_at, off_handle, off_readable,
    off_writable;

extern PyObject *s_readable, *s_writable;
extern PyObject *s_tl_rec, *s_tl_slot, *s_tl_eid, *s_queued_at, *s_handle, *s_wait_step,
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

/* conn.<name> as a long long (_fastring_begin.c). */
int get_ll(PyObject *obj, PyObject *name, Py_ssize_t off, long long *out);

/* The begin of a call, kept by the caller until its end. */
typedef struct {
    unsigned long long pseq;
    long long t;
    long long site;
    long long queued;
} Begin;

/* A call's begin slot (_fastring_begin.c) and its end record (_fastring_end.c). */
int begin(Calls *self, PyObject *conn, long op, PyFrameObject *frame, Begin *b);
int write_end(Calls *self, PyObject *conn, long long op, unsigned long long pseq0,
              long long t0, long long site, PyObject *frame, long long queued);

/* Calls.begin_call and Calls.end, next to the writes they make. */
PyObject *Calls_begin_call(Calls *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Calls_end(Calls *self, PyObject *const *args, Py_ssize_t nargs);

/* The collector's decode of known calls' end records (_fastring_read.c). */
#define CALL_KIND_OFFSET 48
extern PyObject *s_t, *s_pseq, *s_queued;
PyObject *read_calls(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* -- the traced connection's frame-moving methods (see _fastring_traced.c) -------------- */

enum { OP_SEND = 0, OP_RECV = 1, OP_SEND_BYTES = 2, OP_RECV_BYTES = 3, OP_RECV_BYTES_INTO = 4 };

extern PyObject *telemetry_ns; /* pipecore.telemetry's namespace: `_recorder` */
extern PyObject *plain_send, *plain_recv, *plain_send_bytes, *plain_recv_bytes,
    *plain_recv_bytes_into;
extern PyObject *py_send, *py_recv, *py_send_bytes, *py_recv_bytes, *py_recv_bytes_into;
extern PyObject *buffer_too_short; /* multiprocessing.BufferTooShort */
extern PyObject *dumps_fn, *loads_fn;
extern PyObject *s_recorder, *s_check_closed, *s_check_readable,
    *s_check_writable, *s_send_bytes, *s_recv_bytes, *s_bad_message_length, *s_getbuffer,
    *s_getvalue, *s_release, *s_error, *s_cast, *s_B, *s_tell, *s_readinto;

/* The steps the traced methods share (_fastring_traced.c). */
Calls *fast_recorder(PyObject **other);
int check_open(PyObject *conn, PyObject *flag, Py_ssize_t flag_off, PyObject *check);
void record_error(Calls *self, PyObject *conn, long op, const Begin *b, PyObject *frame);

/* func(conn, *args, **kwargs) from a vectorcall argument list. */
static inline PyObject *call_with_self(PyObject *func, PyObject *conn, PyObject *const *args,
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

static inline int call_check(PyObject *conn, PyObject *name)
{
    PyObject *r = PyObject_CallMethodNoArgs(conn, name);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* The end record of a call that returned, and the recorder's reference dropped. */
static inline PyObject *finish(Calls *self, PyObject *conn, long op, const Begin *b,
                               PyObject *frame, PyObject *result)
{
    if (write_end(self, conn, op, b->pseq, b->t, b->site, frame, b->queued) < 0)
        Py_CLEAR(result);
    Py_DECREF(self);
    return result;
}

/* An int argument that fits a long long, or NULL (None or absent) for the default; 0: it
 * does not (the Python method handles it). */
static inline int small_int(PyObject *arg, int none_ok, long long *out, int *given)
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

/* The traced methods (_fastring_send_recv*.c, _fastring_recv_bytes_into.c), put on the
 * class by install_methods (_fastring_install.c). */
PyObject *traced_send(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames);
PyObject *traced_recv(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames);
PyObject *traced_send_bytes(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames);
PyObject *traced_recv_bytes(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames);
PyObject *traced_recv_bytes_into(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames);
PyObject *install_methods(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#pragma GCC visibility pop

#endif
