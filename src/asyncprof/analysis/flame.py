"""A run's py-spy samples as a flame tree: frames with sample counts, categories and CPU ms per request.

:func:`build_flame` streams ``pyspy/samples.txt`` once (it can be large) and merges every stack
into one tree rooted at ``all``: process and thread frames are dropped, so the workers' identical
stacks add up (``--pid`` keeps one or some workers), and a stack with no Python frame at all (a
thread being created or torn down) becomes the single frame :data:`~asyncprof.analysis.categories.NO_FRAMES`.
Children are keyed by py-spy's frame text, ``func (path:line)``.

Contracts:

* ``node.samples`` is inclusive (the node and everything it called), ``node.self_samples`` the
  stacks that end at the node; a node's samples = its self samples + its children's samples, and
  the root's samples are every sample kept.
* ``node.category`` is what :mod:`asyncprof.analysis.categories` would bill a stack *ending at
  that frame* to (``classify(path from the root to the node)``), so a leaf frame carries exactly
  the category the report's CPU profile gives its samples, and the self samples per category
  (:meth:`Flame.category_samples`) equal ``cpu_profile``'s ``category_samples`` for the same
  samples.  The root's category is :data:`ROOT_CATEGORY`.
* On-CPU (default) drops the stacks :attr:`~asyncprof.analysis.stacks.Stack.idle` marks as
  waiting; ``wall=True`` keeps them and counts them in ``node.idle_samples`` too (a node whose
  samples are all waiting is drawn in the waiting colour).
* One sample is ``1000 / rate`` ms of a worker's time: with ``py-spy --gil`` (asyncprof's
  default) a sample is the thread holding the GIL, at most one per process per tick.  ``rate`` is
  the manifest's ``instruments.pyspy.rate_hz`` (``config.pyspy_rate`` in older manifests).
* ``requests`` is the number of client requests that started in the measured window (the
  report's ``requests``); py-spy samples that same window, so ``samples * interval_ms / requests``
  is CPU ms per request.  With ``pids`` it stays the whole run's requests: "this worker's CPU per
  request of the run".

:func:`diff_flame` merges two flames into one whose nodes carry both runs' samples; widths and
colours are in CPU ms per request (:meth:`Flame.ms_per_request`, :meth:`Flame.delta_ms`), so runs of
different throughput compare fairly.

Bad input raises :class:`~asyncprof.errors.AsyncprofError` subclasses with one-line messages.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncprof.analysis.categories import CATEGORIES, NO_FRAMES, Classifier, build_classifier
from asyncprof.analysis.requests import read_request_log
from asyncprof.analysis.stacks import Stack, parse_line
from asyncprof.analysis.summary import measured_window
from asyncprof.errors import AsyncprofError, CorruptRunError, UsageError
from asyncprof.run import Run

SAMPLES_FILE = "samples.txt"
ROOT_NAME = "all"
ROOT_CATEGORY = "all"
#: The legend's name for frames whose samples are all waiting (``--wall`` only).
WAITING = "waiting"

#: The rate of runs whose manifest does not say it: they were recorded when 20 Hz was the default.
OLD_DEFAULT_PYSPY_RATE = 20


@dataclass
class FlameNode:
    """One frame of the tree.  ``other_*`` are the OTHER run's counts in a diff flame (0 otherwise).

    ``value`` is the node's layout width in the flame's unit: samples for a plain flame, CPU ms per
    request for a diff flame (see :func:`diff_flame`); a node's value is at least the sum of its
    children's, so children always fit inside their parent.
    """

    name: str
    category: str
    samples: int = 0
    self_samples: int = 0
    idle_samples: int = 0
    other_samples: int = 0
    other_self_samples: int = 0
    value: float = 0.0
    children: dict[str, "FlameNode"] = field(default_factory=dict)

    @property
    def waiting(self) -> bool:
        """True when every sample through this frame is a waiting one (``--wall`` flames only)."""
        return self.samples > 0 and self.idle_samples == self.samples

    def walk(self, depth: int = 0) -> Iterator[tuple["FlameNode", int]]:
        """This node and its descendants with their depth (the root is 0), parents first."""
        stack: list[tuple[FlameNode, int]] = [(self, depth)]
        while stack:
            node, d = stack.pop()
            yield node, d
            stack.extend((c, d + 1) for c in reversed(sorted_children(node)))


def sorted_children(node: FlameNode) -> list[FlameNode]:
    """Children in drawing order: by frame text, like flamegraph.pl (stable across runs)."""
    return [node.children[k] for k in sorted(node.children)]


@dataclass(frozen=True)
class FlameSide:
    """The OTHER run of a diff flame: its id, mode, ms per sample and requests in its window."""

    run_id: str
    mode: str | None
    interval_ms: float
    requests: int


@dataclass
class Flame:
    """A flame tree and what converts its samples to time.

    ``file_samples`` counts every sample of the file (before the on-CPU, pid and category
    filters), ``skipped_lines`` the lines that were not collapsed stacks.  ``other`` is set on
    diff flames only (this flame is then RUN, ``other`` the run it is compared with).
    """

    root: FlameNode
    run_id: str
    mode: str | None
    interval_ms: float
    requests: int | None
    wall: bool = False
    pids: tuple[int, ...] = ()
    category: str | None = None
    file_samples: int = 0
    skipped_lines: int = 0
    notes: list[str] = field(default_factory=list)
    other: FlameSide | None = None

    @property
    def samples(self) -> int:
        return self.root.samples

    @property
    def is_diff(self) -> bool:
        return self.other is not None

    def ms(self, node: FlameNode) -> float:
        """CPU (or, with ``wall``, thread) ms of *node* over the window, inclusive."""
        return node.samples * self.interval_ms

    def ms_per_request(self, node: FlameNode) -> float | None:
        """*node*'s inclusive ms per request of the window; None when the run has no requests."""
        return self.ms(node) / self.requests if self.requests else None

    def other_ms_per_request(self, node: FlameNode) -> float | None:
        """Diff flames: the OTHER run's ms per request for *node*; None on plain flames."""
        if self.other is None:
            return None
        return node.other_samples * self.other.interval_ms / self.other.requests

    def delta_ms(self, node: FlameNode) -> float | None:
        """Diff flames: RUN's minus OTHER's ms per request (positive: RUN spends more)."""
        mine, theirs = self.ms_per_request(node), self.other_ms_per_request(node)
        return None if mine is None or theirs is None else mine - theirs

    def share(self, node: FlameNode) -> float:
        """*node*'s width as a fraction of the root's (samples, or ms per request in a diff)."""
        return node.value / self.root.value if self.root.value else 0.0

    def category_samples(self) -> dict[str, int]:
        """Self samples per category (every category present); waiting frames under :data:`WAITING`."""
        out = {c: 0 for c in (*CATEGORIES, WAITING)}
        for node, _ in self.root.walk():
            if node is self.root:
                continue
            self_idle = node.idle_samples - sum(c.idle_samples for c in node.children.values())
            out[WAITING] += self_idle
            out[node.category] = out.get(node.category, 0) + node.self_samples - self_idle
        return out

    def max_depth(self) -> int:
        return max(d for _, d in self.root.walk())


