/* The writer's lock: a plain lock, as threading.Lock, taken from C without a Python call. */
#include "_fastring.h"

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

PyTypeObject LockType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pipecore._fastring.Lock",
    .tp_basicsize = sizeof(Lock),
    .tp_dealloc = (destructor)Lock_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A lock like threading.Lock that the C writer takes without a Python call.",
    .tp_methods = Lock_methods,
    .tp_new = Lock_new,
};
