"""Bad config values fail while composing, before any work, naming the key and what is allowed."""

import itertools
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from poolbench.config import CONF_DIR, ConfigError, Pooling, Source
from poolbench.jobs import typed_config
from poolbench.validation import absolute_layers


def test_the_default_config_composes_and_is_typed(make_cfg):
    cfg = make_cfg()
    assert cfg.pooling.name == Pooling.mean
    assert cfg.backbone.name == "minilm-l6" and cfg.task.name == "banking77" and cfg.mode.name.value == "finetune"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pooling.name=sum", r"expected one of \[cls, mean, max, last, weighted_mean, mean_nospecial, max_nospecial, "
                             r"mean_nosink, cls_mean, first_last_avg, pooler, attention, prompt_last, label_words\]"
                             r"[\s\S]*full_key: pooling.name"),
        ("pooling=sum", r"Could not find 'pooling/sum'\s+Available options in 'pooling':\s+attention\s+cls\s+"
                        r"cls_mean\s+first_last_avg\s+label_words\s+last\s+max\s+max_nospecial\s+mean\s+mean_nosink\s+"
                        r"mean_nospecial\s+pooler\s+prompt_last\s+weighted_mean\s+Config"),
        ("mode.lr=fast", r"Value 'fast' of type 'str' could not be converted to Float[\s\S]*full_key: mode.lr"),
        ("seed=zero", r"Value 'zero' of type 'str' could not be converted to Integer[\s\S]*full_key: seed"),
        ("backbone.max_length=long", r"full_key: backbone.max_length"),
        ("mode.learning_rate=1e-3", r"Key 'learning_rate' not in 'FinetuneConfig'[\s\S]*full_key: mode.learning_rate"),
        ("task.max_train_exampels=10", r"Key 'max_train_exampels' not in 'TaskConfig'"),
        ("backbone.family=transformer", r"expected one of \[encoder_nsp, encoder_mlm, encoder_cls, decoder\][\s\S]*backbone.family"),
        ("backbone.dtype=fp8", r"expected one of \[float32, bfloat16, auto\][\s\S]*full_key: backbone.dtype"),
    ],
)
def test_bad_values_fail_at_compose_time_naming_the_key(make_cfg, override, message):
    with pytest.raises(ConfigCompositionException) as failure:
        make_cfg(override)
    # Hydra prints the error and its cause, the omegaconf message with the full key.
    shown = f"{failure.value}\n{failure.value.__cause__}"
    assert re.search(message, shown), shown


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("mode.lr=-0.001", r"mode.lr=-0.001 is out of range: it must be > 0"),
        ("mode.batch_size=0", r"mode.batch_size=0 is out of range"),
        ("mode.dropout=1.5", r"mode.dropout=1.5 is out of range: it must be < 1"),
        ("task.max_train_examples=-5", r"task.max_train_examples=-5"),
        ("layer=first", r"layer='first': use an integer"),
        ("layer=all", r"layer=all needs mode=probe"),
    ],
)
def test_out_of_range_values_fail_before_any_work(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        make_cfg(override)


def test_probe_mode_accepts_all_layers(make_cfg):
    cfg = make_cfg("mode=probe", "layer=all")  # validated: no ConfigError
    assert absolute_layers(cfg.layer, num_layers=6) == [0, 1, 2, 3, 4, 5, 6]  # the embeddings and every block


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_value_an_experiment_sweeps_composes_and_validates(make_cfg, experiment):
    # Each swept value composes, and validates in at least one job of the sweep: a typo in a study fails
    # here, not an hour in, while a setting refused by design elsewhere (a decoder readout on an encoder
    # backbone) is allowed, as the sweep allows it. The other values are tried in sweep order.
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        sweep = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True).hydra.sweeper.params
    values = {key: str(options).split(",") for key, options in sweep.items()}
    for key, options in values.items():
        others = {k: v for k, v in values.items() if k != key}
        for option in options:
            refusals = []
            for combination in itertools.product(*others.values()):
                job = {**dict(zip(others, combination)), key: option}
                try:
                    cfg = make_cfg(f"experiment={experiment}", *(f"{k}={v}" for k, v in job.items()))
                except ConfigError as refused:
                    refusals.append(str(refused))
                    continue
                assert cfg.study == experiment
                break
            else:
                pytest.fail(f"{key}={option} is refused in every job of experiment={experiment}: {refusals[0]}")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("arm", "nsp", r"backbone.pretrain.arm='nsp': use one of random, mlm"),
    ("size", "huge", r"backbone.pretrain.size='huge': use one of tiny, mini"),
    ("steps", 0, r"backbone.pretrain.steps=0 is out of range: it must be > 0"),
    ("lr", -0.1, r"backbone.pretrain.lr=-0.1 is out of range: it must be > 0"),
    ("warmup", 1.0, r"backbone.pretrain.warmup=1.0 is out of range: a fraction of the steps, in \[0, 1\)"),
    ("seed", -1, r"backbone.pretrain.seed=-1 is out of range: it must be >= 0"),
])
def test_a_recipe_is_checked_alike_in_the_config_and_in_code(make_cfg, field, value, message):
    """One set of checks for both forms of a recipe: `backbone.pretrain.<field>` refused while the
    config is validated, and the same Recipe field refused in code, with the same message."""
    from poolbench.pretrain.recipe import Recipe

    with pytest.raises(ConfigError, match=message):
        make_cfg("backbone=pretrained", f"backbone.pretrain.{field}={value}")
    fields = dict(arm="mlm", size="tiny", vocab_size=64, seq_len=20, steps=8, batch_size=4, lr=1e-3, warmup=0.1,
                  seed=0, corpus="synthetic")
    with pytest.raises(ConfigError, match=message):
        Recipe(**{**fields, field: value})


def test_a_pretraining_batch_must_split_over_the_devices(make_cfg):
    with pytest.raises(ConfigError, match=r"backbone.pretrain.batch_size=30 does not split over "
                                          r"backbone.pretrain.devices=4: use a multiple of 4"):
        make_cfg("backbone=pretrained", "backbone.pretrain.batch_size=30", "backbone.pretrain.devices=4")
    make_cfg("backbone=pretrained", "backbone.pretrain.batch_size=32", "backbone.pretrain.devices=4")


@pytest.mark.parametrize("arm", ["random", "mlm", "mlm_pairs", "mlm_nsp", "mlm_sop"])
def test_the_ablation_arms_are_the_nsp_ablations_recipes_with_the_runs_seed_as_pretraining_seed(make_cfg, arm):
    """backbone=ablation-<arm> seed=s names the very recipe experiment=nsp_ablation builds for that arm and
    pretraining seed s (so its built backbone is found, never rebuilt), and extends the `pretrained` option."""
    for seed in (0, 2):
        ours = typed_config(make_cfg(f"backbone=ablation-{arm}", f"seed={seed}")).backbone
        ablation = typed_config(make_cfg("experiment=nsp_ablation", f"backbone.pretrain.arm={arm}",
                                         f"backbone.pretrain.seed={seed}")).backbone
        assert ours.pretrain == ablation.pretrain and ours.pretrain.seed == seed
        assert (ours.name, ours.source, ours.family, ours.padding_side) == (f"{arm}-tiny", Source.pretrained,
                                                                           ablation.family, "right")
