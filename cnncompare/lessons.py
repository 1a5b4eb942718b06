"""The Learn tab's lessons, in the engine: each one a comparison that makes one point, the sentence saying what to
look for, and the sentence that reads what the runs showed (honest when they did not show it).

A lesson is a plan of runs on the generated `shapes` data, sized for a 2-core CPU (each under 3 minutes, offline
or online alike: `benchmarks/bench_presets.py` measures it). The app fills its Fine-tune form from a lesson
(`ui/learn.py`) and, when a finished comparison is a lesson's, adds its reading to the final status; the CLI runs
one with `cnncompare lesson KEY` and prints the same reading.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .compare import Limits, Plan
from .errors import CNNCompareError
from .settings import FreezePolicy, ModelEntry, TrainSettings, build, settings_of

__all__ = ["Lesson", "Reading", "LESSONS", "BY_KEY", "lesson_of", "read"]

CHANCE_LOSS = math.log(8)  # 8 classes of shapes: a model that learned nothing sits at ln 8 = 2.08


@dataclass(frozen=True)
class Reading:
    """What a lesson's runs showed: `showed` True (the point), False (not this time), None (nothing to read)."""

    showed: bool | None
    sentence: str


@dataclass(frozen=True)
class Lesson:
    key: str
    title: str
    summary: str  # one line under the button
    text: str  # what the lesson is about (shown over the Fine-tune form)
    expect: str  # what you should see, in one sentence
    models: str  # the runs, one per line (model@freeze and per-run settings)
    settings: dict = field(default_factory=dict)  # changes to the settings' defaults (TrainSettings, ModelEntry)
    max_per_class: int = 60
    reader: Callable[[Sequence], Reading] | None = None

    def __post_init__(self):
        """A lesson is checked when it is defined (at import): a misspelt setting would be ignored by `build`, and
        the lesson would quietly run with the default instead of what its text says."""
        known = {s.name for cls in (TrainSettings, ModelEntry) for s in settings_of(cls)}
        unknown = sorted(set(self.settings) - known)
        if unknown:
            raise CNNCompareError(f"Lesson {self.key} sets unknown setting(s): {', '.join(unknown)}.")
        self.plan()  # every value coerced and checked, every run parsed (the same sentence as from the form or CLI)

    def form(self) -> dict:
        """The Fine-tune form's fields this lesson sets (the page's own and the settings')."""
        return {"dataset": "shapes", "models": self.models, "max_per_class": self.max_per_class, **self.settings}

    def plan(self, limits: Limits | None = None) -> Plan:
        """The lesson's comparison, as the engine runs it (the CLI's `cnncompare lesson KEY`)."""
        return Plan.parse(
            self.models,
            model_defaults=build(ModelEntry, self.settings),
            settings=build(TrainSettings, self.settings),
            limits=limits or Limits(),
        )

    def read(self, results: Sequence) -> Reading:
        done = [r for r in results if not r.error and r.final_epoch]
        if len(done) < len(results) or not done:
            failed = [r.label for r in results if r.error or not r.final_epoch]
            return Reading(None, f"Not every run finished ({', '.join(failed)}): there is nothing to compare yet.")
        if not self.reader:
            return Reading(None, "")
        reading = self.reader(done)
        if reading.showed is False:  # said in words first, not only by a mark
            return Reading(False, NOT_SHOWN + reading.sentence)
        return reading


# --------------------------------------------------------------------------- reading the runs


NOT_SHOWN = "Not shown this time: "
SAME = 1.05  # two times within 5 % of each other are "about the same" (a 2-core CPU's run-to-run noise)


def _as_long(a: str, ta: float, b: str, tb: float) -> str:
    """'VGG16 took 1.3× as long as ResNet-50 (…)': the slower first, so the ratio can never be read backwards."""
    if max(ta, tb) <= SAME * min(ta, tb):
        return f"{a} and {b} took about the same time ({ta:.1f} s and {tb:.1f} s)"
    (slow, ts), (fast, tf) = sorted([(a, ta), (b, tb)], key=lambda x: -x[1])
    return f"{slow} took {ts / max(tf, 1e-9):.1f}× as long as {fast} ({ts:.1f} s against {tf:.1f} s)"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0f} %"


def _loss(r) -> float:
    return float(r.history[-1]["train_loss"]) if r.history else float("nan")


def _by(results, text: str):
    return next(r for r in results if text in r.label)


