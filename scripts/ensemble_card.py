"""Make an ensemble card (app.core.ensemble) from zoo models, calibrated on validation volumes (never test).

    python scripts/ensemble_card.py DATA_DIR MODEL MODEL [MODEL ...] --out CARD.json [--first N] [--threads 2]
        [--base-member MODEL ...] [--z-edge nearest|shrink]

Each member runs as ``detect`` applies it (its card's solver, layout and whole-volume eps), except a
``--base-member``: it runs as its base model (eps 0 in the ensemble card, whatever the ensemble's eps factor; no
solver steps, so it costs one forward pass). ``--z-edge`` sets what the z window does at the ends of a volume
(app.core.maps.z_window; default: the first member's card's). The scales and tau come
from the first ``--first`` validation realisations of DATA_DIR (default 16: the volumes the zoo's cards were chosen
on); the post-processing is the first member's card's."""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from app.atomic import atomic_write_text  # noqa: E402
from app.core.ensemble import Member, calibrate, ensemble_card  # noqa: E402
from app.data.splits import load_volumes  # noqa: E402
from app.errors import MatchGenError  # noqa: E402
from app.nets.card import Z_EDGES  # noqa: E402


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("data")
    p.add_argument("models", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--first", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--base-member", action="append", default=[], metavar="MODEL",
                   help="a member (named among the models) that runs as its base model (repeatable)")  # fmt: skip
    p.add_argument("--z-edge", choices=Z_EDGES, help="the z window at a volume's ends (default: the first member's)")
    a = p.parse_args(argv)
    if len(a.models) < 2 or len(set(a.models)) < len(a.models):
        print("ensemble_card: name at least two different models", file=sys.stderr)
        return 2
    if unknown := sorted(set(a.base_member) - set(a.models)):
        print(f"ensemble_card: --base-member {', '.join(unknown)} is not among the models", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    t0 = time.time()
    try:
        vols = load_volumes(a.data, "val").head(a.first)
        members, post = [], None
        for name in a.models:
            member, _ = Member.from_zoo(name, "cpu", batch_size=16)
            if name in a.base_member:
                member.eps = 0.0  # its base model at every eps factor (the ensemble card records eps 0)
            post = post or member.detector.post
            members.append(member)
        if a.z_edge:
            post = replace(post, z_edge=a.z_edge)
        choice = calibrate(members, vols, post)
    except MatchGenError as exc:
        print(f"ensemble_card: {exc}", file=sys.stderr)
        return 2
    prov = {"data_dir": a.data, "volumes": a.first, "seeds": list(vols.seeds), "seconds": round(time.time() - t0, 1),
            "command": " ".join(["python scripts/ensemble_card.py", *argv])}  # fmt: skip
    card = ensemble_card(Path(a.out).stem, members, post, choice, prov)
    atomic_write_text(a.out, json.dumps(card, indent=1) + "\n")
    print(f"wrote {a.out}: tau {choice['tau']:g} (+ MG), {choice['tau_base']:g} (base); validation volume Dice "
          f"{100 * choice['val_volume_dice']:.1f} / {100 * choice['val_volume_dice_base']:.1f} %")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
