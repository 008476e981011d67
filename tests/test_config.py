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


def test_v2_config_must_name_every_field():
    data = Config(p=31, weight_decay=0.5).to_dict()
    del data["weight_decay"]
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['weight_decay'\]"):
        Config.from_dict(data)


def test_v1_config_reads_with_the_fields_v1_lacked():
    data = Config(p=31).to_dict()
    del data["family"], data["loss_dtype"]
    cfg = Config.from_dict(data, schema_version=1)
    assert cfg == Config(p=31) and cfg.family == "transformer" and cfg.loss_dtype == "float64"
    with pytest.raises(ValueError, match="schema version 7"):
        Config.from_dict(data, schema_version=7)


def test_even_p_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="p=10 is even.*odd p such as 113"):
        Config(p=10)


@pytest.mark.parametrize("field, value", [("loss_dtype", "float16"), ("family", "lstm"), ("lr", float("nan")),
                                          ("frac_train", True), ("op", "pow")])
def test_choice_fields_list_what_is_allowed(field, value):
    with pytest.raises(ValueError, match=field):
        Config(**{field: value})


def test_every_field_has_a_group():
    from mechgrok.config import FIELD_GROUPS

    assert set(FIELD_GROUPS) == {"task", "model", "optimiser", "schedule"}
    assert sorted(f for fields in FIELD_GROUPS.values() for f in fields) == sorted(Config().to_dict())
