"""Run knowshift commands in child processes, kill them with SIGKILL at chosen points, or hold
them at a point while another process runs.

Each command runs in a process forked from one warm "zygote" that has already imported torch,
transformers and knowshift, so a command costs its own work and not ~5 s of imports. The child
reports every durable write it is about to make (an `os.replace`, a database write, a metrics
line, ...) on a pipe before making it. A command told to die after its N-th event gets SIGKILL
there, at once or from a timer a random delay later, so kills land before, inside and after
writes. The child sends the signal itself: a kill from the test would arrive late (the test
reads the events behind the child) and could race the child's own exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Writes whose interruption could leave a half-done artefact behind (a kill at once or ~1 ms
# after a write_text lands inside it), and the probe's compute.
EVENTS = (
    "os:replace", "shutil:rmtree",
    "knowshift.store.db:Store.put_probe_results", "knowshift.store.db:Store.put_train_record",
    "knowshift.store.db:Store.put_study_run", "knowshift.store.db:Store.put_analysis",
    "knowshift.store.db:Store.register_run", "knowshift.probe.run:run_block",
    "knowshift.train.loop:_keep", "knowshift.train.loop:_save_checkpoint",
    "knowshift.study.stages:StageLog.mark", "pathlib:Path.write_text", "pathlib:Path.write_bytes",
)  # fmt: skip

ZYGOTE = r"""
import functools, importlib, json, os, select, signal, sys, threading, time, traceback
import torch, transformers, accelerate, peft, safetensors.torch, tqdm, yaml
import transformers.models.llama.modeling_llama
import knowshift.cli, knowshift.probe.run, knowshift.train.run, knowshift.study.runner
import knowshift.mixtures, knowshift.evaluate.qa, knowshift.analysis.collapse, knowshift.report

CHANNEL = os.dup(1)

def say(line):
    os.write(CHANNEL, (line + "\n").encode())

def hook(spec, before):
    module, _, path = spec.partition(":")
    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    real = getattr(owner, name)

    @functools.wraps(real)
    def hooked(*args, **kwargs):
        before(args)
        return real(*args, **kwargs)

    setattr(owner, name, hooked)

def counted(spec, args, kill):
    # Report the event; at the chosen one, SIGKILL this process now or after the delay, or,
    # for a whole-file write, once a prefix of the content has reached the file.
    counted.n += 1
    say(f"event {os.getpid()} {spec}")
    if not kill or counted.n != kill[0]:
        return
    _, delay, torn = kill
    if torn is not None and spec.startswith("pathlib:Path.write_"):
        data = args[1]
        with open(args[0], "wb" if isinstance(data, bytes) else "w") as handle:
            handle.write(data[: int(torn * len(data))])
        os.kill(os.getpid(), signal.SIGKILL)
    if delay == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()

counted.n = 0

def pause(go):
    # At the first call: say so with a file beside `go`, then wait until `go` exists (or give
    # up after 5 minutes, so a test that failed meanwhile leaves no process waiting for ever).
    if not os.path.exists(f"{go}.{os.getpid()}"):
        open(f"{go}.{os.getpid()}", "w").close()
        deadline = time.monotonic() + 300
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)

def child(request):
    pid = os.getpid()
    say(f"pid {pid}")
    os.chdir(request["cwd"])
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    status = 1
    try:
        for module, name, value in request["patches"]:
            setattr(importlib.import_module(module), name, value)
        for spec in request["events"]:
            hook(spec, lambda args, spec=spec: counted(spec, args, request["kill"]))
        if request["pause"]:
            spec, go = request["pause"]
            hook(spec, lambda args: pause(go))
        status = knowshift.cli.main(request["argv"])
    except BaseException:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

say("ready")
children, pending = set(), b""
while True:
    ready, _, _ = select.select([0], [], [], 0.01 if children else None)
    if ready:
        data = os.read(0, 65536)
        if not data:
            break
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            pid = os.fork()
            if pid == 0:
                child(json.loads(line))
            children.add(pid)
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        children.discard(pid)
        say(f"exit {pid} {os.waitstatus_to_exitcode(status)}")
