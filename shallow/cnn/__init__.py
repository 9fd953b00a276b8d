"""A convolutional-network library on numpy/CuPy: every derivative written out and tested.

The deep side of the comparisons of :mod:`shallow` (the seed lecture's part A): layers with their
forward, backward and forward-mode (Jacobian-vector) maps side by side, losses (label smoothing
optional), PyTorch's optimisers (weight decay but on the patterns of ``no_decay=``, such as
:data:`BIASES_AND_NORMS`; gradient clipping by global norm, :func:`clip_grad_norm`), small VGG and
ResNet models with the output scale alpha and the centred initialisation of lazy training, the
tangent model (:func:`linearize`) and its kernel (:func:`tangent_kernel`), data (scikit-learn's
digits, local MNIST-like files) and a training loop with exact checkpoints.

Conventions: images are channels-last arrays of shape (N, H, W, C); weights are input-major
(a Linear layer's ``layer.params["W"]`` is (d_in, d_out), a Conv2d's ``layer.params["W"]`` is
(KH, KW, C_in / groups, C_out)); float32 and float64 (a layer with parameters computes in their
dtype and returns the input gradient in the input's, :mod:`~shallow.cnn.layers`); parameters and
gradients are plain arrays of the backend, in each layer's ``params`` and ``grads`` dicts.

Speed: a 3x3 convolution is nine GEMMs on shifted row-slices of one padded channels-last buffer,
accumulated in place by BLAS, in row blocks sized for OpenBLAS's small-matrix kernels
(:mod:`shallow.cnn.conv`). On the host everything runs on one core (``benchmarks/cnn_step.py``
compares a training step with PyTorch's).

Modules: :mod:`~shallow.cnn.layers` (Layer, Sequential, Linear, Activation, Flatten, Dropout,
Residual), :mod:`~shallow.cnn.conv` (Conv2d), :mod:`~shallow.cnn.pooling`, :mod:`~shallow.cnn.norm`
(BatchNorm2d), :mod:`~shallow.cnn.losses`, :mod:`~shallow.cnn.optim`, :mod:`~shallow.cnn.models`,
:mod:`~shallow.cnn.linearize`, :mod:`~shallow.cnn.data`, :mod:`~shallow.cnn.train`,
:mod:`~shallow.cnn.gradcheck` (a layer's backward and jvp against central differences),
:mod:`~shallow.cnn.graph` (a training step recorded once as a CUDA graph),
:mod:`~shallow.cnn.robustness` (Lipschitz bounds, adversarial attacks, deformations),
:mod:`~shallow.cnn.revnet` (i-RevNet, an invertible network), :mod:`~shallow.cnn.group` (translation
lemma, p4 group convolutions, Gabor fits), :mod:`~shallow.cnn.wavelets` (Morlet and Gabor filter banks)
and :mod:`~shallow.cnn.scattering` (the scattering transform, a layer and a linear classifier on it),
:mod:`~shallow.cnn.ridge` (a closed-form linear classifier on fixed features).
"""

from .conv import Conv2d, conv2d
from .data import (Augment, ImageData, Standardizer, affine_warp, batches, load_digits, load_mnist, random_affine,
                   random_shift, stratified_split)
from .gradcheck import GradientCheck, check_gradients
from .graph import CapturedStep
from .group import (GaborFit, P4Conv2d, P4GroupPool, P4LiftConv2d, circular_convolution, commutator_defect,
                    commutes_with_translations, convolution_defect, convolution_kernel, deform_nearest, fit_gabor,
                    gabor_filter, p4_cnn, rotate_images, rotate_p4, translate)
from .layers import Activation, Dropout, Flatten, Identity, Layer, Linear, Residual, Sequential, no_cache
from .linearize import Linearized, linearize, tangent_kernel
from .losses import CrossEntropy, SquareLoss, accuracy, log_softmax
from .models import Model, build_model, relative_change, resnet_small, snapshot, vgg_small
from .norm import BatchNorm2d
from .optim import (BIASES_AND_NORMS, SGD, Adam, Constant, Cosine, PerEpoch, ReduceOnPlateau, StepDecay,
                    clip_grad_norm)
from .pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .revnet import (IRevNet, InjectivePad, InvertibleLayer, InvertibleSequential, RevBlock, SpaceToDepth, bottleneck,
                     irevnet_small)
from .robustness import (ProjectedOptimizer, SpectralProjection, certified_radius, conv_norm_bound,
                         conv_singular_values, deform, deformation_ratio, fgsm, input_gradient, input_jacobian,
                         jacobian_norm, lipschitz_upper_bound, local_lipschitz, minimal_perturbation, pgd,
                         random_displacement, spectral_norm, universal_perturbation)
from .ridge import RidgeClassifier
from .scattering import Scattering2D, ScatteringClassifier, ScatteringLayer
from .train import History, TrainingDivergedError, evaluate, fit, load_checkpoint, predict, save_checkpoint
from .wavelets import filter_bank, littlewood_paley, wavelet_transform

__all__ = [
    "Layer", "Sequential", "Linear", "Activation", "Flatten", "Dropout", "Residual", "Identity", "no_cache",
    "Conv2d", "conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "BatchNorm2d",
    "CrossEntropy", "SquareLoss", "log_softmax", "accuracy",
    "SGD", "Adam", "Constant", "StepDecay", "Cosine", "PerEpoch", "ReduceOnPlateau", "clip_grad_norm",
    "BIASES_AND_NORMS",
    "Model", "vgg_small", "resnet_small", "build_model", "snapshot", "relative_change",
    "Linearized", "linearize", "tangent_kernel",
    "ImageData", "load_digits", "load_mnist", "stratified_split", "Standardizer", "batches",
    "random_shift", "random_affine", "affine_warp", "Augment",
    "check_gradients", "GradientCheck",
    "fit", "evaluate", "predict", "CapturedStep", "History", "TrainingDivergedError", "save_checkpoint", "load_checkpoint",
    "deform", "random_displacement", "jacobian_norm", "deformation_ratio",
    "spectral_norm", "conv_singular_values", "conv_norm_bound", "lipschitz_upper_bound", "input_jacobian",
    "local_lipschitz", "input_gradient", "fgsm", "pgd", "minimal_perturbation", "certified_radius",
    "universal_perturbation", "SpectralProjection", "ProjectedOptimizer",
    "InvertibleLayer", "SpaceToDepth", "InjectivePad", "RevBlock", "bottleneck", "InvertibleSequential", "IRevNet",
    "irevnet_small",
    "P4LiftConv2d", "P4Conv2d", "P4GroupPool", "p4_cnn", "rotate_p4", "rotate_images",
    "translate", "deform_nearest", "circular_convolution", "convolution_kernel", "convolution_defect",
    "commutator_defect", "commutes_with_translations", "gabor_filter", "fit_gabor", "GaborFit",
    "RidgeClassifier", "Scattering2D", "ScatteringLayer", "ScatteringClassifier", "filter_bank", "littlewood_paley", "wavelet_transform",
]
