"""Cross-simulator check of classifying a long shank window by window.

MEArec's own templates of the 13 BBP cells on ``Neuropixels-128`` (the Neuropixels 1.0 layout, 64 rows,
1.26 mm), made by MEArec's code path (``eap_assets.core.crosscheck.mearec_templates``, its own seed), are
classified by the unit classifiers of a ``make run --probe Neuropixels-24`` (a 12-row section of the same
layout): every unit is read on the window of 24 contacts that holds most of its signal.  MEArec doubles the
potential of MEAutility's ``mea``-type probes (Neuropixels included); the shank models are trained in an
infinite medium, so the templates are classified as MEArec writes them and halved.

Usage::

    .venv/bin/python bench/crosscheck_windows.py DATA_DIR [--per-cell 10] [--work WORK_DIR] [--rotation 3drot]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from eap_assets.core import cells, crosscheck
from eap_assets.serving import classify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="data directory of a `make run --probe Neuropixels-24` (its registry)")
    parser.add_argument("--per-cell", type=int, default=10, help="MEArec templates per cell model")
    parser.add_argument("--work", type=Path, default=Path("data/crosscheck_windows"))
    parser.add_argument("--rotation", default="3drot", help="rotation set of the classifiers (default 3drot: the "
                                                           "MEArec templates are in any orientation)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.work / f"templates_Neuropixels-128_{args.per_cell}.h5"
    if not out.exists():
        models = cells.discover_cell_models()
        crosscheck.mearec_templates([models[n] for n in sorted(models)], out, n_per_cell=args.per_cell,
                                    probe="Neuropixels-128", rotation="3drot", seed=2018, n_jobs=2,
                                    work_dir=args.work / "mearec")
    gen = crosscheck.load_templates(out)
    templates = np.asarray(gen.templates, dtype=np.float32)
    truth = pd.Series(list(gen.celltypes))
    mtype = truth.map(lambda c: cells.parse_name(c)[1])
    ei = truth.map(crosscheck._ei_of)
    rows = []
    for label, scale in (("as MEArec writes them (x2, MEA convention)", 1.0), ("halved (infinite medium)", 0.5)):
        np.save(args.work / "units.npy", templates * scale)
        frame = classify(args.work / "units.npy", probe="Neuropixels-128", fs_hz=32000, filtered=False,
                         rotation=args.rotation, data_dir=args.data_dir, write_properties=False)
        per_type = (frame["mtype_predicted"] == mtype).groupby(mtype).mean() * 100
        rows.append({"templates": label, "units": len(frame),
                     "binary %": 100 * (frame["binary_predicted"] == ei).mean(),
                     "m-type mean over types %": per_type.mean(), "m-type lowest type %": per_type.min(),
                     "m-type OOD-flagged %": 100 * frame["mtype_ood"].mean(),
                     "distinct windows": frame["mtype_window_channels"].nunique()})
    print(pd.DataFrame(rows).round(2).to_string(index=False))


if __name__ == "__main__":
    main()
