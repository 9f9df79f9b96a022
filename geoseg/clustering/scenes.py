"""``cluster``: unsupervised class rasters for GeoTIFF scenes, chunk by chunk on Dask.

Per scene, ``OUTPUT/NAME.clusters.tif`` (a COG of cluster ids 0..k-1, 255 = nodata, with
a colour map of the centres' colours and overviews), its QGIS style and GDAL category
names beside it (as for ``NAME.classes.tif``), and ``NAME.clusters.json``: the fitted
model (bands, centres in the scene's units, standardisation, seed, sample size). That
file given back as ``model`` applies the same clusters to other scenes; ``joint`` fits
one model on a sample drawn from every scene (each scene's share in proportion to its
valid pixels drawn), so that neighbouring scenes share their cluster numbers.
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
METHODS = ("kmeans",)


@dataclass
class ClusterOptions:
    method: str = "kmeans"
    k: int = 6
    bands: tuple[int, ...] = ()  # default: every band of the scene
    sample_size: int = 200_000  # valid pixels drawn per scene for the fit
    seed: int = 0
    joint: bool = False  # one model for every scene
    model: str | None = None  # a NAME.clusters.json to apply instead of fitting
    chunk_size: int = 2048
    workers: int | None = None
    scheduler: str | None = None
    overwrite: bool = False
    allow_no_crs: bool = False
    progress: bool = True


@dataclass
class ClusterOutputs:
    scene: str
    clusters: Path  # NAME.clusters.tif
    model: Path  # NAME.clusters.json
    skipped: bool = False
    files: list[Path] = field(default_factory=list)


def _check(options: ClusterOptions) -> None:
    if options.method not in METHODS:
        raise GeosegError(f"--method must be one of {', '.join(METHODS)}, not {options.method!r}")
    if options.model is None and not 1 <= options.k <= 254:
        raise GeosegError(f"--k must be 1..254, not {options.k}")
    if options.sample_size < 1:
        raise GeosegError(f"--sample-size must be at least 1, not {options.sample_size}")
    if options.model is not None and options.joint:
        raise GeosegError("--model applies a fitted model; --joint fits one: give one of them")
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
        outs = [ClusterOutputs(i.path, out / f"{output_stem(i.path)}.clusters.tif",
                               out / f"{output_stem(i.path)}.clusters.json") for i in infos]
        todo = [(i, o) for i, o in zip(infos, outs) if options.overwrite or not (o.clusters.exists()
                                                                               and o.model.exists())]
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
