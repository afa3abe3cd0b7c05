"""The library beside the models, in three layers:

1. `Utils.*` — the library every demo builds on: `metrics` (checked against scikit-learn),
   `evaluation` (chunked full ranking, pessimistic ties), `training` (the fit loop, CPU set-up),
   `ctr_training`, `retrieval` (exact top-k, faiss), `mips` (MIPS -> L2 for graph indexes),
   `io` (the demos' common flags, one-line errors, RESULT line, training-state files),
   `demo_io` (every demo's --save / --load checkpoint, the --save path check, user lookup by raw
   id and the recommendation display), `plotting`, and `baselines` (popularity and logistic
   regression, what every demo is compared with).
2. `Utils.loops.*` — the loops shared by a family of demos: sequence recall (`seqrec`), field CTR
   (`field_ctr_demo`), behaviour CTR (`behavior_demo`), multi-task (`multitask_demo`), re-ranking
   (`rerank_eval`, `rerank_tradeoff`, `calibration_tradeoff`, `constrained_tradeoff`, `first_stage`:
   the ranker whose lists are re-ranked) and what the recall demos add to `demo_io`
   (`recall_io`: --export-vectors, their checkpoint fields);
   beside them `Utils.funnel.*`, the funnel's stages, one module each (`items`, `recall`,
   `ranking`, `baselines`, `rerank`, `serving`, `report`).
3. `Utils.tools.*` — commands around the models: benchmarks and peer drivers (`dpp_speed`,
   `peer_recbole`, `peer_rechub`) and the repository's checks (`notes_check`,
   `results_table`, `seed_summary`), each run as `python -m Utils.tools.<name>`.

Model files (`Classic Models/*/*/model.py`) import none of this: they stand alone.
"""
