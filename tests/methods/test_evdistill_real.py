"""EvDistill on real-data layouts never trains on target labels: poisoned target labels (the
event frames' of the train split and every test label) leave the trained student bit-identical,
on EvDistill's DDD17 / MVSEC layout and on N-Caltech101. Tiny budgets and sizes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from evtransfer.data.caltech import CaltechConfig, load_caltech_recognition
from evtransfer.data.event_aps import EventApsConfig, load_event_aps
from evtransfer.data.recognition import NCaltech101Config
from evtransfer.data.transfer import EventInput
from evtransfer.engine.fit import FitConfig
from evtransfer.io.images import write_label_png
from evtransfer.methods.evdistill import (
    DistillLosses,
    EvdistillConfig,
    RecognitionConfig,
    RecognitionRun,
    run_recognition,
    train_evdistill,
    train_evdistill_recognition,
)
from tests.data.test_caltech import poison_recordings, write_caltech

FIT = FitConfig(steps=1, batch=2, warmup_steps=0, ckpt_every=0, log_every=1)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- DDD17 / MVSEC: images/<split>/<name>.png = event image | APS frame ----------------------
@pytest.fixture()
def event_aps(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, n in (("train", 4), ("test", 2)):
        for sub in ("images", "labels"):
            (root / sub / split).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{k}.png")
            write_label_png(root / "labels" / split / f"{k}.png",
                            rng.integers(0, 6, (32, 32), dtype=np.uint8))
    return root


def _poison_labels(root, names: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name in names:
        write_label_png(root / "labels" / name, rng.integers(0, 6, (32, 32), dtype=np.uint8))


def _train_on(root, work) -> torch.nn.Module:
    cfg = EvdistillConfig(joint=FIT, losses=DistillLosses(), translator_channels=4)
    cfg.stages = replace(cfg.stages, source=FIT, source_gray=False)
    train, _ = load_event_aps(EventApsConfig(root=str(root), size=(32, 32)))
    return train_evdistill(train, cfg, work, seed=0, progress=False).network


def test_poisoned_target_labels_leave_the_ddd17_student_bit_identical(event_aps, tmp_path):
    clean = _train_on(event_aps, tmp_path / "clean")
    # train frames 2, 3 are the target half (source_fraction 0.5); then every test label
    _poison_labels(event_aps, ["train/2.png", "train/3.png", "test/0.png", "test/1.png"], 1)
    assert _same_weights(_train_on(event_aps, tmp_path / "poisoned"), clean)
    # the check can fail: a poisoned source label changes the teacher and so the student
    _poison_labels(event_aps, ["train/0.png"], 2)
    assert not _same_weights(_train_on(event_aps, tmp_path / "source"), clean)


# --- N-Caltech101 recognition -----------------------------------------------------------
@pytest.fixture()
def caltech(tmp_path):
    return write_caltech(tmp_path)


def _caltech_cfg(caltech) -> CaltechConfig:
    events, images = caltech
    return CaltechConfig(str(events), str(images), NCaltech101Config(train_fraction=2 / 3),
                         EventInput(kind="histogram", normalize=False), size=(16, 16))


def _recognition_cfg() -> RecognitionConfig:
    return RecognitionConfig(teacher=FIT, source_only=FIT, joint=FIT, translator_channels=4)


def test_poisoned_event_labels_leave_the_caltech_student_bit_identical(caltech, tmp_path,
                                                                       monkeypatch):
    pytest.importorskip("evtransfer.io.nmnist")
    train, _ = load_caltech_recognition(_caltech_cfg(caltech))
    clean = train_evdistill_recognition(train, _recognition_cfg(), tmp_path / "clean",
                                        progress=False).network
    poison_recordings(monkeypatch)
    poisoned, _ = load_caltech_recognition(_caltech_cfg(caltech))
    again = train_evdistill_recognition(poisoned, _recognition_cfg(), tmp_path / "poisoned",
                                        progress=False).network
    assert _same_weights(again, clean)


def test_caltech_run_scores_the_test_labels_it_is_given(caltech, tmp_path, monkeypatch):
    """The run end to end; with every recording's label flipped (two classes) its top-1 on
    the two test recordings becomes 100 − the clean top-1 (the trained stages are reused:
    the test labels reach the scores, and only them)."""
    pytest.importorskip("evtransfer.io.nmnist")
    run = RecognitionRun(dataset="ncaltech101", ncaltech=_caltech_cfg(caltech),
                         method=_recognition_cfg(), seeds=[0])
    clean = run_recognition(run, tmp_path / "clean", progress=False)
    assert set(clean["top1"]) == {"evdistill", "supervised_events"}
    assert clean["test_crops"] == 2 and clean["classes"] == ["accordion", "airplanes"]
    poison_recordings(monkeypatch)  # the same folder: the trained stages are reused
    poisoned = run_recognition(run, tmp_path / "clean", progress=False)
    assert poisoned["top1"]["evdistill"] == [100.0 - clean["top1"]["evdistill"][0]]
