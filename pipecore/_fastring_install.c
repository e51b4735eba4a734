/* install_methods: the traced methods put on TracedConnection, with what they hand on to. */
#include "_fastring.h"

#include <structmember.h>

/* TracedConnection, and the offsets of its slots the writer reads in place (0: by name). */
PyTypeObject *traced_type;
Py_ssize_t off_tl_rec, off_tl_slot, off_tl_eid, off_queued_at, off_handle, off_readable,
    off_writable;

PyObject *telemetry_ns; /* pipecore.telemetry's namespace: `_recorder` */
PyObject *plain_send, *plain_recv, *plain_send_bytes, *plain_recv_bytes,
    *plain_recv_bytes_into;
PyObject *py_send, *py_recv, *py_send_bytes, *py_recv_bytes, *py_recv_bytes_into;
PyObject *buffer_too_short; /* multiprocessing.BufferTooShort */
PyObject *dumps_fn, *loads_fn;

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
PyObject *install_methods(PyObject *Py_UNUSED(module), PyObject *const *args,
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
