"""An ensemble of the zoo's difference maps: several models read the same slices, each as ``detect`` applies it (its
card's solver, layout and eps), and their maps are averaged after each is divided by its normal tissue's typical
value. Where one model's pseudo-normal copies a lesion another does not, and their residuals on normal tissue lie in
different places (a denoiser's at its noise blobs, an autoencoder's at the cortex it blurs), the mean keeps what
they agree on: the lesion.

An ensemble card (``family: "ensemble"``) names its members by zoo name with each member's card fingerprint when
it was made (:func:`app.core.triage_evidence.card_fingerprint`: the card without its triage measurements; a member
recalibrated since makes the scales stale: refused), each member's scale for + MG and for the
base model, its own post-processing (applied once, to the mean) and its own choice of tau. Its ``eps`` is a factor
of each member's own chosen eps: 1 runs every member at its card's whole-volume choice, 0 is the ensemble of base
models. A member whose eps is 0 in the card (``scripts/ensemble_card.py --base-member``) runs as its base model at
every factor: one forward pass, no solver steps. Its map is in the first member's units (the mean of the scaled
maps times the first member's scale), so tau reads as that model's tau does; the pseudo-normal it shows is its
first member's.

docs/bench/ensemble/rule.md says how the first ensemble was judged."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.core.detector import DetectionOutput, Detector, PostProcessing
from app.core.maps import postprocess
from app.errors import CheckpointError, OptionError
from app.filehash import file_sha256
from app.nets.card import ENSEMBLE_FAMILY as FAMILY
from app.nets.card import is_ensemble_card as is_ensemble
from app.nets.card import read_raw_card

#: the tau grid an ensemble's choice is made on (its maps are in units of the members' normal-tissue median)
TAU_GRID = tuple(np.round(np.arange(0.05, 20.0001, 0.05), 2))


def is_ensemble_file(card_file: str | Path) -> bool:
    """Whether the card file ``card_file`` is an ensemble's (an unreadable one is not: loading it says why)."""
    return is_ensemble(read_raw_card(card_file))


def member_fingerprint(card_file: str | Path) -> str:
    """What an ensemble checks a member's card against: its content without triage measurements (recording one on
    the member changes neither its map nor the ensemble's scales)."""
    from app.core.triage_evidence import card_fingerprint

    card = read_raw_card(card_file)
    if card is None:
        raise CheckpointError(f"{card_file}: cannot read the member's card as a JSON object")
    return card_fingerprint(card)


@dataclass
class Member:
    """One model of an ensemble: its detector (built from its card as ``detect`` builds it), the eps its card
    chose for whole volumes, and the scales its raw maps are divided by (+ MG and base)."""

    name: str
    detector: Detector
    eps: float
    scale_mg: float = 1.0
    scale_base: float = 1.0
    card_sha256: str = ""
    card_fingerprint: str = ""

    def scale(self, base: bool) -> float:
        return self.scale_base if base else self.scale_mg

    @classmethod
    def from_zoo(cls, name: str, device="cpu", batch_size: int = 16, **options) -> tuple[Member, dict]:
        """The zoo model ``name`` (or a checkpoint path) as a member, built as ``detect`` builds it (``options``:
        ``solver``, ``max_steps`` for :meth:`Detector.from_card`), at its card's whole-volume eps, with its card's
        hash and fingerprint (scales unset); and its card."""
        from app.nets.card import card_choices
        from app.nets.checkpoint import load_checkpoint
        from app.nets.zoo import resolve_model

        card_file = resolve_model(name).with_suffix(".json")
        model, card = load_checkpoint(card_file.with_suffix(""), device)
        det = Detector.from_card(model, card, device, batch_size=batch_size, **options)
        member = cls(name, det, card_choices(card)["eps"], card_sha256=file_sha256(card_file),
                     card_fingerprint=member_fingerprint(card_file))  # fmt: skip
        return member, card


