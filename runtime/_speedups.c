/* The runtime's hottest paths in C: building a ready handle (call_soon) or a timer (call_at,
 * call_later) and running the ready queue (the inner loop of _run_once). runtime/accel.py decides whether these or the pure-Python
 * functions in runtime/loop.py run; both do exactly the same thing, field for field.
 *
 * Why these two: under callgrind, a call_soon'd callback costs the runtime ~6,900 instructions
 * against uvloop's ~3,200, and almost all of the difference is bytecode: a Python frame for
 * call_soon, seven attribute stores on the new handle, and per handle in the run loop a deque
 * pop, three loads, an argument tuple unpacked and repacked for Context.run. Here the handle's
 * slots are written at their offsets (looked up by name from asyncio's own Handle type at set-up,
 * so the layout of whichever CPython runs is the one used) and the callback runs between
 * PyContext_Enter and PyContext_Exit, which is what Context.run does, without building its
 * argument vector.
 *
 * The loop's own attributes are read the same way, from Loop's slots (runtime/loop.py), and the
 * loop's methods are installed as method descriptors; with TimerHandle.cancel's calls to
 * get_debug and _timer_handle_cancelled in C too, call_soon costs ~3,300 instructions and a
 * timer scheduled and cancelled ~9,900 (uvloop: ~3,200 and ~8,300).
 *
 * Debug mode never comes here: call_soon hands it to the pure-Python function given at set-up,
 * and _run_once runs debug iterations itself.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

static PyTypeObject *handle_type;      /* asyncio.events.Handle */
static PyTypeObject *timer_type;       /* asyncio.events.TimerHandle */
static PyObject *pure_call_soon;       /* Loop.call_soon in Python: debug mode, odd cases */
static PyObject *pure_call_at;         /* Loop.call_at in Python: the same for timers */
static PyObject *pure_call_later;      /* Loop.call_later in Python */
static PyTypeObject *loop_type;        /* runtime.loop.Loop: call_later's fast path is for it only */
static PyObject *tracer;               /* runtime.tracing.TRACE: timers go the Python way when on */
static PyObject *heappush;             /* heapq.heappush */
static Py_ssize_t when_offset, scheduled_offset;  /* TimerHandle._when, ._scheduled */

enum { F_CONTEXT, F_LOOP, F_CALLBACK, F_ARGS, F_CANCELLED, F_REPR, F_SOURCE_TB, N_FIELDS };
static const char *field_names[N_FIELDS] = {
    "_context", "_loop", "_callback", "_args", "_cancelled", "_repr", "_source_traceback"};
static Py_ssize_t handle_offset[N_FIELDS];
static Py_ssize_t timer_offset[N_FIELDS];

static PyObject *str_debug, *str_closed, *str_ready, *str_append, *str_popleft, *str_run;
static PyObject *str_scheduled, *str_on, *str_time, *str_cancelled_count, *int_one;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static int
slot_offsets(PyTypeObject *type, Py_ssize_t *offsets)
{
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *descr = PyObject_GetAttrString((PyObject *)type, field_names[i]);
        if (descr == NULL)
            return -1;
        if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)
                || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, field_names[i]);
            Py_DECREF(descr);
            return -1;
        }
        offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
    }
    return 0;
}

static Py_ssize_t
one_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
    if (descr == NULL)
        return -1;
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)
            && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX)
        offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    else
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
    Py_DECREF(descr);
    return offset;
}

static PyObject *
setup(PyObject *module, PyObject *args)
{
    PyObject *handle, *timer, *pure, *pure_at, *pure_later, *loop, *trace, *push;
    if (!PyArg_ParseTuple(args, "O!O!OOOO!OO:setup", &PyType_Type, &handle, &PyType_Type, &timer,
                          &pure, &pure_at, &pure_later, &PyType_Type, &loop, &trace, &push))
        return NULL;
    if (slot_offsets((PyTypeObject *)handle, handle_offset) < 0
            || slot_offsets((PyTypeObject *)timer, timer_offset) < 0
            || (when_offset = one_offset((PyTypeObject *)timer, "_when")) < 0
            || (scheduled_offset = one_offset((PyTypeObject *)timer, "_scheduled")) < 0)
        return NULL;
    Py_XSETREF(handle_type, (PyTypeObject *)Py_NewRef(handle));
    Py_XSETREF(timer_type, (PyTypeObject *)Py_NewRef(timer));
    Py_XSETREF(pure_call_soon, Py_NewRef(pure));
    Py_XSETREF(pure_call_at, Py_NewRef(pure_at));
    Py_XSETREF(pure_call_later, Py_NewRef(pure_later));
    Py_XSETREF(loop_type, (PyTypeObject *)Py_NewRef(loop));
    Py_XSETREF(tracer, Py_NewRef(trace));
    Py_XSETREF(heappush, Py_NewRef(push));
    Py_RETURN_NONE;
}


static void
set_slot(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = Py_NewRef(value);
    Py_XDECREF(old);
}

/* The loop's own attributes that every call_soon, timer and cancel reads (_debug, _closed,
 * _ready, _scheduled, _timer_cancelled_count) are slots of runtime.loop.Loop: read at their
 * offsets, a handful of instructions, where a lookup by name costs ~150 (the type's MRO for a
 * descriptor, then the instance's keys). Set up by setup_loop(); anything else that calls these
 * functions (an object that is not a Loop, a slot a subclass left unset) is looked up by name. */
enum { L_DEBUG, L_CLOSED, L_READY, L_SCHEDULED, L_CANCELLED_COUNT, N_LOOP_FIELDS };
static const char *loop_field_names[N_LOOP_FIELDS] = {
    "_debug", "_closed", "_ready", "_scheduled", "_timer_cancelled_count"};
