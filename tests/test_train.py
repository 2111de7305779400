import contextlib
import csv
import dataclasses
import logging

import pytest
import torch

from rpnkit.data import SyntheticShapes
from rpnkit.engine.checkpoint import load_checkpoint
from rpnkit.engine.run_log import logged_validations
from rpnkit.engine.trainer import BEST_FILE, TrainConfig, Trainer, lr_factor, train
from rpnkit.modeling.presets import build_model, preset_config

FAST = TrainConfig(steps=4, batch_size=2, optimizer="adamw", lr=1e-3, warmup_steps=2, log_every=1)


def _losses(tmp_path, name, config=FAST):
    torch.manual_seed(0)
    model = build_model(preset_config("tiny"))
    train(
        model,
        SyntheticShapes(16, image_size=128),
        config,
        out_dir=tmp_path / name,
        progress=False,
    )
    with open(tmp_path / name / "train_log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_runs_are_reproducible_from_the_seed(tmp_path):
    first, second = _losses(tmp_path, "a"), _losses(tmp_path, "b")
    assert len(first) == 4 and first == second
    assert (tmp_path / "a" / "checkpoint.safetensors").is_file()


def test_log_records_the_learning_rate_each_step_trained_at(tmp_path):
    _losses(tmp_path, "lr")
    with open(tmp_path / "lr" / "train_log.csv") as f:
        rates = [(int(r["step"]), float(r["lr"])) for r in csv.DictReader(f)]
    assert [rate for _, rate in rates] == [
        pytest.approx(FAST.lr * lr_factor(step - 1, FAST)) for step, _ in rates
    ]  # step 1 at the warm-up's first rate, not step 2's
    assert rates[0][1] < rates[1][1]


def test_log_steps_count_steps_done_as_checkpoints_and_validations_do(tmp_path):
    # every 3rd step logged, at 3 and 6 (not 0-based 0, 3, 6: steps 1, 4, 7), with the first
    # step (early feedback) and the last; a resumed run logs its first step too
    data, seen = SyntheticShapes(4, image_size=64), []
    config = dataclasses.replace(FAST, steps=7, log_every=3)
    train(build_model(preset_config("tiny")), data, config, out_dir=tmp_path / "a",
          progress=False, on_step=lambda step, row: seen.append(step))  # fmt: skip
    with open(tmp_path / "a" / "train_log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == seen == [1, 3, 6, 7]
    short = dataclasses.replace(config, steps=4)
    train(build_model(preset_config("tiny")), data, short, out_dir=tmp_path / "b", progress=False)
    train(build_model(preset_config("tiny")), data, config, out_dir=tmp_path / "b",
          progress=False, resume=tmp_path / "b" / "checkpoint.safetensors")  # fmt: skip
    with open(tmp_path / "b" / "train_log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 3, 4, 5, 6, 7]


def test_log_records_the_gradient_norm_before_clipping(tmp_path):
    config = dataclasses.replace(FAST, grad_clip=1e-6)  # clips every step
    _losses(tmp_path, "clip", config)
    with open(tmp_path / "clip" / "train_log.csv") as f:
        norms = [float(r["grad_norm"]) for r in csv.DictReader(f)]
    assert len(norms) == 4 and all(n > 1e-6 for n in norms)  # before clipping, not after


def test_diverging_loss_stops_with_step_images_and_terms(tmp_path):
    model = build_model(preset_config("tiny"))
    calls = {"n": 0}
    original = model.rpn.forward

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # the third step diverges
            out.losses["loss_rpn_box"] = out.losses["loss_rpn_box"] * float("nan")
        return out

    model.rpn.forward = poisoned
    with pytest.raises(FloatingPointError) as err:
        train(
            model,
            SyntheticShapes(16, image_size=128),
            FAST,
            out_dir=tmp_path,
            progress=False,
        )
    message = str(err.value)
    assert "diverged at step 2" in message
    assert "loss_rpn_box=nan" in message and "loss_objectness=" in message
    assert "shapes-0-" in message  # the file names of the batch


def test_schedules():
    cfg = TrainConfig(steps=100, warmup_steps=10, schedule="step", milestones=(0.5, 0.8))
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(20, cfg) == 1.0
    assert lr_factor(60, cfg) == pytest.approx(0.1)
    assert lr_factor(90, cfg) == pytest.approx(0.01)
    cos = TrainConfig(steps=100, warmup_steps=0, schedule="cosine")
    assert lr_factor(0, cos) == 1.0 and lr_factor(50, cos) == pytest.approx(0.5)


def test_resume_continues_exactly(tmp_path):
    # One 6-step run, against a 6-step run killed during step 4 and resumed from its step-3
    # checkpoint: the losses of steps 3-5 must be equal (weights, optimizer, scheduler, RNG and
    # the position in the data all restored).
    config = TrainConfig(
        steps=6,
        batch_size=2,
        optimizer="sgd",
        lr=0.01,
        warmup_steps=2,
        log_every=1,
        checkpoint_every=3,
    )
    data = SyntheticShapes(5, image_size=96)  # 5 images, batches of 2: epochs wrap mid-batch

    def run(name, resume=None, kill_at=None):
        torch.manual_seed(0)
        model = build_model(preset_config("tiny"))

        def killer(step, row):
            if step == kill_at:
                raise KeyboardInterrupt

        with contextlib.suppress(KeyboardInterrupt):
            train(
                model,
                data,
                config,
                out_dir=tmp_path / name,
                progress=False,
                resume=resume,
                on_step=killer,
            )
        with open(tmp_path / name / "train_log.csv") as f:
            return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}  # last wins

    whole = run("whole")
    killed = run("part", kill_at=4)
    assert killed == {k: whole[k] for k in range(1, 5)}
    resumed = run("part", resume=tmp_path / "part" / "checkpoint.safetensors")
    assert sorted(resumed) == list(range(1, 7))  # the log continues
    for k in range(4, 7):
        assert resumed[k] == whole[k], k


def test_ddp_broadcasts_buffers_only_where_they_can_drift_between_processes():
    from torch import nn

    from rpnkit.engine.distributed import buffers_drift, ddp_buffer_options
    from rpnkit.modeling.presets import without_pretrained_weights

    frozen = build_model(without_pretrained_weights(preset_config("effnet-lite0-fpn")))
    assert not buffers_drift(frozen)  # frozen norms and the pixel constants never change
    assert buffers_drift(build_model(preset_config("tiny")))  # its batch norms learn
    norm = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    assert buffers_drift(norm)
    assert not buffers_drift(nn.SyncBatchNorm.convert_sync_batchnorm(norm))  # the whole batch's
    assert not buffers_drift(nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False)))
    counter = nn.Module()
    counter.register_buffer("seen", torch.zeros(()))  # a custom buffer: kept in step
    assert buffers_drift(nn.Sequential(frozen, counter))
    assert list(ddp_buffer_options(frozen).values()) == [False]


