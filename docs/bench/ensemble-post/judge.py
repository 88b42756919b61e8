"""Judge candidate P against the shipped ensemble card on fresh validation realisations (rule.md)."""
import json, sys
import numpy as np
from app.core.detector import PostProcessing
from app.core.maps import postprocess
from app.core.metrics import dice_table, paired_difference
from app.core.protocol import across_volumes
from app.data.splits import load_volumes
from app.nets.card import read_card

raw = np.load(sys.argv[1])
vols = load_volumes("/work/cache/brain-proxy-val192z", "val")
card = read_card("models/dae+ae-l1.json")
masks, fg = raw["masks"], raw["fg"]
r, z = masks.shape[:2]

def op(mode, w, med, er, zmm, mc, tau):
    sc = {m["model"]: (m["scale_base"] if mode == "base" else m["scale_mg"]) for m in card["members"]}
    a = raw[f"{mode}_dae"] / sc["dae"]; b = raw[f"{mode}_ae-l1"] / sc["ae-l1"]
    mean = ((1 - w) * a + w * b).reshape(r * z, *a.shape[2:]).astype(np.float32)
    d = postprocess(mean, fg.reshape(r * z, *a.shape[2:]), med, er).reshape(a.shape)
    post = PostProcessing(median_size=med, erode_px=er, z_mm=zmm, min_component_px=mc)
    maps = across_volumes(post, d, fg, vols)
    return np.array([dice_table([maps[i]], [masks[i]], np.array([tau]), mc, abnormal_only=False)[0] for i in range(r)])

cur = op("mg", 0.5, 3, 4, 18.0, 30, card["chosen_volume"]["scaled_tau"]["mg"])
P = op("mg", 0.75, 0, 4, 18.0, 60, 3.1)
out = {"current_mean": float(cur.mean()), "P_mean": float(P.mean()), "paired_P_minus_current": paired_difference(cur, P),
       "per_volume": {"current": cur.round(4).tolist(), "P": P.round(4).tolist()}}
print(json.dumps(out, indent=1))
json.dump(out, open(sys.argv[2], "w"), indent=1)
