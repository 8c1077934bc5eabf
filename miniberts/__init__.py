"""miniberts: the 24 compact BERT models of Turc et al. (2019), from pre-training to serving."""
