"""geoseg cluster: k-means recovers spectral classes, chunk-invariant, ordered, applied across scenes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score

from geoseg.cli.main import cli
from geoseg.clustering import ClusterOptions, KMeansModel, cluster, sample_pixels
from geoseg.io.raster import inspect_scene
from tests.conftest import UTM, assert_one_line_error, write_scene

# three covers' spectra in 4 bands (water, vegetation, bare soil): darkest to brightest by mean
SPECTRA = np.array([[30, 40, 25, 10], [60, 90, 50, 170], [140, 130, 120, 150]], dtype=float)


def three_covers(h=700, w=900, seed=0, nodata_corner=True):
    """A 4-band uint16 scene of three covers in irregular patches, with noise and a nodata corner (0)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(2, h, w)), (0, 25, 25))
    truth = np.where(field[0] > 0, 0, np.where(field[1] > 0, 1, 2)).astype(np.uint8)
    img = SPECTRA[truth].transpose(2, 0, 1) + rng.normal(0, 8, (4, h, w))
    img = np.clip(img, 1, 65535).astype(np.uint16)
    if nodata_corner:
        img[:, : h // 4, : w // 3] = 0
        truth[: h // 4, : w // 3] = 255
    return img, truth


def read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.profile, src.colormap(1), src.tags(ns="IMAGE_STRUCTURE"), src.overviews(1)


def test_kmeans_recovers_three_spectral_classes_for_any_chunking(tmp_path):
    img, truth = three_covers()
    scene = write_scene(tmp_path / "s.tif", img, nodata=0)
    got = {}
    for name, chunk, workers, scheduler in (("big", 4096, 1, "threads"), ("small", 256, 2, "threads"),
                                            ("odd", 300, 3, "threads"), ("cluster", 512, 2, "local")):
        r = CliRunner().invoke(cli, ["cluster", str(scene), "-o", str(tmp_path / name), "--k", "3",
                                     "--chunk-size", str(chunk), "--workers", str(workers), "--no-progress",
                                     "--scheduler", scheduler])
        assert r.exit_code == 0, r.output
        got[name] = read(tmp_path / name / "s.clusters.tif")
    labels, profile, cmap, structure, overviews = got["big"]
    assert all((g[0] == labels).all() for g in got.values())  # bit-identical for every chunk size, worker count and scheduler
    valid = truth != 255
    assert (labels[~valid] == 255).all() and (labels[valid] < 3).all()
    assert adjusted_rand_score(truth[valid], labels[valid]) >= 0.95
    # numbered darkest first: the covers come out as 0, 1, 2 in their order of brightness
    assert (labels[valid] == truth[valid]).mean() > 0.98
    assert profile["crs"] == rasterio.crs.CRS.from_string(UTM) and profile["nodata"] == 255
    assert structure.get("LAYOUT") == "COG" and overviews
    model = json.loads((tmp_path / "big" / "s.clusters.json").read_text())
    assert np.allclose(model["centres"], SPECTRA, atol=3)
    assert model["bands"] == [1, 2, 3, 4] and model["k"] == 3
    # the legend colours each cluster with its centre's bands 1-3, stretched: the brightest is the lightest
    assert sum(cmap[2][:3]) > sum(cmap[1][:3]) > sum(cmap[0][:3]) and cmap[255][3] == 0
    assert (tmp_path / "big" / "s.clusters.qml").is_file()


def test_sample_skips_nodata_and_does_not_depend_on_workers(tmp_path):
    img, truth = three_covers(seed=1)
    info = inspect_scene(write_scene(tmp_path / "s.tif", img, nodata=0))
    a = sample_pixels(info, (1, 2, 3, 4), 20_000, seed=5, workers=1)
    b = sample_pixels(info, (1, 2, 3, 4), 20_000, seed=5, workers=3)
    assert np.array_equal(a, b) and (a > 0).all()
    # about the share of valid pixels drawn (a quarter of a third is nodata), from every cover
    assert 0.85 * 20_000 < len(a) < 1.0 * 20_000 + 64
    c = sample_pixels(info, (1, 2, 3, 4), 20_000, seed=6)
    assert not np.array_equal(a[:100], c[:100])


def test_a_saved_model_and_a_joint_fit_number_neighbouring_scenes_alike(tmp_path):
    img_a, truth_a = three_covers(seed=2, nodata_corner=False)
    img_b, truth_b = three_covers(seed=3, nodata_corner=False)
    img_b[:, :, : img_b.shape[2] // 2] = SPECTRA[2][:, None, None].astype(np.uint16)  # mostly bright soil
    truth_b[:, : truth_b.shape[1] // 2] = 2
    a = write_scene(tmp_path / "a.tif", img_a, nodata=0)
    b = write_scene(tmp_path / "b.tif", img_b, nodata=0)
    cluster([str(a)], tmp_path / "fit", ClusterOptions(k=3, progress=False))
    model = tmp_path / "fit" / "a.clusters.json"
    outs = cluster([str(b)], tmp_path / "applied", ClusterOptions(model=str(model), progress=False))
    assert [p.name for p in outs[0].files] == ["b.clusters.tif", "b.clusters.json"]
    applied = read(tmp_path / "applied" / "b.clusters.tif")[0]
    assert (applied == truth_b).mean() > 0.98  # a's clusters, applied to b: the same numbers for the same covers
    same = KMeansModel.read(tmp_path / "applied" / "b.clusters.json")
    assert np.array_equal(same.centres, KMeansModel.read(model).centres)
    cluster([str(a), str(b)], tmp_path / "joint", ClusterOptions(k=3, joint=True, progress=False))
    for name, truth in (("a", truth_a), ("b", truth_b)):
        assert (read(tmp_path / "joint" / f"{name}.clusters.tif")[0] == truth).mean() > 0.98


def test_repeated_run_skips_and_overwrite_replaces(tmp_path):
    img, _ = three_covers(h=200, w=200)
    scene = write_scene(tmp_path / "s.tif", img, nodata=0)
    r = CliRunner().invoke(cli, ["cluster", str(scene), "-o", str(tmp_path / "o"), "--k", "3", "--no-progress"])
    assert r.exit_code == 0 and r.stdout.splitlines() == [str(tmp_path / "o" / "s.clusters.tif"),
                                                          str(tmp_path / "o" / "s.clusters.json")]
    r = CliRunner().invoke(cli, ["cluster", str(scene), "-o", str(tmp_path / "o"), "--k", "3", "--no-progress"])
    assert r.exit_code == 0 and r.stdout.startswith("skipped")
    r = CliRunner().invoke(cli, ["cluster", str(tmp_path), "-o", str(tmp_path / "o"), "--k", "4", "--no-progress",
                                 "--overwrite"])
    assert r.exit_code == 0, r.output  # the folder's own output (o/) is not taken as a scene
    assert json.loads((tmp_path / "o" / "s.clusters.json").read_text())["k"] == 4


@pytest.mark.parametrize("case", ["missing", "k", "model", "constant", "bands"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, case):
    img, _ = three_covers(h=64, w=64, nodata_corner=False)
    scene = write_scene(tmp_path / "s.tif", img, nodata=0)
    args, needles = [str(scene)], []
    if case == "missing":
        args, needles = [str(tmp_path / "nope.tif")], ["nope.tif", "no such file"]
    elif case == "k":
        args, needles = [str(scene), "--k", "0"], ["--k must be 1..254"]
    elif case == "model":
        (tmp_path / "m.json").write_text('{"method": "kmeans", "bands": [1]}')
        args, needles = [str(scene), "--model", str(tmp_path / "m.json")], ["m.json", "not a geoseg k-means model"]
    elif case == "constant":
        flat = write_scene(tmp_path / "flat.tif", np.full((1, 64, 64), 7, np.uint8), nodata=0)
        args, needles = [str(flat), "--k", "3"], ["flat.tif", "1 distinct valid pixel value", "at least 3"]
    else:
        args, needles = [str(scene), "--bands", "1,5"], ["s.tif", "has 4 bands"]
    r = CliRunner().invoke(cli, ["cluster", *args, "-o", str(tmp_path / "out"), "--no-progress"])
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "out").exists()


def test_evaluate_match_clusters_is_the_best_one_to_one_matching(tmp_path):
    import itertools

    img, truth = three_covers(seed=4)
    scene = write_scene(tmp_path / "s.tif", img, nodata=0)
    # the reference numbers the covers differently: water 2, vegetation 0, bare 1
    ref = np.array([2, 0, 1], np.uint8)[np.minimum(truth, 2)]
    ref[truth == 255] = 255
    write_scene(tmp_path / "ref.tif", ref[None], nodata=255)
    (tmp_path / "classes.yaml").write_text("classes:\n- {id: 0, name: vegetation}\n- {id: 1, name: bare}\n"
                                           "- {id: 2, name: water}\n")
    assert cluster([str(scene)], tmp_path / "out", ClusterOptions(k=4, progress=False))
    r = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "out" / "s.clusters.tif"), str(tmp_path / "ref.tif"),
                                 "-o", str(tmp_path / "ev"), "--classes", str(tmp_path / "classes.yaml"),
                                 "--match-clusters", "--no-progress", "--no-audit"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    # by hand: every one-to-one assignment of 3 of the 4 clusters to the classes; the most matched pixels wins
    labels = read(tmp_path / "out" / "s.clusters.tif")[0]
    valid = ref != 255
    counts = np.zeros((3, 4), np.int64)
    np.add.at(counts, (ref[valid], labels[valid]), 1)
    best = max(itertools.permutations(range(4), 3), key=lambda p: sum(counts[c, p[c]] for c in range(3)))
    (scene_match,) = report["cluster_matching"]["scenes"]
    assert scene_match["clusters"] == {f"cluster {best[c]}": n for c, n in
                                       sorted(enumerate(["vegetation", "bare", "water"]), key=lambda t: best[t[0]])}
    assert scene_match["unmatched"] == [f"cluster {({0, 1, 2, 3} - set(best)).pop()}"]
    for c, row in enumerate(report["classes"]):
        pred = labels == best[c]
        tp = (pred & (ref == c)).sum()
        iou = tp / ((pred & valid).sum() + (ref == c).sum() - tp)  # unmatched clusters' pixels are misses
        assert row["iou"] == pytest.approx(iou, abs=1e-9)
    assert report["overall"]["pixel_accuracy"] == pytest.approx(
        sum(counts[c, best[c]] for c in range(3)) / valid.sum(), abs=1e-12)
    assert "clusters matched one to one (Hungarian)" in r.stdout


# ---- SLIC superpixels -------------------------------------------------------------------------------------


def slic_scene(tmp_path, h=1100, w=1300):
    img, _ = three_covers(h=h, w=w, seed=3)
    img = img[:3]
    return write_scene(tmp_path / "s.tif", img, nodata=0), img


def read_segments(folder):
    import pyogrio

    frame = pyogrio.read_dataframe(folder / "s.segments.gpkg", layer="segments")
    with rasterio.open(folder / "s.segments.tif") as src:
        return frame.sort_values("segment_id").reset_index(drop=True), src.read(1), src.transform, src.profile


def test_slic_polygons_tile_the_scene_and_do_not_depend_on_chunks_or_workers(tmp_path):
    """Windows of 512 px (a 3 x 3 grid on this scene): the segments tile the valid pixels exactly, the polygons
    are the id raster's, their means are their pixels', and chunks, workers and schedulers change nothing."""
    from rasterio.features import rasterize

    scene, img = slic_scene(tmp_path)
    runs = {}
    for name, chunk, workers, scheduler in (("a", 4096, 1, "threads"), ("b", 300, 2, "threads"),
                                            ("c", 512, 2, "local")):
        outs = cluster([str(scene)], tmp_path / name, ClusterOptions(
            method="slic", segment_size="8m", slic_window=512, chunk_size=chunk, workers=workers,
            scheduler=scheduler, progress=False))
        assert [p.name for p in outs[0].files] == ["s.segments.tif", "s.segments.gpkg"]
        runs[name] = read_segments(tmp_path / name)
    frame, ids, transform, profile = runs["a"]
    assert profile["dtype"] == "int32" and profile["nodata"] == 0 and profile["crs"] == UTM
    valid = img.any(axis=0)
    assert np.array_equal(ids > 0, valid)  # every valid pixel in a segment, nodata in none
    for other in ("b", "c"):
        f2, ids2, _, _ = runs[other]
        assert np.array_equal(ids, ids2)
        assert f2["segment_id"].tolist() == frame["segment_id"].tolist()
        assert all(a.equals_exact(b, 0) for a, b in zip(frame.geometry, f2.geometry))
        assert np.array_equal(frame[["pixels", "mean_b1", "mean_b2", "mean_b3"]].to_numpy(),
                              f2[["pixels", "mean_b1", "mean_b2", "mean_b3"]].to_numpy())
    # polygons == the id raster, pixel for pixel: no gaps, no overlaps, none lost at a window edge
    burnt = rasterize(zip(frame.geometry, frame["segment_id"]), out_shape=ids.shape, transform=transform,
                      dtype="int32")
    assert np.array_equal(burnt, ids)
    assert frame["area_m2"].sum() == pytest.approx(valid.sum() * 0.25, rel=1e-9)
    assert frame["segment_id"].is_unique and set(frame["segment_id"]) == set(np.unique(ids[ids > 0]).tolist())
    # the statistics are the segments' pixels
    n = np.bincount(ids.ravel())
    assert np.array_equal(frame["pixels"].to_numpy(), n[frame["segment_id"]])
    for b in range(3):
        mean = np.bincount(ids.ravel(), weights=img[b].ravel().astype(float)) / np.maximum(n, 1)
        assert np.allclose(frame[f"mean_b{b + 1}"], mean[frame["segment_id"]])
    # 16 px seeds (8 m at 0.5 m): segments about that size, one part each almost always
    step = 16
    assert 0.3 * valid.sum() / step**2 < len(frame) < valid.sum() / step**2
    parts = np.array([len(getattr(g, "geoms", [g])) for g in frame.geometry])
    assert (parts > 1).mean() < 0.01


def test_slic_windows_agree_with_one_whole_scene_run(tmp_path):
    """The window grid's halo is enough: 512 px windows label nearly every pixel as one window over the whole
    scene does, and segments across window edges keep one id."""
    scene, _ = slic_scene(tmp_path, h=1000, w=1000)
    for name, window in (("tiled", 512), ("whole", 1024)):
        cluster([str(scene)], tmp_path / name, ClusterOptions(method="slic", segment_size="16px",
                                                              slic_window=window, progress=False))
    _, tiled, _, _ = read_segments(tmp_path / "tiled")
    _, whole, _, _ = read_segments(tmp_path / "whole")
    valid = whole > 0
    assert (tiled[valid] == whole[valid]).mean() > 0.97
    # at the window edges (column 512, row 512) the two sides share ids as in the whole run
    for edge in (np.s_[:, 511:513], np.s_[511:513, :]):
        t = tiled[edge] if edge[0] != slice(None) else tiled[edge].T
        w = whole[edge] if edge[0] != slice(None) else whole[edge].T
        assert ((t[0] == t[1]) == (w[0] == w[1])).mean() > 0.9


def test_slic_follows_building_edges_as_scikit_image_does():
    """On the real Rio scene (0.5 m RGB), with as many segments as scikit-image's slic gives: the same boundary
    recall of the building footprints (within 2 px) and achievable segmentation accuracy."""
    import geopandas as gpd
    from rasterio.features import rasterize
    from scipy import ndimage
    from skimage.segmentation import find_boundaries, slic

    from geoseg.clustering.kmeans import Standardisation
    from geoseg.clustering.slic import Layout, SlicSettings, label_window

    path = "geoseg/data/rio/rio_heldout.tif"
    info = inspect_scene(path)
    with rasterio.open(path) as src:
        img, crs, transform = src.read(), src.crs, src.transform
    inst = rasterize([(g, i + 1) for i, g in enumerate(gpd.read_file(path.replace(".tif", "_buildings.geojson"))
                                                          .to_crs(crs).geometry)],
                     out_shape=img.shape[1:], transform=transform, dtype="int32")
    edges = find_boundaries(inst, mode="inner")

    def recall(seg):
        return (ndimage.binary_dilation(find_boundaries(seg, mode="thick"), iterations=2) & edges).sum() / edges.sum()

    def asa(seg):
        pair = np.unique(seg.astype(np.int64) * (inst.max() + 1) + inst, return_counts=True)
        best = {}
        for code, n in zip(*pair):
            best[code // (inst.max() + 1)] = max(best.get(code // (inst.max() + 1), 0), n)
        return sum(best.values()) / seg.size

    settings = SlicSettings(40)  # 20 m
    std = Standardisation.of(sample_pixels(info, (1, 2, 3), 200_000, 0))
    ours = label_window(info, Layout(info.height, info.width, 40, 2048), (1, 2, 3), std, settings,
                        rasterio.windows.Window(0, 0, info.width, info.height))
    n = len(np.unique(ours))
    ref = min((slic(np.moveaxis(img, 0, -1), n_segments=int(n * f), compactness=10, start_label=1)
               for f in (1.0, 1.3, 1.6, 1.9)), key=lambda s: abs(len(np.unique(s)) - n))
    assert abs(len(np.unique(ref)) - n) < 0.1 * n
    assert recall(ours) > 0.9 * recall(ref)
    assert asa(ours) > asa(ref) - 0.01


@pytest.mark.parametrize("case", ["size", "metres", "joint", "huge"])
def test_slic_bad_options_are_one_line_and_write_nothing(tmp_path, case):
    img, _ = three_covers(h=64, w=64, nodata_corner=False)
    if case == "metres":
        scene = write_scene(tmp_path / "s.tif", img, nodata=0, crs=None)
    else:
        scene = write_scene(tmp_path / "s.tif", img, nodata=0)
    args, needles = {
        "size": (["--segment-size", "big"], ["--segment-size takes metres (20m) or pixels (40px)"]),
        "metres": (["--segment-size", "20m", "--allow-no-crs"], ["s.tif", "has no CRS", "in pixels"]),
        "joint": (["--joint"], ["--joint applies to --method kmeans"]),
        "huge": (["--segment-size", "600px"], ["s.tif", "--segment-size 600px", "2..512 pixels"]),
    }[case]
    r = CliRunner().invoke(cli, ["cluster", str(scene), "--method", "slic", *args, "-o", str(tmp_path / "out"),
                                 "--no-progress"])
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "out").exists()


def test_slic_from_the_command_line(tmp_path):
    scene, _ = slic_scene(tmp_path, h=300, w=400)
    r = CliRunner().invoke(cli, ["cluster", str(scene), "--method", "slic", "--segment-size", "10m",
                                 "--compactness", "20", "-o", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [str(tmp_path / "o" / "s.segments.tif"), str(tmp_path / "o" / "s.segments.gpkg")]
    assert r.stderr == "1 scene clustered\n"
    import pyogrio

    assert [n for n, _ in pyogrio.list_layers(tmp_path / "o" / "s.segments.gpkg")] == ["segments", "layer_styles"]
    frame, ids, _, _ = read_segments(tmp_path / "o")
    assert len(frame) == len(np.unique(ids[ids > 0])) > 100
    r = CliRunner().invoke(cli, ["cluster", str(scene), "--method", "slic", "--segment-size", "10m",
                                 "-o", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 0 and r.stdout.startswith("skipped")
