"""`GET /metrics`: the server's Prometheus metrics, every worker summed, in Prometheus's text format.

Families are named after the package (`<package>_`, so a copy of the kit for another environment
names its own), by Prometheus's conventions (units in names, `_total` counters):

- `<package>_sessions_open{door}` and `<package>_sessions_limit`: sessions held now, and the most the
  server holds (`MAX_CONCURRENT_ENVS` times the workers);
- `<package>_sessions_{opened,closed,reaped}_total{door}`, `<package>_sessions_refused_total{door,reason}`
  (capacity, token, origin, payload, expired: a request for a session the server no longer holds);
- `<package>_steps_total{door}`: steps answered with their observation (`step` messages on `/ws`,
  `tools/call` requests on the MCP doors, `POST /step` on door `http`; one answered with an error
  counts in `<package>_errors_total{code}` instead), `<package>_step_seconds{door}` (from the
  request's arrival to its answer, in the server), `<package>_request_size_bytes{door}`;
- `<package>_reward`: a histogram of the rewards the environment handed out (its `_sum` is their total);
- `<package>_build_info{version,openenv_version}`, and `<package>_process_*{pid}` of each worker
  (CPU seconds, resident memory, open file descriptors).

Each worker counts in plain numbers of its own, changed only by its event loop (no lock, no file,
no system call on the step path; children bound to their labels when the app is made). A scrape of
any worker adds up every worker's: its own, and its peers' asked over their sockets (`workers.py`,
`/metrics?worker=this`). Under `server --workers N` every worker also saves its counts in the run
directory each second and as it stops, so that a worker uvicorn replaced still counts (up to its
last save) and is never counted twice; its gauges go with it. prometheus-client renders the
families and reads the process figures.
`<PREFIX>METRICS=false` leaves all of it out (no route, no counting).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from bisect import bisect_left
from collections.abc import Iterator
from contextvars import ContextVar
from importlib import metadata
from itertools import accumulate
from time import perf_counter
from typing import Any

import anyio
from fastapi import FastAPI, Response
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, Observation
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .package import PACKAGE, package_version
from .sessions import MCP_PATH, SESSION_QUERY, Door
from .settings import PREFIX
from .standard_mcp import is_standard_request
from .workers import Workers, forwarded

NAMESPACE = PACKAGE
METRICS_PATH = "/metrics"
METRICS_SETTING = f"{PREFIX}METRICS"
STEP_PATH = "/step"
METERED_HTTP = (MCP_PATH, STEP_PATH)
HTTP_DOOR = "http"  # OpenEnv's stateless HTTP routes, and every other one
DOORS = (*(door.value for door in Door), HTTP_DOOR)
REASONS = ("capacity", "token", "origin", "payload", "expired")
STEP_BUCKETS = (50e-6, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
REWARD_BUCKETS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 100.0, 1000.0)  # none below 0: then `_sum` is exposed
STEP_FRAMES = ('{"type": "step"', '{"type":"step"')  # a step message as json.dumps and pydantic write it
TYPED_FRAMES = ('{"type": "', '{"type":"')  # any other message whose type comes first: not a step
ERROR_FRAMES = ('{"type": "error"', '{"type":"error"')
TOOL_CALL = "tools/call"
PAYLOAD_TOO_BIG = 1009  # the WebSocket close code of a frame past uvicorn's ws_max_size
SAVE_EVERY_S = 1.0  # how often a worker saves its counts (those of a worker that dies count up to then)


class Count:
    """A counter's or gauge's value in this worker: a float, changed only in its event loop (no lock)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class Tally:
    """A histogram's buckets and sum in this worker: one `bisect` and two additions per observation."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class Family:
    """One metric family of this worker: its children by label values, each made once and kept."""

    def __init__(
        self, name: str, kind: str, doc: str, labels: tuple[str, ...] = (), bounds: tuple[float, ...] = ()
    ) -> None:
        self.name, self.kind, self.doc, self.labelnames, self.bounds = name, kind, doc, labels, bounds
        self.children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Tally(self.bounds) if self.kind == "histogram" else Count()
        return child

    def snapshot(self) -> list[Any]:
        """The children's values, as JSON."""
        if self.kind == "histogram":
            return [[list(values), [*child.counts, child.sum]] for values, child in self.children.items()]
        return [[list(values), child.value] for values, child in self.children.items()]


