"""``geoseg run`` and ``geoseg status``: validation, the ledger, incremental runs, resume, clusters, STAC.

Real components: Dask ``LocalCluster`` worker processes, a ``dask scheduler``
and ``dask worker`` processes started here on 127.0.0.1 (one is killed with
SIGKILL mid-run), a single-node SLURM started by ``.ci/slurm.sh`` with
dask-jobqueue's ``SLURMCluster`` (a worker's job is cancelled mid-run), and
``geoseg run`` subprocesses killed with SIGKILL mid-scene and mid-assembly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from click.testing import CliRunner
from conftest import ROOT, assert_one_line_error, known_class, structured_scene, write_scene

from geoseg.cli.main import cli
from geoseg.inference.tiling import TileGrid
from geoseg.workflows import load_workflow, run_workflow

ENV = dict(os.environ, PYTHONWARNINGS="ignore")


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_workflow(path: Path, **body) -> Path:
    body.setdefault("cluster", {"local": {"workers": 1}})
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def ledger_rows(folder: Path, run: int | None = None) -> list[dict]:
    db = sqlite3.connect(folder / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    q = "SELECT * FROM items" + (" WHERE run = ?" if run else "") + " ORDER BY id"
    rows = [dict(r) for r in db.execute(q, (run,) if run else ())]
    db.close()
    return rows


def last_run(folder: Path) -> int:
    db = sqlite3.connect(folder / "ledger.sqlite")
    (n,) = db.execute("SELECT max(id) FROM runs").fetchone()
    db.close()
    return n


def geoseg_run(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geoseg", "run", *map(str, args)], capture_output=True, text=True,
                          env=kw.pop("env", ENV), timeout=kw.pop("timeout", 300), **kw)


def saved_chunks(out: Path) -> int:
    """Chunks the predict step has saved in the run folder's checkpoint store."""
    store = out / ".geoseg-chunks"
    return sum(len(list(d.glob("chunk-*.npz"))) for d in store.glob("big-*")) if store.exists() else 0


def start_run(wf: Path, env: dict = ENV, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "geoseg", "run", str(wf)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_until(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, "the run ended first: " + proc.stderr.read()
        assert time.time() - t0 < timeout
        time.sleep(0.002)


# -- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body,needles", [
    ({"steps": [{"predict": {"tile_sise": 128}}]}, ["steps[0].predict.tile_sise: unknown key"]),
    ({"steps": ["predict", "segment"]}, ["steps[1]: unknown step 'segment'", "predict, vectorize, evaluate"]),
    ({"model": "models/nope"}, ["model:", "models/nope"]),
    ({"cluster": {"pbs": {"cores": 2}}}, ["cluster.pbs:", "no qsub on PATH"]),
    ({"outputs": "x"}, ["outputs: unknown key"]),
    ({"cluster": {"slurm": {"cores": 1, "walltim": "1:00:00"}}}, ["cluster.slurm.walltim: unknown key"]),
    ({"steps": [{"predict": {"chunk_size": 0}}]}, ["steps[0].predict", "chunk-size must be positive"]),
    ({"inputs": ["nosuch"]}, ["inputs: no such file or folder", "nosuch"]),
])
def test_bad_workflows_get_one_line_naming_the_file_and_key(tmp_path, linear_bundle, body, needles):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_scene(scenes / "a.tif", structured_scene(64, 64))
    wf = dict(inputs=["scenes"], model=str(linear_bundle), output="runs/x", steps=["predict"])
    wf.update(body)
    path = write_workflow(tmp_path / "bad.yaml", **wf)
    if "pbs" in json.dumps(body):
        assert shutil.which("qsub") is None, "this test needs a machine without PBS"
    res = CliRunner().invoke(cli, ["run", str(path)])
    err = assert_one_line_error(res, str(path), *needles)
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written


# -- a local cluster: incremental runs, per-step invalidation, failures, status, STAC ------------------


