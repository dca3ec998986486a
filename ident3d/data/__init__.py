"""PyTorch datasets for 3DIdent-style data: images, exact pairs and nearest-neighbour pairs.

User guide: ``docs/data.md``. Summary::

    from ident3d.data import ImageDataset, PairDataset, KNNPairDataset, make_loader

    ds = KNNPairDataset("data/train", conditional="normal", sigma=0.1, seed=0)
    loader = make_loader(ds, batch_size=512, shuffle=True, num_workers=2, seed=0)
    norm = ds.normalizer("cuda")                      # per-channel mean/std, on the device
    for x, x_tilde, z, z_tilde in loader:             # uint8 (B, 3, H, W), float32 (B, D)
        x, x_tilde = norm(x.cuda()), norm(x_tilde.cuda())

- :class:`ImageDataset`: item ``i`` is ``(image, latents)`` (plus the class label where the
  dataset has classes); images are uint8 ``(3, H, W)`` tensors, latents float32 raw units.
- :class:`PairDataset`: datasets rendered as pairs; item ``i`` is ``(x, x_tilde, z, z_tilde)``
  (plus the class label where the dataset has classes).
- :class:`KNNPairDataset`: the original 3DIdent workflow on i.i.d. renders. ``z`` is drawn from
  the marginal (uniform on the box), ``z~`` from the conditional (truncated to the box by
  rejection), both are replaced by their nearest stored latent, and when both land on the same
  sample ``z~`` takes its second neighbour. Lookups are batched (``__getitems__``): one query
  per batch, never one per item. ``return_info=True`` adds a dict with the sampled and the
  retrieved distances; :func:`knn_diagnostics` summarises them for a dataset.
- :class:`GPUDataset` / :func:`load_to_device`: a whole split as one uint8 tensor on the
  device, batches served by index with no DataLoader, nearest-neighbour lookups on the device.

Every dataset reads the ident3d store (``manifest.json`` + HDF5 shards) and the original folder
layouts (3DIdent: ``raw_latents.npy`` + ``images/``; Causal3DIdent: ``raw_latents_<c>.npy`` +
``images_<c>/``; exported pairs: ``view0/``, ``view1/`` + ``pairs.json``), the latter by
decoding PNGs (slower).

Workers ship uint8; normalisation with the per-channel statistics happens on the device
(:meth:`normalizer`). Batches are logically ``(B, 3, H, W)`` and stored channels-last (the
on-disk HWC order, copied once into a shared-memory buffer), which is also the layout convolution
kernels prefer on the GPU. HDF5 files are opened lazily inside each process and never pickled,
so ``num_workers > 0`` works under fork and spawn, with ``persistent_workers`` too.

Randomness: kNN draws of epoch ``e`` come from ``SeedSequence(seed, spawn_key=(1, e))`` for the
whole epoch at once (item ``i`` is row ``i``), so an item depends only on ``(seed, epoch, i)``,
never on the worker count, the batch size or the order of the sampler.

The package holds one concept per module: :mod:`~ident3d.data.sources` (layouts),
:mod:`~ident3d.data.buffers`, :mod:`~ident3d.data.sampler`, :mod:`~ident3d.data.normalize`,
:mod:`~ident3d.data.knn` (nearest neighbours), one module per dataset
(:mod:`~ident3d.data.image_dataset`, :mod:`~ident3d.data.pair_dataset`,
:mod:`~ident3d.data.knn_pair_dataset`, on :mod:`~ident3d.data.dataset_base`),
:mod:`~ident3d.data.loader`, :mod:`~ident3d.data.resident` (GPU-resident path),
:mod:`~ident3d.data.diagnostics`, :mod:`~ident3d.data.gather` (batched copies out of
memory-mapped uncompressed shards) and :mod:`~ident3d.data.handoff` (the shared batch slots
that workers reuse once the main process lets go of them). The public names are re-exported
here.
"""

from ident3d.data.buffers import collate
from ident3d.data.diagnostics import format_knn_diagnostics, knn_diagnostics, simulate_knn
from ident3d.data.image_dataset import ImageDataset
from ident3d.data.knn import BACKENDS, NearestNeighbours
from ident3d.data.knn_pair_dataset import ANCHORS, KNNPairDataset, summarise_knn
from ident3d.data.loader import make_loader
from ident3d.data.multimodal_dataset import MultimodalDataset
from ident3d.data.normalize import Normalize
from ident3d.data.pair_dataset import PairDataset
from ident3d.data.resident import GPUDataset, load_to_device
from ident3d.data.sampler import EpochSampler
from ident3d.data.sources import LAYOUTS, detect_layout

__all__ = [
    "ANCHORS",
    "BACKENDS",
    "LAYOUTS",
    "EpochSampler",
    "GPUDataset",
    "ImageDataset",
    "KNNPairDataset",
    "MultimodalDataset",
    "NearestNeighbours",
    "Normalize",
    "PairDataset",
    "collate",
    "detect_layout",
    "format_knn_diagnostics",
    "knn_diagnostics",
    "load_to_device",
    "make_loader",
    "simulate_knn",
    "summarise_knn",
]