static Py_ssize_t loop_offset[N_LOOP_FIELDS];
static PyTypeObject *slotted_loop_type;   /* runtime.loop.Loop once setup_loop() ran */
static PyTypeObject *deque_type;          /* collections.deque */
static PyObject *deque_append;            /* deque.append, the method descriptor */
static PyObject *deque_popleft;           /* deque.popleft, the method descriptor */
static PyObject *pure_get_debug;          /* BaseEventLoop.get_debug */
static PyObject *pure_timer_cancelled;    /* BaseEventLoop._timer_handle_cancelled */

/* A new reference to the loop's attribute, NULL with an exception set. */
static PyObject *
loop_attr(PyObject *self, int field, PyObject *name)
{
    if (slotted_loop_type != NULL && PyObject_TypeCheck(self, slotted_loop_type)) {
        PyObject *value = SLOT(self, loop_offset[field]);
        if (value != NULL)
            return Py_NewRef(value);
    }
    return PyObject_GetAttr(self, name);
}

/* self.<field> = value: 0, or -1 with an exception set */
static int
loop_set(PyObject *self, int field, PyObject *name, PyObject *value)
{
    if (slotted_loop_type != NULL && PyObject_TypeCheck(self, slotted_loop_type)
            && SLOT(self, loop_offset[field]) != NULL) {
        set_slot(self, loop_offset[field], value);
        return 0;
    }
    return PyObject_SetAttr(self, name, value);
}

/* 1: the loop's attribute is true, 0: false, -1: error */
static int
loop_flag(PyObject *self, int field, PyObject *name)
{
    PyObject *value = loop_attr(self, field, name);
    if (value == NULL)
        return -1;
    int truth = value == Py_False ? 0 : value == Py_True ? 1 : PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

/* self._ready.append(handle): 0, or -1 with an exception set */
static int
append_ready(PyObject *self, PyObject *handle)
{
    PyObject *ready = loop_attr(self, L_READY, str_ready);
    if (ready == NULL)
        return -1;
    PyObject *ok;
    if (deque_append != NULL && Py_IS_TYPE(ready, deque_type)) {
        PyObject *args[2] = {ready, handle};
        ok = PyObject_Vectorcall(deque_append, args, 2, NULL);
    }
    else
        ok = PyObject_CallMethodOneArg(ready, str_append, handle);
    Py_DECREF(ready);
    if (ok == NULL)
        return -1;
    Py_DECREF(ok);
    return 0;
}

/* ready.popleft (a new reference, NULL with an exception set) as a callable: for the loop's
 * deque the method descriptor, called with the deque (no bound method made per call). */
typedef struct { PyObject *callable, *self; } popper;

static int
popper_of(PyObject *ready, popper *pop)
{
    if (deque_popleft != NULL && Py_IS_TYPE(ready, deque_type)) {
        pop->callable = Py_NewRef(deque_popleft);
        pop->self = ready;
        return 0;
    }
    pop->self = NULL;
    pop->callable = PyObject_GetAttr(ready, str_popleft);
    return pop->callable == NULL ? -1 : 0;
}

static inline PyObject *
pop_ready(popper *pop)
{
    return pop->self != NULL ? PyObject_Vectorcall(pop->callable, &pop->self, 1, NULL)
                             : PyObject_CallNoArgs(pop->callable);
}

/* setup_loop(Loop, deque, get_debug, _timer_handle_cancelled): Loop's slot offsets, and the
 * Python methods the C ones replace (their fallback). */
static PyObject *
setup_loop(PyObject *module, PyObject *args)
{
    PyObject *loop, *deque, *get_debug, *cancelled;
    if (!PyArg_ParseTuple(args, "O!O!OO:setup_loop", &PyType_Type, &loop, &PyType_Type, &deque,
                          &get_debug, &cancelled))
        return NULL;
    PyObject *append = PyObject_GetAttrString(deque, "append");
    if (append == NULL)
        return NULL;
    PyObject *popleft = PyObject_GetAttrString(deque, "popleft");
    if (popleft == NULL) {
        Py_DECREF(append);
        return NULL;
    }
    for (int i = 0; i < N_LOOP_FIELDS; i++) {
        if ((loop_offset[i] = one_offset((PyTypeObject *)loop, loop_field_names[i])) < 0) {
            Py_DECREF(append);
            Py_DECREF(popleft);
            return NULL;
        }
    }
    Py_XSETREF(deque_append, append);
    Py_XSETREF(deque_popleft, popleft);
    Py_XSETREF(deque_type, (PyTypeObject *)Py_NewRef(deque));
    Py_XSETREF(pure_get_debug, Py_NewRef(get_debug));
    Py_XSETREF(pure_timer_cancelled, Py_NewRef(cancelled));
    Py_XSETREF(slotted_loop_type, (PyTypeObject *)Py_NewRef(loop));
    Py_RETURN_NONE;
}

/* get_debug(self): self._debug */
static PyObject *
get_debug(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    if (pure_get_debug == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "runtime._speedups.setup_loop() was not called");
        return NULL;
    }
    if (nargs != 1)
        return PyObject_Vectorcall(pure_get_debug, argv, nargs, NULL);
    return loop_attr(argv[0], L_DEBUG, str_debug);
}

/* _timer_handle_cancelled(self, handle): TimerHandle.cancel's notice to the loop, which counts
 * the cancelled timers still on its heap (_run_once drops them once they are many). */
