"""torch.compile: rpnkit's forward has no graph break, at inference and in a training step, for
an RPN and a Faster R-CNN, and the compiled graphs compute what eager mode does.

Backend ``aot_eager``: dynamo's capture and AOTAutograd's forward and backward graphs, run with
eager kernels, so that the suite checks the capture in seconds. Inductor's generated code is
measured, not tested, in bench/bench_export.py (on the H200).
"""

import copy
import csv
import dataclasses

import pytest
import torch

from rpnkit.data import SyntheticShapes
from rpnkit.data.batching import collate
from rpnkit.engine.device import compile_in_place
from rpnkit.modeling.pooling import pool_by_level, pool_level, pool_sorted_by_level
from rpnkit.modeling.presets import build_detector, build_model, detector_config, preset_config

BATCH = collate([SyntheticShapes(2, seed=1)[i] for i in range(2)])


def tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "rpn":
        return build_model(preset_config("tiny"))
    return build_detector(detector_config(preset_config("tiny"), 5))


def training_loss(model: torch.nn.Module) -> torch.Tensor:
    output = model(BATCH.images, BATCH.image_sizes, BATCH.targets)
    return sum(output.losses.values())


def inference(model: torch.nn.Module):
    with torch.no_grad():
        return model(BATCH.images, BATCH.image_sizes)


@pytest.mark.parametrize("kind", ["rpn", "detector"])
@pytest.mark.parametrize("mode", ["inference", "training"])
def test_the_forward_has_no_graph_break(kind, mode):
    """Anchors, matching and sampling, proposal selection with NMS, the RoI pooler, the second
    stage and the losses: one graph."""
    model = tiny(kind)
    if mode == "inference":
        explained = torch._dynamo.explain(inference)(model.eval())
    else:
        explained = torch._dynamo.explain(training_loss)(model.train())
    reasons = [r.reason.splitlines()[0] for r in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons
    assert explained.graph_count == 1


@pytest.mark.parametrize("kind", ["rpn", "detector"])
def test_compiled_inference_equals_eager(kind):
    eager = tiny(kind).eval()
    compiled = compile_in_place(copy.deepcopy(eager), "aot_eager")
    want, got = inference(eager), inference(compiled)
    for name in ("boxes", "scores", "num"):
        assert torch.equal(getattr(got.proposals, name), getattr(want.proposals, name)), name
    if kind == "detector":
        for name in ("boxes", "scores", "labels", "num"):
            assert torch.equal(getattr(got.detections, name), getattr(want.detections, name))


@pytest.mark.parametrize("kind", ["rpn", "detector"])
def test_compiled_training_step_equals_eager(kind):
    """The same losses and gradients: the backward through the opaque RoI pooler included."""
    eager = tiny(kind).train()
    compiled = compile_in_place(copy.deepcopy(eager), "aot_eager")
    losses = []
    for model in (eager, compiled):
        torch.manual_seed(1)  # the samplers draw the same anchors and RoIs
        loss = training_loss(model)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    named = dict(compiled.named_parameters())
    for name, p in eager.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(named[name].grad, p.grad, rtol=1e-4, atol=1e-6)


def _pooling_case(align: bool):
    gen = torch.Generator().manual_seed(0)
    features = [torch.randn(2, 3, 16 // s, 16 // s, generator=gen) for s in (1, 2)]
    xy = torch.rand(6, 2, generator=gen) * 10
    wh = torch.rand(6, 2, generator=gen) * 6 + 1
    rois = torch.cat([torch.tensor([0, 1, 0, 1, 1, 0.0])[:, None], xy, xy + wh], dim=1)
    levels = torch.tensor([0, 1, 1, 0, 1, 0])
    return features, rois, levels, [4, 8], 3, 2, align


@pytest.mark.parametrize("align", [True, False], ids=["roi_align", "roi_pool"])
def test_the_pooler_op_equals_the_pooler_and_its_gradient(align):
    features, rois, levels, strides, size, ratio, align = _pooling_case(align)
    torch.library.opcheck(pool_by_level, (features, rois, levels, strides, size, ratio, align))
    leaves = [f.clone().requires_grad_() for f in features]
    got = pool_by_level(leaves, rois, levels, strides, size, ratio, align)
    got.square().sum().backward()

    def pool(feature, level_rois, stride):
        return pool_level(feature, level_rois, stride, size=size, sampling_ratio=ratio, align=align)

    direct = [f.clone().requires_grad_() for f in features]
    want = pool_sorted_by_level(direct, strides, rois, levels, pool)
    want.square().sum().backward()
    assert torch.equal(got, want)
    for a, b in zip(leaves, direct):
        assert torch.equal(a.grad, b.grad)


def test_a_compiled_training_run_trains_and_saves_the_models_own_names(tmp_path, capsys):
    from safetensors import safe_open

    from rpnkit.engine.trainer import TrainConfig, train

    config = TrainConfig(steps=3, batch_size=2, optimizer="adamw", lr=1e-3, warmup_steps=1)
    losses = []
    for name, compile in (("eager", False), ("compiled", "aot_eager")):
        torch.manual_seed(0)
        model = tiny("detector")
        run = dataclasses.replace(config, compile=compile, log_every=1)
        train(model, SyntheticShapes(8, image_size=128), run, out_dir=tmp_path / name)
        with open(tmp_path / name / "train_log.csv") as f:
            losses.append([float(r["loss"]) for r in csv.DictReader(f)])
        with safe_open(tmp_path / name / "checkpoint.safetensors", "pt") as f:
            keys = set(f.keys())
        assert keys and not any("_orig_mod" in k for k in keys)
    assert len(losses[1]) == 3
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-4, atol=0)
    assert capsys.readouterr().out.count("torch.compile: the first steps compile") == 1
    with pytest.raises(ValueError, match=r"TrainConfig\.compile"):
        TrainConfig(compile="")


def test_the_command_line_turns_compilation_on(capsys, monkeypatch):
    from rpnkit.cli import build_parser, main
    from rpnkit.cli.options import load_runtime
    from rpnkit.engine import runtime

    assert main(["train", "--print-config", "--preset", "tiny", "--compile"]) == 0
    assert "compile: true" in capsys.readouterr().out
    seen = {}
    monkeypatch.setattr(runtime, "load", lambda *args, **kwargs: seen.update(kwargs))
    for argv in (["propose", "x.jpg"], ["detect", "x.jpg"], ["eval", "--data", "d"]):
        for flag, want in (([], False), (["--compile"], True)):
            load_runtime(build_parser().parse_args([*argv, "--checkpoint", "c", *flag]))
            assert seen.pop("compile") is want, argv
