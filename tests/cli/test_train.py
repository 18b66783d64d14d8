import json

import pytest

from attncond.cli import main


def test_train_json_reports_decreasing_losses(capsys):
    rc = main(["train", "--steps", "40", "--every", "10", "--json", "--N", "4", "--n", "3",
               "--D", "6", "--d", "3", "--H", "2"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["final"]) == {"softmax", "gaussian"}
    for k, tr in out["traces"].items():
        assert len(tr["losses"]) == 41, k
        assert tr["losses"][-1] < 0.5 * tr["losses"][0], k
        assert not tr["diverged"]


def test_train_table_and_plot(tmp_path, capsys):
    png = tmp_path / "loss.png"
    assert main(["train", "--steps", "10", "--every", "5", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "loss[softmax]" in text and "loss[gaussian]" in text and "final losses" in text
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("argv,msg", [
    (["train", "--kernels", "softmaks"], "unknown kernel 'softmaks'"),
    (["train", "--N", "0"], "argument --N: must be a positive integer, got 0"),
    (["train", "--N", "99999999999999999999"], "argument --N: must be a positive integer <= 2147483647"),
    (["train", "--steps", "99999999999999999999"], "argument --steps: must be a positive integer <= "),
    (["train", "--seed", "-1"], "argument --seed: must be a non-negative integer, got -1"),
    (["train", "--lr", "-1"], "lr must be a finite number > 0"),
])
def test_train_bad_input_exits_2_with_message(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.splitlines()) == 1
