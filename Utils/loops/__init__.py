"""Utils, layer 2: the training and evaluation loops shared by a family of demos (sequence recall,
field CTR, behaviour CTR, multi-task, re-ranking), the first-stage ranker whose lists the
re-rankers re-rank, and the save / load / recommend / export helpers of the recall demos. They build
on layer 1 (`Utils.metrics`, `Utils.evaluation`, `Utils.training`, `Utils.retrieval`, `Utils.io`, ...)."""
