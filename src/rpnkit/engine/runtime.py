"""The inference runtime: ``rpnkit.load`` a checkpoint, then ``propose``, ``detect`` or
``evaluate`` on anything that holds images.

    model = rpnkit.load("runs/x/checkpoint.safetensors", device="cuda")  # kind read from the file
    dets = model.detect(["a.jpg", pil_image, np_array, tensor], batch_size=8, amp="bf16")
    props = model.propose("photos/", top=1000)
    props = model.propose("aerial.tif", top=3000, tile_size=512, tile_overlap=64)  # sliced


Inputs: an image file, a folder of images, a dataset (COCO JSON, VOC, YOLO; ``split`` and the
other data options pick it; ``images`` and ``class_map`` as for ``read_dataset``), a
``DatasetIndex`` or a dataset of items, an image in memory, a batch of them ((N, H, W, C) array,
(N, C, H, W) tensor), or a list of image files, PIL images, numpy arrays and tensors
(``rpnkit.data.to_rgb`` says which). Images are resized as
in training (shorter side ``short_side``, longer at most ``max_size``); results come back per
image in original pixels. Batch-norm folding and autocast are applied here, for every caller
(``engine.device`` decides how).

Large images with small objects: with ``tile_size`` every call slices the images larger than a
tile into overlapping tiles at native resolution (``engine.slicing``: ``tile_overlap`` px,
``full_view`` adds the whole image resized), merged with cross-tile NMS. Limits: ``top``
proposals per image and ``max_detections`` per image may be fewer than the model's own (its
``test_proposals.post_nms_top_n`` and ``detections_per_image``: the best ones are kept) or
more, raised for the call alone (the forward's own settings: the model is not changed), for
each tile too when sliced; sliced, an image keeps up to ``top`` proposals, or every detection
its tiles keep unless ``max_detections`` is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import itertools
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from ..config import check_compile, check_count, check_number
from ..data import (
    Compose,
    DataError,
    DatasetIndex,
    DetectionDataset,
    ImageList,
    eval_transforms,
    index_for_input,
)
from ..data.sources import check_no_dataset_options
from ..data.transforms import DEFAULT_MAX_SIZE, DEFAULT_SHORT_SIDE
from ..evaluation.recall import MAX_DETS
from ..modeling.roi_heads import Detections
from ..modeling.rpn import ProposalConfig, Proposals
from ..modeling.sizes import MIN_MAX_SIZE
from .checkpoint import ModelSpec, check_class_names, load_model_and_size
from .device import (
    check_backend,
    compile_backend,
    compile_in_place,
    decodes_on_device,
    fold_for_inference,
    inference_precision,
    memory_layout_for,
    resolve_device,
)
from .evaluate import (
    DetectionReport,
    NovelClassReport,
    RecallReport,
    detections_as_proposals,
    evaluate_detections,
    evaluate_novel_classes,
    evaluate_proposals,
)
from .results import DetectionResult, ProposalResult
from .runner import (
    GROUP_WINDOW,
    Pace,
    detection_forward,
    first_stage,
    in_input_order,
    per_image,
    proposal_forward,
    proposal_limit,
    run_batches,
)
from .slicing import DEFAULT_TILE_OVERLAP, Merge, SliceConfig, sliced_batches

Inputs = Any  # str | Path | DatasetIndex | Dataset | Sequence[str | Path | ImageLike]


def streams(method):
    """A ``Predictor.iter_*`` method that also takes a one-shot iterator of images (a
    generator, a camera's frames): read ``batch_size`` images at a time, each batch's
    results yielded before the next images are taken, so that an endless stream gets its
    results with the latency of one batch (a list is read whole, decoding overlapping the
    model). An iterator of file paths (a glob) is a list: its first item, taken at the call,
    tells. Image ids and in-memory images' names (``image-<i>``, or ``names``, one per image
    of the stream) count on across batches; ``skipped`` is the whole stream's list. The
    options are checked at the call, as for a list."""

    @functools.wraps(method)
    def iter_results(self, inputs, **options):
        if not isinstance(inputs, Iterator):
            return method(self, inputs, **options)
        first = list(itertools.islice(inputs, 1))
        if first and isinstance(first[0], (str, os.PathLike)):  # files: read as a list
            return method(self, first + list(inputs), **options)
        method(self, [], **{k: v for k, v in options.items() if k != "names"})  # its checks
        return _streamed(self, method, itertools.chain(first, inputs), options)

    return iter_results


def _streamed(predictor, method, stream: Iterator, options: dict):
    names, progress = options.pop("names", None), options.pop("progress", False)
    size, skipped, start = options.get("batch_size", 4), predictor.skipped, 0
    desc = "detecting" if method.__name__ == "iter_detections" else "proposing"
    with tqdm(desc=desc, unit=" images", disable=not progress) as bar:
        while chunk := list(itertools.islice(stream, size)):
            count = range(start, start + len(chunk))
            if names is not None and len(names) < count.stop:
                raise ValueError(f"{len(names)} names for a stream of more images")
            own = names[start : count.stop] if names is not None else [f"image-{i}" for i in count]
            results = method(predictor, chunk, names=own, **options)
            chunk_skipped, predictor.skipped = predictor.skipped, skipped  # the stream's
            try:
                for result in results:
                    yield dataclasses.replace(result, image_id=result.image_id + start)
            finally:  # the batch's skips, even where the caller stops or an error ends it
                skipped += chunk_skipped
            start = count.stop
            bar.update(len(chunk))
    if names is not None and len(names) != start:
        raise ValueError(f"{len(names)} names for a stream of {start} images")


class Predictor:
    """A trained RPN or Faster R-CNN ready for inference. ``network`` is the model (eval mode,
    batch norms folded unless ``fold_bn=False``), ``spec`` what its checkpoint says it is.
    ``amp`` (``"none"``, ``"bf16"``, ``"fp16"``) is the default precision of every call;
    ``num_workers`` processes decode and resize images while the model runs (default: 4 on a GPU,
    none on the CPU, where the model needs the cores); ``compile``: ``torch.compile`` the
    network (``device.compile_in_place``; True for inductor, or a backend's name);
    ``channels_last``: NHWC (True) or NCHW (False) convolutions, None by device
    (``device.memory_layout_for``: NHWC on the CPU); ``decode_on_device``: JPEG files are
    decoded, resized and padded on ``device``, a batch at a time (``data.device_images``;
    None: on CUDA, ``device.decodes_on_device``);
    ``group_by_aspect``: ``propose`` and ``detect`` on a folder or dataset batch wide and tall
    images apart (less padding; results still in input order, ``runner.in_input_order``). Off
    by default: an image's results depend a little on its batch's padding, and ``evaluate``
    batches in input order, so that stored proposals score as the checkpoint does."""

    def __init__(
        self,
        network: nn.Module,
        spec: ModelSpec,
        *,
        device: torch.device | str = "auto",
        fold_bn: bool = True,
        amp: str = "none",
        short_side: int = DEFAULT_SHORT_SIDE,
        max_size: int = DEFAULT_MAX_SIZE,
        num_workers: int | None = None,
        compile: bool | str = False,
        channels_last: bool | None = None,
        decode_on_device: bool | None = None,
        group_by_aspect: bool = False,
    ) -> None:
        check_settings(network, spec, short_side, max_size, num_workers, compile)
        check_flags(fold_bn=fold_bn, group_by_aspect=group_by_aspect, channels_last=channels_last,
                    decode_on_device=decode_on_device)  # fmt: skip
        self.device = resolve_device(device)
        self.group_by_aspect = group_by_aspect
        self.decode_on_device = decodes_on_device(decode_on_device, self.device)
        self.num_workers = default_workers(self.device) if num_workers is None else num_workers
        self.network = memory_layout_for(network.to(self.device).eval(), self.device, channels_last)
        if fold_bn:
            fold_for_inference(self.network)
        if compile:
            compile_in_place(self.network, compile_backend(compile))
        self.spec = spec
        inference_precision(amp, self.device)  # an unusable setting fails here, once
        self.amp = amp
        self.short_side, self.max_size = short_side, max_size
        self.skipped: list[str] = []  # the images the latest call could not read (reported)
        self.pace = Pace()  # when the last call's batches reached the host (its steady rate)
        self.source: Path | None = None  # the checkpoint file, when loaded from one

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def class_agnostic(self) -> bool:
        """An RPN, or a detector with OLN's class-agnostic box head (``score_mode
        "localization"``): its boxes are proposals for objects of any class."""
        return not self.spec.is_detector or self.spec.config.roi.class_agnostic

    @property
    def class_names(self) -> tuple[str, ...]:
        """The names of the labels of ``detect``'s results: the training set's classes (an
        RPN keeps them for reference), ``("object",)`` for a class-agnostic detector."""
        if self.spec.is_detector and self.class_agnostic:
            return ("object",)
        return self.spec.class_names

    def precision(self, amp: str | None = None):
        return inference_precision(self.amp if amp is None else amp, self.device)

    def dataset(
        self,
        inputs: Inputs,
        *,
        split: str | None = None,
        format: str | None = None,
        split_file: str | Path | None = None,
        strict: bool = False,
        names: Sequence[str] | None = None,
        images: str | Path | None = None,
        class_map: str | Path | None = None,
    ) -> Dataset:
        """``inputs`` as dataset items resized for the network, read as ``propose`` and
        ``detect`` read them. Where the runtime decodes on the device (``decode_on_device``),
        an item may still hold a JPEG's bytes (``jpeg``) or an image as decoded (``native``)
        in place of ``image``, with the steps that ``collate`` and ``Batch.to`` finish on the
        device."""
        return self._dataset(
            inputs,
            eval_transforms(self.short_side, self.max_size),
            split=split,
            format=format,
            split_file=split_file,
            strict=strict,
            names=names,
            images=images,
            class_map=class_map,
        )

    def _dataset(
        self,
        inputs: Inputs,
        transforms: Compose,
        *,
        split: str | None = None,
        format: str | None = None,
        split_file: str | Path | None = None,
        strict: bool = False,
        names: Sequence[str] | None = None,
        images: str | Path | None = None,
        class_map: str | Path | None = None,
        own_names: bool = False,
        whole: bool = True,
    ) -> Dataset:
        """``inputs`` as dataset items through ``transforms`` (none: native resolution);
        ``own_names``: a path keeps its own classes even for a classifying detector;
        ``whole``: the images go to the network whole, so JPEGs may be decoded on the device
        (``decode_on_device``); tiles are cut on the host (``sliced_batches``)."""
        decode = whole and self.decode_on_device
        if isinstance(inputs, Dataset):
            if not whole and getattr(inputs, "leaves_pixels_to_device", False):
                raise ValueError(
                    "sliced inference cuts its tiles from images decoded on the host: give a "
                    "dataset made with decode_on_device=False"
                )
            return inputs
        if isinstance(inputs, (str, Path)):  # a classifying detector's classes, by name
            names_of = None if self.class_agnostic or own_names else self.class_names
            inputs = index_for_input(
                inputs,
                split=split,
                format=format,
                split_file=split_file,
                strict=strict,
                class_names=names_of or None,
                images=images,
                class_map=class_map,
            )
        if isinstance(inputs, DatasetIndex):
            return DetectionDataset(inputs, transforms, strict=strict, decode_on_device=decode)
        if isinstance(inputs, Image.Image) or (
            isinstance(inputs, (np.ndarray, torch.Tensor)) and inputs.ndim in (2, 3)
        ):
            inputs = [inputs]  # one image in memory; 4 dimensions: a batch of them
        options = {"split_file": split_file, "class_map": class_map, "images": images}
        check_no_dataset_options("a list of images", split, format=format, **options)
        return ImageList(
            list(inputs),
            transforms,
            names=names,
            strict=strict,
            decode_on_device=decode,
        )

    def _batches(
        self,
        forward,
        inputs: Inputs,
        *,
        slicing: SliceConfig | None,
        merge: Merge,
        batch_size: int,
        amp: str | None,
        progress: bool,
        desc: str,
        data_options: dict,
        skipped: list[str],
        grouped: bool = False,
        categories: dict | None = None,
    ):
        """(metas, outputs) of ``inputs``: whole images in batches (``run_batches``), or with
        ``slicing`` one image at a time, its tiles merged by ``merge`` (``sliced_batches``);
        none for a list of no image. ``skipped``: the call's own list (``_new_call``), that
        gets the images left out. ``grouped``: batches of wide or of tall images only where
        the dataset knows which (its metas then carry ``position``: ``in_input_order``
        restores the order); ``categories``: a dict that gets the dataset's COCO category ids
        of the classes under ``"ids"`` (``coco_category_ids``), for the detections to be
        written with."""
        common = {
            "batch_size": batch_size,
            "device": self.device,
            "progress": progress,
            "desc": desc,
            "precision": self.precision(amp),
            "num_workers": self.num_workers,
            "skipped": skipped,
        }
        whole = slicing is None
        transforms = self._transforms(slicing)
        dataset = self._read(skipped, inputs, transforms, **data_options, whole=whole)
        index = getattr(dataset, "index", None)  # images its reader left out count as skipped
        skipped.extend(getattr(index, "image_issues", []))
        if isinstance(dataset, ImageList) and len(dataset) == 0:  # a loop's empty batch
            return iter(())
        if isinstance(dataset, ImageList) and len(dataset) <= batch_size:
            common["num_workers"] = 0  # one batch (a stream's): workers would only start up
        if categories is not None:
            categories["ids"] = coco_category_ids(dataset, self.class_names)
        if whole:
            grouped = grouped and self.group_by_aspect
            groups = getattr(dataset, "aspect_groups", None) if grouped else None
            groups = groups() if groups else None
            return self.pace.track(run_batches(forward, dataset, groups=groups, **common))
        resize = eval_transforms(self.short_side, self.max_size)
        return self.pace.track(
            sliced_batches(forward, dataset, slicing, merge, resize=resize, **common)
        )

    def _new_call(self) -> list[str]:
        """The images a call leaves out: a list of its own, from its start (an iterator still
        open keeps filling its list), which ``skipped`` shows until the next call."""
        self.skipped = []
        return self.skipped

    def _read(self, skipped: list[str], inputs: Inputs, transforms: Compose, **options) -> Dataset:
        """``_dataset``, the images of a reader that finds none readable (its ``DataError``)
        listed in ``skipped`` all the same, as those of a dataset's workers are."""
        try:
            return self._dataset(inputs, transforms, **options)
        except DataError as err:
            skipped.extend(getattr(err, "image_issues", []))
            raise

    def _transforms(self, slicing: SliceConfig | None) -> Compose:
        """Resized for the network; sliced inference reads images at native resolution."""
        return eval_transforms(self.short_side, self.max_size) if slicing is None else Compose()

    def _proposal_batches(
        self,
        inputs: Inputs,
        config: ProposalConfig,
        *,
        top: int,
        slicing: SliceConfig | None,
        options: dict,
        desc: str,
        data_options: dict,
    ) -> Iterator[tuple[list[dict], Proposals]]:
        """(metas, Proposals) of the first stage with ``config`` over ``inputs``; sliced, each
        image's tiles merged by NMS at ``config``'s threshold, keeping ``top``. ``options``:
        ``_batches``'s batch size, precision and progress."""
        return self._batches(
            proposal_forward(self.network, config),
            inputs,
            slicing=slicing,
            merge=Merge("proposals", config.nms_threshold, top),
            desc=desc,
            data_options=data_options,
            **options,
        )

    def _detection_batches(
        self,
        inputs: Inputs,
        *,
        limit: int | None,
        merge_as: str,
        slicing: SliceConfig | None,
        options: dict,
        desc: str,
        data_options: dict,
        categories: dict | None = None,
        score_floor: float | None = None,
    ) -> Iterator[tuple[list[dict], Detections | Proposals]]:
        """(metas, Detections) of the detector over ``inputs``, at most ``limit`` per image
        (None: the model's own; this call's alone: ``runner.detection_limits``); sliced, each
        image's tiles merged by NMS at the box head's threshold as ``merge_as`` says
        (``"detections"``, or ``"proposals"``: then (metas, Proposals)). ``categories``: as
        ``_batches``'s; ``score_floor``: below the box head's own threshold, lowers it."""
        detector = self._detector()
        nms = detector.roi_heads.config.nms_threshold
        batches = self._batches(
            detection_forward(detector, limit, score_floor),
            inputs,
            slicing=slicing,
            merge=Merge(merge_as, nms, limit),
            desc=desc,
            data_options=data_options,
            categories=categories,
            **options,
        )
        for metas, found in batches:  # fewer than the model keeps: its leading ones
            yield (
                metas,
                found
                if limit is None
                else dataclasses.replace(found, num=found.num.clamp(max=limit)),
            )

    @streams
    def iter_proposals(
        self,
        inputs: Inputs,
        *,
        top: int = 100,
        batch_size: int = 4,
        amp: str | None = None,
        progress: bool = False,
        proposal_config: ProposalConfig | None = None,
        tile_size: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        full_view: bool = False,
        **data_options,
    ) -> Iterator[ProposalResult]:
        """Each readable image's best ``top`` proposals, in input order, as they are computed.
        ``proposal_config`` overrides the RPN's test setting (the alternating schedule
        proposes with its training one); a ``top`` above its limit raises the limit.
        ``tile_size``, ``tile_overlap``, ``full_view``: sliced inference (module docstring)."""
        skipped = self._new_call()
        check_call(self.iter_proposals, inputs, data_options)
        check_count("top", top)
        check_count("batch_size", batch_size)
        slicing = slice_config(tile_size, tile_overlap, full_view)
        model = first_stage(self.network)  # a detector's RPN
        config = proposal_limit(proposal_config or model.rpn.config.test_proposals, top)

        def results():  # the data is read at the first result asked for, as it is used
            batches = self._proposal_batches(
                inputs,
                config,
                top=top,
                slicing=slicing,
                options={
                    "batch_size": batch_size,
                    "amp": amp,
                    "progress": progress,
                    "grouped": True,
                    "skipped": skipped,
                },
                desc="proposing",
                data_options={"own_names": True, **data_options},  # every object of its class
            )
            for metas, found in batches:
                counts = found.num.clamp(max=top)
                for meta, boxes, scores in per_image(metas, counts, found.boxes, found.scores):
                    result = ProposalResult(
                        meta["image_id"],
                        meta["file_name"],
                        boxes,
                        scores,
                        tuple(meta["orig_size"]),
                        meta.get("source"),
                    )
                    yield meta.get("position"), result

        return in_input_order(results(), batch_size * GROUP_WINDOW)

    @streams
    def iter_detections(
        self,
        inputs: Inputs,
        *,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        batch_size: int = 4,
        amp: str | None = None,
        progress: bool = False,
        tile_size: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        full_view: bool = False,
        **data_options,
    ) -> Iterator[DetectionResult]:
        """Each readable image's detections scoring at least ``score_threshold`` (default: the
        model's own threshold, 0.05 by default; a lower one lowers it for the call), in input
        order; at most ``max_detections`` per image (default: the model's, 100; fewer keeps
        the best, more raises the model's limits for the call alone). ``tile_size``...:
        sliced inference (module docstring). The data is read as the results are asked for."""
        skipped = self._new_call()
        check_call(self.iter_detections, inputs, data_options)
        self._detector()  # at the call, not at the first result
        check_count("max_detections", max_detections, optional=True)
        check_count("batch_size", batch_size)
        check_number("score_threshold", score_threshold, low=0, high=1, optional=True)
        categories: dict = {}  # a COCO JSON's ids, once its dataset is made (this call's own)
        options = {"batch_size": batch_size, "amp": amp, "progress": progress, "grouped": True}
        batches = self._detection_batches(  # a generator: the data is read as it is used
            inputs,
            limit=max_detections,
            merge_as="detections",
            slicing=slice_config(tile_size, tile_overlap, full_view),
            options={**options, "skipped": skipped},
            desc="detecting",
            data_options={"own_names": True, **data_options},  # no object skipped for its class
            categories=None if self.class_agnostic else categories,
            score_floor=score_threshold,
        )
        results = self._detection_results(batches, score_threshold or 0.0, categories)
        return in_input_order(results, batch_size * GROUP_WINDOW)

    def _detection_results(self, batches, score_threshold: float, categories: dict):
        """(position or None, DetectionResult) of each image of ``batches``: the valid
        detections scoring at least ``score_threshold``, the leading ones of each row (best
        first), with the category ids in ``categories["ids"]`` where there are some."""
        for metas, found in batches:
            slots = torch.arange(found.scores.shape[1])
            passing = (found.scores >= score_threshold) & (slots < found.num[:, None])
            counts = passing.int().cummin(dim=1).values.sum(dim=1)  # the passing prefix
            fields = (found.boxes, found.scores, found.labels)
            for meta, *kept in per_image(metas, counts, *fields):
                result = DetectionResult(
                    meta["image_id"],
                    meta["file_name"],
                    *kept,
                    self.class_names,
                    tuple(meta["orig_size"]),
                    meta.get("source"),
                    categories.get("ids"),
                )
                yield meta.get("position"), result

    def propose(self, inputs: Inputs, **options) -> list[ProposalResult]:
        """``iter_proposals`` as a list."""
        check_call(self.iter_proposals, inputs, options, called="propose")
        return list(self.iter_proposals(inputs, **options))

    def detect(self, inputs: Inputs, **options) -> list[DetectionResult]:
        """``iter_detections`` as a list."""
        check_call(self.iter_detections, inputs, options, called="detect")
        return list(self.iter_detections(inputs, **options))

    def evaluate(self, data: Inputs, **options) -> RecallReport | DetectionReport:
        """Detection mAP for a Faster R-CNN, proposal recall for an RPN and for a
        class-agnostic detector (OLN's full model: its final boxes are its proposals)."""
        method = self.evaluate_proposals if self.class_agnostic else self.evaluate_detections
        check_call(method, data, options, called="evaluate")
        return method(data, **options)

    def evaluate_proposals(
        self,
        data: Inputs,
        *,
        top: int | None = None,
        final_boxes: bool | None = None,
        batch_size: int = 4,
        amp: str | None = None,
        progress: bool = False,
        tile_size: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        full_view: bool = False,
        **data_options,
    ) -> RecallReport:
        """COCO-style proposal recall on a labelled dataset, of the model's own number of
        proposals per image, or ``top`` (AR@k counts up to 1000); sliced, of up to ``top`` or
        1000 per image. A detector is scored through its RPN, or on its ``final_boxes``
        (default for a class-agnostic one: OLN's boxes are proposals; ``top`` then sets its
        number of detections). A path is read with the dataset's own classes (recall is
        class-agnostic: every object counts, whatever the checkpoint's classes)."""
        skipped = self._new_call()
        check_call(self.evaluate_proposals, data, data_options)
        slicing = slice_config(tile_size, tile_overlap, full_view)
        transforms = self._transforms(slicing)
        dataset = self._read(
            skipped, data, transforms, **data_options, own_names=True, whole=slicing is None
        )
        batches = self._recall_batches(
            labelled(dataset),
            top=top,
            final_boxes=final_boxes,
            slicing=slicing,
            options={
                "batch_size": batch_size,
                "amp": amp,
                "progress": progress,
                "skipped": skipped,
            },
            data_options={},
        )
        with contextlib.closing(batches):
            return evaluate_proposals(self.network, None, batches=batches, device=self.device)

    def evaluate_novel_classes(
        self,
        data: Inputs,
        seen: str | Sequence[str],
        *,
        top: int | None = None,
        final_boxes: bool | None = None,
        batch_size: int = 4,
        amp: str | None = None,
        progress: bool = False,
        tile_size: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        full_view: bool = False,
        **data_options,
    ) -> NovelClassReport:
        """OLN's novel-class protocol (``engine.evaluate.evaluate_novel_classes``): AR@10,
        100, 1000 on the boxes of the classes not in ``seen`` (names, or ``"voc"``), proposals
        on seen-class objects removed before the budget, and the all-class recall, of the
        proposals ``evaluate_proposals`` scores. A path is read with the dataset's own class
        names (never mapped to a detector's: the novel objects must stay)."""
        skipped = self._new_call()
        check_call(self.evaluate_novel_classes, data, data_options)
        slicing = slice_config(tile_size, tile_overlap, full_view)
        transforms = self._transforms(slicing)
        dataset = self._read(
            skipped, data, transforms, **data_options, own_names=True, whole=slicing is None
        )
        names = getattr(dataset, "class_names", None) or getattr(
            getattr(dataset, "index", None), "class_names", None
        )
        if not names:
            raise ValueError("the novel-class protocol needs a labelled dataset with class names")
        batches = self._recall_batches(
            dataset,
            top=top,
            final_boxes=final_boxes,
            slicing=slicing,
            options={
                "batch_size": batch_size,
                "amp": amp,
                "progress": progress,
                "skipped": skipped,
            },
            data_options={},
        )
        with contextlib.closing(batches):
            return evaluate_novel_classes(batches, names, seen)

    def _recall_batches(
        self,
        data: Inputs,
        *,
        top: int | None,
        final_boxes: bool | None,
        slicing: SliceConfig | None,
        options: dict,
        data_options: dict,
    ) -> Iterator[tuple[list[dict], Proposals]]:
        """(metas, Proposals) to score as proposals: the first stage's, or a detector's final
        boxes; the best ``top`` of each image (None: the model's own number)."""
        check_count("top", top, optional=True)
        if final_boxes is None:
            final_boxes = self.spec.is_detector and self.class_agnostic
        if final_boxes:
            batches = self._detection_batches(
                data,
                limit=top,
                merge_as="proposals",
                slicing=slicing,
                options=options,
                desc="evaluating",
                data_options=data_options,
            )
            for metas, found in batches:
                if isinstance(found, Detections):  # sliced: merged as proposals already
                    found = detections_as_proposals(found)
                yield metas, found
            return
        config = proposal_limit(first_stage(self.network).rpn.config.test_proposals, top or 1)
        batches = self._proposal_batches(
            data,
            config,
            top=top or max(MAX_DETS),
            slicing=slicing,
            options=options,
            desc="evaluating",
            data_options=data_options,
        )
        for metas, found in batches:  # best first: fewer than the model keeps, its leading ones
            yield (
                metas,
                found if top is None else dataclasses.replace(found, num=found.num.clamp(max=top)),
            )

    def evaluate_detections(
        self,
        data: Inputs,
        *,
        max_detections: int | None = None,
        batch_size: int = 4,
        amp: str | None = None,
        progress: bool = False,
        tile_size: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        full_view: bool = False,
        **data_options,
    ) -> DetectionReport:
        """COCO and VOC mAP on a labelled dataset whose classes are the checkpoint's, of up to
        ``max_detections`` per image (as ``iter_detections``)."""
        skipped = self._new_call()
        check_call(self.evaluate_detections, data, data_options)
        detector = self._detector()
        slicing = slice_config(tile_size, tile_overlap, full_view)
        transforms = self._transforms(slicing)
        dataset = self._read(skipped, data, transforms, **data_options, whole=slicing is None)
        self._check_classes(labelled(dataset))
        batches = self._detection_batches(
            dataset,
            limit=max_detections,
            merge_as="detections",
            slicing=slicing,
            options={
                "batch_size": batch_size,
                "amp": amp,
                "progress": progress,
                "skipped": skipped,
            },
            desc="detecting",
            data_options={},
        )
        with contextlib.closing(batches):  # its workers stopped even on an error
            return evaluate_detections(detector, None, self.class_names, batches=batches)

    def _check_classes(self, dataset: Dataset) -> None:
        """The dataset's labels must mean the checkpoint's classes: a dataset read by name
        against them (a path) has to keep some object; one built elsewhere, the same names."""
        index = getattr(dataset, "index", None)
        source = index.source if index is not None else type(dataset).__name__
        mine = list(self.class_names)
        names = list(getattr(dataset, "class_names", []) or [])
        if names and names != mine:
            raise ValueError(
                f"{source}: its classes {names[:5]}... differ from the checkpoint's {mine[:5]}..."
            )
        if (
            index is not None
            and index.skipped_annotations
            and not any(len(r.boxes) for r in index.records)
        ):
            first = index.issues[0] if index.issues else ""
            raise ValueError(
                f"{source}: none of its objects is of the checkpoint's classes {mine[:5]} "
                f"({index.skipped_annotations} skipped; first: {first})"
            )

    def _detector(self) -> nn.Module:
        if not self.spec.is_detector:
            where = f"{self.source}: " if self.source is not None else ""
            raise ValueError(
                f"{where}not a Faster R-CNN checkpoint (an RPN: train one with --model "
                "faster-rcnn (kind='faster-rcnn')); proposal checkpoints go to rpnkit propose "
                "(model.propose())"
            )
        return self.network


