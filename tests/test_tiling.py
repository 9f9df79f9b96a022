import numpy as np
import pytest

from geoseg.inference.blending import BLEND_MODES, tile_weights
from geoseg.inference.tiling import TileGrid, pad_tile


def coverage(grid: TileGrid) -> np.ndarray:
    cov = np.zeros((grid.height, grid.width), dtype=int)
    for t in grid.tiles():
        cov[t.y : t.y + grid.tile_size, t.x : t.x + grid.tile_size] += 1
    return cov


@pytest.mark.parametrize("h,w,tile,overlap", [(700, 900, 128, 32), (100, 50, 128, 32), (512, 512, 512, 0),
                                                (1000, 1001, 256, 128), (1, 7, 32, 8)])
def test_grid_covers_every_pixel_and_tiles_touch_only_neighbours(h, w, tile, overlap):
    grid = TileGrid(h, w, tile, overlap)
    cov = coverage(grid)
    assert cov.min() >= 1
    assert cov.max() <= 4  # overlap <= tile/2: at most 2 tiles per axis
    # the last tile starts inside the scene
    assert grid.rows.start(grid.rows.n - 1) < h and grid.cols.start(grid.cols.n - 1) < w


@pytest.mark.parametrize("chunk", [1, 96, 256, 500, 5000])
def test_blocks_partition_the_scene_and_the_tiles(chunk):
    grid = TileGrid(700, 900, 128, 32)
    owner = np.zeros((700, 900), dtype=int)
    seen = []
    for row in grid.blocks(chunk):
        for b in row:
            win = b.final_window
            owner[win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width] += 1
            seen += [(t.row, t.col) for t in grid.block_tiles(b)]
            # every tile of the block lies inside its read window (clipped to the scene)
            for t in grid.block_tiles(b):
                assert b.rows.start <= t.y and min(t.y + 128, 700) <= b.rows.end
    assert (owner == 1).all()
    assert sorted(seen) == sorted((t.row, t.col) for t in grid.tiles())


@pytest.mark.parametrize("mode", sorted(BLEND_MODES))
def test_blend_weights_never_leave_a_pixel_without_weight(mode):
    grid = TileGrid(700, 900, 128, 32)
    total = np.zeros((700 + 128, 900 + 128))
    for t in grid.tiles():
        w = tile_weights(mode, 128, 32, t.row == 0, t.row == grid.rows.n - 1, t.col == 0, t.col == grid.cols.n - 1)
        assert w.min() >= 0
        total[t.y : t.y + 128, t.x : t.x + 128] += w
    total = total[:700, :900]
    assert total.min() > 0
    if mode in ("cosine", "crop"):
        # complementary ramps: the weights of a pixel sum to one everywhere, edges included
        np.testing.assert_allclose(total, 1.0, atol=1e-6)
    if mode == "cosine":
        w = tile_weights("cosine", 128, 32, False, False, False, False)
        assert w[0, 0] > 0 and w[64, 64] == 1.0 and w[0, 64] < 0.01


def test_pad_tile_reflects_only_the_tiles_own_pixels():
    a = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    p = pad_tile(a, 8)
    assert p.shape == (2, 8, 8)
    np.testing.assert_array_equal(p[:, :3, :5], a)
    np.testing.assert_array_equal(p[:, 3, :5], a[:, 1])  # reflect, not edge
    one = pad_tile(np.ones((1, 1, 4), dtype=np.float32), 8)
    assert one.shape == (1, 8, 8) and (one == 1).all()
