"""``geoseg run``: a workflow's steps over its scenes, on a Dask cluster, recorded in the run ledger.

The plan compares each scene and step with the ledger: a step runs when its
scene is new or changed (content hash), its options or model changed, a step
it depends on re-runs, its output is missing, or it failed or was interrupted
last time; otherwise it is skipped. Each step calls geoseg's public function
(:func:`geoseg.prediction.predict`, :func:`geoseg.vector.vectorize.vectorize`,
:func:`geoseg.evaluation.evaluate.evaluate`) with the cluster's client; predict saves
finished chunks as it goes, so a killed run resumes mid-scene. A scene that
fails is recorded with its error line and the others go on.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from geoseg.errors import GeosegError
from geoseg.io.inputs import output_stem, resolve_inputs
from geoseg.workflows.config import WorkflowConfig
from geoseg.workflows.ledger import Ledger, Record, config_hash, identity

log = logging.getLogger("geoseg")
CHECKPOINTS = ".geoseg-chunks"  # in the run folder: per-scene stores of finished predict chunks


@dataclass
class PlanItem:
    scene: str
    name: str
    step: str
    action: str  # run or skip
    reason: str
    key: str = ""
    config: str = ""
    upstream: str = ""
    ident: dict = field(default_factory=dict, repr=False)
    outputs: list[str] = field(default_factory=list)  # a done step's recorded outputs


@dataclass
class StepResult:
    scene: str
    name: str
    step: str
    status: str  # done, skipped, failed, blocked
    reason: str
    seconds: float | None = None
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    chunks: int | None = None
    chunks_resumed: int | None = None
    pixels: int = 0


@dataclass
class RunResult:
    run: int
    folder: Path
    results: list[StepResult]
    seconds: float
    dashboard: str | None
    cluster: str

    @property
    def failures(self) -> list[StepResult]:
        return [r for r in self.results if r.status == "failed"]


def scenes_of(wf: WorkflowConfig) -> list[str]:
    """The workflow's scenes; a folder or pattern with nothing in it yet is not an error (a nightly folder)."""
    out: list[str] = []
    for item in wf.inputs:
        try:
            out += resolve_inputs([item])
        except GeosegError:
            if os.path.isdir(item) or glob.has_magic(item):
                log.warning("%s: no scene here yet", item)
                continue
            raise GeosegError(f"inputs: no such file or folder: {item}", wf.path) from None
    return list(dict.fromkeys(out))


def output_paths(wf: WorkflowConfig, name: str, step: str) -> list[Path]:
    """The files a step writes for scene ``name`` in the run folder."""
    if step == "predict":
        if wf.instance:
            return [wf.output / f"{name}.instances.tif", wf.output / f"{name}.instances.gpkg"]
        probs = wf.step("predict").options.get("probabilities")
        return [wf.output / f"{name}.classes.tif"] + ([wf.output / f"{name}.probs.tif"] if probs else [])
    if step == "vectorize":
        return [wf.output / f"{name}.gpkg"]
    return [wf.output / f"{name}.evaluate" / "report.json"]


def _reference_for(wf: WorkflowConfig, name: str) -> str | None:
    """The reference of scene ``name``: the workflow's vector file, or its match in the reference folder."""
    ref = wf.reference
    if ref is None or not os.path.isdir(ref):
        return ref
    from geoseg.evaluation.evaluate import RASTER_SUFFIXES, VECTOR_SUFFIXES, reference_stem

    return next((str(p) for p in sorted(Path(ref).iterdir())
                 if p.suffix.lower() in RASTER_SUFFIXES + VECTOR_SUFFIXES and reference_stem(p) == name), None)


def _model_hash(model: str) -> str:
    from geoseg.engines.cache import weights_hash
    from geoseg.models.bundle import resolve_bundle

    b = resolve_bundle(model)
    return config_hash({"weights": weights_hash(b), "meta": (b / "geoseg.json").read_text()})


