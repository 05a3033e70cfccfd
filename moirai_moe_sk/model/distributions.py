"""The mixture output head of Moirai-MoE and its predictive distribution.

The head projects each token to the parameters of a mixture, per step of the
*next* patch: Student-t, normal with a fixed small scale, negative binomial and
log-normal components with softmax weights, all in normalised space. The
:class:`PackedMixture` unscales it affinely with the series' loc and scale.

Sampling takes an optional :class:`torch.Generator` and draws in exactly the
order and shapes of ``torch.distributions`` as uni2ts uses them, so a generator
seeded with ``s`` reproduces the reference's samples under ``torch.manual_seed(s)``
on the CPU: each component in order (Student-t: standard normal, then gamma;
normal; negative binomial: gamma, then Poisson; log-normal: normal), then the
mixture index (multinomial).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import MoiraiMoEConfig

__all__ = ["MixtureHead", "PackedMixture"]

_EPS = torch.finfo(torch.float32).eps
_TINY = torch.finfo(torch.float32).tiny
_HALF_LOG_2PI = math.log(math.sqrt(2 * math.pi))

#: parameter leaves of each component, in the order of the official checkpoints
COMPONENT_PARAMS: dict[str, tuple[str, ...]] = {
    "student_t": ("df", "loc", "scale"),
    "normal_fixed_scale": ("loc",),
    "negative_binomial": ("total_count", "logits"),
    "log_normal": ("loc", "scale"),
}


def _positive_scale(raw: torch.Tensor) -> torch.Tensor:
    return F.softplus(raw).clamp_min(_EPS)


def _domain_map(name: str, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map raw projections to valid parameters (uni2ts' ``domain_map``)."""
    if name == "student_t":
        return {
            "df": 2.0 + F.softplus(raw["df"]),
            "loc": raw["loc"],
            "scale": _positive_scale(raw["scale"]),
        }
    if name == "negative_binomial":
        return {"total_count": F.softplus(raw["total_count"]), "logits": raw["logits"]}
    if name == "log_normal":
        return {"loc": raw["loc"], "scale": _positive_scale(raw["scale"])}
    return {"loc": raw["loc"]}  # normal_fixed_scale


class MixtureHead(nn.Module):
    """Projection from token representations to mixture parameters.

    One linear layer per parameter leaf, each producing one value per patch step
    (four for the mixture logits, ``(component, step)`` flattened as
    ``component * patch + step``), as in the official checkpoints
    (``param_proj.proj.*``).

    Parameters
    ----------
    config : MoiraiMoEConfig
        Supplies ``d_model``, ``patch_size`` and ``mixture_components``.
    """

    def __init__(self, config: MoiraiMoEConfig) -> None:
        super().__init__()
        self.components = tuple(config.mixture_components)
        self.patch_size = config.patch_size
        self.fixed_scale = config.normal_fixed_scale
        d, p, k = config.d_model, config.patch_size, len(self.components)
        components = nn.ModuleList(
            nn.ModuleDict({leaf: nn.Linear(d, p) for leaf in COMPONENT_PARAMS[name]})
            for name in self.components
        )
        # named like the official ``param_proj.proj.*`` keys
        self.proj = nn.ModuleDict(
            {"weights_logits": nn.Linear(d, k * p), "components": components}
        )

    def forward(
        self, x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
    ) -> PackedMixture:
        """Build the predictive distribution of every token's next patch.

        Parameters
        ----------
        x : torch.Tensor
            (..., seq, d_model) encoder output.
        loc, scale : torch.Tensor
            (..., seq, 1) series statistics from the scaler.

        Returns
        -------
        PackedMixture
            Distribution with batch shape (..., seq, patch).
        """
        k, p = len(self.components), self.patch_size
        logits = self.proj["weights_logits"](x).unflatten(-1, (k, p)).transpose(-1, -2)
        projections = self.proj["components"].children()
        params = [
            _domain_map(name, {leaf: lin(x) for leaf, lin in proj.named_children()})
            for name, proj in zip(self.components, projections, strict=True)
        ]
        return PackedMixture(
            logits, self.components, params, loc, scale, fixed_scale=self.fixed_scale
        )


