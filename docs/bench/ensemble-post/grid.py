"""Post-processing and member weight of the dae+ae-l1 ensemble on saved raw maps: best mean whole-volume Dice."""
import itertools, json, sys, time
import numpy as np
from app.core.detector import PostProcessing
from app.core.ensemble import choose_tau
from app.core.maps import postprocess
from app.core.protocol import across_volumes
from app.data.splits import load_volumes
from app.nets.card import read_card

raw = np.load(sys.argv[1]); out = sys.argv[2]; mode = sys.argv[3] if len(sys.argv) > 3 else "mg"
vols = load_volumes("/work/cache/brain-proxy-val16z", "val")
card = read_card("models/dae+ae-l1.json")
sc = {m["model"]: (m["scale_base"] if mode == "base" else m["scale_mg"]) for m in card["members"]}
masks, fg = raw["masks"], raw["fg"]
a = raw[f"{mode}_dae"] / sc["dae"]; b = raw[f"{mode}_ae-l1"] / sc["ae-l1"]
W = [0.25, 0.35, 0.5, 0.65, 0.75]; MED = [0, 3, 5]; ER = [2, 4, 6]; Z = [10.0, 18.0, 26.0]; MC = [10, 30, 60]
rows = []
COARSE = np.round(np.arange(1.0, 10.01, 0.25), 4)
r, z = masks.shape[:2]
for w, med, er in itertools.product(W, MED, ER):
    t = time.time()
    mean = ((1 - w) * a + w * b).reshape(r * z, *a.shape[2:])
    d = postprocess(mean.astype(np.float32), fg.reshape(r * z, *a.shape[2:]), med, er).reshape(a.shape)
    for zmm in Z:
        post0 = PostProcessing(median_size=med, erode_px=er, z_mm=zmm)
        maps = across_volumes(post0, d, fg, vols)
        for mc in MC:
            post = PostProcessing(median_size=med, erode_px=er, z_mm=zmm, min_component_px=mc)
            tau, best, _ = choose_tau(maps, masks, post, COARSE)
            rows.append({"w": w, "median": med, "erode": er, "z_mm": zmm, "min_comp": mc, "tau": tau, "dice": best})
    print(w, med, er, f"{time.time()-t:.1f}s", max(x["dice"] for x in rows[-9:]), flush=True)
rows.sort(key=lambda x: -x["dice"])
# the top ten settings again on the fine grid (the card's tau grid), which decides
for x in rows[:10]:
    post = PostProcessing(median_size=x["median"], erode_px=x["erode"], z_mm=x["z_mm"], min_component_px=x["min_comp"])
    mean = ((1 - x["w"]) * a + x["w"] * b).reshape(r * z, *a.shape[2:])
    d = postprocess(mean.astype(np.float32), fg.reshape(r * z, *a.shape[2:]), post.median_size, post.erode_px).reshape(a.shape)
    x["tau_fine"], x["dice_fine"], _ = choose_tau(across_volumes(post, d, fg, vols), masks, post)
    print(x, flush=True)
json.dump(rows, open(out, "w"), indent=1)
cur = [x for x in rows if (x["w"], x["median"], x["erode"], x["z_mm"], x["min_comp"]) == (0.5, 3, 4, 18.0, 30)]
print("current", cur, "\nbest", rows[:5])
