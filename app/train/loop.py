"""The training loop shared by all families: seeded, resumable, with a progress bar and a validation loss per
epoch, writing a checkpoint (``OUT.safetensors`` + the ``OUT.json`` card) after every epoch and the optimizer
state to ``OUT.train.safetensors`` (safetensors, never pickle).

Reproducibility: the weights are initialised from ``seed``; epoch k shuffles and draws its noise from a generator
seeded with ``(seed, k)``, so a run resumed after epoch k gives the same weights as one that never stopped.

Validation loss (the same for every family, so families can be compared): the mean |x - pseudo_normal(x)| in
eval mode over the foreground pixels of the validation slices that lie *outside* the lesion masks, i.e. on the
normal-looking tissue of the validation subject.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from app.core.device import resolve_device
from app.data.augment import augment_slices, deform_slices
from app.errors import CheckpointError, OptionError
from app.foreground import FOREGROUND_THRESHOLD
from app.nets.base import AnomalyModel, ModelConfig
from app.nets.checkpoint import load_checkpoint, read_card, save_checkpoint, stem_of
from app.nets.registry import create_model, get_family
from app.train.state import load_train_state, save_train_state, train_state_weights
from app.train.steps import STEPS, make_step

VAL_LOSS_DEFINITION = (
    "mean |x - pseudo_normal(x)| (eval mode) over foreground pixels (x > 0.01) outside the lesion masks of the "
    "validation slices"
)


@dataclass
class TrainOptions:
    family: str
    data: str
    out: str
    epochs: int = 10
    size: int | None = None  # default: the data's slice size
    batch_size: int = 16
    lr: float | None = None  # default: the family's
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    width: int = 8
    latent_dim: int = 64
    extra: dict[str, Any] = field(default_factory=dict)
    time_limit: float | None = None  # seconds of training (all sessions together); stops mid-epoch
    val_subset: int = 256
    augment: bool = True  # random left-right flips
    domain_augment: float = 1.0  # strength of app.data.augment.augment_slices on the fly (0 = off)
    shape_augment: float = 0.0  # strength of app.data.augment.deform_slices on the fly (0 = off)
    patience: int | None = None  # stop after this many epochs without a better selection metric
    select: str = "val_ap"  # "val_ap" (pooled pixel AP of the base map on validation lesions) or "val_loss"
    command: str = ""


@dataclass
class Data:
    train: np.ndarray  # (N, C, S, S) float32
    val: np.ndarray
    val_masks: np.ndarray | None  # (N, S, S) bool
    meta: dict[str, Any]


def _resize(images: np.ndarray, size: int, masks: bool = False) -> np.ndarray:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    squeeze = t.dim() == 3
    if squeeze:
        t = t[:, None]
    if masks:
        out = F.interpolate(t, size=(size, size), mode="nearest")
    else:
        out = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = out[:, 0] if squeeze else out
    return out.clamp(0, 1).numpy()


def load_data(data_dir: str, size: int | None, val_subset: int | None) -> Data:
    from app.data.splits import load_split

    root = Path(data_dir)
    if not root.is_dir():
        raise OptionError(f"training data folder {root} does not exist")
    train = load_split(root, "train")
    val = load_split(root, "val")
    timg = np.asarray(train.images, dtype=np.float32)
    vimg = np.asarray(val.images, dtype=np.float32)
    vmask = None if val.masks is None else np.asarray(val.masks).astype(bool)
    if timg.ndim == 3:
        timg, vimg = timg[:, None], vimg[:, None]
    if val_subset and vimg.shape[0] > val_subset:
        idx = np.round(np.linspace(0, vimg.shape[0] - 1, val_subset)).astype(int)
        vimg = vimg[idx]
        vmask = None if vmask is None else vmask[idx]
    if size is not None:
        timg, vimg = _resize(timg, size), _resize(vimg, size)
        vmask = None if vmask is None else _resize(vmask.astype(np.float32), size, masks=True) > 0.5
    meta: dict[str, Any] = {}
    meta_path = root / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}
    return Data(timg, vimg, vmask, meta)


def _short(v: Any, depth: int = 0) -> Any:
    """Long lists/dicts shrink to what identifies them (their ``name`` fields), so the card stays small."""
    if len(json.dumps(v, default=str)) <= 200:
        return v
    if isinstance(v, dict):
        if "name" in v:
            return v["name"]
        return {k: _short(x, depth + 1) for k, x in v.items()} if depth < 2 else "..."
    if isinstance(v, list):
        names = [x["name"] for x in v if isinstance(x, dict) and "name" in x]
        return names if names else f"{len(v)} entries"
    return str(v)[:200]


def summarize_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The data's meta.json, with long parts reduced to names and counts."""
    return {k: _short(v) for k, v in meta.items()}


