/* What the traced connection's frame-moving methods share.
 *
 * send, recv, send_bytes, recv_bytes and recv_bytes_into of
 * pipecore.tracedconnection.TracedConnection, as method descriptors: the begin, the
 * standard connection's `_send_bytes`/`_recv_bytes`, and the end or error record, without a
 * Python frame of their own. They do what the Python
 * methods they replace do (those stay the reference): outside a run they call the
 * standard method; with the Python recorder, or with arguments of other types than the
 * usual ones (keywords, a non-int offset), they call the Python method itself.
 */
#include "_fastring.h"

/* The process's recorder as a C recorder (a new reference), or NULL with *other set to
 * what the Python method should handle: Py_None outside a run, else another recorder.
 * NULL with *other NULL: an error. */
Calls *fast_recorder(PyObject **other)
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

/* The standard checks, closed first, then readable or writable (`flag`); the standard
 * methods raise their own errors. */
int check_open(PyObject *conn, PyObject *flag, Py_ssize_t flag_off, PyObject *check)
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
void record_error(Calls *self, PyObject *conn, long op, const Begin *b, PyObject *frame)
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
