"""MLACP: multi-loss-aware channel pruning, one group at a time from the input to the output.

For each group: compute the baseline's feature maps at the group's consumers (once, up front; each
is judged after the BatchNorm that alone reads it, ``sites.judged_node``); choose the channels to
keep by greedy forward selection at the pruned state (``forward``: chunks of channels read again by
the gradient of the joint loss ``L_R + α·L_G + β·L_C`` with respect to their gates, a least-squares
refit between chunks); zero the others, refit, and take a few SGD steps on the group's kept weights;
then the next group. The method works on ``analysis.gm`` in place (``compress`` hands it a private
copy), so the rewrite that follows carries the refined weights into the small model.

The losses are local: each run goes from the group's first node to its last consumer. The
cross-entropy, when asked for, is its second-order change at the consumers' outputs from the
baseline's gradients (``losses.local_classification``, one backward pass a batch for the whole
model), so the cost grows with depth, not with its square; ``classification="exact"`` runs the rest
of the network instead, for every step.

Under ``torch.distributed`` each rank judges on its own shard: the gate gradients, the sensitivity's
gradient sums and the least-squares normal equations are summed over the ranks, each SGD step's
gradients and the loss that picks the best weights are averaged over them (every rank takes step
``s`` on its own batch ``s``), so every rank keeps the same channels and the same weights. Only rank 0
shows progress.

>>> small = fxprune.compress(model, loader, ratio=0.5, method=MLACP(alpha=0.125))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from tqdm.auto import tqdm

from ...analysis.analyze import Analysis
from ...analysis.sites import GroupSite, group_sites
from ...errors import FxpruneError, InputError
from ...graph.distributed import all_reduce_mean, all_reduce_sum, is_main
from ...graph.inputs import Batch, check_targets
from ...graph.outputs import labels_of, predicted_labels
from ...graph.partial_run import Prefixes, output_gradients, run_from
from ...graph.shapes import output_classes
from ...graph.tensors import param_name
from ..criteria.magnitude import per_index
from .compensation import least_squares_start
from .forward import forward_select
from .losses import DEFAULT_TERMS, TERMS, GramReference, classification_loss, local_classification, loss_parts
from .masks import ChannelMasks

MAX_GRAD_NORM = 1.0
SELECTIONS = ("forward", "sensitivity")
CLASSIFICATIONS = ("local", "exact")


def _no_refit(gate) -> None:
    """Forward selection without least squares: the chosen channels keep their weights between rounds."""


@dataclass
class GroupRecord:
    """One line of the per-group log: what was kept and how the joint loss moved."""

    group: str
    kept: int
    size: int
    loss_pruned: float  # joint loss once the channels were zeroed (and the least-squares start made)
    loss_refined: float  # after the SGD steps
    seconds: float

    def __str__(self) -> str:
        return (f"{self.group}: keep {self.kept}/{self.size}, loss {self.loss_pruned:.4g} -> "
                f"{self.loss_refined:.4g} ({self.seconds:.1f}s)")


@dataclass
class _Calibration:
    """The data every group is judged on: inputs, labels, and the baseline's feature maps."""

    batches: list[Batch]
    labels: list[torch.Tensor]
    features: list[dict[str, torch.Tensor]]  # at every consumer (the least-squares targets)
    # the baseline's module of every judged node that is not a consumer (``sites.judged_node``): its
    # maps are computed from the consumer's when a group needs them, not kept for the whole model
    norms: dict[str, torch.nn.Module] = field(default_factory=dict)
    # ∂(cross-entropy)/∂(judged output) of the baseline, per batch: the local classification term
    gradients: list[dict[str, torch.Tensor]] | None = None
    # what is kept for the group being pruned, per batch: its judged maps and Gram references
    group: int | None = None
    judged_maps: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    gram_references: dict[int, dict[str, GramReference]] = field(default_factory=dict)

    def _for_group(self, site: GroupSite) -> None:
        if self.group != site.group.id:
            self.group, self.judged_maps, self.gram_references = site.group.id, {}, {}

    def judged(self, site: GroupSite, b: int) -> dict[str, torch.Tensor]:
        """Batch ``b``'s baseline maps at ``site``'s judged nodes, by name (with every consumer's)."""
        self._for_group(site)
        if b not in self.judged_maps:
            features = self.features[b]
            with torch.no_grad():
                after = {j.name: self.norms[j.name](features[n.name]) for n, j in zip(site.consumers, site.judged)
                         if j is not n and n.name in features}
            self.judged_maps[b] = {**features, **after}
        return self.judged_maps[b]

    def references(self, site: GroupSite, b: int) -> dict[str, GramReference]:
        """Batch ``b``'s Gram references at ``site``'s judged nodes: built on first use, kept for the group."""
        self._for_group(site)
        if b not in self.gram_references:
            maps = self.judged(site, b)
            self.gram_references[b] = {n.name: GramReference.of(maps[n.name], site.channel_dims.get(n.name, 1))
                                       for n in site.judged if n.name in maps}
        return self.gram_references[b]


