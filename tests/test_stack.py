"""The stacked trainer (mechgrok.training.stack): equal to training each model alone, resumable, masked."""

import os
import signal
from pathlib import Path

import pytest
import torch

import mechgrok
from mechgrok import registry, runs
from mechgrok.config import Config
from mechgrok.tasks.data import run_data
from mechgrok.training import stack
from mechgrok.training.loop import train
from mechgrok.training.optim import lr_at
from mechgrok.training.stack import StackedAdamW, stack_key, train_stack

PARITY = Config(task="parity", family="parity_mlp", n_bits=10, parity_bits=3, n_train=120, n_test=200, d_mlp=16,
                lr=3e-3, beta1=0.99, beta2=0.98, weight_decay=0.1, loss_dtype="float32",
                epochs=300, eval_every=50, checkpoint_every=100)
MODULAR = Config(p=11, family="mlp", pairs="unordered", frac_train=0.6, d_model=16, d_mlp=24, lr=3e-3, weight_decay=1.0,
                 loss_dtype="float32", loss_scale="per_output", epochs=300, eval_every=50, checkpoint_every=100)


def plain_loop(cfg: Config, epochs: int) -> tuple[torch.nn.Module, list[float]]:
    """The model trained alone: model(tokens) and torch.optim.AdamW, nothing of the stacked trainer."""
    data = run_data(cfg)
    x, y = data.tokens[data.split.train], data.labels[data.split.train]
    model = registry.family(cfg.family).build(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    losses = []
    for epoch in range(epochs):
        logits = model(x)[:, -1].to(getattr(torch, cfg.loss_dtype))
        loss = torch.nn.functional.cross_entropy(logits, y)
        if cfg.loss_scale == "per_output":
            loss = loss / cfg.d_vocab_out
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        optimizer.step()
    return model, losses


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def assert_same_run(dir_a: Path, dir_b: Path) -> None:
    """Every checkpoint, the resume file's optimizer state and the metrics (but elapsed_s) bit-identical."""
    assert runs.checkpoint_epochs(dir_a) == runs.checkpoint_epochs(dir_b)
    for epoch in runs.checkpoint_epochs(dir_a):
        a = runs.read_checkpoint_file(runs.checkpoint_path(dir_a, epoch)).model_state
        b = runs.read_checkpoint_file(runs.checkpoint_path(dir_b, epoch)).model_state
        assert all(torch.equal(a[k], b[k]) for k in a), f"epoch {epoch} differs"
    ra, rb = (runs.read_checkpoint_file(d / runs.RESUME_FILE) for d in (dir_a, dir_b))
    assert ra.optimizer_state.keys() == rb.optimizer_state.keys()
    assert all(torch.equal(ra.optimizer_state[k], rb.optimizer_state[k]) for k in ra.optimizer_state)
    ma, mb = runs.read_metrics(dir_a), runs.read_metrics(dir_b)
    cols = [c for c in ma.columns if c != "elapsed_s"]
    assert ma[cols].equals(mb[cols])


@pytest.mark.parametrize("cfg", [PARITY, MODULAR], ids=["parity_mlp", "mlp"])
def test_a_stack_of_one_equals_a_plain_adamw_loop(tmp_path, cfg):
    # 200 steps: float32 rounding differences (the step sums in another order) grow with the
    # steps, as Adam's m / sqrt(v) magnifies them where a gradient is near 0 (1e-6 by 200 here)
    cfg = cfg.replace(epochs=200)
    (result,) = train_stack([cfg], [tmp_path / "run"], tune_process=False)
    model, losses = plain_loop(cfg, cfg.epochs)
    for name, w in weights(model).items():
        torch.testing.assert_close(result.model.state_dict()[name], w, atol=2e-6, rtol=1e-5)
    logged = result.metrics.set_index("epoch").train_loss
    for epoch in (0, 50, 150):
        assert logged[epoch] == pytest.approx(losses[epoch], rel=1e-5, abs=1e-7)


def test_three_models_in_one_stack_each_equal_the_model_trained_alone(tmp_path):
    cfgs = [PARITY.replace(seed=0), PARITY.replace(seed=1, lr=1e-3, weight_decay=0.03, n_train=90),
            PARITY.replace(seed=2, lr=5e-3, weight_decay=1.0, n_train=60, decay="l1")]
    together = train_stack(cfgs, [tmp_path / f"stack{i}" for i in range(3)], chunk_size=3, tune_process=False)
    assert [r.stack_size for r in together] == [3, 3, 3] and {r.chunk_size for r in together} == {3}
    for i, cfg in enumerate(cfgs):
        (alone,) = train_stack([cfg], [tmp_path / f"alone{i}"], tune_process=False)
        for name, w in weights(alone.model).items():
            torch.testing.assert_close(together[i].model.state_dict()[name], w, atol=1e-5, rtol=1e-4)
        assert len(together[i].split.train) == cfg.n_train
        assert together[i].metrics.train_acc.iloc[-1] == pytest.approx(alone.metrics.train_acc.iloc[-1], abs=2 / cfg.n_train)
    # a model's numbers do not depend on which models share its batched step (same padding, chunks of >= 2)
    cfgs2 = [cfgs[0], cfgs[2]]
    pair = train_stack(cfgs2, [tmp_path / f"pair{i}" for i in range(2)], chunk_size=2, tune_process=False)
    assert all(torch.equal(pair[0].model.state_dict()[k], v) for k, v in weights(together[0].model).items())


def _chunk(cfgs, rows_padded, kernel=None):
    family = registry.family(cfgs[0].family)
    members = [stack._Member(i, c, Path("."), family.build(c), run_data(c).split, 0, [], 0.0, None) for i, c in enumerate(cfgs)]
    return stack._Chunk(members, torch.device("cpu"), kernel=kernel, rows_padded=rows_padded)


@pytest.mark.parametrize("loss_dtype, loss_scale", [("float32", "mean"), ("float64", "per_output")])
def test_the_hand_written_parity_step_equals_the_family_forward_under_autograd(loss_dtype, loss_scale):
    cfgs = [PARITY.replace(seed=s, n_train=120 - 30 * s, loss_dtype=loss_dtype, loss_scale=loss_scale) for s in range(3)]
    hand, generic = _chunk(cfgs, (120, 200)), _chunk(cfgs, (120, 200), kernel=stack._Generic)
    assert isinstance(hand.kernel, stack._Parity)
    for _ in range(3):  # a few steps, so the weights are not the init's
        grads_h, loss_h, correct_h = hand.loss_and_grad()
        grads_g, loss_g, correct_g = generic.loss_and_grad()
        torch.testing.assert_close(loss_h, loss_g, rtol=1e-6, atol=0)
        assert torch.equal(correct_h, correct_g)
        for k in grads_g:
            torch.testing.assert_close(grads_h[k], grads_g[k], rtol=1e-5, atol=1e-8)
        hand.optimizer.update(grads_g, hand.optimizer.step)
        generic.optimizer.update(grads_g, generic.optimizer.step)
    test_h, test_g = hand.loss(hand.test), generic.loss(generic.test)
    torch.testing.assert_close(test_h[0], test_g[0], rtol=1e-6, atol=0)
    assert torch.equal(test_h[1], test_g[1])


MODULAR_FAMILIES = [MODULAR.replace(family=f) for f in ("mlp", "mlp_unfactored", "mlp_collapsed_in", "mlp_collapsed_out")] + [
    MODULAR.replace(family="circle", act_fn=act, d_model=2, d_mlp=5) for act in ("relu", "x2")]


@pytest.mark.parametrize("cfg", MODULAR_FAMILIES, ids=lambda c: f"{c.family}-{c.act_fn}")
def test_the_hand_written_modular_step_equals_the_family_forward_under_autograd(cfg):
    cfgs = [cfg.replace(seed=s, frac_train=0.6 - 0.1 * s) for s in range(3)]
    rows = (max(len(run_data(c).split.train) for c in cfgs), max(len(run_data(c).split.test) for c in cfgs))
    hand, generic = _chunk(cfgs, rows), _chunk(cfgs, rows, kernel=stack._Generic)
    assert isinstance(hand.kernel, stack._Modular)
    for _ in range(3):
        grads_h, loss_h, correct_h = hand.loss_and_grad()
        grads_g, loss_g, correct_g = generic.loss_and_grad()
        torch.testing.assert_close(loss_h, loss_g, rtol=1e-5, atol=0)
        assert torch.equal(correct_h, correct_g)
        assert grads_h.keys() == grads_g.keys()
        for k in grads_g:
            torch.testing.assert_close(grads_h[k], grads_g[k], rtol=1e-4, atol=1e-7)
        hand.optimizer.update(grads_g, hand.optimizer.step)
        generic.optimizer.update(grads_g, generic.optimizer.step)
    test_h, test_g = hand.loss(hand.test), generic.loss(generic.test)
    torch.testing.assert_close(test_h[0], test_g[0], rtol=1e-5, atol=0)
    assert torch.equal(test_h[1], test_g[1])


def test_padding_rows_are_masked_out_of_the_loss_and_the_gradient():
    cfgs = [PARITY.replace(seed=3, n_train=80), PARITY.replace(seed=4, n_train=120)]
    a = _chunk(cfgs, (120, 200))
    grads_a, loss_a, correct_a = a.loss_and_grad()
    # other padding contents, same length: bit-identical (a masked row contributes exact zeros)
    b = _chunk(cfgs, (120, 200))
    b.train.inputs[0, 80:] = 1 - b.train.inputs[0, 80:]
    b.train.labels[0, 80:] = 1 - b.train.labels[0, 80:]
    grads_b, loss_b, correct_b = b.loss_and_grad()
    assert torch.equal(loss_a, loss_b) and torch.equal(correct_a, correct_b)
    assert all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)
    # more padding: equal to float rounding (sums over more rows are grouped differently)
    c = _chunk(cfgs, (300, 200))
    grads_c, loss_c, correct_c = c.loss_and_grad()
    torch.testing.assert_close(loss_c, loss_a, rtol=1e-6, atol=0)
    assert torch.equal(correct_c, correct_a)
    for k in grads_a:
        torch.testing.assert_close(grads_c[k], grads_a[k], rtol=1e-5, atol=1e-7)
    # and the mean is over the model's own rows: model 0's loss from its 80 rows alone
    model = registry.family("parity_mlp").build(cfgs[0])
    data = run_data(cfgs[0])
    logits = model(data.tokens[data.split.train])[:, -1]
    alone = torch.nn.functional.cross_entropy(logits, data.labels[data.split.train])
    assert loss_a[0].item() == pytest.approx(alone.item(), rel=1e-6)


