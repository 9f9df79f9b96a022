"""Web-map inputs: a loopback XYZ tile server (127.0.0.1, started here) serves the demo crop; ``predict --aoi`` on it
equals predict on the same area read from the GeoTIFF the tiles were cut from, fetches only the tiles the AOI
needs, fetches nothing again on a second run, and a failing or stalling server gives one line and no output."""

from __future__ import annotations

import io
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from PIL import Image
from rasterio.transform import from_origin
from rasterio.warp import reproject, transform_bounds

from geoseg.cli.main import cli
from geoseg.data import RIO_IMAGE
from tests.conftest import assert_one_line_error

Z = 18
WORLD = 20037508.342789244
TILE_M = 2 * WORLD / 2**Z  # metres of EPSG:3857 per 256 px tile at zoom 18 (0.597 m/px)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    return make_tiles(tmp_path_factory.mktemp("xyz"))


def make_tiles(folder: Path):
    """The demo crop on the zoom-18 tile grid of EPSG:3857: the mosaic GeoTIFF and its 256 px PNG tiles."""
    with rasterio.open(RIO_IMAGE) as src:
        left, bottom, right, top = transform_bounds(src.crs, "EPSG:3857", *src.bounds)
        tx0, tx1 = math.floor((left + WORLD) / TILE_M), math.floor((right + WORLD) / TILE_M)
        ty0, ty1 = math.floor((WORLD - top) / TILE_M), math.floor((WORLD - bottom) / TILE_M)
        w, h = (tx1 - tx0 + 1) * 256, (ty1 - ty0 + 1) * 256
        t = from_origin(-WORLD + tx0 * TILE_M, WORLD - ty0 * TILE_M, TILE_M / 256, TILE_M / 256)
        out = np.zeros((3, h, w), np.uint8)
        reproject(src.read([1, 2, 3]), out, src_transform=src.transform, src_crs=src.crs, dst_transform=t,
                  dst_crs="EPSG:3857", resampling=rasterio.enums.Resampling.bilinear)
    mosaic = folder / "mosaic3857.tif"
    with rasterio.open(mosaic, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:3857",
                       transform=t, tiled=True, blockxsize=256, blockysize=256, photometric="RGB") as d:
        d.write(out)
    pngs = {}
    for j in range(ty1 - ty0 + 1):
        for i in range(tx1 - tx0 + 1):
            buf = io.BytesIO()
            Image.fromarray(np.moveaxis(out[:, j * 256:(j + 1) * 256, i * 256:(i + 1) * 256], 0, -1)).save(buf, "PNG")
            pngs[(tx0 + i, ty0 + j)] = buf.getvalue()
    return mosaic, pngs


