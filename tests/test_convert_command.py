"""`cnnc convert` as a user runs it: the real command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from test_convert_keras import TUTORIAL_LIST

ROOT = Path(__file__).resolve().parents[1]

def _cnnc(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cnnc", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_command_writes_the_file_and_check_accepts_it(tmp_path):
    (tmp_path / "m.py").write_text(textwrap.dedent(TUTORIAL_LIST))
    r = _cnnc("convert", "m.py", "-o", "m.cnn", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "421,642 parameters" in r.stdout
    r = _cnnc("check", "m.cnn", cwd=tmp_path)
    assert r.returncode == 0 and "421,642 parameters" in r.stdout
    r = _cnnc("convert", "m.py", cwd=tmp_path)  # no -o: the program on standard output
    assert r.returncode == 0 and r.stdout == (tmp_path / "m.cnn").read_text()


def test_command_reports_located_errors_and_writes_nothing(tmp_path):
    (tmp_path / "bad.py").write_text("import keras\nm = keras.Sequential([\n"
                                     "    keras.layers.Conv3D(4, 3, input_shape=(4, 4, 4, 1))])\n")
    r = _cnnc("convert", "bad.py", "-o", "bad.cnn", cwd=tmp_path)
    assert r.returncode == 1
    assert "bad.py:3:5: error: the Keras layer `Conv3D` has no cnnc equivalent" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "bad.cnn").exists()
    r = _cnnc("convert", "missing.py", cwd=tmp_path)
    assert r.returncode == 1 and "missing.py:1:1: error: no such file" in r.stderr


def test_command_picks_one_of_several_models_and_reports_write_errors(tmp_path):
    (tmp_path / "two.py").write_text(
        "import keras\na = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])\n"
        "b = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])\n")
    r = _cnnc("convert", "two.py", cwd=tmp_path)
    assert r.returncode == 1 and "--model NAME" in r.stderr
    r = _cnnc("convert", "two.py", "--model", "b", "-o", "b.cnn", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "input 6" in (tmp_path / "b.cnn").read_text()
    r = _cnnc("convert", "two.py", "--model", "b", "-o", "no/such/dir/b.cnn", cwd=tmp_path)
    assert r.returncode == 1 and "cnnc: error: cannot write" in r.stderr
    assert "Traceback" not in r.stderr