@torch.no_grad()
def validation_loss(model: AnomalyModel, images: np.ndarray, masks: np.ndarray | None, device, batch: int = 32):
    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    for i in range(0, images.shape[0], batch):
        x = torch.from_numpy(images[i : i + batch]).to(device)
        err = (model.pseudo_normal(x) - x).abs().mean(dim=1)
        keep = x.mean(dim=1) > FOREGROUND_THRESHOLD
        if masks is not None:
            keep &= ~torch.from_numpy(masks[i : i + batch]).to(device)
        total += float((err * keep).sum())
        count += float(keep.sum())
    model.train(was_training)
    return total / max(count, 1.0)


@torch.no_grad()
def validation_ap(model: AnomalyModel, images: np.ndarray, masks: np.ndarray | None, device, batch: int = 32):
    """Threshold-free separability of the base model's map on validation: average precision of the anomaly
    map over all foreground pixels of the validation slices, pooled (lesion pixels positive). None without
    masks or lesions. The map is the family's own (VAE-Grad's needs gradients, so they are enabled)."""
    from app.core.maps import foreground_mask
    from app.core.metrics import average_precision  # sklearn's definition (tests/core/test_metrics.py)

    if masks is None or not masks.any():
        return None
    was_training = model.training
    model.eval()
    scores, labels = [], []
    for i in range(0, images.shape[0], batch):
        xb = images[i : i + batch]
        with torch.enable_grad():
            d = model.anomaly_map(torch.from_numpy(xb).to(device))[:, 0].detach().cpu().numpy()
        fg = foreground_mask(xb.mean(axis=1))
        scores.append(d[fg])
        labels.append(masks[i : i + batch][fg])
    model.train(was_training)
    y = np.concatenate(labels)
    return average_precision(np.concatenate(scores), y) if y.any() else None


def _better(select: str, new, best) -> bool:
    if new is None:
        return False
    if best is None:
        return True
    return new > best if select == "val_ap" else new < best


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))


def _resume_weights(model: AnomalyModel, out: Path, best: dict) -> None:
    """Before a resumed run: the best epoch's weights where the run keeps them while it trains (the last epoch's
    when that was the best), then the last epoch's weights into ``model`` -- the checkpoint it was loaded from holds
    the best epoch's when early stopping shipped them. A state saved before it held weights leaves ``model`` as
    the checkpoint has it."""
    last, best_w = train_state_weights(state_path(out))
    if best.get("epoch") is not None and not best_stem(out).with_suffix(".safetensors").is_file():
        keep = best_w if best.get("since", 0) > 0 else last
        if keep is not None:
            model.load_state_dict(keep)
            save_checkpoint(model, best_stem(out), {})
    if last is not None:
        model.load_state_dict(last)


def best_stem(out: str | Path) -> Path:
    """Where the best epoch's weights wait while training runs (removed when it finishes)."""
    stem = stem_of(out)
    return stem.with_name(stem.name + "_training_best")


def state_path(out: str | Path) -> Path:
    stem = stem_of(out)
    return stem.with_name(stem.name + ".train.safetensors")


