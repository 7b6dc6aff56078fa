"""Models whose train steps the autotuner sizes."""

from .train import (
    OPTIMIZERS,
    TrainSetup,
    make_loss_fn,
    make_optimizer,
    make_train_step,
    vgg_setup,
)
from .vgg import CONFIGS, REMAT_POLICIES, VGG, abstract_vgg, param_count

__all__ = [
    "CONFIGS",
    "OPTIMIZERS",
    "REMAT_POLICIES",
    "TrainSetup",
    "VGG",
    "abstract_vgg",
    "make_loss_fn",
    "make_optimizer",
    "make_train_step",
    "param_count",
    "vgg_setup",
]
