"""``ident3d eval``: score a trained encoder's identifiability and write a report.

User guide: ``docs/eval.md``. The pipeline, each step usable on its own::

    from ident3d import eval as ev

    data = ev.encode_synthetic(run, n=14336, seed=0)       # or ev.encode_dataset(run, "data/test")
    result = ev.evaluate(data.h, data.z, data.names, learned_lambdas=run.lambdas, ...)
    ev.write_report(result, "out/")                          # report.json, report.md, PNGs
    print(ev.format_table(result.report))

or all at once with :func:`evaluate_run`. :func:`compare` puts several reports side by side.

``report.json`` (format ``ident3d-eval/1``) holds the headline numbers ``linear_r2``,
``kernel_r2`` (None when skipped), ``mcc_pearson``, ``mcc_spearman``, a ``per_factor`` list
(``name``, ``index`` and every per-factor score), the ``protocol`` of every metric, block
scores, the lambda comparison of AnInfoNCE runs, timings and where the numbers came from (run,
checkpoint, step, dataset, sample counts).

The package holds one concept per module: :mod:`~ident3d.eval.encode`, :mod:`~ident3d.eval.factors` (factor types and blocks),
:mod:`~ident3d.eval.scoring` (:func:`evaluate`), :mod:`~ident3d.eval.report`,
:mod:`~ident3d.eval.figures`, :mod:`~ident3d.eval.write`, :mod:`~ident3d.eval.run` (:func:`evaluate_run`) and
:mod:`~ident3d.eval.comparison` (:func:`compare`); encoders ident3d did not train:
:mod:`~ident3d.eval.external` (:func:`load_encoder`), :mod:`~ident3d.eval.embeddings`
(:func:`load_embeddings`), :mod:`~ident3d.eval.preprocess` (:class:`Preprocess`),
:mod:`~ident3d.eval.baseline` (:func:`baseline_rows`) and :mod:`~ident3d.eval.benchmark`
(:func:`evaluate_encoder`, ``ident3d eval --encoder | --embeddings``). The public names are
re-exported here.
"""

from ident3d.eval.baseline import PIXEL_SIDE, baseline_rows, format_baselines, random_resnet18
from ident3d.eval.benchmark import evaluate_encoder
from ident3d.eval.comparison import compare, load_report
from ident3d.eval.embeddings import load_embeddings
from ident3d.eval.encode import (
    SYNTHETIC_SAMPLES,
    EvalData,
    dataset_latents,
    encode_dataset,
    encode_images,
    encode_synthetic,
    factor_names,
)
from ident3d.eval.external import ExternalEncoder, load_encoder, load_state_dict_file
from ident3d.eval.factors import FactorInfo, dataset_factors, factor_info
from ident3d.eval.figures import (
    PLOT_POINTS,
    plot_blocks,
    plot_lambdas,
    plot_predictions,
    plot_r2_bars,
)
from ident3d.eval.multimodal import evaluate_image_text
from ident3d.eval.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from ident3d.eval.report import (
    REPORT_FILE,
    REPORT_FORMAT,
    block_table,
    format_table,
    render_markdown,
)
from ident3d.eval.run import evaluate_run
from ident3d.eval.scoring import EvalResult, default_blocks, evaluate, resolve_blocks
from ident3d.eval.write import write_report

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PIXEL_SIDE",
    "PLOT_POINTS",
    "REPORT_FILE",
    "REPORT_FORMAT",
    "SYNTHETIC_SAMPLES",
    "EvalData",
    "EvalResult",
    "ExternalEncoder",
    "FactorInfo",
    "Preprocess",
    "baseline_rows",
    "block_table",
    "compare",
    "dataset_factors",
    "dataset_latents",
    "default_blocks",
    "encode_dataset",
    "encode_images",
    "encode_synthetic",
    "evaluate",
    "evaluate_encoder",
    "evaluate_image_text",
    "evaluate_run",
    "factor_info",
    "factor_names",
    "format_baselines",
    "format_table",
    "load_embeddings",
    "load_encoder",
    "load_report",
    "load_state_dict_file",
    "plot_blocks",
    "plot_lambdas",
    "plot_predictions",
    "plot_r2_bars",
    "random_resnet18",
    "render_markdown",
    "resolve_blocks",
    "write_report",
]