static PyObject *
timer_handle_cancelled(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    if (pure_timer_cancelled == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "runtime._speedups.setup_loop() was not called");
        return NULL;
    }
    if (nargs != 2 || timer_type == NULL)
        return PyObject_Vectorcall(pure_timer_cancelled, argv, nargs, NULL);
    PyObject *self = argv[0], *handle = argv[1];
    PyObject *scheduled = Py_IS_TYPE(handle, timer_type) ? SLOT(handle, scheduled_offset) : NULL;
    if (scheduled == NULL)  /* another class, or unset: Python says what happens */
        return PyObject_Vectorcall(pure_timer_cancelled, argv, nargs, NULL);
    int truth = scheduled == Py_False ? 0 : scheduled == Py_True ? 1 : PyObject_IsTrue(scheduled);
    if (truth <= 0)
        return truth < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *count = loop_attr(self, L_CANCELLED_COUNT, str_cancelled_count);
    if (count == NULL)
        return NULL;
    PyObject *more = PyNumber_Add(count, int_one);
    Py_DECREF(count);
    if (more == NULL)
        return NULL;
    int set = loop_set(self, L_CANCELLED_COUNT, str_cancelled_count, more);
    Py_DECREF(more);
    return set < 0 ? NULL : Py_NewRef(Py_None);
}

/* call_soon(self, callback, *args, context=None), bound to the loop as a method. */
static PyObject *
call_soon(PyObject *module, PyObject *const *argv, Py_ssize_t nargs, PyObject *kwnames)
{
    if (handle_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "runtime._speedups.setup() was not called");
        return NULL;
    }
    PyObject *context = Py_None;
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        if (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "context") == 0)
            context = argv[nargs];
        else  /* let Python say what is wrong with the call */
            return PyObject_Vectorcall(pure_call_soon, argv, nargs, kwnames);
    }
    if (nargs < 2)
        return PyObject_Vectorcall(pure_call_soon, argv, nargs, kwnames);
    PyObject *self = argv[0];
    int is_debug = loop_flag(self, L_DEBUG, str_debug);
    if (is_debug != 0) {
        if (is_debug < 0)
            return NULL;
        return PyObject_Vectorcall(pure_call_soon, argv, nargs, kwnames);
    }
    int is_closed = loop_flag(self, L_CLOSED, str_closed);
    if (is_closed != 0) {
        if (is_closed > 0)
            PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return NULL;
    }
    PyObject *cb_args = PyTuple_New(nargs - 2);
    if (cb_args == NULL)
        return NULL;
    for (Py_ssize_t i = 2; i < nargs; i++)
        PyTuple_SET_ITEM(cb_args, i - 2, Py_NewRef(argv[i]));
    PyObject *ctx = context == Py_None ? PyContext_CopyCurrent() : Py_NewRef(context);
    if (ctx == NULL) {
        Py_DECREF(cb_args);
        return NULL;
    }
    PyObject *handle = handle_type->tp_alloc(handle_type, 0);
    if (handle == NULL) {
        Py_DECREF(cb_args);
        Py_DECREF(ctx);
        return NULL;
    }
    SLOT(handle, handle_offset[F_CONTEXT]) = ctx;
    SLOT(handle, handle_offset[F_ARGS]) = cb_args;
    set_slot(handle, handle_offset[F_LOOP], self);
    set_slot(handle, handle_offset[F_CALLBACK], argv[1]);
    set_slot(handle, handle_offset[F_CANCELLED], Py_False);
    set_slot(handle, handle_offset[F_REPR], Py_None);
    set_slot(handle, handle_offset[F_SOURCE_TB], Py_None);
    if (append_ready(self, handle) < 0) {
        Py_DECREF(handle);
        return NULL;
    }
    return handle;
}