def train(opts: TrainOptions, log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) and return the final card."""
    from tqdm import tqdm

    get_family(opts.family)  # unknown family -> CheckpointError with the known ones
    if opts.epochs < 1 or opts.batch_size < 1:
        raise OptionError("--epochs and --batch-size must be >= 1")
    if opts.select not in ("val_ap", "val_loss"):
        raise OptionError(f"--select must be val_ap or val_loss, not {opts.select!r}")
    if opts.patience is not None and opts.patience < 1:
        raise OptionError("--patience must be >= 1")
    device = resolve_device(opts.device)
    out = stem_of(opts.out)
    data = load_data(opts.data, opts.size, opts.val_subset)
    size = int(data.train.shape[-1])
    channels = int(data.train.shape[1])
    if data.train.shape[0] == 0:
        raise OptionError(f"no training slices in {opts.data}")

    history: list[dict[str, Any]] = []
    elapsed = 0.0
    start_epoch = 0
    commands = [opts.command] if opts.command else []
    if opts.resume:
        if not state_path(out).is_file():
            raise CheckpointError(f"nothing to resume: {state_path(out)} not found (train without --resume first)")
        model, card = load_checkpoint(out, device="cpu", expect_family=opts.family)
        model.to(device).train()
        for p in model.parameters():
            p.requires_grad_(True)
        config = model.config
        tr = card.get("training", {})
        history = list(card.get("history", []))
        commands = list(tr.get("commands", [])) + commands
    else:
        torch.manual_seed(opts.seed)
        config = ModelConfig(
            family=opts.family,
            image_size=size,
            channels=channels,
            latent_dim=opts.latent_dim,
            width=opts.width,
            extra=dict(opts.extra),
        )
        model = create_model(config).to(device).train()
    if model.config.image_size != size or model.config.channels != channels:
        raise CheckpointError(
            f"checkpoint {out.name} is for {model.config.channels}x{model.config.image_size}^2 images, the data has "
            f"{channels}x{size}^2"
        )
    step = make_step(model, opts.lr)
    best: dict[str, Any] = {"value": None, "epoch": None, "since": 0}
    if opts.resume:
        info = load_train_state(state_path(out), step.optimizers)
        best = dict(info.get("best", best))
        start_epoch = int(info["epochs_done"])
        elapsed = float(info["elapsed_s"])
        if info.get("finished_by_time_limit"):
            start_epoch = int(math.ceil(info.get("epochs_float", start_epoch)))
        _resume_weights(model, out, best)
    n = data.train.shape[0]
    steps_per_epoch = max(1, n // opts.batch_size) if n >= opts.batch_size else 1
    stopped_by_time = False
    log(
        f"training {opts.family} on {n} slices {channels}x{size}x{size} ({device}); "
        f"{sum(p.numel() for p in model.parameters())} parameters; epochs {start_epoch + 1}..{opts.epochs}"
    )
    epochs_float = float(start_epoch)
    for epoch in range(start_epoch, opts.epochs):
        gen = _epoch_generator(opts.seed, epoch)
        perm = torch.randperm(n, generator=gen)
        sums: dict[str, float] = {}
        done_steps = 0
        t_epoch = time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{opts.epochs}", disable=not progress, leave=True)
        model.train()
        for b in bar:
            idx = perm[b * opts.batch_size : (b + 1) * opts.batch_size]
            x = torch.from_numpy(data.train[idx.numpy()]).to(device)
            if opts.augment:
                flip = torch.rand(x.shape[0], generator=gen) < 0.5
                x = torch.where(flip.to(device)[:, None, None, None], x.flip(-1), x)
            if opts.shape_augment > 0:
                x = deform_slices(x, gen, opts.shape_augment)
            if opts.domain_augment > 0:
                x = augment_slices(x, gen, opts.domain_augment)
            losses = step(x, gen)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            done_steps += 1
            bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items() if k in ("loss", "total", "con", "rec")})
            if opts.time_limit is not None and elapsed + time.perf_counter() - t_epoch > opts.time_limit:
                stopped_by_time = True
                break
        bar.close()
        elapsed += time.perf_counter() - t_epoch
        train_losses = {k: v / max(done_steps, 1) for k, v in sums.items()}
        val = validation_loss(model, data.val, data.val_masks, device)
        model.eval()  # statistics the map needs (VAE-Grad's gradient scale), from this epoch's weights
        sample = data.train[np.round(np.linspace(0, n - 1, min(n, 64))).astype(int)]
        model.after_training(torch.from_numpy(sample).to(device))
        ap = validation_ap(model, data.val, data.val_masks, device)
        epochs_float = epoch + done_steps / steps_per_epoch
        history.append(
            {
                "epoch": round(epochs_float, 3),
                "train": {k: round(v, 6) for k, v in train_losses.items()},
                "val_loss": round(val, 6),
                "val_ap": None if ap is None else round(ap, 5),
                "elapsed_s": round(elapsed, 1),
            }
        )
        metric = val if opts.select == "val_loss" else ap
        if _better(opts.select, metric, best["value"]):
            best = {"value": metric, "epoch": round(epochs_float, 3), "since": 0}
            save_checkpoint(model, best_stem(out), {})
        else:
            best["since"] = int(best["since"]) + 1
        ap_text = "n/a" if ap is None else f"{ap:.4f}"
        log(
            f"epoch {epochs_float:.2f}: train {step.main_loss}={train_losses.get(step.main_loss, float('nan')):.5f} "
            f"val_loss={val:.5f} val_ap={ap_text} (best {opts.select} at epoch {best['epoch']}; {elapsed:.0f} s)"
        )
        early = opts.patience is not None and best["since"] >= opts.patience
        finished = stopped_by_time or early or epoch + 1 == opts.epochs
        keep_best = opts.patience is not None  # early-stopping mode: the best epoch is what ships
        last_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        best_file = best_stem(out).with_suffix(".safetensors")
        best_weights = None
        if best["since"] > 0 and best_file.is_file():
            best_weights = load_checkpoint(best_stem(out), device="cpu")[0].state_dict()
        if finished and keep_best and best_weights is not None:
            model.load_state_dict(best_weights)
        if finished:
            model.eval()
            model.after_training(torch.from_numpy(sample).to(device))
        card = _card(opts, model, data, history, elapsed, commands, finished, stopped_by_time, epochs_float, device)
        card["training"]["selection"] = {
            "metric": opts.select,
            "patience": opts.patience,
            "best_epoch": best["epoch"],
            "best_value": best["value"],
            "stopped_early": bool(early),
            "rule": "with a patience, the shipped weights are those of the epoch with the best selection metric on "
            "validation; without one, the last epoch's",
        }
        if finished and keep_best and best["epoch"] is not None:
            kept = next((h for h in history if h["epoch"] == best["epoch"]), history[-1])
            card["final_val_loss"] = card["val_loss"] = kept["val_loss"]
        save_checkpoint(model, out, card)
        save_train_state(
            state_path(out),
            step.optimizers,
            {
                "epochs_done": epoch + 1 if not stopped_by_time else epoch,
                "epochs_float": epochs_float,
                "elapsed_s": elapsed,
                "finished_by_time_limit": stopped_by_time,
                "best": best,
            },
            weights=last_weights,
            best_weights=best_weights,
        )
        if finished:
            for suffix in (".safetensors", ".json"):
                best_stem(out).with_suffix(suffix).unlink(missing_ok=True)
        if early:
            log(f"no better {opts.select} for {opts.patience} epochs: stopped; kept epoch {best['epoch']}")
            break
        if stopped_by_time:
            log(f"time limit of {opts.time_limit:.0f} s reached after {epochs_float:.2f} epochs")
            break
    return read_card(out)


@torch.no_grad()
def _latent_size(model: AnomalyModel, x: np.ndarray, device) -> int | None:
    """Size of z for one image (in eval mode: encoding in train mode would move BatchNorm statistics)."""
    if not len(x):
        return None
    was_training = model.training
    model.eval()
    size = int(np.prod(model.encode(torch.from_numpy(x).to(device)).shape[1:]))
    model.train(was_training)
    return size


def _card(opts, model, data, history, elapsed, commands, finished, by_time, epochs_float, device) -> dict:
    last = history[-1] if history else {}
    step_cls = STEPS.get(opts.family)
    card = {
        "status": "trained" if finished else "training",
        "latent_description": type(model).latent_description,
        "latent_size": _latent_size(model, data.val[:1], device),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "training": {
            "data_dir": str(opts.data),
            "data_meta": summarize_meta(data.meta),
            "n_train_slices": int(data.train.shape[0]),
            "n_val_slices_for_loss": int(data.val.shape[0]),
            "command": commands[-1] if commands else "",
            "commands": commands,
            "epochs": round(epochs_float, 3),
            "epochs_requested": opts.epochs,
            "stopped_by_time_limit": bool(by_time),
            "time_limit_s": opts.time_limit,
            "batch_size": opts.batch_size,
            "lr": opts.lr or (step_cls.default_lr if step_cls else 1e-3),
            "seed": opts.seed,
            "augmentation": _augmentation_text(opts),
            "device": str(device),
            "torch": torch.__version__,
            "machine": f"{platform.machine()} {platform.processor() or ''} ({torch.get_num_threads()} threads)".strip(),
            "training_time_s": round(elapsed, 3),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        # flat aliases that `bench quality` copies into its report
        "epochs": round(epochs_float, 3),
        "train_seconds": round(elapsed, 3),
        "data": str(opts.data),
        "val_loss": last.get("val_loss"),
        "final_train_loss": last.get("train", {}),
        "final_val_loss": last.get("val_loss"),
        "val_loss_definition": VAL_LOSS_DEFINITION,
        "history": history,
    }
    return card


def _augmentation_text(opts: TrainOptions) -> str:
    parts = ["random left-right flip (p=0.5)"] if opts.augment else []
    if opts.shape_augment > 0:
        parts.append(
            f"app.data.augment.deform_slices strength {opts.shape_augment:g} (affine and elastic anatomy changes)"
        )
    if opts.domain_augment > 0:
        parts.append(
            f"app.data.augment.augment_slices strength {opts.domain_augment:g} (blur, gamma, gain, bias field, noise)"
        )
    return "; ".join(parts) or "none"


def options_dict(opts: TrainOptions) -> dict[str, Any]:
    return asdict(opts)
