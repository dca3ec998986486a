"""Training data sources: :class:`SyntheticSource` (a synthetic data-generating process) and
:class:`DatasetSource` (a stored dataset, exact or kNN pairs, optionally GPU-resident); both
give batches per step and checkpointable state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ident3d.errors import DataError, UsageError
from ident3d.synthetic import build_dgp
from ident3d.train.config import READ_ERRORS, _open_training_dataset, data_read_error
from ident3d.train.distributed import rank_rows


def _stream_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence(int(seed), spawn_key=(int(stream),)).generate_state(1)[0])


class SyntheticSource:
    """Fresh pairs every step from a :class:`SyntheticDGP`, drawn on the training device."""

    def __init__(
        self,
        cfg: dict[str, Any],
        device: torch.device,
        rank: int = 0,
        mixing_state: dict[str, torch.Tensor] | None = None,
        world: int = 1,
    ) -> None:
        self.dgp = build_dgp(cfg["data"], device, mixing_state)
        self.device = device
        # every rank draws the global batch from the same stream and keeps its rows: the
        # data do not depend on the number of ranks (a run resumes on any number)
        self.batch = int(cfg["batch_size"])
        self.rows = rank_rows(self.batch, rank, world) if world > 1 else None
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(_stream_seed(cfg["seed"], 1))
        self.eval_seed = _stream_seed(cfg["seed"], 1000)
        self.eval_samples = int(cfg["loop"]["eval_samples"])
        self._eval: tuple[torch.Tensor, torch.Tensor] | None = None

    def next_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, x1, x2 = self.dgp.sample_pairs(self.batch, self.gen)
        if self.rows is not None:
            lo, hi = self.rows
            return x1[lo:hi], x2[lo:hi]
        return x1, x2

    def eval_set(self) -> tuple[torch.Tensor, np.ndarray]:
        if self._eval is None:
            g = torch.Generator(device=self.device)
            g.manual_seed(self.eval_seed)
            z, x = self.dgp.sample(self.eval_samples, g)
            self._eval = (x, z)
        x, z = self._eval
        return x, z.double().cpu().numpy()

    def encode_eval(self, encoder: nn.Module, amp: bool) -> torch.Tensor:
        x, _ = self.eval_set()
        outs = []
        for xb in torch.split(x, 1024):
            with torch.autocast(self.device.type, torch.bfloat16, enabled=amp):
                outs.append(encoder(xb).float())
        return torch.cat(outs)

    def state(self) -> dict[str, Any]:
        return {"data_generator": self.gen.get_state()}

    def load_state(self, st: dict[str, Any]) -> None:
        self.gen.set_state(st["data_generator"])

    def extra_checkpoint(self) -> dict[str, Any]:
        return {"mixing": {k: v.detach().cpu() for k, v in self.dgp.mixing.state_dict().items()}}

    def close(self) -> None:
        pass


class _StepBatches(torch.utils.data.Sampler):
    """Batches of item indices for steps ``start, start + 1, ...``: step ``s`` is batch
    ``s mod (N // B)`` of epoch ``s // (N // B)`` of a seeded per-epoch shuffle (kNN datasets
    get ``(epoch, i)`` items), so the data position is a function of the step alone. ``batch``
    is the global batch ``B``; rank ``rank`` of ``world`` gets its rows of it (``rank_rows``),
    so the global batch of a step does not depend on the number of ranks."""

    def __init__(
        self,
        n: int,
        batch: int,
        seed: int,
        start: int,
        stop: int,
        rank: int,
        world: int,
        with_epoch: bool,
    ) -> None:
        self.n, self.batch, self.seed = n, batch, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self.with_epoch = with_epoch
        self.per_epoch = n // batch
        self.rows = rank_rows(batch, rank, world)

    def __len__(self) -> int:
        return self.stop - self.start

    def indices(self, step: int) -> list[Any]:
        from ident3d.data import EpochSampler

        epoch, j = divmod(step, self.per_epoch)
        order = EpochSampler(self.n, shuffle=True, seed=self.seed).order(epoch)
        lo, hi = self.rows
        idx = order[j * self.batch + lo : j * self.batch + hi].tolist()
        return [(epoch, i) for i in idx] if self.with_epoch else idx

    def __iter__(self) -> Any:
        for s in range(self.start, self.stop):
            yield self.indices(s)


class DatasetSource:
    """Pairs from a stored dataset (exact rendered pairs or kNN pairs of i.i.d. renders),
    loaded by DataLoader workers as uint8 and normalised on the device; or, with the
    GPU-resident path, served from one uint8 tensor on the device."""

    def __init__(
        self,
        cfg: dict[str, Any],
        device: torch.device,
        rank: int = 0,
        world: int = 1,
        start_step: int = 0,
    ) -> None:
        from ident3d import data as data_mod

        d = cfg["data"]
        self.cfg, self.device = cfg, device
        self.seed = int(cfg["seed"])
        self.batch = int(cfg["batch_size"])  # global: each rank reads its rows of it
        self.eval_samples = int(cfg["loop"]["eval_samples"])
        resident = d.get("resident", "auto")
        if resident == "auto":
            resident = device.type == "cuda" and _fits_on_device(d, device)
        self.resident = bool(resident)
        self.norm = data_mod.Normalize(d["mean"], d["std"]).to(device)
        self.channels_last = bool(cfg["loop"].get("channels_last", True))
        self.rank = rank
        self.augment = None
        if d.get("views", "pairs") == "augment":  # two augmentations of one image per pair
            from ident3d.train.augment import Augment, AugmentSpec

            spec = AugmentSpec.from_config(d.get("augment") or {})
            shape = _image_hw(d)
            self.augment = Augment(spec, d["mean"], d["std"], device, shape)
        if self.resident:
            mode = "pairs" if d["pairs"] == "exact" else "knn"
            if self.augment is not None and d["pairs"] == "none":
                mode = "images"
            try:
                self.gpu = data_mod.GPUDataset(
                    d["path"],
                    device,
                    mode=mode,
                    conditional=d["knn_conditional"],
                    sigma=float(d["knn_sigma"]),
                    seed=self.seed,
                )
            except READ_ERRORS as exc:
                raise data_read_error(d["path"], exc) from None
            n = len(self.gpu)
            self.steps = _StepBatches(
                n, self.batch, self.seed, start_step, int(cfg["steps"]), rank, world, False
            )
            self._it = None
        else:
            ds = _open_training_dataset(d, self.seed)
            n = len(ds)
            self.steps = _StepBatches(
                n,
                self.batch,
                self.seed,
                start_step,
                int(cfg["steps"]),
                rank,
                world,
                d["pairs"] == "knn",
            )
            workers = int(cfg["loop"].get("num_workers", 0))
            kw: dict[str, Any] = {}
            if workers > 0:
                kw = {
                    "persistent_workers": False,
                    "prefetch_factor": 4,
                    "worker_init_fn": _worker_ignores_stop_signals,
                }
            loader = torch.utils.data.DataLoader(
                ds,
                batch_sampler=self.steps,
                num_workers=workers,
                collate_fn=data_mod.collate,
                pin_memory=device.type == "cuda",
                **kw,
            )
            self._it = iter(loader)
        if self.steps.per_epoch < 1:
            raise UsageError(
                f"--batch-size {cfg['batch_size']} is larger than the dataset ({n} items)"
            )
        self._eval: tuple[torch.Tensor, np.ndarray] | None = None

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        f = self.norm(x)
        if self.channels_last:
            f = f.contiguous(memory_format=torch.channels_last)
        return f

    def next_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            if self.resident:
                idx = self.steps.indices(step)
                epoch = step // self.steps.per_epoch
                batch = self.gpu.get_batch(idx, epoch)
            else:
                assert self._it is not None
                batch = next(self._it)
        except READ_ERRORS as exc:  # a shard that does not match the manifest
            raise data_read_error(self.cfg["data"]["path"], exc) from None
        if self.augment is not None:  # the image (a pair's first view), augmented twice
            from ident3d.train.augment import augment_seed

            gen = torch.Generator(device=self.device)
            gen.manual_seed(augment_seed(self.seed, step, self.rank))
            a1, a2 = self.augment.pair(batch[0], gen)
            if self.channels_last:
                a1 = a1.contiguous(memory_format=torch.channels_last)
                a2 = a2.contiguous(memory_format=torch.channels_last)
            return a1, a2
        x1, x2 = batch[0], batch[1]
        return self._prep(x1), self._prep(x2)

    def eval_set(self) -> tuple[torch.Tensor, np.ndarray]:
        """The first ``eval_samples`` images of ``eval_path`` (or of the training set; pairs:
        the first view) with their latents; kept as uint8 and preprocessed per chunk."""
        if self._eval is None:
            from ident3d import data as data_mod

            d = self.cfg["data"]
            path = d.get("eval_path") or d["path"]
            try:
                try:
                    ds: Any = data_mod.ImageDataset(path)
                    k = min(self.eval_samples, len(ds))
                    x, z = ds.__getitems__(list(range(k))).batch[:2]
                except DataError:
                    raise
                except UsageError:
                    ds = data_mod.PairDataset(path)
                    k = min(self.eval_samples, len(ds))
                    x, _, z, _ = ds.__getitems__(list(range(k))).batch[:4]
            except READ_ERRORS as exc:
                raise data_read_error(path, exc) from None
            self._eval = (x.clone(), z.double().numpy())
        return self._eval

    def encode_eval(self, encoder: nn.Module, amp: bool) -> torch.Tensor:
        x, _ = self.eval_set()
        outs = []
        for xb in torch.split(x, 256):
            with torch.autocast(self.device.type, torch.bfloat16, enabled=amp):
                outs.append(encoder(self._prep(xb)).float())
        return torch.cat(outs)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, st: dict[str, Any]) -> None:
        pass

    def extra_checkpoint(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self._it = None


def _worker_ignores_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT and SIGTERM: a signal to the whole process group (a
    terminal's Ctrl-C, ``kill -- -PGID``, a scheduler) is the main process's to handle (it
    finishes the step and writes a checkpoint); a worker dying of it would abort the step.
    Workers still end with the main process."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _image_hw(d: dict[str, Any]) -> tuple[int, int]:
    """Height and width of a dataset's images."""
    from ident3d import data as data_mod

    try:
        ds: Any = data_mod.ImageDataset(d["path"])
    except UsageError:
        ds = data_mod.PairDataset(d["path"])
    return int(ds.source.height), int(ds.source.width)


def _fits_on_device(d: dict[str, Any], device: torch.device) -> bool:
    """Whether the dataset's images take under 40% of the device's free memory."""
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return False
    from ident3d import data as data_mod

    ds = (
        data_mod.PairDataset(d["path"])
        if d["pairs"] == "exact"
        else data_mod.ImageDataset(d["path"])
    )
    per = int(np.prod(ds.source.image_shape))
    return per * len(ds) < 0.4 * free


def _make_source(
    cfg: dict[str, Any], device: torch.device, rank: int, world: int, ckpt: dict[str, Any] | None
) -> Any:
    if cfg["data"]["kind"] == "synthetic":
        mixing = ckpt.get("mixing") if ckpt else None
        return SyntheticSource(cfg, device, rank, mixing, world)
    start = int(ckpt["step"]) if ckpt else 0
    return DatasetSource(cfg, device, rank, world, start)
