"""Every command that writes checks its output path before any work: one line naming why, exit status 2."""

import os

import pytest

from inceptorch.cli import main
from inceptorch.errors import ConfigError
from inceptorch.outputs import writable_file

# command line before the output option, the option, and the file name to write
WRITERS = [
    (["draw", "googlenet"], "--out", "x.png"),
    (["explore", "googlenet"], "--out", "x.html"),
    (["compare", "googlenet"], "--out", "x.html"),
    (["compare", "googlenet"], "--plot", "x.svg"),
    (["export", "googlenet", "--random-init"], "--out", "x.onnx"),
    (["embed", "--model", "googlenet", "--pretrained", "photo.png"], "--out", "x.npy"),
    (["bench", "googlenet", "--batch", "1"], "--json", "x.json"),
    (["fid", "folder"], "--save-stats", "x.npz"),
]
IDS = [f"{words[0]} {option}" for words, option, _ in WRITERS]


@pytest.mark.parametrize(("words", "option", "name"), WRITERS, ids=IDS)
def test_an_output_under_a_file_is_one_line_naming_that_file(tmp_path, capsys, words, option, name):
    notes = tmp_path / "notes.txt"
    notes.write_text("a file, not a folder")
    assert main([*words, option, str(notes / name)]) == 2
    err = capsys.readouterr().err
    assert err == f"inceptorch: error: {option} {notes / name} cannot be written: {notes} is a file, not a folder\n"
    assert notes.read_text() == "a file, not a folder"


@pytest.mark.parametrize(("words", "option", "name"), WRITERS, ids=IDS)
def test_an_output_where_no_file_can_be_created_is_one_line(capsys, words, option, name):
    # /proc refuses new files even to root, who passes every permission check
    target = f"/proc/inceptorch-test/{name}"
    assert main([*words, option, target]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"inceptorch: error: {option} {target} cannot be written: no file can be created in /proc (")
    assert err.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder: the /proc case covers it")
def test_an_output_in_a_read_only_folder_is_one_line(tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    assert main(["draw", "googlenet", "--out", str(folder / "g.png")]) == 2
    assert "no file can be created in" in capsys.readouterr().err and not any(folder.iterdir())


def test_a_folder_as_output_and_a_wrong_suffix_are_refused_and_missing_folders_are_fine(tmp_path):
    with pytest.raises(ConfigError, match="is a folder: name a file inside it"):
        writable_file(tmp_path)
    with pytest.raises(ConfigError, match=r"must end in \.npy, \.csv"):
        writable_file(tmp_path / "f.txt", (".npy", ".csv"))
    assert writable_file(tmp_path / "new" / "deeper" / "f.CSV", (".npy", ".csv")) == tmp_path / "new" / "deeper" / "f.CSV"
    assert not (tmp_path / "new").exists()  # checked, not created: the writer creates it
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