def test_under_torchrun_only_rank_0_reports_what_every_process_reads(monkeypatch, capsys):
    import warnings

    from rpnkit.data.records import DataNote, SkippedSample
    from rpnkit.engine.fit import _reported_by_rank_0

    def read():
        print("160 images, 1 class")
        warnings.warn("skipped x.jpg: no such file", SkippedSample, stacklevel=1)
        warnings.warn("x.json: 1 image(s) of another size", DataNote, stacklevel=1)
        warnings.warn("something else", RuntimeWarning, stacklevel=1)

    for rank, expected in (("0", 3), ("1", 1)):
        monkeypatch.setenv("RANK", rank)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with _reported_by_rank_0():
                read()
        printed = capsys.readouterr().out
        assert ("160 images" in printed) == (rank == "0")
        assert len(caught) == expected  # rank 1 still warns of what is not about the data


def test_a_run_folder_is_never_mixed_with_an_earlier_run(tmp_path, monkeypatch):
    from rpnkit.engine.run_folder import clear_for_new_run, run_folder

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert str(run_folder(None, None)) == "runs/train"
    old = tmp_path / "runs" / "train"
    (old / "tensorboard").mkdir(parents=True)
    for name in ("checkpoint.safetensors", "split.json", "metrics.json", "notes.txt"):
        (old / name).write_text("x")
    assert str(run_folder(None, None)) == "runs/train2"  # the next free one, the old kept
    assert run_folder(None, "elsewhere/checkpoint.safetensors").name == "elsewhere"  # resumed
    with pytest.raises(
        ValueError, match=r"holds a run already \(checkpoint.safetensors\).*--resume"
    ):
        clear_for_new_run(old, overwrite=False)
    assert (old / "split.json").exists()  # refused: nothing removed
    (old / "step1_proposals.json").write_text("x")
    clear_for_new_run(old, overwrite=True, keep=[old / "step1_proposals.json"])
    left = sorted(p.name for p in old.iterdir())
    assert left == ["notes.txt", "step1_proposals.json"]  # the user's file, the kept input
    (old / "split.json").write_text("x")  # an earlier run that never trained: no checkpoint
    clear_for_new_run(old, overwrite=False)
    assert not (old / "split.json").exists()  # not read as the new run's
    (old / "train_log.csv").write_text("x")  # one interrupted before its first checkpoint
    with pytest.raises(ValueError, match=r"\(train_log.csv\): write elsewhere with --out \(out="):
        clear_for_new_run(old, overwrite=False)  # no --resume of a file that is not there


