"""A Hugging Face Accelerate tracker:
``Accelerator(log_with=[BridgeTracker(project="glue")])``.

Accelerate drives it through its tracking API: ``accelerator.init_trackers(name, config)``
starts the run (in ``start()``, which Accelerate calls after the process group exists;
versions without ``start`` get the run on first use) and records ``config`` as params
(nested dicts stay nested, values JSON cannot hold become their text);
``accelerator.log(values, step=i)`` records ``values`` as ``run.log`` does: numbers (and
scalar tensors) are metrics at ``step``, strings a text series, bridge media objects media,
anything else a counted warning; without ``step`` the run's own step advances by one, as
with W&B. ``accelerator.end_training()`` finishes the run the tracker started.

Only the main process records (``main_process_only=True``, Accelerate's convention). With
``main_process_only=False`` every rank records into the same run under its own node label
``rank<i>``, each process in its own spool file. ``Accelerator.init_trackers`` and
``Accelerator.log`` run on the main process only whatever the tracker says, so the other
ranks use the tracker itself: ``tracker.start()`` once on every rank right after
``init_trackers`` (a collective: the main process's run id is broadcast; pass ``run_id=``
to skip it), then ``tracker.log(values, step=...)`` and ``tracker.finish()`` (Accelerate
keeps its trackers on the main process only, so ``end_training()`` finishes the main
process's part alone; at exit bridge finishes what is still open).

``register()`` makes ``Accelerator(log_with="bridge")`` work, where Accelerate has
``register_tracker_class``; the project is then ``init_trackers``' name and
``init_kwargs={"bridge": {...}}`` go to the tracker.
"""

from __future__ import annotations

from typing import Any, Mapping

from accelerate.state import PartialState
from accelerate.tracking import GeneralTracker, on_main_process

from bridge.errors import ConfigError
from bridge.integrations import jsonable

__all__ = ["BridgeTracker", "register"]


class BridgeTracker(GeneralTracker):
    """Accelerate tracker recording into a bridge run (``**init_kwargs`` go to
    ``bridge.init``: ``backends``, ``dir``, ``group``, ``tags``, ``run_id``...)."""

    name = "bridge"
    requires_logging_directory = False

    def __init__(self, project: str | None = None, backends: Any = None,
                 run_name: str | None = None, *, main_process_only: bool = True,
                 **init_kwargs: Any) -> None:
        super().__init__()
        self.main_process_only = main_process_only
        self._init_kwargs = dict(init_kwargs, project=project)
        if backends is not None:
            self._init_kwargs["backends"] = backends
        if run_name is not None:
            self._init_kwargs.setdefault("name", run_name)
        self._run: Any = None

    @property
    def tracker(self) -> Any:
        """The bridge run (None on a process that does not record)."""
        if self._run is None:
            self.start()
        return self._run

    @on_main_process
    def start(self) -> None:
        """Start the run. With ``main_process_only=False`` every rank must call it at the
        same point (it broadcasts the run id unless ``run_id=`` was given)."""
        if self._run is not None:
            return
        import bridge

        kwargs = dict(self._init_kwargs)
        if not self.main_process_only:
            state = PartialState()
            kwargs.setdefault("node", f"rank{state.process_index}")
            if kwargs.get("run_id") is None:
                kwargs["run_id"] = _shared_run_id(state)
            if not state.is_main_process:
                kwargs.setdefault("resume", "allow")
        self._run = bridge.init(**kwargs)

    @on_main_process
    def store_init_configuration(self, values: Mapping[str, Any]) -> None:
        params = jsonable(dict(values or {}))
        if params:
            self.tracker.log_params(params)

    @on_main_process
    def log(self, values: Mapping[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """``values`` as ``run.log`` takes them; ``kwargs`` (from Accelerate's
        ``log_kwargs``) have no meaning here and are a counted warning."""
        run = self.tracker
        if kwargs:
            problem = getattr(run, "_problem", None)
            if problem is not None:
                problem("BridgeTracker.log", f"options {sorted(kwargs)} are not used by bridge")
        run.log(dict(values), step=step)

    @on_main_process
    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()


def _shared_run_id(state: PartialState) -> str:
    """One run id for every rank: the main process's, sent to the others."""
    import uuid

    run_id = [uuid.uuid4().hex if state.is_main_process else None]
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(run_id, from_process=0)
    return str(run_id[0])


def register() -> None:
    """Let Accelerate find the tracker by name: ``Accelerator(log_with="bridge")``."""
    import accelerate.tracking

    reg = getattr(accelerate.tracking, "register_tracker_class", None)
    if reg is None:
        raise ConfigError(
            f"accelerate {accelerate.__version__} cannot register trackers by name; "
            "pass Accelerator(log_with=[BridgeTracker(project=...)]) instead")
    reg(BridgeTracker)