def plan(wf: WorkflowConfig, ledger: Ledger | None, force: bool = False,
         scenes: list[str] | None = None) -> list[PlanItem]:
    """What a run would do for every scene and step (of ``scenes``, default: the workflow's), and why."""
    latest = ledger.latest() if ledger else {}
    known = ledger.identities() if ledger else {}
    model = _model_hash(wf.model)
    items: list[PlanItem] = []
    seen: set[str] = {s for s, _ in latest}
    for scene in scenes_of(wf) if scenes is None else scenes:
        name = output_stem(scene)
        try:
            ident = identity(scene, known.get(os.path.realpath(scene)))
        except OSError as exc:
            ident = {"path": os.path.realpath(scene), "hash": f"unreadable: {exc.strerror or exc}"}
        scene_key = os.path.realpath(scene)
        keys: dict[str, str] = {}
        for step in wf.steps:
            if step.name == "predict":
                config, upstream = config_hash({"model": model, "options": step.options}), ""
            elif step.name == "vectorize":
                config, upstream = config_hash(step.options), keys["predict"]
            else:
                ref = _reference_for(wf, name)
                ref_id = identity(ref)["hash"] if ref and os.path.isfile(ref) else ref
                config, upstream = config_hash({"options": step.options, "reference": ref_id}), keys["predict"]
            key = config_hash({"input": ident["hash"], "config": config, "upstream": upstream})
            keys[step.name] = key
            rec = latest.get((scene_key, step.name))
            reason = _why(rec, step.name, ident["hash"], config, upstream, scene_key in seen, force,
                          output_paths(wf, name, step.name))
            items.append(PlanItem(scene, name, step.name, "skip" if reason.startswith("done") else "run", reason,
                                  key, config, upstream, ident, rec.outputs if rec else []))
    return items


def _why(rec: Record | None, step: str, input_hash: str, config: str, upstream: str, known_scene: bool,
         force: bool, outputs: list[Path]) -> str:
    if force:
        return "--force"
    if rec is None:
        return "not run yet" if known_scene else "new scene"
    if rec.status == "running":
        return f"interrupted in run {rec.run}" + ("; resumes from its saved chunks" if step == "predict" else "")
    if rec.status != "done":
        return f"{rec.status} last time: {rec.error or '?'}"
    if rec.input_hash != input_hash:
        return "scene changed"
    if rec.config != config:
        return {"predict": "model or predict options changed", "vectorize": "vectorize options changed",
                "evaluate": "evaluate options or reference changed"}[step]
    if rec.upstream != upstream:
        return "predict output changes"
    missing = [p.name for p in outputs if not p.exists()]
    if missing:
        return f"output missing: {', '.join(missing)}"
    return f"done in run {rec.run}, {time.strftime('%Y-%m-%d %H:%M', time.localtime(rec.finished))}"


def _call_step(wf: WorkflowConfig, item: PlanItem, client, resources, progress: bool) -> StepResult:
    name, folder = item.name, wf.output
    opts = wf.step(item.step)
    if item.step == "predict":
        from geoseg.prediction import predict

        outs = predict(wf.model, [item.scene], folder,
                       opts.as_options(overwrite=True, progress=progress), client=client,
                       checkpoint=folder / CHECKPOINTS, resources=resources)
        o = outs[0]
        import rasterio

        with rasterio.open(item.scene) as src:
            pixels = src.width * src.height
        return StepResult(item.scene, name, item.step, "done", item.reason, outputs=[str(p) for p in o.files],
                          chunks=o.chunks or None, chunks_resumed=o.chunks_resumed if o.chunks else None,
                          pixels=pixels)
    if item.step == "vectorize":
        from geoseg.vector.vectorize import vectorize

        out = vectorize(folder / f"{name}.classes.tif", folder / f"{name}.gpkg",
                        opts.as_options(overwrite=True, progress=progress), client=client)
        return StepResult(item.scene, name, item.step, "done", item.reason, outputs=[str(out)])
    from geoseg.evaluation.evaluate import evaluate

    ref = _reference_for(wf, name)
    if ref is None:
        raise GeosegError(f"no reference for scene {name} in the reference folder", wf.reference)
    out = folder / f"{name}.evaluate"
    evaluate(folder / f"{name}.classes.tif", ref, out, opts.as_options(overwrite=True, progress=progress),
             client=client)
    return StepResult(item.scene, name, item.step, "done", item.reason, outputs=[str(out / "report.json")])