def test_a_time_budget_paces_the_schedule_to_end_with_it(tmp_path, monkeypatch):
    from rpnkit.engine import trainer as trainer_module

    config = TrainConfig(steps=100, warmup_steps=10, lr=0.1, schedule="cosine")
    model, data = build_model(preset_config("tiny")), SyntheticShapes(4, image_size=64)
    budgeted = Trainer(model, data, config, out_dir=tmp_path, time_budget_s=60.0)
    budgeted.started = 1000.0
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: 1030.0)  # half the budget
    assert budgeted._scheduled(3) == 50.0  # 3 steps done, half the time spent: mid-schedule
    assert budgeted._scheduled(70) == 70  # ahead of the clock: the steps lead
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: 1090.0)  # past the budget
    assert budgeted._scheduled(3) == 100.0 and lr_factor(100.0, config) == 0.0  # decayed
    plain = Trainer(model, data, config, out_dir=tmp_path)
    plain.started = 1000.0
    assert plain._scheduled(3) == 3  # no budget: the steps alone
    budgeted._set_up()  # the optimizer's learning rate follows it, through the scheduler
    budgeted.started = 1000.0
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: 1030.0)
    budgeted.scheduler.step()  # step 1, half the budget spent: at step 50 of 100
    assert budgeted.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(50, config))
    # a resumed run goes on from the seconds its checkpoint recorded: 30 of 60 spent
    budgeted.checkpoint(5)
    saved = tmp_path / "checkpoint.safetensors"
    resumed = Trainer(model, data, config, out_dir=tmp_path, time_budget_s=60.0, resume=saved)
    resumed._set_up()
    resumed.started = 2000.0
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: 2015.0)
    assert resumed._scheduled(5) == 75.0 and not resumed._out_of_time()  # 45 s of 60
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: 2031.0)
    assert resumed._out_of_time()  # 61 s in all, not 31


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": "10"}, r"steps must be an integer >= 1, got '10'"),
        ({"steps": True}, r"steps must be an integer >= 1, got True"),
        ({"lr": "0.01"}, r"lr must be a number > 0, got '0.01'"),
        ({"lr": float("nan")}, r"lr must be a number > 0"),
        ({"momentum": 1.0}, r"momentum must be below 1"),
        ({"grad_clip": 0}, r"grad_clip must be a number > 0 or None"),
        ({"milestones": (0.5, 2)}, r"milestones must be fractions of steps in \[0, 1\]"),
        ({"sync_bn": 1}, r"sync_bn must be True or False, got 1"),
        ({"channels_last": "yes"}, r"channels_last must be True, False or None"),
        ({"compile": ""}, r"compile must be True, False or a backend's name"),
        ({"amp": "fp8"}, r"amp must be one of 'none', 'bf16', 'fp16', got 'fp8'"),
    ],
)
def test_a_train_config_field_of_the_wrong_type_or_range_is_named(changes, message):
    with pytest.raises(ValueError, match=f"TrainConfig.{message}"):
        TrainConfig(**changes)


def test_a_train_config_takes_milestones_as_a_list_and_keeps_a_tuple():
    config = TrainConfig(milestones=[0.5, 0.75])
    assert config.milestones == (0.5, 0.75) and hash(config) == hash(
        TrainConfig(milestones=(0.5, 0.75))
    )


def test_an_interrupted_run_says_which_checkpoint_it_leaves(tmp_path, capsys):
    config = TrainConfig(steps=6, batch_size=2, warmup_steps=0, checkpoint_every=2, log_every=1)
    seen = []

    def interrupt(step, losses):  # Ctrl-C after the 4th step's log row
        seen.append(step)
        if step == 4:
            raise KeyboardInterrupt

    trainer = Trainer(build_model(preset_config("tiny")), SyntheticShapes(4, image_size=64),
                      config, out_dir=tmp_path, progress=False, on_step=interrupt)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    path = tmp_path / "checkpoint.safetensors"
    assert (
        f"interrupted after 4 steps: resume from step 2: --resume {path}" in capsys.readouterr().out
    )


