"""danet-parity: prove that a Keras port computes what its PyTorch reference computes."""