class TileServer:
    """Serves /18/x/y.png from memory on 127.0.0.1; ``mode``: ok, error (500) or stall; counts requests."""

    def __init__(self, pngs: dict, mode: str = "ok") -> None:
        self.pngs, self.mode, self.requests = pngs, mode, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                parts = self.path.strip("/").split("/")
                server.requests.append(self.path)
                if server.mode == "stall":
                    time.sleep(4)
                if server.mode == "error":
                    self.send_error(500, "tile renderer down")
                    return
                try:
                    z, x, y = int(parts[0]), int(parts[1]), int(parts[2].split(".")[0])
                    body = server.pngs[(x, y)] if z == Z else None
                except (ValueError, IndexError, KeyError):
                    body = None
                if body is None:
                    self.send_error(404)
                    return
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout): nothing to say
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def xml(self, path: Path) -> Path:
        path.write_text(f"""<GDAL_WMS>
  <Service name="TMS"><ServerUrl>http://127.0.0.1:{self.port}/${{z}}/${{x}}/${{y}}.png</ServerUrl></Service>
  <DataWindow><UpperLeftX>{-WORLD}</UpperLeftX><UpperLeftY>{WORLD}</UpperLeftY><LowerRightX>{WORLD}</LowerRightX>
    <LowerRightY>{-WORLD}</LowerRightY><TileLevel>{Z}</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>
    <YOrigin>top</YOrigin></DataWindow>
  <Projection>EPSG:3857</Projection><BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY><BandsCount>3</BandsCount>
</GDAL_WMS>
""")
        return path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def aoi_file(tmp_path: Path) -> Path:
    """A 130 x 90 m area inside the demo crop."""
    with rasterio.open(RIO_IMAGE) as src:
        cx, cy = (src.bounds.left + src.bounds.right) / 2, (src.bounds.bottom + src.bounds.top) / 2
    box = shapely.box(cx - 0.0006, cy - 0.0004, cx + 0.0006, cy + 0.0004)
    path = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[box], crs="EPSG:4326").to_file(path)
    return path


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_xyz_predict_equals_the_geotiff_and_fetches_only_the_aoi(tiles, tmp_path, monkeypatch):
    from geoseg.io.webmap import aoi_grid, fetch

    mosaic, pngs = tiles
    server = TileServer(pngs)
    try:
        xml = server.xml(tmp_path / "rio_xyz.xml")
        aoi = aoi_file(tmp_path)
        out = tmp_path / "out"
        res = CliRunner().invoke(cli, ["predict", "buildings-rgb", str(xml), "--aoi", str(aoi), "-o", str(out),
                                       "--no-progress"])
        assert res.exit_code == 0, res.output
        fetched = list(server.requests)
        # the same area read from the GeoTIFF the tiles were cut from, the same way, then predicted
        local = tmp_path / "local"
        local.mkdir()
        scene = fetch(str(mosaic), str(aoi), 0.47828809042143594, local, "rio_xyz")
        res = CliRunner().invoke(cli, ["predict", "buildings-rgb", str(scene), "-o", str(local / "pred"),
                                       "--no-progress"])
        assert res.exit_code == 0, res.output
        np.testing.assert_array_equal(read(out / "rio_xyz.webmap.tif"), read(scene))
        np.testing.assert_array_equal(read(out / "rio_xyz.classes.tif"), read(local / "pred" / "rio_xyz.classes.tif"))
        assert (read(out / "rio_xyz.classes.tif") == 1).any()
        with rasterio.open(out / "rio_xyz.webmap.tif") as src:
            assert src.crs.to_epsg() == 32723 and abs(src.res[0] - 0.47828809042143594) < 1e-9
        # only the tiles the AOI needs: every request touches the AOI's box (plus the resampling's few pixels)
        crs, t, w, h = aoi_grid(str(aoi), 0.47828809042143594)
        left, bottom, right, top = transform_bounds(crs, "EPSG:3857", t.c, t.f + t.e * h, t.c + t.a * w, t.f)
        margin = 8 * TILE_M / 256
        need = {(x, y) for x in range(math.floor((left + WORLD) / TILE_M), math.floor((right + WORLD) / TILE_M) + 1)
                for y in range(math.floor((WORLD - top) / TILE_M), math.floor((WORLD - bottom) / TILE_M) + 1)}
        got = {(int(p.split("/")[2]), int(p.split("/")[3].split(".")[0])) for p in fetched}
        assert need <= got and len(fetched) == len(got)  # each tile once
        for x, y in got:
            x0, y1 = -WORLD + x * TILE_M, WORLD - y * TILE_M
            assert x0 < right + margin and x0 + TILE_M > left - margin and y1 > bottom - margin and \
                y1 - TILE_M < top + margin, (x, y)
        assert len(got) < len(pngs) / 2
        # a second run finds the fetched area and requests nothing
        res = CliRunner().invoke(cli, ["predict", "buildings-rgb", str(xml), "--aoi", str(aoi), "-o", str(out),
                                       "--no-progress", "--overwrite"])
        assert res.exit_code == 0, res.output
        assert len(server.requests) == len(fetched)
    finally:
        server.close()


@pytest.mark.parametrize("mode", ["error", "stall"])
def test_failing_service_gives_one_line_and_no_output(tiles, tmp_path, monkeypatch, mode):
    _, pngs = tiles
    server = TileServer(pngs, mode)
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "1")
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")
    try:
        xml = server.xml(tmp_path / "down.xml")
        out = tmp_path / "out"
        res = CliRunner().invoke(cli, ["predict", "buildings-rgb", str(xml), "--aoi",
                                                       str(aoi_file(tmp_path)), "-o", str(out), "--no-progress"])
        assert_one_line_error(res, "the web map failed", "down.xml")
        assert not out.exists()
        assert len(server.requests) >= 2  # retried
    finally:
        server.close()


def test_aoi_rules(tmp_path):
    res = CliRunner().invoke(cli, ["predict", "buildings-rgb", str(RIO_IMAGE), "--aoi",
                                                   str(aoi_file(tmp_path)), "-o", str(tmp_path / "o")])
    assert_one_line_error(res, "--aoi applies to web-map inputs")
    xml = tmp_path / "s.xml"
    xml.write_text("<GDAL_WMS><Service name='TMS'><ServerUrl>http://127.0.0.1:9/${z}/${x}/${y}.png</ServerUrl>"
                   "</Service></GDAL_WMS>")
    res = CliRunner().invoke(cli, ["predict", "buildings-rgb", str(xml), "-o", str(tmp_path / "o")])
    assert_one_line_error(res, "a web-map input needs --aoi")
    assert not (tmp_path / "o").exists()