def test_the_best_evaluation_keeps_its_weights_across_a_resume(tmp_path, caplog):
    pytest.importorskip("tensorboard")
    # scores chosen per call: 0.2 at step 2, 0.5 at 4, 0.3 at 6 (the end), then 0.4 at 8
    scores = iter([0.2, 0.5, 0.3, 0.4])
    seen = {}

    def evaluate(model):
        value = next(scores)
        seen[value] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"AR@100": value, "AR@1000": value}

    model = build_model(preset_config("tiny"))
    data = SyntheticShapes(8, image_size=96)
    config = TrainConfig(steps=6, batch_size=2, num_workers=0, warmup_steps=0, eval_every=2,
                         checkpoint_every=0)  # fmt: skip
    summary = train(model, data, config, out_dir=tmp_path, progress=False, evaluate=evaluate)
    assert summary.evaluated_at == 6 and summary.evaluation["AR@1000"] == 0.3
    assert summary.best == {"metric": "AR@1000", "value": 0.5, "step": 4,
                            "file": tmp_path / BEST_FILE}  # fmt: skip
    best = load_checkpoint(tmp_path / BEST_FILE)
    assert best["step"] == 4 and best["run"].best["value"] == 0.5
    assert all(torch.equal(best["model"][k], v) for k, v in seen[0.5].items())
    # resumed for 2 more steps: 0.4 is below the recorded best, which stays
    longer = TrainConfig(**{**config.__dict__, "steps": 8})
    summary = train(build_model(preset_config("tiny")), data, longer, out_dir=tmp_path,
                    progress=False, evaluate=evaluate,
                    resume=tmp_path / "checkpoint.safetensors")  # fmt: skip
    assert summary.evaluated_at == 8 and summary.best["step"] == 4
    assert load_checkpoint(tmp_path / BEST_FILE)["step"] == 4
    assert "optimizer" not in load_checkpoint(tmp_path / BEST_FILE)  # a model, not a run
    # every validation stays in the events, that of the resumed step (6) too, once
    with caplog.at_level(logging.INFO):
        logged = logged_validations(tmp_path)
    assert "out of order" not in caplog.text  # the purge is no news to the reader
    history = {step: row["AR@1000"] for step, row in logged.items()}
    assert history == pytest.approx({2: 0.2, 4: 0.5, 6: 0.3, 8: 0.4})


def test_a_best_measured_on_other_data_is_not_carried_and_one_evaluation_keeps_none(tmp_path):
    scores = iter([0.9, 0.1, 0.2])
    data = SyntheticShapes(8, image_size=96)

    def evaluate(model):
        value = next(scores)
        return {"AR@1000": value}

    config = TrainConfig(steps=2, batch_size=2, num_workers=0, warmup_steps=0, eval_every=2)
    settings = {"data": {"val_data": "a"}, "train": {}}
    train(build_model(preset_config("tiny")), data, config, out_dir=tmp_path, progress=False,
          evaluate=evaluate, settings=settings)  # fmt: skip
    assert load_checkpoint(tmp_path / BEST_FILE)["run"].best["value"] == 0.9
    # resumed with other validation data: 0.9 was measured on 'a', so 0.1 on 'b' is the best
    longer = TrainConfig(**{**config.__dict__, "steps": 4})
    other = {"data": {"val_data": "b"}, "train": {}}
    summary = train(build_model(preset_config("tiny")), data, longer, out_dir=tmp_path,
                    progress=False, evaluate=evaluate, settings=other,
                    resume=tmp_path / "checkpoint.safetensors")  # fmt: skip
    assert summary.best["value"] == 0.1 and summary.best["step"] == 4
    # validated only after the last step: that is the final checkpoint, no copy of it
    once = TrainConfig(**{**config.__dict__, "eval_every": 0})
    summary = train(build_model(preset_config("tiny")), data, once, out_dir=tmp_path / "once",
                    progress=False, evaluate=evaluate)  # fmt: skip
    assert summary.evaluation == {"AR@1000": 0.2} and summary.best is None
    assert not (tmp_path / "once" / BEST_FILE).exists()


