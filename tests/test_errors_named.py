"""Library errors name settings by their keyword (radius, k); the CLI names them by the running command's
flag (--radius, -k), and the service by its request fields, which are the keywords (issue 49)."""

import pickle

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import hashing.cli.main
from hashing.cli.main import flag_names
from hashing.core.errors import HashingError, TooLarge
from hashing.indexes import IndexInfo, create, open_index

MODEL = {"run_dir": "/nowhere", "fingerprint": "abc", "bits": 64}


@pytest.fixture
def small_index(tmp_path):
    """A 64-bit FAISS index of 5 items (no model: the search terms are checked before one is loaded)."""
    location = str(tmp_path / "idx")
    index = create(location, IndexInfo(bits=64, model=MODEL, index_type="flat"))
    index.add(np.random.default_rng(0).integers(0, 256, (5, 8), dtype=np.uint8), None, [f"item{i}" for i in range(5)])
    index.save()
    index.close()
    return location


def run_cli(*args):
    return CliRunner().invoke(hashing.cli.main.cli, [str(a) for a in args], prog_name="hashing")


def test_library_message_names_the_setting(small_index):
    with open_index(small_index) as index:
        with pytest.raises(HashingError, match=r"^radius must be from 0 to 64") as e:
            index.check_searchable(radius=65)
        assert "--radius" not in str(e.value) and e.value.settings == ("radius",)
        with pytest.raises(HashingError, match=r"^k 9 is larger than the index \(5 items\)") as e:
            index.check_searchable(k=9)
        assert "-k" not in str(e.value) and e.value.settings == ("k",)


def test_settings_survive_pickling_and_stay_a_plain_exception():
    e = pickle.loads(pickle.dumps(TooLarge("radius too big", settings=("radius",))))
    assert type(e) is TooLarge and str(e) == "radius too big" and e.settings == ("radius",)
    assert HashingError("no settings").settings == () and isinstance(e, Exception)


def test_cli_names_the_flag(small_index, tmp_path):
    png = tmp_path / "q.png"
    Image.new("L", (8, 8)).save(png)
    r = run_cli("query", png, "--index", small_index, "--radius", 65)
    assert r.exit_code == 1
    assert r.stderr.strip() == "Error: --radius must be from 0 to 64 (the code length), got 65"
    r = run_cli("query", png, "--index", small_index, "-k", 9)
    assert r.exit_code == 1
    assert r.stderr.strip() == "Error: -k 9 is larger than the index (5 items); ask for at most 5"


def fake_command():
    return click.Command("fake", params=[
        click.Option(["-k"], type=int),
        click.Option(["-t", "--index-type", "index_type"]),
        click.Option(["--keep"]),
        click.Option(["--verify/--no-verify"], default=True),
        click.Argument(["radius"]),
    ])


def test_rewrite_whole_words_to_the_commands_flags():
    e = HashingError("k 5 is too many for index_type 'ivf'; keep k small (not /data/k/x, 'k' or index_types) "
                     "and choose index_type flat", settings=("k", "index_type"))
    assert flag_names(e, fake_command()) == ("-k 5 is too many for --index-type 'ivf'; keep -k small (not /data/k/x, "
                                             "'k' or index_types) and choose --index-type flat")


def test_rewrite_leaves_settings_the_command_has_no_option_for():
    command = fake_command()
    e = HashingError("radius and threshold and keep", settings=("radius", "threshold"))
    assert flag_names(e, command) == "radius and threshold and keep"         # an argument, and no param at all
    assert flag_names(HashingError("keep k", settings=()), command) == "keep k"   # not named in settings
    e = HashingError("or pass verify=False to trust the codes; verify=True checks", settings=("verify",))
    assert flag_names(e, command) == "or pass --no-verify to trust the codes; --verify checks"
