"""VideoPrism (Zhao et al., 2024) in vfeval: its official checkpoints as the ``videoprism`` encoder, on PyTorch
(the Hugging Face transformers port) or JAX (our Flax NNX implementation reading the official ``.npz``)."""