/* 1: the loop's attribute is true, 0: false, -1: error */
static int
flag(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        return -1;
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

/* The timer of call_at(self, when, callback, *args, context) outside debug mode and tracing,
 * pushed on the loop's heap; NULL with an exception set. */
static PyObject *
schedule_timer(PyObject *self, PyObject *when, PyObject *callback, PyObject *const *args,
               Py_ssize_t nargs, PyObject *context)
{
    PyObject *cb_args = PyTuple_New(nargs);
    if (cb_args == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(cb_args, i, Py_NewRef(args[i]));
    PyObject *ctx = context == Py_None ? PyContext_CopyCurrent() : Py_NewRef(context);
    if (ctx == NULL) {
        Py_DECREF(cb_args);
        return NULL;
    }
    PyObject *timer = timer_type->tp_alloc(timer_type, 0);
    if (timer == NULL) {
        Py_DECREF(cb_args);
        Py_DECREF(ctx);
        return NULL;
    }
    SLOT(timer, timer_offset[F_CONTEXT]) = ctx;
    SLOT(timer, timer_offset[F_ARGS]) = cb_args;
    set_slot(timer, timer_offset[F_LOOP], self);
    set_slot(timer, timer_offset[F_CALLBACK], callback);
    set_slot(timer, timer_offset[F_CANCELLED], Py_False);
    set_slot(timer, timer_offset[F_REPR], Py_None);
    set_slot(timer, timer_offset[F_SOURCE_TB], Py_None);
    set_slot(timer, when_offset, when);
    PyObject *heap = loop_attr(self, L_SCHEDULED, str_scheduled);
    if (heap == NULL) {
        Py_DECREF(timer);
        return NULL;
    }
    PyObject *push_args[2] = {heap, timer};
    PyObject *pushed = PyObject_Vectorcall(heappush, push_args, 2, NULL);
    Py_DECREF(heap);
    if (pushed == NULL) {
        Py_DECREF(timer);
        return NULL;
    }
    Py_DECREF(pushed);
    set_slot(timer, scheduled_offset, Py_True);
    return timer;
}

/* Whether call_at / call_later can take the C path: 1 yes, 0 no (Python's), -1 error. Debug
 * mode and tracing go the Python way; so does a closed loop, which Python reports. */
static int
timer_fast_path(PyObject *self)
{
    int on = flag(tracer, str_on);
    if (on != 0)
        return on < 0 ? -1 : 0;
    int debug = loop_flag(self, L_DEBUG, str_debug);
    if (debug != 0)
        return debug < 0 ? -1 : 0;
    int closed = loop_flag(self, L_CLOSED, str_closed);
    return closed < 0 ? -1 : !closed;
}

static PyObject *
context_kw(PyObject *const *argv, Py_ssize_t nargs, PyObject *kwnames, int *ok)
{
    *ok = 1;
    if (kwnames == NULL)
        return Py_None;
    if (PyTuple_GET_SIZE(kwnames) == 1
            && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "context") == 0)
        return argv[nargs];
    *ok = 0;
    return NULL;
}

/* call_at(self, when, callback, *args, context=None) */
static PyObject *
call_at(PyObject *module, PyObject *const *argv, Py_ssize_t nargs, PyObject *kwnames)
{
    int ok;
    PyObject *context = context_kw(argv, nargs, kwnames, &ok);
    if (!ok || nargs < 3 || argv[1] == Py_None || handle_type == NULL)
        return PyObject_Vectorcall(pure_call_at, argv, nargs, kwnames);
    int fast = timer_fast_path(argv[0]);
    if (fast <= 0)
        return fast < 0 ? NULL : PyObject_Vectorcall(pure_call_at, argv, nargs, kwnames);
    return schedule_timer(argv[0], argv[1], argv[2], argv + 3, nargs - 3, context);
}

/* call_later(self, delay, callback, *args, context=None): call_at(self.time() + delay, ...) */
static PyObject *
call_later(PyObject *module, PyObject *const *argv, Py_ssize_t nargs, PyObject *kwnames)
{
    int ok;
    PyObject *context = context_kw(argv, nargs, kwnames, &ok);
    if (!ok || nargs < 3 || argv[1] == Py_None || handle_type == NULL
            || !Py_IS_TYPE(argv[0], loop_type))  /* a subclass may have its own time or call_at */
        return PyObject_Vectorcall(pure_call_later, argv, nargs, kwnames);
    int fast = timer_fast_path(argv[0]);
    if (fast <= 0)
        return fast < 0 ? NULL : PyObject_Vectorcall(pure_call_later, argv, nargs, kwnames);
    PyObject *now = PyObject_CallMethodNoArgs(argv[0], str_time);
    if (now == NULL)
        return NULL;
    PyObject *when = PyNumber_Add(now, argv[1]);
    Py_DECREF(now);
    if (when == NULL)
        return NULL;
    PyObject *timer = schedule_timer(argv[0], when, argv[2], argv + 3, nargs - 3, context);
    Py_DECREF(when);
    return timer;
}

/* One handle of the loop's own classes, run as Handle._run runs it. 0: ran (its error, if any,
 * reported); -1: an exception to propagate (SystemExit, KeyboardInterrupt, or the reporter's). */
static int
run_handle(PyObject *handle, const Py_ssize_t *off, PyObject *report_error)
{
    PyObject *cancelled = SLOT(handle, off[F_CANCELLED]);
    if (cancelled != NULL && cancelled != Py_False) {
        int truth = PyObject_IsTrue(cancelled);
        if (truth != 0)
            return truth < 0 ? -1 : 0;
    }
    PyObject *ctx = SLOT(handle, off[F_CONTEXT]);
    PyObject *callback = SLOT(handle, off[F_CALLBACK]);
    PyObject *args = SLOT(handle, off[F_ARGS]);
    if (ctx == NULL || callback == NULL || args == NULL || !PyTuple_Check(args)) {
        /* not built by call_soon / call_at: let the class run itself */
        PyObject *res = PyObject_CallMethodNoArgs(handle, str_run);
        Py_XDECREF(res);
        return res == NULL ? -1 : 0;
    }
    Py_INCREF(ctx);
    Py_INCREF(callback);
    Py_INCREF(args);
    PyObject *res = NULL;
    if (PyContext_Enter(ctx) == 0) {
        res = PyObject_Call(callback, args, NULL);
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyContext_Exit(ctx);
        PyErr_Restore(type, value, tb);
    }
    Py_DECREF(ctx);
    Py_DECREF(callback);
    Py_DECREF(args);
    if (res != NULL) {
        Py_DECREF(res);
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return -1;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *reported = PyObject_CallFunctionObjArgs(report_error, handle, value ? value : Py_None,
                                                      NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (reported == NULL)
        return -1;
    Py_DECREF(reported);
    return 0;
}

/* run_ready(ready, ntodo, report_error): pop and run ntodo handles, as loop._run_ready does. */
static PyObject *
run_ready(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "run_ready(ready, ntodo, report_error)");
        return NULL;
    }
    if (handle_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "runtime._speedups.setup() was not called");
        return NULL;
    }
    Py_ssize_t ntodo = PyLong_AsSsize_t(argv[1]);
    if (ntodo < 0 && PyErr_Occurred())
        return NULL;
    popper pop;
    if (popper_of(argv[0], &pop) < 0)
        return NULL;
    for (Py_ssize_t i = 0; i < ntodo; i++) {
        PyObject *handle = pop_ready(&pop);
        if (handle == NULL)
            goto error;
        int status;
        if (Py_IS_TYPE(handle, handle_type))
            status = run_handle(handle, handle_offset, argv[2]);
        else if (Py_IS_TYPE(handle, timer_type))
            status = run_handle(handle, timer_offset, argv[2]);
        else {  /* a subclass with its own _run, say: it runs itself, once not cancelled */
            PyObject *cancelled = PyObject_GetAttrString(handle, "_cancelled");
            int truth = cancelled == NULL ? -1 : PyObject_IsTrue(cancelled);
            Py_XDECREF(cancelled);
            if (truth == 0) {
                PyObject *res = PyObject_CallMethodNoArgs(handle, str_run);
                Py_XDECREF(res);
                status = res == NULL ? -1 : 0;
            }
            else
                status = truth < 0 ? -1 : 0;
        }
        Py_DECREF(handle);
        if (status < 0)
            goto error;
    }
    Py_DECREF(pop.callable);
    Py_RETURN_NONE;
error:
    Py_DECREF(pop.callable);
    return NULL;
}

