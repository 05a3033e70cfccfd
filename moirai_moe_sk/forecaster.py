"""sktime forecaster for zero-shot probabilistic forecasting with Moirai-MoE."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import numbers
import os
import secrets
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.exceptions import NotFittedError
from sktime.forecasting.base import BaseForecaster

from . import convert
from .training.checks import check_flag, check_seed

logger = logging.getLogger(__name__)

__all__ = ["MoiraiMoEForecaster"]

_POINTS = ("median", "mean")
_FIT_STRATEGIES = ("zero-shot", "full", "head", "freeze-experts", "lora")
#: TrainingConfig fields set by constructor parameters (not by train_params)
_EXPLICIT_TRAINING = {
    "strategy": "fit_strategy",
    "learning_rate": "learning_rate",
    "max_epochs": "max_epochs",
    "max_steps": "max_steps",
    "batch_size": "train_batch_size",
    "validation_fraction": "validation_fraction",
    "patience": "patience",
    "lora_rank": "lora_rank",
    "seed": "random_state",
}
#: TrainingConfig fields the forecaster fixes: it keeps plain (merged) weights
_FIXED_TRAINING = {"merge_lora"}
_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}
_DECODING = ("exact", "fast")


class MoiraiMoEForecaster(BaseForecaster):
    """Probabilistic forecaster built on Salesforce's Moirai-MoE, zero-shot or fine-tuned.

    Moirai-MoE [1]_ is a decoder-only transformer with sparse mixture-of-experts
    layers, pretrained on a large corpus of time series. It cuts each series
    into patches of 16 steps and predicts the next patch as a mixture
    distribution; longer horizons are decoded autoregressively by feeding
    sampled patches back, so every forecast comes from coherent sample paths.

    With the default ``fit_strategy="zero-shot"``, ``fit`` loads the weights
    (once per process and checkpoint, through a shared cache) and stores the
    series as context; no weight is trained. Any other ``fit_strategy``
    fine-tunes a copy of the weights on ``y`` (one series or a whole panel)
    with the next-patch likelihood (see :mod:`moirai_moe_sk.training`), then
    forecasts from it. ``pretrain(y_panel)`` fine-tunes once on a panel; later
    ``fit(y)`` calls only set the context and keep the fine-tuned weights.
    ``predict``, ``predict_quantiles``, ``predict_interval``, ``predict_var``
    and ``predict_proba`` are all computed from one set of sample paths per
    call; the draw is seeded once per fit, so these methods agree with each
    other and repeated calls give identical results.
    Quantiles are order statistics of the samples, exactly as GluonTS'
    ``SampleForecast`` takes them (``sorted[round((N - 1) * q)]``), so they are
    monotone in ``alpha`` and intervals are nested; ``predict_proba`` returns
    the samples as an empirical distribution, never a normal approximation.

    Several columns in ``y`` are forecast jointly (one multivariate forecast,
    through the model's any-variate attention). Panels and hierarchies are
    forecast in batches of series; series may have unequal lengths, missing
    values (NaN) and be shorter than one patch.

    Exogenous data: columns of the ``X`` passed to ``predict`` are used as
    *known-future* covariates (their values at the forecast time stamps are
    needed); columns seen in ``fit``/``update`` but not passed to ``predict``
    are used as *past-only* covariates. ``X`` passed to ``predict`` without
    ``X`` in ``fit`` is ignored, since covariates need their past values.

    Parameters
    ----------
    checkpoint : str or path-like, default="Salesforce/moirai-moe-1.0-R-small"
        Where the weights come from, in this order of resolution:

        * a local folder holding ``config.json`` and ``model.safetensors`` in
          the official uni2ts layout (e.g. one written by
          ``MoiraiMoEModel.save_pretrained``);
        * the name of a model bundled with this package:
          ``"moirai-moe-sk-tiny"``, no network needed (see
          ``moirai_moe_sk.checkpoint.BUNDLED``);
        * a Hugging Face hub id such as ``"Salesforce/moirai-moe-1.0-R-small"``
          or ``"Salesforce/moirai-moe-1.0-R-base"``, downloaded once into the
          hub cache.
    context_length : int or None, default=None
        Number of most recent steps of each series the model sees. ``None``
        uses the longest series, capped at the context the checkpoint states
        it was trained for (its config's ``context_length``; 512 for
        ``moirai-moe-sk-tiny``) or, for checkpoints that state none (the
        released ones), at 1024 steps
        (``moirai_moe_sk.convert.DEFAULT_MAX_CONTEXT``). Shorter series are
        left-padded; cost grows quadratically with ``context_length / 16``.
    num_samples : int, default=100
        Number of sample paths drawn per series; all forecasts are statistics
        of these. More samples give smoother quantiles and cost linearly more.
    point : {"median", "mean"}, default="median"
        Statistic of the sample paths returned by ``predict``.

        * ``"median"``: the 0.5 order statistic (as GluonTS; robust to the
          heavy tails of the Student-t mixture components);
        * ``"mean"``: the sample mean.
    decoding : {"exact", "fast"}, default="exact"
        How horizons beyond one patch (16 steps) are decoded.

        * ``"exact"``: as the reference, uni2ts: sampled patches join the
          scaler statistics and every step re-encodes the sequence for every
          sample path. Seeded forecasts reproduce uni2ts' own predictor when
          both decode the same batches (one chunk; no left padding).
        * ``"fast"``: the scaler statistics come from the context only (as in
          training), so decoding can keep a key/value cache: the context is
          encoded once per series and each step encodes one token per sample
          path, and only the patches needed are sampled. Many times faster for
          long horizons; the first patch has the same distribution, later ones
          differ slightly (measured in the documentation's performance page).
    batch_size : int or None, default=None
        Number of series decoded together. ``None`` sizes each chunk from a
        working-memory budget of about 2 GiB
        (``moirai_moe_sk._inference.AUTO_BATCH_BYTES``). Series are grouped by
        length, shortest first, so a chunk is padded only to its longest
        series. Each chunk draws from its own seeded generator, so with
        ``random_state`` set, results depend on the chunking (and so on
        ``batch_size``) but not on the parallel backend.
    device : str or torch.device, default="auto"
        Device to run the model on. ``"auto"`` picks ``"cuda"`` when
        available, else ``"cpu"``; also ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        ``"mps"`` (only explicitly) or a ``torch.device``. A device that is not
        available here is refused at ``fit``, naming the ones that are.
    dtype : str or torch.dtype or None, default=None
        Compute precision of the transformer layers: ``None`` or
        ``"float32"``, or ``"bfloat16"`` (fast on GPUs and on CPUs with
        AVX512-BF16 or AMX; elsewhere it may be slower). The scaler, the
        mixture head and sampling stay in float32 (the scaler in float64).
    revision : str or None, default=None
        Hub revision (branch, tag or commit hash) of a hub ``checkpoint``;
        pin a commit for reproducible results. Ignored for local folders.
    cache_dir : str or path-like or None, default=None
        Hugging Face hub cache folder; ``None`` uses huggingface_hub's default
        (``HF_HOME``/``HF_HUB_CACHE``).
    local_files_only : bool, default=False
        If True, never contact the hub: use only files already in the cache
        (a clear error names the checkpoint if they are missing).
    fit_strategy : str, default="zero-shot"
        How ``fit`` (and ``pretrain``) adapt the weights to the data:

        * ``"zero-shot"``: never; the checkpoint's weights as they are;
        * ``"full"``: fine-tune every weight (gate centroids stay fixed);
        * ``"head"``: only the input projection and the mixture head;
        * ``"freeze-experts"``: all but the expert weights (attention, norms,
          input projection, head);
        * ``"lora"``: low-rank adapters of rank ``lora_rank`` on the attention
          and expert projections, merged into plain weights after training.
    learning_rate : float or None, default=None
        Peak AdamW learning rate of fine-tuning, in (0, 1]; None takes the
        strategy's default (``full`` 1e-4, ``head`` 1e-3, ``freeze-experts``
        3e-4, ``lora`` 1e-3: :data:`moirai_moe_sk.training.DEFAULT_LEARNING_RATES`,
        chosen by the committed sweep ``benchmarks/finetune_defaults.py``).
    max_epochs : int or None, default=None
        Fine-tuning epochs at most, an epoch being as many random windows as
        the series have admissible ones (one per end point); None: no cap.
    max_steps : int or None, default=None
        Optimiser steps. None plans them from the data: one epoch, at least
        200 and at most 1,000 steps (``train_params`` ``min_steps`` and
        ``max_auto_steps`` move those bounds).
    train_batch_size : int, default=32
        Training windows per optimiser step.
    validation_fraction : float, default=0.1
        Fraction of each series held out at its end (at least the horizon,
        in whole patches) to validate ten times a run; training stops early
        and restores the best weights, the starting ones included, so the
        validation likelihood never gets worse. 0 disables validation; at
        most 0.5 (a larger share would leave too little to train on).
    patience : int, default=3
        Validations (ten a run) without improvement before stopping.
    lora_rank : int, default=8
        Adapter rank for ``fit_strategy="lora"``.
    train_params : dict or None, default=None
        Further settings of :class:`moirai_moe_sk.training.TrainingConfig`,
        e.g. ``{"warmup_steps": 100, "schedule": "constant",
        "weight_decay": 0.1, "mask_ratio": (0.15, 0.5), "progress": True,
        "micro_batch_size": 8, "gradient_checkpointing": True,
        "train_centroids": True, "context_length": 256,
        "prediction_length": 32}``. By default training windows use this
        forecaster's context length and the largest step of the ``fh`` given
        to ``fit`` (two patches without one).
    random_state : int, numpy RandomState/Generator or None, default=None
        Seed of the sample paths and of fine-tuning. Each predict call seeds a local
        ``torch.Generator`` (the global random state is never touched) with a
        seed fixed at ``fit``: the int itself (0 included), one drawn from a
        numpy RandomState/Generator, or, for ``None``, fresh OS entropy. So
        one fitted forecaster always returns the same forecasts, and with an
        int every fit does too.

    Attributes
    ----------
    device_ : str
        The device the model runs on (``device`` resolved).
    model_config_ : MoiraiMoEConfig
        Hyper-parameters of the loaded checkpoint.
    tuned_model_ : MoiraiMoEModel
        The fine-tuned network (only after fine-tuning ``fit`` or ``pretrain``).
        Export it with :meth:`save_pretrained`.
    training_history_ : pd.DataFrame
        One row per validation (step 0: the starting weights) with the epochs
        trained so far, the step, training and validation NLL, learning rate
        and elapsed seconds. Set by fine-tuning ``fit`` and by ``pretrain``
        (an empty frame after a ``"zero-shot"`` pretrain).
    best_step_ : int
        The step whose weights fine-tuning kept (0: the starting weights, in
        which case a :class:`~moirai_moe_sk.exceptions.FineTuneWarning` said
        so at ``fit``). After a second ``pretrain``, counted from the first.

    Notes
    -----
    **Licence of the weights.** This package's licence covers its code only.
    Weights downloaded from the hub carry their publisher's licence, stated on
    their model card: the Salesforce Moirai-MoE models are released under
    CC-BY-NC-4.0 (non-commercial use). Check the model card before use.

    In-sample forecasts (``fh`` at or before the cutoff) are not supported. A
    relative ``fh`` counts from each series' own last time stamp; an absolute
    ``fh`` gives the same time stamps to all series of a panel.

    References
    ----------
    .. [1] X. Liu, J. Liu, G. Woo, T. Aksu, Y. Liang, R. Zimmermann, C. Liu,
       S. Savarese, C. Xiong and D. Sahoo. "Moirai-MoE: Empowering Time Series
       Foundation Models with Sparse Mixture of Experts". ICML 2025.

    See Also
    --------
    moirai_moe_sk.model.MoiraiMoEModel : the underlying PyTorch module.

    Examples
    --------
    A tiny random-weight checkpoint keeps this example offline (its forecasts
    are meaningless):

    >>> import tempfile
    >>> from sktime.datasets import load_airline
    >>> from moirai_moe_sk.forecaster import MoiraiMoEForecaster
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> folder = tempfile.mkdtemp()
    >>> config = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    >>> MoiraiMoEModel(config).save_pretrained(folder)
    >>> y = load_airline()
    >>> forecaster = MoiraiMoEForecaster(folder, num_samples=20, random_state=0)
    >>> forecaster = forecaster.fit(y, fh=[1, 2, 3])
    >>> y_pred = forecaster.predict()
    >>> y_int = forecaster.predict_interval(coverage=[0.8, 0.95])
    >>> y_int.shape
    (3, 4)

    Fine-tuning the head on the series before forecasting:

    >>> tuned = MoiraiMoEForecaster(
    ...     folder, fit_strategy="head", max_steps=2, num_samples=20, random_state=0
    ... ).fit(y, fh=[1, 2, 3])
    >>> int(tuned.training_history_["step"].iloc[-1])
    2

    The released weights (downloaded from the Hugging Face hub once):

    >>> forecaster = MoiraiMoEForecaster(
    ...     "Salesforce/moirai-moe-1.0-R-small"
    ... ).fit(y, fh=range(1, 25))  # doctest: +SKIP
    """

    _tags: ClassVar[dict[str, Any]] = {
        # packaging info
        # --------------
        "authors": ["moirai_moe_sk developers"],
        "maintainers": ["moirai_moe_sk developers"],
        "python_dependencies": ["torch", "huggingface_hub", "safetensors"],
        # estimator type
        # --------------
        "y_inner_mtype": [
            "pd.Series",
            "pd.DataFrame",
            "pd-multiindex",
            "pd_multiindex_hier",
        ],
        "X_inner_mtype": ["pd.DataFrame", "pd-multiindex", "pd_multiindex_hier"],
        "capability:multivariate": True,
        "capability:exogenous": True,
        "capability:categorical_in_X": False,
        "capability:non_contiguous_X": True,
        "capability:missing_values": True,
        "capability:unequal_length": True,
        "capability:insample": False,
        "capability:pred_int": True,
        "capability:pred_int:insample": False,
        "capability:update": True,
        "requires-fh-in-fit": False,
        "X-y-must-have-same-index": True,
        "enforce_index_type": None,
        "property:randomness": "derandomized",
        "capability:random_state": True,
        "capability:pretrain": True,
    }
    # The forecaster keeps its own copy of the data (``_y_store``) and updates
    # natively, so sktime's copies in ``_y``/``_X`` are not needed. Setting this
    # explicitly also keeps sktime (1.2) from warning, on every construction,
    # that its default will change.
    _config: ClassVar[dict[str, Any]] = {"remember_data": False}

    def __init__(
        self,
        checkpoint="Salesforce/moirai-moe-1.0-R-small",
        context_length=None,
        num_samples=100,
        point="median",
        decoding="exact",
        batch_size=None,
        device="auto",
        dtype=None,
        revision=None,
        cache_dir=None,
        local_files_only=False,
        fit_strategy="zero-shot",
        learning_rate=None,
        max_epochs=None,
        max_steps=None,
        train_batch_size=32,
        validation_fraction=0.1,
        patience=3,
        lora_rank=8,
        train_params=None,
        random_state=None,
    ):
        self.checkpoint = checkpoint
        self.context_length = context_length
        self.num_samples = num_samples
        self.point = point
        self.decoding = decoding
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.revision = revision
        self.cache_dir = cache_dir
        self.local_files_only = local_files_only
        self.fit_strategy = fit_strategy
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.train_batch_size = train_batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.lora_rank = lora_rank
        self.train_params = train_params
        self.random_state = random_state
        super().__init__()
        # sktime creates these only when remember_data is on at construction;
        # a user (or check_estimator) may switch it on later with set_config
        self._y = None
        self._X = None

    # ------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """Drop the (shared, re-loadable) model from pickles.

        Checkpoint weights are never pickled: an unpickled forecaster reloads
        them through the process-wide cache on first use. Fine-tuned weights
        travel as safetensors bytes plus their config (no torch pickling).
        """
        from .checkpoint import PortableModel

        state = dict(self.__dict__)
        state["_model"] = None
        state.pop("_tuned_compute", None)
        tuned = state.get("tuned_model_")
        if tuned is not None:
            state["tuned_model_"] = PortableModel.from_model(tuned)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild fine-tuned weights (on the CPU; moved to ``device`` on use)."""
        from .checkpoint import PortableModel

        tuned = state.get("tuned_model_")
        if isinstance(tuned, PortableModel):
            state = {**state, "tuned_model_": tuned.to_model()}
        self.__dict__.update(state)

    # --------------------------------------------------------------- checks
    def _check_params(self) -> None:
        def positive_int(name: str, value: Any, allow_none: bool) -> None:
            if value is None and allow_none:
                return
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Integral)
                or value < 1
            ):
                none = " or None" if allow_none else ""
                msg = f"{name} must be a positive integer{none}, got {value!r}"
                raise ValueError(msg)

        positive_int("num_samples", self.num_samples, allow_none=False)
        positive_int("context_length", self.context_length, allow_none=True)
        positive_int("batch_size", self.batch_size, allow_none=True)
        if self.decoding not in _DECODING:
            msg = f"decoding must be one of {_DECODING}, got {self.decoding!r}"
            raise ValueError(msg)
        if self.point not in _POINTS:
            msg = f"point must be one of {_POINTS}, got {self.point!r}"
            raise ValueError(msg)
        if not isinstance(self.checkpoint, str | os.PathLike):
            msg = (
                "checkpoint must be a hub id or a folder path, got "
                f"{type(self.checkpoint).__name__}"
            )
            raise TypeError(msg)
        check_flag(self.local_files_only, "local_files_only")
        if self.fit_strategy not in _FIT_STRATEGIES:
            msg = (
                f"fit_strategy must be one of {_FIT_STRATEGIES}, got "
                f"{self.fit_strategy!r}"
            )
            raise ValueError(msg)
        self._training_config(context_length=1, prediction_length=1)  # validates
        check_seed(
            self.random_state, "random_state", allow_none=True, allow_numpy_rng=True
        )

    def _resolve_device(self) -> Any:
        from ._device import resolve_device

        return resolve_device(self.device)

    def _resolve_dtype(self) -> Any:
        import torch

        if self.dtype is None:
            return torch.float32
        if self.dtype in (torch.float32, torch.bfloat16):
            return self.dtype
        if isinstance(self.dtype, str) and self.dtype in _DTYPES:
            return getattr(torch, _DTYPES[self.dtype])
        msg = (
            f"dtype {self.dtype!r} is not supported: use None or 'float32', or "
            "'bfloat16' for reduced-precision transformer layers"
        )
        raise ValueError(msg)

    # ------------------------------------------------------------------ fit
    def _prepare(self) -> None:
        """Check the parameters; resolve device and dtype; fix the seed."""
        self._check_params()
        self._device = self._resolve_device()
        self._torch_dtype = self._resolve_dtype()
        self._seed = self._draw_seed()

    def _checkpoint_source(self) -> Any:
        from ._inference import CheckpointSource

        cache_dir = self.cache_dir
        return CheckpointSource(
            checkpoint=os.fspath(self.checkpoint),
            revision=self.revision,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            local_files_only=self.local_files_only,
        )

    def _load_model(self, dtype: Any = None) -> Any:
        """Return the shared pretrained model (float32 unless ``dtype`` is given)."""
        import torch

        from ._inference import resolve_model

        return resolve_model(
            self._checkpoint_source(), self._device, dtype or torch.float32
        )

    def _inference_model(self, in_process: bool) -> Any:
        """Return what chunks run on: a module in this process, or a source to load.

        Process-based backends get a :class:`~moirai_moe_sk._inference.CheckpointSource`
        (each worker loads the checkpoint once) or, for fine-tuned weights, a
        :class:`~moirai_moe_sk.checkpoint.PortableModel`.
        """
        import torch

        from .checkpoint import PortableModel

        dtype = self._torch_dtype
        tuned = getattr(self, "tuned_model_", None)
        if tuned is None:
            return self._load_model(dtype) if in_process else self._checkpoint_source()
        if not in_process:
            return PortableModel.from_model(tuned)
        tuned = self._get_model()
        if dtype == torch.float32:
            return tuned
        compute = getattr(self, "_tuned_compute", None)
        if compute is None or compute[0] is not tuned:
            import copy

            compute = (tuned, copy.deepcopy(tuned).set_compute_dtype(dtype))
            self._tuned_compute = compute
        return compute[1]

    def _get_model(self) -> Any:
        tuned = getattr(self, "tuned_model_", None)
        if tuned is not None:
            if next(tuned.parameters()).device != self._device:  # after unpickling
                tuned.to(self._device)
            return tuned
        model = getattr(self, "_model", None)
        if model is None:  # after unpickling
            model = self._model = self._load_model(self._torch_dtype)
        return model

    # ------------------------------------------------------------ training
    def _training_config(self, context_length: int, prediction_length: int) -> Any:
        """Build the engine settings: constructor parameters plus ``train_params``."""
        from .training import TrainingConfig

        if not isinstance(self.train_params, dict | type(None)):
            msg = f"train_params must be a dict or None, got {self.train_params!r}"
            raise TypeError(msg)
        extra = dict(self.train_params or {})
        allowed = (
            set(TrainingConfig.field_names())
            - set(_EXPLICIT_TRAINING)
            - _FIXED_TRAINING
        )
        unknown = sorted(set(extra) - allowed)
        if unknown:
            clash = [k for k in unknown if k in _EXPLICIT_TRAINING]
            hint = (
                f"; set {[_EXPLICIT_TRAINING[k] for k in clash]} as constructor "
                "parameters instead"
                if clash
                else ""
            )
            msg = (
                f"unknown train_params key(s) {unknown}; allowed: {sorted(allowed)}"
                f"{hint}"
            )
            raise ValueError(msg)
        strategy = self.fit_strategy if self.fit_strategy != "zero-shot" else "full"
        settings = {
            "context_length": context_length,
            "prediction_length": prediction_length,
            **extra,
            "strategy": strategy,
            "learning_rate": self.learning_rate,
            "max_epochs": self.max_epochs,
            "max_steps": self.max_steps,
            "batch_size": self.train_batch_size,
            "validation_fraction": self.validation_fraction,
            "patience": self.patience,
            "lora_rank": self.lora_rank,
            "seed": getattr(self, "_seed", 0),
        }
        return TrainingConfig(**settings)

    def _fine_tune(
        self,
        model: Any,
        store: convert.SeriesStore,
        x_store: convert.SeriesStore | None,
        prediction_length: int,
    ) -> None:
        """Fine-tune ``model`` on the stored series; set the tuned attributes."""
        import pandas as pd

        from .training import TrainingSeries, fine_tune

        series = [
            TrainingSeries(target, observed, cov, cov_obs)
            for target, observed, cov, cov_obs in convert.training_arrays(
                store, x_store
            )
        ]
        context_length = convert.resolve_context_length(
            self.context_length, store, model.config.context_length
        )
        config = self._training_config(context_length, prediction_length)
        result = fine_tune(model, series, config, device=self._device)
        # NLL columns as floats (None: NaN) so that histories concatenate
        history = pd.DataFrame(result.history).astype(
            {"train_nll": float, "val_nll": float}
        )
        previous = getattr(self, "training_history_", None)
        best_step = result.best_step
        if previous is not None and len(previous):  # incremental pretraining
            offset = int(previous["step"].iloc[-1])
            history["epoch"] += float(previous["epoch"].iloc[-1])
            history["step"] += offset
            # kept starting weights are the previous run's kept ones
            kept = int(getattr(self, "best_step_", 0))
            best_step = best_step + offset if best_step else kept
            history = pd.concat([previous, history.iloc[1:]], ignore_index=True)
        self.tuned_model_ = result.model
        self.training_history_ = history
        self.best_step_ = best_step

    def _train_horizon(self, fh, patch_size: int) -> int:
        """Return the steps after the context in a training window.

        That is the largest step of ``fh``, or two patches without one.
        """
        default = 2 * patch_size
        if fh is None:
            return default
        try:
            if fh.is_relative:
                steps = np.asarray(fh.to_pandas())
            else:
                steps = np.asarray(fh.to_relative(self.cutoff).to_pandas())
            return max(int(steps.max()), 1)
        except (TypeError, ValueError, AttributeError):
            return default

    def _pretrain(self, y, X=None, fh=None):
        """Fine-tune on a panel once; later ``fit`` calls keep these weights.

        With ``fit_strategy="zero-shot"`` nothing is trained (a warning says
        so) and the checkpoint's weights stay in use.

        Parameters
        ----------
        y : pd-multiindex or pd_multiindex_hier
            Panel to fine-tune on.
        X : sktime time series, optional
            Covariates of the panel.
        fh : ForecastingHorizon, optional
            Its largest step sets the horizon of the training windows.

        Returns
        -------
        self : MoiraiMoEForecaster
        """
        self._prepare()
        base = getattr(self, "tuned_model_", None)
        if base is None:
            base = self._load_model()
        self.model_config_ = base.config
        if self.fit_strategy == "zero-shot":
            import pandas as pd

            from .training.engine import HISTORY_COLUMNS

            warnings.warn(
                "pretrain with fit_strategy='zero-shot' trains nothing: the "
                "checkpoint's weights stay in use. Choose a fine-tuning "
                "fit_strategy ('full', 'head', 'freeze-experts', 'lora') to "
                "fine-tune on the panel",
                UserWarning,
                stacklevel=3,
            )
            if not hasattr(self, "training_history_"):
                self.training_history_ = pd.DataFrame(columns=list(HISTORY_COLUMNS))
            return self
        # an absolute fh says nothing about the panel's own horizons
        relative = fh if fh is not None and fh.is_relative else None
        store, x_store = _stores(y, X, freq=None)  # frequency inferred
        horizon = self._train_horizon(relative, base.config.patch_size)
        self._fine_tune(base, store, x_store, horizon)
        return self

    def _pretrain_update(self, y, X=None, fh=None):
        """Continue fine-tuning the pretrained weights on another panel.

        Same parameters and return value as ``_pretrain``; training starts
        from ``tuned_model_`` and the history continues.
        """
        return self._pretrain(y, X=X, fh=fh)

    def save_pretrained(self, save_directory, *, dtype=None) -> None:
        """Write the weights in use as a checkpoint in the official layout.

        Fine-tuned weights (after a fine-tuning ``fit`` or ``pretrain``) or
        else the loaded checkpoint's; the folder can be given back as
        ``checkpoint`` (and loaded by uni2ts). The whole folder is staged
        beside the destination and swapped in at once, so a reader sees the
        old or the new checkpoint, never a mix, and a failed save leaves the
        old one.

        Parameters
        ----------
        save_directory : str or path-like
            Folder to write ``config.json`` and ``model.safetensors`` to.
        dtype : str or torch.dtype, optional
            Store the weights as ``"float16"``, ``"bfloat16"``, ``"float32"``
            or ``"float64"`` (default: as they are, float32).

        Examples
        --------
        Without fine-tuning, the loaded checkpoint's weights are written:

        >>> import os
        >>> import tempfile
        >>> import numpy as np
        >>> import pandas as pd
        >>> import torch
        >>> from moirai_moe_sk.forecaster import MoiraiMoEForecaster
        >>> from moirai_moe_sk.model import MoiraiMoEModel
        >>> y = pd.Series(np.sin(np.arange(48) / 4.0))
        >>> forecaster = MoiraiMoEForecaster(
        ...     "moirai-moe-sk-tiny", num_samples=5, random_state=0
        ... ).fit(y, fh=[1, 2, 3])
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     forecaster.save_pretrained(folder)
        ...     files = sorted(os.listdir(folder))
        ...     saved = MoiraiMoEModel.from_pretrained(folder)
        >>> files
        ['config.json', 'model.safetensors']
        >>> bundled = MoiraiMoEModel.from_pretrained("moirai-moe-sk-tiny")
        >>> torch.equal(saved.in_proj.weight, bundled.in_proj.weight)
        True
        """
        if getattr(self, "tuned_model_", None) is None and not self.is_fitted:
            msg = (
                "save_pretrained needs weights: call fit or pretrain first (or "
                "load the checkpoint with MoiraiMoEModel.from_pretrained)"
            )
            raise NotFittedError(msg)
        tuned = getattr(self, "tuned_model_", None)
        # the float32 weights, also when the layers compute in bfloat16
        model = tuned if tuned is not None else self._load_model()
        model.save_pretrained(save_directory, dtype=dtype)

    def _freq(self) -> Any:
        return getattr(self.cutoff, "freq", None)

    def _fit(self, y, X=None, fh=None):
        """Load the model (through the shared cache) and keep ``y``/``X`` as context.

        Parameters
        ----------
        y : pd.Series, pd.DataFrame (plain, pd-multiindex or pd_multiindex_hier)
            Target series: the context of the forecasts.
        X : pd.DataFrame, optional
            Exogenous series aligned with ``y``.
        fh : ForecastingHorizon, optional
            Not needed at fit time.

        Returns
        -------
        self : MoiraiMoEForecaster
        """
        self._prepare()
        self._y_store, self._x_store = _stores(y, X, freq=self._freq())
        pretrained = getattr(self, "tuned_model_", None) is not None
        if pretrained:  # after pretrain: keep its weights, y is only context
            self._model = None
        elif self.fit_strategy == "zero-shot":  # only the model predict runs
            self._model = self._load_model(self._torch_dtype)
        else:
            self._model = self._load_model()
            horizon = self._train_horizon(fh, self._model.config.patch_size)
            self._fine_tune(self._model, self._y_store, self._x_store, horizon)
        self.device_ = str(self._device)
        self.model_config_ = self._get_model().config
        return self

    def _update(self, y, X=None, update_params=True):
        """Append new observations to the context (nothing is reloaded).

        Parameters
        ----------
        y : sktime time series
            New target values; values at already known time stamps replace the
            old ones.
        X : sktime time series, optional
            New exogenous values.
        update_params : bool
            Ignored: the weights are not updated (refit, or ``pretrain`` on a
            panel, to fine-tune on new data).

        Returns
        -------
        self : MoiraiMoEForecaster
        """
        self._y_store = self._y_store.append(y, "y")
        if X is not None:
            self._x_store = (
                self._x_store.append(X, "X")
                if self._x_store is not None
                else convert.SeriesStore.from_sktime(X, "X", freq=self._freq())
            )
        return self

    # -------------------------------------------------------------- sampling
    def _draw_seed(self) -> int:
        """Draw the seed of this fit's sample paths.

        An int ``random_state`` is used as is (so seed ``s`` reproduces uni2ts'
        samples under ``torch.manual_seed(s)``); a numpy RandomState/Generator
        is drawn from; ``None`` draws fresh OS entropy, never the global RNG.
        Every predict call of one fitted state uses the same seed, so all
        ``predict_*`` methods see the same sample paths.
        """
        rs = self.random_state
        if rs is None:
            return secrets.randbits(63)
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(0, 2**31 - 1))
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(0, 2**63 - 1))
        return int(rs)

    def _generator(self) -> Any:
        import torch

        return torch.Generator(device=self._device).manual_seed(self._seed)

    def _sample_paths(self, fh, X, reduce):
        """Decode the horizon chunk by chunk and reduce each chunk's paths.

        ``reduce`` maps (series, num_samples, len(fh), variate) sample paths to
        an array with the series first; the results are concatenated in the
        order of the stored series. The draw is a pure function of the fitted
        state, ``fh`` (through its largest step) and ``X``, so repeated calls
        agree exactly, whatever the parallel backend.

        Returns
        -------
        values : np.ndarray
        horizon : convert.Horizon
        keys : list of tuple
        """
        store = self._y_store
        keys = store.keys
        horizon = convert.horizon_steps(fh, self.cutoff, store, keys)
        future_x = None
        if X is not None and self._x_store is not None:
            future_x = convert.SeriesStore.from_sktime(X, "X", freq=store.freq)
        elif X is not None:
            logger.debug("X passed to predict without X in fit is ignored")
        context_length = convert.resolve_context_length(
            self.context_length, store, self.model_config_.context_length
        )
        values = self._run_chunks(keys, horizon, future_x, context_length, reduce)
        return values, horizon, keys

    def _run_chunks(self, keys, horizon, future_x, context_length, reduce):
        """Plan chunks, build their arrays lazily and run them on the backend."""
        from sktime.utils.parallel import parallelize

        from . import _inference

        store = self._y_store
        model_config = self.model_config_
        patch = model_config.patch_size
        lengths = [min(len(store.frames[key]), context_length) for key in keys]
        # tokens of one series: targets and covariates over context and future
        n_var = store.num_variates
        n_cov = 0 if self._x_store is None else len(self._x_store.columns)
        future_tokens = -(-horizon.prediction_length // patch) * (n_var + n_cov)

        def bytes_per_series(length: int) -> int:
            context_tokens = -(-length // patch) * (n_var + n_cov)
            return _inference.estimate_series_bytes(
                model_config,
                context_tokens,
                future_tokens,
                int(self.num_samples),
                self.decoding,
            )

        chunks = _inference.plan_chunks(lengths, bytes_per_series, self.batch_size)
        backend = self.get_config().get("backend:parallel")
        params = self.get_config().get("backend:parallel:params")
        if backend == "multiprocessing":
            # joblib's multiprocessing pool forks a process whose torch thread
            # pool is already running; the forked workers deadlock
            msg = (
                "backend:parallel='multiprocessing' is not supported: forked "
                "workers deadlock in torch's thread pool. Use 'loky' (separate "
                "processes, the same forecasts), 'threading' or 'dask'"
            )
            raise ValueError(msg)
        in_process = backend in (None, "None", "threading")
        meta = {
            "model": self._inference_model(in_process),
            "device": str(self._device),
            "dtype": self._torch_dtype,
            "prediction_length": horizon.prediction_length,
            "num_samples": int(self.num_samples),
            "decoding": self.decoding,
            # exact mode keeps uni2ts' random stream (it samples every token);
            # fast mode draws only the patches it needs
            "reference_rng": self.decoding == "exact",
            "reduce": reduce,
        }

        def jobs():
            for number, rows in enumerate(chunks):
                chunk_keys = [keys[row] for row in rows]
                chunk_horizon = horizon.subset(rows)
                targets = convert.target_arrays(store, chunk_keys, context_length)
                covariates = convert.covariate_arrays(
                    self._x_store, future_x, chunk_keys, targets, chunk_horizon, store
                )
                yield {
                    "target": targets.target,
                    "observed": targets.observed,
                    "is_pad": targets.is_pad,
                    "known": covariates.known,
                    "known_observed": covariates.known_observed,
                    "past": covariates.past,
                    "past_observed": covariates.past_observed,
                    "steps": chunk_horizon.steps,
                    "seed": _inference.chunk_seed(self._seed, number),
                }

        results = parallelize(
            _inference.forecast_chunk,
            jobs(),
            meta=meta,
            backend=backend,
            backend_params=params,
        )
        order = np.concatenate(chunks)
        values = np.concatenate(results)
        out = np.empty_like(values)
        out[order] = values
        return out

    # -------------------------------------------------------------- predict
    def _predict(self, fh, X=None):
        """Point forecasts: the median (or mean) of the sample paths.

        Parameters
        ----------
        fh : ForecastingHorizon
            Out-of-sample horizon.
        X : sktime time series, optional
            Known-future covariates covering the horizon.

        Returns
        -------
        y_pred : same mtype as ``y`` in fit
        """
        reduce = functools.partial(convert.point_values, point=self.point)
        values, horizon, keys = self._sample_paths(fh, X, reduce)
        return convert.format_point(values, self._y_store, keys, horizon)

    def _predict_quantiles(self, fh, X, alpha):
        """Quantile forecasts: order statistics of the sample paths.

        Parameters
        ----------
        fh : ForecastingHorizon
            Out-of-sample horizon.
        X : sktime time series or None
            Known-future covariates covering the horizon.
        alpha : list of float
            Probabilities in [0, 1].

        Returns
        -------
        quantiles : pd.DataFrame
            Columns (variable, alpha), rows the forecast index.
        """
        reduce = functools.partial(convert.sample_quantiles, alpha=list(alpha))
        values, horizon, keys = self._sample_paths(fh, X, reduce)
        columns = self._get_columns(method="predict_quantiles", alpha=alpha)
        return convert.format_quantiles(values, columns, self._y_store, keys, horizon)

    def _predict_interval(self, fh, X, coverage):
        """Central prediction intervals from the same order statistics.

        Parameters
        ----------
        fh : ForecastingHorizon
            Out-of-sample horizon.
        X : sktime time series or None
            Known-future covariates covering the horizon.
        coverage : list of float
            Nominal coverages in [0, 1].

        Returns
        -------
        pred_int : pd.DataFrame
            Columns (variable, coverage, "lower"/"upper").
        """
        alpha = convert.interval_alpha(coverage)
        reduce = functools.partial(convert.sample_quantiles, alpha=alpha)
        values, horizon, keys = self._sample_paths(fh, X, reduce)
        columns = self._get_columns(method="predict_interval", coverage=coverage)
        return convert.format_quantiles(values, columns, self._y_store, keys, horizon)

    def _predict_var(self, fh, X=None, cov=False):
        """Variance of the sample paths (``ddof=0``), or their covariance over time.

        Parameters
        ----------
        fh : ForecastingHorizon
            Out-of-sample horizon.
        X : sktime time series, optional
            Known-future covariates covering the horizon.
        cov : bool
            If True, the covariance between forecast time stamps per variable.

        Returns
        -------
        pred_var : pd.DataFrame
        """
        reduce = functools.partial(convert.var_values, cov=cov)
        values, horizon, keys = self._sample_paths(fh, X, reduce)
        return convert.format_var(values, self._y_store, keys, horizon, cov)

    def _predict_proba(self, fh, X, marginal=True):
        """Return the sample paths as a skpro ``Empirical`` distribution.

        Parameters
        ----------
        fh : ForecastingHorizon
            Out-of-sample horizon.
        X : sktime time series or None
            Known-future covariates covering the horizon.
        marginal : bool
            If True, sampling from the result draws each time stamp
            independently; if False, whole sample paths (joint over time).

        Returns
        -------
        skpro.distributions.Empirical
        """
        try:
            from skpro.distributions import Empirical
        except ModuleNotFoundError as err:  # sktime's distributions live in skpro
            msg = (
                "predict_proba returns an skpro Empirical distribution of the sample "
                "paths and needs skpro: pip install 'moirai_moe_sk[proba]'"
            )
            raise ModuleNotFoundError(msg) from err

        paths, horizon, keys = self._sample_paths(fh, X, reduce=None)
        spl, index = convert.format_samples(paths, self._y_store, keys, horizon)
        columns = self._get_columns(method="predict")
        spl.columns = columns
        return Empirical(spl, time_indep=marginal, index=index, columns=columns)

    # -------------------------------------------------------------- testing
    @classmethod
    def get_test_params(cls, parameter_set="default"):
        """Return cheap parameter sets for sktime's estimator checks.

        Each points at a tiny random-weight checkpoint in the official layout,
        written once (atomically) into a folder under the system temp dir; no
        download happens.

        Parameters
        ----------
        parameter_set : str, default="default"
            Name of the set of test parameters to return.

        Returns
        -------
        params : list of dict
            Constructor parameters of the test instances.

        Examples
        --------
        >>> import os
        >>> from moirai_moe_sk.forecaster import MoiraiMoEForecaster
        >>> params = MoiraiMoEForecaster.get_test_params()
        >>> len(params)
        3
        >>> os.path.isfile(os.path.join(params[0]["checkpoint"], "config.json"))
        True
        >>> MoiraiMoEForecaster(**params[1]).point
        'mean'
        """
        first = _tiny_checkpoint("tiny-a", seed=0, num_layers=1, num_experts=4)
        second = _tiny_checkpoint("tiny-b", seed=1, num_layers=2, num_experts=8)
        # 4-step patches: sktime's pretrain checks use 10-step series, too short
        # for a training window of 16-step patches
        third = _tiny_checkpoint(
            "tiny-c", seed=2, num_layers=1, num_experts=4, patch_sizes=(4,)
        )
        return [
            {"checkpoint": first, "num_samples": 10, "random_state": 0},
            {
                "checkpoint": second,
                "num_samples": 7,
                "point": "mean",
                "context_length": 40,
                "batch_size": 2,
                "random_state": 42,
            },
            {
                "checkpoint": third,
                "num_samples": 5,
                "context_length": 32,
                "fit_strategy": "lora",
                "lora_rank": 2,
                "max_steps": 2,
                "train_batch_size": 4,
                "learning_rate": 1e-3,
                # train the two steps for real: with validation on sktime's
                # short test series, the starting weights may win (a warning)
                "validation_fraction": 0.0,
                "random_state": 7,
            },
        ]


def _stores(
    y: Any, X: Any, freq: Any
) -> tuple[convert.SeriesStore, convert.SeriesStore | None]:
    """Split ``y`` (and ``X``, if given) per instance onto a regular grid."""
    store = convert.SeriesStore.from_sktime(y, "y", freq=freq)
    x_store = (
        convert.SeriesStore.from_sktime(X, "X", freq=store.freq)
        if X is not None
        else None
    )
    return store, x_store


def _tiny_checkpoint(name: str, seed: int, **config: Any) -> str:
    """Write (once per machine) a tiny seeded checkpoint in the official layout.

    The folder name carries the package version and the configuration, so a
    format change writes a new folder. Creating the model never touches the
    global random state (``torch.random.fork_rng``).
    """
    import torch

    from ._version import __version__
    from .checkpoint import CONFIG_NAME, WEIGHTS_NAME
    from .model import MoiraiMoEConfig, MoiraiMoEModel

    tag = hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest()[:8]
    root = Path(tempfile.gettempdir()) / "moirai_moe_sk_test_checkpoints"
    folder = root / f"{name}-{__version__}-{tag}-seed{seed}"
    if (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file():
        return str(folder)
    root.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MoiraiMoEModel(MoiraiMoEConfig(d_model=64, d_ff=64, **config))
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    try:
        model.save_pretrained(staging)
        try:
            staging.rename(folder)
        except OSError:  # another process won the race: its copy is identical
            if not (folder / WEIGHTS_NAME).is_file():
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)
    return str(folder)