@dataclass
class EnsembleDetector:
    """The members' raw maps on the same slices, each divided by its scale, averaged, then ``post`` applied to the
    mean: :meth:`run` returns what :meth:`Detector.run` returns (the first member's pseudo-normal, solver steps,
    loss and distance; the ensemble's map and foreground)."""

    members: list[Member]
    post: PostProcessing = field(default_factory=PostProcessing)

    def __post_init__(self):
        if len(self.members) < 2:
            raise OptionError("an ensemble needs at least two members")

    @property
    def model(self):
        """The first member's model: what the study is prepared for (every member reads the same slices)."""
        return self.members[0].detector.model

    @property
    def solver(self):
        """The first member's solver options (what the viewer reads, e.g. its loss cap)."""
        return self.members[0].detector.solver

    @property
    def device(self):
        return self.members[0].detector.device

    @property
    def batch_size(self) -> int:
        return self.members[0].detector.batch_size

    @property
    def solver_warning(self) -> str | None:
        """The first member's warning that its solver is not its card's (``detect --solver``), else None."""
        return next((w for m in self.members if (w := getattr(m.detector, "solver_warning", None))), None)

    @property
    def precision_note(self) -> str | None:
        """The first member's note that its search steps run in float32 instead of its card's bfloat16 (a device
        without bfloat16 in hardware: app.core.device.search_precision), else None."""
        return next((n for m in self.members if (n := getattr(m.detector, "precision_note", None))), None)

    @property
    def channels_last(self) -> bool:
        """The first member's memory layout (each member runs in its own card's)."""
        return self.members[0].detector.channels_last

    @staticmethod
    def _factors(factor: float | np.ndarray | Sequence[float], n: int) -> np.ndarray:
        """(n,) factors of each member's eps, one per slice, checked: finite and >= 0."""
        if np.ndim(factor) > 0 and np.shape(factor) != (n,):
            raise OptionError(f"eps must be a number or have one value per slice ({n}), got shape {np.shape(factor)}")
        f = np.broadcast_to(np.asarray(factor, np.float64), (n,))
        if not (np.isfinite(f).all() and (f >= 0).all()):
            raise OptionError(f"an ensemble's eps is a factor of each member's chosen eps (>= 0), not {factor!r}")
        return f

    def raw_runs(
        self, x: np.ndarray, factor: float | np.ndarray | Sequence[float] = 1.0, *, base_only: bool = False,
        should_stop=None, progress=None, **overrides,
    ) -> list[DetectionOutput]:  # fmt: skip
        """Each member's run on ``x`` at ``factor`` times its chosen eps (one number, or one per slice: 0 gives that
        slice's base model), with its raw map (no post-processing). ``progress(done, total)`` counts the members'
        slices together; ``overrides`` go to every member's solver (e.g. ``max_steps``)."""
        f = self._factors(factor, len(x))
        per_slice = np.ndim(factor) > 0
        base = base_only or not f.any()
        runs = []
        for i, m in enumerate(self.members):
            report = None
            if progress is not None:
                k = len(self.members)

                def report(done, total, i=i, k=k):
                    progress(i * total + done, k * total)

            eps = m.eps * f if per_slice else m.eps * float(factor)
            runs.append(m.detector.run(x, eps, base_only=base, raw=True, should_stop=should_stop, progress=report,
                                       **overrides))  # fmt: skip
        return runs

    def unit(self, base: bool) -> float:
        """What one unit of the mean of the scaled maps is in the ensemble's map: the first member's scale."""
        return self.members[0].scale(base)

    def combine(
        self, runs: Sequence[DetectionOutput], base: bool | np.ndarray, unit: float | None = None, *, raw: bool = False
    ):
        """The post-processed mean of the scaled raw maps of ``runs`` times ``unit`` (default :meth:`unit`), and
        the foreground it was taken over (the first member's: every member reads the same slices). ``base`` is one
        flag or one per slice (that slice's maps are its base models', scaled by the base scales); ``raw`` leaves
        out the post-processing."""
        fg = runs[0].foreground
        b = np.broadcast_to(np.asarray(base, bool), (len(fg),))

        def per_slice(values) -> np.ndarray:  # (N, 1, 1): a member's base or + MG value for each slice
            return np.where(b, values[0], values[1]).astype(np.float64)[:, None, None]

        mean = sum(r.d / per_slice((m.scale_base, m.scale_mg)) for m, r in zip(self.members, runs, strict=True))
        mean = mean / len(runs)
        first = self.members[0]
        scale = per_slice((first.scale_base, first.scale_mg)) if unit is None else float(unit)
        d = (mean * scale).astype(np.float32)
        if raw:
            return d, fg
        return self.post.apply(d, fg), fg

    def run(
        self,
        x: np.ndarray,
        eps: float | np.ndarray | Sequence[float] = 1.0,
        *,
        base_only: bool = False,
        should_stop: Callable[[], bool] | None = None,
        progress: Callable[[int, int], None] | None = None,
        raw: bool = False,
        **overrides,
    ) -> DetectionOutput:
        """All slices (N, [C,] S, S), as :meth:`Detector.run` runs them: ``eps`` is the factor of each member's
        chosen eps (1: the card's operator; one number, or one per slice, 0 giving that slice's base models);
        ``raw`` returns the mean of the scaled maps before post-processing. ``distance`` is the first member's, as
        a factor of its eps (1: on the sphere of the card's choice), so that the protocol's binding fraction reads
        as a single model's does; ``s``, ``steps`` and ``loss`` are the first member's."""
        n = len(x)
        f = np.zeros(n) if base_only else self._factors(eps, n)
        runs = self.raw_runs(x, f if np.ndim(eps) > 0 else float(f[0]) if n else 0.0, base_only=base_only,
                             should_stop=should_stop, progress=progress, **overrides)  # fmt: skip
        d, fg = self.combine(runs, f == 0, raw=raw)
        first, m0 = runs[0], self.members[0]
        per_image = not base_only and np.ndim(eps) > 0
        eps_out = f.copy() if per_image else (0.0 if base_only or not n else float(f[0]))
        return DetectionOutput(
            s=first.s, d=d, foreground=fg, eps=eps_out, steps=first.steps, loss=first.loss,
            distance=first.distance / m0.eps if m0.eps > 0 else first.distance, analysed=first.analysed,
            post=self.post, eps_factor=first.eps_factor,
        )  # fmt: skip


