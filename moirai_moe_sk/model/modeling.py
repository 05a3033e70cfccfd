"""The Moirai-MoE network: scaler, input projection, sparse transformer, mixture head."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import MoiraiMoEConfig
from .distributions import MixtureHead, PackedMixture
from .layers import MoiraiMoEAttention, RMSNorm, RotaryTimeEmbedding, attention_bias
from .moe import MoiraiMoEFeedForward
from .scaler import packed_std_scaler

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["MoiraiMoEEncoder", "MoiraiMoEEncoderLayer", "MoiraiMoEModel"]


class MoiraiMoEEncoderLayer(nn.Module):
    """Pre-norm layer: ``x + attn(norm1(x))``, then ``x + moe(norm2(x))``.

    Parameters
    ----------
    config : MoiraiMoEConfig
        Model hyper-parameters.
    """

    def __init__(self, config: MoiraiMoEConfig) -> None:
        super().__init__()
        self.self_attn = MoiraiMoEAttention(config)
        self.ffn = MoiraiMoEFeedForward(config)
        self.norm1 = RMSNorm(config.d_model)
        self.norm2 = RMSNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout_p)

    def forward(
        self,
        x: torch.Tensor,
        allowed: torch.Tensor,
        same_variate: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        centroid: torch.Tensor | None,
        kv_cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Transform (batch, seq, d_model) tokens (keys and values go to ``kv_cache``)."""
        attn = self.self_attn(self.norm1(x), allowed, same_variate, rope, kv_cache)
        x = x + self.dropout(attn)
        moe_out, _ = self.ffn(self.norm2(x), centroid)
        return x + moe_out


