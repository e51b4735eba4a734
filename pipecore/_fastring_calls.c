/* `Calls`, the base type of pipecore.recorder.FastRecorder: the ring it writes into, and
 * its methods and members. */
#include "_fastring.h"

#include <structmember.h>

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


PyTypeObject CallsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pipecore._fastring.Calls",
    .tp_basicsize = sizeof(Calls),
    .tp_dealloc = (destructor)Calls_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The begin slot and end record writes of a recorder, in C.",
    .tp_methods = Calls_methods,
    .tp_members = Calls_members,
    .tp_new = PyType_GenericNew,
};
