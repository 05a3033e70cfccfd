import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from moirai_moe_sk import checkpoint
from moirai_moe_sk.checkpoint import official_shapes
from moirai_moe_sk.exceptions import CheckpointError
from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel

from _helpers import FIXTURES, make_tiny_model


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_small_config_keys_match_the_official_state_dict():
    listed = {}
    for line in (FIXTURES / "moirai_moe_small_keys.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        listed[key] = (
            tuple(
                json.loads(shape.replace("(", "[").replace(",)", "]").replace(")", "]"))
            ),
            dtype,
        )
    assert len(listed) == 656
    assert official_shapes(MoiraiMoEConfig()) == listed


def test_small_model_has_the_published_parameter_count():
    shapes = official_shapes(MoiraiMoEConfig())
    total = sum(
        torch.Size(shape).numel()
        for key, (shape, _) in shapes.items()
        if key != "encoder.centroid"
    )
    assert total == 117_025_800


def test_round_trip_is_exact(tiny_checkpoint: Path):
    loaded = MoiraiMoEModel.from_pretrained(tiny_checkpoint)
    original = make_tiny_model()
    assert not loaded.training
    for (name, a), (_, b) in zip(
        original.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert loaded.encoder.centroid.dtype == torch.float64


def test_saved_files_use_official_keys_and_dtypes(tiny_checkpoint: Path):
    state = load_file(tiny_checkpoint / "model.safetensors")
    config = MoiraiMoEConfig.from_dict(
        json.loads((tiny_checkpoint / "config.json").read_text())
    )
    expected = official_shapes(config)
    assert set(state) == set(expected)
    for key, tensor in state.items():
        shape, dtype = expected[key]
        assert tuple(tensor.shape) == shape
        assert str(tensor.dtype) == f"torch.{dtype}"
    assert "encoder.layers.1.ffn.experts.7.fc_gate.weight" in state


def test_missing_tensor_is_named(tiny_checkpoint: Path, tmp_path: Path):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    state = load_file(folder / "model.safetensors")
    del state["encoder.centroid"]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensors: encoder\.centroid"):
        MoiraiMoEModel.from_pretrained(folder)


def test_unexpected_tensor_is_named(tiny_checkpoint: Path, tmp_path: Path):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    state = load_file(folder / "model.safetensors")
    state["mask_encoding.weight"] = torch.zeros(1, 64)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected tensors: mask_encoding"):
        MoiraiMoEModel.from_pretrained(folder)


def test_mis_shaped_tensor_is_named(tiny_checkpoint: Path, tmp_path: Path):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    state = load_file(folder / "model.safetensors")
    state["in_proj.weight"] = torch.zeros(5, 64, 128)  # a Moirai 1.x layout
    save_file(state, folder / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"in_proj\.weight: expected \(1, 64, 16\)"
    ):
        MoiraiMoEModel.from_pretrained(folder)


def test_config_not_matching_weights(tiny_checkpoint: Path, tmp_path: Path):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    data = json.loads((folder / "config.json").read_text())
    data["num_layers"] = 3
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(
        CheckpointError,
        match=r"num_layers is 3 in config\.json but 2 in model\.safetensors",
    ):
        MoiraiMoEModel.from_pretrained(folder)


def test_unknown_target_is_rejected(tiny_checkpoint: Path, tmp_path: Path):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    data = json.loads((folder / "config.json").read_text())
    data["distr_output"]["components"][0]["_target_"] = "builtins.eval"
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="unknown distribution _target_"):
        MoiraiMoEModel.from_pretrained(folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"d_model": 64}', "missing required key"),
    ],
)
def test_malformed_config_json(tiny_checkpoint: Path, tmp_path: Path, text, message):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    (folder / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=message):
        MoiraiMoEModel.from_pretrained(folder)


def test_corrupt_weights_file(tiny_checkpoint: Path, tmp_path: Path):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        MoiraiMoEModel.from_pretrained(folder)


def test_pickle_file_is_never_loaded(tiny_checkpoint: Path, tmp_path: Path):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    (folder / "model.safetensors").unlink()
    torch.save(make_tiny_model().state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"has no model\.safetensors"):
        MoiraiMoEModel.from_pretrained(folder)


def test_missing_files_and_bad_names(tmp_path: Path):
    with pytest.raises(CheckpointError, match=r"has no config\.json"):
        MoiraiMoEModel.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        MoiraiMoEModel.from_pretrained(str(tmp_path / "does" / "not" / "exist"))
    with pytest.raises(CheckpointError, match="neither an existing folder"):
        MoiraiMoEModel.from_pretrained("no such model")


def test_failed_save_leaves_the_previous_checkpoint_intact(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = make_tiny_model(seed=1)

    def broken_write(self, *args, **kwargs):
        raise OSError(28, "disk full")

    monkeypatch.setattr(Path, "write_text", broken_write)
    with pytest.raises(OSError, match="disk full"):
        other.save_pretrained(folder)
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == before  # no temporary files left, nothing replaced


def test_save_creates_the_folder_and_overwrites(tmp_path: Path):
    target = tmp_path / "a" / "b"
    make_tiny_model(seed=1).save_pretrained(target)
    make_tiny_model(seed=2).save_pretrained(target)
    assert sorted(p.name for p in target.iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    reloaded = MoiraiMoEModel.from_pretrained(target)
    assert torch.equal(reloaded.in_proj.weight, make_tiny_model(seed=2).in_proj.weight)
    # readable by others, like any data file (not mkstemp's private 0600)
    for path in target.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_linear_gate_model_round_trips(tmp_path: Path):
    model = make_tiny_model(gate="linear", gate_selection="nearest", num_experts=4)
    assert model.encoder.centroid is None
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    assert "encoder.layers.0.ffn.gate.weight" in state
    assert "encoder.centroid" not in state
    loaded = MoiraiMoEModel.from_pretrained(tmp_path)
    assert loaded.config == model.config
    assert torch.equal(
        loaded.encoder.layers[0].ffn.gate.weight,
        model.encoder.layers[0].ffn.gate.weight,
    )


def test_hub_ids_are_distinguished_from_paths():
    assert checkpoint._looks_like_repo_id("Salesforce/moirai-moe-1.0-R-small")
    assert not checkpoint._looks_like_repo_id("../etc/passwd")
    assert not checkpoint._looks_like_repo_id("a/b/c")