def run_workflow(wf: WorkflowConfig, force: bool = False, progress: bool = False,
                 echo: Callable[[str], None] = print) -> RunResult:
    """Run the workflow; returns what each scene and step did (failures included, not raised)."""
    import dask

    from geoseg.io.output import output_dir
    from geoseg.version import __version__
    from geoseg.workflows.clusters import connect
    from geoseg.workflows.report import write_run_report
    from geoseg.workflows.stac import write_stac

    t_run = time.time()
    scenes = scenes_of(wf)  # a bad input is refused before the run folder is made
    with output_dir(wf.output) as folder:
        ledger = Ledger(folder)
        try:
            items = plan(wf, ledger, force, scenes)
            todo = [i for i in items if i.action == "run"]
            echo(f"{len(scenes)} scene{'s' if len(scenes) != 1 else ''}: {len(todo)} step"
                 f"{'s' if len(todo) != 1 else ''} to run, {len(items) - len(todo)} done already")
            run_id = ledger.start_run(__version__, str(wf.path), wf.cluster.kind)
            results: list[StepResult] = []
            dashboard, describe = None, wf.cluster.kind
            try:
                if todo:
                    with connect(wf.cluster) as conn:
                        dashboard, describe = conn.dashboard, conn.describe
                        ledger.set_dashboard(run_id, dashboard)
                        echo(f"cluster: {describe}" + (f"; dashboard {dashboard}" if dashboard else ""))
                        with dask.annotate(retries=wf.retries):
                            results = _execute(wf, items, ledger, run_id, conn, progress, echo, scenes)
                else:
                    results = [StepResult(i.scene, i.name, i.step, "skipped", i.reason, outputs=i.outputs)
                               for i in items]
            except BaseException:
                ledger.finish_run(run_id, "interrupted", {})
                raise
            stac = write_stac(wf, folder, results)
            res = RunResult(run_id, folder, results, time.time() - t_run, dashboard, describe)
            summary = write_run_report(wf, res, stac)
            ledger.finish_run(run_id, "failed" if res.failures else "done", summary)
        finally:
            ledger.close()
    return res


def _execute(wf, items, ledger, run_id, conn, progress, echo, scenes) -> list[StepResult]:
    from geoseg.version import __version__

    results: list[StepResult] = []
    failed: set[str] = set()
    n_scene = {s: k for k, s in enumerate(scenes, 1)}
    for item in items:
        tag = f"[{n_scene[item.scene]}/{len(scenes)}] {item.name} {item.step}"
        if item.scene in failed:
            results.append(StepResult(item.scene, item.name, item.step, "blocked", "an earlier step failed"))
            continue
        if item.action == "skip":
            results.append(StepResult(item.scene, item.name, item.step, "skipped", item.reason, outputs=item.outputs))
            continue
        rec = ledger.start_item(run_id, os.path.realpath(item.scene), item.step, item.key, item.ident,
                                item.config, item.upstream, __version__, item.reason)
        t0 = time.perf_counter()
        try:
            if item.ident["hash"].startswith("unreadable"):
                raise GeosegError(f"cannot read the scene ({item.ident['hash'].split(': ', 1)[1]})", item.scene)
            res = _call_step(wf, item, conn.client, conn.resources, progress)
        except GeosegError as exc:
            res = StepResult(item.scene, item.name, item.step, "failed", item.reason, error=str(exc))
        except Exception as exc:  # a bug or a cluster failure: recorded, and the other scenes go on
            log.debug("step failed", exc_info=True)
            res = StepResult(item.scene, item.name, item.step, "failed", item.reason,
                             error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        except BaseException:
            ledger.finish_item(rec, "interrupted", error="interrupted")
            raise
        res.seconds = time.perf_counter() - t0
        ledger.finish_item(rec, res.status, res.outputs, res.error, res.chunks, res.chunks_resumed)
        results.append(res)
        if res.status == "failed":
            failed.add(item.scene)
            echo(f"{tag}: failed: {res.error}")
        else:
            chunks = ""
            if res.chunks:
                chunks = f", {res.chunks} chunks" + (f" ({res.chunks_resumed} resumed)" if res.chunks_resumed else "")
            echo(f"{tag}: done in {res.seconds:.1f} s ({item.reason}{chunks})")
    return results
