"""The accuracy-audit notebook runs top to bottom (outputs are stripped in git)."""

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
    text = "".join(o.get("text", "") for o in outputs)
    assert '"pixel_accuracy"' in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # confusion matrix, map, grid
    assert (tmp_path / "audit-notebook-output" / "audit" / "report.json").exists()