/* The loop's methods as method descriptors of Loop (PyDescr_NewMethod): a call from Python
 * (loop.call_soon(...), or asyncio's C Task calling loop.call_soon) then finds an unbound method
 * and calls it with the loop in front, as it does a Python method, where an instancemethod
 * wrapper would make a bound method object per call. The descriptor hands over the arguments
 * after the loop; these put the loop back in front for the functions above. */
typedef PyObject *(*fastcall_kw)(PyObject *, PyObject *const *, Py_ssize_t, PyObject *);

static PyObject *
with_self(fastcall_kw impl, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    Py_ssize_t total = 1 + nargs + (kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames));
    PyObject *small[8];
    PyObject **argv = total <= 8 ? small : PyMem_Malloc(total * sizeof(PyObject *));
    if (argv == NULL)
        return PyErr_NoMemory();
    argv[0] = self;
    for (Py_ssize_t i = 1; i < total; i++)
        argv[i] = args[i - 1];
    PyObject *result = impl(NULL, argv, 1 + nargs, kwnames);
    if (argv != small)
        PyMem_Free(argv);
    return result;
}

static PyObject *
get_debug_kw(PyObject *module, PyObject *const *argv, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "get_debug() takes no keyword arguments");
        return NULL;
    }
    return get_debug(module, argv, nargs);
}

static PyObject *
timer_handle_cancelled_kw(PyObject *module, PyObject *const *argv, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames))
        return PyObject_Vectorcall(pure_timer_cancelled, argv, nargs, kwnames);
    return timer_handle_cancelled(module, argv, nargs);
}

#define LOOP_METHOD(name, impl) \
    static PyObject *name##_as_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs, \
                                      PyObject *kwnames) \
    { return with_self(impl, self, args, nargs, kwnames); }
LOOP_METHOD(call_soon, call_soon)
LOOP_METHOD(call_at, call_at)
LOOP_METHOD(call_later, call_later)
LOOP_METHOD(get_debug, get_debug_kw)
LOOP_METHOD(timer_handle_cancelled, timer_handle_cancelled_kw)
#undef LOOP_METHOD

#define AS_METHOD(name, function) {name, (PyCFunction)(void (*)(void))function, \
                                   METH_FASTCALL | METH_KEYWORDS, NULL}
static PyMethodDef loop_methods[] = {
    AS_METHOD("call_soon", call_soon_as_method),
    AS_METHOD("call_at", call_at_as_method),
    AS_METHOD("call_later", call_later_as_method),
    AS_METHOD("get_debug", get_debug_as_method),
    AS_METHOD("_timer_handle_cancelled", timer_handle_cancelled_as_method),
    {NULL, NULL, 0, NULL},
};
#undef AS_METHOD

/* loop_methods(Loop): {name: method descriptor} for the class (after setup and setup_loop) */
static PyObject *
make_loop_methods(PyObject *module, PyObject *loop)
{
    if (!PyType_Check(loop)) {
        PyErr_SetString(PyExc_TypeError, "loop_methods(Loop): a class");
        return NULL;
    }
    PyObject *result = PyDict_New();
    if (result == NULL)
        return NULL;
    for (PyMethodDef *def = loop_methods; def->ml_name != NULL; def++) {
        PyObject *descr = PyDescr_NewMethod((PyTypeObject *)loop, def);
        if (descr == NULL || PyDict_SetItemString(result, def->ml_name, descr) < 0) {
            Py_XDECREF(descr);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(descr);
    }
    return result;
}

/* ------------------------------------------------------------------ the traced iteration
 * runtime.tracing's per-iteration tracepoint (``iteration``, see _fast_tracepoints there) in C:
 * the LOOP_ITERATION record (and IO_READY records past its inline events) stored straight into
 * the probe file's ring, and the ready handles run as run_ready runs them, one clock read each.
 * With tracing on this is what the loop runs per iteration instead of run_ready; in Python it
 * cost some 1.3 us an iteration on the echo benchmark (a Python frame, a pack_into, per handle
 * a dozen attribute and dict lookups), which was most of what tracing cost a request.
 *
 * Only the plain callbacks outside any request are run here: a function or a bound method of
 * something that is not a Task, in a context without a request id. They get no record, only
 * their duration (a slow one is reported through the tracer's Python). Every other handle (a
 * task step, a callback in a request, a handle of another class) is passed to the tracer's
 * Python ``run_one``, which writes its records: those paths are where the readers' records come
 * from, and they stay in one place. The record layout is runtime.probefile's (version 4):
 * seq_begin is stored first and seq_end last, in program order (x86-64 keeps stores in order),
 * which is the seqlock rule the readers rely on. */
#include <time.h>
#include <stdint.h>

/* The probe writer's sequence numbers (runtime.probefile.ProbeWriter._seq_counter when the
 * accelerator is chosen; itertools.count otherwise, runtime.accel.sequence_counter decides):
 * itertools.count's interface, ``next()`` and the ``__reduce__`` that probefile.next_of reads, and
 * a plain integer that the C writers here take numbers from without a call or an int object.
 * Taking a number is atomic under the GIL either way. */
typedef struct {
    PyObject_HEAD
    uint64_t next;             /* the number the next record gets */
} SequenceObject;

static PyObject *
sequence_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    unsigned long long start = 1;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || !PyArg_ParseTuple(args, "|K:Sequence", &start)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "Sequence(start=1) takes no keyword arguments");
        return NULL;
    }
    SequenceObject *self = (SequenceObject *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->next = start;
    return (PyObject *)self;
}