"""


@dataclass(frozen=True)
class Outcome:
    """How one command ended: its exit status (-9 when killed) and the events it reported."""

    status: int
    events: tuple[str, ...]

    @property
    def killed(self) -> bool:
        return self.status == -signal.SIGKILL


class Zygote:
    """A warm process that forks one child per command; use it as a context manager."""

    def __init__(self, env: dict[str, str], timeout: float = 300):
        self.timeout = timeout
        self.events: defaultdict[int, list[str]] = defaultdict(list)
        self.exits: dict[int, int] = {}
        self.running: set[int] = set()  # started, not yet reported ended
        self.pending = b""  # read from the zygote, not yet a whole line
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                 "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1", **env},
        )  # fmt: skip
        assert self._line() == "ready"

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc_info) -> None:
        for pid in self.running:  # left running by a failed test
            with contextlib.suppress(ProcessLookupError):  # ended since, unread
                os.kill(pid, signal.SIGKILL)
        self.process.stdin.close()
        self.process.kill()
        self.process.wait()

    def start(self, argv: list[str], cwd: Path, *, patches: tuple = (),
              kill: Kill | None = None, pause: tuple[str, Path] | None = None) -> int:  # fmt: skip
        """Start `knowshift argv` in `cwd` (output appended to cwd/log.txt); returns its pid.
        `patches` are (module, name, value) set first; `kill` says where it dies; `pause` =
        (hook, go file) holds it at the hook's first call, with a file `go.PID` saying so, until
        `go` exists."""
        request = {"argv": argv, "cwd": str(cwd), "log": str(cwd / "log.txt"), "patches": list(patches),
                   "events": list(EVENTS), "kill": kill, "pause": [pause[0], str(pause[1])] if pause else None}  # fmt: skip
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()
        while not (line := self._line()).startswith("pid "):
            self._note(line)
        pid = int(line.removeprefix("pid "))
        self.running.add(pid)
        return pid

    def wait(self, pid: int) -> Outcome:
        """Wait for a started command to end."""
        while pid not in self.exits:
            self._note(self._line())
        return Outcome(self.exits.pop(pid), tuple(self.events.pop(pid, ())))

    def run(self, argv: list[str], cwd: Path, *, patches: tuple = (),
            kill: Kill | None = None) -> Outcome:  # fmt: skip
        """Start a command and wait for it (see `start`)."""
        return self.wait(self.start(argv, cwd, patches=patches, kill=kill))

    def _note(self, line: str) -> None:
        kind, pid, *rest = line.split(" ")
        if kind == "event":
            self.events[int(pid)].append(rest[0])
        elif kind == "exit":
            self.exits[int(pid)] = int(rest[0])
            self.running.discard(int(pid))

    def _line(self) -> str:
        # Read the pipe unbuffered: a line already read into a buffer would not wake select.
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
            assert ready, f"no word from the commands in {self.timeout} s"
            data = os.read(self.process.stdout.fileno(), 65536)
            assert data, "the zygote died"
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode().strip()


# At the n-th event: after a delay (s); at a whole-file write, once this share of it is written.
Kill = tuple[int, float, float | None]


class KillPlan:
    """Where to kill a command, given the `events` of an uninterrupted run of it.

    A kill point is a kind of event, one of its occurrences, and a delay: at once, within ~1 ms
    or within 50 ms, or, at a whole-file write, after a random share of it. The first attempt
    in a fresh folder takes the kinds in turn (shuffled each round), so even a write that
    happens once per run is hit within a few runs; later attempts take any kind at random.
    """

    def __init__(self, events: Sequence[str], rng: random.Random):
        self.events, self.rng = tuple(events), rng
        self.kinds = sorted(set(self.events))
        self.queue: list[str] = []

    def first(self) -> Kill:
        if not self.queue:
            self.queue = self.rng.sample(self.kinds, len(self.kinds))
        return self._at(self.queue.pop())

    def later(self) -> Kill:
        return self._at(self.rng.choice(self.kinds))

    def _at(self, kind: str) -> Kill:
        n = self.rng.choice([i for i, event in enumerate(self.events, 1) if event == kind])
        delay = self.rng.choice([0.0, self.rng.uniform(0, 0.001), self.rng.uniform(0, 0.05)])
        return n, delay, self.rng.random()


def run_until_done(zygote: Zygote, argv: list[str], cwd: Path, plan: KillPlan, kills_left: int,
                   *, patches: tuple = (), after_kill: Callable[[], None] | None = None) -> int:  # fmt: skip
    """Run a command in a fresh folder, killing it where `plan` says (at most `kills_left`
    times) and rerunning it until it completes; returns the number of kills. `after_kill`
    checks what a kill left behind."""
    kills = 0
    while True:
        kill = (plan.later() if kills else plan.first()) if kills < kills_left else None
        outcome = zygote.run(argv, cwd, patches=patches, kill=kill)
        if outcome.status == 0:
            return kills
        assert outcome.killed, f"knowshift {argv[0]} failed ({outcome.status}): {tail(cwd)}"
        kills += 1
        if after_kill:
            after_kill()


def tail(cwd: Path) -> str:
    """The end of the commands' output in `cwd`."""
    return (cwd / "log.txt").read_text(errors="replace")[-3000:]
