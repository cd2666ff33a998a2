"""What a new user meets at the edges: outputs checked before the work, the end-of-training summary,
one set of quickstart numbers in the docs, palette PNGs, make_lr's published naming."""

from __future__ import annotations

import errno
import re
import tempfile

import numpy as np
import pytest
from conftest import REPO_ROOT, run_script
from PIL import Image

from mspan_jax.config_base import sr_config
from mspan_jax.data.images import read_image, read_stored_image, write_image
from mspan_jax.files import OutputError, check_output_dir, check_output_file
from mspan_jax.train.console import final_summary


def test_output_checks_name_the_folder_and_make_nothing(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=f"--output {blocker}/out: its folder cannot be made, "
                                          f"{blocker} is a file"):
        check_output_dir(blocker / "out", "--output")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_output_dir(blocker, "--output")
    with pytest.raises(OutputError, match="is a folder; give a file name"):
        check_output_file(tmp_path, "--json")
    assert check_output_dir(tmp_path / "new" / "deeper", "--output") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not made

    def refuse(*args, **kwargs):  # a read-only mount: what os.access and root do not see
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError) as caught:
        check_output_file(tmp_path / "ro_out" / "scores.json", "--json")
    assert str(caught.value) == (f"--json {tmp_path}/ro_out/scores.json: cannot write in {tmp_path} "
                                 "(Operation not permitted)")