@pytest.fixture()
def folder_workflow(tmp_path, linear_bundle):
    scenes, refs = tmp_path / "scenes", tmp_path / "refs"
    scenes.mkdir()
    refs.mkdir()
    for n, name in enumerate(["a", "b"]):
        data = structured_scene(300, 400, seed=n)
        write_scene(scenes / f"{name}.tif", data)
        write_scene(refs / f"{name}.tif", known_class(data)[None], nodata=255)
    wf = write_workflow(tmp_path / "wf.yaml", inputs=["scenes"], model=str(linear_bundle), output="runs/w",
                        reference="refs", steps=[{"predict": {"chunk_size": 128}}, {"vectorize": {"min_area": 2}},
                                                 "evaluate"])
    return wf, scenes, refs, tmp_path / "runs" / "w"


def test_incremental_runs_do_only_new_changed_or_stale_work(folder_workflow):
    wf, scenes, refs, out = folder_workflow
    r1 = geoseg_run(wf)
    assert r1.returncode == 0, r1.stderr
    rows = ledger_rows(out, 1)
    assert [(Path(r["scene"]).name, r["step"], r["status"]) for r in rows] == [
        ("a.tif", "predict", "done"), ("a.tif", "vectorize", "done"), ("a.tif", "evaluate", "done"),
        ("b.tif", "predict", "done"), ("b.tif", "vectorize", "done"), ("b.tif", "evaluate", "done")]
    assert all(r["version"] and r["input_hash"] and r["config"] for r in rows)
    report = json.loads((out / "a.evaluate" / "report.json").read_text())
    assert report["classes"][0]["iou"] == pytest.approx(1.0)  # the linear model is exact
    with rasterio.open(out / "a.classes.tif") as src:
        assert np.array_equal(src.read(1), known_class(structured_scene(300, 400, seed=0)))
    hashes = {p.name: sha(p) for p in out.glob("*.classes.tif")}
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file() and p.suffix in (".tif", ".gpkg")}

    # unchanged: no work at all
    r2 = geoseg_run(wf)
    assert r2.returncode == 0, r2.stderr
    assert ledger_rows(out, 2) == []
    assert "0 steps to run, 6 done already" in r2.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in mtimes} == mtimes
    rep = json.loads((out / "run-report.json").read_text())
    assert rep["summary"]["steps_run"] == 0 and rep["summary"]["steps_skipped"] == 6
    assert rep["scenes"][0]["steps"]["predict"]["outputs"] == ["a.classes.tif"]  # links survive skipped steps

    # a new scene: only its steps run
    data = structured_scene(200, 260, seed=7)
    write_scene(scenes / "c.tif", data)
    write_scene(refs / "c.tif", known_class(data)[None], nodata=255)
    r3 = geoseg_run(wf)
    assert r3.returncode == 0, r3.stderr
    assert [(Path(r["scene"]).name, r["step"], r["reason"]) for r in ledger_rows(out, 3)] == [
        ("c.tif", "predict", "new scene"), ("c.tif", "vectorize", "new scene"), ("c.tif", "evaluate", "new scene")]

    # a vectorize option changes: vectorize re-runs for every scene, predict and evaluate do not
    body = yaml.safe_load(wf.read_text())
    body["steps"][1] = {"vectorize": {"min_area": 50}}
    wf.write_text(yaml.safe_dump(body))
    dry = geoseg_run(wf, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    plan = [line.split(None, 3) for line in dry.stdout.splitlines()]
    assert [(p[0], p[1], p[2]) for p in plan if p[2] == "run"] == [("a", "vectorize", "run"), ("b", "vectorize", "run"),
                                                                     ("c", "vectorize", "run")]
    assert all(p[3] == "vectorize options changed" for p in plan if p[2] == "run")
    assert all(p[3].startswith("done in run") for p in plan if p[2] == "skip")
    assert last_run(out) == 3  # a dry run records nothing
    r4 = geoseg_run(wf)
    assert r4.returncode == 0, r4.stderr
    assert [(Path(r["scene"]).name, r["step"]) for r in ledger_rows(out, 4)] == [
        ("a.tif", "vectorize"), ("b.tif", "vectorize"), ("c.tif", "vectorize")]
    assert {p.name: sha(p) for p in out.glob("*.classes.tif") if p.name in hashes} == hashes
    assert (out / "a.classes.tif").stat().st_mtime_ns == mtimes["a.classes.tif"]

    # a scene's content changes (same size): status calls it stale, the next run re-runs its three steps
    with rasterio.open(scenes / "b.tif", "r+") as dst:
        band = dst.read(1)
        band[:50, :50] = 250
        dst.write(band, 1)
    st = CliRunner().invoke(cli, ["status", str(out)])
    assert st.exit_code == 0, st.output
    lines = {tuple(line.split()[:3]) for line in st.output.splitlines() if line.startswith(("a.tif", "b.tif", "c.tif"))}
    assert ("b.tif", "predict", "stale") in lines and ("a.tif", "predict", "done") in lines
    assert "scene changed" in st.output
    r5 = geoseg_run(wf)
    assert r5.returncode == 0, r5.stderr
    assert [(Path(r["scene"]).name, r["step"], r["reason"]) for r in ledger_rows(out, 5)] == [
        ("b.tif", "predict", "scene changed"), ("b.tif", "vectorize", "scene changed"),
        ("b.tif", "evaluate", "scene changed")]

    # an output deleted by hand is made again
    (out / "c.gpkg").unlink()
    r6 = geoseg_run(wf)
    assert r6.returncode == 0, r6.stderr
    assert [(Path(r["scene"]).name, r["step"], r["reason"]) for r in ledger_rows(out, 6)] == [
        ("c.tif", "vectorize", "output missing: c.gpkg")]


def test_a_failing_scene_is_recorded_and_the_others_go_on(tmp_path, linear_bundle):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_scene(scenes / "good.tif", structured_scene(200, 200))
    (scenes / "broken.tif").write_bytes(b"II*\x00 this is not a GeoTIFF")
    wf = write_workflow(tmp_path / "wf.yaml", inputs=["scenes"], model=str(linear_bundle), output="out",
                        steps=["predict", "vectorize"])
    res = geoseg_run(wf)
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("geoseg: error:")]
    assert len(errors) == 1 and "broken.tif" in errors[0] and "Traceback" not in res.stderr
    rows = {(Path(r["scene"]).name, r["step"]): r for r in ledger_rows(tmp_path / "out")}
    assert rows[("broken.tif", "predict")]["status"] == "failed"
    assert "broken.tif" in rows[("broken.tif", "predict")]["error"]
    assert ("broken.tif", "vectorize") not in rows  # blocked: its predict failed
    assert rows[("good.tif", "predict")]["status"] == rows[("good.tif", "vectorize")]["status"] == "done"
    rep = json.loads((tmp_path / "out" / "run-report.json").read_text())
    assert rep["summary"]["steps_failed"] == 1 and rep["summary"]["steps_blocked"] == 1
    assert rep["failures"][0]["scene"].endswith("broken.tif")
    assert "broken.tif predict" in (tmp_path / "out" / "run-report.md").read_text()
    assert not list((tmp_path / "out").glob("broken*"))  # nothing half-written
    again = geoseg_run(wf, "--dry-run")
    assert "broken  predict    run   failed last time" in again.stdout


