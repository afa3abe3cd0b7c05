"""Side-by-side: FuxiCTR 2.3.10's own Wide&Deep, DeepFM, DCN-V2, AutoInt+ and FinalMLP on our Frappe split.

FuxiCTR is the library behind the reczoo BARS numbers our field notes quote. It is a *peer*, not a
dependency, so it gets a scratch install of its own, never this repo's requirements. Its wheel holds
the training loop (`BaseModel.fit`) and the layers; the models themselves live in the repository's
`model_zoo/` folder, which the wheel does not ship. So the set-up is the wheel plus a checkout of
reczoo/FuxiCTR at tag v2.3.10 for `model_zoo/`:

    pip install --no-deps --target /tmp/fuxi_site fuxictr==2.3.10 h5py polars polars-runtime-32
    # + a checkout of reczoo/FuxiCTR (tag v2.3.10) at /tmp/FuxiCTR, for its model_zoo/
    PYTHONPATH=/tmp/fuxi_site:. .venv/bin/python -m Utils.tools.peer_fuxictr --model DeepFM \\
        --model-zoo /tmp/FuxiCTR/model_zoo --data libfm:../shared/data/frappe/ --threads 1 --seed 0

(`--no-deps` keeps pip from replacing the installed torch. FuxiCTR also imports ray, for its parquet
preprocessing, at import time; this driver feeds npz arrays and never calls ray, so when ray is not
installed a placeholder module answers those imports.)

What it does, for one model and one seed:

1. builds exactly the split our demos build with the same `--data/--holdout/--seed`
   (`Datasets.field_ctr.build_field_ctr`): training rows, the early-stopping slice, the test file;
2. hands FuxiCTR the same integer codes our models see, as its npz format with a feature map of
   one categorical field per column (vocabulary = our `field_dims`, 0 = padding);
3. builds FuxiCTR's model with its reczoo BARS Frappe_x1 configuration (`BARS` below: the expid
   whose 5-run or 1-run numbers our notes cite) and trains it with FuxiCTR's own `fit` unchanged:
   Adam, validation AUC every epoch, learning rate / 10 at every epoch without a gain, stop after
   2 such epochs, best weights restored; one process (`num_workers=0`) and `--threads` threads;
4. predicts the test rows and scores them with `Utils.evaluation.evaluate_ctr`, the function our
   demos use, and prints one RESULT line with the seconds per epoch (training wall time including
   the per-epoch validation, divided by the epochs run, as for our demos).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import runpy
import sys
import time
import types
from pathlib import Path

import numpy as np

import Datasets
from Datasets.field_ctr import build_field_ctr
from Utils.evaluation import evaluate_ctr
from Utils.io import add_common_args, print_result, write_json_atomic
from Utils.training import count_params, cpu_setup

# reczoo BARS Frappe_x1 configurations (model parameters as logged at the start of each run).
_COMMON = dict(embedding_dim=10, batch_norm=True, net_regularizer=0, learning_rate=1e-3)
BARS = {
    "WideDeep": dict(expid="WideDeep_frappe_x1_030_af559975", zoo_class="WideDeep", **_COMMON,
                     hidden_units=[400, 400, 400], hidden_activations="relu", net_dropout=0.6,
                     embedding_regularizer=0.1),
    "DeepFM": dict(expid="DeepFM_frappe_x1_001_4ae3a56e", zoo_class="DeepFM", **_COMMON,
                   hidden_units=[400, 400, 400], hidden_activations="relu", net_dropout=0.2,
                   embedding_regularizer=0.05),
    "DCNv2": dict(expid="DCNv2_frappe_x1_007_c207b717", zoo_class="DCNv2", **_COMMON,
                  model_structure="parallel", use_low_rank_mixture=False, low_rank=32,
                  num_experts=4, parallel_dnn_hidden_units=[400, 400, 400],
                  stacked_dnn_hidden_units=[500, 500, 500], dnn_activations="relu",
                  num_cross_layers=4, net_dropout=0.4, embedding_regularizer=0.05),
    "AutoInt+": dict(expid="AutoInt_frappe_x1_006_dba8e61c", zoo_class="AutoInt", **_COMMON,
                     dnn_hidden_units=[400, 400, 400], dnn_activations="relu", attention_layers=5,
                     num_heads=4, attention_dim=128, net_dropout=0.1, layer_norm=True,
                     use_scale=True, use_wide=False, use_residual=True, embedding_regularizer=0.1),
    # FinalMLP has its own MLP flags per stream; the gates read the user (stream 1) and the item
    # (stream 2) embeddings, as in BARS' FinalMLP_frappe_x1 run (test AUC 0.986072).
    "FinalMLP": dict(expid="FinalMLP_frappe_x1_004_e1ab402f", zoo_class="FinalMLP", embedding_dim=10,
                     net_regularizer=0, learning_rate=1e-3, embedding_regularizer=0.05,
                     mlp1_hidden_units=[400], mlp1_hidden_activations="relu", mlp1_dropout=0.4,
                     mlp1_batch_norm=True, mlp2_hidden_units=[100], mlp2_hidden_activations="relu",
                     mlp2_dropout=0.4, mlp2_batch_norm=True, use_fs=True, fs_hidden_units=[400],
                     fs1_context=["user"], fs2_context=["item"], num_heads=5),
}
TRAINING = dict(optimizer="adam", loss="binary_crossentropy", task="binary_classification",
                monitor="AUC", monitor_mode="max", early_stop_patience=2,
                metrics=["AUC", "logloss"])  # BARS: patience 2; batch 4096, 100 epochs: the flags


ROOT = Path(__file__).resolve().parents[2]
OURS = {"WideDeep": "WideDeep", "DeepFM": "DeepFM", "DCNv2": "DCNv2", "AutoInt+": "AutoInt",
        "FinalMLP": "FinalMLP"}


def run_ours(args) -> None:
    """`--side ours`: our demo for the same model, unchanged (its Frappe preset, `--seed`,
    `--threads`), run in this process so that the CPU seconds of its training call are measured
    the way FuxiCTR's `fit` is measured here; adds them to the demo's RESULT json."""
    import Utils.loops.field_ctr_demo as loop

    if not args.out:
        raise SystemExit("error: --side ours needs --out (the demo's RESULT json is extended)")
    demo = ROOT / "Classic Models" / "Ranking" / OURS[args.model] / "demo.py"
    timed, train = {}, loop.train_ctr_model
    command = "python -m Utils.tools.peer_fuxictr " + " ".join(sys.argv[1:])

    def train_and_time(*a, **k):
        c0 = time.process_time()
        phases = train(*a, **k)
        timed["train_cpu_seconds"] = time.process_time() - c0
        return phases

    loop.train_ctr_model = train_and_time
    argv = [str(demo), "--data", args.data, "--seed", str(args.seed), "--out", str(args.out)]
    sys.argv = argv + (["--threads", str(args.threads)] if args.threads else [])
    runpy.run_path(str(demo), run_name="__main__")
    res = json.loads(Path(args.out).read_text())
    res.update(timed, seconds_per_epoch=res["train_seconds"] / res["epochs"],
               cpu_seconds_per_epoch=timed["train_cpu_seconds"] / res["epochs"], seed=args.seed,
               threads=args.threads, command=command)
    write_json_atomic(args.out, res)
    print("RESULT " + json.dumps(res), flush=True)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, var ** 0.5


def paired_summary(folder: Path, peer_runs: str = "fuxictr_frappe_seed*.json",
                   ours_summary: str = "summary_frappe.json") -> dict:
    """Ours against FuxiCTR on Frappe, paired by seed, from the runs stored in `folder`.

    Accuracy: our stored 5-seed runs (the runs `summary_frappe.json` lists; each run's seed is in
    its config) against the FuxiCTR runs matching `peer_runs` (`fuxictr_frappe_seed{S}.json`: its
    BARS recipe; another pattern pairs another set, e.g. FuxiCTR run with our batch size), for
    every seed with both. `ours_summary` names another seed summary of ours (an ablation's). Speed: our demo
    rerun back to back with FuxiCTR (`ours_vs_fuxictr_frappe_seed{S}.json`, CPU seconds of the
    training call per epoch) against the FuxiCTR run of the same seed."""
    ours = {}
    for name in json.loads((folder / ours_summary).read_text())["runs"]:
        run = json.loads((folder / name).read_text())
        ours[int(run["config"]["seed"])] = (name, run)
    peer = {}
    for path in folder.glob(peer_runs):
        run = json.loads(path.read_text())
        peer[int(run["seed"])] = (path.name, run)
    seeds = sorted(set(ours) & set(peer))
    if not seeds:
        raise SystemExit(f"error: no seed with both our stored run and a FuxiCTR run in {folder}")
    out = {"data": peer[seeds[0]][1]["data"], "protocol": ours[seeds[0]][1]["protocol"],
           "n": len(seeds), "seeds": seeds}
    for side, runs in (("ours", ours), ("fuxictr", peer)):
        rows = [runs[s][1] for s in seeds]
        block = {"model": rows[0]["model"], "runs": [runs[s][0] for s in seeds],
                 "metrics": {}, "sd": {}}
        for k in ("AUC", "LogLoss", "GAUC"):
            block["metrics"][k], block["sd"][k] = _mean_sd([r["metrics"][k] for r in rows])
        block["epochs"], block["epochs_sd"] = _mean_sd([float(r["epochs"]) for r in rows])
        out[side] = block
    diff = [ours[s][1]["metrics"]["AUC"] - peer[s][1]["metrics"]["AUC"] for s in seeds]
    diff_ll = [ours[s][1]["metrics"]["LogLoss"] - peer[s][1]["metrics"]["LogLoss"] for s in seeds]
    out["paired"] = {
        "AUC_ours_minus_fuxictr": _mean_sd(diff)[0], "AUC_ours_minus_fuxictr_sd": _mean_sd(diff)[1],
        # standard error of the mean paired difference: sd / sqrt(n)
        "AUC_ours_minus_fuxictr_se": _mean_sd(diff)[1] / len(diff) ** 0.5,
        "LogLoss_ours_minus_fuxictr": _mean_sd(diff_ll)[0],
        "LogLoss_ours_minus_fuxictr_se": _mean_sd(diff_ll)[1] / len(diff_ll) ** 0.5,
        "ours_AUC_at_least_fuxictr": sum(d >= 0 for d in diff),
        "per_seed": [{"seed": s, "ours_run": ours[s][0], "fuxictr_run": peer[s][0],
                      "ours_AUC": ours[s][1]["metrics"]["AUC"],
                      "fuxictr_AUC": peer[s][1]["metrics"]["AUC"],
                      "ours_LogLoss": ours[s][1]["metrics"]["LogLoss"],
                      "fuxictr_LogLoss": peer[s][1]["metrics"]["LogLoss"],
                      "ours_epochs": ours[s][1]["epochs"], "fuxictr_epochs": peer[s][1]["epochs"]}
                     for s in seeds],
    }
    speed = []
    for path in sorted(folder.glob("ours_vs_fuxictr_frappe_seed*.json")):
        run = json.loads(path.read_text())
        if int(run["seed"]) in peer:
            other = peer[int(run["seed"])][1]
            speed.append({"seed": int(run["seed"]), "ours_run": path.name,
                          "ours_AUC": run["metrics"]["AUC"], "ours_epochs": run["epochs"],
                          "ours_cpu_seconds_per_epoch": run["cpu_seconds_per_epoch"],
                          "ours_seconds_per_epoch": run["seconds_per_epoch"],
                          "fuxictr_cpu_seconds_per_epoch": other["cpu_seconds_per_epoch"],
                          "fuxictr_seconds_per_epoch": other["seconds_per_epoch"]})
    out["speed"] = speed
    return out


def placeholder_ray() -> None:
    """FuxiCTR 2.3.10 imports ray (parquet preprocessing) when its package loads; the npz path used
    here never calls it. Without ray installed, register stand-ins that fail if ever used."""
    try:
        import ray  # noqa: F401
        return
    except ImportError:
        pass

    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise ImportError("ray is not installed; this driver uses FuxiCTR's npz loader only")

    for name, attrs in [("ray", {"is_initialized": lambda: False}),
                        ("ray.data", {"SaveMode": Unavailable, "TaskPoolStrategy": Unavailable}),
                        ("ray.data.datasource", {}),
                        ("ray.data.datasource.filename_provider", {"FilenameProvider": object})]:
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module


def zoo_class(zoo: Path, name: str):
    """FuxiCTR's model class `name` from a model_zoo checkout (`<name>/src/<name>.py`, or
    `<name>/<name>_torch/src/<name>.py` for the models that also have a TensorFlow version)."""
    for path in (zoo / name / "src" / f"{name}.py",
                 zoo / name / f"{name}_torch" / "src" / f"{name}.py"):
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"fuxictr_zoo_{name}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return getattr(module, name)
    raise SystemExit(f"error: no FuxiCTR model {name} under {zoo}; expected {name}/src/{name}.py "
                     f"(model_zoo/ of a reczoo/FuxiCTR v2.3.10 checkout)")


def write_npz(ds, names: list[str], path: Path) -> Path:
    """One CTRDataset as FuxiCTR's npz: one int column per field (our codes) + `label`."""
    sparse = ds.tensors["sparse"].numpy()
    cols = {n: sparse[:, f].astype(np.int64) for f, n in enumerate(names)}
    cols["label"] = ds.tensors["label"].numpy().astype(np.float64)
    np.savez(path, **cols)
    return path


