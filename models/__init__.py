"""The VGG application: the Flax NNX VGG family, its train steps and workloads,
and the cs231n case study's memory analysis of it.

It uses the tuner's public API only; `import autotune` never imports it.
"""

from .breakdown import MemoryBreakdown, training_memory
from .explain import explain_vgg
from .layers import LayerTable, vgg_layer_table
from .train import (
    OPTIMIZERS,
    TrainSetup,
    make_loss_fn,
    make_optimizer,
    make_train_step,
    vgg_setup,
)
from .vgg import CONFIGS, REMAT_POLICIES, VGG, abstract_vgg, param_count
from .workloads import VGGConfig, vgg_remat_space, vgg_workloads

__all__ = [
    "CONFIGS",
    "LayerTable",
    "MemoryBreakdown",
    "OPTIMIZERS",
    "REMAT_POLICIES",
    "TrainSetup",
    "VGG",
    "VGGConfig",
    "abstract_vgg",
    "explain_vgg",
    "make_loss_fn",
    "make_optimizer",
    "make_train_step",
    "param_count",
    "training_memory",
    "vgg_layer_table",
    "vgg_setup",
    "vgg_remat_space",
    "vgg_workloads",
]
