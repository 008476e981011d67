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


def test_modular_task_is_a_finite_task_with_one_loss_position():
    from mechgrok.tasks.base import FiniteTask

    task = ModularTask(p=7, op="sub")
    assert isinstance(task, FiniteTask)
    assert (task.d_vocab, task.d_vocab_out, task.n_ctx, task.loss_positions) == (8, 7, 3, (2,))
    assert task.n_examples == 49 and torch.equal(task.inputs(), task.tokens())
    assert task.fourier_combination == -1 and ModularTask(7, "add").fourier_combination == 1
    assert ModularTask(7, "mul").fourier_combination is None


def test_require_fourier_refuses_other_operations():
    from mechgrok.tasks.modular import require_fourier

    assert require_fourier(ModularTask(7, "add"), "restricted loss") == 1
    with pytest.raises(ValueError, match="restricted loss is defined for op='add'.*op='mul'"):
        require_fourier(ModularTask(7, "mul"), "restricted loss")


def test_a_sampled_task_draws_reproducible_fixed_sets():
    from mechgrok.tasks.base import SampledTask

    class Parity(SampledTask):
        """Toy: the parity of 6 bits, read at the last position."""

        d_vocab = d_vocab_out = 2
        n_ctx = 6
        loss_positions = (5,)

        def sample(self, n, generator):
            bits = torch.randint(0, 2, (n, 6), generator=generator)
            return bits, bits.sum(1) % 2

    task = Parity()
    x1, y1 = task.fixed_set(32, seed=4)
    x2, y2 = task.fixed_set(32, seed=4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(y1, x1.sum(1) % 2)
    assert not torch.equal(task.fixed_set(32, seed=5)[0], x1)
    with pytest.raises(ValueError, match="n=0 must be an integer >= 1"):
        task.fixed_set(0, seed=0)
