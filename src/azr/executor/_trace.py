"""Execution traces written by the sandbox: what a program's variables hold, line by line, for one call.

The tracer below is Python source appended to the model's program and run in the sandbox like any other job
(its entry point replaces ``f``), so model-written code still never runs in the trainer. It records, for every
function frame of the program, the local variables that changed since the frame's last line, and the value
returned by the outermost call, as short text such as::

    s = 0
    x = 1
    s = 1
    return 1

Values are shown by ``repr`` cut to :data:`VALUE_CHARS` characters (sets sorted when their items allow it, so a
trace does not depend on the worker's hash seed); after ``max_lines`` lines the trace says ``...`` and goes on to
the returned value. Comprehensions and generator expressions are not traced line by line.
"""

from __future__ import annotations

VALUE_CHARS = 40
ENTRY = "__azr_trace__"

TRACER = """

def __azr_trace__(*__azr_a, **__azr_k):
    import sys as __azr_sys
    __azr_lines, __azr_last, __azr_out = [], {}, {}
    __azr_limit, __azr_chars, __azr_target = %(max_lines)d, %(chars)d, f

    def __azr_r(v):
        if isinstance(v, (set, frozenset)):
            try:
                v = "{" + ", ".join(repr(x) for x in sorted(v)) + "}" if v else repr(v)
            except Exception:
                v = repr(v)
        else:
            try:
                v = repr(v)
            except Exception:
                v = "<unprintable>"
        return v if len(v) <= __azr_chars else v[: __azr_chars - 3] + "..."

    def __azr_emit(text):
        if len(__azr_lines) < __azr_limit:
            __azr_lines.append(text)
        elif len(__azr_lines) == __azr_limit:
            __azr_lines.append("...")

    def __azr_local(frame, event, arg):
        name = frame.f_code.co_name
        prefix = "" if id(frame) == __azr_out.get("outer") else name + ": "
        if event in ("line", "return"):
            seen = __azr_last.setdefault(id(frame), {})
            for key, value in list(frame.f_locals.items()):
                text = __azr_r(value)
                if key.startswith("__azr") or seen.get(key) == text:
                    continue
                seen[key] = text
                __azr_emit(prefix + key + " = " + text)
        if event == "return":
            __azr_last.pop(id(frame), None)
            if id(frame) == __azr_out.get("outer"):
                __azr_out["value"] = __azr_r(arg)
        return __azr_local

    def __azr_global(frame, event, arg):
        code = frame.f_code
        if code.co_filename != "<program>" or code.co_name.startswith(("<", "__azr")):
            return None
        if "outer" not in __azr_out:  # the call being traced: its arguments are known, not news
            __azr_out["outer"] = id(frame)
            __azr_last[id(frame)] = {k: __azr_r(v) for k, v in frame.f_locals.items()}
        return __azr_local

    __azr_sys.settrace(__azr_global)
    try:
        __azr_target(*__azr_a, **__azr_k)
    finally:
        __azr_sys.settrace(None)
    return "\\n".join(__azr_lines + ["return " + __azr_out.get("value", "None")])
"""


def traced_program(program: str, max_lines: int) -> str:
    """``program`` followed by the tracer, whose entry point :data:`ENTRY` takes ``f``'s arguments."""
    return program.rstrip("\n") + "\n" + TRACER % {"max_lines": max_lines, "chars": VALUE_CHARS}
