"""The run configuration: one frozen dataclass that names every knob of a run.

Fields come in groups (``FIELD_GROUPS``: task, model, optimiser, schedule), which the CLI
shows as flag groups and the docs as tables. ``family`` names the model family in
:mod:`mechgrok.registry` that builds the model. Derived quantities (``d_vocab``, ``d_head``)
are properties, so they can never disagree with the fields they come from. Every field is
validated on construction; a bad value raises ``ValueError`` naming the field, the value,
what is allowed and the fix.

``task`` names the task in :mod:`mechgrok.registry` (modular arithmetic, sparse parity, and the
Alignment Forum post's sequence tasks: digit addition, repeated subsequences, max of a list);
fields of the other tasks are ignored by it, and each family declares the tasks it trains on
(``registry.FAMILY_TASKS``).

Serialised configs carry a schema version (``SCHEMA_VERSION``). Version 5 must name every
field; versions 1 to 4 (written before the fields that later versions added) are read with
those fields set to the only values those versions had.

Named settings of whole runs (the paper's mainline, the original code's, the TransformerLens
demo's) are presets of this config, in :mod:`mechgrok.presets`.

This module imports no torch, so the command line starts fast.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from mechgrok.registry import FAMILIES, FAMILY_ACTIVATIONS, FAMILY_TASKS, SYMMETRIC_FAMILIES, TASKS

SCHEMA_VERSION = 5
MAX_SEED = 2**64 - 1
READABLE_SCHEMAS = (1, 2, 3, 4, 5)

# "paper": every weight ~ N(0, 1/d_model), W_U ~ N(0, 1/d_vocab), drawn in HookedTransformer's
# parameter order; "transformer_lens": TransformerLens's own init; "original": the original
# code's module drawn in its own order and shapes, then converted (mechgrok.models.original).
INITS = ("paper", "transformer_lens", "original")
# How the modular pairs are ordered before the first int(frac_train * p²) become train:
# "torch", torch.randperm under a generator seeded with the split seed (the same permutation as
# torch.manual_seed(s); torch.randperm(p²), the TransformerLens demo's); "python", Python's
# random.seed(s); random.shuffle of the pairs in grid order (the original code's).
SPLITS = ("torch", "python")
# Which of a HookedTransformer's biases are held at zero: "non_mlp", all but the MLP's b_in and
# b_out (the original model has MLP biases only); "all", every bias (the TransformerLens demo).
FROZEN_BIASES = ("non_mlp", "all")
LOSS_DTYPES = ("float64", "float32")
# Which pairs a modular run draws its split from: every ordered (a, b), or the unordered
# pairs a <= b (Pearce et al.: their MLP is symmetric in a and b, so (b, a) adds nothing).
PAIRS = ("ordered", "unordered")
COMMUTATIVE = frozenset({"add", "mul", "x2xyy2"})
ACT_FNS = ("relu", "x2")
# "l2": AdamW's decoupled weight decay; "l1": weight_decay * sign(w) added to the gradient
# before Adam (Pearce et al.'s sparse-parity model).
DECAYS = ("l2", "l1")
# "mean": mean cross-entropy; "per_output": that divided by the number of output logits, the
# mean over all outputs of one-hot x log-softmax that Pearce et al.'s code minimises.
LOSS_SCALES = ("mean", "per_output")

# Where a run's train examples come from: "fixed", one train set (a split of the modular pairs,
# or n_train examples drawn once); "fresh", batch_size new examples every step ("infinite data").
DATA_MODES = ("fixed", "fresh")
# Tasks whose examples are drawn from a generator, so that "fresh" data exists for them.
SAMPLED_TASKS = frozenset({"parity", "addition", "induction", "max_list"})

# Modular-arithmetic operations (their formulas live in mechgrok.tasks.modular).
OPERATION_NAMES = ("add", "sub", "mul", "div", "x2xyy2")
# Operations that need every b != 0 to have an inverse mod p, i.e. p prime.
NEEDS_PRIME = frozenset({"div"})

# Fields added by schema version 2, with the value every version-1 run had.
_V1_DEFAULTS = {"family": "transformer", "loss_dtype": "float64"}
# Fields added by schema version 3, with the value every version-1 and -2 run had.
_V2_DEFAULTS = {"task": "modular", "pairs": "ordered", "n_bits": 30, "parity_bits": 3, "n_train": 1200,
                "n_test": 5000, "act_fn": "relu", "decay": "l2", "loss_scale": "mean"}
# Fields added by schema version 4, with the value every version-1 to -3 run had.
_V3_DEFAULTS = {"n_digits": 5, "seq_len": 12, "n_symbols": 10, "repeat_len": 4, "data": "fixed", "n_layers": 1,
                "attn_only": False, "batch_size": 0}
# Fields added by schema version 5, with the value every version-1 to -4 run had.
_V4_DEFAULTS = {"split": "torch", "split_seed": None, "model_seed": None, "unembed_equals": False,
                "frozen_biases": "non_mlp"}


def _group(name: str, default: Any) -> Any:
    return field(default=default, metadata={"group": name})


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run (defaults: the paper's mainline, docs/training.md)."""

    # task
    task: str = _group("task", "modular")
    p: int = _group("task", 113)
    op: str = _group("task", "add")
    frac_train: float = _group("task", 0.3)
    seed: int = _group("task", 0)
    split: str = _group("task", "torch")  # modular: the generator that orders the pairs (SPLITS)
    split_seed: int | None = _group("task", None)  # modular: the split's seed; None: seed
    pairs: str = _group("task", "ordered")
    n_bits: int = _group("task", 30)  # sparse parity: bits per string
    parity_bits: int = _group("task", 3)  # sparse parity: the label is the parity of the first parity_bits
    n_train: int = _group("task", 1200)  # sampled tasks: train examples (frac_train is modular's)
    n_test: int = _group("task", 5000)  # sampled tasks: test examples
    n_digits: int = _group("task", 5)  # addition: digits per operand (the answer has n_digits + 1)
    seq_len: int = _group("task", 12)  # induction: tokens per sequence; max_list: entries per list
    n_symbols: int = _group("task", 10)  # induction: token vocabulary; max_list: ordinary entries (as many special)
    repeat_len: int = _group("task", 4)  # induction: length of the repeated subsequence
    data: str = _group("task", "fixed")  # "fixed" train set, or "fresh" batches every step (sampled tasks)
    # model
    family: str = _group("model", "transformer")
    d_model: int = _group("model", 128)
    n_heads: int = _group("model", 4)
    d_mlp: int = _group("model", 512)
    n_layers: int = _group("model", 1)  # the sequence transformer's blocks
    attn_only: bool = _group("model", False)  # the sequence transformer without MLPs
    init: str = _group("model", "paper")
    model_seed: int | None = _group("model", None)  # transformer: the initialisation's seed; None: seed
    unembed_equals: bool = _group("model", False)  # transformer: a p+1 wide unembed, with a logit for `=`
    frozen_biases: str = _group("model", "non_mlp")  # transformer: the biases held at zero (FROZEN_BIASES)
    act_fn: str = _group("model", "relu")
    # optimiser
    lr: float = _group("optimiser", 1e-3)
    weight_decay: float = _group("optimiser", 1.0)
    beta1: float = _group("optimiser", 0.9)
    beta2: float = _group("optimiser", 0.98)
    warmup_steps: int = _group("optimiser", 10)
    loss_dtype: str = _group("optimiser", "float64")
    decay: str = _group("optimiser", "l2")
    loss_scale: str = _group("optimiser", "mean")
    batch_size: int = _group("optimiser", 0)  # examples per step; 0: the whole train set (full batch)
    # schedule
    epochs: int = _group("schedule", 20_000)
    eval_every: int = _group("schedule", 10)
    checkpoint_every: int = _group("schedule", 100)

    def __post_init__(self) -> None:
        validate_modular(self.p, self.op, self.frac_train)
        if self.p % 2 == 0:
            raise ValueError(
                f"p={self.p} is even; the Fourier analyses need an odd modulus (a prime is best); "
                "pick an odd p such as 113"
            )
        _check_seed(self, "seed")
        _check_choice(self, "task", tuple(TASKS))
        _check_choice(self, "pairs", PAIRS)
        _check_int(self, "n_bits", minimum=1)
        _check_int(self, "parity_bits", minimum=1)
        if self.parity_bits > self.n_bits:
            raise ValueError(f"parity_bits={self.parity_bits} exceeds n_bits={self.n_bits}; pass parity_bits <= n_bits")
        _check_int(self, "n_train", minimum=1)
        _check_int(self, "n_test", minimum=1)
        _check_choice(self, "family", tuple(FAMILIES))
        family_tasks = family_tasks_of(self.family)
        if self.task not in family_tasks:
            fits = sorted(f for f in FAMILIES if self.task in family_tasks_of(f))
            raise ValueError(
                f"family={self.family!r} trains on task {' or '.join(map(repr, family_tasks))}, not task={self.task!r}; "
                f"for task={self.task!r} pass one of the families {fits}"
            )
        self._check_sequence_fields()
        if self.task == "modular":
            self._check_symmetry()
        if self.family == "circle" and self.d_model != 2:
            raise ValueError(f"d_model={self.d_model}: the circle family's embedding is (cos, sin), 2 wide; pass d_model=2")
        _check_int(self, "d_model", minimum=1)
        _check_int(self, "n_heads", minimum=1)
        _check_int(self, "d_mlp", minimum=1)
        if self.family == "transformer" and self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "choose n_heads that divides d_model (the paper: d_model=128, n_heads=4)"
            )
        _check_choice(self, "init", INITS)
        self._check_transformer_fields()
        _check_choice(self, "act_fn", ACT_FNS)
        allowed_acts = FAMILY_ACTIVATIONS.get(self.family, ("relu",))
        if self.act_fn not in allowed_acts:
            raise ValueError(
                f"act_fn={self.act_fn!r} is not one the {self.family} family offers {list(allowed_acts)}; "
                f"pass act_fn={allowed_acts[0]!r}"
            )
        _check_number(self, "lr")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0; the paper uses lr=1e-3")
        _check_number(self, "weight_decay")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0; the paper uses weight_decay=1.0")
        for name in ("beta1", "beta2"):
            _check_number(self, name)
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name}={value} must be in [0, 1); the paper uses betas (0.9, 0.98)")
        _check_int(self, "warmup_steps", minimum=0)
        _check_choice(self, "loss_dtype", LOSS_DTYPES)
        _check_choice(self, "decay", DECAYS)
        _check_choice(self, "loss_scale", LOSS_SCALES)
        _check_int(self, "epochs", minimum=0)
        _check_int(self, "eval_every", minimum=1)
        _check_int(self, "checkpoint_every", minimum=1)

    def _check_sequence_fields(self) -> None:
        for name in ("n_digits", "seq_len", "n_symbols", "repeat_len", "n_layers"):
            _check_int(self, name, minimum=1)
        _check_int(self, "batch_size", minimum=0)
        _check_choice(self, "data", DATA_MODES)
        if not isinstance(self.attn_only, bool):
            raise ValueError(f"attn_only={self.attn_only!r} must be true or false")
        if self.data == "fresh":
            if self.task not in SAMPLED_TASKS:
                raise ValueError(
                    f"data='fresh' draws new examples every step, but task={self.task!r} has a fixed set of examples; "
                    f"pass data='fixed' (fresh data exists for {sorted(SAMPLED_TASKS)})"
                )
            if self.batch_size == 0:
                raise ValueError("data='fresh' needs batch_size > 0 (how many new examples each step); pass e.g. batch_size=128")
        if self.task == "induction":
            if self.n_symbols < 2:
                raise ValueError(f"n_symbols={self.n_symbols}: the induction task needs at least 2 tokens; pass e.g. n_symbols=10")
            if not 2 <= self.repeat_len <= self.seq_len // 2:
                raise ValueError(
                    f"repeat_len={self.repeat_len} must be in [2, seq_len // 2 = {self.seq_len // 2}] so the subsequence "
                    "and its repeat fit in one sequence; pass e.g. seq_len=16, repeat_len=4"
                )
        if self.task == "max_list" and self.seq_len < 2:
            raise ValueError(f"seq_len={self.seq_len}: a list needs at least 2 entries; pass e.g. seq_len=10")
        if self.family != "sequence_transformer" and (self.n_layers != 1 or self.attn_only):
            raise ValueError(
                f"n_layers={self.n_layers}, attn_only={self.attn_only}: only family='sequence_transformer' has a "
                "choice of depth and MLPs; pass n_layers=1, attn_only=False"
            )

    def _check_transformer_fields(self) -> None:
        """The split, the init seed, the unembed width and the frozen biases are the modular
        transformer's settings; another task or family would ignore them, so they are refused."""
        _check_choice(self, "split", SPLITS)
        _check_choice(self, "frozen_biases", FROZEN_BIASES)
        for name in ("split_seed", "model_seed"):
            if getattr(self, name) is not None:
                _check_seed(self, name)
        if not isinstance(self.unembed_equals, bool):
            raise ValueError(f"unembed_equals={self.unembed_equals!r} must be true or false")
        if self.task != "modular":
            for name, default in (("split", "torch"), ("split_seed", None)):
                if getattr(self, name) != default:
                    raise ValueError(f"{name}={getattr(self, name)!r} applies to task='modular' only (the split of the "
                                     f"p² pairs), not task={self.task!r}; pass {name}={default!r}")
        if self.split == "python" and self.pairs != "ordered":
            raise ValueError("split='python' shuffles every ordered pair, as the original code does; with "
                             "pairs='unordered' pass split='torch'")
        if self.family != "transformer":
            if self.init == "original":
                raise ValueError(f"init='original' draws the original code's module, family='transformer' only, not "
                                 f"family={self.family!r}; pass init='paper'")
            for name, default in (("model_seed", None), ("unembed_equals", False), ("frozen_biases", "non_mlp")):
                if getattr(self, name) != default:
                    raise ValueError(f"{name}={getattr(self, name)!r} applies to family='transformer' only, not "
                                     f"family={self.family!r}; pass {name}={default!r}")

    def _check_symmetry(self) -> None:
        """A model symmetric in a and b (registry.SYMMETRIC_FAMILIES) fits only commutative operations,
        and only such a model may train on the unordered pairs (the mirrored half is in neither set)."""
        symmetric = self.family in SYMMETRIC_FAMILIES
        if symmetric and self.op not in COMMUTATIVE:
            raise ValueError(
                f"op={self.op!r}: the {self.family} family is symmetric in a and b (E[a] W_in + E[b] W_in), so it "
                f"cannot compute a non-commutative operation; pass one of {sorted(COMMUTATIVE)}"
            )
        if self.pairs == "unordered" and not symmetric:
            raise ValueError(
                f"pairs='unordered' (a split of the pairs a <= b) needs a family symmetric in a and b "
                f"({sorted(SYMMETRIC_FAMILIES)}), not family={self.family!r}, which would never see (b, a); "
                "pass pairs='ordered'"
            )

    # derived fields
    @property
    def d_vocab(self) -> int:
        """Input vocabulary: the p residues plus the ``=`` token, whose index is p (parity: the bits 0, 1;
        addition: the digits, ``+`` and ``=``; induction: the symbols; max_list: ordinary and special
        entries, START and END). The tasks' own classes agree (``tests/test_sequence_tasks.py``)."""
        return {"parity": 2, "addition": 12, "induction": self.n_symbols, "max_list": 2 * self.n_symbols + 2}.get(
            self.task, self.p + 1)

    @property
    def d_vocab_out(self) -> int:
        """Output logits: the p residues, and ``=`` too with ``unembed_equals`` (p + 1: the original
        code's unembed, whose softmax includes the ``=`` logit; accuracy and every analysis read the
        p residues' logits only); parity: 2, the labels 0 and 1; addition: the 10 digits;
        induction: the symbols; max_list: the whole vocabulary."""
        return {"parity": 2, "addition": 10, "induction": self.n_symbols, "max_list": 2 * self.n_symbols + 2}.get(
            self.task, self.p + 1 if self.unembed_equals else self.p)

    @property
    def n_ctx(self) -> int:
        """Input positions: [a, b, =]; n_bits; addition's a + b = and all answer digits but the last
        (3 n_digits + 2); induction's seq_len; max_list's START, the entries and END (seq_len + 2)."""
        return {"parity": self.n_bits, "addition": 3 * self.n_digits + 2, "induction": self.seq_len,
                "max_list": self.seq_len + 2}.get(self.task, 3)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    @property
    def data_seed(self) -> int:
        """The seed of the split: ``split_seed``, or ``seed`` when that is None."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def init_seed(self) -> int:
        """The seed of the initialisation: ``model_seed``, or ``seed`` when that is None."""
        return self.seed if self.model_seed is None else self.model_seed

    def reseeded(self, seed: int) -> Config:
        """This config for seed ``seed`` of a several-seed study: ``seed`` replaced, and a pinned
        ``split_seed`` or ``model_seed`` moved by the same step, so that every seed differs in its
        split and init while ``reseeded(self.seed)`` is this config itself (a preset that pins
        the TransformerLens demo's seeds 598 and 999 reproduces the demo at its own seed)."""
        step = seed - self.seed
        return self.replace(
            seed=seed,
            split_seed=None if self.split_seed is None else self.split_seed + step,
            model_seed=None if self.model_seed is None else self.model_seed + step,
        )

    # serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], schema_version: int = SCHEMA_VERSION) -> Config:
        """A config from its serialised fields; every field of ``schema_version`` must be there."""
        if schema_version not in READABLE_SCHEMAS:
            raise ValueError(
                f"config schema version {schema_version!r} is not one this mechgrok reads {READABLE_SCHEMAS}; "
                "use the mechgrok release that wrote it"
            )
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a JSON object of fields, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown config field(s) {unknown}; allowed fields are {sorted(known)}. "
                "Was this config written by a newer mechgrok?"
            )
        if schema_version == 1:
            data = {**_V1_DEFAULTS, **data}
        if schema_version in (1, 2):
            data = {**_V2_DEFAULTS, **data}
        if schema_version in (1, 2, 3):
            data = {**_V3_DEFAULTS, **data}
        if schema_version in (1, 2, 3, 4):
            data = {**_V4_DEFAULTS, **data}
        missing = sorted(known - set(data))
        if missing:
            raise ValueError(
                f"the config lacks field(s) {missing}; a saved config must name every field, so none is "
                "guessed. Restore the file from the run's checkpoints (their metadata holds the config)"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def family_tasks_of(family: str) -> tuple[str, ...]:
    """The tasks a family trains on (``registry.FAMILY_TASKS``; absent: modular arithmetic only)."""
    tasks = FAMILY_TASKS.get(family, "modular")
    return (tasks,) if isinstance(tasks, str) else tuple(tasks)


def field_group(name: str) -> str:
    """The group (task, model, optimiser, schedule) of a config field."""
    return {f.name: f.metadata["group"] for f in dataclasses.fields(Config)}[name]


FIELD_GROUPS: dict[str, tuple[str, ...]] = {}
for _f in dataclasses.fields(Config):
    FIELD_GROUPS.setdefault(_f.metadata["group"], ())
    FIELD_GROUPS[_f.metadata["group"]] += (_f.name,)


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def validate_modular(p: int, op: str, frac_train: float | None = None) -> None:
    """Raise ``ValueError`` naming the bad value and the fix; return None when all is well."""
    if isinstance(p, bool) or not isinstance(p, int) or p < 3:
        raise ValueError(f"p={p!r} must be an integer >= 3; the paper uses p=113")
    if op not in OPERATION_NAMES:
        raise ValueError(f"op={op!r} is not one of {list(OPERATION_NAMES)}; pass e.g. op='add'")
    if op in NEEDS_PRIME and not _is_prime(p):
        raise ValueError(f"op={op!r} needs a prime p (every b != 0 must be invertible), but p={p}; pick a prime such as 113")
    if frac_train is not None and (
        isinstance(frac_train, bool) or not isinstance(frac_train, (int, float)) or not 0 < frac_train < 1
    ):
        raise ValueError(f"frac_train={frac_train!r} must be in (0, 1); the paper uses frac_train=0.3")


def _check_int(cfg: Config, name: str, minimum: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}; pass e.g. {name}={max(minimum, 1)}")


def _check_seed(cfg: Config, name: str) -> None:
    _check_int(cfg, name, minimum=0)
    value = getattr(cfg, name)
    if value > MAX_SEED:  # torch.Generator.manual_seed takes 64-bit seeds
        raise ValueError(f"{name}={value} is too large: seeds are 64-bit, 0 to 2**64 - 1 = {MAX_SEED}; pass e.g. {name}=0")


def _check_number(cfg: Config, name: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number; pass e.g. {name}={getattr(Config, name)!r}")


def _check_choice(cfg: Config, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {list(allowed)}; pass e.g. {name}={allowed[0]!r}")
