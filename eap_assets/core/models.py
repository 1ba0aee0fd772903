"""Cell-type classifiers (paper §II-D): the paper's CNN, a LightGBM baseline and the width rule.

Tasks (paper §III): ``binary`` (excitatory / inhibitory, classes ``["E", "I"]``) and ``mtype``
(the 13 layer-5 morphological types).  Inputs come from a feature table
(:mod:`eap_assets.core.features`): the CNN takes the (N, 10, 10, 2) amplitude / width images
(:func:`eap_assets.core.features.images_from_table`), LightGBM the same 200 numbers as a flat
matrix (:func:`feature_matrix`), the width rule the width on the largest contact
(``width_at_max_ms``).

Paper CNN and its reading of the paper / published code
-------------------------------------------------------
* conv 32@3x3, stride 1, ReLU, ``same`` padding -> max-pool 2x2 ``same`` (10x10 -> 5x5)
  -> conv 64@3x3 ReLU ``same`` -> max-pool 2x2 ``same`` (5x5 -> 3x3) -> dense 1024 ReLU
  -> dropout -> dense softmax (2 or 13).
* "dropout rate of 0.7": the published TensorFlow 1 code passes 0.7 as ``keep_prob`` of
  ``tf.nn.dropout``, i.e. 30 % of the units are dropped; Keras' ``Dropout(rate)`` takes the
  *drop* probability, so the paper setting is ``dropout_rate=0.3``.
* "5000 epochs, each time sampling 1000 observations": 5000 optimiser steps with mini-batches of
  1000 (the published code uses 2000 steps).  Mini-batches are drawn from a seeded stream of
  shuffled passes over the training set (every row is used once per pass).
* Adam, learning rate 5e-4 (published code), softmax cross-entropy.
* Input scaling (not stated in the paper): a ``keras.layers.Normalization(axis=-1)`` adapted on
  the training images is the model's first layer, i.e. each channel (amplitude in µV, width in
  ms) is standardised with the training set's mean and standard deviation over all contacts.
  It is part of the saved model, so the model takes *raw* feature images.
* Keras' default initialisers (Glorot uniform, zero biases) replace the TF1 code's truncated
  normals; the paper does not state them.

Determinism: :func:`train_cnn` seeds Python, NumPy and TensorFlow (``keras.utils.set_random_seed``)
and draws its mini-batches from a seeded NumPy generator, so weights initialisation, dropout
masks and batch order repeat for the same seed.  With one intra-op thread on CPU the run repeats
bit for bit (tested); with several threads TensorFlow's CPU kernels can change the order of
floating-point reductions, so results may differ in the last bits (op determinism
``tf.config.experimental.enable_op_determinism`` is process-global and is not switched on here).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from eap_assets.core import cells
from eap_assets.core.features import feature_columns

#: The classification tasks of the paper.
TASKS: tuple[str, ...] = ("binary", "mtype")


@dataclass(frozen=True)
class ModelKind:
    """What the code needs to know about one kind of model, in one place.

    Attributes
    ----------
    name : str
        Registry names and Dagster assets (``<name>_model``).
    label : str
        How tables and figures name it.
    model_input : str
        What it takes: ``images`` (the paper's amplitude/width images), ``features`` (the flat
        amplitude/width vector) or ``eaps`` (raw waveforms, (N, contacts, samples) µV).
    mlflow_flavour : str
        The MLflow flavour (``mlflow.<flavour>``) it is logged and loaded with.
    requirements : tuple of str
        Packages a logged model needs (pinned to the installed versions when logged).
    """

    name: str
    label: str
    model_input: str
    mlflow_flavour: str
    requirements: tuple[str, ...]


#: The model kinds: the paper CNN, LightGBM on the 200 amplitude/width features, and the waveform
#: model (:mod:`eap_assets.core.waveform`). The waveform model is a cloudpickled
#: :class:`~eap_assets.core.waveform.WaveformModel` pickled *by reference*: loading it imports
#: ``eap_assets.core.waveform``, so the package itself is a requirement (rather than ``code_paths``:
#: a logged copy of the package would be put first on ``sys.path`` by ``load_model`` and shadow the
#: installed one in the loading process).
MODEL_KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (
    ModelKind("cnn", "CNN", "images", "keras", ("tensorflow-cpu", "keras", "numpy")),
    ModelKind("lgbm", "LightGBM", "features", "lightgbm", ("lightgbm", "scikit-learn", "numpy")),
    ModelKind("waveform", "waveform", "eaps", "sklearn", ("eap_assets", "lightgbm", "scikit-learn", "numpy",
                                                          "cloudpickle")),
)}
#: Their names, in this order.
KINDS: tuple[str, ...] = tuple(MODEL_KINDS)
#: Classes of the binary task, in this order (label 0 = excitatory).
BINARY_CLASSES: tuple[str, ...] = ("E", "I")
#: The paper's 13 m-types in its Table I order.
PAPER_MTYPES: tuple[str, ...] = tuple(cells.parse_name(name)[1] for name in cells.PAPER_CELLS)
#: Rows per forward pass when predicting with the CNN.
PREDICT_CHUNK = 4096


# --------------------------------------------------------------------------------------------
# labels and inputs
# --------------------------------------------------------------------------------------------

def order_cell_types(names) -> list[str]:
    """Distinct names in the paper's Table I order; names not in the paper appended alphabetically."""
    present = {str(n) for n in names}
    known = [m for m in PAPER_MTYPES if m in present]
    return known + sorted(present - set(PAPER_MTYPES))