def feature_map(ctr, dataset_id: str, workdir: Path, embedding_dim: int):
    """FuxiCTR's FeatureMap for our fields: categorical, vocabulary = field_dims, 0 = padding."""
    from fuxictr.features import FeatureMap

    fmap = FeatureMap(dataset_id, str(workdir))
    fmap.labels = ["label"]
    fmap.default_emb_dim = embedding_dim
    for name, size in zip(ctr.field_names, ctr.field_dims):
        fmap.features[name] = {"source": "", "type": "categorical", "padding_idx": 0,
                               "vocab_size": int(size)}
    fmap.num_fields = fmap.get_num_fields()
    fmap.total_features = int(sum(ctr.field_dims))
    fmap.set_column_index()
    return fmap


def main() -> None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]),
                             data="libfm:../shared/data/frappe/", epochs=100, batch_size=4096,
                             lr=1e-3)  # BARS Frappe_x1: at most 100 epochs, batch 4096, Adam 1e-3
    parser.add_argument("--model", choices=sorted(BARS), default=None)
    parser.add_argument("--side", choices=["fuxictr", "ours"], default="fuxictr",
                        help="fuxictr: FuxiCTR's model and fit(); ours: our demo, CPU-timed alike")
    parser.add_argument("--model-zoo", type=Path, default=None,
                        help="model_zoo/ folder of a reczoo/FuxiCTR v2.3.10 checkout")
    parser.add_argument("--holdout", type=float, default=0.1,
                        help="as our demos: share of Frappe's validation file held out")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fuxictr_work"))
    parser.add_argument("--summarize", type=Path, default=None, metavar="FOLDER",
                        help="no training: pair the stored runs in FOLDER by seed, write --out")
    parser.add_argument("--peer-runs", default="fuxictr_frappe_seed*.json", metavar="GLOB",
                        help="with --summarize: the FuxiCTR runs in FOLDER to pair with ours")
    parser.add_argument("--ours-summary", default="summary_frappe.json", metavar="NAME",
                        help="with --summarize: the seed summary in FOLDER that lists our runs")
    args = parser.parse_args()
    if args.summarize is not None:
        summary = paired_summary(args.summarize, args.peer_runs, args.ours_summary)
        if args.out:
            write_json_atomic(args.out, summary)
        print(json.dumps({k: summary[k] for k in ("paired", "speed")}, indent=1))
        return None
    if args.model is None:
        parser.error("--model is required (WideDeep, DeepFM, DCNv2, AutoInt+ or FinalMLP)")
    if args.side == "ours":
        return run_ours(args)
    if args.model_zoo is None:
        parser.error("--side fuxictr needs --model-zoo (FuxiCTR's models are not in its wheel)")
    placeholder_ray()
    try:
        from fuxictr.pytorch.dataloaders.npz_dataloader import NpzDataLoader
        from fuxictr.pytorch.torch_utils import seed_everything
        from fuxictr.version import __version__ as fuxictr_version
    except ImportError as e:
        raise SystemExit(f"error: FuxiCTR is not importable ({e}); make the scratch install in "
                         "this module's docstring") from e
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    cpu_setup(args.threads)  # the same thread count and denormal flushing as our demos

    bars = dict(BARS[args.model], learning_rate=args.lr)
    expid, cls_name = bars.pop("expid"), bars.pop("zoo_class")
    ctr = build_field_ctr(Datasets.load(args.data, verbose=True, expect="ctr",
                                        demo="the FuxiCTR driver"),
                          holdout=args.holdout, seed=args.seed)
    work = (args.workdir / f"{args.model}_seed{args.seed}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    paths = {s: write_npz(getattr(ctr, s), ctr.field_names, work / f"{s}.npz")
             for s in ("train", "valid", "test")}
    fmap = feature_map(ctr, "frappe_ours", work, bars["embedding_dim"])
    (work / fmap.dataset_id).mkdir(exist_ok=True)  # where FuxiCTR writes its best checkpoint
    model_cls = zoo_class(args.model_zoo, cls_name)

    seed_everything(args.seed)
    model = model_cls(fmap, model_id=f"{args.model}_seed{args.seed}", gpu=-1,
                      model_root=str(work), verbose=0, save_best_only=True, **TRAINING, **bars)
    loaders = {s: NpzDataLoader(fmap, str(p), batch_size=args.batch_size,
                                shuffle=(s == "train"), num_workers=0)
               for s, p in paths.items()}
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(loaders["train"], epochs=args.epochs, validation_data=loaders["valid"])
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    epochs = model._epoch_index + 1  # FuxiCTR counts from 0; the stopping epoch is included
    t1 = time.perf_counter()
    prob = model.predict(loaders["test"])
    eval_seconds = time.perf_counter() - t1
    test = ctr.test.tensors
    metrics = evaluate_ctr(test["label"].numpy(), prob, test["user"].numpy())
    valid_prob = model.predict(loaders["valid"])
    valid = evaluate_ctr(ctr.valid.tensors["label"].numpy(), valid_prob)
    print_result(
        model=f"{args.model} (FuxiCTR {fuxictr_version})", data=args.data,
        protocol=f"{ctr.protocol}; FuxiCTR's own fit(), reczoo BARS configuration {expid}",
        metrics=metrics, baseline=None, train_seconds=train_seconds, eval_seconds=eval_seconds,
        epochs=epochs, params=count_params(model), seconds_per_epoch=train_seconds / epochs,
        train_cpu_seconds=train_cpu, cpu_seconds_per_epoch=train_cpu / epochs,
        valid_metrics=valid, seed=args.seed, threads=args.threads, bars_expid=expid,
        config={**bars, **TRAINING, "batch_size": args.batch_size, "max_epochs": args.epochs},
        out=str(args.out) if args.out else None,
    )


if __name__ == "__main__":
    main()
