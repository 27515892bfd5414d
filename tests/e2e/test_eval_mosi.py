"""msa-eval on the real CMU-MOSI valid fold (../shared/data) with the shipped default bundle: text path,
label.csv without media. Skips when the shared data is absent."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from msa.pipeline.cli.eval import main as eval_main
from msa.pipeline.serve.predict import DEFAULT_BUNDLES

BUNDLE = DEFAULT_BUNDLES["sentiment"]
MOSI_KEYS = ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr")


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the shared 2-core machine: one thread is faster than two contending
    yield
    torch.set_num_threads(before)


@pytest.mark.realdata
def test_msa_eval_on_mosi_valid_text_column(shared_data: Path, one_thread, capsys):
    csv = shared_data / "mosi" / "mosi_train_valid.csv"
    assert eval_main(["--bundle", str(BUNDLE), "--data", str(csv), "--split", "valid", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["split"] == "valid" and res["n"] == 229 and res["task"] == "mosi"
    m = res["metrics"]
    assert set(MOSI_KEYS) <= set(m)
    assert all(0.0 <= m[k] <= 1.0 for k in MOSI_KEYS if k not in ("MAE", "Corr"))
    assert m["Corr"] > 0.5 and m["Has0_acc_2"] > 0.7  # far above chance: the text path works

    # the same numbers the bundle recorded for its validation fold when it was trained
    recorded = json.loads((BUNDLE / "bundle.json").read_text())["provenance"].get("metrics", {}).get("valid")
    if recorded:
        for k in ("MAE", "Corr", "Has0_acc_2", "Non0_acc_2"):
            if k in recorded:
                assert m[k] == pytest.approx(recorded[k], abs=0.005), k  # one sample of 229 is 0.0044


@pytest.fixture(scope="module")
def tiny_text_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained text_regressor (tiny random encoder) on MiniLM's text ids: fast, no shared data."""
    import torch

    from msa.extractors.text import MiniLMText
    from msa.models import MODELS, build_config
    from msa.models.base import Dims, Task
    from msa.pipeline.train.bundle import save_bundle

    torch.manual_seed(0)
    task = Task("mosi", -3.0, 3.0, "mosi")
    cfg = build_config("text_regressor", "mosi", "tiny")
    dims = Dims(text=384, audio=5, vision=7, text_len=24, audio_len=1, vision_len=1)
    model = MODELS.get("text_regressor")(cfg, dims, task)
    return save_bundle(tmp_path_factory.mktemp("bundle"), model, model_name="text_regressor", config=cfg, task=task,
                       dims=dims, specs={"text": MiniLMText().spec().to_dict()})


def test_eval_label_csv_scores_only_the_chosen_split(tiny_text_bundle, tmp_path, one_thread, capsys):
    rows = ["video_id,clip_id,text,label,annotation,mode", "a,1,I LOVED IT,3.0,Positive,valid",
            "a,2,it was awful,-2.4,Negative,valid", "b,1,so so,0.0,Neutral,valid", "b,2,great fun,2.0,Positive,valid",
            "c,1,THIS ROW IS TRAIN ONLY,1.0,Positive,train"]
    (tmp_path / "label.csv").write_text("\n".join(rows) + "\n")
    assert eval_main(["--bundle", str(tiny_text_bundle), "--data", str(tmp_path / "label.csv"), "--split", "valid",
                      "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == 4 and res["split"] == "valid" and set(MOSI_KEYS) <= set(res["metrics"])
    assert eval_main(["--bundle", str(tiny_text_bundle), "--data", str(tmp_path / "label.csv"), "--split", "test"]) == 1
    assert "no rows in split 'test'" in capsys.readouterr().err


def test_eval_label_csv_reports_bad_rows_in_one_line(tiny_text_bundle, tmp_path, capsys):
    bad = tmp_path / "label.csv"
    bad.write_text("video_id,clip_id,text,label,mode\nv,1,,1.0,valid\nv,2,fine,x,valid\n")
    assert eval_main(["--bundle", str(tiny_text_bundle), "--data", str(bad), "--split", "valid"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "line 2: empty text" in err and "line 3: label 'x' is not a number" in err
    (tmp_path / "nolabel.csv").write_text("text\nhello\n")
    assert eval_main(["--bundle", str(tiny_text_bundle), "--data", str(tmp_path / "nolabel.csv")]) == 1
    assert "lacks column(s) label" in capsys.readouterr().err