def check_settings(network: nn.Module, spec: ModelSpec, short_side, max_size, num_workers, compile):
    """A ValueError naming a Predictor's setting that cannot work: a short side that is not
    an integer >= 1, a max size below ``MIN_MAX_SIZE`` (one padding block), num_workers not
    an integer >= 0 (or None), ``compile`` neither a flag nor a backend's name, class names
    that are not one per class of a classifying box head."""
    check_count("short_side", short_side)
    check_number("max_size", max_size, low=MIN_MAX_SIZE, integer=True)
    check_number("num_workers", num_workers, low=0, integer=True, optional=True)
    check_compile("compile", compile)
    check_backend("compile", compile)
    check_class_names(
        network, spec.class_names or (), where="the spec", head="the detector's box head"
    )


def check_flags(**flags) -> None:
    """A TypeError naming a Predictor's on/off setting given something else (``fold_bn="no"``
    would fold); the ones whose None means "by device" may be None."""
    by_device = ("channels_last", "decode_on_device")
    for name, value in flags.items():
        if not isinstance(value, bool) and not (value is None and name in by_device):
            rule = "True, False or None (by device)" if name in by_device else "True or False"
            raise TypeError(f"{name} must be {rule}, got {value!r}")


INTERNAL = ("self", "inputs", "transforms", "own_names", "whole")
DATA_OPTIONS = tuple(
    p for p in inspect.signature(Predictor._dataset).parameters if p not in INTERNAL
)
"""The keyword arguments of reading ``inputs`` (``Predictor._dataset``'s) that the public
methods pass on: a dataset's split, format and split file, strictness, names of images in
memory, and a CSV's image folder and class map."""