# Each script with an output under a regular file and a checkpoint that does not exist: the output
# must be refused first (one line naming the flag and the blocking file), before any loading.
SCRIPTS = {
    "upscale.py": ["--checkpoint", "{missing}", "--input", "{image}", "--output", "{blocked}/out"],
    "compare.py": ["--image", "{image}", "--model", "{missing}", "--out", "{blocked}/cmp.png"],
    "evaluate.py": ["--checkpoint", "{missing}", "--hr-dir", "{folder}", "--json", "{blocked}/s.json"],
    "evaluate.py --save-images": ["--checkpoint", "{missing}", "--hr-dir", "{folder}",
                                  "--save-images", "{blocked}/sr"],
    "make_lr.py": ["--hr-dir", "{folder}", "--out-dir", "{blocked}/lr", "--scale", "2"],
    "export.py": ["--checkpoint", "{missing}", "--out", "{blocked}/m.jaxexport"],
    "save_params.py": ["--checkpoint", "{missing}", "--out", "{blocked}/p"],
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_script_checks_its_outputs_first(script, tmp_path):
    folder = tmp_path / "in"
    write_image(folder / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "blocked").write_text("a file, not a folder")
    values = {"missing": tmp_path / "missing", "image": folder / "a.png", "folder": folder,
              "blocked": tmp_path / "blocked"}
    args = [a.format(**values) for a in SCRIPTS[script]]
    done = run_script(script.split()[0], *args)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{tmp_path / 'blocked'} is a file" in errors[0] and "missing" not in errors[0], errors[0]


def test_training_ends_with_a_summary():
    config = sr_config("mspan", 4)
    config.eval.datasets = ("skimage_holdout",)
    config.train.num_steps = 1200
    results = {"step": 1200, "skimage_holdout": {"psnr": 29.89, "ssim": 0.8006},
               "bicubic": {"skimage_holdout": {"psnr": 29.38, "ssim": 0.7855}}}
    text = final_summary("/tmp/mspan_quickstart", config, results, (1200, 29.89))
    assert "skimage_holdout: best 29.89 dB at step 1200, last 29.89 dB at step 1200 (bicubic 29.38 dB)" \
        in text
    for where in ("/tmp/mspan_quickstart/best", "/tmp/mspan_quickstart/samples/",
                  "/tmp/mspan_quickstart/eval_results.json",
                  "--logdir /tmp/mspan_quickstart/tensorboard",
                  "python scripts/evaluate.py --checkpoint /tmp/mspan_quickstart",
                  "python scripts/upscale.py --checkpoint /tmp/mspan_quickstart"):
        assert where in text, text
    assert "done:" in final_summary("/w", config, None, None)  # no validation yet: still a summary
    config.train.num_steps = -1  # the paper configs: num_epochs * steps_per_epoch
    config.train.num_epochs, config.train.steps_per_epoch = 3, 1000
    assert final_summary("/w", config, None, None).startswith("done: mspan x4 trained to step 3000\n")


QUICKSTART_WORKDIR = "/tmp/mspan_quickstart"


def _measured_quickstarts() -> list[dict[str, str]]:
    """docs/results.md's table of measured quickstarts: one row per machine that ran it."""
    page = (REPO_ROOT / "docs" / "results.md").read_text()
    section = page[page.index("## The quickstart"):]
    section = section[:section.index("\n## ")]
    rows = re.findall(r"^\|[^\n]*\| (\d+) s \| ([\d.]+) / ([\d.]+) \| ([\d.]+) / [\d.]+ \|$", section,
                      re.MULTILINE)
    return [dict(zip(("seconds", "psnr", "ssim", "bicubic"), row, strict=True)) for row in rows]


def test_the_quickstart_numbers_agree_everywhere():
    """docs/results.md's measured quickstarts (per machine: runs are deterministic on one machine, not
    across CPUs) are the one set of numbers: configs/quickstart.py's docstring states each machine's,
    the README quotes only numbers of that table, and every page uses one workdir and no other
    quickstart time."""
    measured = _measured_quickstarts()
    assert len(measured) >= 2, measured
    doc = (REPO_ROOT / "configs" / "quickstart.py").read_text().split('"""')[1]
    for numbers in measured:
        for key in ("seconds", "psnr", "ssim", "bicubic"):
            assert re.search(rf"\b{re.escape(numbers[key])}\b", doc), (key, numbers[key], doc)
    readme = (REPO_ROOT / "README.md").read_text()
    (paragraph,) = [p for p in readme.split("\n\n") if "docs/results.md#the-quickstart" in p]
    quoted = set(re.findall(r"\b(\d+) s\b", paragraph) + re.findall(r"\b(\d+\.\d\d) dB", paragraph))
    table = {numbers[key] for numbers in measured for key in ("seconds", "psnr", "bicubic")}
    assert quoted and quoted <= table, (quoted - table, paragraph)
    pages = [REPO_ROOT / "README.md", REPO_ROOT / "configs" / "quickstart.py",
             *sorted((REPO_ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text()
        for line in text.splitlines():
            if "configs/quickstart.py" in line and "--workdir" in line and "gs://" not in line:
                assert f"--workdir {QUICKSTART_WORKDIR}" in line, (page.name, line)
            if re.search(r"\bquickstart\b", line) and "denois" not in line:
                assert not re.search(r"\b(90 s|~?5 minutes|4\.5 minutes|~2 minutes)", line), \
                    (page.name, line)


def test_palette_png_stays_rgb_without_transparency(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "p.png")
    stored = read_stored_image(tmp_path / "p.png")
    assert stored.alpha is None and stored.color.shape == (6, 7, 3)
    palette.save(tmp_path / "t.png", transparency=0)
    assert read_stored_image(tmp_path / "t.png").alpha is not None  # real transparency is kept
    with pytest.warns(UserWarning, match="palette image converted to RGB"):
        assert read_image(tmp_path / "t.png").shape == (6, 7, 3)


def test_make_lr_names_files_as_the_published_sets(tmp_path):
    write_image(tmp_path / "HR" / "baby.png", np.zeros((8, 12, 3), np.uint8))
    done = run_script("make_lr.py", "--hr-dir", tmp_path / "HR", "--out-dir", tmp_path / "X4",
                      "--scale", 4)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (tmp_path / "X4").iterdir()] == ["babyx4.png"]
    done = run_script("make_lr.py", "--hr-dir", tmp_path / "HR", "--out-dir", tmp_path / "plain",
                      "--scale", 2, "--suffix", "")
    assert done.returncode == 0 and [p.name for p in (tmp_path / "plain").iterdir()] == ["baby.png"]


def test_samples_label_the_reference_plainly(monkeypatch):
    """The HR column of the training samples says what it is, not an empty "PSNR / SSIM"."""
    from mspan_jax.data.pairs import EvalPair
    from mspan_jax.evaluation import EvalResult, ImageScore
    from mspan_jax.train import validation

    monkeypatch.setattr(validation, "panel_grid", lambda panels, columns: panels)
    image = np.zeros((16, 16, 3), np.uint8)
    scored = EvalResult(30.0, 0.9, [ImageScore("a", 30.0, 0.9)], 1, outputs={"a": image})
    panels = validation.summary_figure([EvalPair("a", image[:8, :8], image)], scored, scored, 8,
                                       "mspan", 2)
    assert [p.caption for p in panels] == ["30.00 dB / 0.9000", "30.00 dB / 0.9000", "reference"]


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO_ROOT / "scripts").glob("*.py")))
def test_help_examples_read_cleanly(script):
    """--help prints the module docstring: no runs of spaces where a `\\` joined two lines, and no
    paths of this repository's development setup (../shared, /tmp/imdn4, /tmp/q)."""
    import ast

    doc = ast.get_docstring(ast.parse((REPO_ROOT / "scripts" / script).read_text()), clean=False)
    for line in (doc or "").splitlines():
        assert not re.search(r"\S {3,}--", line), line
        assert not re.search(r"\.\./shared|/tmp/(imdn4|q\b|quickstart_sr)", line), line