def _read_features(results) -> Reading:
    vgg, res = _by(results, "vgg16"), _by(results, "resnet50")
    ratio = vgg.train_time_s / max(res.train_time_s, 1e-9)
    random = vgg.weights_source.startswith("random")
    acc = f"validation top-1 {_pct(vgg.val_top1)} (VGG16) vs {_pct(res.val_top1)} (ResNet-50)"
    tail = (
        "; with random weights (offline) both backbones extract random features, so both stay near chance (12.5 %) "
        "and the accuracy says nothing about them"
        if random
        else ""
    )
    times = _as_long("VGG16", vgg.train_time_s, "ResNet-50", res.train_time_s)
    return Reading(ratio > 1.5, f"Frozen backbone and classifier training: {times}; {acc}{tail}.")


def _read_batchnorm(results) -> Reading:
    """BatchNorm's point: the BN network learns (accuracy and loss move) where the plain one stays near chance."""
    bn, plain = _by(results, "vgg11_bn"), _by(results, "vgg11@")
    gap = (bn.val_top1 or 0) - (plain.val_top1 or 0)
    lb, lp = _loss(bn), _loss(plain)
    # measured on 3 seeds (benchmarks/RESULTS.md): gaps of 8-13 points and 0.29-0.31 in the loss
    showed = gap >= 5 and lp - lb >= 0.15
    verdict = "as the lesson says" if showed else "BatchNorm did not pull ahead of the plain network in this run"
    return Reading(
        showed,
        f"VGG11-BN reached {_pct(bn.val_top1)} validation accuracy vs {_pct(plain.val_top1)} for plain VGG11 (final "
        f"training loss {lb:.2f} vs {lp:.2f}; chance is 12.5 % and {CHANCE_LOSS:.2f}): {verdict}.",
    )


def _first_loss(r) -> float:
    return float(r.history[0]["train_loss"]) if r.history else float("nan")


def _read_init(results) -> Reading:
    """He keeps the signal's size through a ReLU network (large logits: the first loss far above chance); Glorot
    shrinks it (outputs near zero: the first loss at chance). Which then learns faster is not the point: measured,
    neither wins reliably in a few minutes, and the sentence says what happened."""
    he, gl = _by(results, "init=he"), _by(results, "init=glorot")
    h1, g1 = _first_loss(he), _first_loss(gl)
    showed = h1 - g1 >= 0.5 and abs(g1 - CHANCE_LOSS) < 0.25
    verdict = "He starts loud and Glorot quiet, as the lesson says" if showed else "the two started alike this time"
    return Reading(
        showed,
        f"First-epoch training loss {h1:.2f} with He vs {g1:.2f} with Glorot (chance {CHANCE_LOSS:.2f}): {verdict}. "
        f"After {len(he.history)} epochs: loss {_loss(he):.2f} vs {_loss(gl):.2f}, validation top-1 "
        f"{_pct(he.val_top1)} vs {_pct(gl.val_top1)}.",
    )


def _read_keras(results) -> Reading:
    part, head = _by(results, "layers:10"), _by(results, "@head")
    more = part.trainable_params / max(head.trainable_params or 1, 1)
    slower = part.train_time_s / max(head.train_time_s, 1e-9)
    tail = (
        " (random weights, offline: the accuracy says nothing about the recipe, only the cost does)"
        if part.weights_source.startswith("random")
        else ""
    )
    times = _as_long("conv block 5 + head", part.train_time_s, "the head alone", head.train_time_s)
    return Reading(
        more > 1 and slower > SAME,
        f"Training conv block 5 and the new 4096-4096 head ({part.trainable_params / 1e6:.1f} M weights) against "
        f"the head alone ({head.trainable_params / 1e6:.1f} M): {times}; validation top-1 {_pct(part.val_top1)} vs "
        f"{_pct(head.val_top1)}{tail}.",
    )


def _read_optimizers(results) -> Reading:
    def name(r) -> str:
        opt, lr = r.config.get("optimizer"), r.config.get("lr")
        return f"{opt} (lr {lr:g})" if opt == "sgd" and isinstance(lr, (int, float)) else str(opt)

    losses = {name(r): _loss(r) for r in results}
    ranked = ", ".join(f"{k} {v:.2f}" for k, v in sorted(losses.items(), key=lambda kv: kv[1]))
    # per optimizer its lowest-learning-rate run: plain SGD at momentum's learning rate, not SGD at 10× it
    by_opt: dict[str, float] = {}
    for r in sorted(results, key=lambda r: -float(r.config.get("lr") or 0)):
        by_opt[r.config.get("optimizer")] = _loss(r)
    adaptive = min(by_opt.get(k, math.inf) for k in ("adam", "rmsprop"))
    momentum = min(by_opt.get(k, math.inf) for k in ("momentum", "nesterov"))
    sgd = by_opt.get("sgd", math.nan)
    showed = adaptive < momentum < sgd
    verdict = (
        "Adam and RMSprop lowest, then momentum, then plain SGD at the same learning rate, as the lesson says"
        if showed
        else "the order is not the one the lesson describes"
    )
    return Reading(showed, f"Final training loss, lowest first: {ranked}: {verdict}.")