def check_call(method, inputs: Inputs, options: dict, *, called: str | None = None) -> None:
    """A TypeError naming what a Predictor's public ``method`` (or the one ``called`` that
    calls it) was given wrongly: ``inputs`` of a kind it cannot read, or keyword arguments
    (``options``) that neither it nor the dataset readers take (with those they do)."""
    name = called or method.__name__
    skip = ("self", "inputs", "data", "data_options")
    own = [p for p in inspect.signature(method).parameters if p not in skip]
    if unknown := sorted(set(options) - set(DATA_OPTIONS) - set(own)):
        raise TypeError(
            f"{name}() got unexpected keyword argument(s) {', '.join(unknown)}; it takes "
            f"{', '.join(own + list(DATA_OPTIONS))}{_limit_hint(unknown, own)}"
        )
    kinds = (str, Path, Dataset, DatasetIndex, Image.Image, np.ndarray, torch.Tensor)
    listed = isinstance(inputs, Iterable) and not isinstance(inputs, (bytes, bytearray, Mapping))
    if not (isinstance(inputs, kinds) or listed):
        raise TypeError(
            f"{name}(): inputs must be an image file, a folder or a dataset's path, a Dataset, "
            f"an image (PIL, numpy, tensor) or a list of those, got {type(inputs).__name__}"
        )


