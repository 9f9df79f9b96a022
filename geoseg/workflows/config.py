"""Workflow files: YAML, validated by pydantic before anything runs; an unknown key is named.

Example (``workflows/nightly.yaml``)::

    inputs: [/data/incoming/*.tif]       # folders, files or globs
    model: buildings-rgb                 # a bundle folder or a packaged model's name
    output: /data/runs/nightly           # outputs, the run ledger and the run report
    reference: /data/labels.gpkg         # for the evaluate step: a vector file or a folder
    steps:
      - predict: {chunk_size: 1024}
      - vectorize: {min_area: 4}
      - evaluate: {reference_class: building}
    cluster: {slurm: {cores: 4, memory: 16GB, walltime: "02:00:00", maximum_workers: 8}}
    retries: 2

Relative paths are relative to the workflow file. Each step takes the options
of its command, spelled with underscores; the run decides the ones about
scheduling and overwriting (workers, scheduler, overwrite, progress).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from geoseg.errors import GeosegError
from geoseg.evaluation.evaluate import EvaluateOptions
from geoseg.prediction import PredictOptions
from geoseg.vector.vectorize import VectorizeOptions

STEPS = ("predict", "vectorize", "evaluate")
_RUN_OWNS = {"workers", "scheduler", "overwrite", "progress"}  # decided by the run, not by a step's options
_OPTIONS = {
    "predict": (PredictOptions, _RUN_OWNS | {"coco_results"}),
    "vectorize": (VectorizeOptions, _RUN_OWNS | {"probabilities", "source"}),
    "evaluate": (EvaluateOptions, _RUN_OWNS | {"allow_missing"}),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _options_model(step: str) -> type[BaseModel]:
    """A pydantic model of a command's options dataclass (its fields, types and defaults), unknown keys refused."""
    cls, skip = _OPTIONS[step]
    hints = typing.get_type_hints(cls)
    fields = {f.name: (hints[f.name], f.default) for f in dataclasses.fields(cls) if f.name not in skip}
    return create_model(f"{step}_options", __config__=ConfigDict(extra="forbid"), **fields)


_STEP_MODELS = {s: _options_model(s) for s in STEPS}


class LocalCluster(_Strict):
    """A ``distributed.LocalCluster`` on this machine (loopback only)."""

    workers: int | None = Field(None, gt=0)  # default: as many as cores, at most 4
    threads_per_worker: int = Field(1, gt=0)
    memory_limit: str | None = None  # per worker, "4GB"; default: Dask's share of the machine
    gpus: int = Field(0, ge=0)  # GPUs per worker, declared as the Dask resource GPU


class AddressCluster(_Strict):
    address: str

    @field_validator("address")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if "://" not in v:
            raise ValueError("must look like tcp://host:8786")
        return v


class JobQueueCluster(_Strict):
    """Dask workers started as batch jobs by dask-jobqueue (``SLURMCluster``, ``PBSCluster``)."""

    cores: int = Field(1, gt=0)  # per job
    memory: str = "4GB"  # per job
    processes: int = Field(1, gt=0)  # worker processes per job
    walltime: str | None = None
    queue: str | None = None  # SLURM partition or PBS queue
    account: str | None = None
    job_directives: list[str] = []  # extra #SBATCH / #PBS lines, e.g. "--constraint=a100"
    gpus: int = Field(0, ge=0)  # GPUs per job: requested from the scheduler and declared as Dask resources
    workers: int | None = Field(None, gt=0)  # a fixed number of jobs' workers
    minimum_workers: int = Field(0, ge=0)  # or adaptive scaling between these two
    maximum_workers: int | None = Field(None, gt=0)
    wait_for_workers: float = Field(0, ge=0)  # seconds to wait for the minimum (or fixed) workers before starting
    interface: str | None = None  # network interface the workers and scheduler use (e.g. ib0, lo)
    host: str | None = None  # the address the scheduler listens on
    python: str | None = None  # the workers' Python (default: this one)
    local_directory: str | None = None
    log_directory: str | None = None
    prologue: list[str] = []  # shell lines run before the worker starts (module load ...)
    options: dict[str, Any] = {}  # any other dask-jobqueue keyword, passed as is


