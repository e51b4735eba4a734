/* The traced send and recv: an object pickled into one frame, and back. */
#include "_fastring.h"

PyObject *traced_send(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
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

PyObject *traced_recv(PyObject *conn, PyObject *const *args, Py_ssize_t nargs,
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
