"""RNN knowledge: gate layouts (`layouts`), the names each framework gives cell tensors
(`tf1_cells`, `torch_cells`), and recognition of RNNs in a checkpoint (`recognize`)."""