def task_labels(table: pd.DataFrame, task: str) -> tuple[np.ndarray, list[str]]:
    """Integer class labels of a feature table's rows for one task.

    Parameters
    ----------
    table : DataFrame
        Feature table with columns ``ei`` (``"E"`` / ``"I"``) and ``mtype``.
    task : str
        ``"binary"``: classes ``["E", "I"]`` from ``ei``; ``"mtype"``: the m-types present, in the
        paper's Table I order (others appended alphabetically).  Compute the labels on the whole
        table before splitting it, so every split uses the same class indices.

    Returns
    -------
    labels : ndarray of int64, shape (N,)
        Index into ``classes``.
    classes : list of str

    Raises
    ------
    ValueError
        For an unknown task, a missing column or an ``ei`` value other than E / I.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    column = "ei" if task == "binary" else "mtype"
    if column not in table.columns:
        raise ValueError(f"task {task!r} needs a {column!r} column; the table has {list(table.columns)[:10]}...")
    values = table[column].astype(str).to_numpy()
    if task == "binary":
        classes = list(BINARY_CLASSES)
        bad = sorted(set(values) - set(classes))
        if bad:
            raise ValueError(f"task 'binary': column 'ei' holds {bad}, expected only {classes}")
    else:
        classes = order_cell_types(values)
    index = {c: i for i, c in enumerate(classes)}
    return np.fromiter((index[v] for v in values), dtype=np.int64, count=values.size), classes


def feature_matrix(table: pd.DataFrame) -> np.ndarray:
    """The ``amp_c*`` then ``width_c*`` columns of a feature table as float32, shape (N, 2 * n_contacts)."""
    n_contacts = sum(1 for c in table.columns if str(c).startswith("amp_c"))
    if n_contacts == 0:
        raise ValueError("feature table has no amp_c* columns")
    amp_cols, width_cols = feature_columns(n_contacts)
    missing = [c for c in amp_cols + width_cols if c not in table.columns]
    if missing:
        raise ValueError(f"feature table lacks {len(missing)} feature columns (e.g. {missing[0]})")
    return table[amp_cols + width_cols].to_numpy(np.float32)


# --------------------------------------------------------------------------------------------
# trained model container
# --------------------------------------------------------------------------------------------

@dataclass
class TrainedModel:
    """A fitted classifier with its training record.

    Attributes
    ----------
    model : keras.Model or lightgbm.LGBMClassifier
        The CNN takes raw feature images (N, rows, cols, 2); LightGBM the flat feature matrix.
    history : DataFrame
        CNN: one row per evaluation, columns ``step, loss, train_accuracy, val_loss,
        val_accuracy`` (loss / train accuracy averaged over the mini-batches since the previous
        evaluation, with dropout active).  LightGBM: ``iteration, val_<metric>`` (validation
        ``binary_logloss`` or ``multi_logloss`` per boosting round).
    best_step : int
        Step (CNN) / iteration (LightGBM) of the best validation score.  The returned weights
        are those of ``best_step`` when early stopping is on; with ``patience=None`` the CNN
        keeps the weights of the last step (paper-faithful) and ``best_step`` is informative only
        (without a validation set it is the last step).
    steps_run : int
        Optimiser steps / boosting rounds actually run.
    seconds : float
        Wall-clock training time.
    classes : list of str
        Class names, index = label (``["0", "1", ...]`` when the trainer was not given names).
    """

    model: Any
    history: pd.DataFrame
    best_step: int
    steps_run: int
    seconds: float
    classes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """``"cnn"``, ``"lgbm"``, or the ``kind`` a model class declares itself (e.g. ``"waveform"``)."""
        declared = getattr(self.model, "kind", None)
        if isinstance(declared, str):
            return declared
        return "lgbm" if type(self.model).__module__.split(".")[0] == "lightgbm" else "cnn"

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (N, n_classes), columns in label order.

        ``x``: feature images (N, rows, cols, 2) for the CNN, the feature matrix (N, 200) for LightGBM,
        whatever a self-declared model kind takes (raw EAPs for ``waveform``) otherwise.
        """
        if self.kind not in ("cnn", "lgbm"):
            return self.model.predict_proba(x)
        n_classes = len(self.classes)
        if self.kind == "lgbm":
            x = np.asarray(x, dtype=np.float32)
            if not hasattr(self.model, "predict_proba"):  # a bare lightgbm.Booster
                raw = np.asarray(self.model.predict(x, num_threads=0), dtype=np.float64)
                return np.column_stack([1.0 - raw, raw]) if raw.ndim == 1 else raw
            # prediction is per row, so its threads do not change the answer: OpenMP's default
            # (OMP_NUM_THREADS, else every core) rather than the training's ``n_jobs``
            proba = np.asarray(self.model.predict_proba(x, num_threads=0), dtype=np.float64)
            seen = np.asarray(self.model.classes_, dtype=np.int64)
            if n_classes and (proba.shape[1] != n_classes or not np.array_equal(seen, np.arange(n_classes))):
                full = np.zeros((proba.shape[0], n_classes))
                full[:, seen] = proba
                proba = full
            return proba
        x = np.asarray(x, dtype=np.float32)
        if x.shape[0] == 0:
            return np.zeros((0, n_classes or int(self.model.output_shape[-1])))
        parts = [np.asarray(self.model(x[i:i + PREDICT_CHUNK], training=False))
                 for i in range(0, len(x), PREDICT_CHUNK)]
        return np.concatenate(parts).astype(np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Most probable class label of each row (int64)."""
        return np.argmax(self.predict_proba(x), axis=1).astype(np.int64)


def _class_names(classes: list[str] | None, n_classes: int) -> list[str]:
    if classes is None:
        return [str(i) for i in range(n_classes)]
    if len(classes) != n_classes:
        raise ValueError(f"{len(classes)} class names given for n_classes={n_classes}")
    return [str(c) for c in classes]


def _check_xy(name: str, x: np.ndarray, y: np.ndarray, n_classes: int, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.ndim != ndim:
        raise ValueError(f"x_{name} must have {ndim} dimensions, got shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y_{name} must be 1-D with {x.shape[0]} labels, got shape {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"y_{name} must hold integer labels in [0, {n_classes}), got dtype {y.dtype}, "
                         f"range [{y.min()}, {y.max()}]")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"x_{name} contains NaN or inf")
    if name == "train" and y.size and np.unique(y).size < 2:
        raise ValueError(f"y_train holds a single class (label {int(y[0])}) of {n_classes}: a classifier needs "
                         "at least two classes to learn from (e.g. the binary task needs excitatory and "
                         "inhibitory cells)")
    return x, y.astype(np.int64)


# --------------------------------------------------------------------------------------------
# paper CNN
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CNNConfig:
    """Training settings of the paper CNN.

    Attributes
    ----------
    steps : int
        Optimiser steps (paper: 5000 "epochs" of 1000 samples; published code 2000).
    batch_size : int
        Rows per step (paper: 1000).
    learning_rate : float
        Adam learning rate (published code: 5e-4).
    dropout_rate : float
        Share of the dense layer's units dropped during training.  The paper's "dropout rate
        of 0.7" is the TF1 ``keep_prob`` of its code, hence 0.3.
    eval_every : int
        Steps between validation evaluations (history rows, ``on_step`` calls).
    patience : int or None
        None: paper-faithful, run all ``steps`` and keep the final weights.  An int: stop after
        that many evaluations without an improvement of validation accuracy and restore the
        weights of the best evaluation.
    threads : int
        TensorFlow intra-op threads (inter-op: 1); only effective before TF's runtime starts.
    lr_decay_patience : int or None
        None: constant learning rate (the paper).  An int: multiply the learning rate by
        ``lr_decay_factor`` after that many evaluations without an improvement of validation
        accuracy (reduce-on-plateau); counted separately from ``patience``.
    lr_decay_factor : float
        Factor of each decay, in (0, 1).
    """

    steps: int = 5000
    batch_size: int = 1000
    learning_rate: float = 5e-4
    dropout_rate: float = 0.3
    eval_every: int = 100
    patience: int | None = None
    threads: int = 1
    lr_decay_patience: int | None = None
    lr_decay_factor: float = 0.5

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"CNNConfig.{name} must be a positive integer, got {value!r}")
        if not (np.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"CNNConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"CNNConfig.dropout_rate is the drop probability and must be in [0, 1), got "
                             f"{self.dropout_rate!r} (the paper's 0.7 is a keep probability: use 0.3)")
        for name in ("patience", "lr_decay_patience"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"CNNConfig.{name} must be None or a positive integer, got {value!r}")
        if not 0.0 < self.lr_decay_factor < 1.0:
            raise ValueError(f"CNNConfig.lr_decay_factor must be in (0, 1), got {self.lr_decay_factor!r}")


def configure_tf_threads(threads: int) -> bool:
    """Set TensorFlow's intra-op threads to ``threads`` and inter-op threads to 1.

    Returns True when the setting is in effect, False when TensorFlow's runtime was already
    initialised with other values (they cannot change after that; call this early).
    """
    import tensorflow as tf

    threading = tf.config.threading
    if threading.get_intra_op_parallelism_threads() == threads and threading.get_inter_op_parallelism_threads() == 1:
        return True
    try:
        threading.set_intra_op_parallelism_threads(threads)
        threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        return False
    return True


def build_paper_cnn(image_shape: tuple[int, int, int], n_classes: int, config: CNNConfig,
                    train_images: np.ndarray):
    """The paper's CNN with input standardisation built in.

    Parameters
    ----------
    image_shape : tuple (rows, cols, channels)
        Feature image shape, (10, 10, 2) for SqMEA-10-15.
    n_classes : int
        Output classes (2 binary, 13 m-type).
    config : CNNConfig
        Supplies the dropout rate.
    train_images : ndarray, shape (N, rows, cols, channels)
        Training images; the first layer (``Normalization(axis=-1)``) is adapted on them
        (per-channel mean and standard deviation).

    Returns
    -------
    keras.Model
        Takes raw feature images, outputs softmax probabilities (N, n_classes).
    """
    import keras

    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (rows, cols, channels), got {image_shape}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    train_images = np.asarray(train_images, dtype=np.float32)
    if train_images.ndim != 4 or train_images.shape[1:] != image_shape or train_images.shape[0] == 0:
        raise ValueError(f"train_images must have shape (N>0, {', '.join(map(str, image_shape))}), "
                         f"got {train_images.shape}")
    normalization = keras.layers.Normalization(axis=-1, name="standardise")
    normalization.adapt(train_images)
    model = keras.Sequential([
        keras.Input(shape=image_shape, name="feature_image"),
        normalization,
        keras.layers.Conv2D(32, 3, strides=1, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2, padding="same", name="pool1"),
        keras.layers.Conv2D(64, 3, strides=1, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, padding="same", name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(1024, activation="relu", name="dense"),
        keras.layers.Dropout(config.dropout_rate, name="dropout"),
        keras.layers.Dense(n_classes, activation="softmax", name="softmax"),
    ], name="paper_cnn")
    return model


def _batch_stream(n: int, batch_size: int, rng: np.random.Generator):
    """Endless mini-batches of exactly ``batch_size`` indices from consecutive shuffled passes."""
    buffer = np.empty(0, dtype=np.int64)
    while True:
        while buffer.size < batch_size:
            buffer = np.concatenate([buffer, rng.permutation(n)])
        batch, buffer = buffer[:batch_size], buffer[batch_size:]
        yield batch


def train_cnn(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None,
              n_classes: int, config: CNNConfig, seed: int,
              on_step: Callable[[int, dict[str, float]], None] | None = None,
              classes: list[str] | None = None,
              monitor: Callable[[int, Any, dict[str, float]], None] | None = None) -> TrainedModel:
    """Train the paper CNN with a custom ``tf.function`` step on in-memory arrays.

    Parameters
    ----------
    x_train, y_train : ndarrays, shapes (N, rows, cols, 2) and (N,)
        Raw feature images and integer labels.
    x_val, y_val : ndarrays or None
        Validation images and labels (may be None / empty only when ``config.patience`` is None;
        validation metrics are then NaN).
    n_classes : int
    config : CNNConfig
    seed : int
        Seeds weights, dropout and mini-batch order.
    on_step : callable, optional
        Called every ``eval_every`` steps (and after the last step) with
        ``(step, {"loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate"})``
        (accuracies as fractions, not %).
    classes : list of str, optional
        Class names stored in the result.
    monitor : callable, optional
        Called at the same points with ``(step, model, metrics)`` (the Keras model as it is at
        that step), for measurements outside training (benchmarks); must not change the model.

    Returns
    -------
    TrainedModel
    """
    import keras
    import tensorflow as tf

    x_train, y_train = _check_xy("train", x_train, y_train, n_classes, 4)
    if x_train.shape[0] == 0:
        raise ValueError("x_train is empty")
    has_val = x_val is not None and y_val is not None and len(x_val) > 0
    if has_val:
        x_val, y_val = _check_xy("val", x_val, y_val, n_classes, 4)
        if x_val.shape[1:] != x_train.shape[1:]:
            raise ValueError(f"x_val images {x_val.shape[1:]} differ from x_train images {x_train.shape[1:]}")
    elif config.patience is not None or config.lr_decay_patience is not None:
        raise ValueError("early stopping (config.patience) and learning-rate decay (config.lr_decay_patience) "
                         "need a non-empty validation set")
    names = _class_names(classes, n_classes)

    configure_tf_threads(config.threads)
    keras.utils.set_random_seed(int(seed))
    start = time.perf_counter()
    model = build_paper_cnn(x_train.shape[1:], n_classes, config, x_train)
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    x_all = tf.constant(x_train)
    y_all = tf.constant(y_train)

    @tf.function
    def train_step(indices):
        xb = tf.gather(x_all, indices)
        yb = tf.gather(y_all, indices)
        with tf.GradientTape() as tape:
            proba = model(xb, training=True)
            loss = loss_fn(yb, proba)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        correct = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(proba, axis=1), yb), tf.float32))
        return loss, correct

    @tf.function
    def eval_chunk(xb, yb):
        proba = model(xb, training=False)
        loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(yb, proba))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(proba, axis=1), yb), tf.float32))
        return loss, correct

    def validate() -> tuple[float, float]:
        if not has_val:
            return float("nan"), float("nan")
        loss_sum = correct_sum = 0.0
        for i in range(0, len(x_val), PREDICT_CHUNK):
            loss, correct = eval_chunk(tf.constant(x_val[i:i + PREDICT_CHUNK]), tf.constant(y_val[i:i + PREDICT_CHUNK]))
            loss_sum += float(loss)
            correct_sum += float(correct)
        return loss_sum / len(x_val), correct_sum / len(x_val)

    batches = _batch_stream(len(x_train), config.batch_size, np.random.default_rng(seed))
    rows: list[dict[str, float]] = []
    best_acc, best_step, best_weights, stale, since_decay = -np.inf, 0, None, 0, 0
    losses: list[Any] = []
    accs: list[Any] = []
    step = 0
    for step in range(1, config.steps + 1):
        loss, acc = train_step(tf.constant(next(batches), dtype=tf.int32))
        losses.append(loss)
        accs.append(acc)
        if step % config.eval_every and step != config.steps:
            continue
        val_loss, val_acc = validate()
        metrics = {"loss": float(np.mean([float(v) for v in losses])),
                   "train_accuracy": float(np.mean([float(v) for v in accs])),
                   "val_loss": val_loss, "val_accuracy": val_acc,
                   "learning_rate": float(optimizer.learning_rate.numpy())}
        losses.clear()
        accs.clear()
        rows.append({"step": step, **metrics})
        if on_step is not None:
            on_step(step, metrics)
        if monitor is not None:
            monitor(step, model, metrics)
        if has_val and val_acc > best_acc:
            best_acc, best_step, stale, since_decay = val_acc, step, 0, 0
            if config.patience is not None:
                best_weights = [w.copy() for w in model.get_weights()]
        else:
            stale += 1
            since_decay += 1
            if config.patience is not None and stale >= config.patience:
                break
            if config.lr_decay_patience is not None and since_decay >= config.lr_decay_patience:
                optimizer.learning_rate.assign(float(optimizer.learning_rate.numpy()) * config.lr_decay_factor)
                since_decay = 0
    if not has_val:
        best_step = step
    if config.patience is not None and best_weights is not None:
        model.set_weights(best_weights)
    history = pd.DataFrame(rows, columns=["step", "loss", "train_accuracy", "val_loss", "val_accuracy",
                                          "learning_rate"])
    return TrainedModel(model=model, history=history, best_step=int(best_step), steps_run=int(step),
                        seconds=time.perf_counter() - start, classes=names)


# --------------------------------------------------------------------------------------------
# LightGBM baseline
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LGBMConfig:
    """Settings of the LightGBM baseline on the flat feature matrix.

    Attributes
    ----------
    n_estimators : int
        Maximum boosting rounds.
    learning_rate : float
    num_leaves : int
    early_stopping_rounds : int or None
        Stop when the validation log-loss has not improved for this many rounds (None: run all).
    threads : int
        LightGBM ``n_jobs``.
    max_bin : int
        Histogram bins per feature (LightGBM's default 255); fewer bins fit faster.
    feature_fraction : float
        Share of the features each tree is grown on (LightGBM ``colsample_bytree``, drawn from the seed;
        1.0: all). Growing a tree costs in proportion to its features, so 0.5 halves the time per round.
    """

    n_estimators: int = 1000
    learning_rate: float = 0.05
    num_leaves: int = 31
    early_stopping_rounds: int | None = 50
    threads: int = 1
    max_bin: int = 255
    feature_fraction: float = 1.0

    def __post_init__(self) -> None:
        for name in ("n_estimators", "threads", "max_bin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"LGBMConfig.{name} must be a positive integer, got {value!r}")
        leaves = self.num_leaves
        if isinstance(leaves, bool) or not isinstance(leaves, (int, np.integer)) or leaves < 2:
            raise ValueError(f"LGBMConfig.num_leaves must be an integer >= 2, got {self.num_leaves!r}")
        if not (np.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"LGBMConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if not (np.isfinite(self.feature_fraction) and 0 < self.feature_fraction <= 1):
            raise ValueError(f"LGBMConfig.feature_fraction must be in (0, 1], got {self.feature_fraction!r}")
        rounds = self.early_stopping_rounds
        if rounds is not None and (isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1):
            raise ValueError(f"LGBMConfig.early_stopping_rounds must be None or a positive integer, got {rounds!r}")


def train_lgbm(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int,
               config: LGBMConfig, seed: int, classes: list[str] | None = None) -> TrainedModel:
    """Fit a deterministic LightGBM classifier with early stopping on the validation set.

    Parameters
    ----------
    x_train, y_train : ndarrays, shapes (N, F) and (N,)
        Feature matrix (:func:`feature_matrix`) and integer labels.
    x_val, y_val : ndarrays
        Validation set: early stopping and the history's log-loss.
    n_classes : int
        2 -> binary objective, more -> multiclass.
    config : LGBMConfig
    seed : int
        LightGBM ``random_state`` (with ``deterministic=True``, ``force_col_wise=True``).
    classes : list of str, optional
        Class names stored in the result.

    Returns
    -------
    TrainedModel
        ``history``: ``iteration`` and ``val_binary_logloss`` / ``val_multi_logloss``;
        ``best_step``: best iteration (the one used for prediction).
    """
    import lightgbm as lgb

    x_train, y_train = _check_xy("train", x_train, y_train, n_classes, 2)
    x_val, y_val = _check_xy("val", x_val, y_val, n_classes, 2)
    if x_train.shape[0] == 0 or x_val.shape[0] == 0:
        raise ValueError("train_lgbm needs non-empty training and validation sets")
    if x_val.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_val has {x_val.shape[1]} features, x_train {x_train.shape[1]}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    names = _class_names(classes, n_classes)
    objective = "binary" if n_classes == 2 else "multiclass"
    params: dict[str, Any] = {"num_class": n_classes} if objective == "multiclass" else {}
    model = lgb.LGBMClassifier(objective=objective, n_estimators=config.n_estimators,
                               learning_rate=config.learning_rate, num_leaves=config.num_leaves,
                               max_bin=config.max_bin, colsample_bytree=config.feature_fraction, n_jobs=config.threads,
                               random_state=int(seed), deterministic=True,
                               force_col_wise=True, verbose=-1, **params)
    record: dict[str, dict[str, list[float]]] = {}
    callbacks = [lgb.record_evaluation(record)]
    if config.early_stopping_rounds is not None:
        callbacks.append(lgb.early_stopping(config.early_stopping_rounds, first_metric_only=True, verbose=False))
    start = time.perf_counter()
    model.fit(x_train, y_train, eval_X=(x_val,), eval_y=(y_val,), eval_names=["val"], callbacks=callbacks)
    seconds = time.perf_counter() - start
    curves = record.get("val", {})
    history = pd.DataFrame({f"val_{metric}": values for metric, values in curves.items()})
    history.insert(0, "iteration", np.arange(1, len(history) + 1))
    best = int(model.best_iteration_) if model.best_iteration_ else len(history)
    return TrainedModel(model=model, history=history, best_step=best, steps_run=len(history), seconds=seconds,
                        classes=names)


# --------------------------------------------------------------------------------------------
# width rule
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WidthRule:
    """The classic narrow / broad spike rule: broad spikes (width >= threshold) are excitatory.

    Attributes
    ----------
    threshold_ms : float
        Trough-to-peak width threshold, ms.
    """

    threshold_ms: float

    def predict(self, width_ms: np.ndarray) -> np.ndarray:
        """True (excitatory, broad spike) where ``width_ms >= threshold_ms``."""
        return np.asarray(width_ms, dtype=np.float64) >= self.threshold_ms


def fit_width_rule(width_ms: np.ndarray, excitatory: np.ndarray) -> WidthRule:
    """Choose the width threshold that maximises **balanced accuracy** on the given (training) data.

    Balanced accuracy (mean of the excitatory and inhibitory recalls) is used rather than plain
    accuracy because the paper's cell set is unbalanced (9 inhibitory, 4 excitatory m-types) and
    plain accuracy would reward calling everything inhibitory.  Candidates are the midpoints of
    consecutive sorted unique widths; ties go to the smallest threshold.  Pass training rows only:
    nothing here looks at other data.

    Parameters
    ----------
    width_ms : ndarray, shape (N,)
        Spike width on the largest contact (``width_at_max_ms``), ms.
    excitatory : ndarray of bool, shape (N,)

    Returns
    -------
    WidthRule

    Raises
    ------
    ValueError
        If the inputs differ in length, contain non-finite widths or lack one of the classes.
    """
    width = np.asarray(width_ms, dtype=np.float64).ravel()
    exc = np.asarray(excitatory).astype(bool).ravel()
    if width.shape != exc.shape:
        raise ValueError(f"width_ms ({width.size}) and excitatory ({exc.size}) differ in length")
    if not np.all(np.isfinite(width)):
        raise ValueError("width_ms contains NaN or inf")
    n_e, n_i = int(exc.sum()), int((~exc).sum())
    if n_e == 0 or n_i == 0:
        raise ValueError(f"fit_width_rule needs both classes, got {n_e} excitatory and {n_i} inhibitory rows")
    unique = np.unique(width)
    if unique.size == 1:
        return WidthRule(float(unique[0]))
    candidates = (unique[:-1] + unique[1:]) / 2.0
    e_sorted, i_sorted = np.sort(width[exc]), np.sort(width[~exc])
    e_recall = (n_e - np.searchsorted(e_sorted, candidates, side="left")) / n_e  # E with width >= t
    i_recall = np.searchsorted(i_sorted, candidates, side="left") / n_i  # I with width < t
    balanced = (e_recall + i_recall) / 2.0
    return WidthRule(float(candidates[int(np.argmax(balanced))]))
