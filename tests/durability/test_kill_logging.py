"""SIGKILL a logging process at random points: every event acknowledged by flush() survives.

Each kill point is drawn from a seed printed on failure; set BRIDGE_TEST_KILLS for more
rounds (CI runs 20) and BRIDGE_TEST_SEED to replay one.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from bridge.spool.reader import list_runs

CHILD = textwrap.dedent("""
    import sys, bridge
    spool, durability = sys.argv[1], sys.argv[2]
    run = bridge.init(project="kill", dir=spool, sync="offline", durability=durability)
    print("RUN", run.id, flush=True)
    step = 0
    while True:
        run.log({"loss": step * 0.5, "acc": 1.0 / (step + 1)}, step=step)
        if step % 97 == 0:
            run.flush()
            print("FLUSHED", step, flush=True)
        step += 1
""")

ROUNDS = int(os.environ.get("BRIDGE_TEST_KILLS", "50"))
BASE_SEED = int(os.environ.get("BRIDGE_TEST_SEED", random.SystemRandom().randrange(1 << 30)))


def _kill_once(tmp_path, seed: int, durability: str) -> tuple[int, int]:
    rng = random.Random(seed)
    spool = tmp_path / f"spool-{seed}"
    wait_for = rng.randint(1, 40)  # flush acknowledgements to see before the kill
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(spool), durability],
                            stdout=subprocess.PIPE, text=True)
    run_id = None
    acked = -1
    seen = 0
    try:
        for line in proc.stdout:
            word, value = line.split()
            if word == "RUN":
                run_id = value
            else:
                acked = int(value)
                seen += 1
                if seen >= wait_for:
                    break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert run_id is not None
    files = sorted((spool / "spool").glob("*.db"))
    assert len(files) == 1
    conn = sqlite3.connect(files[0])
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute(
        "SELECT step, count(*) FROM events WHERE run_id=? AND kind='metric' GROUP BY step "
        "ORDER BY step", (run_id,)).fetchall()
    conn.close()
    steps = [s for s, n in rows]
    assert all(n == 2 for _, n in rows), "a log() call was committed partially"
    assert steps == list(range(len(steps))), "committed steps must be a prefix"
    assert steps and steps[-1] >= acked, f"acknowledged step {acked} lost (have {steps[-1:]})"
    rec = list_runs(spool)[0]
    assert rec.status == "RUNNING"  # SIGKILL leaves no chance to record an end
    return acked, steps[-1]


@pytest.mark.parametrize("durability", ["buffered", "commit"])
def test_sigkill_keeps_every_flushed_event(tmp_path, durability):
    rounds = ROUNDS if durability == "buffered" else max(5, ROUNDS // 4)
    beyond = []
    for i in range(rounds):
        seed = BASE_SEED + i
        try:
            acked, last = _kill_once(tmp_path, seed, durability)
        except AssertionError as exc:
            raise AssertionError(f"{exc} (replay with BRIDGE_TEST_SEED={seed} "
                                 f"BRIDGE_TEST_KILLS=1)") from exc
        beyond.append(last - acked)
    print(f"steps committed beyond the last acknowledged flush: {beyond}")


def test_sigterm_in_a_tight_loop_keeps_what_was_flushed(tmp_path):
    """SIGTERM while the loop logs flat out (the main thread may be mid-commit): the process
    exits, the run is KILLED, every flushed step is there and the file is sound."""
    code = textwrap.dedent("""
        import sys, bridge
        run = bridge.init(project="term", dir=sys.argv[1], sync="offline", max_queue=1000)
        step = 0
        while True:
            run.log({"x": float(step)}, step=step)
            if step % 5000 == 0:
                run.flush()
                print("FLUSHED", step, flush=True)
            step += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    acked = -1
    for line in proc.stdout:
        acked = int(line.split()[1])
        if acked >= 20_000:
            break
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    rec = list_runs(tmp_path)[0]
    assert rec.status == "KILLED"
    conn = sqlite3.connect(rec.files[0].path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    steps = [s for (s,) in conn.execute("SELECT step FROM events WHERE kind='metric' ORDER BY seq")]
    assert steps == list(range(len(steps))) and steps[-1] >= acked


def test_sigterm_finishes_the_run_as_killed(tmp_path):
    code = textwrap.dedent("""
        import faulthandler, signal, sys, bridge
        faulthandler.register(signal.SIGUSR1)  # the test dumps our stacks if we hang
        run = bridge.init(project="term", dir=sys.argv[1], sync="offline")
        for i in range(10):
            run.log({"x": float(i)})
        print("READY", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY"
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        masks = _signal_masks(proc.pid)
        proc.send_signal(signal.SIGUSR1)
        try:
            proc.wait(timeout=2)  # let faulthandler write the stacks
        except subprocess.TimeoutExpired:
            pass
        proc.kill()
        raise AssertionError(f"no exit after SIGTERM; signal masks per thread:\n{masks}\n"
                             f"stacks:\n{proc.communicate()[1]}")
    assert code == 128 + signal.SIGTERM, proc.stderr.read()
    rec = list_runs(tmp_path)[0]
    assert rec.status == "KILLED"
    conn = sqlite3.connect(rec.files[0].path)
    assert conn.execute("SELECT count(*) FROM events WHERE kind='metric'").fetchone()[0] == 10


def _signal_masks(pid: int) -> str:
    """Each thread's blocked, ignored and caught signals (hex), to tell why one was missed."""
    lines = []
    try:
        for tid in sorted(os.listdir(f"/proc/{pid}/task")):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            lines.append(f"  {tid} {fields['Name'].strip()}: " + ", ".join(
                f"{k}={fields[k].strip()}" for k in ("SigBlk", "SigIgn", "SigCgt")))
    except OSError as exc:
        lines.append(f"  cannot read /proc/{pid}: {exc}")
    return "\n".join(lines)


def _blocked_signals(native_id: int) -> set[int]:
    with open(f"/proc/self/task/{native_id}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigBlk:"))
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/task")
def test_bridge_threads_leave_signals_to_the_main_thread(tmp_path):
    """Why SIGTERM always reaches a main thread blocked in a system call: the kernel gives a
    process signal to any thread not blocking it, and only a signal landing on the main
    thread interrupts its read(). Every thread bridge starts blocks them."""
    import threading

    import bridge

    run = bridge.init(project="sig", dir=tmp_path, sync="background", system_metrics=1.0,
                      backends=[{"name": "memory", "store": "sig"}])
    try:
        run.log({"x": 1.0})
        threads = {t.name: t for t in threading.enumerate() if t.name.startswith("bridge-")}
        assert {"bridge-spool-writer", "bridge-system-metrics",
                "bridge-background-sync"} <= set(threads)
        for name, thread in threads.items():
            if thread.native_id is None or not thread.is_alive():
                continue
            try:
                blocked = _blocked_signals(thread.native_id)
            except FileNotFoundError:
                continue  # ended meanwhile (the one-shot system-info thread)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                assert sig in blocked, f"{name} would take {sig.name} from the main thread"
        assert signal.SIGTERM not in _blocked_signals(threading.main_thread().native_id)
    finally:
        run.finish(timeout=30)


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_bridge_threads_are_born_blocking_signals():
    """No window after start() where a bridge thread could take a signal: the mask is the
    thread's from its first instruction (seen by a trace hook that runs before its target)."""
    import threading

    from bridge.threads import start_thread

    seen: list[set] = []

    def tracer(frame, event, arg):
        if threading.current_thread().name == "bridge-probe" and not seen:
            seen.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
        return None

    threading.settrace(tracer)
    try:
        start_thread(lambda: None, "bridge-probe").join(5)
    finally:
        threading.settrace(None)
    assert seen and signal.SIGTERM in seen[0] and signal.SIGINT in seen[0]
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # ours restored


def test_an_interrupt_inside_a_commit_waits_for_it(tmp_path):
    """A signal handler's exception (SIGTERM, Ctrl-C) never lands between a batch's COMMIT
    and its bookkeeping: it is raised when the commit is done, so the batch is written once."""
    import bridge
    from bridge.spool.writer import defer_if_committing

    # The writer thread sleeps a minute between commits: this thread makes the commit.
    run = bridge.init(project="defer", dir=tmp_path, sync="offline", flush_interval=60)
    writer = run._writer
    real = writer._insert_rows
    fired: list[bool] = []

    class Interrupt(BaseException):
        pass

    def insert_then_signal(rows, width):
        real(rows, width)
        if not fired:  # as if SIGTERM arrived here, mid-transaction
            fired.append(defer_if_committing(lambda: (_ for _ in ()).throw(Interrupt())))

    writer._insert_rows = insert_then_signal
    for step in range(100):
        run.log({"x": float(step)}, step=step)
    with pytest.raises(Interrupt):
        writer.commit_pending()
    assert fired == [True]
    writer._insert_rows = real
    run.finish()
    conn = sqlite3.connect(writer.path)
    steps = [s for (s,) in conn.execute("SELECT step FROM events WHERE kind='metric' ORDER BY seq")]
    assert steps == list(range(100))  # committed once, not retried


_STUCK_MAIN = """
    import ctypes, signal, sys, threading, bridge
    chained = []
    signal.signal(signal.SIGTERM, lambda s, f: chained.append(s))  # a framework's handler
    run = bridge.init(project="term", dir=sys.argv[1], sync="offline")
    for i in range(10):
        run.log({"x": float(i)})
    run.flush()
    libc = ctypes.CDLL(None)
    mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER on glibc
    libc.pthread_mutex_lock(mutex)
    print("READY", flush=True)
    # A wait that signals do not interrupt (a normal mutex locked twice by one thread): the
    # SIGTERM below is noted by the interpreter's C handler, and the Python handler never
    # gets to run in this thread.
    libc.pthread_mutex_lock(mutex)
"""


def test_sigterm_ends_a_main_thread_stuck_in_a_system_call(tmp_path):
    """The race of a SIGTERM landing just before a blocking call, made certain: the main
    thread waits on a mutex, which signals never interrupt. The watch on the wakeup fd
    finishes the run as KILLED and ends the process with 143, chaining the earlier handler."""
    marker = tmp_path / "chained"
    code = textwrap.dedent(_STUCK_MAIN).replace("chained.append(s)", f"open({str(marker)!r}, 'w').write('called')")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "spool")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY"
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the process hung after SIGTERM: " + proc.communicate()[1][-2000:])
    assert rc == 128 + signal.SIGTERM, proc.stderr.read()
    assert marker.read_text() == "called"
    [rec] = list_runs(tmp_path / "spool")
    assert rec.status == "KILLED"
    conn = sqlite3.connect(rec.files[0].path)
    assert conn.execute("SELECT count(*) FROM events WHERE kind='metric'").fetchone()[0] == 10


def test_a_forked_childs_sigterm_never_ends_the_parent(tmp_path):
    """The wakeup fd is not inherited: a worker process killed with SIGTERM (as DataLoader
    workers are) leaves its parent's run running."""
    code = textwrap.dedent("""
        import os, signal, sys, time, bridge, bridge.sigterm_watch
        bridge.sigterm_watch.GRACE_SECONDS = 0.2
        run = bridge.init(project="fork", dir=sys.argv[1], sync="offline")
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(ready_w, b"r")  # our handler is in place: a SIGTERM now runs it here
            time.sleep(60)
            os._exit(0)
        os.read(ready_r, 1)
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        time.sleep(2)  # ten times the watch's grace: a misread signal would have ended us
        run.log({"x": 1.0})
        run.finish()
        print("ALIVE", flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "spool")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ALIVE" in out.stdout, out.stderr[-2000:]
    [rec] = list_runs(tmp_path / "spool")
    assert rec.status == "FINISHED"
