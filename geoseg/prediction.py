"""Prediction of GeoTIFF scenes: ``geoseg.predict``, the one place that routes a bundle's scenes.

Every scene is checked first (inputs, bands, CRS, fit, unique output names); then one runner (a
local Dask scheduler or a cluster), one engine choice and one loaded model serve every scene, and
each scene goes down the path for its bundle, once: semantic bundles through
:func:`geoseg.inference.semantic.predict_scene` (class and probability COGs), instance bundles
through :func:`geoseg.instances.predict.predict_instances_scene` (instance raster and GeoPackage).
Both use the block-level model work of :mod:`geoseg.inference`, which sits below them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from geoseg.errors import GeosegError
from geoseg.inference.blending import check_blend
from geoseg.inference.fit import check_fit
from geoseg.inference.predictor import device_type, get_predictor
from geoseg.inference.scheduler import open_runner
from geoseg.inference.semantic import predict_scene
from geoseg.io.inputs import output_stem, resolve_inputs
from geoseg.io.output import output_dir
from geoseg.io.raster import GDAL_CACHE_MB, gdal_cache, inspect_scene
from geoseg.models.bundle import check_tiling, is_instance_bundle, load_bundle, read_meta, resolve_bundle
from geoseg.options import check_options

log = logging.getLogger("geoseg")
# Instance runs read each block once and keep no votes to hand on: a smaller block cache keeps their
# memory flat from small scenes to large ones (measured: bench/instances.py)
INSTANCE_GDAL_CACHE_MB = 32


@dataclass(frozen=True)
class PredictOptions:
    """Options shared by every command that runs a model over rasters."""

    tile_size: int | None = None  # default: the bundle's
    overlap: int | None = None  # default: the bundle's
    blend: str = "cosine"
    chunk_size: int = 2048
    workers: int | None = None
    scheduler: str | None = None
    device: str = "auto"
    engine: str = "auto"  # auto (the fastest exact engine installed), torch, openvino, onnxruntime
    precision: str = "auto"  # auto (fp32 unless the bundle validated bf16 on a bf16 CPU), fp32, bf16, fp16
    batch_size: int | None = None  # default: 8 on CUDA, 1 on the CPU (batching buys nothing there)
    probabilities: bool = False
    overviews: str = "nearest"  # resampling of the class COG's overviews: nearest or mode
    overwrite: bool = False
    allow_no_crs: bool = False
    progress: bool = True
    strict: bool = False  # a scene that does not fit the model (bands, type, values, GSD) is an error
    # instance bundles only (None: the default; given with a semantic bundle, an error)
    score_threshold: float | None = None  # detections below are dropped (default 0.5)
    mask_threshold: float | None = None  # mask probability that counts as inside (default 0.5)
    max_object_size: str | None = None  # pixels or metres ("12m"); the overlap must be at least this
    coco_results: str | None = None  # also write the instances as a COCO results JSON here
    # bundles that write NAME.instances.gpkg (object channels, Mask R-CNN): building footprints with right
    # angles, aligned with their neighbours (geoseg.vector.regularize); NAME.instances.tif keeps the pixels
    regularize: bool = False
    # "crf": the class raster is the dense-CRF refinement of the blended probabilities (geoseg.refine.crf)
    refine: str | None = None
    crf: str | None = None  # CRF settings as key=value,... over the bundle's stored ones (extra.crf)
    # NAME.panoptic.tif and .gpkg: a bundle with object channels gives both halves itself; ``instances``: a second
    # bundle (instance model or object channels) gives the things, this one the stuff (geoseg.instances.panoptic)
    panoptic: bool = False
    instances: str | None = None
    thing_score: float = 0.5  # instances scoring below are not things of the panoptic map
    thing_overlap: float = 0.5  # an instance keeping less of its own mask than this after overlaps is dropped
    # web-map inputs (XYZ, WMS, WMTS through GDAL): the area to fetch and predict, read at the bundle's GSD
    aoi: str | None = None

    def __post_init__(self) -> None:
        check_blend(self.blend)
        check_options(self)
        from geoseg.engines import check_engine

        check_engine(self.engine, self.precision)
        from geoseg.instances.panoptic import PanopticRule

        PanopticRule(self.thing_score, self.thing_overlap)
        if self.overviews not in ("nearest", "mode"):
            raise GeosegError(f"--overviews must be nearest or mode, got {self.overviews!r}")
        for name in ("score_threshold", "mask_threshold"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise GeosegError(f"--{name.replace('_', '-')} must be in [0, 1], got {v}")

    def instance_options(self) -> list[str]:
        """The instance-only options that were given."""
        return ["--" + n.replace("_", "-") for n in ("score_threshold", "mask_threshold", "max_object_size",
                                                     "coco_results") if getattr(self, n) is not None]


@dataclass
class SceneOutputs:
    scene: str
    classes: Path | None
    probabilities: Path | None
    skipped: bool = False  # the outputs existed and were kept
    instances: Path | None = None  # NAME.instances.tif (instance bundles)
    instances_gpkg: Path | None = None  # NAME.instances.gpkg
    panoptic: Path | None = None  # NAME.panoptic.tif (--panoptic, --instances)
    panoptic_gpkg: Path | None = None  # NAME.panoptic.gpkg
    chunks: int = 0  # chunks of the scene
    chunks_resumed: int = 0  # of which an earlier, killed run had saved (see ``checkpoint``)

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.classes, self.probabilities, self.instances, self.instances_gpkg, self.panoptic,
                            self.panoptic_gpkg) if p is not None]


def writes_instances(meta) -> bool:
    """Whether predicting with the bundle ``meta`` describes writes NAME.instances.gpkg/.tif."""
    return is_instance_bundle(meta) or meta.objects is not None


def output_paths(out_dir: Path, scene: str | os.PathLike, probabilities: bool, instances: bool = False,
                 objects: bool = False, panoptic: bool = False) -> SceneOutputs:
    """A scene's outputs: ``instances`` (an instance bundle) writes only the instance files, ``objects`` (a
    semantic bundle with object channels) both the class raster and the instance files; ``panoptic`` adds
    NAME.panoptic.tif and .gpkg."""
    stem = output_stem(scene)
    if instances:
        return SceneOutputs(os.fspath(scene), None, None, instances=out_dir / f"{stem}.instances.tif",
                            instances_gpkg=out_dir / f"{stem}.instances.gpkg")
    return SceneOutputs(os.fspath(scene), out_dir / f"{stem}.classes.tif",
                        out_dir / f"{stem}.probs.tif" if probabilities else None,
                        instances=out_dir / f"{stem}.instances.tif" if objects or panoptic else None,
                        instances_gpkg=out_dir / f"{stem}.instances.gpkg" if objects or panoptic else None,
                        panoptic=out_dir / f"{stem}.panoptic.tif" if panoptic else None,
                        panoptic_gpkg=out_dir / f"{stem}.panoptic.gpkg" if panoptic else None)


def predict(bundle: str | os.PathLike, inputs: list[str] | str, out_dir: str | os.PathLike,
            options: PredictOptions | None = None, client: object | None = None,
            checkpoint: str | os.PathLike | None = None, resources: dict | None = None) -> list[SceneOutputs]:
    """Predict every scene of ``inputs`` (files, folders or globs) into ``out_dir``.

    Returns the outputs written (scenes skipped because their outputs exist are
    included). Every scene is checked before any is processed. ``checkpoint``:
    a folder for finished chunks, so that a killed run resumes from them (semantic
    bundles). ``resources``: Dask resources each model task needs on a cluster
    (default: ``{"GPU": 1}`` when a worker declares GPUs).
    """
    options = options or PredictOptions()
    if options.instances is not None:
        return _predict_with_instances(bundle, inputs, out_dir, options, client, checkpoint, resources)
    bundle = resolve_bundle(bundle)
    meta = read_meta(bundle)
    if options.panoptic and meta.objects is None:
        raise GeosegError("--panoptic needs a bundle with object channels, which gives stuff and things itself"
                          + (" (this is an instance model: give a semantic bundle and --instances this one)"
                             if is_instance_bundle(meta) else "; with this one give --instances BUNDLE for the "
                                                              "things"), bundle)
    tile = meta.tile_size if options.tile_size is None else options.tile_size
    overlap = meta.overlap if options.overlap is None else options.overlap
    check_tiling(tile, overlap)
    instance = is_instance_bundle(meta)
    if not instance and options.instance_options():
        raise GeosegError(f"{', '.join(options.instance_options())} apply to instance bundles; this is a semantic "
                          f"model ({meta.architecture})", bundle)
    if instance and options.probabilities:
        raise GeosegError(f"--probabilities applies to semantic bundles; this is an instance model "
                          f"({meta.architecture}): it writes NAME.instances.tif and NAME.instances.gpkg", bundle)
    if options.regularize and not writes_instances(meta):
        raise GeosegError("--regularize applies to bundles that write NAME.instances.gpkg (object channels or "
                          "Mask R-CNN); for this model's class raster use --vectorize --regularize", bundle)
    crf = None
    if options.refine is not None or options.crf is not None:
        if options.refine != "crf":
            raise GeosegError(f"--refine takes crf, not {options.refine!r}" if options.refine
                              else "--crf sets the CRF of --refine crf; add --refine crf")
        if instance:
            raise GeosegError(f"--refine crf applies to semantic bundles; this is an instance model "
                              f"({meta.architecture})", bundle)
        from geoseg.refine.crf import CRFSettings

        crf = CRFSettings.parse(options.crf, meta.extra.get("crf"))
    inputs = _fetch_web_inputs(inputs, options, out_dir, meta)
    scenes = resolve_inputs(inputs, options.allow_no_crs)
    if any(Path(s).parent.resolve() == Path(out_dir).resolve() for s in scenes):
        log.warning("%s: the output folder is also an input folder; geoseg's own outputs there "
                    "(*.classes.tif, *.probs.tif) are never taken as scenes", out_dir)
    infos = [inspect_scene(s, meta.bands, options.allow_no_crs) for s in scenes]
    _check_unique_stems(scenes)
    if instance:
        from geoseg.instances.predict import check_overlap, max_object_pixels

        for info in infos:
            check_overlap(overlap, max_object_pixels(options.max_object_size, info,
                                                     meta.extra.get("max_object_size")), info)
    for info in infos:
        problems = check_fit(info, meta)
        if problems and options.strict:
            raise GeosegError(f"does not fit the model: {'; '.join(problems)}", info.path)
        if problems:
            log.warning("%s: does not fit the model: %s (--strict makes this an error)", info.path,
                        "; ".join(problems))

    done = []
    from geoseg.engines import resolve as resolve_engine

    choice = resolve_engine(options.engine, "fp32" if instance and options.precision == "auto"
                            else options.precision, meta, device_type(options.device), bundle)
    log.info("engine %s, precision %s", choice.engine, choice.precision)
    with output_dir(out_dir) as out_dir, open_runner(options.scheduler, options.workers, client, resources) as runner, \
            _restore_torch_threads(choice.engine == "torch" or instance), \
            gdal_cache(INSTANCE_GDAL_CACHE_MB if instance else GDAL_CACHE_MB):
        # Load the weights here first: a broken bundle fails before any scene is touched, and
        # local schedulers then reuse this process's predictor.
        if runner.distributed:
            if choice.engine == "torch" or instance:
                load_bundle(bundle)
            else:  # convert here once, before the workers each need it
                get_predictor(bundle, options.device, choice.engine, choice.precision, tile, 1,
                              runner.torch_threads)
        elif instance:
            from geoseg.instances.predictor import get_instance_predictor

            get_instance_predictor(bundle, options.device)
        else:
            get_predictor(bundle, options.device, choice.engine, choice.precision, tile, runner.engine_streams,
                          runner.torch_threads)
        results = []
        for n, info in enumerate(infos, 1):
            out = output_paths(out_dir, info.path, options.probabilities, instance, meta.objects is not None,
                               options.panoptic)
            if not options.overwrite and all(p.exists() for p in out.files) and not options.coco_results:
                done.append(replace(out, skipped=True))
                continue
            log.info("%s: %dx%d px -> %s", info.path, info.width, info.height, out.files[0])
            if instance:
                from geoseg.instances.predict import predict_instances_scene

                results += predict_instances_scene(info, bundle, meta.classes, out, options, runner, tile, overlap,
                                                   meta.bands, meta.mean, n if options.coco_results else None)
            else:
                out = predict_scene(info, bundle, meta.classes, out, options, runner, tile, overlap,
                                    meta.bands, meta.mean, meta.std, choice,
                                    None if checkpoint is None else Path(checkpoint), meta.objects,
                                    _instance_writer(out, info, meta.classes, options.chunk_size,
                                                                     options.regularize), crf)
                if options.panoptic:
                    from geoseg.instances.panoptic import panoptic_classes, thing_classes

                    pan, mapping = panoptic_classes(meta.classes, meta.classes, thing_classes(meta))
                    _compose(out, info, meta.classes, pan, mapping, options)
            done.append(out)
        if options.coco_results:  # image_id: the scene's number in the run, in input order
            from geoseg.instances.io import write_json

            write_json(Path(options.coco_results), results)
    return done


def _fetch_web_inputs(inputs, options: PredictOptions, out_dir, meta) -> list[str]:
    """Web-map inputs fetched for ``options.aoi`` at the bundle's GSD as ``OUT/NAME.webmap.tif`` (geoseg.io.webmap)."""
    from geoseg.io.webmap import fetch, is_web_source

    items = [os.fspath(i) for i in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    web = [i for i in items if is_web_source(i)]
    if not web:
        if options.aoi:
            raise GeosegError("--aoi applies to web-map inputs (XYZ, WMS, WMTS: a GDAL service XML file or "
                              "connection string); local scenes are predicted whole")
        return items
    if not options.aoi:
        raise GeosegError("a web-map input needs --aoi (a vector file of the area to fetch and predict)", web[0])
    if not os.path.isfile(options.aoi):
        raise GeosegError("--aoi: no such file", options.aoi)
    if not meta.gsd:
        raise GeosegError("the bundle records no GSD, so the web map's pixel size is unknown", options.aoi)
    with output_dir(out_dir) as out:
        return [os.fspath(fetch(i, options.aoi, float(meta.gsd), out)) if i in web else i for i in items]


def _compose(out: SceneOutputs, info, semantic, panoptic, mapping: dict, options: PredictOptions) -> None:
    from geoseg.instances.panoptic import PanopticRule, compose

    compose(out.classes, out.instances, out.instances_gpkg, info, semantic, panoptic, mapping,
            PanopticRule(options.thing_score, options.thing_overlap), out.panoptic, out.panoptic_gpkg,
            options.chunk_size)


def _predict_with_instances(bundle, inputs, out_dir, options: PredictOptions, client, checkpoint, resources
                            ) -> list[SceneOutputs]:
    """``--instances``: this bundle's class raster gives the stuff, the other bundle's instances the things."""
    import shutil

    from geoseg.instances.panoptic import panoptic_classes, thing_classes
    from geoseg.io.output import tmp_folder

    bundle, things_bundle = resolve_bundle(bundle), resolve_bundle(options.instances)
    meta, things_meta = read_meta(bundle), read_meta(things_bundle)
    if is_instance_bundle(meta):
        raise GeosegError("with --instances, the first bundle gives the stuff: it must be a semantic model, not "
                          f"an instance model ({meta.architecture})", bundle)
    if not writes_instances(things_meta):
        raise GeosegError("--instances needs a bundle that writes NAME.instances.tif (an instance model or object "
                          f"channels); this is a semantic model ({things_meta.architecture})", things_bundle)
    if meta.objects is not None:
        raise GeosegError("this bundle gives its own things (object channels): use --panoptic without --instances",
                          bundle)
    instance_only = {n: None for n in ("score_threshold", "mask_threshold", "max_object_size", "coco_results")}
    first = predict(bundle, inputs, out_dir, replace(options, instances=None, panoptic=False, regularize=False,
                                                     **instance_only), client, checkpoint, resources)
    pan, mapping = panoptic_classes(meta.classes, things_meta.classes, thing_classes(things_meta))
    done = []
    with output_dir(out_dir) as out:
        work = tmp_folder(out, "instances")
        try:
            second = predict(things_bundle, inputs, work, replace(
                options, instances=None, panoptic=False, probabilities=False, refine=None, crf=None, overwrite=True,
                engine="auto" if is_instance_bundle(things_meta) else options.engine), client, None, resources)
            for a, b in zip(first, second):
                o = output_paths(out, a.scene, options.probabilities, False, False, True)
                if not options.overwrite and all(p.exists() for p in o.files):
                    done.append(replace(o, skipped=True))
                    continue
                for src, dst in ((b.instances, o.instances), (b.instances_gpkg, o.instances_gpkg)):
                    os.replace(src, dst)
                info = inspect_scene(a.scene, meta.bands, options.allow_no_crs)
                _compose(o, info, meta.classes, pan, mapping, options)
                done.append(o)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return done


def _instance_writer(out: SceneOutputs, info, classes, chunk_size: int, regularize: bool = False):
    """Writes a semantic bundle's decoded objects as the instance outputs (GeoPackage, then raster)."""
    if out.instances is None:
        return None

    def write(instances) -> None:
        from geoseg.instances.io import write_gpkg, write_raster

        write_gpkg(out.instances_gpkg, instances, info, classes, regularize)
        try:
            write_raster(out.instances, instances, info, chunk_size)
        except BaseException:
            out.instances_gpkg.unlink(missing_ok=True)
            raise

    return write


@contextlib.contextmanager
def _restore_torch_threads(uses_torch: bool):
    """Local workers set torch's threads to their share of the cores; the caller's setting comes back after."""
    if not uses_torch:  # the engines take their threads as settings: torch stays unimported
        yield
        return
    import torch

    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _check_unique_stems(scenes: list[str]) -> None:
    seen: dict[str, str] = {}
    for s in scenes:
        stem = output_stem(s)
        if stem in seen:
            raise GeosegError(f"has the same output name {stem!r} as {seen[stem]}; predict them into different folders", s)
        seen[stem] = s
