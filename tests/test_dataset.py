"""The dataset build end to end on a few real takes, its split, the file format and the CLI's error paths."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from dposer_ros.cli import main
from dposer_ros.dataset.poses import PARTS, load_dataset, save_dataset
from dposer_ros.dataset.split import SPLITS, split_takes

MOCAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mocap"
needs_mocap = pytest.mark.skipif(not MOCAP.is_dir(), reason=f"{MOCAP} not present (CI keeps shared/ beside the repo)")


def test_split_is_by_take_deterministic_and_covers_every_source():
    takes = [f"a/{i}" for i in range(40)] + [f"b/{i}" for i in range(3)] + [f"c/{i}" for i in range(200)]
    sources = [t.split("/")[0] for t in takes]
    first = split_takes(takes, sources, 0.1, 0.1, "salt")
    assert first == split_takes(takes, sources, 0.1, 0.1, "salt")
    assert first != split_takes(takes, sources, 0.1, 0.1, "other salt")
    for s in "abc":
        assert {sp for sp, src in zip(first, sources) if src == s} == set(SPLITS)
    c = [sp for sp, src in zip(first, sources) if src == "c"]
    assert 0.03 < c.count("test") / len(c) < 0.2
    # adding a source does not move the takes of the others
    more = split_takes(takes + ["d/0", "d/1", "d/2"], sources + ["d"] * 3, 0.1, 0.1, "salt")
    assert more[: len(takes)] == first
    with pytest.raises(ValueError, match="has 2 takes; at least 3"):
        split_takes(["x/0", "x/1"], ["x", "x"], 0.1, 0.1, "salt")


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    if not MOCAP.is_dir():
        pytest.skip(f"{MOCAP} not present (CI keeps shared/ beside the repo)")
    tmp = tmp_path_factory.mktemp("build")
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "data" / "build.yaml").read_text())
    config["sources"] = ["bandai", "cmu", "manipnet_hands"]
    config["segment_frames"] = 60
    (tmp / "build.yaml").write_text(yaml.safe_dump(config))
    out = tmp / "poses.npz"
    code = main(["data", "build", "--mocap-dir", str(MOCAP), "--config", str(tmp / "build.yaml"), "--out", str(out),
                 "--max-takes", "3"])
    assert code == 0
    return out


@needs_mocap
def test_build_writes_a_valid_dataset_and_a_picture(small_build):
    data = load_dataset(small_build)
    assert small_build.with_suffix(".png").stat().st_size > 10_000
    assert data.meta["sources"] == ["bandai", "cmu", "manipnet_hands"] and data.meta["fps"] == 30
    assert len(data) > 500 and np.isfinite(data.pose).all()
    body = data.part_mask[:, PARTS.index("body")]
    hands = data.part_mask[:, [PARTS.index("left_hand"), PARTS.index("right_hand")]]
    assert body.any() and hands.all(axis=1).any() and not data.part_mask[:, PARTS.index("face")].any()
    assert np.all(data.pose[body][:, 25:] == 0) and np.all(data.pose[~body][:, :22] == 0)
    for split in SPLITS:
        sources = set(data.source[data.split_mask(split)])
        assert sources == {0, 1, 2}, (split, sources)
    assert (data.fit_error_mm <= data.meta["config"]["max_fit_error_mm"]).all()
    reports = {r["source"]: r for r in data.meta["reports"]}
    assert reports["bandai"]["fit_error_mm"]["mean"] < 10 and "CC BY-NC" in data.meta["licences"]["bandai"]


def test_bad_dataset_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dposer data build"):
        load_dataset(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable dposer dataset"):
        load_dataset(tmp_path / "junk.npz")
    good = {"pose": np.zeros((2, 55, 3), np.float32), "transl": np.zeros((2, 3), np.float32),
            "part_mask": np.zeros((2, 4), bool), "source": np.zeros(2, np.int16), "take": np.zeros(2, np.int32),
            "frame": np.zeros(2, np.int32), "fit_error_mm": np.zeros(2, np.float32)}
    save_dataset(tmp_path / "ok.npz", good, {"take_split": ["train"]})
    assert len(load_dataset(tmp_path / "ok.npz")) == 2
    save_dataset(tmp_path / "bad.npz", {**good, "pose": np.zeros((2, 54, 3), np.float32)}, {})
    with pytest.raises(ValueError, match="field pose"):
        load_dataset(tmp_path / "bad.npz")
    save_dataset(tmp_path / "nan.npz", {**good, "pose": np.full((2, 55, 3), np.nan, np.float32)}, {})
    with pytest.raises(ValueError, match="NaN"):
        load_dataset(tmp_path / "nan.npz")


def test_cli_reports_bad_input_and_exits_non_zero(tmp_path, capsys):
    assert main(["data", "build", "--mocap-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "--mocap-dir should point at shared/data/mocap" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [bandai, kinect]\n")
    assert main(["data", "build", "--config", str(bad), "--out", str(tmp_path / "x.npz")]) == 2
    assert "unknown sources ['kinect']" in capsys.readouterr().err
    bad.write_text("fsp: 30\n")
    assert main(["data", "build", "--config", str(bad), "--out", str(tmp_path / "x.npz")]) == 2
    assert "unknown settings ['fsp']" in capsys.readouterr().err
    bad.write_text("drop_targets: {hdm05: [left_elbow, left_toe]}\n")
    assert main(["data", "build", "--config", str(bad), "--out", str(tmp_path / "x.npz")]) == 2
    assert "does not map: ['left_toe']" in capsys.readouterr().err
    bad.write_text("drop_targets: {kinect: [left_elbow]}\n")
    assert main(["data", "build", "--config", str(bad), "--out", str(tmp_path / "x.npz")]) == 2
    assert "unknown source 'kinect'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "frobnicate"])
    assert exit_info.value.code == 2


@needs_mocap
def test_training_runs_resumes_and_writes_a_loadable_prior(small_build, tmp_path):
    from dposer_ros.prior.model import PosePrior
    from dposer_ros.prior.train import TrainConfig, train

    cfg = TrainConfig.from_yaml(Path(__file__).resolve().parents[1] / "config" / "train" / "tiny.yaml")
    cfg.dataset, cfg.out, cfg.steps, cfg.checkpoint_every, cfg.val_every = str(small_build), str(tmp_path), 20, 10, 10
    final = train(cfg, progress=False)
    prior = PosePrior.load(final)
    assert prior.meta["steps"] == 20 and (tmp_path / "loss.png").stat().st_size > 1000
    assert set(prior.meta["dataset"]["licences"]) == {"bandai", "cmu", "manipnet_hands"}
    cfg.steps = 30  # resuming continues from the saved state instead of starting over
    train(cfg, progress=False)
    state = __import__("torch").load(tmp_path / "train_state.pt", weights_only=False)
    assert state["step"] == 30 and len(state["history"]["loss"]) == 30
    with pytest.raises(ValueError, match="unknown training settings"):
        bad = tmp_path / "bad.yaml"
        bad.write_text("stpes: 3\n")
        TrainConfig.from_yaml(bad)


@needs_mocap
def test_the_motion_model_trains_on_a_build(small_build, tmp_path):
    from dposer_ros.prior.motion import LegMotion

    (tmp_path / "motion.yaml").write_text("lags: [0.1, 0.2, 0.5]\nsteps: 150\nbatch: 128\nhidden: 64\n")
    code = main(["motion", "--dataset", str(small_build), "--config", str(tmp_path / "motion.yaml"),
                 "--out", str(tmp_path / "motion.pt")])
    assert code == 0
    model = LegMotion.load(tmp_path / "motion.pt")
    assert model.lags == (0.1, 0.2, 0.5) and model.fps == 30.0 and model.meta["frames"] > 100
    assert model.meta["final_loss"] < 0.5 * model.meta["first_loss"]  # it learns
    (tmp_path / "odd.yaml").write_text("lags: [0.1, 0.25]\nsteps: 5\n")  # 7.5 frames at 30 Hz
    assert main(["motion", "--dataset", str(small_build), "--config", str(tmp_path / "odd.yaml"),
                 "--out", str(tmp_path / "odd.pt")]) == 2