class MoiraiMoEEncoder(nn.Module):
    """Stack of sparse layers sharing one rotary embedding, with a final norm.

    Attributes
    ----------
    centroid : torch.Tensor
        (layer, expert, d_model) float64 gate centroids (centroid gating only).
    compute_dtype : torch.dtype
        Floating type of the layers' weights and activations (float32 unless
        changed by :meth:`MoiraiMoEModel.set_compute_dtype`); the encoder takes
        and returns float32.
    """

    def __init__(self, config: MoiraiMoEConfig) -> None:
        super().__init__()
        self.rotary = RotaryTimeEmbedding(config.head_dim // 2, config.max_seq_len)
        self.layers = nn.ModuleList(
            MoiraiMoEEncoderLayer(config) for _ in range(config.num_layers)
        )
        self.norm = RMSNorm(config.d_model)
        #: recompute each layer's activations in the backward pass (training
        #: only): memory grows with one layer instead of all of them
        self.gradient_checkpointing = False
        self.centroid: torch.Tensor | None
        if config.gate == "centroid":
            centroid = torch.randn(
                config.num_layers, config.num_experts, config.d_model
            ).double()
            self.register_buffer("centroid", centroid)
        else:
            self.centroid = None

    def forward(
        self,
        x: torch.Tensor,
        sample_id: torch.Tensor,
        time_id: torch.Tensor,
        variate_id: torch.Tensor,
        kv_cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Encode (batch, seq, d_model) tokens with their (batch, seq) ids.

        If ``kv_cache`` is a list, each layer appends its attention keys and
        values to it (see :mod:`moirai_moe_sk.model.decoding`).
        """
        allowed, same_variate = attention_bias(sample_id, time_id, variate_id)
        rope = self.rotary.tables(time_id)
        dtype = self.compute_dtype
        x = x.to(dtype)
        rope = (rope[0].to(dtype), rope[1].to(dtype))
        for index, layer in enumerate(self.layers):
            centroid = None if self.centroid is None else self.centroid[index]
            if (
                self.gradient_checkpointing
                and self.training
                and torch.is_grad_enabled()
            ):
                x = checkpoint(
                    layer, x, allowed, same_variate, rope, centroid, use_reentrant=False
                )
            else:
                x = layer(x, allowed, same_variate, rope, centroid, kv_cache)
        return self.norm(x.float())

    @property
    def compute_dtype(self) -> torch.dtype:
        """Floating type the layers compute in."""
        return next(self.layers.parameters(), self.norm.weight).dtype


class MoiraiMoEModel(nn.Module):
    """Moirai-MoE: a decoder-only, sparse mixture-of-experts forecaster.

    The forward pass takes the packed token layout of uni2ts: one token is a
    16-step patch of one variate, tokens of several series and variates share a
    sequence and are told apart by their ids. It returns the predictive
    distribution of every token's *next* patch.

    Parameters
    ----------
    config : MoiraiMoEConfig, optional
        Hyper-parameters; the small release's by default.

    Examples
    --------
    >>> import torch
    >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
    >>> cfg = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
    >>> model = MoiraiMoEModel(cfg).eval()
    >>> tokens = torch.randn(1, 3, 16)
    >>> ids = torch.ones(1, 3, dtype=torch.long)
    >>> distr = model(
    ...     tokens, torch.ones(1, 3, 16, dtype=torch.bool), ids,
    ...     torch.arange(3)[None], ids * 0, torch.zeros(1, 3, dtype=torch.bool),
    ... )
    >>> distr.mean.shape
    torch.Size([1, 3, 16])
    """

    def __init__(self, config: MoiraiMoEConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MoiraiMoEConfig()
        self.in_proj = nn.Linear(config.patch_size, config.d_model)
        self.res_proj = nn.Linear(config.patch_size, config.d_model)
        self.feat_proj = nn.Linear(config.d_model, config.d_model)
        self.encoder = MoiraiMoEEncoder(config)
        self.param_proj = MixtureHead(config)

    # ----------------------------------------------------------------- forward
    def scale(
        self,
        target: torch.Tensor,
        observed_mask: torch.Tensor,
        sample_id: torch.Tensor,
        variate_id: torch.Tensor,
        prediction_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Series loc and scale, ``(*, seq, 1)``, from observed non-prediction values.

        Examples
        --------
        Three tokens of one series, the last one to be predicted: the
        statistics come from the first two (the values 0 to 31).

        >>> import torch
        >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
        >>> cfg = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
        >>> model = MoiraiMoEModel(cfg)
        >>> target = torch.arange(48.0).view(1, 3, 16)
        >>> observed = torch.ones(1, 3, 16, dtype=torch.bool)
        >>> ids = torch.ones(1, 3, dtype=torch.long)
        >>> predict = torch.tensor([[False, False, True]])
        >>> loc, scale = model.scale(target, observed, ids, ids * 0, predict)
        >>> loc.shape
        torch.Size([1, 3, 1])
        >>> loc[0, :, 0].tolist(), round(scale[0, 0, 0].item(), 4)
        ([15.5, 15.5, 15.5], 9.3808)
        """
        if not self.config.scaling:
            shape = (*target.shape[:-1], 1)
            return target.new_zeros(shape), target.new_ones(shape)
        mask = observed_mask & ~prediction_mask.unsqueeze(-1)
        return packed_std_scaler(target, mask, sample_id, variate_id)

    def embed(self, scaled: torch.Tensor) -> torch.Tensor:
        """Residual-MLP projection of scaled patches (..., patch) to tokens.

        Examples
        --------
        >>> import torch
        >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
        >>> cfg = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
        >>> model = MoiraiMoEModel(cfg)
        >>> model.embed(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 64])
        """
        return self.feat_proj(F.silu(self.in_proj(scaled))) + self.res_proj(scaled)

    def forward(
        self,
        target: torch.Tensor,
        observed_mask: torch.Tensor,
        sample_id: torch.Tensor,
        time_id: torch.Tensor,
        variate_id: torch.Tensor,
        prediction_mask: torch.Tensor,
        patch_size: torch.Tensor | None = None,
        *,
        tokens: torch.Tensor | None = None,
        kv_cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> PackedMixture:
        """Predict the distribution of each token's next patch.

        Parameters
        ----------
        target : torch.Tensor
            ``(*, seq, patch)`` float values; prediction tokens hold any finite value.
        observed_mask : torch.Tensor
            ``(*, seq, patch)`` bool, True where a value was observed.
        sample_id : torch.Tensor
            ``(*, seq)`` int; tokens attend only within one sample id, 0 marks padding.
        time_id : torch.Tensor
            ``(*, seq)`` int patch index in time; attention is causal over it.
        variate_id : torch.Tensor
            ``(*, seq)`` int variate of each token.
        prediction_mask : torch.Tensor
            ``(*, seq)`` bool, True for tokens to forecast (excluded from the scaler).
        patch_size : torch.Tensor, optional
            ``(*, seq)`` int patch length of each token; must equal the configured
            one (accepted for compatibility with the uni2ts signature).
        tokens : torch.Tensor, optional
            (n,) increasing indices of the tokens to encode. The scaler still
            uses every token, but only these pass through the transformer, so
            tokens that cannot influence them (later in time) can be left out.
            The other tokens' distributions are computed from a zero
            representation and are meaningless; they keep the full shape so
            that sampling consumes the random stream as over all tokens.
        kv_cache : list, optional
            If given, each layer appends its attention keys and values (of the
            encoded tokens) to it; see :mod:`moirai_moe_sk.model.decoding`.

        Returns
        -------
        PackedMixture
            Distribution with batch shape ``(*, seq, patch)``, in data units.

        Examples
        --------
        Two series of 40 steps, packed to forecast 20 steps (two future
        tokens each):

        >>> import torch
        >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
        >>> cfg = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
        >>> from moirai_moe_sk.model.packing import pack
        >>> model = MoiraiMoEModel(cfg).eval()
        >>> batch = pack(
        ...     torch.randn(2, 40, 1),
        ...     torch.ones(2, 40, 1, dtype=torch.bool),
        ...     torch.zeros(2, 40, dtype=torch.bool),
        ...     prediction_length=20,
        ... )
        >>> with torch.no_grad():
        ...     distr = model(**batch.inputs())
        >>> distr.batch_shape
        torch.Size([2, 5, 16])
        >>> distr.mean[batch.prediction_mask].shape
        torch.Size([4, 16])
        """
        if patch_size is not None and bool(
            (patch_size != self.config.patch_size).any()
        ):
            msg = (
                f"this model uses patch size {self.config.patch_size} only, got "
                f"{sorted(set(patch_size.unique().tolist()))}"
            )
            raise ValueError(msg)
        lead = target.shape[:-2]
        seq = target.shape[-2]

        def flat(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(-1, seq, *t.shape[len(lead) + 1 :])

        target, observed_mask = flat(target), flat(observed_mask)
        sample_id, time_id = flat(sample_id), flat(time_id)
        variate_id, prediction_mask = flat(variate_id), flat(prediction_mask)

        loc, scale = self.scale(
            target, observed_mask, sample_id, variate_id, prediction_mask
        )
        scaled = (target - loc) / scale
        if tokens is None:
            reprs = self.encoder(
                self.embed(scaled), sample_id, time_id, variate_id, kv_cache
            )
        else:
            reprs = scaled.new_zeros(*scaled.shape[:-1], self.config.d_model)
            reprs[:, tokens] = self.encoder(
                self.embed(scaled[:, tokens]),
                sample_id[:, tokens],
                time_id[:, tokens],
                variate_id[:, tokens],
                kv_cache,
            )
        distr = self.param_proj(reprs, loc, scale)
        if len(lead) != 1:
            distr = _reshape_mixture(distr, (*lead, seq))
        return distr

    def set_compute_dtype(self, dtype: torch.dtype) -> MoiraiMoEModel:
        """Run the transformer layers in ``dtype`` (for example ``torch.bfloat16``).

        The layers' weights are converted in place; the input projection, the
        scaler (float64), the gate centroids (float64, cast per call), the final
        norm and the mixture head stay in float32, so sample paths are always
        drawn in float32. Returns the model.

        Examples
        --------
        >>> import torch
        >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
        >>> cfg = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
        >>> model = MoiraiMoEModel(cfg).set_compute_dtype(torch.bfloat16)
        >>> model.encoder.compute_dtype, model.in_proj.weight.dtype
        (torch.bfloat16, torch.float32)
        """
        if not dtype.is_floating_point:
            msg = f"compute dtype must be a floating type, got {dtype}"
            raise ValueError(msg)
        self.encoder.layers.to(dtype)
        return self

    # -------------------------------------------------------------- checkpoints
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str | torch.device = "cpu",
    ) -> MoiraiMoEModel:
        """Load a checkpoint in the official layout, strictly.

        Parameters
        ----------
        name_or_path : str or path
            A local folder holding ``config.json`` and ``model.safetensors``, or a
            Hugging Face hub id such as ``"Salesforce/moirai-moe-1.0-R-small"``.
        revision : str, optional
            Hub revision (branch, tag or commit); ignored for local folders.
        cache_dir : str or path, optional
            Hub cache folder.
        local_files_only : bool
            Use only already cached hub files.
        token : str or bool, optional
            Hub access token.
        map_location : str or torch.device
            Device to load the weights to: ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"mps"`` or ``"auto"`` (CUDA when available).

        Returns
        -------
        MoiraiMoEModel
            The model, in eval mode.

        Raises
        ------
        moirai_moe_sk.exceptions.CheckpointError
            On a missing folder, a malformed config, a config whose sizes do not
            match the weights, a missing, unexpected, mis-shaped or non-finite
            tensor, or an unreachable hub.
        ValueError
            If ``map_location`` is unknown, ``"meta"`` or not available here.

        Examples
        --------
        The bundled tiny checkpoint loads offline (its forecasts are
        meaningless):

        >>> from moirai_moe_sk.model import MoiraiMoEModel
        >>> model = MoiraiMoEModel.from_pretrained("moirai-moe-sk-tiny")
        >>> model.training, model.config.d_model, model.config.num_experts
        (False, 128, 16)
        """
        from ..checkpoint import load_checkpoint

        return load_checkpoint(
            cls,
            name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            map_location=map_location,
        )

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        """Write ``config.json`` and ``model.safetensors`` in the official layout.

        The checkpoint is written to a new folder beside ``save_directory`` and
        renamed into place when complete, so a failed save leaves the previous
        checkpoint and a reader sees the previous or the new one, never a mix;
        other files in the folder are kept (see
        :func:`~moirai_moe_sk.checkpoint.save_checkpoint`). ``dtype``
        (``"float16"``, ``"bfloat16"``, ``"float32"``, ``"float64"`` or the torch
        dtype) stores the weights in that floating type; they are read back as
        float32.

        Raises
        ------
        TypeError, ValueError
            If ``dtype`` is not one of those, or ``save_directory`` is a file.

        Examples
        --------
        >>> import os
        >>> import tempfile
        >>> import torch
        >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
        >>> cfg = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
        >>> model = MoiraiMoEModel(cfg)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     model.save_pretrained(folder)
        ...     files = sorted(os.listdir(folder))
        ...     loaded = MoiraiMoEModel.from_pretrained(folder)
        >>> files
        ['config.json', 'model.safetensors']
        >>> loaded.config == model.config
        True
        >>> torch.equal(loaded.in_proj.weight, model.in_proj.weight)
        True

        Half-precision weights are read back as float32:

        >>> with tempfile.TemporaryDirectory() as folder:
        ...     model.save_pretrained(folder, dtype=torch.float16)
        ...     half = MoiraiMoEModel.from_pretrained(folder)
        >>> half.in_proj.weight.dtype
        torch.float32
        """
        from ..checkpoint import save_checkpoint

        save_checkpoint(self, save_directory, dtype=dtype)

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """Return the weights under the official uni2ts key names and shapes.

        Examples
        --------
        The experts, stacked here, are separate modules in uni2ts:

        >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
        >>> cfg = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
        >>> model = MoiraiMoEModel(cfg)
        >>> model.state_dict()["encoder.layers.0.ffn.fc1"].shape
        torch.Size([4, 64, 64])
        >>> state = model.official_state_dict()
        >>> state["encoder.layers.0.ffn.experts.3.fc1.weight"].shape
        torch.Size([64, 64])
        """
        from ..checkpoint import to_official

        return to_official(self.state_dict(), self.config)

    def load_official_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load weights given under the official key names, strictly.

        Examples
        --------
        >>> import torch
        >>> from moirai_moe_sk.model import MoiraiMoEConfig, MoiraiMoEModel
        >>> cfg = MoiraiMoEConfig(d_model=64, d_ff=64, num_layers=1, num_experts=4)
        >>> source, target = MoiraiMoEModel(cfg), MoiraiMoEModel(cfg)
        >>> target.load_official_state_dict(source.official_state_dict())
        >>> pairs = zip(source.state_dict().values(), target.state_dict().values())
        >>> all(torch.equal(a, b) for a, b in pairs)
        True
        """
        from ..checkpoint import from_official

        self.load_state_dict(from_official(state, self.config), strict=True)


def _reshape_mixture(distr: PackedMixture, lead: tuple[int, ...]) -> PackedMixture:
    def fix(t: torch.Tensor, tail: int) -> torch.Tensor:
        return t.reshape(*lead, *t.shape[t.dim() - tail :])

    distr.log_weights = fix(distr.log_weights, 2)
    distr.params = [{k: fix(v, 1) for k, v in par.items()} for par in distr.params]
    distr.loc, distr.scale = fix(distr.loc, 1), fix(distr.scale, 1)
    return distr
