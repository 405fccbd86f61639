"""inception_train: the networks, recipe and evaluation protocols of Szegedy et al. 2016 (Inception-v4,
Inception-ResNet), on PyTorch with timm, Hydra, DALI and W&B."""
__version__ = '0.1.0'