def test_the_stacked_adamw_is_torch_adamw_for_l2_and_the_formula_for_l1():
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(2, 5, 3, generator=g)
    grad = torch.randn(2, 5, 3, generator=g)
    cfgs = [PARITY.replace(lr=1e-2, weight_decay=0.5, decay="l2", warmup_steps=0),
            PARITY.replace(lr=3e-3, weight_decay=0.2, decay="l1", warmup_steps=0, beta1=0.9, beta2=0.999)]
    params = {"w": w0.clone()}
    opt = StackedAdamW(params, cfgs)
    opt.update({"w": grad.clone()}, epoch=0)
    # model 0: torch.optim.AdamW itself, over two steps
    ref = torch.nn.Parameter(w0[0].clone())
    torch_opt = torch.optim.AdamW([ref], lr=1e-2, weight_decay=0.5, betas=cfgs[0].betas)
    ref.grad = grad[0].clone()
    torch_opt.step()
    torch.testing.assert_close(params["w"][0], ref.detach(), rtol=0, atol=1e-7)
    # model 1: g' = g + wd sign(w), then Adam with no decoupled decay
    c = cfgs[1]
    g1 = grad[1] + c.weight_decay * torch.sign(w0[1])
    m = (1 - c.beta1) * g1 / (1 - c.beta1)
    v = (1 - c.beta2) * g1**2 / (1 - c.beta2)
    expected = w0[1] - c.lr * m / (v.sqrt() + 1e-8)
    torch.testing.assert_close(params["w"][1], expected, rtol=0, atol=1e-7)
    state = opt.model_state(1)
    assert set(state) == {"w.exp_avg", "w.exp_avg_sq", "w.step"} and state["w.step"].item() == 1.0