class Workflow(_Strict):
    inputs: list[str]
    model: str
    output: str
    reference: str | None = None
    steps: list[str | dict[str, dict[str, Any] | None]] = ["predict"]
    cluster: Literal["local"] | dict[Literal["local", "address", "slurm", "pbs"], Any] = "local"
    retries: int = Field(2, ge=0)  # Dask retries of a failed task (a lost worker's tasks are always re-run)

    @field_validator("inputs", mode="before")
    @classmethod
    def _listify(cls, v):
        return [v] if isinstance(v, str) else v


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    options: dict  # validated, defaults filled in: what the step's config hash covers

    def as_options(self, **run_owned):
        cls, _ = _OPTIONS[self.name]
        return cls(**self.options, **run_owned)


@dataclasses.dataclass(frozen=True)
class Cluster:
    kind: str  # local, address, slurm, pbs
    spec: BaseModel | None


@dataclasses.dataclass(frozen=True)
class WorkflowConfig:
    path: Path
    inputs: tuple[str, ...]
    model: str
    output: Path
    reference: str | None
    steps: tuple[Step, ...]
    cluster: Cluster
    retries: int
    instance: bool = False  # the model is an instance bundle (its predict step writes NAME.instances.*)

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "dict[str,union[dict[str,any],nullable[none]]]", "function-after[_scheme(), str]"):
            continue  # pydantic's names of union branches
        else:
            out += ("." if out else "") + str(part)
    return out


def _one_line(exc: ValidationError, where: str = "") -> str:
    err = exc.errors()[0]
    loc = ".".join(p for p in [where, _loc(tuple(err["loc"]))] if p)
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    if err["type"] == "missing":
        return f"{loc}: required key missing"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _resolve(base: Path, p: str) -> str:
    """A path relative to the workflow file (globs, ``~`` and packaged model names left as they are)."""
    p = os.path.expanduser(p)
    return p if os.path.isabs(p) else os.path.normpath(base / p)