def test_ctrl_c_in_the_final_validation_says_the_training_is_done(tmp_path, capsys):
    def interrupted(model):
        raise KeyboardInterrupt

    config = TrainConfig(steps=2, batch_size=2, num_workers=0, warmup_steps=0)
    with pytest.raises(KeyboardInterrupt):
        train(build_model(preset_config("tiny")), SyntheticShapes(4, image_size=96), config,
              out_dir=tmp_path, progress=False, evaluate=interrupted)  # fmt: skip
    checkpoint = tmp_path / "checkpoint.safetensors"
    assert load_checkpoint(checkpoint)["step"] == 2
    assert (f"training finished ({checkpoint}); its final validation was interrupted: rpnkit "
            f"eval --checkpoint {checkpoint}") in capsys.readouterr().out  # fmt: skip


def test_a_run_resumed_with_more_steps_trains_at_its_new_schedules_rate(tmp_path):
    data = SyntheticShapes(4, image_size=96)
    config = TrainConfig(steps=4, batch_size=2, num_workers=0, warmup_steps=0, log_every=1)
    train(build_model(preset_config("tiny")), data, config, out_dir=tmp_path, progress=False)
    longer = TrainConfig(**{**config.__dict__, "steps": 8})
    train(build_model(preset_config("tiny")), data, longer, out_dir=tmp_path, progress=False,
          resume=tmp_path / "checkpoint.safetensors")  # fmt: skip
    with open(tmp_path / "train_log.csv") as f:
        rates = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(f)}
    # the old schedule ended at 0 after step 4; the new one is at half way at step 5
    for step in range(5, 9):  # steps done, as logged: step k trained at lr_factor(k - 1)
        assert rates[step] == pytest.approx(config.lr * lr_factor(step - 1, longer)), step
    assert rates[5] > 0.45 * config.lr


def test_a_resumed_run_whose_time_budget_is_spent_takes_no_step(tmp_path, capsys):
    pytest.importorskip("tensorboard")  # where the validation at step 2 is found again
    data = SyntheticShapes(4, image_size=96)
    config = TrainConfig(steps=6, batch_size=2, num_workers=0, warmup_steps=0, log_every=1,
                         checkpoint_every=2, eval_every=2)  # fmt: skip
    model = build_model(preset_config("tiny"))
    validated = []

    def evaluate(model):
        validated.append(len(validated))
        return {"AR@1000": 0.5}

    def stop_at_2(step, row):
        if step == 3:  # logged after the checkpoint and validation of 2 steps
            raise KeyboardInterrupt

    with contextlib.suppress(KeyboardInterrupt):
        train(model, data, config, out_dir=tmp_path, progress=False, on_step=stop_at_2,
              evaluate=evaluate)  # fmt: skip
    checkpoint = tmp_path / "checkpoint.safetensors"
    spent = load_checkpoint(checkpoint)["run"].seconds
    summary = train(build_model(preset_config("tiny")), data, config, out_dir=tmp_path,
                    progress=False, resume=checkpoint, time_budget_s=spent / 2,
                    evaluate=evaluate)  # fmt: skip
    assert summary.steps == 2 and summary.resumed_at == 2
    assert validated == [0]  # the weights of step 2 were validated before: not again
    # ... and that validation, as logged, is the run's to report
    assert summary.evaluation == {"AR@1000": 0.5} and summary.evaluation_read_back
    assert summary.evaluated_at == 2
    # resumed with other validation data: the logged figures are not of it, validated anew
    other = {"data": {"val_data": "elsewhere"}}
    summary = train(build_model(preset_config("tiny")), data, config, out_dir=tmp_path,
                    progress=False, resume=checkpoint, time_budget_s=spent / 2,
                    evaluate=evaluate, settings=other)  # fmt: skip
    assert validated == [0, 1] and not summary.evaluation_read_back
    out = capsys.readouterr().out
    assert "step 2: the time budget is spent" in out and "a larger --time-budget" in out
    with open(tmp_path / "train_log.csv") as f:  # the resumed run logged nothing new
        assert max(int(r["step"]) for r in csv.DictReader(f)) <= 2