def test_stac_items_validate_offline(folder_workflow, monkeypatch):
    import socket

    import pystac
    from pystac.extensions.classification import ClassificationExtension
    from pystac.validation import RegisteredValidator
    from stac_model.schema import MLModelProperties

    wf, _, _, out = folder_workflow
    res = run_workflow(load_workflow(wf), echo=lambda s: None)
    assert not res.failures

    def no_network(*a, **k):
        raise AssertionError("validation tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    validator = RegisteredValidator.get_validator()  # core STAC schemas shipped with pystac
    item = json.loads((out / "a.classes.stac.json").read_text())
    validator.validate_core(item, pystac.STACObjectType.ITEM, "1.1.0")
    model = json.loads((out / "model.stac.json").read_text())
    validator.validate_core(model, pystac.STACObjectType.ITEM, "1.1.0")
    coll = json.loads((out / "collection.json").read_text())
    validator.validate_core(coll, pystac.STACObjectType.COLLECTION, "1.1.0")
    # the MLM extension: validated by stac-model's models of its schema
    props = MLModelProperties.model_validate({k: v for k, v in model["properties"].items() if k.startswith("mlm:")})
    assert props.tasks == {"semantic-segmentation"} or list(props.tasks) == ["semantic-segmentation"]
    assert [b for b in props.input[0].bands] == ["band 1", "band 2", "band 3"] or len(props.input[0].bands) == 3
    assert props.input[0].input.shape == [-1, 3, 128, 128]
    assert [c["name"] for c in model["properties"]["mlm:output"][0]["classification:classes"]] == [
        "background", "building", "water"]
    # the class raster's classes, read back through pystac's classification extension
    it = pystac.Item.from_dict(item)
    classes = ClassificationExtension.ext(it.assets["classes"]).classes
    assert [(c.value, c.name) for c in classes] == [(0, "background"), (1, "building"), (2, "water"), (255, "nodata")]
    assert {"classes", "style", "vectors", "evaluation"} <= set(it.assets)
    with rasterio.open(out / "a.classes.tif") as src:
        from rasterio.warp import transform_bounds

        assert it.bbox == pytest.approx(list(transform_bounds(src.crs, "EPSG:4326", *src.bounds)), abs=1e-6)
        assert item["properties"]["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
    assert {li["href"] for li in item["links"] if li["rel"] == "derived_from"} == {
        str((wf.parent / "scenes" / "a.tif").resolve()), "./model.stac.json"}
    assert sorted(li["href"] for li in coll["links"] if li["rel"] == "item") == [
        "./a.classes.stac.json", "./b.classes.stac.json"]


# -- resume after SIGKILL ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_scene(tmp_path_factory, linear_bundle):
    root = tmp_path_factory.mktemp("resume")
    (root / "scenes").mkdir()
    write_scene(root / "scenes" / "big.tif", structured_scene(3072, 3072, seed=3))
    body = dict(inputs=[str(root / "scenes")], model=str(linear_bundle), output=str(root / "ref"),
                steps=[{"predict": {"chunk_size": 384, "probabilities": True}}])
    ref = write_workflow(root / "ref.yaml", **body)
    r = geoseg_run(ref)
    assert r.returncode == 0, r.stderr
    return root, body


@pytest.mark.parametrize("when", ["mid-scene", "during-assembly"])
def test_a_killed_run_resumes_from_its_chunks_and_ends_bitwise_identical(big_scene, tmp_path, when):
    root, body = big_scene
    wf = write_workflow(root / f"{when}.yaml", **dict(body, output=str(tmp_path / "out")))
    out = tmp_path / "out"
    total = 64  # (3072 / 384) ** 2
    store = out / ".geoseg-chunks"

    def chunks() -> int:
        return saved_chunks(out)

    proc = start_run(wf, start_new_session=True)
    wait_until(proc, (lambda: chunks() >= 12) if when == "mid-scene" else (lambda: chunks() == total))
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its cluster: as a lost node
    proc.wait()
    if when == "mid-scene":
        assert chunks() < total
    assert not (out / "big.classes.tif").exists()  # nothing half-written under a final name
    assert ledger_rows(out)[-1]["status"] == "running"
    saved = chunks()
    st = CliRunner().invoke(cli, ["status", str(out)])
    assert "interrupted" in st.output and f"{saved} chunks saved" in st.output

    again = geoseg_run(wf)
    assert again.returncode == 0, again.stderr
    rec = ledger_rows(out)[-1]
    assert (rec["step"], rec["status"], rec["chunks"]) == ("predict", "done", total)
    assert rec["reason"].startswith("interrupted in run 1")
    assert rec["chunks_resumed"] == saved and total - rec["chunks_resumed"] < total  # fewer than all chunks ran
    for name in ("big.classes.tif", "big.probs.tif"):
        assert sha(out / name) == sha(root / "ref" / name), name
    assert not store.exists()  # the checkpoints go once the COGs are in place
    assert not [p for p in out.iterdir() if ".geoseg-tmp-" in p.name]


# -- a real multi-process Dask cluster: a worker killed mid-run; model tasks go to GPU workers ------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaskProcesses:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.clients: list = []
        self.tmp = tmp
        self.procs.append(self._spawn("scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--dashboard-address", "127.0.0.1:0"))

    def _spawn(self, *args) -> subprocess.Popen:
        log = open(self.tmp / f"dask-{len(self.procs)}.log", "w")
        return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]], env=ENV,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def worker(self, *extra) -> subprocess.Popen:
        p = self._spawn("worker", self.address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                        "--dashboard-address", "127.0.0.1:0", *extra)
        self.procs.append(p)
        return p

    def wait_for(self, n: int):
        from distributed import Client

        c = Client(self.address, timeout="30s")
        self.clients.append(c)
        c.wait_for_workers(n, timeout=60)
        return c

    def close(self) -> None:
        for c in self.clients:
            c.close()
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture()
def dask_processes(tmp_path):
    d = DaskProcesses(tmp_path)
    yield d
    d.close()


