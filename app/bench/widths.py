"""``bench widths``: the quality-vs-speed table a family's width is chosen from (issue 10).

Speed does not depend on the weights, only on the architecture: for every width the family is built with the
reference card's configuration (same family options, latent size, image size) and seeded random weights, and two
costs are timed on this machine -- one training step (flip + the on-the-fly scanner variation + the family's
step, batch ``batch_size``) and the detection ``detect`` applies (the reference card's solver, step budget,
memory layout and eps, on real test slices in batches of ``batch_size``: seconds per slice, the figure of the
volume goal). Quality needs training: each trained checkpoint passed in adds its width's validation figures from
its own card (kept epoch's validation AP and loss, training seconds per epoch, and the whole-volume Dice when it
has been calibrated). Nothing here trains or chooses; the table is what a choice is made from.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: the volume goal of ``bench speed`` (seconds per slice): widths above it are too slow to be the default
VOLUME_GOAL_S_PER_SLICE = 0.2


def width_speed(
    card: dict[str, Any],
    width: int,
    train_images: np.ndarray,
    test_images: np.ndarray,
    batch_size: int = 16,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Training-step and detection cost of ``card``'s family at ``width`` (seeded random weights)."""
    from app.bench.speed import CountingDecode, best_seconds
    from app.core.detector import Detector
    from app.data.augment import augment_slices
    from app.nets.base import ModelConfig
    from app.nets.card import card_choices
    from app.nets.registry import create_model
    from app.train.steps import make_step

    config = replace(ModelConfig.from_dict(card["config"]), width=int(width))
    torch.manual_seed(seed)
    model = create_model(config)
    params = int(sum(p.numel() for p in model.parameters()))
    gen = torch.Generator().manual_seed(seed)
    step = make_step(model)
    xb = torch.from_numpy(np.ascontiguousarray(train_images[:batch_size], dtype=np.float32))

    def train_step() -> None:
        model.train()
        step(augment_slices(xb.flip(-1), gen, 1.0), gen)

    train_s = best_seconds(train_step, repeats)
    model.freeze()
    det = Detector.from_card(model, card, "cpu", batch_size=batch_size)
    eps = float(card_choices(card)["eps"])
    x = np.ascontiguousarray(test_images, dtype=np.float32)
    with torch.no_grad():
        latent = int(det.model.encode(torch.from_numpy(x[:1])).flatten(1).shape[1])
    counter = CountingDecode(det.model.decode)
    det.model.decode = counter  # what the solver calls; counts the decodes with and without a gradient

    solve_repeats = max(1, repeats - 1)
    solve_s = best_seconds(lambda: det.run(x, eps), solve_repeats)
    runs = solve_repeats + 1  # the counter saw the warm-up run too
    n = len(x)
    return {
        "width": int(width),
        "parameters": params,
        "latent_size": latent,
        "train_step_s": round(train_s, 4),
        "train_s_per_slice": round(train_s / batch_size, 5),
        "detect_s_per_slice": round(solve_s / n, 4),
        "decodes_with_grad_per_slice": round(counter.with_grad / (runs * n), 2),
        "meets_volume_goal": bool(solve_s / n <= VOLUME_GOAL_S_PER_SLICE),
    }


def trained_quality(path: str | Path) -> dict[str, Any]:
    """A trained checkpoint's validation figures, read from its card (never recomputed: the card is the record)."""
    from app.nets.card import read_card

    card = read_card(path)
    tr = card.get("training") or {}
    sel = tr.get("selection") or {}
    hist = card.get("history") or []
    kept = sel.get("best_epoch") or (hist[-1]["epoch"] if hist else None)
    row = next((h for h in hist if kept is not None and float(h.get("epoch", -1)) == float(kept)), {})
    epochs = float(tr.get("epochs") or 0.0)
    vol = card.get("chosen_volume") or {}
    return {
        "checkpoint": str(path),
        "width": int(card["config"]["width"]),
        "epochs": epochs,
        "kept_epoch": kept,
        "val_ap": row.get("val_ap"),
        "val_loss": row.get("val_loss"),
        "train_s_per_epoch": round(float(tr["training_time_s"]) / epochs, 1) if epochs and tr.get("training_time_s")
        else None,
        "machine": tr.get("machine"),
        "volume_dice_base": vol.get("val_volume_dice_base"),
        "volume_dice_mg": vol.get("val_volume_dice"),
        "volume_n": vol.get("n_volumes"),
    }