def test_unprepared_div2k_says_one_thing_and_what_a_denoiser_needs(monkeypatch, caplog):
    """No absl warning from tfds before the error; a restoration run is told it needs clean images
    only (any folder), not the SR config `bicubic_x4`."""
    import logging
    import sys
    import types

    from absl import logging as absl_logging

    from mspan_jax.data import sources

    class Unprepared:
        data_dir_root = "/root/tensorflow_datasets"

        def __init__(self, name, data_dir=None):
            absl_logging.warning("Variant folder %s has no dataset_info.json", name)

        def is_prepared(self):
            return False

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(builder=Unprepared))
    monkeypatch.setattr(sources, "require", lambda *args: None)
    spec = types.SimpleNamespace(scale=1, data_dir="", restoration=True)
    with caplog.at_level(logging.WARNING), pytest.raises(FileNotFoundError) as caught:
        sources.div2k_tfds(spec)
    assert not [r for r in caplog.records if "dataset_info" in r.getMessage()]
    assert "trains on clean images only" in str(caught.value)
    assert "source=folder" in str(caught.value) and "bicubic_x" not in str(caught.value)
    with pytest.raises(FileNotFoundError, match="div2k/bicubic_x4 is not prepared"):
        sources.div2k_tfds(types.SimpleNamespace(scale=4, data_dir="", restoration=False))


def test_datasets_take_folders_as_documented(tmp_path, monkeypatch):
    """`--datasets ./Set5`: an entry with a `/` is a folder (docs/training.md), no tfds needed."""
    from mspan_jax.eval_suite import load_sets

    write_image(tmp_path / "Set5" / "HR" / "baby.png", np.zeros((16, 12, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    (only,) = load_sets(sr_config("mspan", 4), ["./Set5"])
    assert only.name == "./Set5" and [p.name for p in only.pairs] == ["baby"]


@pytest.mark.slow
def test_a_finished_run_prints_its_summary(tmp_path, capsys):
    """A tiny run end to end: the summary's best PSNR is the best checkpoint's, and its paths exist."""
    from conftest import TINY_TRAIN_SETTINGS

    from mspan_jax.train.loop import train_and_evaluate

    config = sr_config("mspan", 4)
    for key, value in TINY_TRAIN_SETTINGS.items():
        section, name = key.split(".")
        config[section][name] = value
    config.train.async_checkpointing = False
    results = train_and_evaluate(config, str(tmp_path / "run"))
    out = capsys.readouterr().out
    summary = out[out.index("done: mspan x4 trained to step 6"):]
    psnr = results["skimage_holdout"]["psnr"]
    assert f"best {psnr:.2f} dB at step 6, last {psnr:.2f} dB at step 6 (bicubic " in summary, summary
    assert f"python scripts/upscale.py --checkpoint {tmp_path / 'run'}" in summary
    for name in ("best", "samples", "eval_results.json", "tensorboard"):
        assert (tmp_path / "run" / name).exists() and f"{tmp_path / 'run'}/{name}" in summary


def test_the_readme_commands_write_only_what_git_ignores():
    """Every relative output of the README's commands (--out, --output, --workdir, --json, ...) is
    ignored by git, so following the README leaves the clone's `git status` clean."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    readme = (REPO_ROOT / "README.md").read_text()
    outputs = {path.rstrip("`") for path in re.findall(
        r"--(?:out|out-dir|output|workdir|json) ([^\s/~][^\s`]*)", readme)}
    assert {"ckpt/imdn_x4", "r.json", "runs/mspan_x4"} <= outputs, outputs
    tracked = [path for path in sorted(outputs) if subprocess.run(
        ["git", "check-ignore", "-q", "--no-index", path], cwd=REPO_ROOT).returncode != 0]
    assert not tracked, f"the README's commands write {tracked} into the clone, not git-ignored"
