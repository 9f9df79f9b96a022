"""Provenance as STAC: an Item per scene's outputs, an Item for the model, a Collection over the run.

``NAME.classes.stac.json`` describes the class COG (the ``classification``
extension lists its values, names, colours and nodata; ``proj`` its grid),
the GeoPackage and the evaluation report beside it, with the scene's
footprint and datetime, and links (``derived_from``) to the input scene and
to ``model.stac.json``, the model written with the ``mlm`` (Machine Learning
Model) extension from the bundle's JSON. ``collection.json`` covers every
item of the run folder. Objects are built with pystac; hrefs are relative, so
the run folder can move.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import rasterio

from geoseg.io.output import atomic_write_text

CLASSIFICATION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
MLM = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
MODEL_ITEM = "model.stac.json"
COLLECTION = "collection.json"


def _footprint(src) -> tuple[dict, list[float]]:
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape

    geom = mapping(box(*src.bounds))
    if src.crs is not None:
        geom = transform_geom(src.crs, "EPSG:4326", geom, precision=7)
    return geom, list(shape(geom).bounds)


def scene_datetime(path: str) -> tuple[dt.datetime | None, str]:
    """The acquisition time from the scene's metadata (TIFF or IMD tags), or None."""
    try:
        with rasterio.open(path) as src:
            tags = src.tags()
            imd = src.tags(ns="IMD") if "IMD" in (src.tag_namespaces() or []) else {}
    except rasterio.errors.RasterioError:
        return None, ""
    for key, fmt in (("ACQUISITIONDATETIME", None), ("TIFFTAG_DATETIME", "%Y:%m:%d %H:%M:%S")):
        value = tags.get(key) or imd.get(key)
        if not value:
            continue
        try:
            t = dt.datetime.strptime(value, fmt) if fmt else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            continue
        return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)), key
    return None, ""


def model_item(model: str) -> dict:
    """The bundle described as a STAC Item with the MLM extension."""
    import pystac
    import torch

    from geoseg.models.bundle import is_instance_bundle, read_meta, resolve_bundle

    bundle = resolve_bundle(model)
    meta = read_meta(bundle)
    k = len(meta.classes)
    tile = meta.tile_size
    instance = is_instance_bundle(meta)
    tasks = ["instance-segmentation"] if instance else ["semantic-segmentation"]
    classes = [{"value": c.id, "name": c.name, "description": c.name, "color_hint": c.color.lstrip("#").upper()}
               for c in meta.classes]
    props = {
        "mlm:name": bundle.name,
        "mlm:architecture": f"{meta.architecture} ({meta.encoder} encoder)",
        "mlm:tasks": tasks,
        "mlm:framework": "pytorch",
        "mlm:framework_version": torch.__version__.split("+")[0],
        "mlm:accelerator": "amd64",
        "mlm:accelerator_constrained": False,
        "mlm:pretrained": bool(meta.extra.get("encoder_weights")),
        "mlm:pretrained_source": (meta.extra.get("encoder_weights") or {}).get("source"),
        "mlm:batch_size_suggestion": 1,
        "mlm:input": [{
            "name": "scene tiles",
            "bands": [f"band {b}" for b in meta.bands],
            "input": {"shape": [-1, len(meta.bands), tile, tile], "dim_order": ["batch", "bands", "height", "width"],
                      "data_type": "float32"},
            "value_scaling": [{"type": "z-score", "mean": m, "stddev": s} for m, s in zip(meta.mean, meta.std)],
            "resize_type": None,
            "pre_processing_function": None,
        }],
        "mlm:output": [{
            "name": "classes",
            "tasks": tasks,
            "result": {"shape": [-1, k, tile, tile], "dim_order": ["batch", "channel", "height", "width"],
                       "data_type": "float32"},
            "classification:classes": classes,
            "post_processing_function": None,
        }],
        "geoseg:tile_size": tile, "geoseg:overlap": meta.overlap, "geoseg:gsd": meta.gsd,
    }
    weights = bundle / "model.safetensors"
    item = pystac.Item(
        id=f"model-{bundle.name}", geometry=None, bbox=None,
        datetime=dt.datetime.fromtimestamp(weights.stat().st_mtime, dt.timezone.utc),
        properties=props, stac_extensions=[MLM, CLASSIFICATION])
    item.add_asset("weights", pystac.Asset(
        href=str(weights.resolve()), media_type="application/octet-stream; application=safetensors",
        roles=["mlm:model", "mlm:weights"], extra_fields={"mlm:artifact_type": "safetensors"}, title="weights"))
    item.add_asset("metadata", pystac.Asset(href=str((bundle / "geoseg.json").resolve()),
                                            media_type="application/json", roles=["metadata"],
                                            title="geoseg bundle metadata"))
    return item.to_dict(include_self_link=False)