class DoorMeter:
    """One door's children, bound to its label once: steps, their time, request sizes, refusals."""

    def __init__(self, metrics: Metrics, door: str) -> None:
        self.steps = metrics.steps.labels(door)
        self.seconds = metrics.step_seconds.labels(door)
        self.size = metrics.request_size.labels(door)
        self.refused = {reason: metrics.refused_total.labels(door, reason) for reason in REASONS}


class Metrics:
    """The families of one worker, counted on the step path in plain floats (no lock, no system call), and
    read at a scrape: this worker's, and under `--workers` every other worker's, asked over its socket
    (`workers.py`); each worker also saves its counts to the run directory every `SAVE_EVERY_S`, so those
    of a worker that exited still count (its gauges do not)."""

    def __init__(self, limit: int, workers: Workers | None = None) -> None:
        self.workers = workers
        run_dir = workers.run_dir if workers is not None else None
        self.saved = run_dir / "metrics" if run_dir is not None else None
        name = NAMESPACE
        self.families: list[Family] = []

        def family(
            metric: str, kind: str, doc: str, labels: tuple[str, ...] = (), bounds: tuple[float, ...] = ()
        ) -> Family:
            made = Family(f"{name}_{metric}", kind, doc, labels, bounds)
            self.families.append(made)
            return made

        self.open = family("sessions_open", "gauge", "Sessions held now, by door", ("door",))
        self.limit = family("sessions_limit", "gauge", "The most sessions the server holds (all its workers)")
        self.opened = family("sessions_opened", "counter", "Sessions opened, by door", ("door",))
        self.closed = family("sessions_closed", "counter", "Sessions ended (reaped included), by door", ("door",))
        self.reaped = family("sessions_reaped", "counter", "Sessions ended after SESSION_TIMEOUT_S idle", ("door",))
        self.refused_total = family(
            "sessions_refused", "counter", "Requests refused at a door, by door and reason", ("door", "reason")
        )
        self.steps = family("steps", "counter", "Steps answered with an observation, by door", ("door",))
        self.errors = family("errors", "counter", "Errors answered, by code", ("code",))
        self.step_seconds = family(
            "step_seconds", "histogram", "Time from a step's arrival to its answer, in the server", ("door",),
            STEP_BUCKETS,
        )  # fmt: skip
        self.request_size = family(
            "request_size_bytes", "histogram", "Size of request bodies and WebSocket text frames", ("door",),
            SIZE_BUCKETS,
        )  # fmt: skip
        self.reward = family("reward", "histogram", "Rewards handed out", (), REWARD_BUCKETS)
        self.doors = {door: DoorMeter(self, door) for door in DOORS}
        self.open_by_door = {door: self.open.labels(door) for door in DOORS}
        self.opened_by_door = {door: self.opened.labels(door) for door in DOORS}
        self.closed_by_door = {door: self.closed.labels(door) for door in DOORS}
        self.reaped_by_door = {door: self.reaped.labels(door) for door in DOORS}
        self.rewards = self.reward.labels()
        self.threads_lock = threading.Lock()  # for rewards counted in an environment's own thread (sync step)
        self.calling_tool: ContextVar[bool] = ContextVar(f"{name}_calling_tool", default=False)
        self.limit.labels().inc(limit)
        self.build = GaugeMetricFamily(
            f"{name}_build_info", "The package's version and OpenEnv's", labels=["version", "openenv_version"]
        )
        self.build.add_metric([package_version(), openenv_version()], 1.0)

    # --- what the doors report ------------------------------------------------------------------

    def opened_session(self, door: str) -> None:
        self.opened_by_door[door].inc()
        self.open_by_door[door].inc()

    def closed_session(self, door: str) -> None:
        self.closed_by_door[door].inc()
        self.open_by_door[door].dec()

    def reaped_session(self, door: str) -> None:
        self.reaped_by_door[door].inc()

    def frame_meter(self, scope: Scope) -> FrameMeter | None:
        """What counts the frames of a WebSocket session (none for one another worker handed over: it counted it)."""
        return None if forwarded(scope) else FrameMeter(self, scope)

    def refused(self, door: str, reason: str) -> None:
        self.doors[door].refused[reason].inc()

    def refused_request(self, scope: Scope, reason: str) -> None:
        """A request refused before any door took it (access, bounds): counted at the door it was for."""
        if not forwarded(scope):
            self.refused(door_of(scope), reason)

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def rewarded(self, reward: Any) -> None:
        if isinstance(reward, (int, float)) and not isinstance(reward, bool):
            self.rewards.observe(reward)

    def stepped(self, reward: Any) -> None:
        """A step of the environment's own: its reward, unless a tool call took the step (counted there)."""
        if not self.calling_tool.get():
            self.rewarded(reward)

    def stepped_in_thread(self, reward: Any) -> None:
        """`stepped` from an environment's thread (its sync `step`), which the event loop does not hold."""
        with self.threads_lock:
            self.stepped(reward)

    # --- a scrape -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """This worker's values, as JSON: what it answers its peers, and what it saves."""
        return {"pid": os.getpid(), "families": {family.name: family.snapshot() for family in self.families}}

    async def every_worker(self) -> list[tuple[dict[str, Any], bool]]:
        """Each worker's snapshot, and whether it is alive: this one's, its peers' (asked over their
        sockets), and the saved ones of workers gone (their counts, not their gauges)."""
        found = [(self.snapshot(), True)]
        if self.workers is None:
            return found
        answered = {os.getpid()}
        for pid, snapshot in await self.workers.ask_each(f"{METRICS_PATH}?worker=this"):
            answered.add(pid)
            found.append((snapshot, True))
        if self.saved is not None:
            for path in self.saved.glob("*.json"):
                if path.stem.isdigit() and int(path.stem) not in answered:
                    with contextlib.suppress(OSError, ValueError):
                        found.append((json.loads(path.read_text()), alive(int(path.stem))))
        return found

    async def scrape(self) -> bytes:
        """Prometheus's text format of every worker, summed (gauges over the live ones alone)."""
        workers = await self.every_worker()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Exposition(self, workers))
        return generate_latest(registry)

    def save(self) -> None:
        """Save this worker's values (so that they count after it exits), atomically."""
        if self.saved is None:
            return
        self.saved.mkdir(exist_ok=True)
        path = self.saved / f"{os.getpid()}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.snapshot()))
        temporary.replace(path)

    async def save_forever(self) -> None:
        while True:
            self.save()
            await anyio.sleep(SAVE_EVERY_S)

    def stop(self) -> None:
        """This worker is ending: its counts are saved, its gauges leave the sum."""
        with contextlib.suppress(OSError):
            self.save()