def _limit_hint(unknown: list[str], own: list[str]) -> str:
    """Why ``top`` or ``max_detections`` is refused: proposals are counted by the one,
    detections by the other (OLN's final boxes are proposals), so ``evaluate`` takes the one
    of its model's kind."""
    for given, taken in (("top", "max_detections"), ("max_detections", "top")):
        if given in unknown and taken in own:
            counted = "proposals" if taken == "top" else "detections"
            return f" (this model's results are {counted}, counted by {taken})"
    return ""


def labelled(dataset: Dataset) -> Dataset:
    """``dataset``, if it has boxes to score against: images alone (a folder, files, arrays)
    are a ``ValueError`` (their scores would be -1 and NaN, as of no ground truth)."""
    index = getattr(dataset, "index", None)
    bare = (
        index is not None and not index.class_names and not any(len(r.boxes) for r in index.records)
    )
    if isinstance(dataset, ImageList) or bare:  # a folder of images reads as boxes of none
        raise ValueError(
            "evaluation needs a labelled dataset (COCO JSON, Pascal VOC, YOLO or CSV, or a "
            "DetectionDataset): images alone have no boxes to score against"
        )
    return dataset


def slice_config(tile_size: int | None, overlap: int, full_view: bool) -> SliceConfig | None:
    """Sliced inference's settings (checked), or None without ``tile_size``."""
    if tile_size is None:
        if full_view:
            raise ValueError("full view needs a tile size (--tile-size): it adds to the tiles")
        return None
    return SliceConfig(tile_size, overlap, full_view)