def _add(root: FlameNode, stack: Stack, classifier: Classifier) -> None:
    """Add *stack*'s samples along its path, creating (and classifying) the frames it is first to reach."""
    frames = stack.frames or (NO_FRAMES,)
    idle = stack.count if stack.idle else 0
    node = root
    root.samples += stack.count
    root.idle_samples += idle
    for i, frame in enumerate(frames):
        child = node.children.get(frame)
        if child is None:
            child = node.children[frame] = FlameNode(frame, classifier.classify(stack.frames[: i + 1])[0])
        node = child
        node.samples += stack.count
        node.idle_samples += idle
    node.self_samples += stack.count


def _iter_file(path: Path, counts: dict[str, int]) -> Iterator[Stack]:
    """Stream stacks; ``counts['lines']`` / ``['bad']`` count non-empty and unreadable lines."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            counts["lines"] += 1
            stack = parse_line(line)
            if stack is None:
                counts["bad"] += 1
                continue
            yield stack


def sample_rate(run: Run) -> int:
    """py-spy's samples per second for *run*: the manifest's rate, else the default of when it lacked one."""
    pyspy = _dict(_dict(run.manifest.get("instruments")).get("pyspy"))
    for value in (pyspy.get("rate_hz"), _dict(run.manifest.get("config")).get("pyspy_rate")):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return int(value)
    return OLD_DEFAULT_PYSPY_RATE


def window_requests(run: Run) -> int:
    """Client requests that started in the run's measured window (the report's ``requests``)."""
    log = read_request_log(run.requests_path)
    return len(log.window(*measured_window(run, log)))


def build_flame(run: Run, *, wall: bool = False, pids: Sequence[int] | None = None,
                category: str | None = None) -> Flame:
    """The flame tree of *run*'s py-spy samples.

    *wall* keeps waiting stacks; *pids* keeps the stacks of those processes only; *category*
    keeps the stacks the report's classification bills to that category.  Raises
    :class:`UsageError` for an unknown category or a pid without samples,
    :class:`CorruptRunError` for a samples file with no readable line, and
    :class:`AsyncprofError` when no sample is left.
    """
    if category is not None and category not in CATEGORIES:
        raise UsageError(f"unknown category {category!r}", f"use one of {', '.join(CATEGORIES)}")
    path = run.pyspy_dir / SAMPLES_FILE
    if not path.is_file():
        raise AsyncprofError(f"run {run.run_id} has no py-spy samples ({SAMPLES_FILE} is missing)", _why_no_file(run))
    packages = _dict(run.manifest.get("config")).get("app_packages")
    classifier = build_classifier(tuple(str(p) for p in packages) if isinstance(packages, list) else ())
    wanted = set(pids or ())
    root = FlameNode(ROOT_NAME, ROOT_CATEGORY)
    counts = {"lines": 0, "bad": 0}
    total = idle_total = 0
    seen_pids: dict[int, int] = {}
    try:
        for stack in _iter_file(path, counts):
            total += stack.count
            seen_pids[stack.pid] = seen_pids.get(stack.pid, 0) + stack.count
            if stack.idle:
                idle_total += stack.count
                if not wall:
                    continue
            if stack.count == 0 or (wanted and stack.pid not in wanted):
                continue
            if category is not None and classifier.classify(stack.frames)[0] != category:
                continue
            _add(root, stack, classifier)
    except OSError as exc:
        raise CorruptRunError(f"cannot read {path}: {exc}", "the run directory is damaged") from None
    if counts["lines"] and counts["bad"] == counts["lines"]:
        raise CorruptRunError(f"{path} holds no py-spy collapsed stack ({counts['bad']} unreadable lines)",
                              "the samples file is damaged; record the run again")
    if total == 0:
        raise AsyncprofError(f"run {run.run_id} has no py-spy samples ({path.name} is empty)",
                             "py-spy attached but sampled nothing: see logs/pyspy.log")
    unknown = sorted(wanted - {p for p, n in seen_pids.items() if n})
    if unknown:
        known = ", ".join(str(p) for p in sorted(seen_pids)) or "none"
        raise UsageError(f"no samples from pid {', '.join(map(str, unknown))} in run {run.run_id}",
                         f"pids with samples: {known}")
    if root.samples == 0:
        what = "on-CPU " if not wall else ""
        where = f" in category {category}" if category else ""
        hint = "try --wall" if not wall and idle_total == total else "try without the filters"
        raise AsyncprofError(f"no {what}samples{where} in run {run.run_id} ({total} samples in the file)", hint)
    requests = window_requests(run)
    flame = Flame(root=root, run_id=run.run_id, mode=_mode(run), interval_ms=1000.0 / sample_rate(run),
                  requests=requests or None, wall=wall, pids=tuple(sorted(wanted)), category=category,
                  file_samples=total, skipped_lines=counts["bad"])
    if counts["bad"]:
        flame.notes.append(f"{counts['bad']} unreadable lines of {path.name} skipped")
    if not requests:
        flame.notes.append("no client request in the measured window: no ms per request")
    for node, _ in root.walk():
        node.value = float(node.samples)
    return flame


def diff_flame(a: Flame, b: Flame) -> Flame:
    """RUN *a* against OTHER *b*, normalised per request: one tree with both runs' samples.

    Every frame of either run appears.  ``value`` (the width) is in CPU ms per request: the larger
    of the two runs' values for the frame, and at least the sum of its children's widths.  Use
    :meth:`Flame.delta_ms` for the colour (positive: *a* spends more per request).  Raises
    :class:`AsyncprofError` when either run has no requests in its window.
    """
    for f in (a, b):
        if not f.requests:
            raise AsyncprofError(f"run {f.run_id} has no client request in its measured window",
                                 "a differential flamegraph is normalised per request")
    assert a.requests and b.requests
    root = _merge(a.root, b.root)
    flame = Flame(root=root, run_id=a.run_id, mode=a.mode, interval_ms=a.interval_ms, requests=a.requests,
                  wall=a.wall, pids=a.pids, category=a.category, file_samples=a.file_samples,
                  skipped_lines=a.skipped_lines, notes=[*a.notes, *(f"{b.run_id}: {n}" for n in b.notes)],
                  other=FlameSide(b.run_id, b.mode, b.interval_ms, b.requests))
    if a.wall != b.wall:
        flame.notes.append("the two flames differ in --wall: the difference mixes waiting and running time")
    scale_a, scale_b = a.interval_ms / a.requests, b.interval_ms / b.requests
    _layout(root, scale_a, scale_b)
    return flame


def _merge(x: FlameNode | None, y: FlameNode | None) -> FlameNode:
    """A node with *x*'s counts and *y*'s as ``other_*`` (either may be missing)."""
    base = x or y
    assert base is not None
    node = FlameNode(base.name, base.category)
    if x is not None:
        node.samples, node.self_samples, node.idle_samples = x.samples, x.self_samples, x.idle_samples
    if y is not None:
        node.other_samples, node.other_self_samples = y.samples, y.self_samples
    for name in sorted({*(x.children if x else {}), *(y.children if y else {})}):
        node.children[name] = _merge(x.children.get(name) if x else None, y.children.get(name) if y else None)
    return node


def _layout(node: FlameNode, scale_a: float, scale_b: float) -> float:
    inner = sum(_layout(c, scale_a, scale_b) for c in node.children.values())
    node.value = max(node.samples * scale_a, node.other_samples * scale_b, inner)
    return node.value


def collapsed_lines(flame: Flame) -> Iterator[str]:
    """Brendan Gregg's collapsed stacks of *flame* (``frame;frame;... count``, root excluded).

    One line per frame with self samples, in tree order; the counts sum to ``flame.samples``.
    Diff flames are not representable and raise :class:`UsageError`.
    """
    if flame.is_diff:
        raise UsageError("a differential flamegraph has no collapsed form", "use --format svg with --diff")
    path: list[str] = []
    for node, depth in flame.root.walk():
        if depth == 0:
            continue
        del path[depth - 1:]
        path.append(node.name)
        if node.self_samples:
            yield f"{';'.join(path)} {node.self_samples}\n"


def _why_no_file(run: Run) -> str:
    pyspy = _dict(_dict(run.manifest.get("instruments")).get("pyspy"))
    if pyspy.get("enabled") is False:
        return "py-spy was off for this run (--no-pyspy): record it again with py-spy on"
    if isinstance(pyspy.get("error"), str):
        return f"py-spy failed: {pyspy['error']}"
    if run.manifest.get("status") in ("interrupted", "failed", "running"):
        return f"the run's status is {run.manifest['status']}: it stopped before py-spy wrote its samples"
    return "py-spy could not attach or wrote nothing: see logs/pyspy.log"


def _mode(run: Run) -> str | None:
    for block in ("server", "config"):
        value = _dict(run.manifest.get(block)).get("mode")
        if isinstance(value, str):
            return value
    return None


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}
