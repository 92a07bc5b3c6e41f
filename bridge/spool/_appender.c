/* The journal's appender in C: a logged call encoded and copied into the segment map in
 * one call, with the interpreter lock held throughout (so threads that log at once need no
 * other lock, as with mmap.write).
 *
 * Why C: a `run.log` of two keys through marshal.dumps, zlib.crc32, struct.pack and
 * mmap.write costs ~1 us of the caller's time, most of it in building the objects those
 * calls pass between them. Here the record is encoded straight into the map.
 *
 * A record is `<u32 length><u32 crc32>` then `length` bytes that are exactly what
 * `marshal.dumps(item, 2)` gives (bridge/spool/segment.py reads them with marshal.loads);
 * the header is written last, so a reader that meets a length of 0 sees no record. Anything
 * this encoder does not know (a subclass, an int beyond 64 bits, a str with lone
 * surrogates) makes it answer False having written nothing: the caller then takes the
 * Python path, which handles every case.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>
#include <errno.h>
#include <sys/mman.h>
#include <time.h>

/* The CRC-32 of zlib.crc32: zlib's own (table-driven a byte at a time, it would be a third
 * of a call's time). */
static uint32_t
crc32_of(const unsigned char *p, size_t n)
{
    return (uint32_t)crc32(0L, p, (uInt)n);
}

static inline void
put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* Encoding takes two passes, so that nothing is written unless all of it fits: size_of()
 * gives the bytes marshal format 2 writes for a value, or -1 for a value it writes otherwise
 * than enc() does (a subclass, an int beyond 64 bits, a str with lone surrogates, deeper
 * nesting); enc() then writes it. Neither runs Python code, so no other thread runs between
 * them. */

static Py_ssize_t
size_of_ll(long long v)
{
    if (v >= INT32_MIN && v <= INT32_MAX)
        return 5;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    Py_ssize_t n = 0;
    for (; u; u >>= 15)
        n++;
    return 5 + 2 * n;
}

static Py_ssize_t
size_of_int(PyObject *o, long long *out)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return -1;
    }
    *out = v;
    return size_of_ll(v);
}

static Py_ssize_t
size_of_str(PyObject *o)
{
    Py_ssize_t n;
    if (PyUnicode_AsUTF8AndSize(o, &n) == NULL) { /* lone surrogates: "surrogatepass" */
        PyErr_Clear();
        return -1;
    }
    return n > INT32_MAX ? -1 : 5 + n;
}

static Py_ssize_t
size_of(PyObject *o, int depth)
{
    PyTypeObject *t = Py_TYPE(o);
    long long unused;
    if (o == Py_None)
        return 1;
    if (t == &PyFloat_Type)
        return 9;
    if (t == &PyLong_Type)
        return size_of_int(o, &unused);
    if (t == &PyUnicode_Type)
        return size_of_str(o);
    if ((t == &PyTuple_Type || t == &PyList_Type) && depth < 4) {
        int is_tuple = t == &PyTuple_Type;
        Py_ssize_t n = is_tuple ? PyTuple_GET_SIZE(o) : PyList_GET_SIZE(o), total = 5;
        if (n > INT32_MAX)
            return -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t k = size_of(is_tuple ? PyTuple_GET_ITEM(o, i) : PyList_GET_ITEM(o, i),
                                   depth + 1);
            if (k < 0)
                return -1;
            total += k;
        }
        return total;
    }
    return -1;
}

static unsigned char *
enc_ll(unsigned char *p, long long v)
{
    if (v >= INT32_MIN && v <= INT32_MAX) {
        *p = 'i';
        put_u32(p + 1, (uint32_t)(int32_t)v);
        return p + 5;
    }
    /* marshal's TYPE_LONG: the count of 15-bit digits (negative for a negative number),
     * then the digits, least significant first, as 16-bit little-endian values. */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    int32_t n = 0;
    for (unsigned long long t = u; t; t >>= 15)
        n++;
    *p = 'l';
    put_u32(p + 1, (uint32_t)(v < 0 ? -n : n));
    p += 5;
    for (; u; u >>= 15, p += 2) {
        p[0] = (unsigned char)(u & 0xFF);
        p[1] = (unsigned char)((u >> 8) & 0x7F);
    }
    return p;
}