def check_interrupted_and_extended_stacks(cfgs: list[Config], tmp_path: Path, extend_at: int, interrupt_at: int) -> None:
    """A stack extended from ``extend_at`` and one interrupted (SIGINT) after ``interrupt_at`` both
    end bit-identical to a straight one (checkpoints, optimizer state, metrics)."""
    straight = [tmp_path / f"straight{i}" for i in range(len(cfgs))]
    train_stack(cfgs, straight, chunk_size=len(cfgs))

    # train to extend_at, then ask for all: it resumes from there, with the recorded chunk size
    extended = [tmp_path / f"extended{i}" for i in range(len(cfgs))]
    train_stack([c.replace(epochs=extend_at) for c in cfgs], extended, chunk_size=len(cfgs))
    results = train_stack(cfgs, extended)
    assert [r.resumed_from for r in results] == [extend_at] * len(cfgs) and results[0].chunk_size == len(cfgs)
    for a, b in zip(straight, extended):
        assert_same_run(a, b)

    # SIGINT in the middle: the step finishes, every resume file is written, and a rerun goes on
    interrupted = [tmp_path / f"interrupted{i}" for i in range(len(cfgs))]

    def on_eval(row):
        if row["epoch"] == interrupt_at and row["run_dir"] == interrupted[-1]:
            os.kill(os.getpid(), signal.SIGINT)

    results = train_stack(cfgs, interrupted, chunk_size=len(cfgs), on_eval=on_eval)
    stopped = interrupt_at + 1
    assert [r.interrupted for r in results] == [True] * len(cfgs) and [r.epoch for r in results] == [stopped] * len(cfgs)
    assert runs.read_checkpoint_file(interrupted[0] / runs.RESUME_FILE).epoch == stopped
    results = train_stack(cfgs, interrupted)
    assert [r.resumed_from for r in results] == [stopped] * len(cfgs) and not any(r.interrupted for r in results)
    for a, b in zip(straight, interrupted):
        assert_same_run(a, b)