class Exposition(Collector):
    """The families of every worker summed, the build, and each worker's process metrics."""

    def __init__(self, metrics: Metrics, workers: list[tuple[dict[str, Any], bool]]) -> None:
        self.metrics = metrics
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        for family in self.metrics.families:
            yield self.summed(family)
        yield self.metrics.build
        yield from process_metrics(sorted(snapshot["pid"] for snapshot, live in self.workers if live))

    def summed(self, family: Family) -> Metric:
        totals: dict[tuple[str, ...], Any] = {}
        for snapshot, live in self.workers:
            if family.kind == "gauge" and not live:
                continue
            for values, value in snapshot["families"].get(family.name, []):
                key = tuple(values)
                if family.kind == "histogram":
                    previous = totals.get(key, [0.0] * len(value))
                    totals[key] = [a + b for a, b in zip(previous, value, strict=True)]
                else:
                    totals[key] = totals.get(key, 0.0) + value
        labels = list(family.labelnames)
        if family.kind == "gauge":
            gauge = GaugeMetricFamily(family.name, family.doc, labels=labels)
            for key, total in totals.items():
                gauge.add_metric(list(key), total)
            return gauge
        if family.kind == "counter":
            counter = CounterMetricFamily(family.name, family.doc, labels=labels)
            for key, total in totals.items():
                counter.add_metric(list(key), total)
            return counter
        histogram = HistogramMetricFamily(family.name, family.doc, labels=labels)
        for key, total in totals.items():
            cumulative = list(accumulate(total[:-1]))
            bounds = [*(floatToGoString(bound) for bound in family.bounds), "+Inf"]  # type: ignore[no-untyped-call]
            histogram.add_metric(list(key), list(zip(bounds, cumulative, strict=True)), sum_value=total[-1])
        return histogram