static unsigned char *
enc_int(unsigned char *p, PyObject *o)
{
    long long v;
    size_of_int(o, &v);
    return enc_ll(p, v);
}

static unsigned char *
enc_float(unsigned char *p, PyObject *o)
{
    *p = 'g';
#if PY_VERSION_HEX >= 0x030B0000
    PyFloat_Pack8(PyFloat_AS_DOUBLE(o), (char *)p + 1, 1);
#else
    _PyFloat_Pack8(PyFloat_AS_DOUBLE(o), p + 1, 1);
#endif
    return p + 9;
}

static unsigned char *
enc_str(unsigned char *p, PyObject *o)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n); /* cached by size_of */
    *p = 'u';
    put_u32(p + 1, (uint32_t)n);
    memcpy(p + 5, s, (size_t)n);
    return p + 5 + n;
}

static unsigned char *
enc(unsigned char *p, PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (o == Py_None) {
        *p = 'N';
        return p + 1;
    }
    if (t == &PyFloat_Type)
        return enc_float(p, o);
    if (t == &PyLong_Type)
        return enc_int(p, o);
    if (t == &PyUnicode_Type)
        return enc_str(p, o);
    int is_tuple = t == &PyTuple_Type;
    Py_ssize_t n = is_tuple ? PyTuple_GET_SIZE(o) : PyList_GET_SIZE(o);
    *p = is_tuple ? '(' : '[';
    put_u32(p + 1, (uint32_t)n);
    p += 5;
    for (Py_ssize_t i = 0; i < n; i++)
        p = enc(p, is_tuple ? PyTuple_GET_ITEM(o, i) : PyList_GET_ITEM(o, i));
    return p;
}

typedef struct {
    PyObject_HEAD
    Py_buffer view;  /* the current segment's map, writable; view.obj NULL when detached */
    Py_ssize_t pos;  /* where the next record goes */
    long long segment;  /* the segment's number, -1 when detached */
} Appender;

/* Header and bookkeeping of a record whose payload ends at `stop`. */
static void
seal_record(Appender *self, unsigned char *base, unsigned char *stop)
{
    size_t n = (size_t)(stop - base - 8);
    put_u32(base + 4, crc32_of(base + 8, n));
    put_u32(base, (uint32_t)n); /* last: until now the reader saw no record here */
    self->pos += (Py_ssize_t)(n + 8);
}

static void
detach(Appender *self)
{
    if (self->view.obj != NULL)
        PyBuffer_Release(&self->view);
    self->view.obj = NULL;
    self->segment = -1;
}

static PyObject *
Appender_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Appender *self = (Appender *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->view.obj = NULL;
        self->pos = 0;
        self->segment = -1;
    }
    return (PyObject *)self;
}

