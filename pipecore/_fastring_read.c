/* The collector's commonest decode in C: end records of calls like ones seen before.
 *
 * read_calls(mm, capacity, r, stop, kinds, begun, done, pending) decodes, from ring
 * position r up to stop, the REC_END records whose shared bytes (CALL_KIND_OFFSET to
 * the head's end) are a key of `kinds`, exactly as pipecore.ringreader.RingReader._read
 * does in Python: each appends (t, event) pairs to `pending`, copies of the kind's begin
 * and end events with their own t, pseq and queued, and moves begun[key] and done[key].
 * Padding is skipped. It stops at the first record it does not decode (another type, an
 * unknown kind, a length that does not parse) and returns (r, records decoded, the last
 * end's t or -1), leaving that record to the Python reader.
 */
#include "_fastring.h"

#define RECORD_HEAD_SIZE 8
#define REC_PAD 0

PyObject *s_t, *s_pseq, *s_queued;

static inline uint64_t get64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* A copy of `base` with t, pseq and (when queued >= 0) queued set; appended to
 * `pending` as (t, event). */
static int emit(PyObject *pending, PyObject *base, long long t, unsigned long long pseq,
                long long queued)
{
    PyObject *event = PyDict_Copy(base);
    if (event == NULL)
        return -1;
    PyObject *tv = PyLong_FromLongLong(t);
    PyObject *pv = PyLong_FromUnsignedLongLong(pseq);
    PyObject *pair = NULL;
    int rc = -1;
    if (tv == NULL || pv == NULL || PyDict_SetItem(event, s_t, tv) < 0 ||
        PyDict_SetItem(event, s_pseq, pv) < 0)
        goto done;
    if (queued >= 0) {
        PyObject *qv = PyLong_FromLongLong(queued);
        if (qv == NULL)
            goto done;
        int bad = PyDict_SetItem(event, s_queued, qv);
        Py_DECREF(qv);
        if (bad < 0)
            goto done;
    }
    pair = PyTuple_Pack(2, tv, event);
    if (pair == NULL)
        goto done;
    rc = PyList_Append(pending, pair);
done:
    Py_XDECREF(pair);
    Py_XDECREF(tv);
    Py_XDECREF(pv);
    Py_DECREF(event);
    return rc;
}

/* Whether begun[key] holds pseq (an int equal to it). */
static int holds(PyObject *begun, PyObject *key, unsigned long long pseq)
{
    PyObject *v = PyDict_GetItemWithError(begun, key);
    if (v == NULL)
        return PyErr_Occurred() ? -1 : 0;
    unsigned long long got = PyLong_AsUnsignedLongLong(v);
    if (got == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* not such an int: it does not hold pseq */
        return 0;
    }
    return got == pseq;
}

/* One known call's events: the begin (unless already emitted) and the end. */
static int decode_call(const char *rec, PyObject *kind, PyObject *begun, PyObject *done,
                       PyObject *pending, long long *last_t)
{
    PyObject *begin_ev = PyTuple_GET_ITEM(kind, 0);
    PyObject *end_ev = PyTuple_GET_ITEM(kind, 1);
    PyObject *key = PyTuple_GET_ITEM(kind, 2);
    long long t0 = (long long)get64(rec + 8);
    unsigned long long pseq0 = get64(rec + 16);
    long long t = (long long)get64(rec + 24);
    unsigned long long pseq = get64(rec + 32);
    long long queued = (long long)get64(rec + 40);
    if (pseq0) {
        PyObject *pv = PyLong_FromUnsignedLongLong(pseq0);
        if (pv == NULL)
            return -1;
        int seen = holds(begun, key, pseq0);
        if (seen < 0 || (!seen && (PyDict_SetItem(begun, key, pv) < 0 ||
                                   emit(pending, begin_ev, t0, pseq0, queued) < 0)) ||
            PyDict_SetItem(done, key, pv) < 0) {
            Py_DECREF(pv);
            return -1;
        }
        Py_DECREF(pv);
    }
    if (emit(pending, end_ev, t, pseq, -1) < 0)
        return -1;
    *last_t = t;
    return 0;
}

PyObject *read_calls(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "read_calls(mm, capacity, r, stop, kinds, begun, done, pending)");
        return NULL;
    }
    long long cap = PyLong_AsLongLong(args[1]);
    long long r = PyLong_AsLongLong(args[2]);
    long long stop = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *kinds = args[4], *begun = args[5], *done = args[6], *pending = args[7];
    if (!PyDict_Check(kinds) || !PyDict_Check(begun) || !PyDict_Check(done) ||
        !PyList_Check(pending)) {
        PyErr_SetString(PyExc_TypeError, "read_calls: expected dicts kinds, begun, done "
                                         "and a list pending");
        return NULL;
    }
    if (cap <= 0) {
        PyErr_Format(PyExc_ValueError, "read_calls: expected a positive capacity, got %lld",
                     cap);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *base = (const char *)view.buf;
    long long count = 0, last_t = -1;
    int failed = 0;
    while (r < stop) {
        long long off = HEADER_BYTES + r % cap;
        if (off + RECORD_HEAD_SIZE > view.len)
            break;
        const char *rec = base + off;
        uint32_t length;
        uint16_t hlen;
        memcpy(&length, rec, 4);
        memcpy(&hlen, rec + 6, 2);
        unsigned char rtype = (unsigned char)rec[4];
        if (length < RECORD_HEAD_SIZE || (length & 7) || length > cap)
            break; /* the Python reader decides what a ring that does not parse means */
        if (rtype == REC_PAD) {
            r += length;
            continue;
        }
        if (rtype != REC_END || off + CALL_SIZE + hlen > view.len)
            break;
        PyObject *shared =
            PyBytes_FromStringAndSize(rec + CALL_KIND_OFFSET, CALL_SIZE - CALL_KIND_OFFSET + hlen);
        if (shared == NULL) {
            failed = 1;
            break;
        }
        PyObject *kind = PyDict_GetItemWithError(kinds, shared);
        Py_DECREF(shared);
        if (kind == NULL) {
            failed = PyErr_Occurred() != NULL;
            break;
        }
        if (!PyTuple_Check(kind) || PyTuple_GET_SIZE(kind) != 3 ||
            !PyDict_Check(PyTuple_GET_ITEM(kind, 0)) || !PyDict_Check(PyTuple_GET_ITEM(kind, 1)))
            break;
        Py_INCREF(kind); /* the dict may change while its events are made */
        int bad = decode_call(rec, kind, begun, done, pending, &last_t);
        Py_DECREF(kind);
        if (bad < 0) {
            failed = 1;
            break;
        }
        count++;
        r += length;
    }
    PyBuffer_Release(&view);
    if (failed)
        return NULL;
    return Py_BuildValue("(LLL)", r, count, last_t);
}
