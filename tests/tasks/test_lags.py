import torch

from lstmkit.tasks import make


def test_sequences_follow_the_definition():
    task = make("long-lag-2c", length=50, distractors=30)
    p = task.distractors
    assert task.vocab_size == p + 4
    b = task.sample(4000, torch.Generator().manual_seed(0))
    rows = torch.arange(len(b.x))
    assert (b.x[:, 0] == p + 1).all()  # b
    assert torch.equal(b.x[:, 1], p + 2 + b.target)  # x or y, the answer
    assert (b.x[rows, b.lengths - 1] == p).all()  # the trigger e ends every sequence
    inside = torch.arange(b.x.shape[1])[None, :] < b.lengths[:, None] - 1
    inside[:, :2] = False
    assert (b.x[inside] < p).all() and b.x[inside].unique().numel() == p
    extra = (b.lengths - 3 - 50).float()  # k: distractors beyond q
    assert extra.min() == 0 and abs(extra.mean() - 9) < 0.6  # continue with probability 0.9


def test_answers_are_balanced_and_need_two_outputs_within_02():
    task = make("long-lag-2c")
    assert task.distractors == task.length == 100
    b = task.sample(4000, torch.Generator().manual_seed(1))
    assert abs(b.target.float().mean() - 0.5) < 0.03
    b = b._replace(target=torch.tensor([0, 0]))
    logits = torch.tensor([[0.81, 0.19], [0.79, 0.21]]).log()
    assert task.wrong(logits, b).tolist() == [False, True]
