import json

import pytest

from moirai_moe_sk.model.config import ConfigError, MoiraiMoEConfig

OFFICIAL_SMALL = (
    '{"attn_dropout_p": 0.0, "d_ff": 512, "d_model": 384, "distr_output": '
    '{"_target_": "uni2ts.distribution.mixture.MixtureOutput", "components": '
    '[{"_target_": "uni2ts.distribution.student_t.StudentTOutput"}, {"_target_": '
    '"uni2ts.distribution.normal.NormalFixedScaleOutput", "scale": 0.001}, '
    '{"_target_": "uni2ts.distribution.negative_binomial.NegativeBinomialOutput"}, '
    '{"_target_": "uni2ts.distribution.log_normal.LogNormalOutput"}]}, '
    '"dropout_p": 0.0, "max_seq_len": 512, "num_layers": 6, "patch_sizes": [16], '
    '"scaling": true}'
)


def test_default_config_serialises_to_the_official_small_config():
    assert MoiraiMoEConfig().to_dict() == json.loads(OFFICIAL_SMALL)


def test_official_small_config_is_665_bytes_in_save_pretrained_format():
    # uni2ts writes sort_keys + indent 2; the reference doc measured 665 bytes
    text = json.dumps(MoiraiMoEConfig().to_dict(), sort_keys=True, indent=2)
    assert len(text) == 665


def test_base_config_is_667_bytes_like_the_hub_file():
    cfg = MoiraiMoEConfig(d_model=768, d_ff=1024, num_layers=12)
    assert len(json.dumps(cfg.to_dict(), sort_keys=True, indent=2)) == 667


def test_from_dict_reads_the_official_config():
    cfg = MoiraiMoEConfig.from_dict(json.loads(OFFICIAL_SMALL))
    assert cfg == MoiraiMoEConfig()
    assert (cfg.num_heads, cfg.head_dim, cfg.patch_size) == (6, 64, 16)
    assert (cfg.num_experts, cfg.num_experts_per_token) == (32, 2)
    assert cfg.gate_selection == "farthest"


def test_moe_extensions_round_trip_and_only_appear_when_not_default():
    cfg = MoiraiMoEConfig(num_experts=8, gate="linear", gate_selection="nearest")
    data = cfg.to_dict()
    assert data["num_experts"] == 8
    assert data["gate"] == "linear"
    assert "num_experts_per_token" not in data
    assert MoiraiMoEConfig.from_dict(data) == cfg


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(hidden_size=3), "unknown config key"),
        (lambda d: d.pop("d_model"), "missing required key"),
        (
            lambda d: d["distr_output"]["components"].append({"_target_": "os.system"}),
            "unknown distribution _target_ 'os.system'",
        ),
        (
            lambda d: d["distr_output"].update(_target_="evil.Mixture"),
            "distr_output must be",
        ),
        (lambda d: d.update(d_model=100), "multiple of 64"),
        (lambda d: d.update(patch_sizes=[8, 16]), "exactly one patch size"),
        (lambda d: d.update(num_layers="6"), "num_layers must be a positive integer"),
        (lambda d: d.update(dropout_p=1.5), "dropout_p must be in"),
    ],
)
def test_malformed_configs_are_rejected_with_a_clear_message(mutate, message):
    data = json.loads(OFFICIAL_SMALL)
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        MoiraiMoEConfig.from_dict(data)


def test_config_is_frozen():
    cfg = MoiraiMoEConfig()
    with pytest.raises(AttributeError):
        cfg.d_model = 128  # type: ignore[misc]
    assert cfg.replace(d_model=128).d_model == 128
    assert cfg.d_model == 384


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_experts_per_token": 0},
        {"num_experts_per_token": 40},
        {"gate": "hash"},
        {"gate_selection": "random"},
        {"mixture_components": ("gamma",)},
        {"normal_fixed_scale": 0.0},
    ],
)
def test_invalid_moe_and_head_settings(kwargs):
    with pytest.raises(ConfigError):
        MoiraiMoEConfig(**kwargs)


def test_a_stated_context_round_trips_and_is_checked():
    config = MoiraiMoEConfig(d_model=64, context_length=512)
    data = config.to_dict()
    assert data["context_length"] == 512
    assert MoiraiMoEConfig.from_dict(data) == config
    # the released configs state none, and none is written for them
    assert "context_length" not in MoiraiMoEConfig().to_dict()
    for bad in (0, -5, 1.5, True, "512"):
        with pytest.raises(ConfigError, match="context_length"):
            MoiraiMoEConfig(context_length=bad)