def default_workers(device: torch.device) -> int:
    return min(4, os.cpu_count() or 1) if device.type == "cuda" else 0


def coco_category_ids(dataset: Dataset, class_names: Sequence[str]) -> tuple | None:
    """The category ids of a COCO JSON dataset for ``class_names``, what detections on its
    images are written with, so that they score against that JSON as they are: by position
    when the names are the JSON's own in id order (a checkpoint trained on it), else by name.
    None for other inputs, or (with a warning) when some name is not one category's: 1..K."""
    categories = getattr(getattr(dataset, "index", None), "categories", None)
    if not categories or not class_names:
        return None
    if tuple(class_names) == tuple(name for _, name in categories):
        return tuple(category for category, _ in categories)
    ids: dict[str, list] = {}
    for category, name in categories:
        ids.setdefault(name, []).append(category)
    unmatched = [name for name in class_names if len(ids.get(name, [])) != 1]
    if unmatched:
        warnings.warn(
            f"{dataset.index.source}: not one category named {', '.join(map(repr, unmatched[:3]))}"
            f"{' ...' if len(unmatched) > 3 else ''}: detections keep category_id 1..K, the "
            "checkpoint's class order",
            stacklevel=2,
        )
        return None
    return tuple(ids[name][0] for name in class_names)


