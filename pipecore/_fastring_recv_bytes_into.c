/* The traced recv_bytes_into: a frame read into the caller's buffer. */
#include "_fastring.h"

/* The standard method's order: the checks, the buffer's size in bytes (itemsize times its
 * length) and the offset, then the frame; a frame longer than the room after the offset
 * raises BufferTooShort with the whole frame, consumed. */
PyObject *traced_recv_bytes_into(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
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
