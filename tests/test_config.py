import json

import pytest

from mechgrok.config import Config


def test_derived_fields_follow_p():
    cfg = Config(p=97)
    assert cfg.d_vocab == 98 and cfg.d_vocab_out == 97 and cfg.n_ctx == 3
    assert Config().d_head == 32


def test_round_trip_json():
    cfg = Config(p=31, frac_train=0.7, seed=3, lr=3e-3)
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg


def test_unknown_field_rejected():
    with pytest.raises(ValueError, match="unknown config field"):
        Config.from_dict({"p": 31, "d_vocab": 32})


@pytest.mark.parametrize("field, value", [
    ("seed", -1), ("d_model", 0), ("n_heads", 3), ("d_mlp", 0), ("init", "xavier"),
    ("lr", 0.0), ("weight_decay", -1.0), ("beta1", 1.0), ("beta2", -0.1), ("warmup_steps", -1),
    ("epochs", -5), ("eval_every", 0), ("checkpoint_every", 0), ("epochs", 1.5),
])
def test_bad_values_name_field_and_value(field, value):
    with pytest.raises(ValueError) as err:
        Config(**{field: value})
    assert field in str(err.value) or "n_heads" in str(err.value)
    assert str(value) in str(err.value) or repr(value) in str(err.value)