def _frozen_depth(r) -> float:
    policy = FreezePolicy.parse(r.config.get("freeze") or r.label.split()[0].partition("@")[2] or "none")
    return {"none": 0, "head": math.inf}.get(policy.kind, policy.k)


def _read_sweep(results) -> Reading:
    """Every step of the sweep, not only its ends: each froze more, so it should train fewer weights and take less
    time than the step before; any step that did not is named."""
    rows = sorted(results, key=_frozen_depth)
    times = ", ".join(f"{r.config.get('freeze')} {r.train_time_s:.1f} s ({_pct(r.val_top1)})" for r in rows)
    wrong = []
    for before, after in zip(rows, rows[1:]):
        a, b = f"{after.config.get('freeze')} ({after.train_time_s:.1f} s)", f"{before.config.get('freeze')}"
        if (after.trainable_params or 0) >= (before.trainable_params or 0):
            wrong.append(f"{after.config.get('freeze')} trained no fewer weights than {b}")
        elif after.train_time_s > SAME * before.train_time_s:
            wrong.append(f"{a} took longer than {b} ({before.train_time_s:.1f} s)")
        elif after.train_time_s * SAME >= before.train_time_s:
            wrong.append(f"{a} took about as long as {b} ({before.train_time_s:.1f} s)")
    if not wrong:
        return Reading(
            True,
            f"From everything training to the classifier alone: {times}: each step froze more, trained fewer weights "
            "and took less time, as the lesson says.",
        )
    return Reading(
        False,
        f"From everything training to the classifier alone: {times}: each step froze more, but {'; '.join(wrong)}.",
    )


LOSS_GAP = 0.1  # an ablation's point: the whole network's final training loss at least this far below the other's
LOSS_SAME = 0.03  # two final training losses this close are "about the same"


def _lower_loss(a: str, la: float, b: str, lb: float) -> str:
    """'ResNet-34 ended with the lower training loss, 1.87 against 2.08 for …': the lower named first, so the
    comparison cannot be read backwards; a tie is said as one."""
    if abs(la - lb) < LOSS_SAME:
        return f"{a} and {b} ended with about the same training loss ({la:.2f} and {lb:.2f})"
    (low, ll), (high, lh) = sorted([(a, la), (b, lb)], key=lambda x: x[1])
    return f"{low} ended with the lower training loss, {ll:.2f} against {lh:.2f} for {high}"


def _read_ablation(whole, name: str, cut, cut_name: str, verdicts: tuple[str, str, str]) -> Reading:
    """A network next to itself with one idea taken out, both from scratch: the point shows when the whole network's
    final training loss ends at least LOSS_GAP below the other's (what fits the training images, not the noisier
    accuracy on a few validation images after a few dozen steps, which is reported beside it). `verdicts`: what
    it means when the whole network learned faster, when the other did, when neither did."""
    point, missed, tie = verdicts
    lw, lc = _loss(whole), _loss(cut)
    showed = lc - lw >= LOSS_GAP
    if showed:
        verdict = point
    elif abs(lw - lc) < LOSS_SAME:  # the same test as `_lower_loss`'s, so the two halves of the sentence agree
        verdict = tie
    elif lw < lc:
        verdict = f"{name} was ahead, but by less than the {LOSS_GAP:.2f} the lesson looks for"
    else:
        verdict = missed
    stuck = [n for n, loss in ((name, lw), (cut_name, lc)) if abs(loss - CHANCE_LOSS) <= 0.05]
    near = f" and {stuck[0]} stayed near it" if len(stuck) == 1 else " and both stayed near it" if stuck else ""
    return Reading(
        showed,
        f"{_lower_loss(name, lw, cut_name, lc)}; chance is {CHANCE_LOSS:.2f}{near}: {verdict}. Over the "
        f"{whole.final_epoch} epochs the training loss went {_first_loss(whole):.2f} → {lw:.2f} ({name}) and "
        f"{_first_loss(cut):.2f} → {lc:.2f} ({cut_name}); validation top-1 {_pct(whole.val_top1)} vs "
        f"{_pct(cut.val_top1)}; {_as_long(name, whole.train_time_s, cut_name, cut.train_time_s)}.",
    )


