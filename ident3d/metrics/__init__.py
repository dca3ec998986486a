"""Identifiability scores: how well encodings ``h`` recover ground-truth factors ``z``.

Every function takes ``h`` (``(N, d_h)`` encodings) and ``z`` (``(N, d_z)`` factors) as numpy
arrays or torch tensors and computes in float64 with torch (on ``device`` when one is given,
the CPU otherwise). Results are small dataclasses with a ``to_dict()`` that is JSON-ready.

Protocols (section 3 of the reference facts):

- :func:`linear_r2`: ordinary least squares with an intercept from ``h`` to each factor, fitted
  on the first ``fit_fraction`` of the samples and scored (R^2, as scikit-learn's ``r2_score``)
  on the rest. ``in_sample=True`` fits and scores on all samples (the AnInfoNCE logs did that);
  the result says which.
- :func:`kernel_r2`: the Causal3DIdent protocol; see its docstring for where it differs from
  scikit-learn's ``GridSearchCV(KernelRidge(kernel="rbf"), cv=3)`` (nowhere that changes
  the numbers beyond round-off, by design).
- :func:`mcc`: mean absolute Pearson (or Spearman) correlation after Hungarian matching of
  factors to encoding dimensions.
- :func:`block_r2`: R^2 of predicting groups of factors (e.g. content vs style).
- :func:`logistic_accuracy`: held-out accuracy of multinomial logistic regression for discrete
  factors (the object class), the Causal3DIdent protocol.
- :func:`compare_lambdas`: AnInfoNCE's learned lambda against the true Lambda.

The package holds one score per module: :mod:`~ident3d.metrics.linear`,
:mod:`~ident3d.metrics.correlation` (MCC), :mod:`~ident3d.metrics.kernel`, :mod:`~ident3d.metrics.blocks`,
:mod:`~ident3d.metrics.lambdas`, :mod:`~ident3d.metrics.accuracy`, on :mod:`~ident3d.metrics.common`. The public names are
re-exported here.
"""

from ident3d.metrics.accuracy import AccuracyResult, logistic_accuracy
from ident3d.metrics.blocks import BlockR2Result, block_r2
from ident3d.metrics.common import ArrayLike, R2Result, as_float64, r2_scores, split_sizes
from ident3d.metrics.correlation import MCCResult, correlation_matrix, mcc
from ident3d.metrics.kernel import (
    KERNEL_ALPHAS,
    KERNEL_FIT_SAMPLES,
    KERNEL_GAMMAS,
    SMALL_KERNEL_PROBLEM,
    kernel_r2,
    kfold_slices,
)
from ident3d.metrics.lambdas import LambdaResult, compare_lambdas
from ident3d.metrics.linear import linear_r2

__all__ = [
    "KERNEL_ALPHAS",
    "KERNEL_FIT_SAMPLES",
    "KERNEL_GAMMAS",
    "SMALL_KERNEL_PROBLEM",
    "AccuracyResult",
    "ArrayLike",
    "BlockR2Result",
    "LambdaResult",
    "MCCResult",
    "R2Result",
    "as_float64",
    "block_r2",
    "compare_lambdas",
    "correlation_matrix",
    "kernel_r2",
    "kfold_slices",
    "linear_r2",
    "logistic_accuracy",
    "mcc",
    "r2_scores",
    "split_sizes",
]
