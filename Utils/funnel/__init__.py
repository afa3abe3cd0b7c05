"""The funnel's parts, one module per stage: multi-channel recall with quotas, a feature ranker
trained on the serving distribution, a set-level re-ranker, per-stage metrics, and one request served
end to end.

`Classic Models/pipeline_demo.py` wires these together; the stage models themselves are the repo's
`model.py` files, imported from their folders. In the order a request meets them:

- `items`: the item side data every stage reads (categories, brands, price buckets, title words);
- `recall`: stage 1, the channels (SASRec, YoutubeDNN, ItemCF, co-visitation, popularity) and their
  merge into N candidates with quotas;
- `ranking`: stage 2, DIN's features, impressions and training, the ranked lists, the ablation;
- `baselines`: what the ranking stage must beat on the same candidates (rule, LR, GBDT);
- `rerank`: stage 3, DPP or MMR over the ranker's top, and each stage's list metrics;
- `serving`: one request end to end (`Funnel`) and the candidate-count sweep;
- `report`: per-user NDCG, paired differences, what each stage found, seed summaries, tables and
  the figure (`python -m Utils.funnel.report summarize|tables|plot ...`).

Notation: U users, N merged candidates, C recall channels, L history length, I items (+ padding 0).

Tie rules: every stage is deterministic for a fixed seed and thread count; each stage's module
states how it breaks ties (`recall`: channel lists and merging, `ranking`, `rerank`).
"""
