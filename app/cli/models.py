"""``models``: list the model zoo with what each card says."""

from __future__ import annotations

import argparse

HELP = (
    "list the trained models in models/ (family, image size, the eps/tau detect applies, chosen on validation, and "
    "how well a batch worklist's order triages with the model, and batch=base where batch runs its base map)"
)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=None, help="model directory (default: the bundled models/)")


def triage_cell(card: dict, weights_sha256: str) -> str:
    """The triage state of a plain batch run with the card (:func:`app.nets.card.card_batch_detection`), in a few
    words: + MG, or the base map where the card's screening choice says so ("batch=base", with its reporting cut
    where it has one)."""
    from app.core.triage_evidence import Operator, triage_evidence
    from app.nets.card import card_batch_detection

    d = card_batch_detection(card)
    base = d["base_only"]
    op = Operator("base" if base else "mg", d["eps"], d["tau"], report_above=d["report_above"])
    ev = triage_evidence(card, weights_sha256, op)
    mode = "batch=base " if base else ""
    if base and d["report_above"] is not None:
        mode = f"batch=base(findings above D {d['report_above']:.3g}) "
    if ev.measurement is None:
        return f"{mode}triage={ev.status}"
    m = ev.measurement
    lo, hi = m["ci95"]
    n = m["n_normal"] + m["n_abnormal"]
    return f"{mode}triage={ev.status} (AUROC {m['auroc']:.2f} [{lo:.2f}-{hi:.2f}], {n} {m['split']} studies)"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from app.batch.task import file_sha256, raw_card
    from app.core.ensemble import members_weights_sha256
    from app.errors import MatchGenError
    from app.nets.card import card_choices
    from app.nets.checkpoint import read_card
    from app.nets.zoo import DEFAULT_MODEL, MODELS_DIR, list_ensembles, list_models

    d = Path(args.dir) if args.dir else MODELS_DIR
    names = list_models(d)
    if not names:
        print(f"no models in {d}")
        return 0
    for name in names:
        card = read_card(d / name)
        cfg = card.get("config", {})
        ch = card_choices(card)  # what detect, batch and the viewer apply
        raw = raw_card(d / f"{name}.json")  # as batch reads it for the triage measurement
        triage = triage_cell(raw or {}, file_sha256(d / f"{name}.safetensors"))
        mark = "*" if name == DEFAULT_MODEL else " "
        print(
            f"{mark} {name:<16} family={card.get('family', '?'):<10} size={cfg.get('image_size')} "
            f"eps={ch['eps']:.4g} tau={ch['tau']:.4g} {triage}"
        )
    for ens in list_ensembles(d):  # cards without weights, naming zoo members
        card = raw_card(d / f"{ens}.json")
        ch = card_choices(card)
        members = "+".join(  # a member at eps 0 runs as its base model at every factor
            Path(m.get("model", "?")).name + ("(base)" if m.get("eps") == 0 else "") for m in card.get("members", [])
        )
        try:
            triage = triage_cell(card, members_weights_sha256(card, d))
        except (MatchGenError, OSError):  # a member missing here: batch would refuse it too
            triage = "triage=? (a member is missing)"
        mark = "*" if ens == DEFAULT_MODEL else " "
        print(
            f"{mark} {ens:<16} family=ensemble   members={members} eps=x{ch['eps']:.4g} (each member's own) "
            f"tau={ch['tau']:.4g} {triage}"
        )
    return 0