def scene_item(scene: str, name: str, folder: Path) -> dict | None:
    """The STAC Item of one scene's outputs in the run folder (None before its class raster exists)."""
    import pystac

    classes_tif = folder / f"{name}.classes.tif"
    if not classes_tif.exists():
        return None
    with rasterio.open(classes_tif) as src:
        geom, bbox = _footprint(src)
        raw = src.tags().get("GEOSEG_CLASSES")
        crs = src.crs
        shape, transform, nodata = [src.height, src.width], list(src.transform)[:6], src.nodata
    when, source = scene_datetime(scene)
    props: dict = {"geoseg:datetime_source": source or "processing time (the scene carries no acquisition date)"}
    if when is None:
        when = dt.datetime.fromtimestamp(classes_tif.stat().st_mtime, dt.timezone.utc)
    props["created"] = dt.datetime.fromtimestamp(classes_tif.stat().st_mtime, dt.timezone.utc).isoformat()
    if crs is not None:
        epsg = crs.to_epsg()
        props["proj:code"] = f"EPSG:{epsg}" if epsg else None
        if not epsg:
            props["proj:wkt2"] = crs.to_wkt()
    props["proj:shape"], props["proj:transform"] = shape, transform
    item = pystac.Item(id=name, geometry=geom, bbox=bbox, datetime=when, properties=props,
                       stac_extensions=[CLASSIFICATION, PROJECTION])
    classes = [{"value": c["id"], "name": c["name"], "description": c["name"],
                "color_hint": c["color"].lstrip("#").upper()} for c in json.loads(raw or "[]")]
    if nodata is not None:
        classes.append({"value": int(nodata), "name": "nodata", "description": "no data", "nodata": True})
    item.add_asset("classes", pystac.Asset(
        href=f"./{classes_tif.name}", media_type=pystac.MediaType.COG, roles=["data"], title="class raster",
        extra_fields={"classification:classes": classes, "nodata": nodata}))
    for key, path, media, roles, title in (
            ("style", folder / f"{name}.classes.qml", "application/xml", ["style"], "QGIS style"),
            ("vectors", folder / f"{name}.gpkg", "application/geopackage+sqlite3", ["data"], "class polygons"),
            ("evaluation", folder / f"{name}.evaluate" / "report.json", "application/json", ["metadata"],
             "evaluation report"),
            ("probabilities", folder / f"{name}.probs.tif", pystac.MediaType.COG, ["data"], "class probabilities")):
        if path.exists():
            item.add_asset(key, pystac.Asset(href="./" + os.path.relpath(path, folder), media_type=media,
                                             roles=roles, title=title))
    item.add_link(pystac.Link("derived_from", os.path.realpath(scene), "image/tiff", "input scene"))
    item.add_link(pystac.Link("derived_from", f"./{MODEL_ITEM}", "application/geo+json", "model (MLM)"))
    item.add_link(pystac.Link("collection", f"./{COLLECTION}", "application/json"))
    item.collection_id = "geoseg-run"
    return item.to_dict(include_self_link=False)


def write_stac(wf, folder: Path, results) -> list[Path]:
    """Write the model item, an item per scene with a class raster, and the run's collection."""
    import pystac

    written = []
    atomic_write_text(folder / MODEL_ITEM, json.dumps(model_item(wf.model), indent=2) + "\n")
    written.append(folder / MODEL_ITEM)
    items = []
    for scene, name in dict.fromkeys((r.scene, r.name) for r in results):
        d = scene_item(scene, name, folder)
        if d is None:
            continue
        path = folder / f"{name}.classes.stac.json"
        atomic_write_text(path, json.dumps(d, indent=2) + "\n")
        written.append(path)
        items.append((path, d))
    if items:
        bboxes = [d["bbox"] for _, d in items]
        times = sorted(dt.datetime.fromisoformat(d["properties"]["datetime"].replace("Z", "+00:00")) for _, d in items)
        extent = pystac.Extent(
            pystac.SpatialExtent([[min(b[0] for b in bboxes), min(b[1] for b in bboxes),
                                   max(b[2] for b in bboxes), max(b[3] for b in bboxes)]]),
            pystac.TemporalExtent([[times[0], times[-1]]]))
        coll = pystac.Collection(id="geoseg-run", description=f"geoseg outputs of {wf.path.name}", extent=extent,
                                 license="other", stac_extensions=[CLASSIFICATION])
        for path, _ in items:
            coll.add_link(pystac.Link("item", f"./{path.name}", "application/geo+json"))
        coll.add_link(pystac.Link("related", f"./{MODEL_ITEM}", "application/geo+json", "model (MLM)"))
        atomic_write_text(folder / COLLECTION, json.dumps(coll.to_dict(include_self_link=False), indent=2) + "\n")
        written.append(folder / COLLECTION)
    return written
