/* The end record of a call: the frame's hash or sample, written into the ring; and
 * Calls.end, the same for the Python methods. */
#include "_fastring.h"

#include <zlib.h>

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
int write_end(Calls *self, PyObject *conn, long long op, unsigned long long pseq0,
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
PyObject *Calls_end(Calls *self, PyObject *const *args, Py_ssize_t nargs)
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
