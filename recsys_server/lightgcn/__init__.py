"""LightGCN (He et al., SIGIR 2020) in plain PyTorch + numpy/scipy: the normalised graph
and its propagation, the model, training, and the exact incremental refresh that injected
users go through."""
