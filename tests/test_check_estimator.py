"""sktime's own conformance suite, on every ``get_test_params`` set."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sktime.utils.estimator_checks import check_estimator

from moirai_moe_sk.forecaster import MoiraiMoEForecaster

# sktime 1.2.0's update_predict (_format_moving_cutoff_predictions) concatenates
# DatetimeIndex frames in a way pandas 3 deprecates; not ours to fix.
# sktime's pretrain checks also run on the zero-shot parameter sets, where
# pretrain warns (by design) that it trains nothing.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:Sorting by default when concatenating all DatetimeIndex"
    ),
    pytest.mark.filterwarnings(
        "ignore:pretrain with fit_strategy='zero-shot' trains nothing:UserWarning"
    ),
]


def test_test_params_are_cheap_local_and_leave_the_rng_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # write them afresh
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()  # noqa: NPY002
    params = MoiraiMoEForecaster.get_test_params()
    assert len(params) >= 2
    for p in params:
        folder = Path(p["checkpoint"])
        assert folder.is_relative_to(tmp_path)
        assert (folder / "config.json").is_file()
        assert (folder / "model.safetensors").stat().st_size < 2_000_000
    assert params == MoiraiMoEForecaster.get_test_params()  # deterministic
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state[1])  # noqa: NPY002


def test_check_estimator_passes_for_every_test_parameter_set():
    # check_estimator on the class builds one instance per get_test_params set
    # (create_test_instances_and_names) and runs every TestAllObjects,
    # TestAllEstimators and TestAllForecasters check on each.
    names = [name for _, name in _instances()]
    assert len(names) == len(MoiraiMoEForecaster.get_test_params())
    # predict_proba returns skpro's Empirical; sktime's check cannot pass without it
    has_skpro = importlib.util.find_spec("skpro") is not None
    results = check_estimator(
        MoiraiMoEForecaster,
        raise_exceptions=True,
        verbose=False,
        tests_to_exclude=None if has_skpro else ["test_predict_proba"],
    )
    failed = {k: v for k, v in results.items() if v != "PASSED"}
    assert not failed
    for index in range(len(names)):  # each set really ran
        assert any(f"MoiraiMoEForecaster-{index}-" in key for key in results)


def _instances():
    instances, names = MoiraiMoEForecaster.create_test_instances_and_names()
    return list(zip(instances, names, strict=True))