def normal_median(maps: np.ndarray, foreground: np.ndarray, masks: np.ndarray, erode_px: int) -> float:
    """The median of raw maps over normal voxels: the foreground eroded by ``erode_px`` (as the post-processing
    erodes it), outside the lesions. ``maps``, ``foreground`` and ``masks`` are (N, S, S) slices."""
    inner = postprocess(np.ones(maps.shape, np.float32), foreground, 0, erode_px) > 0
    vals = np.asarray(maps, np.float32)[inner & ~np.asarray(masks, bool)]
    if vals.size == 0:
        raise OptionError("no normal foreground voxels to scale an ensemble member by")
    med = float(np.median(vals))
    if not med > 0:
        raise OptionError("a member's raw map is zero on normal tissue: it cannot be scaled")
    return med


def ensemble_card(
    name: str,
    members: Sequence[Member],
    post: PostProcessing,
    choice: dict[str, Any],
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """The card of an ensemble (see the module docstring)."""
    return {
        "name": name,
        "family": FAMILY,
        "members": [
            {
                "model": m.name,
                "card_sha256": m.card_sha256,
                "card_fingerprint": m.card_fingerprint,
                "eps": m.eps,
                "scale_mg": m.scale_mg,
                "scale_base": m.scale_base,
            }  # fmt: skip
            for m in members
        ],
        "eps_unit": "a factor of each member's chosen whole-volume eps (1: each member's own choice; 0: base models)",
        "eps_range": {"eps_min": 0.0, "eps_max": 1.0},
        "map_unit": "the first member's raw map: the mean of the members' scaled maps times its scale",
        "postprocess": post.as_dict(),
        "chosen_volume": choice,
        "calibration": provenance,
    }


def load_ensemble(
    card_path: str | Path, device: str = "cpu", batch_size: int = 16, median_size: int | None = None, **member_options
) -> tuple[EnsembleDetector, dict]:
    """The ensemble of ``card_path`` with its members loaded from the zoo, each checked against the card hash it
    was made with and built as ``detect`` builds it (``member_options``: ``solver``, ``max_steps`` for every
    member's :meth:`Detector.from_card`); ``median_size`` overrides the ensemble's median filter. Every member must
    read the same slices (image size, channels, normalisation)."""
    from app.nets.card import read_card

    path = Path(card_path)
    card = read_card(path)  # validated: an ensemble card names at least two members with their scales
    if not is_ensemble(card):
        raise CheckpointError(f"{path}: not an ensemble card (family {card.get('family')!r})")
    members = []
    for m in card["members"]:
        member, mcard = Member.from_zoo(m["model"], device, batch_size, **member_options)
        made = ("fingerprint", m["card_fingerprint"], member.card_fingerprint) if m.get("card_fingerprint") else (
            "SHA-256", m.get("card_sha256"), member.card_sha256)  # fmt: skip
        if made[1] and made[1] != made[2]:
            raise CheckpointError(
                f"{path}: member {m['model']!r} has changed since the ensemble was calibrated (card {made[0]} "
                f"{made[2][:12]}, the ensemble was made with {made[1][:12]}); calibrate the ensemble again"
            )
        member.eps, member.scale_mg, member.scale_base = float(m["eps"]), float(m["scale_mg"]), float(m["scale_base"])
        members.append(member)
        model = member.detector.model
        if len(members) == 1:  # what the first member was trained on decides the ensemble's domain checks
            for key in ("domain", "training"):
                if key in mcard:
                    card.setdefault(key, mcard[key])
        elif _input_of(model) != _input_of(members[0].detector.model):
            raise CheckpointError(f"{path}: member {m['model']!r} reads other slices than {members[0].name!r}")
    post = dict(card["postprocess"])
    if median_size is not None:
        post["median_size"] = int(median_size)
    ens = EnsembleDetector(members, PostProcessing(**post))
    return ens, card


def _input_of(model) -> tuple:
    c = model.config
    return (c.image_size, c.channels, c.normalization)


def choose_tau(maps: np.ndarray, masks: np.ndarray, post: PostProcessing, taus: Sequence[float] = TAU_GRID):
    """(tau, mean whole-volume Dice, the Dice per tau): the first tau of ``taus`` with the best mean Dice over the
    volumes (R, Z, S, S), detections cleaned by ``post``'s component rule."""
    from app.core.metrics import dice_table

    t = np.asarray(taus, np.float64)
    table = dice_table(list(maps), list(np.asarray(masks, bool)), t, post.min_component_px, abnormal_only=False)
    i = int(np.nanargmax(table))
    return float(t[i]), float(table[i]), table


def calibrate(members: list[Member], volumes: Any, post: PostProcessing, log=print) -> dict[str, Any]:
    """Each member's scales (+ MG and base: :func:`normal_median` of its raw maps over ``volumes``, validation
    realisations with masks), then tau for + MG and for base on the same volumes (:func:`choose_tau`, the maps
    averaged over ``post``'s z window as ``detect`` averages a study). Sets the members' scales; returns the
    choice for the card's ``chosen_volume``."""
    from app.core.protocol import across_volumes

    images, masks = np.asarray(volumes.images), np.asarray(volumes.masks, bool)
    r, z = masks.shape[:2]
    flat, flat_masks = images.reshape(r * z, *images.shape[2:]), masks.reshape(r * z, *masks.shape[2:])
    ens = EnsembleDetector(members, post)
    out: dict[str, Any] = {}
    for mode in ("mg", "base"):
        base = mode == "base"
        runs = ens.raw_runs(flat, 1.0, base_only=base)
        for m, run in zip(members, runs, strict=True):
            s = normal_median(run.d, run.foreground, flat_masks, post.erode_px)
            if base:
                m.scale_base = s
            else:
                m.scale_mg = s
            log(f"{mode}: {m.name} scale {s:.5g}")
        d, fg = ens.combine(runs, base, unit=1.0)  # chosen on the mean of the scaled maps, stored in the map's unit
        maps = across_volumes(post, d.reshape(r, z, *d.shape[1:]), fg.reshape(r, z, *fg.shape[1:]), volumes)
        tau, best, table = choose_tau(maps, masks, post)
        log(f"{mode}: tau {tau:g} x {ens.unit(base):.5g}, mean whole-volume Dice {100 * best:.1f} % over {r} volumes")
        out[mode] = {"tau": tau * ens.unit(base), "scaled_tau": tau, "dice": best,
                     "table": [round(float(v), 6) for v in table]}  # fmt: skip
    return {
        "eps": 1.0,
        "tau": out["mg"]["tau"],
        "tau_base": out["base"]["tau"],
        "scaled_tau": {"mg": out["mg"]["scaled_tau"], "base": out["base"]["scaled_tau"]},
        "val_volume_dice": round(out["mg"]["dice"], 6),
        "val_volume_dice_base": round(out["base"]["dice"], 6),
        "n_volumes": int(r),
        "tau_grid": [float(TAU_GRID[0]), float(TAU_GRID[-1]), round(float(TAU_GRID[1] - TAU_GRID[0]), 4)],
        "dice_per_tau": {"mg": out["mg"]["table"], "base": out["base"]["table"]},
        "rule": "each member's raw map divided by its median over normal eroded-foreground voxels of the validation "
        "volumes, averaged, post-processed; scaled_tau: the best mean whole-volume Dice over those volumes on "
        "tau_grid; tau: scaled_tau times the first member's scale (the map's unit)",
    }


def members_weights_sha256(card: dict[str, Any], models_dir: Path | None = None) -> str:
    """One SHA-256 for the weights an ensemble runs: over each member's name, card fingerprint and weights hash
    (what a batch's workers must share, as they share a single model's weights file)."""
    from app.nets.zoo import resolve_model

    parts = []
    for m in card.get("members", []):
        stem = resolve_model(m["model"], models_dir)
        parts.append(
            [m["model"], member_fingerprint(stem.with_suffix(".json")), file_sha256(stem.with_suffix(".safetensors"))]
        )
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def load_detector(
    stem: str | Path, device="cpu", *, batch_size: int | None = None, median_size: int | None = None,
    solver: str = "card", max_steps: int | None = None,
):  # fmt: skip
    """(detector, model, card) of a zoo model or checkpoint ``stem``, or of an ensemble card, built as ``detect``
    builds it: :meth:`Detector.from_card` for a model, :func:`load_ensemble` for an ensemble (its ``model`` is its
    first member's). ``batch_size`` None keeps each loader's default."""
    from app.nets.checkpoint import load_checkpoint

    card_file = Path(stem).with_suffix(".json")
    batch = {} if batch_size is None else {"batch_size": batch_size}
    if is_ensemble_file(card_file):
        det, card = load_ensemble(card_file, device, median_size=median_size, solver=solver, max_steps=max_steps,
                                  **batch)  # fmt: skip
        return det, det.model, card
    model, card = load_checkpoint(Path(stem), device)
    det = Detector.from_card(model, card, device, solver=solver, max_steps=max_steps, median_size=median_size, **batch)
    return det, model, card


def family_of(card: dict[str, Any], model) -> str:
    """The family a detection is credited to (a DICOM SEG's algorithm): "ensemble", else the model's."""
    return FAMILY if is_ensemble(card) else model.config.family