static PyObject *
sequence_next(SequenceObject *self)
{
    return PyLong_FromUnsignedLongLong(self->next++);
}

static PyObject *
sequence_reduce(SequenceObject *self, PyObject *unused)
{
    return Py_BuildValue("O(K)", (PyObject *)Py_TYPE(self), (unsigned long long)self->next);
}

static PyObject *
sequence_repr(SequenceObject *self)
{
    return PyUnicode_FromFormat("Sequence(%llu)", (unsigned long long)self->next);
}

static PyMethodDef sequence_methods[] = {
    {"__reduce__", (PyCFunction)sequence_reduce, METH_NOARGS, "(Sequence, (next number,))"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SequenceType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "runtime._speedups.Sequence",
    .tp_basicsize = sizeof(SequenceObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sequence(start=1): record sequence numbers, as itertools.count(start).",
    .tp_new = sequence_new,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)sequence_next,
    .tp_repr = (reprfunc)sequence_repr,
    .tp_methods = sequence_methods,
};

static struct {
    Py_buffer view;            /* the probe file's mapping, held while tracing is on */
    int held;
    char *ring;                /* start of the ring section */
    uint64_t ring_mask;        /* ring_records - 1 */
    int64_t *iter_counters;    /* loop_iterations, io_ready, records_written */
    SequenceObject *seq;       /* the writer's sequence counter */
    PyObject *run_one;         /* run_one(handle, t, queued_by, report_error) -> t1, or -1: skipped */
    PyObject *slow_callback;   /* slow_plain(duration_ns, callback) */
    PyObject *request_var;     /* runtime.requests.REQUEST_ID */
    PyObject *task_types;      /* a tuple: asyncio.Task and the Python Task */
    int64_t slow_ns, queued_by, callbacks_end;
    uint64_t iter_head, io_head;
} tr;

#define RECORD_BYTES 96

static inline int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);    /* time.monotonic_ns's clock */
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int
take_seq(uint64_t *seq)
{
    *seq = tr.seq->next++;
    return 0;
}

/* Whether a callback's owner of this type is a Task (a subclass of one of tr.task_types), told
 * by its type as the Python run_one tells it (is_task_type). The same few types come again and
 * again (transports, protocols, tasks): the answers are kept, each with a reference to its type,
 * so a type freed and another allocated at its address is never answered for. */
#define TASK_TYPE_CACHE 16
static struct { PyTypeObject *type; int is_task; } task_type_cache[TASK_TYPE_CACHE];

static int
is_task_type(PyTypeObject *type)
{
    unsigned i = (unsigned)(((uintptr_t)type >> 6) % TASK_TYPE_CACHE);
    if (task_type_cache[i].type == type)
        return task_type_cache[i].is_task;
    int is_task = 0;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(tr.task_types) && !is_task; k++) {
        PyObject *t = PyTuple_GET_ITEM(tr.task_types, k);
        is_task = PyType_Check(t) && PyType_IsSubtype(type, (PyTypeObject *)t);
    }
    PyTypeObject *old = task_type_cache[i].type;
    task_type_cache[i].type = (PyTypeObject *)Py_NewRef(type);
    task_type_cache[i].is_task = is_task;
    Py_XDECREF(old);
    return is_task;
}

static void
forget_task_types(void)
{
    for (int i = 0; i < TASK_TYPE_CACHE; i++)
        Py_CLEAR(task_type_cache[i].type);
}

static void
store_record(uint64_t seq, uint64_t head, int64_t ns, int64_t a, int64_t b, int64_t c, int64_t d,
             int64_t e, int64_t f)
{
    volatile uint64_t *r = (volatile uint64_t *)(tr.ring + ((seq - 1) & tr.ring_mask) * RECORD_BYTES);
    r[0] = seq;
    r[1] = head; r[2] = (uint64_t)ns; r[3] = 0; r[4] = 0;
    r[5] = (uint64_t)a; r[6] = (uint64_t)b; r[7] = (uint64_t)c;
    r[8] = (uint64_t)d; r[9] = (uint64_t)e; r[10] = (uint64_t)f;
    r[11] = seq;
}

static void
trace_drop(void)
{
    if (tr.held)
        PyBuffer_Release(&tr.view);
    tr.held = 0;
    Py_CLEAR(tr.seq);
    forget_task_types();
    Py_CLEAR(tr.run_one);
    Py_CLEAR(tr.slow_callback);
    Py_CLEAR(tr.request_var);
    Py_CLEAR(tr.task_types);
}

/* trace_setup(mm, record_size, ring_off, ring_records, counters_at, sequence, run_one,
 *             slow_callback, request_var, task_types, slow_ns, iter_head, io_head) */
