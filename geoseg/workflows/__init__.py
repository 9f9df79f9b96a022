"""Declared pipelines (predict, vectorize, evaluate) over folders of scenes, on Dask clusters.

``load_workflow(path)`` validates a workflow file; ``run_workflow(wf)`` runs it,
recording every scene and step in the run folder's ledger, so that a re-run
does only what is new, changed or unfinished; ``status(folder)`` reads the
ledger back. The CLI is ``geoseg run`` and ``geoseg status``.
"""

from geoseg.workflows.config import WorkflowConfig, load_workflow, with_cluster
from geoseg.workflows.run import plan, run_workflow
from geoseg.workflows.status import status

__all__ = ["WorkflowConfig", "load_workflow", "plan", "run_workflow", "status", "with_cluster"]