def load_workflow(path: str | os.PathLike) -> WorkflowConfig:
    """Read and validate a workflow file; every problem is one line naming the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise GeosegError("no such workflow file", path) from None
    except (OSError, yaml.YAMLError) as exc:
        raise GeosegError(f"not a readable YAML file ({' '.join(str(exc).split())[:160]})", path) from None
    if not isinstance(raw, dict):
        raise GeosegError("a workflow file is a mapping with inputs, model, output and steps", path)
    try:
        wf = Workflow.model_validate(raw)
    except ValidationError as exc:
        raise GeosegError(_one_line(exc), path) from None
    base = path.resolve().parent
    steps = tuple(_parse_step(item, n, path) for n, item in enumerate(wf.steps))
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise GeosegError("steps: each step may appear once", path)
    if "predict" not in names:
        raise GeosegError("steps: the workflow needs a predict step (vectorize and evaluate use its output)", path)
    if names[0] != "predict":
        raise GeosegError(f"steps[0]: predict comes first (vectorize and evaluate use its output), got {names[0]}",
                          path)
    if "evaluate" in names and not wf.reference:
        raise GeosegError("reference: the evaluate step needs a reference (a vector file or a folder)", path)
    model = _resolve(base, wf.model)
    model = model if os.path.exists(model) else wf.model  # else a packaged model's name
    instance = _check_model(model, names, path)
    reference = _resolve(base, wf.reference) if wf.reference else None
    if reference and not os.path.exists(reference):
        raise GeosegError(f"reference: no such file or folder: {reference}", path)
    return WorkflowConfig(
        path=path.resolve(), inputs=tuple(_resolve(base, i) for i in wf.inputs), model=model,
        output=Path(_resolve(base, wf.output)), reference=reference, steps=steps,
        cluster=_parse_cluster(wf.cluster, path), retries=wf.retries, instance=instance,
    )


def _parse_step(item, n: int, path: Path) -> Step:
    if isinstance(item, str):
        name, opts = item, {}
    elif len(item) == 1:
        name, opts = next(iter(item.items()))
        opts = opts or {}
    else:
        raise GeosegError(f"steps[{n}]: one step per item, as a name or {{step: {{options}}}}, got "
                          f"{', '.join(item)}", path)
    if name not in STEPS:
        raise GeosegError(f"steps[{n}]: unknown step {name!r}; valid steps: {', '.join(STEPS)}", path)
    try:
        validated = _STEP_MODELS[name].model_validate(opts)
    except ValidationError as exc:
        raise GeosegError(_one_line(exc, f"steps[{n}].{name}"), path) from None
    step = Step(name, validated.model_dump())
    try:
        step.as_options()  # the command's own checks (positive sizes, known blend modes, ...)
    except GeosegError as exc:
        raise GeosegError(f"steps[{n}].{name}: {exc}", path) from None
    return step


def _check_model(model: str, steps: list[str], path: Path) -> bool:
    """Check the model can be read and takes the steps; returns whether it is an instance bundle."""
    from geoseg.models.bundle import is_instance_bundle, read_meta

    try:
        meta = read_meta(model)
    except GeosegError as exc:
        raise GeosegError(f"model: {exc}", path) from None
    if is_instance_bundle(meta) and set(steps) - {"predict"}:
        raise GeosegError(f"steps: {model} is an instance model; its predict step writes NAME.instances.gpkg "
                          "itself (vectorize and evaluate apply to class rasters)", path)
    return is_instance_bundle(meta)


_BATCH_COMMANDS = {"slurm": ("sbatch", "SLURMCluster"), "pbs": ("qsub", "PBSCluster")}


def _parse_cluster(raw, path: Path) -> Cluster:
    if raw == "local":
        return Cluster("local", LocalCluster())
    if len(raw) != 1:
        raise GeosegError(f"cluster: one of local, address, slurm, pbs, got {', '.join(raw)}", path)
    kind, body = next(iter(raw.items()))
    model = {"local": LocalCluster, "address": AddressCluster, "slurm": JobQueueCluster,
             "pbs": JobQueueCluster}[kind]
    if kind == "address" and isinstance(body, str):
        body = {"address": body}
    try:
        spec = model.model_validate(body or {})
    except ValidationError as exc:
        raise GeosegError(_one_line(exc, f"cluster.{kind}"), path) from None
    if kind in _BATCH_COMMANDS:
        command, _ = _BATCH_COMMANDS[kind]
        try:
            import dask_jobqueue  # noqa: F401
        except ImportError:
            raise GeosegError(f"cluster.{kind}: needs dask-jobqueue (pip install geoseg[cluster])", path) from None
        if shutil.which(command) is None:
            raise GeosegError(f"cluster.{kind}: {kind.upper()} is not installed here (no {command} on PATH)", path)
        if spec.maximum_workers is not None and spec.maximum_workers < spec.minimum_workers:
            raise GeosegError(f"cluster.{kind}.maximum_workers: less than minimum_workers", path)
    return Cluster(kind, spec)


def with_cluster(wf: WorkflowConfig, override: str) -> WorkflowConfig:
    """``--cluster``: local, slurm, pbs (with the workflow's own block for it, if any) or a scheduler address."""
    if "://" in override:
        return dataclasses.replace(wf, cluster=Cluster("address", AddressCluster(address=override)))
    if override not in ("local", "slurm", "pbs"):
        raise GeosegError(f"--cluster must be local, slurm, pbs or an address like tcp://host:8786, got {override!r}")
    if wf.cluster.kind == override:
        return wf
    return dataclasses.replace(wf, cluster=_parse_cluster({override: {}}, wf.path))
