import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evtransfer.data.world import WorldSource, WorldTarget, WorldTargetConfig
from evtransfer.events import Events
from evtransfer.io.dsec import DsecEventsReader
from evtransfer.io.images import TRAINID_TO_DSEC11, read_label_png
from evtransfer.represent import histogram, tfp
from evtransfer.simulate import DvsSimulator, dvs_preset
from evtransfer.world.build import build_world, sequence_setup
from evtransfer.world.domains import preset
from evtransfer.world.render import render


def test_layout_reads_back_through_the_real_loaders(tiny_world):
    cfg = preset("tiny")
    seq = tiny_world / "target" / "seq_000"
    reader = DsecEventsReader(seq / "events/left/events.h5")
    info = reader.info()
    assert (info.width, info.height) == (cfg.width, cfg.height) and info.events > 1000
    assert info.t_end_us <= cfg.target.duration_s * 1e6
    stamps = np.loadtxt(seq / "semantic/timestamps.txt", dtype=np.int64)
    assert len(stamps) == len(list((seq / "semantic/11classes/data").glob("*.png")))
    l19 = read_label_png(seq / "semantic/19classes/data/000000.png")
    l11 = read_label_png(seq / "semantic/11classes/data/000000.png")
    np.testing.assert_array_equal(TRAINID_TO_DSEC11[l19], l11)
    data = WorldTarget(tiny_world, WorldTargetConfig(split="all", with_depth=True,
                                                     with_spikes=True, with_rgb=True))
    sample = data[3]
    ev = sample["events"]
    assert len(ev) and ev.t[0] >= sample["t_us"] - 50_000 and ev.t[-1] < sample["t_us"]
    assert sample["label"].shape == (cfg.height, cfg.width)
    assert (sample["depth"] > 0).float().mean() > 0.5
    assert len(sample["spikes"]) == cfg.spikes.frames
    src = WorldSource(tiny_world, label_space="ddd17")
    assert len(src) == cfg.source.duration_s * cfg.source_fps
    assert int(src[0]["label"].max()) <= 5


def test_splits_partition_the_target_sequences(tiny_world):
    train = WorldTarget(tiny_world, WorldTargetConfig(split="train"))
    test = WorldTarget(tiny_world, WorldTargetConfig(split="test"))
    assert {s.name for s in train.sequences}.isdisjoint({s.name for s in test.sequences})
    assert len(train) + len(test) == len(WorldTarget(tiny_world, WorldTargetConfig(split="all")))


def test_spike_clip_sees_the_scene(tiny_world):
    data = WorldTarget(tiny_world, WorldTargetConfig(split="all", with_spikes=True,
                                                     with_rgb=True, domain="target"))
    s = data[len(data) - 1]
    texture = tfp(s["spikes"], 15, 15).numpy().ravel()
    luma = (s["rgb"] * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0).numpy().ravel()
    assert np.corrcoef(texture, luma)[0, 1] > 0.8


def test_build_resumes_and_is_deterministic(tiny_world, tmp_path):
    copy = tmp_path / "world"
    shutil.copytree(tiny_world, copy)
    shutil.rmtree(copy / "target" / "seq_001")
    before = (copy / "world.yaml").stat().st_mtime_ns
    build_world(preset("tiny"), copy, progress=False)
    # reuse never rewrites world.yaml: another process may be reading it (a truncated file
    # read mid-write made parallel suites fail with "another config")
    assert (copy / "world.yaml").stat().st_mtime_ns == before
    a = DsecEventsReader(tiny_world / "target/seq_001/events/left/events.h5")
    b = DsecEventsReader(copy / "target/seq_001/events/left/events.h5")
    ea, eb = a.read_index(0, a.info().events), b.read_index(0, b.info().events)
    for key in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(getattr(ea, key), getattr(eb, key))
    with pytest.raises(ValueError, match="another config"):
        build_world(replace(preset("tiny"), seed=1), copy, progress=False)


def _clip_events(domain, i, dvs, fps=400.0, t0=0.5, duration=0.1):
    """Events of a short clip of sequence i of a small-preset domain, and its last label."""
    cfg = preset("small")
    dom = getattr(cfg, domain)
    scene, camera, light = sequence_setup(dom, cfg.seed, domain, i)
    t = torch.arange(t0, t0 + duration, 1 / fps, dtype=torch.float64)
    r = render(scene, camera, light, t, cfg.width, cfg.height)
    luma = torch.einsum("fchw,c->fhw", r.rgb, torch.tensor([0.299, 0.587, 0.114]))
    sim = DvsSimulator(dvs, cfg.height, cfg.width)
    stream = [sim.feed(luma[j:j + 1], int(round(float(t[j]) * 1e6)))[0] for j in range(len(t))]
    return Events.concatenate(stream), r.label[-1]


def _boundary_and_flat(label):
    lab = label.float()[None, None]
    edge = F.max_pool2d(lab, 3, 1, 1) != -F.max_pool2d(-lab, 3, 1, 1)
    flat = F.max_pool2d(lab, 7, 1, 3) == -F.max_pool2d(-lab, 7, 1, 3)
    return edge[0, 0], flat[0, 0]


def test_target_events_concentrate_on_label_boundaries():
    cfg = preset("small")
    on_edge = edge_px = on_flat = flat_px = 0.0
    for i in range(4):
        ev, label = _clip_events("target", i, cfg.events.dvs)
        count = histogram(ev)[0].sum(0)
        edge, flat = _boundary_and_flat(label)
        on_edge += float(count[edge].sum())
        edge_px += float(edge.sum())
        on_flat += float(count[flat].sum())
        flat_px += float(flat.sum())
    assert (on_edge / edge_px) / (on_flat / flat_px) >= 5.0


def _isolated_share(ev: Events) -> float:
    """Share of events alone in their 3 × 3 neighbourhood over the clip (background activity)."""
    count = histogram(ev)[0].sum(0)[None, None]
    around = F.conv2d(count, torch.ones(1, 1, 3, 3), padding=1) - count
    return float(((count == 1) & (around == 0)).sum()) / max(1, len(ev))


def test_target_sensor_differs_from_the_default_simulator_on_the_source():
    # the synthetic path (default simulator on source renders) vs the stored target sensor
    cfg = preset("small")
    stats = {}
    for domain, dvs in (("source", dvs_preset("clean")), ("target", cfg.events.dvs)):
        rates, isolated = [], []
        for i in range(3):
            ev, _ = _clip_events(domain, i, dvs)
            rates.append(len(ev) / (cfg.width * cfg.height) / 0.1)
            isolated.append(_isolated_share(ev))
        stats[domain] = (np.mean(rates), np.mean(isolated))
    (src_rate, src_iso), (tgt_rate, tgt_iso) = stats["source"], stats["target"]
    assert abs(np.log(tgt_rate / src_rate)) > np.log(1.3)  # rates differ by over 30 %
    assert tgt_iso > 2 * src_iso  # noise: shot noise, leak and hot pixels fire alone
