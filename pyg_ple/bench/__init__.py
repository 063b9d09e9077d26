"""The benchmark harness behind ``pyg-ple bench``: datasets, models, the Errica et al. protocol, the training loop,
multi-process training and node classification. It imports scikit-learn, scipy and tqdm, which the core does not."""
