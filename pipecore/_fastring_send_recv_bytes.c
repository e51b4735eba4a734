/* The traced send_bytes and recv_bytes: a frame of bytes as it is. */
#include "_fastring.h"

/* _send_bytes writes the header and a frame up to this size as one bytes object. */
#define SMALL_FRAME 16384

PyObject *traced_send_bytes(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
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

PyObject *traced_recv_bytes(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
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
