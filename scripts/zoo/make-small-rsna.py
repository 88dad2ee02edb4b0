#!/usr/bin/env python3
"""Makes a small copy of an RSNA-layout folder for training at 256 px on a machine that
must receive it over a size-limited link (how the `retinanet-r34-rsna1k` zoo entry was made).

Each DICOM is decoded by `opacity convert --size 256` (PNGs, given as --png), re-encoded as an
8-bit JPEG Baseline DICOM (quality 90) with the source header (ViewPosition kept, Rows/Columns
and PixelSpacing updated), and the label boxes are scaled by 256/1024.

Usage: make-small-rsna.py SRC_RSNA_FOLDER PNG_FOLDER OUT_FOLDER   (needs pydicom, pillow)
"""
import csv, glob, io, os, shutil, sys

import pydicom
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

src, pngs, out = sys.argv[1:4]
scale = 0.25
os.makedirs(os.path.join(out, "stage_2_train_images"), exist_ok=True)
shutil.copy(os.path.join(src, "stage_2_detailed_class_info.csv"), out)
with open(os.path.join(src, "stage_2_train_labels.csv")) as f, \
        open(os.path.join(out, "stage_2_train_labels.csv"), "w", newline="") as g:
    rows = list(csv.reader(f))
    w = csv.writer(g)
    w.writerow(rows[0])
    for r in rows[1:]:
        if r[1] != "":
            r = [r[0]] + ["%g" % (float(v) * scale) for v in r[1:5]] + [r[5]]
        w.writerow(r)
for p in sorted(glob.glob(os.path.join(pngs, "*.png"))):
    pid = os.path.basename(p)[:-4]
    ds = pydicom.dcmread(os.path.join(src, "stage_2_train_images", pid + ".dcm"))
    im = Image.open(p).convert("L")
    b = io.BytesIO()
    im.save(b, format="JPEG", quality=90)
    ds.PixelData = encapsulate([b.getvalue()])
    ds.Rows, ds.Columns = im.size[1], im.size[0]
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds["PixelData"].is_undefined_length = True
    if "PixelSpacing" in ds:
        ds.PixelSpacing = [float(v) / scale for v in ds.PixelSpacing]
    ds.save_as(os.path.join(out, "stage_2_train_images", pid + ".dcm"), enforce_file_format=True)
