import pytest
import torch

from mechgrok import scoring


def test_task_logits_drop_any_extra_output_columns():
    logits = torch.randn(49, 7 + 3)  # the original code's unembed was 114 wide whatever p
    assert scoring.p_of_logits(logits) == 7
    assert torch.equal(scoring.task_logits(logits, 7), logits[:, :7])
    with pytest.raises(ValueError, match="6 wide but p=7"):
        scoring.task_logits(torch.randn(49, 6), 7)
    with pytest.raises(ValueError, match="all p² inputs"):
        scoring.p_of_logits(torch.randn(50, 7))


def test_cross_entropy_precision_is_a_setting():
    logits = torch.tensor([[30.0, 0.0, 0.0]])
    labels = torch.tensor([0])
    # float64 resolves a loss of ~1.9e-13; float32's log-softmax rounds it to 0
    assert scoring.cross_entropy(logits, labels, "float64").item() == pytest.approx(2 * torch.exp(torch.tensor(-30.0, dtype=torch.float64)).item(), rel=1e-6)
    assert scoring.cross_entropy(logits, labels, "float32").item() == 0.0
    assert scoring.cross_entropy(logits, labels, "float32").dtype == torch.float32
    with pytest.raises(ValueError, match="loss_dtype='float16' is not one of"):
        scoring.cross_entropy(logits, labels, "float16")