def load(
    path: str | Path,
    device: torch.device | str = "auto",
    *,
    fold_bn: bool = True,
    amp: str = "none",
    short_side: int | None = None,
    max_size: int | None = None,
    num_workers: int | None = None,
    compile: bool | str = False,
    channels_last: bool | None = None,
    decode_on_device: bool | None = None,
    group_by_aspect: bool = False,
) -> Predictor:
    """A checkpoint of ``rpnkit train`` or ``rpnkit demo`` ready for inference; whether it is
    an RPN or a Faster R-CNN is read from the file. Nothing in the file is executed. Images
    are resized as in training (the size the checkpoint records; 800 and 1333 where it
    records none), unless ``short_side`` / ``max_size`` say otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load(): path must be a checkpoint file's path, got {type(path).__name__}")
    check_flags(fold_bn=fold_bn, group_by_aspect=group_by_aspect, channels_last=channels_last,
                decode_on_device=decode_on_device)  # fmt: skip
    check_backend("compile", compile)  # before the weights are read: the Predictor checks again
    device = resolve_device(device)
    network, spec, trained = load_model_and_size(path, device)
    trained = trained or (DEFAULT_SHORT_SIDE, DEFAULT_MAX_SIZE)
    short_side = trained[0] if short_side is None else short_side
    max_size = trained[1] if max_size is None else max_size
    try:  # weights that overflow (a run that had diverged) fail the fold's probe
        predictor = Predictor(
            network,
            spec,
            device=device,
            fold_bn=fold_bn,
            amp=amp,
            short_side=short_side,
            max_size=max_size,
            num_workers=num_workers,
            compile=compile,
            channels_last=channels_last,
            decode_on_device=decode_on_device,
            group_by_aspect=group_by_aspect,
        )
    except FloatingPointError as err:
        raise ValueError(f"{path}: {err}") from err
    predictor.source = Path(path)
    return predictor
