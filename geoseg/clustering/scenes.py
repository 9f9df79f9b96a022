"""``cluster``: unsupervised class rasters for GeoTIFF scenes, chunk by chunk on Dask.

Per scene, ``OUTPUT/NAME.clusters.tif`` (a COG of cluster ids 0..k-1, 255 = nodata, with
a colour map of the centres' colours and overviews), its QGIS style and GDAL category
names beside it (as for ``NAME.classes.tif``), and ``NAME.clusters.json``: the fitted
model (bands, centres in the scene's units, standardisation, seed, sample size). That
file given back as ``model`` applies the same clusters to other scenes; ``joint`` fits
one model on a sample drawn from every scene (each scene's share in proportion to its
valid pixels drawn), so that neighbouring scenes share their cluster numbers.

``method="slic"`` writes SLIC superpixels instead (:mod:`geoseg.clustering.slic`):
``NAME.segments.gpkg`` (layer ``segments``: one polygon per segment with its id, pixel
count, area and mean band values, styled for QGIS) and ``NAME.segments.tif`` (the segment
ids, int32, 0 = nodata, the raster the polygons were traced from).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geoseg.clustering.kmeans import KMeansModel, fit_kmeans, sample_pixels
from geoseg.errors import GeosegError
from geoseg.inference.scheduler import open_runner, progress_bar, run_graph
from geoseg.inference.tiling import chunk_grid
from geoseg.io.inputs import output_stem, resolve_inputs
from geoseg.io.output import ChunkWriter, atomic_write_text, decorate_classes, output_dir, write_class_sidecars
from geoseg.io.raster import SceneInfo, gdal_cache, inspect_scene, read_window

log = logging.getLogger("geoseg")
METHODS = ("kmeans", "slic")
SEGMENTS_LAYER = "segments"


@dataclass
class ClusterOptions:
    method: str = "kmeans"
    k: int = 6
    bands: tuple[int, ...] = ()  # default: every band of the scene
    sample_size: int = 200_000  # valid pixels drawn per scene for the fit
    seed: int = 0
    joint: bool = False  # one model for every scene
    model: str | None = None  # a NAME.clusters.json to apply instead of fitting
    segment_size: str = "40px"  # slic: the seed spacing, in metres (20m) or pixels (40px)
    compactness: float = 10.0  # slic: weight of position against colour (scikit-image's meaning)
    iterations: int = 10  # slic: assignment and update rounds
    slic_window: int = 1024  # slic: the fixed window grid (px) each SLIC run covers the core of
    chunk_size: int = 2048
    workers: int | None = None
    scheduler: str | None = None
    overwrite: bool = False
    allow_no_crs: bool = False
    progress: bool = True


@dataclass
class ClusterOutputs:
    scene: str
    clusters: Path | None = None  # kmeans: NAME.clusters.tif
    model: Path | None = None  # kmeans: NAME.clusters.json
    segments: Path | None = None  # slic: NAME.segments.gpkg
    segment_ids: Path | None = None  # slic: NAME.segments.tif
    skipped: bool = False
    files: list[Path] = field(default_factory=list)

    @property
    def expected(self) -> list[Path]:
        return [p for p in (self.clusters, self.model, self.segment_ids, self.segments) if p is not None]


def _check(options: ClusterOptions) -> None:
    if options.method not in METHODS:
        raise GeosegError(f"--method must be one of {', '.join(METHODS)}, not {options.method!r}")
    if options.model is None and not 1 <= options.k <= 254:
        raise GeosegError(f"--k must be 1..254, not {options.k}")
    if options.sample_size < 1:
        raise GeosegError(f"--sample-size must be at least 1, not {options.sample_size}")
    if options.model is not None and options.joint:
        raise GeosegError("--model applies a fitted model; --joint fits one: give one of them")
    if options.method == "slic" and (options.model is not None or options.joint):
        raise GeosegError(f"{'--model' if options.model is not None else '--joint'} applies to --method kmeans")
    if options.chunk_size < 1:
        raise GeosegError(f"--chunk-size must be at least 1, not {options.chunk_size}")


def cluster(inputs: list[str] | str, out_dir: str | os.PathLike, options: ClusterOptions | None = None,
            client: object | None = None) -> list[ClusterOutputs]:
    """Cluster every scene of ``inputs`` (files, folders or globs) into ``out_dir``.

    Every scene is checked (readable, bands, CRS) before any is processed; nothing is left half-written.
    """
    options = options or ClusterOptions()
    _check(options)
    given = KMeansModel.read(options.model) if options.model else None
    bands = given.bands if given else options.bands
    scenes = resolve_inputs(inputs, options.allow_no_crs)
    infos = [inspect_scene(s, bands, options.allow_no_crs) for s in scenes]
    stems: dict[str, str] = {}
    for info in infos:
        stem = output_stem(info.path)
        if stem in stems:
            raise GeosegError(f"has the same output name {stem!r} as {stems[stem]}; cluster them into "
                              "different folders", info.path)
        stems[stem] = info.path
    if not bands:  # every band, which must then be the same count in every scene
        counts = {info.count for info in infos}
        if len(counts) > 1 and (options.joint or given):
            raise GeosegError("the scenes have different band counts; choose them with --bands")
    done: list[ClusterOutputs] = []
    with output_dir(out_dir) as out, open_runner(options.scheduler, options.workers, client) as runner, gdal_cache():
        if options.method == "slic":
            outs = [ClusterOutputs(i.path, segments=out / f"{output_stem(i.path)}.segments.gpkg",
                                   segment_ids=out / f"{output_stem(i.path)}.segments.tif") for i in infos]
            steps = {i.path: _slic_settings(i, options) for i in infos}  # every scene checked before any runs
        else:
            outs = [ClusterOutputs(i.path, out / f"{output_stem(i.path)}.clusters.tif",
                                   out / f"{output_stem(i.path)}.clusters.json") for i in infos]
        todo = [(i, o) for i, o in zip(infos, outs)
                if options.overwrite or not all(p.exists() for p in o.expected)]
        if options.joint and todo:
            scene_bands = bands or tuple(range(1, infos[0].count + 1))
            share = max(1, options.sample_size // len(infos))
            sample = np.concatenate([sample_pixels(i, scene_bands, share, options.seed, runner.workers)
                                     for i in infos])
            given = fit_kmeans(sample, options.k, scene_bands, options.seed, ", ".join(scenes))
        for info, o in zip(infos, outs):
            if (info, o) not in todo:
                o.skipped = True
                done.append(o)
                continue
            scene_bands = bands or tuple(range(1, info.count + 1))
            if options.method == "slic":
                _segment(info, scene_bands, steps[info.path], o, options, runner)
                done.append(o)
                continue
            model = given
            if model is None:
                sample = sample_pixels(info, scene_bands, options.sample_size, options.seed, runner.workers)
                model = fit_kmeans(sample, options.k, scene_bands, options.seed, info.path)
            log.info("%s: %d clusters from %d sampled pixels (bands %s)", info.path, model.k, model.sample_size,
                     ",".join(map(str, model.bands)))
            _apply(info, model, o, options, runner)
            done.append(o)
    return done


def _assign_chunk(info: SceneInfo, model: KMeansModel, window) -> np.ndarray:
    data, valid = read_window(info, window, model.bands)
    return model.assign(data, valid)


def _apply(info: SceneInfo, model: KMeansModel, o: ClusterOutputs, options: ClusterOptions, runner) -> None:
    import json

    import dask
    from dask.base import tokenize

    classes = model.classes()
    chunks = [c for row in chunk_grid(info.height, info.width, options.chunk_size) for c in row]
    bar = progress_bar(len(chunks), Path(info.path).name, options.progress)
    writer = None
    try:
        writer = ChunkWriter(o.clusters, info, 1, 255, colormap=classes.colormap(), nearest_overviews=True)
        token = tokenize(info.path, model.to_dict(), options.chunk_size)
        graph = [(c, dask.delayed(_assign_chunk)(info, model, c.window, dask_key_name=f"kmeans-{token}-{c.i}-{c.j}"))
                 for c in chunks]

        def sink(chunk, labels) -> None:
            writer.write(labels, chunk.window)
            bar.update(1)

        run_graph(graph, sink, runner)
        bar.close()
        write_class_sidecars(o.clusters, classes)
        writer.finish_cog(decorate_classes(classes), "NEAREST")
        # the model last: a scene counts as done (and is skipped next time) only when both are there
        atomic_write_text(o.model, json.dumps({**model.to_dict(), "classes": classes.to_dict()["classes"],
                                               "scene": Path(info.path).name}, indent=1) + "\n")
    except BaseException:
        bar.close()
        if writer is not None:
            writer.discard()
        raise
    o.files = [o.clusters, o.model]


def _slic_settings(info: SceneInfo, options: ClusterOptions):
    from geoseg.clustering.slic import SlicSettings, segment_step

    step = segment_step(options.segment_size, info)
    try:
        return SlicSettings(step, options.compactness, options.iterations, options.slic_window)
    except GeosegError as exc:
        raise GeosegError(f"--segment-size {options.segment_size}: {exc}", info.path) from None


def _segment(info: SceneInfo, bands: tuple[int, ...], settings, o: ClusterOutputs, options: ClusterOptions,
             runner) -> None:
    """SLIC in two passes over the fixed window grid: label the cores, then trace each window's segments."""
    import threading

    import dask
    from dask.base import tokenize

    from geoseg.clustering.kmeans import Standardisation
    from geoseg.clustering.slic import Layout, label_window
    from geoseg.io.output import respect_umask, tmp_name, vector_write_errors, write_error
    from geoseg.io.raster import pixel_placement
    from geoseg.io.styles import write_layer_styles

    std = Standardisation.of(sample_pixels(info, bands, options.sample_size, options.seed, runner.workers))
    layout = Layout(info.height, info.width, settings.step, settings.window)
    windows = layout.windows()
    log.info("%s: SLIC seeds every %d px (%d x %d cells), %d windows of %d px", info.path, settings.step,
             layout.cell_rows, layout.cell_cols, len(windows), settings.window)
    token = tokenize(info.path, bands, settings, std.mean.tolist(), std.scale.tolist())
    bar = progress_bar(2 * len(windows), Path(info.path).name, options.progress)
    writer = None
    tmp = tmp_name(o.segments, "gpkg")
    state = {"ids_written": False}
    try:
        writer = ChunkWriter(o.segment_ids, info, 1, 0, nearest_overviews=True, dtype="int32")
        graph = [(win, dask.delayed(label_window)(info, layout, bands, std, settings, win,
                                                   dask_key_name=f"slic-{token}-{i}-{j}"))
                 for i, j, win in windows]

        def write_ids(win, ids) -> None:
            writer.write(ids, win)
            bar.update(1)

        run_graph(graph, write_ids, runner)

        def decorate(ds) -> None:
            ds.set_band_description(1, "segment id")
            ds.update_tags(geoseg_method="slic", geoseg_segment_step_px=str(settings.step),
                           geoseg_compactness=str(settings.compactness))

        writer.finish_cog(decorate, "NEAREST")
        state["ids_written"] = True
        _trace_segments(info, layout, bands, o, tmp, windows, token, bar, runner, threading.Lock(),
                        pixel_placement(info.crs, info.transform))
        write_layer_styles(tmp, {SEGMENTS_LAYER: _segments_qml()})
        respect_umask(tmp)
        os.replace(tmp, o.segments)
        bar.close()
    except vector_write_errors() as exc:
        bar.close()
        _discard_segments(writer, tmp, o, state["ids_written"])
        raise write_error(exc, o.segments) from None
    except BaseException:
        bar.close()
        _discard_segments(writer, tmp, o, state["ids_written"])
        raise
    o.files = [o.segment_ids, o.segments]