def run_widths(
    reference: str,
    widths: list[int],
    data: str | None,
    trained: list[str],
    threads: int | None = None,
    slices: int = 32,
    batch_size: int = 16,
    log=print,
) -> dict[str, Any]:
    from app.bench.speed import load_slices
    from app.nets.card import card_solver, describe_solver, read_card
    from app.nets.zoo import resolve_model

    if threads:
        torch.set_num_threads(threads)
    ref = resolve_model(reference)
    card = read_card(ref)
    size = int(card["config"]["image_size"])
    test, _masks, where = load_slices(data, slices, size)
    if data is not None:
        from app.data import load_split

        images = load_split(data, "train", mmap=True).images  # only the slices taken are read
        train = np.asarray(images[np.round(np.linspace(0, len(images) - 1, batch_size)).astype(int)])  # evenly spaced
    else:
        train = test[:batch_size]
    rows = []
    for w in widths:
        t = time.perf_counter()
        rows.append(width_speed(card, w, train, test, batch_size))
        log(f"width {w}: {rows[-1]} ({time.perf_counter() - t:.0f} s)")
    quality = [trained_quality(p) for p in trained]
    return {
        "reference": str(ref),
        "family": card["family"],
        "slices": where,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "solver": describe_solver(card_solver(card)),
        "volume_goal_s_per_slice": VOLUME_GOAL_S_PER_SLICE,
        "speed": rows,
        "quality": quality,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def markdown(res: dict[str, Any], command: str) -> str:
    lines = [
        f"# bench widths: {res['family']} ({res['reference']})",
        "",
        f"Command: `{command}`",
        "",
        f"{res['threads']} torch threads, batch {res['batch_size']}, load average {res['load_average']}; detection on "
        f"{res['slices']} with the reference card's solver; seeded random weights (cost does not depend on them).",
        "",
        "| width | parameters | z size | train step (s, batch) | train s per slice | detect s per slice | decodes with "
        f"gradient per slice | volume goal <= {res['volume_goal_s_per_slice']} s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["speed"]:
        lines.append(
            f"| {r['width']} | {r['parameters']:,} | {r['latent_size'] or '-'} | {r['train_step_s']} | "
            f"{r['train_s_per_slice']} | {r['detect_s_per_slice']} | {r['decodes_with_grad_per_slice']} | "
            f"{'yes' if r['meets_volume_goal'] else '**no**'} |"
        )
    if res["quality"]:
        lines += [
            "",
            "Trained checkpoints (figures from their cards: the kept epoch's pooled validation AP of the base map "
            "and validation loss on normal tissue; whole-volume Dice where calibrated):",
            "",
            "| width | checkpoint | epochs (kept) | val AP | val loss | train s per epoch | volume Dice base / +MG |",
            "|---|---|---|---|---|---|---|",
        ]
        for q in sorted(res["quality"], key=lambda q: q["width"]):
            ap = f"{100 * q['val_ap']:.1f} %" if q["val_ap"] is not None else "-"
            vl = f"{q['val_loss']:.4f}" if q["val_loss"] is not None else "-"
            vd = (
                f"{100 * q['volume_dice_base']:.1f} / {100 * q['volume_dice_mg']:.1f} % ({q['volume_n']} volumes)"
                if q["volume_dice_mg"] is not None
                else "-"
            )
            lines.append(
                f"| {q['width']} | `{q['checkpoint']}` | {q['epochs']:g} ({q['kept_epoch']}) | {ap} | {vl} | "
                f"{q['train_s_per_epoch'] or '-'} | {vd} |"
            )
    return "\n".join(lines) + "\n"
