"""Vectorize: exact areas, chunk invariance, real masks, geodesic areas, coverage simplification."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.features import shapes
from rasterio.transform import from_origin

from geoseg.cli.main import cli
from geoseg.errors import GeosegError
from geoseg.vector.vectorize import VectorizeOptions, vectorize
from tests.conftest import noisy_rectangles

CLASSES = [{"id": 0, "name": "background", "color": "#000000", "vectorize": False},
           {"id": 1, "name": "building", "color": "#e31a1c"}, {"id": 2, "name": "road", "color": "#7f7f7f"},
           {"id": 3, "name": "water", "color": "#1f78b4"}]
TRANSFORM = from_origin(733600.0, 3725200.0, 0.5, 0.5)


def write_classes(path, arr, crs="EPSG:32616", transform=TRANSFORM, classes=CLASSES, dtype="uint8"):
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1,
                       dtype=dtype, crs=crs, transform=transform, nodata=255 if dtype == "uint8" else None) as dst:
        dst.write(arr.astype(dtype), 1)
        if classes:
            dst.update_tags(GEOSEG_CLASSES=json.dumps(classes))
    return path


def blobs(h=1000, w=1300, seed=0) -> np.ndarray:
    """Classes 0..3 as smooth blobs, with holes, diagonal touches, objects across every seam, and nodata."""
    rng = np.random.default_rng(seed)
    g = rng.random((h // 40 + 2, w // 40 + 2))
    yy, xx = np.mgrid[0:h, 0:w] / 40.0
    f = g[yy.astype(int), xx.astype(int)]
    arr = np.digitize(f, [0.45, 0.65, 0.85]).astype(np.uint8)
    arr[500:520, 500:520] = 0
    arr[505:510, 505:510] = 1                     # a hole with an island
    arr[100, 100] = arr[101, 101] = 3             # diagonal-only touch
    arr[100, 101] = arr[101, 100] = 0
    arr[250:300, 250:300] = 1                     # across the 256 seams
    arr[0:3, 0:5] = 255                           # nodata
    return arr


def read_layers(path) -> dict:
    return {name: pyogrio.read_dataframe(path, layer=name) for name, _ in pyogrio.list_layers(path)
            if name != "layer_styles"}


@pytest.mark.parametrize("connectivity", [4, 8])
def test_area_equals_pixel_count_times_pixel_area(tmp_path, connectivity):
    arr = blobs()
    path = write_classes(tmp_path / "c.tif", arr)
    out = vectorize(path, tmp_path / "c.gpkg", VectorizeOptions(chunk_size=300, connectivity=connectivity,
                                                               progress=False))
    layers = read_layers(out)
    assert sorted(layers) == ["building", "road", "water"]
    for cid, name in ((1, "building"), (2, "road"), (3, "water")):
        gdf = layers[name]
        assert (gdf["class_id"] == cid).all() and (gdf["class_name"] == name).all()
        assert gdf.geometry.is_valid.all()
        assert gdf["area_m2"].sum() == pytest.approx((arr == cid).sum() * 0.25, rel=1e-12)
        assert gdf.geometry.area.sum() == pytest.approx((arr == cid).sum() * 0.25, rel=1e-12)
        assert (gdf["source"] == "c.tif").all()
        assert gdf["mean_confidence"].isna().all()  # no probability raster beside it
        assert gdf.crs.to_epsg() == 32616


def whole_raster_reference(arr: np.ndarray, cid: int):
    geoms = [shapely.geometry.shape(g) for g, v in shapes(arr, mask=arr == cid, connectivity=4, transform=TRANSFORM)]
    return geoms


@pytest.mark.parametrize("connectivity", [4, 8])
def test_layers_are_identical_for_any_chunk_size(tmp_path, connectivity):
    arr = blobs(seed=1)
    path = write_classes(tmp_path / "c.tif", arr)
    runs = {c: read_layers(vectorize(path, tmp_path / f"c{c}.gpkg",
                                     VectorizeOptions(chunk_size=c, connectivity=connectivity, progress=False)))
            for c in (128, 512, 4096)}
    for name in ("building", "road", "water"):
        cid = {"building": 1, "road": 2, "water": 3}[name]
        ref = whole_raster_reference(arr, cid)
        ref_union = shapely.union_all(ref)
        for c, layers in runs.items():
            gdf = layers[name]
            assert len(gdf) == len(runs[4096][name]), (name, c)
            if connectivity == 4:
                assert len(gdf) == len(ref), (name, c)  # one feature per 4-connected component
            assert gdf["area_m2"].sum() == pytest.approx(runs[4096][name]["area_m2"].sum(), rel=1e-12)
            assert shapely.union_all(gdf.geometry.values).symmetric_difference(ref_union).area == 0
    # 8-connectivity joins the diagonal pair into one feature
    if connectivity == 8:
        assert len(runs[128]["water"]) < len(whole_raster_reference(arr, 3))


def test_a_building_across_four_chunks_is_one_polygon(tmp_path):
    arr = np.zeros((512, 512), dtype=np.uint8)
    arr[100:160, 90:170] = 1   # crosses the seams at 128 both ways
    arr[120:130, 120:140] = 0  # with a hole
    path = write_classes(tmp_path / "b.tif", arr)
    gdf = read_layers(vectorize(path, tmp_path / "b.gpkg", VectorizeOptions(chunk_size=128, progress=False)))["building"]
    assert len(gdf) == 1
    poly = gdf.geometry.iloc[0]
    assert len(shapely.get_parts(poly)) == 1 and len(shapely.get_parts(poly)[0].interiors) == 1
    assert gdf["area_m2"].iloc[0] == (60 * 80 - 10 * 20) * 0.25
    assert gdf["perimeter_m"].iloc[0] == pytest.approx((2 * (60 + 80) + 2 * (10 + 20)) * 0.5)


def test_real_spacenet_mask_gives_43_buildings_equal_to_the_footprints(shared_data, tmp_path):
    sol = shared_data / "solaris"
    with rasterio.open(sol / "sample_geotiff.tif") as src:
        crs, transform = src.crs, src.transform
    with rasterio.open(sol / "sample_fp_mask_from_geojson.tif") as src:
        mask = src.read(1)
    arr = (mask == 255).astype(np.uint8)
    path = write_classes(tmp_path / "fp.tif", arr, crs=crs, transform=transform)
    # One footprint rasterizes into two pieces that touch only at a corner: 8-connectivity keeps it whole.
    four = read_layers(vectorize(path, tmp_path / "fp4.gpkg", VectorizeOptions(chunk_size=128, progress=False)))
    assert len(four["building"]) == 44
    gdf = read_layers(vectorize(path, tmp_path / "fp.gpkg", VectorizeOptions(chunk_size=128, connectivity=8,
                                                                            progress=False)))["building"]
    assert len(gdf) == 43
    assert gdf["area_m2"].sum() == pytest.approx(33818 * 0.25, rel=1e-12)
    footprints = shapely.union_all([shapely.geometry.shape(g) for g, _ in
                                    shapes(arr, mask=arr == 1, transform=transform)])
    assert shapely.union_all(gdf.geometry.values).symmetric_difference(footprints).area == 0


def test_geographic_areas_are_geodesic(shared_data, tmp_path):
    from pyproj import Geod

    src_path = shared_data / "solaris" / "sample_road_raster_mask.tif"
    with rasterio.open(src_path) as src:
        mask, crs, t = src.read(1), src.crs, src.transform
    assert crs.to_epsg() == 4326
    arr = (mask > 0).astype(np.uint8) * 2
    path = write_classes(tmp_path / "roads.tif", arr, crs=crs, transform=t)
    gdf = read_layers(vectorize(path, tmp_path / "roads.gpkg", VectorizeOptions(chunk_size=512, progress=False)))["road"]
    geod = Geod(ellps="WGS84")
    # independent: every road pixel's own geodesic area, row by row
    expected = 0.0
    for r in np.nonzero((arr == 2).any(axis=1))[0]:
        x0, y0 = t * (0, r)
        x1, y1 = t * (1, r + 1)
        pix, _ = geod.polygon_area_perimeter([x0, x1, x1, x0], [y0, y0, y1, y1])
        expected += abs(pix) * (arr[r] == 2).sum()
    assert gdf["area_m2"].sum() == pytest.approx(expected, rel=0.005)
    assert 0.05 < gdf["area_m2"].sum() / (t.a * t.a * (arr == 2).sum() * 111_000**2) < 20  # not square degrees


def smooth_classes(h: int, w: int, seed: int) -> np.ndarray:
    """Classes 1..3 from a bilinearly smoothed field: pixel-staircase boundaries in every direction."""
    rng = np.random.default_rng(seed)
    g = rng.random((h // 50 + 2, w // 50 + 2))
    yy, xx = np.mgrid[0:h, 0:w] / 50.0
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = yy - y0, xx - x0
    f = (g[y0, x0] * (1 - fx) + g[y0, x0 + 1] * fx) * (1 - fy) + (g[y0 + 1, x0] * (1 - fx) + g[y0 + 1, x0 + 1] * fx) * fy
    return (np.digitize(f, [0.4, 0.6]) + 1).astype(np.uint8)


def test_simplified_layers_still_form_a_gap_free_coverage(tmp_path):
    arr = smooth_classes(400, 500, seed=2)  # classes meet everywhere, no background between them
    path = write_classes(tmp_path / "s.tif", arr)
    layers = read_layers(vectorize(path, tmp_path / "s.gpkg", VectorizeOptions(chunk_size=128, simplify=2.0,
                                                                              progress=False)))
    geoms = np.concatenate([shapely.get_parts(g.geometry.values) for g in layers.values()])
    before = sum(len(shapely.get_coordinates(shapely.geometry.shape(g))) for g, _ in shapes(arr, transform=TRANSFORM))
    assert len(shapely.get_coordinates(geoms)) < before  # it did simplify
    assert shapely.coverage_is_valid(geoms, gap_width=0.0)  # shared edges stay shared: no overlaps
    # No gaps at all: the union is exactly the raster's footprint and the pieces' areas add up to it.
    # (GEOS's narrow-gap heuristic, gap_width > 0, also flags a polygon that fills a notch in the
    # coverage's outer boundary; it does so on the unsimplified whole-raster polygons too.)
    union = shapely.union_all(geoms)
    footprint = shapely.box(*rasterio.transform.array_bounds(*arr.shape, TRANSFORM))
    assert shapely.symmetric_difference(union, footprint).area == pytest.approx(0, abs=1e-6)
    assert shapely.area(geoms).sum() == pytest.approx(footprint.area, rel=1e-9)
    total = sum(g["area_m2"].sum() for g in layers.values())
    assert total == pytest.approx(arr.size * 0.25, rel=1e-6)  # the outline is kept; classes trade area only


def test_min_area_and_fill_holes(tmp_path):
    arr = np.zeros((200, 200), dtype=np.uint8)
    arr[10:60, 10:60] = 1
    arr[20:22, 20:22] = 0        # 1 m² hole: filled
    arr[30:40, 30:40] = 0        # 25 m² hole: kept
    arr[100:102, 100:102] = 1    # 1 m² speck: dropped
    path = write_classes(tmp_path / "m.tif", arr)
    gdf = read_layers(vectorize(path, tmp_path / "m.gpkg", VectorizeOptions(min_area=2, fill_holes=5,
                                                                           progress=False)))["building"]
    assert len(gdf) == 1
    assert gdf["area_m2"].iloc[0] == (2500 - 100) * 0.25


def test_mean_confidence_from_the_probability_raster_beside(tmp_path):
    arr = np.zeros((64, 64), dtype=np.uint8)
    arr[10:20, 10:30] = 1
    write_classes(tmp_path / "x.classes.tif", arr)
    probs = np.zeros((4, 64, 64), dtype=np.uint8)
    probs[1, 10:20, 10:20] = 255
    probs[1, 10:20, 20:30] = 51
    with rasterio.open(tmp_path / "x.probs.tif", "w", driver="GTiff", width=64, height=64, count=4, dtype="uint8",
                       crs="EPSG:32616", transform=TRANSFORM) as dst:
        dst.write(probs)
    gdf = read_layers(vectorize(tmp_path / "x.classes.tif", tmp_path / "x.gpkg", VectorizeOptions(progress=False)))
    assert gdf["building"]["mean_confidence"].iloc[0] == pytest.approx((1.0 + 0.2) / 2)


def test_empty_classes_get_valid_empty_layers_and_styles(tmp_path):
    arr = np.zeros((50, 50), dtype=np.uint8)
    arr[5:10, 5:10] = 2
    path = write_classes(tmp_path / "e.tif", arr)
    out = vectorize(path, tmp_path / "e.gpkg", VectorizeOptions(progress=False))
    layers = read_layers(out)
    assert {k: len(v) for k, v in layers.items()} == {"building": 0, "road": 1, "water": 0}
    info = pyogrio.read_info(out, layer="water")
    assert info["geometry_type"] == "MultiPolygon" and info["crs"] == "EPSG:32616"
    import sqlite3

    con = sqlite3.connect(out)
    rows = con.execute("SELECT f_table_name, useAsDefault, styleQML FROM layer_styles ORDER BY f_table_name").fetchall()
    assert [r[0] for r in rows] == ["building", "road", "water"] and all(r[1] == 1 for r in rows)
    assert '"color" type="QString" value="227,26,28,255"' in rows[0][2]
    assert con.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE 'rtree_road_geom%'").fetchone()[0] > 0


def test_unknown_class_ids_are_named_and_warned(tmp_path, caplog):
    arr = np.zeros((50, 50), dtype=np.uint8)
    arr[5:10, 5:10] = 7
    path = write_classes(tmp_path / "u.tif", arr)
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        layers = read_layers(vectorize(path, tmp_path / "u.gpkg", VectorizeOptions(progress=False)))
    assert len(layers["class_7"]) == 1 and layers["class_7"]["class_name"].iloc[0] == "class_7"
    assert "class ids 7 are not in the class list" in caplog.text


def test_bad_input_one_line_and_no_partial_gpkg(tmp_path):
    arr = np.zeros((50, 50), dtype=np.float32)
    f = write_classes(tmp_path / "float.tif", arr, dtype="float32")
    r = CliRunner().invoke(cli, ["vectorize", str(f), "-o", str(tmp_path / "f.gpkg")])
    assert r.exit_code == 1 and r.stderr.strip() == f"geoseg: error: {f}: is a float32 raster; vectorize needs integer class ids"
    n = write_classes(tmp_path / "nocrs.tif", np.ones((50, 50)), crs=None)
    r = CliRunner().invoke(cli, ["vectorize", str(n), "-o", str(tmp_path / "n.gpkg")])
    assert r.exit_code == 1 and "has no CRS; pass --allow-no-crs" in r.stderr
    r = CliRunner().invoke(cli, ["vectorize", str(n), "-o", str(tmp_path / "n.gpkg"), "--allow-no-crs", "--no-progress"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["vectorize", str(n), "-o", str(tmp_path / "missing" / "n.gpkg"), "--allow-no-crs"])
    assert r.exit_code == 1 and "missing: output directory does not exist" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float.tif", "n.gpkg", "nocrs.tif"]
    with pytest.raises(GeosegError, match="--connectivity must be 4 or 8"):
        VectorizeOptions(connectivity=6)


def test_percolating_classes_across_many_seams_match_the_whole_raster(tmp_path):
    """Classes cut from one smooth field at its quartiles percolate into labyrinths with many holes."""
    rng = np.random.default_rng(7)
    g = rng.random((1024 // 20 + 2, 1024 // 20 + 2))
    yy, xx = np.mgrid[0:1024, 0:1024] / 20.0
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = yy - y0, xx - x0
    f = (g[y0, x0] * (1 - fx) + g[y0, x0 + 1] * fx) * (1 - fy) + (g[y0 + 1, x0] * (1 - fx) + g[y0 + 1, x0 + 1] * fx) * fy
    arr = np.digitize(f, np.quantile(f, [0.25, 0.5, 0.75])).astype(np.uint8)
    path = write_classes(tmp_path / "lab.tif", arr)
    layers = read_layers(vectorize(path, tmp_path / "lab.gpkg", VectorizeOptions(chunk_size=128, progress=False)))
    for cid, name in ((1, "building"), (2, "road"), (3, "water")):
        ref = whole_raster_reference(arr, cid)
        gdf = layers[name]
        assert len(gdf) == len(ref), name
        assert gdf.geometry.area.sum() == (arr == cid).sum() * 0.25, name
        assert shapely.union_all(gdf.geometry.values).symmetric_difference(shapely.union_all(ref)).area == 0


def _labels_and_polygons(arr: np.ndarray, diagonal: bool):
    from geoseg.vector.tracing import label_values, polygons

    skip = np.zeros(256, dtype=bool)
    skip[0] = True
    lab, code, count = label_values(arr, skip, diagonal)
    return lab, code, count, polygons


@pytest.mark.parametrize("seed", range(6))
def test_compiled_components_and_rings_match_scipy_and_gdal(seed):
    """The compiled labeller equals scipy's per class; its polygons equal GDAL's shapes exactly."""
    from affine import Affine
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    for trial in range(60):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        k = int(rng.integers(2, 5))
        arr = rng.integers(0, k, (h, w)).astype(np.uint8)  # noise: many diagonal pinches and nested holes
        if trial % 2:
            arr = np.kron(rng.integers(0, k, (h // 3 + 1, w // 3 + 1)), np.ones((3, 3), int))[:h, :w].astype(np.uint8)
        for diagonal in (False, True):
            lab, code, count, _ = _labels_and_polygons(arr, diagonal)
            assert count[0] == (arr == 0).sum() and count.sum() == arr.size
            for v in range(1, k):
                ref, n = ndimage.label(arr == v, structure=np.ones((3, 3)) if diagonal else None)
                mine = lab[arr == v]
                assert (code[mine] == v).all()
                assert len(set(zip(mine.tolist(), ref[arr == v].tolist()))) == n == len(np.unique(mine))
        lab, code, count, polygons = _labels_and_polygons(arr, False)
        ids, geoms = polygons(lab, 7, 11)
        assert ids.tolist() == list(range(1, len(count)))
        assert shapely.is_valid(geoms).all()
        assert (shapely.area(geoms) == count[ids]).all()
        gdal = {int(v): shapely.geometry.shape(g)
                for g, v in shapes(lab, mask=lab > 0, connectivity=4, transform=Affine.translation(7, 11))}
        for i, g in zip(ids.tolist(), geoms):
            assert shapely.symmetric_difference(g, gdal[i]).area == 0
            assert len(g.interiors) >= len(gdal[i].interiors)  # holes touching at a corner may be split


@pytest.mark.parametrize("dtype,values", [("int16", (-3, 1, 2)), ("uint16", (1, 700, 60000)), ("int32", (1, 2, 100000))])
def test_wide_and_signed_class_ids(tmp_path, dtype, values):
    arr = np.zeros((120, 150), dtype=dtype)
    arr[10:50, 10:60] = values[0]
    arr[60:110, 20:140] = values[1]
    arr[5:30, 100:145] = values[2]
    path = write_classes(tmp_path / "w.tif", arr, classes=None, dtype=dtype)
    layers = read_layers(vectorize(path, tmp_path / "w.gpkg", VectorizeOptions(chunk_size=64, progress=False)))
    areas = {int(g["class_id"].iloc[0]): g["area_m2"].sum() for g in layers.values() if len(g)}
    assert areas == {v: pytest.approx((arr == v).sum() * 0.25) for v in values}


def test_output_is_byte_identical_across_runs_and_worker_counts(tmp_path):
    """Features are written in a fixed order (chunk order, seam-joined ones sorted), whatever order chunks finish."""
    import sqlite3

    arr = blobs(700, 900, seed=11)
    path = write_classes(tmp_path / "c.tif", arr)
    dumps = []
    for n, workers in enumerate((1, 2, 2, 4)):
        gpkg = vectorize(path, tmp_path / f"v{n}.gpkg", VectorizeOptions(chunk_size=128, workers=workers,
                                                                          progress=False))
        con = sqlite3.connect(gpkg)
        layers = [r[0] for r in con.execute("select table_name from gpkg_contents where data_type='features' "
                                            "order by table_name")]
        dumps.append([(layer, con.execute(f'select * from "{layer}" order by fid').fetchall()) for layer in layers])
        con.close()
    assert all(d == dumps[0] for d in dumps[1:])
    assert sum(len(rows) for _, rows in dumps[0]) > 20


@pytest.mark.parametrize("crs,transform,seed", [("EPSG:32616", TRANSFORM, 0), ("EPSG:32616", TRANSFORM, 2),
                                                ("EPSG:4326", from_origin(-43.2, -22.9, 4.5e-6, 4.5e-6), 0)])
def test_regularize_gives_right_angles_valid_polygons_and_keeps_areas(tmp_path, crs, transform, seed):
    """--regularize on noisy rotated rectangles: one valid polygon per object with corners within 2° of right
    angles and areas within 10% of the pixel outlines, in a projected and in a geographic CRS (where
    buildingregulariser alone, with its tolerances in degrees, returns nothing)."""
    from geoseg.vector.regularize import right_angle_error

    arr, n = noisy_rectangles(seed)
    write_classes(tmp_path / "r.classes.tif", arr, crs=crs, transform=transform)
    plain = gpd_read(vectorize(tmp_path / "r.classes.tif", tmp_path / "plain.gpkg",
                               VectorizeOptions(progress=False, min_area=1)))
    r = CliRunner().invoke(cli, ["vectorize", str(tmp_path / "r.classes.tif"), "-o", str(tmp_path / "reg.gpkg"),
                                 "--regularize", "--min-area", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    reg = gpd_read(tmp_path / "reg.gpkg")
    assert len(plain) == len(reg) == n
    plain = plain.sort_values("area_m2").reset_index(drop=True)
    reg = reg.sort_values("area_m2").reset_index(drop=True)
    assert reg.geometry.is_valid.all() and not reg.geometry.is_empty.any()
    utm = reg.estimate_utm_crs() if reg.crs.is_geographic else reg.crs
    for a, b in zip(plain.to_crs(utm).geometry, reg.to_crs(utm).geometry):
        (a,) = list(getattr(a, "geoms", [a]))  # the layers are MultiPolygon, one part per object here
        parts = list(getattr(b, "geoms", [b]))
        assert len(parts) == 1
        assert right_angle_error(parts[0]) <= 2.0
        assert len(parts[0].exterior.coords) - 1 <= 8  # a rectangle, not a staircase
        assert len(a.exterior.coords) - 1 > 8  # the pixel outline was a staircase (or a plain box at 0°)
        assert abs(b.area - a.area) / a.area < 0.10
    np.testing.assert_allclose(reg["area_m2"], reg.to_crs(utm).geometry.area, rtol=1e-3)  # fields re-measured


def gpd_read(path):
    import geopandas as gpd

    return gpd.read_file(path, layer="building")


def _touching_discs(h=700, w=2400):
    """Buildings (class 1) as discs: touching pairs (one straddling the split grid's first tile seam, 896..1024
    px), single discs, and a long block larger than the split overlap across a seam; a road (class 2) of two
    touching discs, which is not split. Returns the raster and the expected objects, each a boolean mask."""
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.zeros((h, w), np.uint8)
    objects = []

    def disc(cy, cx, r):
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r

    for cy, cx in ((150, 200), (150, 930), (450, 1700)):  # pairs: centres 54 px apart, radius 30 (necks ~12 px)
        a, b = disc(cy, cx, 30), disc(cy, cx + 54, 30)
        arr[a | b] = 1
        objects += [a & ~(xx >= cx + 27), b & (xx >= cx + 27)]
    for cy, cx, r in ((450, 300, 40), (600, 1000, 25), (120, 2200, 35)):
        arr[disc(cy, cx, r)] = 1
        objects.append(disc(cy, cx, r))
    block = (yy >= 300) & (yy < 340) & (xx >= 1700) & (xx < 2100)  # 400 x 40 px, across the 1792 seam
    arr[block] = 1
    objects.append(block)
    arr[disc(600, 500, 30) | disc(600, 554, 30)] = 2
    return arr, objects


def test_split_touching_splits_touching_discs_and_keeps_single_ones_whole(tmp_path):
    from rasterio.features import rasterize

    arr, objects = _touching_discs()
    path = write_classes(tmp_path / "c.tif", arr)
    runs = [read_layers(vectorize(path, tmp_path / f"c{chunk}.gpkg", VectorizeOptions(
        split_touching=True, chunk_size=chunk, workers=workers, progress=False)))
        for chunk, workers in ((256, 2), (4096, 1))]
    # identical whatever the chunks and workers (the split runs on its own tile grid)
    assert runs[0]["building"].geometry.to_wkb().tolist() == runs[1]["building"].geometry.to_wkb().tolist()
    layers = runs[0]
    b = layers["building"]
    assert len(b) == len(objects) == 10 and b.geometry.is_valid.all()
    ids = rasterize(zip(b.geometry, range(1, len(b) + 1)), out_shape=arr.shape, transform=TRANSFORM, dtype="int32")
    assert ((ids > 0) == (arr == 1)).all()  # the features tile the class mask exactly: nothing lost or doubled
    assert b["area_m2"].sum() == pytest.approx((arr == 1).sum() * 0.25, rel=1e-12)
    found = set()
    for m in objects:  # each expected object is one feature (a pair's halves meet at the neck, give or take a pixel)
        k = np.bincount(ids[m]).argmax()
        iou = (m & (ids == k)).sum() / (m | (ids == k)).sum()
        assert k > 0 and iou > 0.95
        found.add(int(k))
    assert len(found) == 10
    assert b["mean_confidence"].isna().all()  # no probability raster beside it
    assert len(layers["road"]) == 1  # a class that is not split keeps its touching discs as one polygon


def test_split_distance_per_component_equals_the_whole_tile_transform():
    """The split's distance transform, computed per component box, equals scipy's on the whole mask."""
    from scipy import ndimage

    from geoseg.vector.split import distance_inside

    rng = np.random.default_rng(5)
    for _ in range(60):
        m = ndimage.gaussian_filter(rng.random((150, 170)), rng.uniform(1, 6)) > rng.uniform(0.45, 0.6)
        m[:, rng.integers(170)] = rng.random() < 0.5  # objects cut by the tile's edge, or a wall
        np.testing.assert_array_equal(distance_inside(m), ndimage.distance_transform_edt(m).astype(np.float32))
    assert not distance_inside(np.zeros((8, 8), bool)).any()


def test_split_mask_equals_the_whole_tile_watershed_of_scikit_image():
    """The per-component shortcuts (distance boxes, one-maximum plateaus) give the objects that scikit-image's
    h_maxima and watershed give on the whole tile."""
    from scipy import ndimage
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    from geoseg.vector.split import split_mask

    rng = np.random.default_rng(11)
    for n in range(40):
        m = ndimage.gaussian_filter(rng.random((160, 180)), rng.uniform(1, 6)) > rng.uniform(0.45, 0.6)
        depth = (1.0, 2.0, 3.0)[n % 3]
        dist = ndimage.distance_transform_edt(m).astype(np.float32)
        seeds, _ = ndimage.label(h_maxima(dist, depth).astype(bool) & m, structure=np.ones((3, 3)))
        want = watershed(-dist, markers=seeds, mask=m, connectivity=1)
        rest, k = ndimage.label(m & (want == 0))
        want[rest > 0] = rest[rest > 0] + want.max()
        np.testing.assert_array_equal(split_mask(m, depth), want)


def test_split_touching_needs_a_class_to_split(tmp_path):
    arr, _ = _touching_discs(700, 800)
    path = write_classes(tmp_path / "c.tif", arr)
    with pytest.raises(GeosegError, match="--split-classes: no class 'tree'"):
        vectorize(path, tmp_path / "a.gpkg", VectorizeOptions(split_touching=True, split_classes="tree,road",
                                                             progress=False))
    nob = [c for c in CLASSES if c["name"] != "building"]
    path = write_classes(tmp_path / "d.tif", np.where(arr == 1, 0, arr), classes=nob)
    with pytest.raises(GeosegError, match="no building class"):
        vectorize(path, tmp_path / "b.gpkg", VectorizeOptions(split_touching=True, progress=False))
    out = vectorize(path, tmp_path / "b.gpkg", VectorizeOptions(split_touching=True, split_classes="road",
                                                               progress=False))
    assert len(read_layers(out)["road"]) == 2  # the road's two touching discs split
    assert not (tmp_path / "a.gpkg").exists()
