#!/usr/bin/env python3
"""Writes the evaluation test fixtures from the reference implementations.

Weighted Boxes Fusion from `ensemble-boxes` and COCO box AP/AR from `pycocotools`, on fixed
pseudo-random inputs (seeded), so the Swift implementations in Sources/OpacityTraining can be
compared with them in Tests/OpacityTrainingTests/OracleTests.swift.

Run through scripts/oracles/evaluation-fixtures.sh, which installs the packages into a
virtualenv outside the repository. Output: Tests/OpacityTrainingTests/Fixtures/{wbf,coco}.json
"""
import contextlib
import io
import json
import os
import sys
import warnings

import numpy as np
from ensemble_boxes import weighted_boxes_fusion
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/OpacityTrainingTests/Fixtures"


def wbf_cases():
    rng = np.random.default_rng(20261130)
    cases = []
    # Several models predicting jittered copies of a few objects, plus stray boxes; labels 0/1.
    settings = [
        dict(iou_thr=0.55, skip_box_thr=0.0, conf_type="avg", weights=None),
        dict(iou_thr=0.55, skip_box_thr=0.1, conf_type="avg", weights=[2, 1, 1]),
        dict(iou_thr=0.4, skip_box_thr=0.05, conf_type="max", weights=[1, 3, 2]),
        dict(iou_thr=0.5, skip_box_thr=0.0, conf_type="box_and_model_avg", weights=[1, 2, 1]),
        dict(iou_thr=0.6, skip_box_thr=0.02, conf_type="absent_model_aware_avg", weights=[3, 1, 2]),
        dict(iou_thr=0.55, skip_box_thr=0.0, conf_type="avg", weights=[1, 1, 1], allows_overflow=True),
        dict(iou_thr=0.3, skip_box_thr=0.0, conf_type="box_and_model_avg", weights=None),
        dict(iou_thr=0.7, skip_box_thr=0.2, conf_type="absent_model_aware_avg", weights=None),
    ]
    for k, s in enumerate(settings):
        models = 3
        objects = rng.uniform(0.05, 0.75, size=(4, 2))
        sizes = rng.uniform(0.08, 0.3, size=(4, 2))
        boxes, scores, labels = [], [], []
        for m in range(models):
            bm, sm, lm = [], [], []
            for o in range(4):
                if rng.uniform() < 0.2:
                    continue  # this model misses the object
                jitter = rng.normal(0, 0.02, size=4)
                x1, y1 = objects[o] + jitter[:2]
                x2, y2 = objects[o] + sizes[o] + jitter[2:]
                bm.append([x1, y1, x2, y2])
                sm.append(rng.uniform(0.05, 0.95))
                lm.append(o % 2 if k % 2 == 0 else 0)
            for _ in range(rng.integers(0, 3)):
                x1, y1 = rng.uniform(0, 0.8, size=2)
                bm.append([x1, y1, x1 + rng.uniform(0.02, 0.2), y1 + rng.uniform(0.02, 0.2)])
                sm.append(rng.uniform(0.01, 0.5))
                lm.append(0)
            if k == 0 and m == 0:
                # the library's input checks: swapped corners, outside [0, 1], zero area
                bm += [[0.5, 0.6, 0.3, 0.4], [-0.05, 0.9, 0.2, 1.1], [0.3, 0.3, 0.3, 0.5]]
                sm += [0.61, 0.52, 0.43]
                lm += [0, 0, 0]
            boxes.append(bm)
            scores.append(sm)
            labels.append(lm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            b, sc, lb = weighted_boxes_fusion(boxes, scores, labels, weights=s["weights"], iou_thr=s["iou_thr"],
                                              skip_box_thr=s["skip_box_thr"], conf_type=s["conf_type"],
                                              allows_overflow=s.get("allows_overflow", False))
        cases.append(dict(
            settings=dict(iou_thr=s["iou_thr"], skip_box_thr=s["skip_box_thr"], conf_type=s["conf_type"],
                          weights=s["weights"], allows_overflow=s.get("allows_overflow", False)),
            boxes=boxes, scores=scores, labels=labels,
            expected=dict(boxes=np.asarray(b).tolist(), scores=np.asarray(sc).tolist(),
                          labels=[int(v) for v in lb])))
    return cases


def coco_cases():
    rng = np.random.default_rng(7)
    cases = []
    for k in range(4):
        n_images = 40
        images, gts, dts = [], [], []
        aid = 1
        for i in range(n_images):
            images.append(dict(id=i + 1, width=1024, height=1024))
            n_gt = int(rng.choice([0, 0, 1, 2, 3]))
            g_boxes = []
            for _ in range(n_gt):
                x, y = rng.uniform(0, 700, size=2)
                w, h = rng.uniform(60, 300, size=2)
                g_boxes.append([x, y, w, h])
                gts.append(dict(id=aid, image_id=i + 1, category_id=1, bbox=[x, y, w, h], area=w * h, iscrowd=0))
                aid += 1
            # detections: jittered copies of the truth at various quality, plus false positives
            for g in g_boxes:
                if rng.uniform() < 0.85:
                    j = rng.normal(0, [15, 15, 25, 25]) * [0.3, 0.6, 1.0, 1.5][k]
                    x, y, w, h = g[0] + j[0], g[1] + j[1], max(5, g[2] + j[2]), max(5, g[3] + j[3])
                    dts.append(dict(image_id=i + 1, category_id=1, bbox=[x, y, w, h], score=float(rng.uniform(0.3, 1))))
            for _ in range(int(rng.integers(0, 3 + k))):
                x, y = rng.uniform(0, 800, size=2)
                w, h = rng.uniform(40, 250, size=2)
                dts.append(dict(image_id=i + 1, category_id=1, bbox=[x, y, w, h], score=float(rng.uniform(0, 0.8))))
        gt = COCO()
        gt.dataset = dict(images=images, annotations=gts, categories=[dict(id=1, name="opacity")])
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            dt = gt.loadRes(dts) if dts else COCO()
            ev = COCOeval(gt, dt, "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        s = ev.stats
        cases.append(dict(
            images=[im["id"] for im in images],
            truth=[dict(image_id=a["image_id"], bbox=a["bbox"]) for a in gts],
            detections=[dict(image_id=d["image_id"], bbox=d["bbox"], score=d["score"]) for d in dts],
            expected=dict(ap=float(s[0]), ap50=float(s[1]), ap75=float(s[2]), ar100=float(s[8]))))
    return cases


def main():
    os.makedirs(OUT, exist_ok=True)
    import ensemble_boxes, pycocotools  # noqa: E401
    from importlib.metadata import version
    meta = dict(generator="scripts/oracles/evaluation_fixtures.py",
                ensemble_boxes=version("ensemble-boxes"), pycocotools=version("pycocotools"), numpy=np.__version__)
    with open(os.path.join(OUT, "wbf.json"), "w") as f:
        json.dump(dict(meta=meta, cases=wbf_cases()), f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "coco.json"), "w") as f:
        json.dump(dict(meta=meta, cases=coco_cases()), f, indent=1)
        f.write("\n")
    print("wrote", os.path.join(OUT, "wbf.json"), "and", os.path.join(OUT, "coco.json"))


if __name__ == "__main__":
    main()