static PyObject *
trace_setup(PyObject *module, PyObject *args)
{
    PyObject *mm, *seq, *run_one, *slow_cb, *request_var, *task_types;
    Py_ssize_t record_size, ring_off, ring_records, counters_at;
    long long slow_ns;
    unsigned long long iter_head, io_head;
    if (!PyArg_ParseTuple(args, "OnnnnO!OOOO!LKK", &mm, &record_size, &ring_off, &ring_records,
                          &counters_at, &SequenceType, &seq, &run_one, &slow_cb, &request_var, &PyTuple_Type,
                          &task_types, &slow_ns, &iter_head, &io_head))
        return NULL;
    if (record_size != RECORD_BYTES) {     /* store_record writes probefile's layout by hand */
        PyErr_Format(PyExc_ValueError, "runtime._speedups writes %d-byte records, the probe file "
                     "has %zd: rebuild the accelerator with this probefile.py", RECORD_BYTES,
                     record_size);
        return NULL;
    }
    if (ring_records <= 0 || (ring_records & (ring_records - 1))) {
        PyErr_SetString(PyExc_ValueError, "ring_records must be a power of two");
        return NULL;
    }
    trace_drop();
    if (PyObject_GetBuffer(mm, &tr.view, PyBUF_WRITABLE) < 0)
        return NULL;
    tr.held = 1;
    if (ring_off + ring_records * RECORD_BYTES > tr.view.len || counters_at + 24 > tr.view.len
            || counters_at % 8 || ring_off % 8) {
        trace_drop();
        PyErr_SetString(PyExc_ValueError, "ring or counters outside the mapping");
        return NULL;
    }
    tr.ring = (char *)tr.view.buf + ring_off;
    tr.ring_mask = (uint64_t)ring_records - 1;
    tr.iter_counters = (int64_t *)((char *)tr.view.buf + counters_at);
    tr.seq = (SequenceObject *)Py_NewRef(seq);
    tr.run_one = Py_NewRef(run_one);
    tr.slow_callback = Py_NewRef(slow_cb);
    tr.request_var = Py_NewRef(request_var);
    tr.task_types = Py_NewRef(task_types);
    tr.slow_ns = slow_ns;
    tr.iter_head = iter_head;
    tr.io_head = io_head;
    tr.queued_by = tr.callbacks_end = 0;
    Py_RETURN_NONE;
}

/* trace_release(): let go of the mapping (before the writer closes it) and the tracer's objects. */
static PyObject *
trace_release(PyObject *module, PyObject *unused)
{
    trace_drop();
    Py_RETURN_NONE;
}

/* fd << 2 | selectors mask of one (key, mask) event; -1: an error set */
static int
event_of(PyObject *event, long *fd, long *mask)
{
    if (!PyTuple_Check(event) || PyTuple_GET_SIZE(event) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(event, 0))
            || PyTuple_GET_SIZE(PyTuple_GET_ITEM(event, 0)) < 2) {
        PyErr_SetString(PyExc_TypeError, "an event is (SelectorKey, mask)");
        return -1;
    }
    *fd = PyLong_AsLong(PyTuple_GET_ITEM(PyTuple_GET_ITEM(event, 0), 1));
    *mask = PyLong_AsLong(PyTuple_GET_ITEM(event, 1));
    return PyErr_Occurred() ? -1 : 0;
}

static int
write_iteration(PyObject *event_list, int64_t poll_end, Py_ssize_t ntodo)
{
    PyObject *events = PySequence_Fast(event_list, "event_list must be a sequence");
    if (events == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(events);
    PyObject **items = PySequence_Fast_ITEMS(events);
    int64_t inline_ev[3] = {0, 0, 0};
    long fd, mask;
    for (Py_ssize_t i = 0; i < n && i < 3; i++) {
        if (event_of(items[i], &fd, &mask) < 0)
            goto error;
        inline_ev[i] = (int64_t)fd << 2 | mask;
    }
    int64_t poll_ns = tr.callbacks_end ? poll_end - tr.callbacks_end : 0;
    tr.queued_by = poll_end;
    uint64_t seq;
    if (take_seq(&seq) < 0)
        goto error;
    store_record(seq, tr.iter_head, poll_end, poll_ns, n, ntodo, inline_ev[0], inline_ev[1],
                 inline_ev[2]);
    for (Py_ssize_t i = 3; i < n; i++) {
        if (event_of(items[i], &fd, &mask) < 0 || take_seq(&seq) < 0)
            goto error;
        /* selectors' mask (1 read, 2 write) -> the record's (1 read, 4 write) */
        store_record(seq, tr.io_head | (uint64_t)((mask & 1) | (mask & 2) << 1) << 32, poll_end,
                     fd, 0, 0, 0, 0, 0);
    }
    volatile int64_t *c = tr.iter_counters;
    c[0] += 1;
    c[1] += n;
    c[2] = (int64_t)seq;
    Py_DECREF(events);
    return 0;
error:
    Py_DECREF(events);
    return -1;
}

/* A plain callback outside any request: run here. 1: yes, 0: for run_one, -1: error. */
static int
plain(PyObject *handle, const Py_ssize_t **off)
{
    if (Py_IS_TYPE(handle, handle_type))
        *off = handle_offset;
    else if (Py_IS_TYPE(handle, timer_type))
        *off = timer_offset;
    else
        return 0;
    PyObject *cb = SLOT(handle, (*off)[F_CALLBACK]);
    PyObject *ctx = SLOT(handle, (*off)[F_CONTEXT]);
    if (cb == NULL || ctx == NULL || !PyContext_CheckExact(ctx))
        return 0;
    if (PyMethod_Check(cb)) {
        if (is_task_type(Py_TYPE(PyMethod_GET_SELF(cb))))
            return 0;
    }
    else if (!PyFunction_Check(cb))
        return 0;
    int in_request = PySequence_Contains(ctx, tr.request_var);
    return in_request < 0 ? -1 : !in_request;
}

/* run_one(handle, t, queued_by, report_error): the tracer's Python for one handle */
static PyObject *
call_run_one(PyObject *handle, int64_t t, PyObject *report_error)
{
    PyObject *t_obj = PyLong_FromLongLong(t);
    PyObject *queued = PyLong_FromLongLong(tr.queued_by);
    PyObject *res = NULL;
    if (t_obj != NULL && queued != NULL) {
        PyObject *args[4] = {handle, t_obj, queued, report_error};
        res = PyObject_Vectorcall(tr.run_one, args, 4, NULL);
    }
    Py_XDECREF(t_obj);
    Py_XDECREF(queued);
    return res;
}

/* trace_iteration(event_list, ready, ntodo, report_error): as the tracer's Python
 * ``iteration``: the stamp read here, the record (event_list None: none), then ntodo handles
 * (report_error None: none). */
static PyObject *
trace_iteration(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "trace_iteration(event_list, ready, ntodo, report_error)");
        return NULL;
    }
    if (!tr.held || handle_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "runtime._speedups.trace_setup() was not called");
        return NULL;
    }
    Py_BUILD_ASSERT(sizeof(long) == sizeof(int64_t));   /* PyLong_AsLong reads a clock reading */
    Py_ssize_t ntodo = PyLong_AsSsize_t(argv[2]);
    if (ntodo == -1 && PyErr_Occurred())
        return NULL;
    int64_t poll_end = now_ns();
    if (argv[0] != Py_None && write_iteration(argv[0], poll_end, ntodo) < 0)
        return NULL;
    PyObject *report_error = argv[3];
    if (report_error == Py_None)
        Py_RETURN_NONE;
    popper pop;
    if (popper_of(argv[1], &pop) < 0)
        return NULL;
    int64_t t = poll_end;
    for (Py_ssize_t i = 0; i < ntodo; i++) {
        PyObject *handle = pop_ready(&pop);
        if (handle == NULL)
            goto error;
        const Py_ssize_t *off = NULL;
        int kind = plain(handle, &off);
        if (kind > 0) {
            PyObject *cb = Py_NewRef(SLOT(handle, off[F_CALLBACK]));
            PyObject *cancelled = SLOT(handle, off[F_CANCELLED]);
            int skipped = cancelled != NULL && cancelled != Py_False && PyObject_IsTrue(cancelled) > 0;
            int status = run_handle(handle, off, report_error);
            if (!skipped && status == 0) {
                int64_t t1 = now_ns();
                if (t1 - t >= tr.slow_ns) {
                    PyObject *res = PyObject_CallFunction(tr.slow_callback, "LO", (long long)(t1 - t), cb);
                    Py_XDECREF(res);
                    if (res == NULL)
                        status = -1;
                }
                t = t1;
            }
            Py_DECREF(cb);
            Py_DECREF(handle);
            if (status < 0)
                goto error;
            continue;
        }
        if (kind < 0) {
            Py_DECREF(handle);
            goto error;
        }
        PyObject *res = call_run_one(handle, t, report_error);
        Py_DECREF(handle);
        if (res == NULL)
            goto error;
        long long t1 = PyLong_AsLong(res);
        Py_DECREF(res);
        if (t1 == -1 && PyErr_Occurred())
            goto error;
        if (t1 >= 0)
            t = t1;
    }
    Py_DECREF(pop.callable);
    tr.callbacks_end = t;
    Py_RETURN_NONE;
