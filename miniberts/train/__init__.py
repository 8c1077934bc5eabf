"""Training recipes: pretrain, finetune, distill (with the teacher-logit cache, distill_targets), the GLUE sweep, the
experiment engine and its quickstart preset, and what they share (common, rundir)."""
