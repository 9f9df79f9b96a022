"""The accuracy-audit notebook runs top to bottom on held-out data, quietly, writing only to a temporary folder."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "accuracy_audit.ipynb"


def test_notebook_is_stripped_and_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, errors
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "Warning" not in stderr, stderr  # no tqdm or library warnings in the reader's face
    text = "".join(o.get("text", "") for o in outputs)
    assert "held-out scene: rio_heldout.tif" in text and '"mean_iou_foreground"' in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # confusion matrix, map, grid
    assert not list(tmp_path.iterdir())  # nothing written beside the notebook
    work = Path(text.split("outputs in ")[1].split()[0])
    assert (work / "audit" / "report.json").exists()