static void
Appender_dealloc(Appender *self)
{
    detach(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(attach_doc, "attach(map, offset, segment): write to `map` from `offset` on; "
             "the previous map is released (nothing more is written to it).");

static PyObject *
Appender_attach(Appender *self, PyObject *args)
{
    PyObject *mm;
    Py_ssize_t offset;
    long long segment;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "OnL:attach", &mm, &offset, &segment))
        return NULL;
    if (PyObject_GetBuffer(mm, &view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (offset < 0 || offset > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "offset outside the map");
        return NULL;
    }
    detach(self);
    self->view = view;
    self->pos = offset;
    self->segment = segment;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(detach_doc, "detach(): release the map; every write fails from now on.");

static PyObject *
Appender_detach(Appender *self, PyObject *unused)
{
    detach(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(write_doc, "write(record): copy a whole record at the position, as mmap.write "
             "does; ValueError when it does not fit (or the appender is detached).");

static PyObject *
Appender_write(Appender *self, PyObject *arg)
{
    Py_buffer rec;
    if (PyObject_GetBuffer(arg, &rec, PyBUF_SIMPLE) < 0)
        return NULL;
    if (self->view.obj == NULL || rec.len > self->view.len - self->pos) {
        PyBuffer_Release(&rec);
        PyErr_SetString(PyExc_ValueError, "data out of range");
        return NULL;
    }
    memcpy((char *)self->view.buf + self->pos, rec.buf, (size_t)rec.len);
    self->pos += rec.len;
    PyBuffer_Release(&rec);
    Py_RETURN_NONE;
}

/* Room for a record of `n` payload bytes at the position: where it starts, or NULL. */
static unsigned char *
room_for(Appender *self, Py_ssize_t n)
{
    if (self->view.obj == NULL || self->view.len - self->pos < 8 + n)
        return NULL;
    return (unsigned char *)self->view.buf + self->pos;
}

/* The item tuple's start: a tuple of 5 and its first value, the metrics tag 0. */
static unsigned char *
enc_item_start(unsigned char *p)
{
    *p = '(';
    put_u32(p + 1, 5);
    p[5] = 'i';
    put_u32(p + 6, 0);
    return p + 10;
}

/* The payload's head: the item tuple (0, run_id, step, ts_ms, ...) up to its 5th value. */
static unsigned char *
enc_head(unsigned char *p, PyObject *const *args)
{
    p = enc_item_start(p);
    for (int k = 0; k < 3; k++)
        p = enc(p, args[k]);
    return p;
}

static Py_ssize_t
size_of_head(PyObject *const *args)
{
    Py_ssize_t n = 10;
    for (int k = 0; k < 3; k++) {
        Py_ssize_t s = size_of(args[k], 1);
        if (s < 0)
            return -1;
        n += s;
    }
    return n;
}

PyDoc_STRVAR(put_metrics_doc, "put_metrics(run_id, step, ts_ms, items) -> bool: journal the "
             "item (0, run_id, step, ts_ms, items); False, nothing written, when it does not "
             "fit or holds a value this encoder leaves to marshal.");

static PyObject *
Appender_put_metrics(Appender *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char *base;
    Py_ssize_t head, rest;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "put_metrics takes run_id, step, ts_ms, items");
        return NULL;
    }
    if ((head = size_of_head(args)) < 0 || (rest = size_of(args[3], 1)) < 0
            || (base = room_for(self, head + rest)) == NULL)
        Py_RETURN_FALSE;
    seal_record(self, base, enc(enc_head(base + 8, args), args[3]));
    Py_RETURN_TRUE;
}

/* The wall clock in milliseconds, as time.time_ns() // 1_000_000 gives it. */
static long long
now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    long long ns = (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
    return ns / 1000000LL;
}

PyDoc_STRVAR(log_doc, "log(run_id, step, data, ok_keys) -> bool: `run.log`'s common case in "
             "one call: when `data` is a dict whose every key is a str in `ok_keys` and every "
             "value a float, journal put_metrics(run_id, step, now_ms, list(data.items())), "
             "now_ms being time.time_ns() // 1_000_000 read here, and answer True; otherwise "
             "write nothing and answer False (the caller validates and journals it the long "
             "way).");

static PyObject *
Appender_log(Appender *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char *base, *p;
    PyObject *data, *ok, *key, *value;
    Py_ssize_t i = 0, n, size, k;
    long long ts;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "log takes run_id, step, data, ok_keys");
        return NULL;
    }
    data = args[2];
    ok = args[3];
    if (!PyDict_CheckExact(data) || !PyAnySet_CheckExact(ok))
        Py_RETURN_FALSE;
    n = PyDict_GET_SIZE(data);
    if (n == 0)
        Py_RETURN_TRUE; /* nothing to record, as run.log records nothing for {} */
    ts = now_ms();
    size = 10 + size_of_ll(ts) + 5 + n * (5 + 9);
    for (int a = 0; a < 2; a++) {
        if ((k = size_of(args[a], 1)) < 0)
            Py_RETURN_FALSE;
        size += k;
    }
    while (PyDict_Next(data, &i, &key, &value)) {
        if (Py_TYPE(value) != &PyFloat_Type || !PyUnicode_CheckExact(key))
            Py_RETURN_FALSE;
        int known = PySet_Contains(ok, key);
        if (known != 1 || (k = size_of_str(key)) < 0) {
            if (known < 0)
                PyErr_Clear();
            Py_RETURN_FALSE;
        }
        size += k;
    }
    if ((base = room_for(self, size)) == NULL)
        Py_RETURN_FALSE;
    p = enc_ll(enc(enc(enc_item_start(base + 8), args[0]), args[1]), ts);
    *p = '[';
    put_u32(p + 1, (uint32_t)n);
    p += 5;
    i = 0;
    while (PyDict_Next(data, &i, &key, &value)) {
        *p = '(';
        put_u32(p + 1, 2);
        p = enc_float(enc_str(p + 5, key), value);
    }
    seal_record(self, base, p);
    Py_RETURN_TRUE;
}

