"""Datasets on disk: the layouts gcv train reads and the Fashion-MNIST stand-in (numpy and Pillow only)."""