@dataclass
class MLACP:
    """Layer-wise channel pruning with reconstruction, Gram-correlation and classification losses.

    ``alpha`` weighs the Gram (correlation) loss and ``beta`` the cross-entropy, against the
    reconstruction loss; ``terms`` selects the losses (the paper's ablation: ``("reconstruction",)``,
    ``+ "gram"``, ``+ "classification"``, all three). ``selection``: ``"forward"`` (greedy forward
    selection in ``rounds`` chunks, ``forward.py``) or ``"sensitivity"`` (one ranking by
    ``Σ (w · ∂L/∂w)²`` with the whole group present: the earlier procedure, kept for comparison).
    ``classification``: ``"local"`` or ``"exact"`` (module docstring). ``steps`` SGD steps with
    learning rate ``lr`` refine each group's kept weights, one calibration batch per step;
    ``calibration_batches`` caps the batches used (None: all that compress passes).
    ``least_squares`` refits the group's plain conv/linear consumers in closed form (``compensation``)
    between selection rounds and before the SGD steps.

    Defaults were chosen with the quality benchmark (``benchmarks/quality.py``, ResNet-20, 3 seeds;
    ``benchmarks/results/quality_mlacp_resnet20.md``). α = 0.125: for a small error Δ of a feature map
    F, each of the two Gram distances is up to about 4·‖Δ‖²/‖F‖², four times the reconstruction loss, so
    at α = 1 the two Gram terms outweighed the reconstruction about eightfold and, weighting F's largest
    singular directions most, led the choice away from what the next layer reads (at 4× fewer MACs,
    without SGD steps: 87.0% against 90.5% at α = 0.125). 4 rounds: 1 and 2 kept 77% and 87%, 8 no more
    than 4. lr = 0.2 (the steps clip the gradient norm to 1 and keep the best weights seen): at 3× fewer
    MACs ResNet-20 kept 91.9% against 91.2% at lr = 0.05. 8 steps (10,000 test images): at 4× ResNet-20
    kept 92.1% against 91.9% with 6, 91.8% with 5 (90.5% with 5 at lr = 0.4), and no more with 10 or 20;
    torchvision resnet50 takes 230–239 s with 8 (two runs), 211 s with 6. The cross-entropy term is off
    by default (``terms``): on that benchmark it lowered the accuracy kept at every weight tried, exact
    or local (the results file has the ablation). Labels come from the data, or from the baseline's own
    predictions when the data has none.
    """

    alpha: float = 0.125
    beta: float = 1.0
    terms: tuple = DEFAULT_TERMS
    steps: int = 8
    lr: float = 0.2
    momentum: float = 0.9
    calibration_batches: int | None = None
    least_squares: bool = True
    selection: str = "forward"
    rounds: int = 4
    classification: str = "local"
    progress: bool = True
    log: list[GroupRecord] = field(default_factory=list, repr=False, init=False)

    refines_weights = True  # tells compress to give it a private copy and keep its weights

    def __new__(cls, *args, **options):
        """Refuse an option MLACP does not have with the list of those it has (not a bare TypeError)."""
        accepted = [f.name for f in fields(cls) if f.init]
        unknown = [name for name in options if name not in accepted]
        if unknown or len(args) > len(accepted):
            what = f"unknown option {unknown[0]!r}" if unknown else f"{len(args)} positional options"
            raise InputError(f"MLACP: {what}; it accepts {', '.join(accepted)}")
        return super().__new__(cls)

    def __post_init__(self):
        unknown = set(self.terms) - set(TERMS)
        if unknown or not self.terms:
            raise InputError(f"MLACP terms: expected a non-empty subset of {TERMS}, got {self.terms!r}")
        if self.selection not in SELECTIONS:
            raise InputError(f"MLACP selection: expected one of {SELECTIONS}, got {self.selection!r}")
        if self.classification not in CLASSIFICATIONS:
            raise InputError(f"MLACP classification: expected one of {CLASSIFICATIONS}, got {self.classification!r}")
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise InputError(f"MLACP rounds: expected a positive integer, got {self.rounds!r}")

    def prune(self, analysis: Analysis, batches: list[Batch], keep_counts: list[int]) -> list[np.ndarray]:
        """Choose and refine, group after group; return scores whose top ``keep_counts`` are the kept channels."""
        gm = analysis.gm
        self.log = []
        sites = group_sites(analysis)
        calibration = self._calibrate(gm, batches[: self.calibration_batches], sites)
        masks = ChannelMasks(analysis)
        prefixes = Prefixes(gm, [batch.inputs for batch in calibration.batches])
        index = {group.id: i for i, group in enumerate(analysis.groups)}
        scores = [np.ones(group.size) for group in analysis.groups]
        flags = {name: p.requires_grad for name, p in gm.named_parameters()}
        for p in gm.parameters():
            p.requires_grad_(False)
        try:
            bar = tqdm(sites, desc="mlacp", disable=not self.progress or not is_main(), leave=False)
            for site in bar:
                i = index[site.group.id]
                if keep_counts[i] < site.group.size:
                    envs = prefixes.at(site.first_node)
                    scores[i] = self._prune_group(analysis, site, keep_counts[i], calibration, masks, envs)
                    bar.set_postfix(loss=f"{self.log[-1].loss_refined:.4g}")
        finally:
            for name, p in gm.named_parameters():
                p.requires_grad_(flags[name])
        return scores

    def _calibrate(self, gm, batches: list[Batch], sites: list[GroupSite]) -> _Calibration:
        classes = output_classes(gm)  # targets are checked even when no term reads them: bad data is named
        for i, batch in enumerate(batches):
            check_targets(batch, classes, f"batch {i}")
        baseline = copy.deepcopy(gm)
        for p in baseline.parameters():
            p.requires_grad_(False)
        consumers = {n.name for site in sites for n in site.consumers}
        judged = {j.name for site in sites for j in site.judged}
        labels, features = [], []
        with torch.no_grad():
            for batch in batches:
                kept = run_from(baseline, batch.inputs, wanted=consumers)
                output = kept.pop("output")
                labels.append(labels_of(batch.targets) if batch.targets is not None else predicted_labels(output))
                features.append({k: v for k, v in kept.items() if isinstance(v, torch.Tensor)})
        norms = {j.name: baseline.get_submodule(j.target) for site in sites for n, j in zip(site.consumers, site.judged)
                 if j is not n}
        calibration = _Calibration(batches, labels, features, norms)
        if "classification" in self.terms and self.classification == "local":
            calibration.gradients = [
                output_gradients(baseline, batch.inputs, judged, lambda out, y=y: classification_loss(out, y, "sum"))
                for batch, y in zip(batches, labels)]
        return calibration

    def _loss(self, gm, site: GroupSite, calibration: _Calibration, b: int, prefix: dict,
              start: int | None = None) -> torch.Tensor:
        """The joint loss on batch ``b``, run from ``start`` (the group's first node; ``prefix`` holds the
        values read from before it). With the local classification term the run stops at the group's
        last judged node, and the cross-entropy is its second-order change there (from the baseline's
        gradients and the change of the judged outputs); a group no layer reads runs to the output."""
        names = [n.name for n in site.judged]
        classify = "classification" in self.terms
        local = classify and calibration.gradients is not None and names
        positions = {n: i for i, n in enumerate(gm.graph.nodes)}
        stop = None if (classify and not local) or not site.judged else max(positions[n] for n in site.judged)
        start = site.first_node if start is None else start
        kept = run_from(gm, calibration.batches[b].inputs, start, prefix, names, stop)
        references = calibration.references(site, b) if "gram" in self.terms else None
        base = calibration.judged(site, b)
        parts = loss_parts(base, kept, names, kept.get("output"), calibration.labels[b],
                           references, classify and not local, site.channel_dims)
        if local:
            parts.classification = local_classification(calibration.gradients[b], base, kept, names,
                                                        calibration.batches[b].size)
        loss = parts.joint(self.alpha, self.beta, self.terms)
        if not torch.isfinite(loss):
            raise FxpruneError(f"MLACP: the joint loss became {float(loss.detach())} at group {site.name}; "
                               "lower lr or alpha/beta, or check the calibration data")
        return loss

    def _prune_group(self, analysis, site: GroupSite, keep: int, calibration, masks, prefixes) -> np.ndarray:
        start = time.perf_counter()
        gm = analysis.gm
        params = [gm.get_parameter(name) for name in site.params]
        for p in params:
            p.requires_grad_(True)
        try:
            kept_rows: dict = {}  # the consumers' least-squares rows, shared by the group's refits
            if self.selection == "forward" and site.consumers:
                score = self._forward(analysis, site, keep, calibration, prefixes, kept_rows)
            else:
                score = self._sensitivity(analysis, site, calibration, prefixes)
            order = np.argsort(-score, kind="stable")
            masks.remove(site.group, order[keep:])
            if self.least_squares:
                least_squares_start(gm, site, masks, calibration.batches, calibration.features, prefixes, kept_rows)
            before, after = self._refine(gm, site, params, calibration, prefixes, masks)
        finally:
            for p in params:
                p.requires_grad_(False)
                p.grad = None
        self.log.append(GroupRecord(site.name, keep, site.group.size, before, after, time.perf_counter() - start))
        return score

    def _forward(self, analysis, site: GroupSite, keep: int, calibration, prefixes, kept_rows: dict) -> np.ndarray:
        """Greedy forward selection (``forward``): chunks chosen by their gates' gradients, refit between.

        Only the consumers' weights change while the channels are chosen, so the runs start at the
        first consumer, from values computed once."""
        gm = analysis.gm
        position = {n: i for i, n in enumerate(gm.graph.nodes)}
        start = min(position[n] for n in site.consumers)
        inputs = [batch.inputs for batch in calibration.batches]
        at_consumers = Prefixes(gm, inputs, site.first_node, prefixes).at(start)

        def losses():
            return (self._loss(gm, site, calibration, b, env, start) for b, env in enumerate(at_consumers))

        def refit(gate):
            least_squares_start(gm, site, gate, calibration.batches, calibration.features, prefixes, kept_rows)

        try:
            return forward_select(analysis, site, keep, self.rounds, losses, refit if self.least_squares else _no_refit)
        except FloatingPointError as error:
            raise FxpruneError(f"MLACP: {error}; lower alpha/beta") from None

    def _sensitivity(self, analysis, site: GroupSite, calibration, prefixes) -> np.ndarray:
        """``Σ (w · ∂L/∂w)²`` over the weights reading each channel; ties broken by weight magnitude."""
        gm = analysis.gm
        names = sorted({param_name(m.ref.key) for m in site.consumer_members})
        weights = [gm.get_parameter(name) for name in names]
        grads = [torch.zeros_like(w) for w in weights]
        for b, prefix in enumerate(prefixes):
            loss = self._loss(gm, site, calibration, b, prefix)
            if loss.requires_grad:
                found = torch.autograd.grad(loss, weights, allow_unused=True)
                grads = [g + f if f is not None else g for g, f in zip(grads, found)]
        for grad in grads:
            all_reduce_sum(grad)  # the sums over every rank's batches
        sensitivity, magnitude = np.zeros(site.group.size), np.zeros(site.group.size)
        for member in site.consumer_members:
            k = names.index(param_name(member.ref.key))
            product = (weights[k].detach() * grads[k]).double()
            sensitivity += per_index(product, member.ref.dim, 2)[member.index].sum(axis=1)
            magnitude += per_index(weights[k], member.ref.dim, 2)[member.index].sum(axis=1)
        if not np.isfinite(sensitivity).all():
            raise FxpruneError(f"MLACP: the sensitivity of group {site.name} is not finite; lower alpha/beta")
        top = sensitivity.max()
        relative = sensitivity / top if top > 0 else sensitivity
        return relative + 1e-9 * magnitude / max(magnitude.max(), 1e-30)

    def _refine(self, gm, site, params, calibration, prefixes, masks) -> tuple[float, float]:
        """SGD on the group's kept weights; keep the weights with the lowest loss seen."""
        if not params:  # a group held only by buffers (a table no layer learns): nothing to refine
            value = float(all_reduce_mean(self._loss(gm, site, calibration, 0, prefixes[0]).detach().clone()))
            return value, value
        optimizer = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)
        best, best_state, first = float("inf"), None, None
        for step in range(self.steps + 1):
            b = step % len(prefixes)
            loss = self._loss(gm, site, calibration, b, prefixes[b])
            value = float(all_reduce_mean(loss.detach().clone()))  # the same choice of best on every rank
            first = value if first is None else first
            if value < best:
                best, best_state = value, [p.detach().clone() for p in params]
            if step == self.steps or not loss.requires_grad:
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for p in params:
                if p.grad is not None:
                    all_reduce_mean(p.grad)
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)  # one steep batch must not throw the weights off
            optimizer.step()
            masks.apply(site.params)
        with torch.no_grad():
            for p, saved in zip(params, best_state):
                p.copy_(saved)
        return first, best
