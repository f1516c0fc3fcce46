"""PinSage (Ying et al. 2018) in plain PyTorch + numpy: sampler, layers, model, training,
and the incremental embedding refresh that injected users go through."""
