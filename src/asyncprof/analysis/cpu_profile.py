"""A run's on-CPU profile: where the workers' CPU went, by category, from py-spy's samples.

``cpu_profile(samples_path)`` streams a collapsed-stack file once (or takes the
:class:`~asyncprof.analysis.stacks.StackTally` the report already read it into), drops idle samples
(``stacks.Stack.idle``: the leaf-frame table) and classifies the rest with the rule table of
``asyncprof.analysis.categories``, once per distinct stack.  Pure: it reads only *samples_path*.

What "on-CPU" means depends on how the file was recorded:

* asyncprof records with ``py-spy --gil`` (see ``asyncprof.collectors.pyspy``): a sample is a
  thread holding the GIL, i.e. running Python or C code that has not released it, *including*
  time it holds the GIL while the OS has preempted it (on a saturated machine that can be a
  large part: see the measurements in ``pyspy.py``).  At most one sample per process per tick.
* Older recordings sampled every thread (no ``--gil``): only the leaf-frame table removes idle
  threads, and a thread blocked in C (psycopg2 waiting for PostgreSQL, a socket send, waiting to
  re-take the GIL) still counts, billed to the Python line that called the C function.  Shares
  from such files overstate whatever waits.

Without ``--native`` py-spy sees no C frames, so time in C code is billed to the Python frame
that called it (psycopg2's C ``execute`` to OTel's ``CursorTracer.traced_execution`` when tracing
is on, to the view otherwise).
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncprof.analysis.categories import CATEGORIES, NO_FRAMES, Rule, build_classifier, function_name
from asyncprof.analysis.stacks import StackTally, tally_stacks

TOP_FUNCTIONS = 5


@dataclass(frozen=True)
class FunctionShare:
    """A function (``func (path)``, no line) and its on-CPU samples; share of all on-CPU samples."""

    function: str
    samples: int
    share: float


@dataclass(frozen=True)
class CpuProfile:
    """On-CPU samples of one run, by category and by process.

    ``samples`` = ``on_cpu_samples`` + ``idle_samples``.  ``category_samples`` has every category
    of ``CATEGORIES`` (0 when empty) and sums to ``on_cpu_samples``.  ``top_functions[c]`` lists
    up to five functions of category *c*, most samples first (ties by name): the frame that
    decided the category (the leaf-most matched frame, or the claiming caller).
    """

    samples: int
    on_cpu_samples: int
    idle_samples: int
    category_samples: dict[str, int]
    top_functions: dict[str, list[FunctionShare]]
    on_cpu_by_pid: dict[int, int]
    app_packages: tuple[str, ...] = field(default=())
    skipped_lines: int = 0  # lines of the file that were not collapsed stacks (skipped)
    unreadable: str | None = None  # why the file could not be (wholly) read, if it could not

    @property
    def shares(self) -> dict[str, float]:
        """Category -> fraction of on-CPU samples; every category present; all 0.0 if none on CPU."""
        total = self.on_cpu_samples
        return {c: (n / total if total else 0.0) for c, n in self.category_samples.items()}

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (shares rounded to 6 places; pids as strings)::

            {"samples": int, "on_cpu_samples": int, "idle_samples": int,
             "shares": {category: float}, "category_samples": {category: int},
             "top_functions": {category: [{"function": str, "samples": int, "share": float}]},
             "on_cpu_by_pid": {pid: int}, "app_packages": [str]}
        """
        return {
            "samples": self.samples,
            "on_cpu_samples": self.on_cpu_samples,
            "idle_samples": self.idle_samples,
            "shares": {c: round(s, 6) for c, s in self.shares.items()},
            "category_samples": dict(self.category_samples),
            "top_functions": {
                c: [{"function": f.function, "samples": f.samples, "share": round(f.share, 6)} for f in fs]
                for c, fs in self.top_functions.items()
            },
            "on_cpu_by_pid": {str(pid): n for pid, n in self.on_cpu_by_pid.items()},
            "app_packages": list(self.app_packages),
        }


def cpu_profile(samples_path: Path | StackTally, app_packages: Sequence[str] = (),
                extra_rules: Sequence[Rule] = ()) -> CpuProfile:
    """Classify the on-CPU samples of a py-spy collapsed file (streamed; missing file = empty profile),
    or of the :func:`~asyncprof.analysis.stacks.tally_stacks` of one.

    Skips and counts (``skipped_lines``) the lines that are not collapsed stacks; an unreadable
    file gives the profile of what was read before (nothing if it could not be opened).

    *app_packages* are added to ``categories.DEFAULT_APP_PACKAGES`` as the ``app`` category;
    *extra_rules* are tried before every other rule.
    """
    classifier = build_classifier(app_packages, extra_rules)
    total = on_cpu = 0
    by_category: Counter[str] = Counter()
    by_function: dict[str, Counter[str]] = {c: Counter() for c in CATEGORIES}
    by_pid: Counter[int] = Counter()
    tally = samples_path if isinstance(samples_path, StackTally) else tally_stacks(samples_path)
    for stack in tally.stacks():
        total += stack.count
        if stack.idle or stack.count == 0:
            continue
        on_cpu += stack.count
        category, index = classifier.classify(stack.frames)
        by_category[category] += stack.count
        by_pid[stack.pid] += stack.count
        if index >= 0:
            name = function_name(stack.frames[index])
        else:
            name = function_name(stack.frames[-1]) if stack.frames else NO_FRAMES
        by_function[category][name] += stack.count

    def top(counts: Counter[str]) -> list[FunctionShare]:
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_FUNCTIONS]
        return [FunctionShare(name, n, n / on_cpu) for name, n in ranked]

    return CpuProfile(
        samples=total,
        on_cpu_samples=on_cpu,
        idle_samples=total - on_cpu,
        category_samples={c: by_category[c] for c in CATEGORIES},
        top_functions={c: top(by_function[c]) for c in CATEGORIES},
        on_cpu_by_pid=dict(sorted(by_pid.items())),
        app_packages=classifier.app_packages,
        skipped_lines=tally.skipped_lines,
        unreadable=tally.unreadable,
    )