def test_a_worker_killed_mid_run_changes_nothing(big_scene, dask_processes, tmp_path):
    root, body = big_scene
    workers = [dask_processes.worker(), dask_processes.worker()]
    client = dask_processes.wait_for(2)
    wf = write_workflow(tmp_path / "wf.yaml", **dict(body, output=str(tmp_path / "out"),
                                                     cluster={"address": dask_processes.address}))
    proc = start_run(wf)
    wait_until(proc, lambda: saved_chunks(tmp_path / "out") >= 8)
    os.kill(workers[0].pid, signal.SIGKILL)
    assert saved_chunks(tmp_path / "out") < 64  # killed mid-run
    workers[0].wait()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert len(client.scheduler_info()["workers"]) == 1
    client.close()
    for name in ("big.classes.tif", "big.probs.tif"):
        assert sha(tmp_path / "out" / name) == sha(root / "ref" / name), name
    assert ledger_rows(tmp_path / "out")[-1]["status"] == "done"


def test_model_tasks_keep_their_gpu_annotation(seam_scene, linear_bundle, dask_processes, tmp_path):
    """Only the worker that declares a GPU runs model tasks (the annotation survives graph handling, dask #7036)."""
    from distributed import get_task_stream

    from geoseg.prediction import PredictOptions, predict

    gpu = dask_processes.worker("--resources", "GPU=1")
    dask_processes.worker()
    client = dask_processes.wait_for(2)
    gpu_addr = next(a for a, w in client.scheduler_info()["workers"].items() if w.get("resources", {}).get("GPU"))
    with get_task_stream(client) as ts:
        predict(linear_bundle, [seam_scene[0]], tmp_path / "out", PredictOptions(chunk_size=128, progress=False),
                client=client)
    keys = [(t["key"] if isinstance(t["key"], str) else str(t["key"]), t["worker"]) for t in ts.data]
    infer = [w for k, w in keys if "infer-" in k]
    finish = [w for k, w in keys if "block-" in k]
    n = sum(map(len, TileGrid(700, 900, 128, 32).blocks(128)))
    assert n > 8 and len(infer) == n and len(finish) == n, (n, len(infer), len(finish))
    assert set(infer) == {gpu_addr}
    with rasterio.open(tmp_path / "out" / "seam.classes.tif") as src:
        expected = known_class(seam_scene[1])
        got = src.read(1)
        valid = got != 255
        assert np.array_equal(got[valid], expected[valid])
    client.close()
    assert gpu.poll() is None