def _read_residual(results) -> Reading:
    cut = _by(results, "_plain")
    return _read_ablation(
        next(r for r in results if r is not cut),
        "ResNet-34",
        cut,
        "the plain network",
        (
            "with its shortcuts the same 34 layers learned faster, as the lesson says",
            "the network without shortcuts learned faster in this run",
            "the shortcuts made no clear difference in this run",
        ),
    )


def _read_bn_resnet(results) -> Reading:
    cut = _by(results, "_nobn")
    return _read_ablation(
        next(r for r in results if r is not cut),
        "ResNet-18 with BatchNorm",
        cut,
        "ResNet-18 without BatchNorm",
        (
            "BatchNorm made the same network learn faster here",
            "the network without BatchNorm learned faster in this run",
            "BatchNorm made no clear difference in this run",
        ),
    )


# --------------------------------------------------------------------------- the lessons

OFFLINE_NOTE = (
    "Without network access there are no ImageNet weights: the app then says so and starts from random weights, "
    "so a frozen backbone is a *random* feature extractor. That is still a useful baseline; run the lesson where "
    "downloads work to see what pretraining adds."
)
CHANCE = (
    "With 8 classes, chance is 12.5 % accuracy and a loss of ln 8 ≈ 2.08: a run whose loss stays there has "
    "learned nothing yet."
)
SCALED_DOWN = "Scaled down to fit 3 minutes on a 2-core CPU"