error:
    Py_DECREF(pop.callable);
    tr.callbacks_end = now_ns();
    return NULL;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS,
     "setup(Handle, TimerHandle, pure_call_soon): the handle classes and the Python fallback."},
    {"call_soon", (PyCFunction)(void (*)(void))call_soon, METH_FASTCALL | METH_KEYWORDS,
     "call_soon(loop, callback, *args, context=None): Loop.call_soon outside debug mode."},
    {"call_at", (PyCFunction)(void (*)(void))call_at, METH_FASTCALL | METH_KEYWORDS,
     "call_at(loop, when, callback, *args, context=None): Loop.call_at outside debug and tracing."},
    {"call_later", (PyCFunction)(void (*)(void))call_later, METH_FASTCALL | METH_KEYWORDS,
     "call_later(loop, delay, callback, *args, context=None): as call_at(loop.time() + delay)."},
    {"setup_loop", setup_loop, METH_VARARGS,
     "setup_loop(Loop, deque, get_debug, _timer_handle_cancelled): Loop's slots, the fallbacks."},
    {"get_debug", (PyCFunction)(void (*)(void))get_debug, METH_FASTCALL,
     "get_debug(loop): loop._debug."},
    {"timer_handle_cancelled", (PyCFunction)(void (*)(void))timer_handle_cancelled, METH_FASTCALL,
     "timer_handle_cancelled(loop, handle): BaseEventLoop._timer_handle_cancelled."},
    {"loop_methods", make_loop_methods, METH_O,
     "loop_methods(Loop): call_soon, call_at, call_later, get_debug, _timer_handle_cancelled as "
     "method descriptors of Loop."},
    {"run_ready", (PyCFunction)(void (*)(void))run_ready, METH_FASTCALL,
     "run_ready(ready, ntodo, report_error): run the first ntodo ready handles."},
    {"trace_setup", trace_setup, METH_VARARGS,
     "trace_setup(mm, record_size, ring_off, ring_records, counters_at, sequence, run_one, slow_callback, "
     "request_var, task_types, slow_ns, iter_head, io_head): the probe file trace_iteration writes."},
    {"trace_release", trace_release, METH_NOARGS,
     "trace_release(): let go of the probe file's mapping and the tracer's objects."},
    {"trace_iteration", (PyCFunction)(void (*)(void))trace_iteration, METH_FASTCALL,
     "trace_iteration(event_list, ready, ntodo, report_error): the traced iteration."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "runtime._speedups",
    "The runtime's hot paths in C (see runtime/accel.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(str_debug, "_debug");
    INTERN(str_closed, "_closed");
    INTERN(str_ready, "_ready");
    INTERN(str_append, "append");
    INTERN(str_popleft, "popleft");
    INTERN(str_run, "_run");
    INTERN(str_scheduled, "_scheduled");
    INTERN(str_on, "on");
    INTERN(str_time, "time");
    INTERN(str_cancelled_count, "_timer_cancelled_count");
    if ((int_one = PyLong_FromLong(1)) == NULL)
        return NULL;
#undef INTERN
    if (PyType_Ready(&SequenceType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Sequence", (PyObject *)&SequenceType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