def process_metrics(pids: list[int]) -> Iterator[Metric]:
    """prometheus-client's process metrics (`/proc`) of each of `pids`, labelled with the pid."""
    merged: dict[str, Metric] = {}
    for pid in pids:
        collector = ProcessCollector(namespace=NAMESPACE, pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
        for family in collector.collect():
            into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            for sample in family.samples:
                into.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
    yield from merged.values()


def openenv_version() -> str:
    try:
        return metadata.version("openenv")
    except metadata.PackageNotFoundError:
        return "unknown"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def door_of(scope: Scope) -> str:
    """The door a request is for: its path, and for `/mcp` its dialect."""
    path = scope["path"]
    if scope["type"] == "websocket":
        return Door.MCP_OPENENV.value if path == MCP_PATH or attaches(scope) else Door.WS.value
    if path == MCP_PATH:
        return Door.MCP_STANDARD.value if is_standard_request(scope) else Door.MCP_OPENENV.value
    return HTTP_DOOR


def attaches(scope: Scope) -> bool:
    """Whether a `/ws` handshake attaches to an OpenEnv MCP session (`?session_id=`)."""
    return SESSION_QUERY.encode() in scope.get("query_string", b"")


# --- counting steps, at the doors ---------------------------------------------------------------


class FrameMeter:
    """What the frames of one WebSocket session count (its steps, their time, its frames' sizes, the errors it
    is answered): told of each frame by the session's door (`sessions.py`), which sees every one already."""

    __slots__ = ("error", "jsonrpc", "meter", "seconds", "size", "started", "steps")

    def __init__(self, metrics: Metrics, scope: Scope) -> None:
        self.meter = metrics.doors[door_of(scope)]
        self.size, self.seconds, self.steps = self.meter.size, self.meter.seconds, self.meter.steps
        self.error = metrics.error
        self.jsonrpc = scope["path"] == MCP_PATH
        self.started = 0.0

    def received(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is not None:
                self.size.observe(len(text))
                if text.startswith(STEP_FRAMES) or is_step_frame(text, self.jsonrpc):
                    self.started = perf_counter()
        elif kind == "websocket.disconnect" and message.get("code") == PAYLOAD_TOO_BIG:
            self.meter.refused["payload"].inc()

    def sent(self, message: Message) -> None:
        if message["type"] != "websocket.send":
            return
        started, self.started = self.started, 0.0
        text = message.get("text")
        if text is not None and text.startswith(ERROR_FRAMES):
            code = error_code(text)
            if code is not None:
                self.error(code)
        elif started:
            self.seconds.observe(perf_counter() - started)
            self.steps.value += 1

    def sending(self, send: Send) -> Send:
        """`send` that tells this meter of each frame (for the frames a door sends itself: refusals, endings)."""

        async def send_metered(message: Message) -> None:
            self.sent(message)
            await send(message)

        return send_metered


class Metering:
    """ASGI middleware (inside the access check and the bounds): steps, their time and request sizes of the
    HTTP doors, and the errors answered (WebSocket sessions are metered by `FrameMeter`). A request another
    worker handed over was counted by that worker."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["method"] == "POST" and scope["path"] in METERED_HTTP and not forwarded(scope):
            await self.http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        meter = self.metrics.doors[door_of(scope)]
        first = await receive()  # the bounds (limits.py) read the whole body already: one message
        body: bytes = first.get("body", b"")
        meter.size.observe(len(body))
        step = scope["path"] == STEP_PATH or is_tool_call(body)
        started = perf_counter()
        replayed = False
        served = True

        async def receive_replayed() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        async def send_metered(message: Message) -> None:
            nonlocal served
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.metrics.error(f"HTTP_{message['status']}")
                served = False
            elif step and served and message["type"] == "http.response.body" and not message.get("more_body", False):
                meter.seconds.observe(perf_counter() - started)
                meter.steps.inc()
            await send(message)

        await self.app(scope, receive_replayed, send_metered)


def is_step_frame(text: str, jsonrpc: bool) -> bool:
    """Whether a WebSocket frame asks for a step: a `step` message on `/ws` (read from its first key when
    that is its type, as every OpenEnv client writes it), a `tools/call` in JSON-RPC."""
    if text.startswith(STEP_FRAMES):
        return True
    if TOOL_CALL not in text and (jsonrpc or text.startswith(TYPED_FRAMES) or '"step"' not in text):
        return False
    try:
        message = json.loads(text)
    except ValueError:
        return False
    if not isinstance(message, dict):
        return False
    if message.get("type") == "step":
        return True
    request = message.get("data") if message.get("type") == "mcp" else message
    return isinstance(request, dict) and request.get("method") == TOOL_CALL


def is_tool_call(body: bytes) -> bool:
    """Whether a JSON-RPC request body is a `tools/call`."""
    if TOOL_CALL.encode() not in body:
        return False
    try:
        request = json.loads(body)
    except ValueError:
        return False
    return isinstance(request, dict) and request.get("method") == TOOL_CALL


def error_code(text: str) -> str | None:
    """The code of an OpenEnv error frame (`VALIDATION_ERROR`, `CAPACITY_REACHED`, ...)."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    data = message.get("data") if isinstance(message, dict) else None
    return str(data.get("code", "UNKNOWN")) if isinstance(data, dict) else None


# --- rewards, where the environment hands them out ----------------------------------------------


def metered(env: type[Environment[Any, Any, Any]], metrics: Metrics) -> type[Environment[Any, Any, Any]]:
    """`env` whose steps' rewards are counted, once each: OpenEnv awaits `step_async` when an environment
    overrides it (which may call `step`), and runs `step` in the session's thread otherwise, so the one of
    them OpenEnv calls is wrapped. Tool calls are counted where they run (`Tools.call`)."""
    rewarded, rewarded_in_thread = metrics.stepped, metrics.stepped_in_thread
    calling_tool, observe_reward, env_step_async = metrics.calling_tool, metrics.rewards.observe, env.step_async

    def step(self: Any, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        observation: Observation = super(wrapper, self).step(action, timeout_s=timeout_s, **kwargs)
        rewarded_in_thread(observation.reward)
        return observation

    async def step_async(self: Any, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        observation: Observation = await env_step_async(self, action, timeout_s, **kwargs)
        reward = observation.reward
        if type(reward) is float and not calling_tool.get():  # what `rewarded` counts, checked inline: each step
            observe_reward(reward)
        else:
            rewarded(reward)
        return observation

    methods: dict[str, Any] = {"__doc__": env.__doc__, "__qualname__": env.__qualname__, "__module__": env.__module__}
    if env.step_async is Environment.step_async:
        methods["step"] = step
    else:
        methods["step_async"] = step_async
    wrapper: type[Any] = type(env.__name__, (env,), methods)
    return wrapper


def add_metrics_route(app: FastAPI, metrics: Metrics) -> None:
    """`GET /metrics`: Prometheus's text format, of every worker; `?worker=this`: this worker's values (JSON)."""

    @app.get(METRICS_PATH, tags=["Health"], summary="Prometheus metrics of the whole server (every worker)")
    async def scrape(worker: str | None = None) -> Response:
        if worker == "this":
            return Response(json.dumps(metrics.snapshot()), media_type="application/json")
        return Response(await metrics.scrape(), media_type=CONTENT_TYPE_LATEST)


__all__ = ["METRICS_SETTING", "FrameMeter", "Metering", "Metrics", "add_metrics_route", "door_of", "metered"]