static PyObject *
Appender_get_segment(Appender *self, void *closure)
{
    return PyLong_FromLongLong(self->segment);
}

static PyObject *
Appender_get_offset(Appender *self, void *closure)
{
    return PyLong_FromSsize_t(self->pos);
}

static PyMethodDef Appender_methods[] = {
    {"attach", (PyCFunction)Appender_attach, METH_VARARGS, attach_doc},
    {"detach", (PyCFunction)Appender_detach, METH_NOARGS, detach_doc},
    {"write", (PyCFunction)Appender_write, METH_O, write_doc},
    {"put_metrics", (PyCFunction)(void (*)(void))Appender_put_metrics, METH_FASTCALL,
     put_metrics_doc},
    {"log", (PyCFunction)(void (*)(void))Appender_log, METH_FASTCALL, log_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Appender_getset[] = {
    {"segment", (getter)Appender_get_segment, NULL, "the attached segment's number, -1 "
     "when detached", NULL},
    {"offset", (getter)Appender_get_offset, NULL, "where the next record goes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject AppenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bridge.spool._appender.Appender",
    .tp_basicsize = sizeof(Appender),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Appends journal records to one segment map at a time.",
    .tp_new = Appender_new,
    .tp_dealloc = (destructor)Appender_dealloc,
    .tp_methods = Appender_methods,
    .tp_getset = Appender_getset,
};

PyDoc_STRVAR(crc32_doc, "crc32(data) -> int: the checksum records carry (zlib.crc32's).");

static PyObject *
module_crc32(PyObject *module, PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t c = crc32_of(b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

PyDoc_STRVAR(prefault_doc, "prefault(map) -> bool: map every page of `map` writable now "
             "(madvise MADV_POPULATE_WRITE, the interpreter lock released), so the appender's "
             "writes take no page fault; False where the kernel cannot (before Linux 5.14). "
             "It writes nothing: a map already in use may be prefaulted.");

static PyObject *
module_prefault(PyObject *module, PyObject *arg)
{
    Py_buffer b;
    int rc = -1;
    if (PyObject_GetBuffer(arg, &b, PyBUF_WRITABLE) < 0)
        return NULL;
#ifdef MADV_POPULATE_WRITE
    Py_BEGIN_ALLOW_THREADS
    rc = madvise(b.buf, (size_t)b.len, MADV_POPULATE_WRITE);
    Py_END_ALLOW_THREADS
#endif
    PyBuffer_Release(&b);
    return PyBool_FromLong(rc == 0);
}

static PyMethodDef module_methods[] = {
    {"crc32", module_crc32, METH_O, crc32_doc},
    {"prefault", module_prefault, METH_O, prefault_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef appender_module = {
    PyModuleDef_HEAD_INIT, "_appender",
    "The journal's appender in C (bridge.spool.appender holds its Python twin).", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__appender(void)
{
    if (PyType_Ready(&AppenderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&appender_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&AppenderType);
    if (PyModule_AddObject(m, "Appender", (PyObject *)&AppenderType) < 0) {
        Py_DECREF(&AppenderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