# -- SLURM through dask-jobqueue -------------------------------------------------------------------------


@pytest.fixture()
def slurm(tmp_path):
    """A single-node SLURM (.ci/slurm.sh); skipped, with the reason, only where it cannot start."""
    state = tmp_path / "slurm"
    res = subprocess.run(["bash", str(ROOT / ".ci" / "slurm.sh"), "start", str(state)], capture_output=True,
                         text=True, timeout=120)
    if res.returncode != 0:
        reason = f"slurmctld cannot be started here: {(res.stderr.strip().splitlines() or ['?'])[-1]}"
        if os.environ.get("GEOSEG_REQUIRE_SLURM"):
            pytest.fail(reason + " (GEOSEG_REQUIRE_SLURM is set: CI must run this test)")
        pytest.skip(reason)
    conf = str(state / "slurm.conf")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield dict(ENV, SLURM_CONF=conf)
    subprocess.run(["bash", str(ROOT / ".ci" / "slurm.sh"), "stop", str(state)], timeout=120)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


def test_slurm_workers_with_a_cancelled_job(big_scene, slurm, tmp_path):
    """The worker's SLURM job is cancelled mid-run: adaptive scaling submits a new job, and the run ends the same."""
    root, body = big_scene
    cluster = {"slurm": {"cores": 1, "memory": "2GB", "processes": 1, "minimum_workers": 1, "maximum_workers": 1,
                         "walltime": "00:20:00", "interface": "lo", "host": "127.0.0.1", "wait_for_workers": 120,
                         "log_directory": str(tmp_path / "slurm-logs")}}
    wf = write_workflow(tmp_path / "wf.yaml", **dict(body, output=str(tmp_path / "out"), cluster=cluster))
    proc = start_run(wf, env=slurm)

    def running_jobs() -> list[str]:
        jobs = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, env=slurm).stdout
        return [j.split()[0] for j in jobs.splitlines() if j.strip().endswith("RUNNING")]

    wait_until(proc, lambda: saved_chunks(tmp_path / "out") >= 8)
    running = running_jobs()
    assert len(running) == 1, running
    subprocess.run(["scancel", running[0]], check=True, env=slurm)
    assert saved_chunks(tmp_path / "out") < 64  # cancelled mid-run
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "SLURM" in err
    for name in ("big.classes.tif", "big.probs.tif"):
        assert sha(tmp_path / "out" / name) == sha(root / "ref" / name), name
    # the workers ran as SLURM jobs (dask-jobqueue's job logs, named by job id): the cancelled one and its
    # replacement, on loopback only
    logs = sorted((tmp_path / "slurm-logs").glob("dask-worker-*.err"))
    ids = {p.stem.split("-")[-1] for p in logs}
    assert running[0] in ids and len(ids) >= 2, ids
    text = "".join(p.read_text() for p in logs)
    assert "Start worker at:      tcp://127.0.0.1:" in text and "0.0.0.0" not in text