LESSONS = [
    Lesson(
        "features",
        "VGG16 vs ResNet-50 as frozen feature extractors",
        "Freeze everything but the classifier: which backbone gives better features, at what cost?",
        "**VGG16 vs ResNet-50 as frozen feature extractors.** Both backbones keep their ImageNet weights and stay "
        "frozen (`@head`); only a new linear classifier learns the 8 shape classes. Because nothing before the "
        "classifier changes, each image goes through the frozen network once (VGG16's frozen fully connected "
        "layers fc6 and fc7 included, in inference mode, as in the Keras feature-extraction guide) and the "
        "classifier trains on the stored outputs (the *feature cache*), so 5 epochs cost little more than one. "
        + OFFLINE_NOTE,
        "ResNet-50's one pass over the images takes a fraction of VGG16's time (4× fewer MACs); with ImageNet "
        "weights both classifiers learn the shapes well above chance.",
        "vgg16@head\nresnet50@head",
        dict(pretrained=True, epochs=5, size=64),
        60,
        _read_features,
    ),
    Lesson(
        "keras",
        "The Keras VGG16 recipe: first 15 layers frozen, a new 4096-4096 head",
        "Keras' `layers[:15]` frozen (here `layers:10`) under a new 4096-4096 head, next to the head alone.",
        "**The Keras VGG16 recipe.** The well-known Keras transfer-learning recipe freezes `model.layers[:15]` and "
        "puts a new classifier on top: Flatten, Dense(4096), Dense(4096), Dense(classes). Keras counts the input "
        "layer and the pooling layers too, so those 15 layers are the input, conv blocks 1-4 (10 convolutions) "
        "and 4 max-pools: here that is **`layers:10`**, the first 10 weight layers. Both runs get the recipe's "
        "head (`head=mlp`: fc6-fc7-fc8 new, with dropout); the first also trains conv block 5, the second "
        "freezes every convolution. Look at the *trainable* column and at the training time. SGD with momentum "
        "and a small learning rate, as in the recipe. " + OFFLINE_NOTE,
        "Training conv block 5 as well adds about 7 M weights to the head's 120 M and costs a full backward "
        "pass through it every step, while the frozen-convolution run trains on cached features.",
        "vgg16@layers:10\nvgg16@head",
        dict(pretrained=True, head="mlp", optimizer="momentum", lr=1e-3, epochs=2, size=64),
        40,
        _read_keras,
    ),
    Lesson(
        "batchnorm",
        "Does BatchNorm help VGG?",
        "VGG11 with and without BatchNorm, trained from scratch at the same learning rate.",
        "**Does BatchNorm help VGG?** VGG11 and VGG11-BN are the same network except for a BatchNorm after every "
        "convolution. Both train **from scratch** (every layer trains) with the same seed, data, optimizer (Adam, "
        "learning rate 0.0001 after half an epoch of warm-up) and 2 epochs. BatchNorm rescales each layer's "
        "outputs, so the signal keeps its size through the depth and a learning rate that leaves the plain "
        "network stuck lets the BN network learn. Watch the **training loss** and the accuracy. " + CHANCE,
        "The plain VGG11 stays near chance (loss ≈ 2.08) while VGG11-BN's loss falls and its accuracy climbs "
        "(measured on three seeds: 21-28 % against 13-14 %).",
        "vgg11@none\nvgg11_bn@none",
        dict(pretrained=False, optimizer="adam", lr=1e-4, warmup_epochs=0.5, epochs=2, size=48, batch_size=32),
        100,
        _read_batchnorm,
    ),
    Lesson(
        "residual",
        "Do skip connections make depth trainable?",
        "ResNet-34 next to the same 34 layers with every shortcut taken out, both from scratch.",
        "**Do skip connections make depth trainable?** He et al. (2015) found that a deep *plain* network (layers "
        "simply stacked, BatchNorm included) fits its own training images *worse* than a shallower one, and that "
        "shortcuts cure it: each block adds its input back to what its layers computed, so it only has to learn a "
        "correction, and the signal and its gradient pass through every block. Here ResNet-34 runs next to "
        "`resnet34_plain`: the same network, built by the same code, with every shortcut taken out (the "
        "downsampling blocks' 1×1 projections too). Both start the same way, as in the paper: He initialisation "
        "with every BatchNorm at 1 (Initialisation **he** in the form: timm's own start zeroes each block's last "
        "BatchNorm, which only a block with a shortcut survives). Same seed, data, optimizer (Adam, learning "
        "rate 0.001 after half an epoch of warm-up) and 3 epochs. Watch the **training loss**: how well each "
        "network fits the very images it trains on. "
        + SCALED_DOWN
        + ": 48 px images, 100 per class, 3 epochs. "
        + CHANCE,
        "ResNet-34's training loss falls well below chance while the plain network's ends at chance (measured on "
        "three seeds: 1.53-1.60 against 2.08-2.13); the validation accuracy, on 160 images after 60 steps, moves "
        "less and is noisier (17-22 % against 13-14 %).",
        "resnet34@none\nresnet34_plain@none",
        dict(
            pretrained=False, init="he", optimizer="adam", lr=1e-3, warmup_epochs=0.5, epochs=3, size=48, batch_size=32
        ),
        100,
        _read_residual,
    ),
    Lesson(
        "bn_resnet",
        "Is BatchNorm 'not recommended' in ResNet? Test it",
        "ResNet-18 with and without its BatchNorm layers, both from scratch.",
        "**Is BatchNorm 'not recommended' in ResNet? Test it.** Residual networks *can* train without "
        "normalisation, given the right start (Fixup, 2019) or more (normalizer-free networks, 2021); whether "
        "they *should* is a question a run can answer. `resnet18_nobn` is ResNet-18 with every BatchNorm taken "
        "out and Fixup's main rule in its place: the last convolution of each block starts at zero, so each block "
        "starts as its shortcut (with timm's usual start the signal would about double in variance block after "
        "block). Both train from scratch with the same seed, data, optimizer (Adam, learning rate 0.001 after "
        "half an epoch of warm-up) and 3 epochs; only the BatchNorms differ. Watch the **training loss**: which "
        "network learns faster, which ends lower? "
        + SCALED_DOWN
        + ": 48 px images, 100 per class, 3 epochs. "
        + CHANCE,
        "With BatchNorm the training loss falls while without it it stays near chance (measured on three seeds: "
        "1.89-1.90 against 2.05-2.06; validation 17-19 % against 11-14 %): trained from scratch for a few minutes, "
        "ResNet learns faster with its BatchNorms than without.",
        "resnet18@none\nresnet18_nobn@none",
        dict(pretrained=False, optimizer="adam", lr=1e-3, warmup_epochs=0.5, epochs=3, size=48, batch_size=32),
        100,
        _read_bn_resnet,
    ),
    Lesson(
        "init",
        "He vs Glorot initialisation: how loud the signal starts",
        "AlexNet (no BatchNorm) from scratch twice, started from two initialisations.",
        "**He vs Glorot initialisation.** Glorot (Xavier, 2010) keeps the variance of activations steady for "
        "symmetric activations like tanh; He (Kaiming, 2015) doubles it to make up for ReLU zeroing half of "
        "them. In a network without BatchNorm this sets how loud the signal is when training starts: with He it "
        "keeps its size through the depth, so the untrained network's outputs are large and confidently wrong "
        "(the first loss far above chance); with Glorot it shrinks layer by layer, the outputs start almost "
        "equal and the loss starts at chance. The models box runs AlexNet twice, with `init=he` and "
        "`init=glorot` (a per-run setting after the model); same seed, data and optimizer otherwise. Watch the "
        "first epoch of the loss curves. " + CHANCE,
        "He's first-epoch loss is far above chance (measured 7-9) while Glorot's starts at chance (2.1); which "
        "one ends ahead in 3 epochs varies with the seed, and the reading says which did.",
        "alexnet@none init=he\nalexnet@none init=glorot",
        dict(pretrained=False, optimizer="adam", lr=1e-4, epochs=3, size=64, batch_size=32),
        100,
        _read_init,
    ),
    Lesson(
        "optimizers",
        "SGD, momentum, Nesterov, Adam or RMSprop?",
        "ResNet-18 from scratch six times, one optimizer per run, same starting weights.",
        "**Which optimizer?** A comparison runs one optimizer per run, so this lesson runs the *same* ResNet-18 "
        "six times, each line with its own `optimizer=` and `lr=`: same seed (so the same starting weights), "
        "same data, only the optimizer differs. Plain SGD, SGD with momentum 0.9 and Nesterov momentum at "
        "learning rate 0.01; plain SGD again at 0.1 (momentum 0.9 takes steps about 10× larger, so this is the "
        "fair match for momentum); the adaptive methods Adam and RMSprop at 0.001. Compare the loss curves: how "
        "fast does each start, and where does it end? " + CHANCE,
        "Adam and RMSprop end with the lowest training loss, momentum and Nesterov beat plain SGD at the same "
        "learning rate, and plain SGD at 10× the learning rate catches up with momentum.",
        "resnet18@none optimizer=sgd lr=0.01\nresnet18@none optimizer=sgd lr=0.1\n"
        "resnet18@none optimizer=momentum lr=0.01\nresnet18@none optimizer=nesterov lr=0.01\n"
        "resnet18@none optimizer=adam lr=0.001\nresnet18@none optimizer=rmsprop lr=0.001",
        dict(pretrained=False, epochs=4, size=64),
        60,
        _read_optimizers,
    ),
    Lesson(
        "sweep",
        "How much to freeze? A freeze-depth sweep of ResNet-18",
        "One model five times, from everything training to only the classifier, in one chart.",
        "**How much to freeze?** The same ResNet-18 runs five times, freezing more each time: `none` (full "
        "fine-tuning), `stages:1`, `stages:2`, `stages:3` (the stem and the first K of its 4 stages stay fixed) "
        "and `head` (only the classifier trains). Same seed, data and optimizer. When it ends, the chart beside "
        "the downloads puts the five runs in one picture: validation accuracy against training time, each point "
        "as large as its number of trainable parameters. The diagram on the Architectures tab shades what each "
        "policy freezes. " + OFFLINE_NOTE,
        "Each step of freezing trains fewer weights and takes less time; `head` alone is the fastest.",
        "resnet18@none\nresnet18@stages:1\nresnet18@stages:2\nresnet18@stages:3\nresnet18@head",
        dict(pretrained=True, epochs=3, size=64),
        40,
        _read_sweep,
    ),
]
BY_KEY = {lesson.key: lesson for lesson in LESSONS}


def _runs(plan: Plan) -> list[tuple]:
    """What makes two plans the same comparison: labels, models and settings (not a server's time budget, not
    where a visitor's weights file lies)."""
    return [
        (r.label, dataclasses.replace(r.entry, weights_file=None), dataclasses.replace(r.settings, time_budget_s=None))
        for r in plan.runs()
    ]


@functools.cache
def _lesson_runs(key: str) -> list[tuple]:
    return _runs(BY_KEY[key].plan())  # planned once per process, not at every finished comparison


def lesson_of(dataset: str, max_per_class: int | None, plan: Plan) -> Lesson | None:
    """The lesson a comparison is, when its dataset, images per class and runs are exactly a lesson's (a reading
    speaks of every run it reads: a preset the visitor changed afterwards is read by none)."""
    if dataset != "shapes":
        return None
    mine = _runs(plan)
    for lesson in LESSONS:
        if max_per_class == lesson.max_per_class and _lesson_runs(lesson.key) == mine:
            return lesson
    return None


def read(lesson: Lesson, results: Sequence) -> Reading:
    """The sentence that reads a lesson's finished runs."""
    return lesson.read(results)
