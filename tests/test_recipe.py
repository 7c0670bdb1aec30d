"""Build recipes: strict parsing with errors that name the file and the key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rebuild.errors import InputError
from rebuild.recipe import MAX_RECIPE_SIZE, load_recipe, parse_recipe
from verify.intoto import GitSource, SdistSource

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "recipes"
PHAR = FIXTURES / "hello-phar.recipe.toml"
WHEEL = FIXTURES / "hello-wheel.recipe.toml"


def test_git_recipe_fixture_parses_into_the_documented_model() -> None:
    r = load_recipe(PHAR)
    assert (r.package, r.version) == ("hello-phar", "1.0.0")
    assert isinstance(r.source, GitSource) and len(r.source.commit) == 40
    assert r.environment.name == "php-8.2"
    assert r.command[0] == "php" and r.outputs == ("hello.phar",)
    assert r.source_date_epoch == "commit"
    assert r.env_dict == {"TZ": "UTC"}
    assert r.sha256 == hashlib.sha256(PHAR.read_bytes()).hexdigest()
    assert r.text.encode() == PHAR.read_bytes()


def test_sdist_recipe_fixture_parses() -> None:
    r = load_recipe(WHEEL)
    assert isinstance(r.source, SdistSource)
    assert r.source_date_epoch == "sdist"
    assert r.outputs == ("*.whl",)


def test_digest_covers_the_exact_bytes_even_a_comment() -> None:
    """Two recipes that parse alike are still different recipes if their bytes differ."""
    data = PHAR.read_bytes()
    a, b = parse_recipe(data), parse_recipe(data + b"# trailing comment\n")
    assert a.command == b.command and a.sha256 != b.sha256


def test_fixed_integer_source_date_epoch() -> None:
    data = PHAR.read_bytes().replace(b'source_date_epoch = "commit"', b"source_date_epoch = 0")
    assert parse_recipe(data).source_date_epoch == 0


def _edit(old: str, new: str, base: Path = PHAR) -> bytes:
    data = base.read_text()
    assert old in data, old
    return data.replace(old, new, 1).encode()


BAD = [
    ("no format", _edit('format = "rebuild-recipe/v1"\n', ""), "format: must be"),
    ("future format", _edit('"rebuild-recipe/v1"', '"rebuild-recipe/v2"'), "format: must"),
    ("unknown table", _edit("[build]", "[deploy]\nx = 1\n[build]"), "deploy: unknown"),
    ("no package", _edit("[package]", "[pkg]"), "pkg: unknown key or table"),
    ("no version", _edit('version = "1.0.0"\n', ""), "[package] version: missing"),
    ("version not string", _edit('version = "1.0.0"', "version = 1.0"), "[package] version"),
    ("unknown build key", _edit("[build]", "[build]\nshell = true"), "[build] shell: unknown"),
    ("git and sdist", _edit("[source]", '[source]\nsdist = "x"'), "not both"),
    ("git without commit", _edit('commit = "3f78', 'comit = "3f78'), "[source] comit"),
    ("short commit", _edit("3f786850e387550fdab836ed7e6dc881de23001b", "3f78685"), "40-hex"),
    ("upper lock", _edit('lock_sha256 = "9f86', 'lock_sha256 = "9F86'), "lowercase hex"),
    ("no source", _edit('git = "https', 'url = "https'), "[source] url: unknown"),
    ("string command", _edit('command = ["php",', 'command = "php" #'), "[build] command"),
    ("empty command", _edit("command = [", "command = [] #"), "[build] command"),
    ("int argv", _edit('["php",', "[1,"), "[build] command[0]"),
    ("absolute output", _edit('outputs = ["hello.phar"]', 'outputs = ["/etc/x"]'), "outputs[0]"),
    ("escaping output", _edit('outputs = ["hello.phar"]', 'outputs = ["../x"]'), "outputs[0]"),
    ("sdist rule on git", _edit('= "commit"', '= "sdist"'), '"sdist" needs an sdist source'),
    ("commit rule on sdist", _edit('= "sdist"', '= "commit"', WHEEL), '"commit" needs a git'),
    ("negative epoch", _edit('= "commit"', "= -1"), "source_date_epoch"),
    ("boolean epoch", _edit('= "commit"', "= true"), "source_date_epoch"),
    ("float epoch", _edit('= "commit"', "= 1.5"), "source_date_epoch"),
    ("bad env name", _edit("TZ =", '"1X" ='), "env.1X"),
    ("env sets SDE", _edit("TZ =", "SOURCE_DATE_EPOCH ="), "set by the source_date_epoch rule"),
    ("env not string", _edit('TZ = "UTC"', "TZ = 1"), "env.TZ"),
    ("invalid TOML", _edit("[build]", "[build"), "invalid TOML"),
    ("control char", _edit('tag = "v1.0.0"', 'tag = "v1.0.0\\u0007"'), "control character"),
    ("non-UTF-8", PHAR.read_bytes().replace(b"hello-phar", b"hello-\xff", 1), "not UTF-8"),
    ("oversized", PHAR.read_bytes() + b"#" * MAX_RECIPE_SIZE, "16384-byte"),
]


@pytest.mark.parametrize(("data", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_recipe_is_one_line_naming_file_and_key(
    tmp_path: Path, data: bytes, message: str
) -> None:
    path = tmp_path / "bad.recipe.toml"
    path.write_bytes(data)
    with pytest.raises(InputError) as info:
        load_recipe(path)
    text = str(info.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text
    assert "\n" not in text


def test_missing_recipe_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_recipe(tmp_path / "nope.toml")
