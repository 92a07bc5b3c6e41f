"""System metrics: a background thread that samples the machine into ``system/*`` series.

``bridge.init(..., system_metrics=True | seconds)`` starts a :class:`SystemMetricsSampler`;
``run.finish()`` stops it. Samples are logged with ``run.log_metrics`` without a step
(stepless series whose timestamp is the sample time), so they never move the training
step. psutil is imported when the sampler starts; GPUs are read through ``nvidia-ml-py``
(``pynvml``) only when it is installed and a GPU answers. Nothing here raises into the
training loop: a failing probe is dropped from later samples.

Keys (bytes are plain bytes; counters are cumulative since the sampler started):

============================================  ===============================================
``system/cpu/percent``                        CPU use of the whole machine, 0-100
``system/cpu/core_<i>/percent``               CPU use of core *i*
``system/memory/used_bytes``                  memory in use (total - available)
``system/memory/percent``                     memory in use, 0-100
``system/disk/used_bytes``                    used space of the spool directory's file system
``system/disk/percent``                       same, 0-100
``system/disk/read_bytes``                    bytes read from disks since start
``system/disk/write_bytes``                   bytes written to disks since start
``system/network/sent_bytes``                 bytes sent on all interfaces since start
``system/network/recv_bytes``                 bytes received on all interfaces since start
``system/process/rss_bytes``                  resident memory of this process
``system/process/cpu_percent``                CPU use of this process (100 = one core)
``system/gpu/<i>/utilization_percent``        GPU *i* compute utilization, 0-100
``system/gpu/<i>/memory_used_bytes``          GPU *i* memory in use
``system/gpu/<i>/memory_percent``             same, 0-100
``system/gpu/<i>/temperature_c``              GPU *i* temperature in °C
``system/gpu/<i>/power_w``                    GPU *i* power draw in watts
============================================  ===============================================
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

from bridge.threads import start_thread

__all__ = ["DEFAULT_INTERVAL_S", "MIN_INTERVAL_S", "SystemMetricsSampler", "check_interval",
           "start_for"]

DEFAULT_INTERVAL_S = 10.0
MIN_INTERVAL_S = 0.05

Probe = Callable[[dict[str, float]], None]


class SystemMetricsSampler:
    """Samples the machine every ``interval_s`` seconds into ``run.log_metrics``."""

    def __init__(self, run: Any, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.run = run
        self.interval_s = max(float(interval_s), MIN_INTERVAL_S)
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probes: list[Probe] = []
        self._base: dict[str, float] = {}
        self._psutil: Any = None
        self._process: Any = None
        self._nvml: Any = None
        self._gpus: list[Any] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> "SystemMetricsSampler":
        """Start the daemon thread (idempotent); a machine without psutil logs nothing."""
        if self._thread is not None:
            return self
        self._thread = start_thread(self._loop, "bridge-system-metrics")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sampling; waits up to ``timeout`` seconds for the thread to end."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread() and t.is_alive():
            t.join(timeout)
        self._shutdown_nvml()

    @property
    def running(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def _loop(self) -> None:
        try:
            self._setup()
        except Exception:
            return
        while not self._stop.is_set() and not getattr(self.run, "_finished", False):
            try:
                values = self.sample()
                if values and not self._stop.is_set():
                    self.run.log_metrics(values)
                    self.samples += 1
            except Exception:
                pass  # a sample is never worth an exception in the training process
            self._stop.wait(self.interval_s)
        self._shutdown_nvml()

    # -- probes --------------------------------------------------------------------------

    def _setup(self) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process(os.getpid())
        # The first cpu_percent() call only sets the reference point.
        psutil.cpu_percent(percpu=True)
        self._process.cpu_percent()
        disk = _safe(psutil.disk_io_counters)
        if disk is not None:
            self._base["disk_read"], self._base["disk_write"] = disk.read_bytes, disk.write_bytes
        net = _safe(psutil.net_io_counters)
        if net is not None:
            self._base["net_sent"], self._base["net_recv"] = net.bytes_sent, net.bytes_recv
        self._probes = [self._cpu, self._memory, self._disk, self._network, self._proc]
        if self._init_nvml():
            self._probes.append(self._gpu)

    def sample(self) -> dict[str, float]:
        """One sample of every probe that works; a probe that fails is dropped for good."""
        if self._psutil is None:
            self._setup()
        out: dict[str, float] = {}
        for probe in list(self._probes):
            try:
                probe(out)
            except Exception:
                self._probes.remove(probe)
        return out

    def _cpu(self, out: dict[str, float]) -> None:
        cores = self._psutil.cpu_percent(percpu=True)
        if cores:
            out["system/cpu/percent"] = float(sum(cores) / len(cores))
        for i, pct in enumerate(cores):
            out[f"system/cpu/core_{i}/percent"] = float(pct)

    def _memory(self, out: dict[str, float]) -> None:
        vm = self._psutil.virtual_memory()
        out["system/memory/used_bytes"] = float(vm.total - vm.available)
        out["system/memory/percent"] = float(vm.percent)

    def _disk(self, out: dict[str, float]) -> None:
        usage = self._psutil.disk_usage(str(_existing(getattr(self.run, "dir", None))))
        out["system/disk/used_bytes"] = float(usage.used)
        out["system/disk/percent"] = float(usage.percent)
        io = _safe(self._psutil.disk_io_counters)
        if io is not None and "disk_read" in self._base:
            out["system/disk/read_bytes"] = float(io.read_bytes - self._base["disk_read"])
            out["system/disk/write_bytes"] = float(io.write_bytes - self._base["disk_write"])

    def _network(self, out: dict[str, float]) -> None:
        net = self._psutil.net_io_counters()
        if net is not None and "net_sent" in self._base:
            out["system/network/sent_bytes"] = float(net.bytes_sent - self._base["net_sent"])
            out["system/network/recv_bytes"] = float(net.bytes_recv - self._base["net_recv"])

    def _proc(self, out: dict[str, float]) -> None:
        out["system/process/rss_bytes"] = float(self._process.memory_info().rss)
        out["system/process/cpu_percent"] = float(self._process.cpu_percent())

    # -- GPUs (nvidia-ml-py) -------------------------------------------------------------

    def _init_nvml(self) -> bool:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:
            return False
        try:
            count = pynvml.nvmlDeviceGetCount()
            self._gpus = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception:
            self._gpus = []
        self._nvml = pynvml
        if not self._gpus:
            self._shutdown_nvml()
            return False
        return True

    def _gpu(self, out: dict[str, float]) -> None:
        nv = self._nvml
        for i, h in enumerate(self._gpus):
            p = f"system/gpu/{i}/"
            util = _safe(nv.nvmlDeviceGetUtilizationRates, h)
            if util is not None:
                out[p + "utilization_percent"] = float(util.gpu)
            mem = _safe(nv.nvmlDeviceGetMemoryInfo, h)
            if mem is not None and mem.total:
                out[p + "memory_used_bytes"] = float(mem.used)
                out[p + "memory_percent"] = 100.0 * mem.used / mem.total
            temp = _safe(nv.nvmlDeviceGetTemperature, h, 0)  # NVML_TEMPERATURE_GPU
            if temp is not None:
                out[p + "temperature_c"] = float(temp)
            power = _safe(nv.nvmlDeviceGetPowerUsage, h)
            if power is not None:
                out[p + "power_w"] = power / 1000.0

    def _shutdown_nvml(self) -> None:
        nv, self._nvml = self._nvml, None
        if nv is not None:
            try:
                nv.nvmlShutdown()
            except Exception:
                pass


def _safe(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None


def _existing(path: Any) -> Path:
    """The nearest existing directory of ``path`` (the spool dir may not exist yet)."""
    p = Path(path).expanduser() if path is not None else Path.cwd()
    for candidate in (p, *p.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_interval(system_metrics: Any) -> float | None:
    """Interpret ``init(system_metrics=...)``: False/None/0 → None (off), True →
    :data:`DEFAULT_INTERVAL_S`, a number → that many seconds; anything else is a
    :class:`~bridge.errors.ConfigError` (raised before a run is created)."""
    if system_metrics is None or system_metrics is False:
        return None
    if system_metrics is True:
        return DEFAULT_INTERVAL_S
    try:
        interval = float(system_metrics)
    except (TypeError, ValueError):
        from bridge.errors import ConfigError

        raise ConfigError(
            f"system_metrics must be True, False or seconds, got {system_metrics!r}"
        ) from None
    return interval if interval > 0 else None


def start_for(run: Any, system_metrics: Any) -> SystemMetricsSampler | None:
    """A started sampler for ``run`` as ``init(system_metrics=...)`` asks, or None."""
    interval = check_interval(system_metrics)
    return None if interval is None else SystemMetricsSampler(run, interval).start()
