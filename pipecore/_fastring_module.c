/* The worker's hot record writes in C: a call's begin slot and its end record,
 * written straight into the ring map in the layout pipecore/ring.py defines; and the
 * traced connection's send, recv, send_bytes, recv_bytes and recv_bytes_into, which write
 * them around the standard connection's I/O without a Python frame of their own.
 *
 * `Calls` is a base type of pipecore.recorder.FastRecorder. Its members (write_pos,
 * fast_base, fast_limit) are the ones the Python writer uses, so the Python slow
 * paths (reservation, JSON records, errors, polls) and these fast paths share one
 * write position. Every record goes in under the recorder's lock, and the write
 * position is published with a release store after the record is complete.
 *
 * The sources: this one, the module and the names it interns; _fastring_lock.c, Lock;
 * _fastring_calls.c, Calls; _fastring_begin.c, a call's begin slot; _fastring_end.c, its end
 * record; _fastring_traced.c, what the traced methods share; _fastring_send_recv.c,
 * _fastring_send_recv_bytes.c and _fastring_recv_bytes_into.c, the traced methods;
 * _fastring_install.c, install_methods; _fastring_read.c, the collector's read_calls.
 * _fastring.h holds what they share.
 */

#include "_fastring.h"

/* The names the writer looks up, interned once at import. */
PyObject *s_readable, *s_writable;
PyObject *s_tl_rec, *s_tl_slot, *s_tl_eid, *s_queued_at, *s_handle, *s_wait_step,
    *s_define_end, *s_site, *s_sites;
PyObject *s_recorder, *s_check_closed, *s_check_readable,
    *s_check_writable, *s_send_bytes, *s_recv_bytes, *s_bad_message_length, *s_getbuffer,
    *s_getvalue, *s_release, *s_error, *s_cast, *s_B, *s_tell, *s_readinto;

static PyMethodDef module_methods[] = {
    {"install_methods", (PyCFunction)(void (*)(void))install_methods, METH_FASTCALL,
     "install_methods(cls, plain_cls, namespace, dumps, loads): the traced methods in C."},
    {"read_calls", (PyCFunction)(void (*)(void))read_calls, METH_FASTCALL,
     "read_calls(mm, capacity, r, stop, kinds, begun, done, pending) -> (r, count, last_t):\n"
     "the collector's decode of end records of known calls (see pipecore.ringreader)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pipecore._fastring", "The worker's hot record writes in C.", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastring(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_tl_rec, "_tl_rec"},       {&s_tl_slot, "_tl_slot"},     {&s_tl_eid, "_tl_eid"},
        {&s_queued_at, "_queued_at"}, {&s_handle, "_handle"},       {&s_wait_step, "wait_step"},
        {&s_define_end, "define_end"}, {&s_site, "site"},           {&s_sites, "sites"},
        {&s_recorder, "_recorder"},   {&s_readable, "_readable"},   {&s_writable, "_writable"},
        {&s_check_closed, "_check_closed"},     {&s_check_readable, "_check_readable"},
        {&s_check_writable, "_check_writable"}, {&s_send_bytes, "_send_bytes"},
        {&s_recv_bytes, "_recv_bytes"},         {&s_bad_message_length, "_bad_message_length"},
        {&s_getbuffer, "getbuffer"},  {&s_getvalue, "getvalue"},    {&s_release, "release"},
        {&s_error, "error"},          {&s_cast, "cast"},            {&s_B, "B"},
        {&s_tell, "tell"},            {&s_readinto, "readinto"},
        {&s_t, "t"},                  {&s_pseq, "pseq"},            {&s_queued, "queued"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL)
            return NULL;
    }
    if (PyType_Ready(&CallsType) < 0 || PyType_Ready(&LockType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CallsType);
    if (PyModule_AddObject(m, "Calls", (PyObject *)&CallsType) < 0) {
        Py_DECREF(&CallsType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&LockType);
    if (PyModule_AddObject(m, "Lock", (PyObject *)&LockType) < 0) {
        Py_DECREF(&LockType);
        Py_DECREF(m);
        return NULL;
    }
    /* The layout this writer was built for, checked against pipecore.ring at import. */
    if (PyModule_AddIntConstant(m, "HEADER_BYTES", HEADER_BYTES) < 0 ||
        PyModule_AddIntConstant(m, "WRITE_POS_OFFSET", WRITE_POS_OFFSET) < 0 ||
        PyModule_AddIntConstant(m, "STEP_FLAG_OFFSET", STEP_FLAG_OFFSET) < 0 ||
        PyModule_AddIntConstant(m, "SLOT_SIZE", SLOT_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "SLOT_LAST", SLOT_LAST) < 0 ||
        PyModule_AddIntConstant(m, "REC_END", REC_END) < 0 ||
        PyModule_AddIntConstant(m, "CALL_SIZE", CALL_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "CALL_KIND_OFFSET", CALL_KIND_OFFSET) < 0 ||
        PyModule_AddIntConstant(m, "HEAD_STORE", HEAD_STORE) < 0 ||
        PyModule_AddIntConstant(m, "HASH_FULL_LIMIT", HASH_FULL_LIMIT) < 0 ||
        PyModule_AddIntConstant(m, "QUEUED_INTERVAL_NS", QUEUED_INTERVAL_NS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
