"""Training recipes: pretrain, finetune, distill, and what they share (common)."""
