"""The experiment of docs/batch.md ("N4 on skull-stripped studies"): every study of a bench triage folder
through app.data.brain.n4_correct (mask: the non-zero brain), written with its truth into another folder.
Usage: python make_n4.py SRC_STUDIES DST_STUDIES"""
import sys, csv, shutil, time, nibabel as nib, numpy as np
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[3]))
from app.data.brain import n4_correct
src, dst = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(f'{src}/truth.csv')))
t0 = time.time()
for r in rows:
    img = nib.load(f'{src}/{r["id"]}.nii.gz')
    x = np.asarray(img.dataobj, np.float32)
    y, facts = n4_correct(x, img.affine, mask=x > 0)
    y = np.where(x > 0, y, 0).astype(np.float32)
    nib.save(nib.Nifti1Image(y, img.affine), f'{dst}/{r["id"]}.nii.gz')
    shutil.copy(f'{src}/{r["id"]}.mask.nii', f'{dst}/{r["id"]}.mask.nii')
shutil.copy(f'{src}/truth.csv', f'{dst}/truth.csv')
print(len(rows), 'studies', round((time.time() - t0) / len(rows), 2), 's each')
