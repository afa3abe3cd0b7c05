# %% [markdown]
# # PLE demo — multi-task ranking: MMoE vs PLE (vs logistic regression)
#
# CPU, synthetic default, two tasks "click" and "next" (27 s of CPU time with 1 thread):
#
#     python "Classic Models/Ranking/PLE/demo.py"
#
# PLE also takes part in the MMoE paper's synthetic correlation study, run from the MMoE demo:
# `python "Classic Models/Ranking/MMoE/demo.py" --experiment correlation` (see the MMoE note).
#
# Every flag: `--help`. The last line printed is `RESULT {json}`.

# %%
import argparse
from pathlib import Path

import torch

from Utils.io import add_common_args, load_model_file, print_result
from Utils.multitask_demo import run_two_task
from Utils.training import count_params, cpu_setup, pick_device, set_seed

HERE = Path(__file__).resolve().parent


ple = load_model_file(HERE / "model.py", "ple_model")
mmoe = load_model_file(HERE.parent / "MMoE" / "model.py", "mmoe_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description=__doc__), epochs=5, batch_size=256,
                         lr=1e-3)
parser.add_argument("--levels", type=int, default=2, help="PLE extraction levels (1 = CGC)")
parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
args = parser.parse_args()
cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)


# %% [markdown]
# ## A two-task split of the synthetic default
# Task "click" is the generator's planted click; task "next" is whether the candidate is the item
# the user really took next. Both share the user's interests, but they are not the same task.

# %%
def run_ctr():
    results, seconds, lr_metrics = run_two_task({
        "MMoE": lambda common: mmoe.MMoE(**common, n_experts=8, expert_hidden=(32,),
                                         tower_hidden=(32,)),
        "PLE": lambda common: ple.PLE(**common, n_levels=args.levels, n_task_experts=2,
                                      n_shared_experts=4, expert_hidden=(32,), tower_hidden=(32,)),
    }, show="PLE", args=args, device=device)
    model, h, m = results["PLE"]
    print_result(
        model="PLE", data=args.data,
        protocol="two-task split of the synthetic impressions (click = planted click, next = the "
                 "true next item); leave-one-out, test = last step; metrics per task",
        metrics=m, baseline={"name": "logistic regression per task", "metrics": lr_metrics},
        train_seconds=seconds["PLE"], eval_seconds=0.0, epochs=len(h.epochs),
        params=count_params(model), out=args.out, levels=args.levels,
        mmoe={"metrics": results["MMoE"][2], "params": count_params(results["MMoE"][0]),
              "train_seconds": seconds["MMoE"]},
        threads=torch.get_num_threads(),
    )


# %%
run_ctr()
