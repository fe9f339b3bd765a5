"""The training recipe: schedule values, optimizer options, the weight average used for validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skyseg.errors import ConfigError
from skyseg.training.recipe import average_momentum, check_recipe, learning_rate_at

from .synthetic_patches import write_dataset

GOOD = dict(schedule="cosine", optimizer="adamw", weight_decay=1e-4, warmup_epochs=1.0,
            ema_momentum=0.99, clip_norm=1.0)


def warmup_cosine(step: float, base: float, total_steps: int, warmup_steps: int) -> float:
    """The schedule as the recipe states it, written out here: a linear rise to ``base``
    over ``warmup_steps``, then half a cosine down to 1 % of it at ``total_steps``."""
    if step < warmup_steps:
        return base * step / warmup_steps
    progress = min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
    return base * (0.01 + 0.99 * (1 + math.cos(math.pi * progress)) / 2)


@pytest.mark.parametrize(("step", "expected"), [
    (0, 0.0),           # warm-up starts at 0
    (5, 0.5e-3),        # half-way up
    (10, 1e-3),         # the peak, where the cosine starts
    (55, 1e-3 * (0.01 + 0.99 * 0.5)),  # half-way down the cosine
    (100, 1e-5),        # the end: 1 % of the peak
    (150, 1e-5),        # and it stays there
])
def test_schedule_values_at_given_steps(step, expected):
    assert learning_rate_at(step, base=1e-3, total_steps=100, warmup_steps=10) == \
        pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_schedule_without_warmup_starts_at_the_peak_and_decreases():
    rates = [learning_rate_at(s, base=1.0, total_steps=20, warmup_steps=0) for s in range(21)]
    assert rates[0] == 1.0
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert rates[-1] == pytest.approx(0.01)


@pytest.mark.slow
def test_keras_schedule_matches_the_formula():
    from skyseg.training.recipe import warmup_cosine_class

    schedule = warmup_cosine_class()(2e-3, 300, 40)
    for step in (0, 1, 39, 40, 41, 100, 170, 299, 300, 1000):
        assert float(schedule(step)) == pytest.approx(
            warmup_cosine(step, base=2e-3, total_steps=300, warmup_steps=40), rel=1e-5)
    # It round-trips through the config Keras saves with the optimizer.
    again = type(schedule)(**schedule.get_config())
    assert float(again(123)) == pytest.approx(float(schedule(123)))


def test_average_momentum_warms_up():
    assert average_momentum(0.99, 0) == pytest.approx(0.1)
    assert average_momentum(0.99, 90) == pytest.approx(0.91)
    assert average_momentum(0.99, 10 ** 6) == 0.99


@pytest.mark.parametrize(("change", "message"), [
    ({"schedule": "step"}, "--schedule"),
    ({"optimizer": "sgd"}, "--optimizer"),
    ({"weight_decay": -1.0}, "--weight-decay"),
    ({"optimizer": "adam", "weight_decay": 0.01}, "needs --optimizer adamw"),
    ({"warmup_epochs": math.nan}, "--warmup-epochs"),
    ({"ema_momentum": 1.0}, "--ema"),
    ({"clip_norm": -2.0}, "--clip-norm"),
])
def test_bad_recipe_options_name_the_option(change, message):
    with pytest.raises(ConfigError, match=message):
        check_recipe(**{**GOOD, **change})


def test_good_recipe_passes():
    check_recipe(**GOOD)
    check_recipe(**{**GOOD, "optimizer": "adam", "weight_decay": 0.0, "ema_momentum": None,
                    "clip_norm": None, "schedule": "plateau"})


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    from skyseg.training.train import train

    root = tmp_path_factory.mktemp("recipe")
    data = write_dataset(root / "data", counts={"train": 32, "val": 16}, size=32)
    result = train(data, root / "run", epochs=2, batch_size=8, backbone="resnet18", seed=3,
                   workers=1, bn_momentum=0.6, ema=0.9)
    return data, result


@pytest.mark.slow
def test_validation_scores_the_averaged_weights(averaged_run):
    """model_best.h5 (the averaged weights) reproduces the logged validation IoU; the raw
    weights of the same epoch do not."""
    from skyseg.data.generators import PatchBatches
    from skyseg.image.metrics import iou_score
    from skyseg.io.run_folder import MODEL_BEST, MODEL_LAST
    from skyseg.training.model import load_model

    data, result = averaged_run
    batches = PatchBatches(data, "val", batch_size=16, seed=0)
    x, y = batches.batch(0, 0)
    batches.close()
    best_row = next(r for r in result.history if r["epoch"] == result.best_epoch)
    best = load_model(result.run_dir / MODEL_BEST)
    probability = np.asarray(best(x, training=False))
    assert iou_score(y, probability) == pytest.approx(best_row["val_iou"], abs=1e-5)
    if result.best_epoch == result.epochs:
        raw = load_model(result.run_dir / MODEL_LAST)
        raw_probability = np.asarray(raw(x, training=False))
        assert np.abs(raw_probability - probability).max() > 1e-4


@pytest.mark.slow
def test_the_average_is_saved_for_resume(averaged_run):
    from skyseg.io.run_folder import MODEL_LAST
    from skyseg.training.model import read_model_arrays, read_model_attributes
    from skyseg.training.train import AVERAGE_ARRAYS

    _, result = averaged_run
    arrays = read_model_arrays(result.run_dir / MODEL_LAST, AVERAGE_ARRAYS)
    state = read_model_attributes(result.run_dir / MODEL_LAST)["state"]
    assert arrays is not None and len(arrays) > 100
    assert state["average_updates"] == 2 * 4  # 2 epochs of 32 patches in batches of 8
    assert all(np.isfinite(a).all() for a in arrays)


@pytest.mark.slow
def test_adamw_with_schedule_and_arrays_survive_save_and_load(tmp_path):
    """model_last.h5 keeps AdamW, its schedule, the decay exclusion and the average arrays."""
    from skyseg.backend import import_keras
    from skyseg.image import metrics
    from skyseg.training.model import load_model, read_model_arrays, save_model
    from skyseg.training.recipe import exclude_from_decay, make_optimizer

    keras = import_keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    hidden = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(make_optimizer(keras, learning_rate=1e-2, total_steps=10, warmup_steps=2,
                                 weight_decay=0.1), loss=metrics.bce_jaccard_loss)
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    y = (x[..., :1] > 0.5).astype(np.uint8)
    for _ in range(3):
        model.train_on_batch(x, y)
    average = [w.numpy() * 0.5 for w in model.weights]
    path = save_model(model, tmp_path / "model_last.h5", arrays={"weight_average": average})
    loaded = load_model(path, compile=True)
    exclude_from_decay(loaded.optimizer)
    assert int(loaded.optimizer.iterations.numpy()) == 3
    assert loaded.optimizer.get_config()["learning_rate"]["config"]["total_steps"] == 10
    for a, b in zip(read_model_arrays(path, "weight_average"), average, strict=True):
        np.testing.assert_array_equal(a, b)
    assert read_model_arrays(path, "missing") is None
    np.testing.assert_allclose(model.train_on_batch(x, y), loaded.train_on_batch(x, y),
                               rtol=1e-6)
    # The schedule goes on from the saved step (step 3 of warm-up 2, cosine to 10: an
    # eighth of the way down).
    assert float(loaded.optimizer.learning_rate) == pytest.approx(
        1e-2 * (0.01 + 0.99 * (1 + math.cos(math.pi / 8)) / 2), rel=1e-5)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
