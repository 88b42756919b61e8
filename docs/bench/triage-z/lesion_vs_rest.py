"""Per abnormal study of a `bench triage --maps` run: D inside the lesions against D everywhere else in the brain.
Usage: python lesion_vs_rest.py SPLIT MODE [ROOT]  (ROOT: the run folder, holding studies-SPLIT/ and dae/SPLIT-MODE/)"""
import json, csv, sys, numpy as np, nibabel as nib
split, mode = sys.argv[1], sys.argv[2]
root = sys.argv[3] if len(sys.argv) > 3 else '.'
truth=list(csv.DictReader(open(f'{root}/studies-{split}/truth.csv')))
tot = []
for t in truth:
    if t['abnormal']!='1': continue
    d=np.asarray(nib.load(f'{root}/dae/{split}-{mode}/{t["id"]}/difference.nii.gz').dataobj)
    les=np.asarray(nib.load(f'{root}/studies-{split}/{t["id"]}.mask.nii').dataobj)>0
    r=json.load(open(f'{root}/dae/{split}-{mode}/{t["id"]}/result.json'))
    rest=(d>0)&~les
    ml=float(t['lesion_ml'])
    lin = d[les].max() if les.any() else 0
    lmean = d[les].mean() if les.any() else 0
    tot.append((lin>d[rest].max()))
    print(f"{t['id']:16s} {ml:6.2f} ml  lesion max {lin:.3f} mean {lmean:.3f} | rest max {d[rest].max():.3f} q99.9 {np.quantile(d[rest],0.999):.3f} | tau {r['tau']}")
print('lesion max above all else:', sum(tot), 'of', len(tot))