def test_an_interrupted_and_an_extended_stack_end_bit_identical_to_a_straight_one(tmp_path):
    cfgs = [PARITY.replace(seed=5, epochs=400), PARITY.replace(seed=6, n_train=100, weight_decay=0.3, epochs=400)]
    check_interrupted_and_extended_stacks(cfgs, tmp_path, extend_at=200, interrupt_at=150)


def test_a_finished_folder_is_skipped_and_left_untouched(tmp_path):
    cfg = PARITY.replace(epochs=100)
    train_stack([cfg], [tmp_path / "done"])
    files = sorted(p for p in (tmp_path / "done").rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    results = train_stack([cfg, cfg.replace(seed=9)], [tmp_path / "done", tmp_path / "new"])
    assert results[0].stack_size == 0 and results[0].epoch == 100 and not results[0].interrupted
    assert results[1].stack_size == 1 and results[1].epoch == 100
    assert sorted(p for p in (tmp_path / "done").rglob("*") if p.is_file()) == files
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_configs_of_different_stack_keys_train_in_separate_stacks(tmp_path):
    cfgs = [PARITY.replace(epochs=20), PARITY.replace(epochs=20, seed=1, lr=1e-2, n_train=50),
            PARITY.replace(epochs=20, d_mlp=8), PARITY.replace(epochs=20, loss_scale="per_output")]
    assert stack_key(cfgs[0]) == stack_key(cfgs[1])
    assert len({stack_key(c) for c in cfgs}) == 3
    results = train_stack(cfgs, [tmp_path / f"run{i}" for i in range(4)])
    assert [r.stack_size for r in results] == [2, 2, 1, 1]
    assert [r.config for r in results] == cfgs
    assert all(runs.read_config(tmp_path / f"run{i}") == cfgs[i] for i in range(4))
    assert results[2].model.mlp.W_in.shape == (PARITY.n_bits + 1, 8)


@pytest.mark.parametrize("cfg", [
    PARITY.replace(n_train=200, lr=1e-2, weight_decay=1e-3, decay="l1", epochs=400),
    MODULAR.replace(lr=1e-2, epochs=400),
    Config(p=11, family="circle", act_fn="x2", d_model=2, d_mlp=5, frac_train=0.6, lr=1e-2, weight_decay=1e-3, epochs=400,
           eval_every=50, checkpoint_every=200, loss_dtype="float32"),
], ids=["parity_mlp", "mlp", "circle"])
def test_each_family_trains_and_its_loss_falls(tmp_path, cfg):
    (result,) = train_stack([cfg], [tmp_path / "run"])
    first, last = result.metrics.iloc[0], result.metrics.iloc[-1]
    assert last.train_loss < 0.5 * first.train_loss
    assert last.train_acc > first.train_acc
    if cfg.family == "circle":  # the frozen embedding is a buffer: saved, never trained
        from mechgrok.models.circle import circle_embedding

        assert torch.equal(result.model.embed.W_E, circle_embedding(cfg.p))
        assert torch.equal(mechgrok.load_run(tmp_path / "run").model.embed.W_E, circle_embedding(cfg.p))


def test_a_device_this_torch_lacks_is_refused_with_the_fix(tmp_path):
    cfg = PARITY.replace(epochs=5)
    (result,) = train_stack([cfg], [tmp_path / "cpu"], device=torch.device("cpu"))
    assert result.epoch == 5
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available.*pass --device cpu"):
            train_stack([cfg], [tmp_path / "cuda"], device="cuda")
        assert not (tmp_path / "cuda").exists()
    with pytest.raises(ValueError, match="device='gpu0' is not a torch device"):
        train_stack([cfg], [tmp_path / "bad"], device="gpu0")
    with pytest.raises(ValueError, match="one run folder per config"):
        train_stack([cfg, cfg], [tmp_path / "a"])
    with pytest.raises(ValueError, match="the same folder"):
        train_stack([cfg, cfg.replace(seed=1)], [tmp_path / "a", tmp_path / "a"])


def test_train_dispatches_a_family_without_a_fast_step_to_the_stacked_trainer(tmp_path):
    cfg = MODULAR.replace(epochs=60, eval_every=20, checkpoint_every=30)
    result = train(cfg, tmp_path / "run")
    assert result.epoch == 60 and list(result.metrics.epoch) == [0, 20, 40, 60]
    run = mechgrok.load_run(tmp_path / "run")
    assert run.config == cfg and run.epoch == 60 and run.checkpoint_epochs == [0, 30, 60]
    assert all(torch.equal(run.model.state_dict()[k], v) for k, v in weights(result.model).items())
    assert list(runs.read_metrics(tmp_path / "run").columns) == runs.METRIC_COLUMNS
    resumed = []
    result = train(cfg.replace(epochs=90), tmp_path / "run", on_resume=resumed.append, progress=True)
    assert resumed == [60] and result.epoch == 90 and result.resumed_from == 60


def test_every_folder_is_checked_before_any_is_written(tmp_path):
    cfg = PARITY.replace(epochs=20)
    train_stack([cfg], [tmp_path / "old"])
    with pytest.raises(ValueError, match="different config.*seed"):
        train_stack([cfg, cfg.replace(seed=7)], [tmp_path / "new", tmp_path / "old"])
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="past epochs=10"):
        train_stack([cfg.replace(epochs=10)], [tmp_path / "old"])


def test_a_metrics_row_describes_one_state_whether_or_not_a_checkpoint_is_written(tmp_path):
    """Row e's train and test numbers are both of the weights after e steps: the same rows whether
    every epoch is checkpointed (the update waits for the save) or none is (it waits for the test)."""
    cfg = PARITY.replace(epochs=12, eval_every=1)
    (every,) = train_stack([cfg.replace(checkpoint_every=1)], [tmp_path / "every"], tune_process=False)
    (rarely,) = train_stack([cfg.replace(checkpoint_every=100)], [tmp_path / "rarely"], tune_process=False)
    cols = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
    assert every.metrics[cols].equals(rarely.metrics[cols])
    # (epoch 1 repeats epoch 0: the warm-up's first step has lr 0); a repeat later would hide a one-step lag
    assert every.metrics.test_loss.iloc[1:].nunique() == len(every.metrics) - 1