def _discard_segments(writer, tmp: Path, o: ClusterOutputs, ids_written: bool) -> None:
    if writer is not None:
        writer.discard()
    tmp.unlink(missing_ok=True)
    if ids_written:  # nothing half-written: this run's ids without their polygons are not kept
        o.segment_ids.unlink(missing_ok=True)


def _trace_segments(info, layout, bands, o, tmp: Path, windows, token, bar, runner, lock, transform) -> None:
    """Pass 2: each window's segments, appended to the GeoPackage in window order whatever order they finish in."""
    import dask
    import geopandas as gpd
    import pyogrio

    from geoseg.clustering.slic import trace_window
    from geoseg.vector.vectorize import GroundMeasure

    measure = GroundMeasure(info.crs, transform)
    order = {(i, j): n for n, (i, j, _) in enumerate(windows)}
    ready: dict[int, object] = {}
    state = {"next": 0, "written": 0}
    columns = [f"mean_b{b}" for b in bands]

    def frame(seg) -> gpd.GeoDataFrame:
        geoms = measure.to_crs(seg.geoms) if len(seg.ids) else seg.geoms
        area = measure.area_perimeter(geoms)[0] if len(seg.ids) else np.zeros(0)
        data = {"segment_id": seg.ids.astype(np.int64), "pixels": seg.pixels.astype(np.int64),
                "area_m2": np.asarray(area, dtype=np.float64)}
        data.update({c: seg.means[:, k].astype(np.float64) for k, c in enumerate(columns)})
        return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(list(geoms), crs=info.crs), crs=info.crs)

    def write(gdf, first: bool) -> None:
        pyogrio.write_dataframe(gdf, tmp, layer=SEGMENTS_LAYER, driver="GPKG", geometry_type="MultiPolygon",
                                promote_to_multi=True, append=not first, layer_options={"SPATIAL_INDEX": "YES"},
                                dataset_options={"VERSION": "1.2"} if first else None)

    def sink(key, seg) -> None:
        with lock:
            ready[order[key]] = seg
            while state["next"] in ready:
                part = ready.pop(state["next"])
                if len(part.ids):
                    write(frame(part), state["written"] == 0)
                    state["written"] += len(part.ids)
                state["next"] += 1
            bar.update(1)

    graph = [((i, j), dask.delayed(trace_window)(info, layout, bands, str(o.segment_ids), i, j, win,
                                                  dask_key_name=f"slic-trace-{token}-{i}-{j}"))
             for i, j, win in windows]
    run_graph(graph, sink, runner)
    if state["written"] == 0:  # a scene without valid pixels: an empty layer
        from geoseg.clustering.slic import WindowSegments

        write(frame(WindowSegments.empty(len(bands))), True)


def _segments_qml() -> str:
    from geoseg.classes import SegClass
    from geoseg.io.styles import fill_qml

    return fill_qml(SegClass(1, "SLIC segments", "#ffd700"), alpha=0, outline=True)
