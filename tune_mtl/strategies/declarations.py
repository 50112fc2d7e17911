"""Every strategy's declaration, in one table (alphabetical): names, family, summary, knobs, what it needs of
the data set and the model, and its implementation class. No torch here: the search driver validates a search
space, checks strategies against the data set and the model and prints `launch.py strategies` from this table
alone, and imports an implementation only inside a trial (`strategies.build`).

Adding a strategy: its knobs dataclass (if it has knobs) and its `StrategyDeclaration` here, added to
`DECLARATIONS`; its class in `tune_mtl/strategies/<name>.py` with `declaration=declared.<NAME>`
(CONTRIBUTING.md). tests/test_strategy_declarations.py checks that table and classes agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tune_mtl.core.errors import UserError
from tune_mtl.strategies.declaration import StrategyDeclaration
from tune_mtl.strategies.knobs import StrategyKnobs, knob


@dataclass(frozen=True)
class AlignedMTLKnobs(StrategyKnobs):
    scale: Literal["min", "median", "rmse"] = knob(
        "min", help="common singular value: smallest (paper), median, or root mean square")

ALIGNED_MTL = StrategyDeclaration(
    name="aligned-mtl",
    family="gradient_aggregation",
    summary="Aligned-MTL: rescale the Jacobian's singular values to be equal, then sum the rows",
    implementation="tune_mtl.strategies.aligned_mtl:AlignedMTL",
    aliases=("amtl", "alignedmtl"),
    knobs=AlignedMTLKnobs,
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class AutoLambdaKnobs(StrategyKnobs):
    weight_lr: float = knob(0.0001, low=1e-08, high=10.0, help="Adam step size of the task weights")
    weight_init: float = knob(0.1, low=0.0, high=100.0, help="initial weight of every task")
    virtual_lr: float = knob(0.001, low=1e-08, high=10.0, help="step size of the virtual SGD step")

AUTOLAMBDA = StrategyDeclaration(
    name="autolambda",
    family="auxiliary",
    summary="task weights meta-learned on the main task's validation loss (one virtual step); task 0 main",
    implementation="tune_mtl.strategies.autolambda:AutoLambda",
    aliases=("auto-lambda", "auto_lambda", "autol"),
    knobs=AutoLambdaKnobs,
    needs_validation_batch=True,
    needs_auxiliary_tasks=True,
)


@dataclass(frozen=True)
class CAGradKnobs(StrategyKnobs):
    alpha: float = knob(0.5, low=0.0, high=0.999999, help="radius of the ball around g0, in units of |g0|")
    rescale: int = knob(1, low=0, high=2, help="divide the update by 1 (0), 1 + alpha^2 (1) or 1 + alpha (2)")

CAGRAD = StrategyDeclaration(
    name="cagrad",
    family="gradient_aggregation",
    summary="conflict-averse gradient descent: best worst-case task improvement near the mean gradient",
    implementation="tune_mtl.strategies.cagrad:CAGrad",
    aliases=("ca-grad",),
    knobs=CAGradKnobs,
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class DBMTLKnobs(StrategyKnobs):
    beta: float = knob(0.9, low=0.0, high=1.0, help="EMA factor of the task gradients")
    beta_sigma: float = knob(0.0, low=0.0, high=10.0, help="decay exponent: EMA factor beta / step^beta_sigma")

DB_MTL = StrategyDeclaration(
    name="db-mtl",
    family="gradient_aggregation",
    summary="log losses + EMA task gradients rescaled to the largest norm",
    implementation="tune_mtl.strategies.db_mtl:DBMTL",
    aliases=("dbmtl", "db_mtl"),
    knobs=DBMTLKnobs,
    needs_shared_parameters=True,
)


DUALPROJ = StrategyDeclaration(
    name="dualproj",
    family="gradient_aggregation",
    summary="mean gradient projected onto the dual cone of the task gradients",
    implementation="tune_mtl.strategies.dualproj:DualProj",
    aliases=("dual-proj",),
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class DWAKnobs(StrategyKnobs):
    temperature: float = knob(2.0, low=0.001, high=1000.0, help="softmax temperature T (MTAN: 2)")

DWA = StrategyDeclaration(
    name="dwa",
    family="loss_weighting",
    summary="dynamic weight average: T * softmax(loss ratio of the last two epochs / temperature)",
    implementation="tune_mtl.strategies.dwa:DWA",
    aliases=("dynamic-weight-average",),
    knobs=DWAKnobs,
)


@dataclass(frozen=True)
class ExcessMTLKnobs(StrategyKnobs):
    robust_step_size: float = knob(0.01, low=0.0, high=10.0, help="step of the weight update")

EXCESSMTL = StrategyDeclaration(
    name="excessmtl",
    family="loss_weighting",
    summary="exponentiated-gradient task weights from AdaGrad-scaled excess-risk estimates",
    implementation="tune_mtl.strategies.excessmtl:ExcessMTL",
    aliases=("excess-mtl",),
    knobs=ExcessMTLKnobs,
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class FairGradKnobs(StrategyKnobs):
    alpha: float = knob(1.0, low=0.001, high=100.0, help="fairness exponent (1: proportional fairness)")

FAIRGRAD = StrategyDeclaration(
    name="fairgrad",
    family="gradient_aggregation",
    summary="alpha-fair task weights: solve (J J^T) w = w^(-1/alpha)",
    implementation="tune_mtl.strategies.fairgrad:FairGrad",
    knobs=FairGradKnobs,
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class FAMOKnobs(StrategyKnobs):
    w_lr: float = knob(0.025, low=0.0, high=10.0, help="Adam learning rate of the task logits")
    gamma: float = knob(0.001, low=0.0, high=1.0, help="weight decay of the task logits")

FAMO = StrategyDeclaration(
    name="famo",
    family="loss_weighting",
    summary="balanced loss decrease: softmax log-loss weights updated from the observed loss change",
    implementation="tune_mtl.strategies.famo:FAMO",
    knobs=FAMOKnobs,
)


@dataclass(frozen=True)
class FORUMKnobs(StrategyKnobs):
    phi: float = knob(0.1, low=0.0, high=100.0, help="weight of the lower-level constraint (FORUM_phi)")
    inner_lr: float = knob(0.1, low=0.0, high=10.0, help="SGD step size of the lower-level look-ahead")
    inner_steps: int = knob(5, low=1, high=100, help="lower-level SGD steps to estimate min_w f")
    outer_lr: float = knob(0.001, low=0.0, high=10.0, help="Adam learning rate of the loss-weight logits")

FORUM = StrategyDeclaration(
    name="forum",
    family="gradient_aggregation",
    summary="bilevel (value-function) multi-gradient method: learned loss weights + constrained MGDA",
    implementation="tune_mtl.strategies.forum:FORUM",
    knobs=FORUMKnobs,
)


@dataclass(frozen=True)
class GCosimKnobs(StrategyKnobs):
    weighted: bool = knob(False, help="scale each auxiliary gradient by max(0, cos) instead of 0/1")

GCOSIM = StrategyDeclaration(
    name="gcosim",
    family="auxiliary",
    summary="use an auxiliary gradient only when its cosine with the main-task gradient is >= 0; task 0 main",
    implementation="tune_mtl.strategies.gcosim:GCosim",
    aliases=("gradient-cosine-similarity", "cosine-similarity"),
    knobs=GCosimKnobs,
    needs_auxiliary_tasks=True,
    needs_shared_parameters=True,
)


GLS = StrategyDeclaration(
    name="gls",
    family="loss_weighting",
    summary="geometric loss strategy: minimise (prod_t L_t)^(1/T)",
    implementation="tune_mtl.strategies.gls:GLS",
    aliases=("geo", "geometric", "geometric-loss"),
)


@dataclass(frozen=True)
class GradDropKnobs(StrategyKnobs):
    leak: float = knob(0.0, low=0.0, high=1.0, help="fraction of the dropped components kept")

GRADDROP = StrategyDeclaration(
    name="graddrop",
    family="gradient_aggregation",
    summary="gradient sign dropout: keep one sign per coordinate, chosen by its sign purity",
    implementation="tune_mtl.strategies.graddrop:GradDrop",
    aliases=("gsd", "grad-drop", "gradient-sign-dropout"),
    knobs=GradDropKnobs,
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class GradNormKnobs(StrategyKnobs):
    alpha: float = knob(1.5, low=0.0, high=10.0, help="asymmetry: pull of slow tasks (paper 0.12-3)")
    weight_lr: float = knob(0.025, low=1e-08, high=10.0, help="Adam step size of the task weights")

GRADNORM = StrategyDeclaration(
    name="gradnorm",
    family="loss_weighting",
    summary="weights learned to balance last-shared-layer gradient norms by relative training rate",
    implementation="tune_mtl.strategies.gradnorm:GradNorm",
    aliases=("gnorm", "gn", "grad-norm"),
    knobs=GradNormKnobs,
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class GradVacKnobs(StrategyKnobs):
    beta: float = knob(0.5, low=1e-06, high=1.0, help="EMA rate of the similarity targets")

GRADVAC = StrategyDeclaration(
    name="gradvac",
    family="gradient_aggregation",
    summary="gradient vaccine: lift pairwise gradient similarity to an EMA target",
    implementation="tune_mtl.strategies.gradvac:GradVac",
    aliases=("gvac", "grad-vac", "gradient-vaccine"),
    knobs=GradVacKnobs,
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class IMTLKnobs(StrategyKnobs):
    mode: Literal["gradient", "loss", "hybrid"] = knob("hybrid", help="IMTL-G, IMTL-L or both (IMTL-H)")


def imtl_uses_gradients(knobs: IMTLKnobs) -> bool:
    """IMTL-G and IMTL-H weight task gradients of the shared parameters; IMTL-L only scales the losses."""
    return knobs.mode != "loss"

IMTL = StrategyDeclaration(
    name="imtl",
    family="gradient_aggregation",
    summary="impartial MTL: equal projections on unit task gradients (G), learnable loss scales (L), or both",
    implementation="tune_mtl.strategies.imtl:IMTL",
    aliases=("imtl-h", "imtl-hybrid"),
    knobs=IMTLKnobs,
    needs_shared_parameters=imtl_uses_gradients,
)


@dataclass(frozen=True)
class IMTLGradientKnobs(IMTLKnobs):
    mode: Literal["gradient", "loss", "hybrid"] = field(default="gradient", init=False)  # fixed, not a knob

IMTL_G = StrategyDeclaration(
    name="imtl-g",
    family="gradient_aggregation",
    summary="IMTL-G: shared update with equal projections onto every unit task gradient",
    implementation="tune_mtl.strategies.imtl:IMTLGradient",
    aliases=("imtlg",),
    knobs=IMTLGradientKnobs,
    needs_shared_parameters=imtl_uses_gradients,
)


@dataclass(frozen=True)
class IMTLLossKnobs(IMTLKnobs):
    mode: Literal["gradient", "loss", "hybrid"] = field(default="loss", init=False)  # fixed, not a knob

IMTL_L = StrategyDeclaration(
    name="imtl-l",
    family="gradient_aggregation",
    summary="IMTL-L: learnable loss scales, loss e^s L - s per task",
    implementation="tune_mtl.strategies.imtl:IMTLLoss",
    aliases=("imtll",),
    knobs=IMTLLossKnobs,
    needs_shared_parameters=imtl_uses_gradients,
)


@dataclass(frozen=True)
class MGDAKnobs(StrategyKnobs):
    normalization: Literal["none", "l2", "loss", "loss+"] = knob(
        "none", help="task-gradient normalisation before the min-norm solve (LibMTL mgda_gn)")

MGDA = StrategyDeclaration(
    name="mgda",
    family="gradient_aggregation",
    summary="multiple-gradient descent: exact min-norm convex combination of the task gradients",
    implementation="tune_mtl.strategies.mgda:MGDA",
    knobs=MGDAKnobs,
    needs_shared_parameters=True,
)


MGDA_UB = StrategyDeclaration(
    name="mgda-ub",
    family="gradient_aggregation",
    summary="MGDA on the gradients of the shared representation, then one backward of the weighted loss",
    implementation="tune_mtl.strategies.mgda:MGDAUpperBound",
    aliases=("mgdaub", "mgda-upper-bound"),
    knobs=MGDAKnobs,
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class MoCoKnobs(StrategyKnobs):
    beta: float = knob(0.5, low=0.0, high=1.0, help="step of the gradient tracking EMA")
    beta_sigma: float = knob(0.5, low=0.0, high=1.0, help="decay exponent of beta_k")
    gamma: float = knob(0.1, low=0.0, high=100.0, help="step of the weight update")
    gamma_sigma: float = knob(0.5, low=0.0, high=1.0, help="decay exponent of gamma_k")
    rho: float = knob(0.0, low=0.0, high=100.0, help="ridge on YY' in the weight update")

MOCO = StrategyDeclaration(
    name="moco",
    family="gradient_aggregation",
    summary="stochastic MoCo: MGDA-style weights on tracked (EMA) task gradients",
    implementation="tune_mtl.strategies.moco:MoCo",
    knobs=MoCoKnobs,
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class MoDoKnobs(StrategyKnobs):
    gamma: float = knob(0.001, low=0.0, high=10.0, help="step size of the task weights")
    rho: float = knob(0.1, low=0.0, high=10.0, help="l2 regularisation of the task-weight update")

MODO = StrategyDeclaration(
    name="modo",
    family="gradient_aggregation",
    summary="MGDA weights by a stochastic projected-gradient step with double sampling",
    implementation="tune_mtl.strategies.modo:MoDo",
    knobs=MoDoKnobs,
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class MOMLKnobs(StrategyKnobs):
    inner_lr: float = knob(0.1, low=0.0, high=10.0, help="step size of the virtual lower-level SGD step")
    outer_lr: float = knob(0.001, low=0.0, high=10.0, help="Adam learning rate of the task-weight logits")
    upper: Literal["mgda", "mean"] = knob("mgda", help="how the T hypergradients are combined")

MOML = StrategyDeclaration(
    name="moml",
    family="loss_weighting",
    summary="bilevel: task weights meta-learned by MGDA over one-step look-ahead hypergradients",
    implementation="tune_mtl.strategies.moml:MOML",
    knobs=MOMLKnobs,
)


@dataclass(frozen=True)
class NashMTLKnobs(StrategyKnobs):
    update_weights_every: int = knob(1, low=1, high=10000, help="recompute alpha every k steps")
    optim_niter: int = knob(20, low=1, high=1000, help="Newton iterations per solve")
    max_norm: float = knob(1.0, low=0.0, high=1000000.0, help="clip the shared gradient norm (0: off)")

NASHMTL = StrategyDeclaration(
    name="nashmtl",
    family="gradient_aggregation",
    summary="Nash bargaining over task gradients: weights alpha with G alpha = 1/alpha",
    implementation="tune_mtl.strategies.nashmtl:NashMTL",
    aliases=("nash", "nash-mtl"),
    knobs=NashMTLKnobs,
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class OLAuxKnobs(StrategyKnobs):
    N: int = knob(2, low=1, high=10000, help="update the auxiliary weights every N steps (seed: 2)")
    beta: float = knob(0.1, low=0.0, high=10000.0, help="step size of the weight update")

OLAUX = StrategyDeclaration(
    name="olaux",
    family="auxiliary",
    summary="auxiliary weights learned online from <g_main, g_aux> every N steps; task 0 main",
    implementation="tune_mtl.strategies.olaux:OLAux",
    aliases=("ol-aux", "ol_aux", "online-auxiliary"),
    knobs=OLAuxKnobs,
    needs_auxiliary_tasks=True,
    needs_shared_parameters=True,
)


PCGRAD = StrategyDeclaration(
    name="pcgrad",
    family="gradient_aggregation",
    summary="projecting conflicting gradients: drop the conflicting component against each other task",
    implementation="tune_mtl.strategies.pcgrad:PCGrad",
    aliases=("pc-grad",),
    needs_shared_parameters=True,
)


RANDOM = StrategyDeclaration(
    name="random",
    family="loss_weighting",
    summary="random loss weighting: softmax(N(0, I)) drawn every step",
    implementation="tune_mtl.strategies.random_weights:RandomWeighting",
    aliases=("rlw", "random-loss-weighting"),
)


@dataclass(frozen=True)
class ReconKnobs(StrategyKnobs):
    warmup_steps: int = knob(100, low=1, high=1000000, help="steps of conflict scoring before the split")
    k: int = knob(1, low=0, high=1000, help="number of shared modules turned task-specific")
    threshold: float = knob(0.0, low=-1.0, high=1.0, help="cosine below which two task gradients conflict")
    base: str = knob("uniform", help="strategy that trains the model before and after the split")

    def __post_init__(self) -> None:
        from tune_mtl import strategies  # the registry imports this table: resolve a name only once it is built

        try:
            base = strategies.resolve(self.base)
        except UserError as err:
            raise UserError(f"strategy 'recon' hyperparameter 'base': {err}") from None
        if base == "recon":
            raise UserError("strategy 'recon' needs another strategy as its base, got 'recon'")

RECON = StrategyDeclaration(
    name="recon",
    family="architecture",
    summary="split the most conflicting shared layers into task-specific copies, then train with a base strategy",
    implementation="tune_mtl.strategies.recon:Recon",
    knobs=ReconKnobs,
    needs_shared_parameters=True,
    needs_sequential_encoder=True,
)


@dataclass(frozen=True)
class SDMGradKnobs(StrategyKnobs):
    lamda: float = knob(0.3, low=0.0, high=100.0, help="pull towards the average-gradient direction")
    niter: int = knob(20, low=1, high=1000, help="projected SGD steps on the weights per training step")

SDMGRAD = StrategyDeclaration(
    name="sdmgrad",
    family="gradient_aggregation",
    summary="direction-oriented stochastic MGDA (three sub-batches, regularised towards the mean gradient)",
    implementation="tune_mtl.strategies.sdmgrad:SDMGrad",
    knobs=SDMGradKnobs,
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class SLGradKnobs(StrategyKnobs):
    lookahead: bool = knob(False, help="compute the weights at a virtual look-ahead point (never applied)")
    lookahead_lr: float = knob(0.01, low=0.0, high=10.0, help="step size of the virtual look-ahead step")

SLGRAD = StrategyDeclaration(
    name="slgrad",
    family="sample_weighting",
    summary="sample-level weights max(0, <grad l_t(x_i), grad L_main(val)>) from one JVP; task 0 main",
    implementation="tune_mtl.strategies.slgrad:SLGrad",
    aliases=("sl-grad", "sample-level-grad"),
    knobs=SLGradKnobs,
    needs_validation_batch=True,
    needs_auxiliary_tasks=True,
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class STCHKnobs(StrategyKnobs):
    mu: float = knob(1.0, low=1e-06, high=1000.0, help="smoothing: 0 = worst task only, large = all tasks")
    warmup_epochs: int = knob(4, low=0, high=10000, help="epochs of log-loss descent before STCH")

STCH = StrategyDeclaration(
    name="stch",
    family="loss_weighting",
    summary="smooth Tchebycheff scalarisation of nadir-normalised log losses",
    implementation="tune_mtl.strategies.stch:STCH",
    knobs=STCHKnobs,
)


UNIFORM = StrategyDeclaration(
    name="uniform",
    family="loss_weighting",
    summary="equal task weights (sum of the task losses)",
    implementation="tune_mtl.strategies.uniform:Uniform",
    aliases=("unif", "ew", "equal"),
)


UPGRAD = StrategyDeclaration(
    name="upgrad",
    family="gradient_aggregation",
    summary="unconflicting projection of gradients: mean of the dual-cone projections of the task gradients",
    implementation="tune_mtl.strategies.upgrad:UPGrad",
    aliases=("up-grad",),
    needs_shared_parameters=True,
)


@dataclass(frozen=True)
class UncertaintyWeightingKnobs(StrategyKnobs):
    form: Literal["auto", "regression", "classification"] = knob(
        "auto", help="likelihood form of every task; auto: per task from ctx.task_kinds")
    init: float = knob(-0.5, low=-10.0, high=10.0, help="initial log-variance s_t (LibMTL: -0.5)")

UW = StrategyDeclaration(
    name="uw",
    family="loss_weighting",
    summary="learned homoscedastic uncertainty per task: exp(-s) L (/2 for regression) + s/2",
    implementation="tune_mtl.strategies.uw:UncertaintyWeighting",
    aliases=("uncertainty", "uncertainty-weighting"),
    knobs=UncertaintyWeightingKnobs,
)


DECLARATIONS: tuple[StrategyDeclaration, ...] = (
    ALIGNED_MTL,
    AUTOLAMBDA,
    CAGRAD,
    DB_MTL,
    DUALPROJ,
    DWA,
    EXCESSMTL,
    FAIRGRAD,
    FAMO,
    FORUM,
    GCOSIM,
    GLS,
    GRADDROP,
    GRADNORM,
    GRADVAC,
    IMTL,
    IMTL_G,
    IMTL_L,
    MGDA,
    MGDA_UB,
    MOCO,
    MODO,
    MOML,
    NASHMTL,
    OLAUX,
    PCGRAD,
    RANDOM,
    RECON,
    SDMGRAD,
    SLGRAD,
    STCH,
    UNIFORM,
    UPGRAD,
    UW,
)