def test_an_instance_model_workflow(tmp_path):
    """An instance bundle's predict step writes instance outputs; vectorize is refused at validation."""
    from test_instances import oracle_scene

    from geoseg.models.bundle import init_bundle

    bundle = init_bundle("components", tmp_path / "oracle", encoder="none", bands=(1,), classes="object",
                         tile_size=128, overlap=32)
    (tmp_path / "scenes").mkdir()
    write_scene(tmp_path / "scenes" / "s.tif", oracle_scene(500, 600)[None], nodata=None)
    bad = write_workflow(tmp_path / "bad.yaml", inputs=["scenes"], model=str(bundle), output="out",
                         steps=["predict", "vectorize"])
    assert_one_line_error(CliRunner().invoke(cli, ["run", str(bad)]), "steps:", "instance model")
    wf = write_workflow(tmp_path / "wf.yaml", inputs=["scenes"], model=str(bundle), output="out",
                        steps=[{"predict": {"chunk_size": 256}}])
    res = run_workflow(load_workflow(wf), echo=lambda s: None)
    assert [r.status for r in res.results] == ["done"]
    assert sorted(Path(o).name for o in res.results[0].outputs) == ["s.instances.gpkg", "s.instances.tif"]
    again = run_workflow(load_workflow(wf), echo=lambda s: None)
    assert [r.status for r in again.results] == ["skipped"]
    model = json.loads((tmp_path / "out" / "model.stac.json").read_text())
    assert model["properties"]["mlm:tasks"] == ["instance-segmentation"]
