import pytest
import torch

from mechgrok.config import Config
from mechgrok.tasks.modular import OPERATIONS, ModularTask, make_split


def test_add_pairs_tokens_labels():
    task = ModularTask(p=7, op="add")
    tokens, labels = task.tokens(), task.labels()
    assert tokens.shape == (49, 3)
    assert bool((tokens[:, 2] == 7).all()), "the `=` token is p"
    # flat index a*p + b
    a, b = 3, 5
    assert tokens[a * 7 + b].tolist() == [3, 5, 7]
    assert labels[a * 7 + b] == (3 + 5) % 7


@pytest.mark.parametrize("op, fn", [
    ("sub", lambda a, b, p: (a - b) % p),
    ("mul", lambda a, b, p: (a * b) % p),
    ("x2xyy2", lambda a, b, p: (a * a + a * b + b * b) % p),
])
def test_operations_match_definition(op, fn):
    task = ModularTask(p=11, op=op)
    for (a, b), c in zip(task.pairs().tolist(), task.labels().tolist()):
        assert c == fn(a, b, 11)


def test_div_is_inverse_of_mul():
    task = ModularTask(p=13, op="div")
    pairs, labels = task.pairs(), task.labels()
    assert len(pairs) == 13 * 12 == task.n_pairs
    assert bool((pairs[:, 1] != 0).all())
    assert bool(((labels * pairs[:, 1]) % 13 == pairs[:, 0]).all())


def test_split_is_seeded_disjoint_and_complete():
    s1, s2, s3 = make_split(961, 0.3, 0), make_split(961, 0.3, 0), make_split(961, 0.3, 1)
    assert torch.equal(s1.train, s2.train) and not torch.equal(s1.train, s3.train)
    assert len(s1.train) == int(0.3 * 961)
    both = torch.cat([s1.train, s1.test]).sort().values
    assert torch.equal(both, torch.arange(961))


def test_paper_split_size():
    assert len(make_split(113 * 113, 0.3, 0).train) == 3830


@pytest.mark.parametrize("kwargs, fragment", [
    ({"p": 2}, "p=2"),
    ({"p": 3.5}, "p=3.5"),
    ({"op": "pow"}, "op='pow'"),
    ({"op": "div", "p": 15}, "p=15"),
    ({"frac_train": 0.0}, "frac_train=0.0"),
    ({"frac_train": 1.0}, "frac_train=1.0"),
])
def test_bad_task_values(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        Config(**kwargs)


def test_operations_registry():
    assert set(OPERATIONS) == {"add", "sub", "mul", "div", "x2xyy2"}
