"""Training checkpoints: a run's last epoch (weights, optimizer, scheduler) in ``BUNDLE/checkpoint``.

Safetensors and JSON only, like bundles: nothing is unpickled when a run resumes. Semantic and
instance training both save and resume through these.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from geoseg.io.output import respect_umask, tmp_folder

CHECKPOINT = "checkpoint"  # the folder inside the bundle


def jsonable(obj):
    """``obj`` as it reads back from JSON (tuples as lists, paths and other objects as strings)."""
    return json.loads(json.dumps(obj, default=str))


def save_checkpoint(out: Path, model, opt, sched, epoch: int, best: float, mean, std) -> None:
    """Write the epoch's model, optimizer and scheduler state to ``out/checkpoint``: a temporary folder, renamed."""
    tmp = tmp_folder(out, "checkpoint")
    state = opt.state_dict()
    tensors = {f"{i}.{name}": v.detach().cpu().contiguous() for i, st in state["state"].items()
               for name, v in st.items() if torch.is_tensor(v)}
    scalars = {f"{i}.{name}": v for i, st in state["state"].items() for name, v in st.items() if not torch.is_tensor(v)}
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    save_file(tensors or {"_empty": torch.zeros(1)}, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({
        "epoch": epoch, "best": best, "mean": list(mean), "std": list(std), "param_groups": state["param_groups"],
        "optimizer_scalars": scalars, "scheduler": sched.state_dict(),
    }, default=float))
    respect_umask(tmp)
    final = out / CHECKPOINT
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def load_checkpoint(out: Path, model, opt, sched) -> dict:
    """Restore the state :func:`save_checkpoint` wrote into ``model``, ``opt`` and ``sched``; returns its state.json."""
    ck = out / CHECKPOINT
    state = json.loads((ck / "state.json").read_text())
    model.load_state_dict(load_file(str(ck / "model.safetensors")))
    tensors = load_file(str(ck / "optimizer.safetensors"))
    opt_state: dict = {}
    for key, v in tensors.items():
        if key == "_empty":
            continue
        i, name = key.split(".", 1)
        opt_state.setdefault(int(i), {})[name] = v
    for key, v in state["optimizer_scalars"].items():
        i, name = key.split(".", 1)
        opt_state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    sched.load_state_dict(state["scheduler"])
    return state


def optimization(params, tc, out: Path, model, resume: bool):
    """The run's optimiser and learning-rate schedule (``train:`` settings ``tc``), and where it starts.

    Returns ``(opt, sched, start_epoch, best)``; with ``resume`` the three states and the epoch come
    from the checkpoint in ``out``.
    """
    if tc.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=tc.lr, momentum=0.9, weight_decay=tc.weight_decay)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, tc.epochs)) if tc.schedule == "cosine"
             else torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0))
    if not resume:
        return opt, sched, 0, -1.0
    st = load_checkpoint(out, model, opt, sched)
    return opt, sched, st["epoch"] + 1, st["best"]

