"""The QGIS plugin (qgis_plugin/geoseg_qgis) in real QGIS, headless: the provider loads, its algorithms give the
command line's outputs byte for byte with their styles, cancelling leaves nothing, errors are geoseg's one line,
awkward paths pass through intact, and the built zip loads from a fresh profile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pyogrio
import pytest

from geoseg.data import RIO_IMAGE, RIO_LABELS
from geoseg.io.inputs import ogr_path
from tests.test_qgis import QGIS_PYTHON, have_pyqgis

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "qgis_plugin"
CHECK = Path(__file__).with_name("qgis_provider_check.py")
GEOSEG = Path(sys.executable).with_name("geoseg")

pytestmark = pytest.mark.skipif(not have_pyqgis() and not os.environ.get("CI"),
                                reason="PyQGIS not installed (bash .ci/system-deps.sh installs it; CI always runs this)")


def qgis_env(**extra) -> dict:
    """The environment of QGIS's processes: no Python settings of this interpreter, and the system's python3 first
    on PATH (QGIS's embedded Python takes its prefix from the python3 it finds there); geoseg by its full path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PYENV", "_PYENV"))}
    env.update(QT_QPA_PLATFORM="offscreen", GEOSEG_EXECUTABLE=str(GEOSEG), PATH="/usr/bin:/bin:" + env.get("PATH", ""),
               **extra)
    return env


def qgis(*args, cwd=None, plugins=PLUGINS) -> list[dict]:
    env = qgis_env()
    r = subprocess.run([QGIS_PYTHON, str(CHECK), str(plugins), *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=600, cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def awkward_scene(tmp_path: Path) -> Path:
    """The demo crop under a folder and a name with spaces, quotes and ``;`` (a shell would run ``touch``)."""
    folder = tmp_path / "a b 'q' \"d\";touch pwned"
    folder.mkdir()
    scene = folder / "scene;touch pwned2.tif"
    shutil.copy(RIO_IMAGE, scene)
    return scene


def test_provider_lists_its_algorithms_and_parameters():
    algs = {a["id"]: a for a in qgis("list")}
    assert sorted(algs) == ["geoseg:evaluate", "geoseg:predict", "geoseg:run", "geoseg:vectorize"]
    params = {p[0]: p for p in algs["geoseg:predict"]["parameters"]}
    assert list(params) == ["INPUT", "MODEL", "ENGINE", "CHUNK_SIZE", "VECTORIZE", "REGULARIZE", "PANOPTIC", "EXTENT",
                            "OUTPUT"]
    assert params["EXTENT"][1] == "extent" and params["EXTENT"][3]  # optional: web basemaps only
    assert params["INPUT"][1] == "raster" and params["MODEL"][2] == "buildings-rgb" and params["CHUNK_SIZE"][2] == 2048
    assert params["OUTPUT"][1] == "folderDestination"
    assert [p[0] for p in algs["geoseg:evaluate"]["parameters"]][:2] == ["PREDICTION", "REFERENCE"]
    assert all(a["group"] == "geoseg" for a in algs.values())


def test_predict_in_qgis_equals_the_cli_and_adds_styled_layers(tmp_path):
    scene = awkward_scene(tmp_path)
    out_q, out_c = tmp_path / "from qgis", tmp_path / "from cli"
    [res] = qgis("run", "geoseg:predict", json.dumps({"INPUT": str(scene), "OUTPUT": str(out_q), "CHUNK_SIZE": 512}),
                 cwd=tmp_path)
    assert "error" not in res, res
    subprocess.run([str(GEOSEG), "predict", "buildings-rgb", str(scene), "-o", str(out_c), "--chunk-size", "512",
                    "--no-progress"], check=True, capture_output=True, cwd=tmp_path)
    stem = scene.stem
    for suffix in (".classes.tif", ".instances.tif", ".classes.qml"):
        assert (out_q / f"{stem}{suffix}").read_bytes() == (out_c / f"{stem}{suffix}").read_bytes(), suffix
    a = pyogrio.read_dataframe(ogr_path(out_q / f"{stem}.instances.gpkg"), layer="instances")  # ';' in the name
    b = pyogrio.read_dataframe(ogr_path(out_c / f"{stem}.instances.gpkg"), layer="instances")
    assert len(a) > 100 and a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a.geometry.geom_equals_exact(b.geometry, 0).all()
    layers = {Path(x["uri"].split("|")[0]).name + ("|" + x["uri"].split("|")[1] if "|" in x["uri"] else ""): x
              for x in res["layers"]}
    assert layers[f"{stem}.classes.tif"]["renderer"] == "paletted"  # NAME.classes.qml loaded with it
    assert layers[f"{stem}.instances.gpkg|layername=instances"]["renderer"] == "categorizedSymbol"
    assert all(x["valid"] for x in res["layers"])
    assert res["progress"] and max(res["progress"]) == 100 and scene.name in res["texts"]
    assert not list(tmp_path.rglob("pwned*"))  # nothing was run through a shell


def test_cancel_stops_geoseg_and_leaves_nothing(tmp_path):
    scene = awkward_scene(tmp_path)
    out = tmp_path / "out"
    [res] = qgis("cancel", "geoseg:predict", json.dumps({"INPUT": str(scene), "OUTPUT": str(out), "CHUNK_SIZE": 256}))
    assert res["canceled"] and "canceled" in res["error"] and 0 < res["progress"][-1] < 100
    assert not out.exists() or not any(out.iterdir())  # no output, no temporaries


def test_errors_are_geosegs_one_line(tmp_path):
    [res] = qgis("run", "geoseg:predict", json.dumps({"INPUT": str(RIO_IMAGE), "MODEL": "no-such-model",
                                                      "OUTPUT": str(tmp_path / "o")}))
    assert res["error"].startswith("geoseg: error:") and "no-such-model" in res["error"]
    assert "\n" not in res["error"] and "Traceback" not in res["error"]
    [res] = qgis("run", "geoseg:evaluate", json.dumps({"PREDICTION": str(RIO_IMAGE), "REFERENCE": str(RIO_LABELS),
                                                       "OUTPUT": str(tmp_path / "e")}))
    assert res["error"].startswith("geoseg: error:") and "\n" not in res["error"]


def test_vectorize_and_evaluate_in_qgis(tmp_path):
    out = tmp_path / "p"
    subprocess.run([str(GEOSEG), "predict", "buildings-rgb", str(RIO_IMAGE), "-o", str(out), "--no-progress"],
                   check=True, capture_output=True)
    classes = out / f"{RIO_IMAGE.stem}.classes.tif"
    [res] = qgis("run", "geoseg:vectorize", json.dumps({"INPUT": str(classes), "OUTPUT": str(tmp_path / "v.gpkg")}))
    assert "error" not in res, res
    assert [x["renderer"] for x in res["layers"]] == ["singleSymbol"] and (tmp_path / "v.gpkg").exists()
    [res] = qgis("run", "geoseg:evaluate", json.dumps({"PREDICTION": str(classes), "REFERENCE": str(RIO_LABELS),
                                                       "REFERENCE_CLASS": "building", "OUTPUT": str(tmp_path / "e")}))
    assert "error" not in res, res
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["classes"][1]["name"] == "building" and report["classes"][1]["iou"] > 0.3
    assert any("audit.gpkg" in x["uri"] for x in res["layers"])


def test_built_zip_loads_from_a_fresh_profile(tmp_path):
    zipped = subprocess.run([sys.executable, str(PLUGINS / "build.py"), str(tmp_path / "geoseg_qgis.zip")],
                            capture_output=True, text=True, check=True).stdout.strip()
    names = zipfile.ZipFile(zipped).namelist()
    assert "geoseg_qgis/metadata.txt" in names and "geoseg_qgis/__init__.py" in names
    assert not any("__pycache__" in n for n in names)
    plugins = tmp_path / "profile" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(zipped).extractall(plugins)
    [res] = qgis("installed", plugins=plugins)
    assert res["loaded"] and res["started"] and res["provider"]
    assert res["file"].startswith(str(plugins))
    assert res["algorithms"] == ["geoseg:evaluate", "geoseg:predict", "geoseg:run", "geoseg:vectorize"]


def qgis_process() -> str:
    """Debian 12's /usr/bin/qgis_process wrapper passes --noversioncheck (from /etc/default/qgis), which
    qgis_process 3.22 rejects; the binary beside it is qgis_process itself."""
    for p in ("/usr/bin/qgis_process.bin", shutil.which("qgis_process") or ""):
        if p and os.path.exists(p):
            return p
    pytest.fail("qgis_process is not installed (bash .ci/system-deps.sh installs the qgis package)")


def test_qgis_process_runs_the_plugin_from_a_fresh_profile(tmp_path):
    """The zip unpacked into a fresh profile, enabled, and run from a shell as the README shows."""
    zipped = tmp_path / "geoseg_qgis.zip"
    subprocess.run([sys.executable, str(PLUGINS / "build.py"), str(zipped)], check=True, capture_output=True)
    home = tmp_path / "home"
    plugins = home / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(zipped).extractall(plugins)
    env = qgis_env(HOME=str(home))
    exe = qgis_process()
    subprocess.run([exe, "plugins", "enable", "geoseg_qgis"], check=True, capture_output=True, env=env, timeout=300)
    listed = subprocess.run([exe, "list"], capture_output=True, text=True, env=env, timeout=300).stdout
    assert all(f"geoseg:{a}" in listed for a in ("predict", "vectorize", "evaluate", "run"))
    out = tmp_path / "out"
    r = subprocess.run([exe, "run", "geoseg:predict", f"--INPUT={RIO_IMAGE}", "--MODEL=buildings-rgb",
                        f"--OUTPUT={out}"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    cli_out = tmp_path / "cli"
    subprocess.run([str(GEOSEG), "predict", "buildings-rgb", str(RIO_IMAGE), "-o", str(cli_out), "--no-progress"],
                   check=True, capture_output=True)
    stem = RIO_IMAGE.stem
    assert (out / f"{stem}.classes.tif").read_bytes() == (cli_out / f"{stem}.classes.tif").read_bytes()
    r = subprocess.run([exe, "run", "geoseg:predict", f"--INPUT={RIO_IMAGE}", "--MODEL=no-such-model",
                        f"--OUTPUT={tmp_path / 'bad'}"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0 and "geoseg: error:" in r.stdout + r.stderr


def test_predict_on_an_xyz_basemap_layer(tmp_path):
    """An XYZ tile layer (QGIS's wms provider) with an EXTENT is fetched and predicted; the result equals the
    command line's on the same service and AOI; without EXTENT it is one line."""
    import geopandas as gpd

    from tests.test_webmap import TileServer, aoi_file, make_tiles

    (tmp_path / "tiles").mkdir()
    server = TileServer(make_tiles(tmp_path / "tiles")[1])
    try:
        uri = f"wms:type=xyz&url=http://127.0.0.1:{server.port}/{{z}}/{{x}}/{{y}}.png&zmax=18&zmin=0"
        aoi = aoi_file(tmp_path)
        x0, y0, x1, y1 = gpd.read_file(aoi).total_bounds
        extent = f"{x0},{x1},{y0},{y1} [EPSG:4326]"
        [res] = qgis("run", "geoseg:predict", json.dumps({"EXTENT": extent, "OUTPUT": str(tmp_path / "q")}), uri)
        assert "error" not in res, res
        xml = server.xml(tmp_path / "basemap.xml")
        subprocess.run([str(GEOSEG), "predict", "buildings-rgb", str(xml), "--aoi", str(aoi), "-o",
                        str(tmp_path / "c"), "--no-progress"], check=True, capture_output=True)
        import rasterio

        with rasterio.open(tmp_path / "q" / "basemap.classes.tif") as a, \
                rasterio.open(tmp_path / "c" / "basemap.classes.tif") as b:
            assert (a.read() == b.read()).all() and a.transform == b.transform
        [res] = qgis("run", "geoseg:predict", json.dumps({"OUTPUT": str(tmp_path / "n")}), uri)
        assert res["error"] == "INPUT: 'basemap' is a web basemap: give EXTENT, the area to fetch and predict"
    finally:
        server.close()