class PackedMixture:
    """Affinely unscaled mixture distribution, one per token and patch step.

    Parameters
    ----------
    logits : torch.Tensor
        (..., seq, patch, component) unnormalised mixture logits.
    components : sequence of str
        Component names, see :data:`COMPONENT_PARAMS`.
    params : sequence of dict
        Domain-mapped parameters of each component, each (..., seq, patch).
    loc, scale : torch.Tensor
        (..., seq, 1) affine unscaling: ``y = loc + scale * z``.
    fixed_scale : float
        Scale of the ``normal_fixed_scale`` component.

    Examples
    --------
    An equal-weight mixture of a Student-t and a narrow normal, for 3 tokens
    of 2-step patches, unscaled to ``10 + 2 * z``:

    >>> import torch
    >>> from moirai_moe_sk.model.distributions import PackedMixture
    >>> student_t = {
    ...     "df": torch.full((3, 2), 3.0),
    ...     "loc": torch.zeros(3, 2),
    ...     "scale": torch.ones(3, 2),
    ... }
    >>> normal = {"loc": torch.zeros(3, 2)}
    >>> distr = PackedMixture(
    ...     torch.zeros(3, 2, 2),
    ...     ["student_t", "normal_fixed_scale"],
    ...     [student_t, normal],
    ...     loc=torch.full((3, 1), 10.0),
    ...     scale=torch.full((3, 1), 2.0),
    ... )
    >>> distr.batch_shape
    torch.Size([3, 2])
    >>> distr.weights[0, 0].tolist()
    [0.5, 0.5]
    >>> distr.mean[0].tolist()
    [10.0, 10.0]
    """

    def __init__(
        self,
        logits: torch.Tensor,
        components: Sequence[str],
        params: Sequence[dict[str, torch.Tensor]],
        loc: torch.Tensor,
        scale: torch.Tensor,
        fixed_scale: float = 1e-3,
    ) -> None:
        self.log_weights = logits - logits.logsumexp(dim=-1, keepdim=True)
        self.components = tuple(components)
        self.params = list(params)
        self.loc = loc
        self.scale = scale
        self.fixed_scale = torch.tensor(fixed_scale, dtype=logits.dtype)

    @property
    def batch_shape(self) -> torch.Size:
        """Shape (..., seq, patch) of the per-step distributions."""
        return self.log_weights.shape[:-1]

    @property
    def weights(self) -> torch.Tensor:
        """Mixture probabilities, (..., seq, patch, component)."""
        return torch.softmax(self.log_weights, dim=-1)

    def take(self, index: torch.Tensor) -> PackedMixture:
        """Restrict to the tokens ``index`` (along the seq dimension).

        Examples
        --------
        >>> import torch
        >>> from moirai_moe_sk.model.distributions import PackedMixture
        >>> distr = PackedMixture(
        ...     torch.zeros(3, 2, 1),
        ...     ["normal_fixed_scale"],
        ...     [{"loc": torch.zeros(3, 2)}],
        ...     loc=torch.tensor([[0.0], [1.0], [2.0]]),
        ...     scale=torch.ones(3, 1),
        ... )
        >>> last = distr.take(torch.tensor([0, 2]))
        >>> last.batch_shape
        torch.Size([2, 2])
        >>> last.mean.tolist()
        [[0.0, 0.0], [2.0, 2.0]]
        """

        def pick(t: torch.Tensor, offset: int) -> torch.Tensor:
            return t.index_select(t.dim() - offset, index)

        params = [{k: pick(v, 2) for k, v in par.items()} for par in self.params]
        out = PackedMixture.__new__(PackedMixture)
        out.log_weights = pick(self.log_weights, 3)
        out.components, out.params = self.components, params
        out.loc, out.scale = pick(self.loc, 2), pick(self.scale, 2)
        out.fixed_scale = self.fixed_scale
        return out

    def _normal_scale(self, like: torch.Tensor) -> torch.Tensor:
        return self.fixed_scale.to(like.device).expand_as(like)

    # ------------------------------------------------------------------ moments
    def _component_means(self) -> list[torch.Tensor]:
        means = []
        for name, par in zip(self.components, self.params, strict=True):
            if name == "negative_binomial":
                means.append(par["total_count"] * torch.exp(par["logits"]))
            elif name == "log_normal":
                means.append((par["loc"] + par["scale"].pow(2) / 2).exp())
            else:  # student_t (df > 2 always) and normal
                means.append(par["loc"])
        return means

    @property
    def mean(self) -> torch.Tensor:
        """Predictive mean in data units, (..., seq, patch)."""
        weights = torch.stack(self.weights.unbind(dim=-1))
        base = (weights * torch.stack(self._component_means())).sum(dim=0)
        return base * self.scale + self.loc

    # ------------------------------------------------------------ log density
    def _component_log_prob(
        self, name: str, par: dict[str, torch.Tensor], z: torch.Tensor
    ) -> torch.Tensor:
        if name == "student_t":
            df, loc, scale = par["df"], par["loc"], par["scale"]
            y = (z - loc) / scale
            norm = (
                scale.log()
                + 0.5 * df.log()
                + 0.5 * math.log(math.pi)
                + torch.lgamma(0.5 * df)
                - torch.lgamma(0.5 * (df + 1.0))
            )
            return -0.5 * (df + 1.0) * torch.log1p(y**2.0 / df) - norm
        if name == "normal_fixed_scale":
            scale = self._normal_scale(par["loc"])
            return (
                -((z - par["loc"]) ** 2) / (2 * scale**2) - scale.log() - _HALF_LOG_2PI
            )
        if name == "negative_binomial":
            total, logits = par["total_count"], par["logits"]
            unnormalised = total * F.logsigmoid(-logits) + F.logsigmoid(logits) * z
            lbeta = (
                torch.lgamma(1 + z) + torch.lgamma(total) - torch.lgamma(1 + z + total)
            )
            return unnormalised - (lbeta + torch.log(total + z))
        # log_normal: normal density of log(z), with the Jacobian of exp
        x = z.log()
        loc, scale = par["loc"], par["scale"]
        normal = -((x - loc) ** 2) / (2 * scale**2) - scale.log() - _HALF_LOG_2PI
        return -x + normal

    @staticmethod
    def _support(name: str, z: torch.Tensor) -> torch.Tensor:
        if name == "negative_binomial":
            return z >= 0
        if name == "log_normal":
            return z > 0
        return ~torch.isnan(z)  # the real line

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-density of ``value`` (data units, broadcastable to the batch shape).

        Components whose support excludes a value (negative binomial below 0,
        log-normal at or below 0) contribute nothing there.

        Examples
        --------
        A normal of scale 1 unscaled to ``10 + 2 * z`` has density
        ``1 / (2 * sqrt(2 * pi))`` at 10:

        >>> import math
        >>> import torch
        >>> from moirai_moe_sk.model.distributions import PackedMixture
        >>> distr = PackedMixture(
        ...     torch.zeros(3, 2, 1),
        ...     ["normal_fixed_scale"],
        ...     [{"loc": torch.zeros(3, 2)}],
        ...     loc=torch.full((3, 1), 10.0),
        ...     scale=torch.full((3, 1), 2.0),
        ...     fixed_scale=1.0,
        ... )
        >>> lp = distr.log_prob(torch.tensor(10.0))
        >>> lp.shape
        torch.Size([3, 2])
        >>> round(lp[0, 0].item(), 4), round(-math.log(2 * math.sqrt(2 * math.pi)), 4)
        (-1.6121, -1.6121)

        A log-normal gives no density to values at or below 0:

        >>> log_normal = PackedMixture(
        ...     torch.zeros(1, 1, 1),
        ...     ["log_normal"],
        ...     [{"loc": torch.zeros(1, 1), "scale": torch.ones(1, 1)}],
        ...     loc=torch.zeros(1, 1),
        ...     scale=torch.ones(1, 1),
        ... )
        >>> log_normal.log_prob(torch.tensor(-1.0))
        tensor([[-inf]])
        """
        z = (value - self.loc) / self.scale
        z = z.expand(torch.broadcast_shapes(z.shape, self.batch_shape))
        comp_lp = []
        for name, par in zip(self.components, self.params, strict=True):
            inside = self._support(name, z)
            safe = torch.where(inside, z, torch.ones_like(z))
            lp = self._component_log_prob(name, par, safe)
            comp_lp.append(torch.where(inside, lp, float("-inf")))
        stacked = torch.stack(comp_lp)
        log_w = torch.stack(self.log_weights.expand(*z.shape, -1).unbind(dim=-1))
        log_w = torch.where(torch.isinf(stacked), 0.0, log_w)
        mixture = (log_w + stacked).logsumexp(dim=0)
        return -self.scale.abs().log() + mixture

    # --------------------------------------------------------------- sampling
    def _sample_component(
        self,
        name: str,
        par: dict[str, torch.Tensor],
        shape: torch.Size,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        if name == "student_t":
            df = par["df"]
            x = torch.empty(shape, dtype=df.dtype, device=df.device).normal_(
                generator=generator
            )
            z = torch._standard_gamma(  # Chi2(df) = Gamma(df / 2, rate 1/2)
                (0.5 * df).expand(shape), generator=generator
            ) / torch.tensor(0.5, dtype=df.dtype, device=df.device).expand(shape)
            z = z.clamp_min(_TINY)
            return par["loc"] + par["scale"] * (x * torch.rsqrt(z / df))
        if name == "normal_fixed_scale":
            loc = par["loc"]
            scale = self._normal_scale(loc)
            return torch.normal(
                loc.expand(shape), scale.expand(shape), generator=generator
            )
        if name == "negative_binomial":
            total, logits = par["total_count"], par["logits"]
            rate = torch.exp(-logits)
            gamma = torch._standard_gamma(total.expand(shape), generator=generator)
            gamma = (gamma / rate.expand(shape)).clamp_min(_TINY)
            return torch.poisson(gamma, generator=generator)
        normal = torch.normal(
            par["loc"].expand(shape), par["scale"].expand(shape), generator=generator
        )
        return normal.exp()

    @torch.no_grad()
    def sample(
        self,
        sample_shape: Sequence[int] = (),
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw samples in data units, shape ``sample_shape + batch_shape``.

        Parameters
        ----------
        sample_shape : sequence of int
            Leading sample dimensions.
        generator : torch.Generator, optional
            Source of randomness; the global generator when omitted.

        Examples
        --------
        >>> import torch
        >>> from moirai_moe_sk.model.distributions import PackedMixture
        >>> distr = PackedMixture(
        ...     torch.zeros(3, 2, 1),
        ...     ["normal_fixed_scale"],
        ...     [{"loc": torch.zeros(3, 2)}],
        ...     loc=torch.full((3, 1), 10.0),
        ...     scale=torch.full((3, 1), 2.0),
        ...     fixed_scale=1.0,
        ... )
        >>> paths = distr.sample((1000,), generator=torch.Generator().manual_seed(0))
        >>> paths.shape, paths.dtype
        (torch.Size([1000, 3, 2]), torch.float32)
        >>> bool((paths.mean() - 10).abs() < 0.5)
        True

        The same seed draws the same samples:

        >>> again = distr.sample((1000,), generator=torch.Generator().manual_seed(0))
        >>> torch.equal(paths, again)
        True
        """
        sample_shape = torch.Size(sample_shape)
        shape = sample_shape + self.batch_shape
        draws = torch.stack(
            [
                self._sample_component(name, par, shape, generator)
                for name, par in zip(self.components, self.params, strict=True)
            ],
            dim=-1,
        )
        probs = self.weights.reshape(-1, len(self.components))
        index = torch.multinomial(
            probs, max(sample_shape.numel(), 1), True, generator=generator
        )
        index = index.T.reshape(shape)
        z = draws.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        return self.loc + self.scale * z