def test_a_resumed_budgeted_run_paces_its_first_step_and_keeps_its_budget(tmp_path):
    data = SyntheticShapes(4, image_size=96)
    config = TrainConfig(steps=12, batch_size=2, num_workers=0, warmup_steps=0, log_every=1,
                         checkpoint_every=2)  # fmt: skip

    def stop_at_2(step, row):
        if step == 3:  # the step after the checkpoint of 2 steps
            raise KeyboardInterrupt

    with contextlib.suppress(KeyboardInterrupt):
        train(build_model(preset_config("tiny")), data, config, out_dir=tmp_path,
              progress=False, on_step=stop_at_2, time_budget_s=1e6)  # fmt: skip
    checkpoint = tmp_path / "checkpoint.safetensors"
    run = load_checkpoint(checkpoint)["run"]
    assert run.time_budget_s == 1e6  # kept for the resumed run (fit reads it)
    # a third of the budget spent: the first resumed step trains at step 4's rate or later
    # in the 12-step schedule, not at step 2's
    budget = run.seconds * 3
    train(build_model(preset_config("tiny")), data, config, out_dir=tmp_path, progress=False,
          resume=checkpoint, time_budget_s=budget)  # fmt: skip
    with open(tmp_path / "train_log.csv") as f:
        rates = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(f)}
    assert rates[3] <= config.lr * lr_factor(4, config) + 1e-12  # the first resumed step
    assert rates[3] < config.lr * lr_factor(2, config)


def test_a_warm_up_longer_than_the_run_says_the_peak_rate_it_reaches(tmp_path):
    config = TrainConfig(steps=30, warmup_steps=200, lr=0.01, batch_size=2, num_workers=0)
    rates = [0.01 * lr_factor(step, config) for step in range(30)]
    with pytest.warns(UserWarning, match=rf"\(at most {max(rates):.3g}\)"):
        Trainer(build_model(preset_config("tiny")), SyntheticShapes(2), config, out_dir=tmp_path)
    assert max(rates) < 0.01 * 30 / 200  # the cosine decays during the warm-up too


def test_fit_takes_paths_and_numpy_numbers_and_saves_them_plain(tmp_path):
    import numpy as np
    import yaml
    from conftest import RACCOON

    from rpnkit import DataConfig, fit

    data = DataConfig(data=RACCOON / "train_labels.csv", images=RACCOON / "images",
                      short_side=np.int64(96), max_size=128)  # fmt: skip
    assert (data.data, data.short_side) == (str(RACCOON / "train_labels.csv"), 96)
    assert type(data.short_side) is int
    train = TrainConfig(steps=np.int64(1), batch_size=2, num_workers=0, warmup_steps=0,
                        lr=np.float32(0.01))  # fmt: skip
    assert (type(train.steps), type(train.lr)) == (int, float)
    run = fit(data, model="tiny", train=train, out=tmp_path / "run", progress=False)
    record = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert record["data"]["images"] == str(RACCOON / "images") and record["train"]["steps"] == 1
    assert run.summary.steps == 1


def test_fit_names_a_wrong_kind_for_a_detector_config_or_checkpoint(tmp_path):
    from conftest import RACCOON

    from rpnkit import DataConfig, fit
    from rpnkit.modeling.presets import DetectorConfig, detector_config

    detector = detector_config(preset_config("tiny"), num_classes=1)
    with pytest.raises(ValueError, match="model kind must be 'rpn' or 'faster-rcnn', got 'rcnn'"):
        fit("unread", kind="rcnn", model=detector)
    assert isinstance(detector, DetectorConfig)
    data = DataConfig(data=str(RACCOON / "train_labels.csv"), images=str(RACCOON / "images"),
                      short_side=96, max_size=128)  # fmt: skip
    train = TrainConfig(steps=1, batch_size=2, num_workers=0, warmup_steps=0)
    run = fit(data, model=detector, train=train, out=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"a faster-rcnn checkpoint resumes as one \(--model"):
        fit(data, kind="rpn", train=train, resume=run.checkpoint)


def test_validations_without_gt_keep_no_best(tmp_path):
    # validation images without boxes: AP -1 (pycocotools' no GT) every time, once kept as
    # the "best" and printed "best validation: AP -1.000"
    data = SyntheticShapes(4, image_size=96)
    config = TrainConfig(steps=4, batch_size=2, num_workers=0, warmup_steps=0, eval_every=2)
    summary = train(build_model(preset_config("tiny")), data, config, out_dir=tmp_path,
                    progress=False, evaluate=lambda model: {"AP": -1.0})  # fmt: skip
    assert summary.best is None and not (tmp_path / BEST_FILE).exists()
