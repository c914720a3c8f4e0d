from pathlib import Path

import pytest

from cdsw_tui.errors import ValidationError
from cdsw_tui.services import validation as v
from cdsw_tui.services.access_keys import ALPHABET, mask, new_access_key


@pytest.mark.parametrize("value", ["0", 0, 10, "ten", -1])
def test_replicas_outside_1_to_9_are_refused(value):
    with pytest.raises(ValidationError) as err:
        v.replicas(value)
    assert err.value.field == "replicas"


@pytest.mark.parametrize("value", [1, 9, "5"])
def test_replicas_inside_range(value):
    assert 1 <= v.replicas(value) <= 9


@pytest.mark.parametrize("value", [0, -1, "nan", "inf", "x"])
def test_cpu_must_be_positive(value):
    with pytest.raises(ValidationError, match="cpu"):
        v.cpu(value)


@pytest.mark.parametrize("value", [127, 0, "lots"])
def test_memory_at_least_128(value):
    with pytest.raises(ValidationError, match="memory"):
        v.memory(value)


def test_json_text_names_the_field_and_the_position():
    with pytest.raises(ValidationError) as err:
        v.json_text('{"a": 3,', "example_input")
    assert err.value.field == "example_input"
    assert "example input is not valid JSON" in err.value.message
    assert v.json_text("", "example_input") == ""
    assert v.json_text(' {"a": 1} ', "example_input") == ' {"a": 1} '


SOURCE = """
def good(args):
    return args

def two(a, b):
    return a

def defaults(a, b=2):
    return a

def none():
    return 1

def star(*args):
    return args

async def later(args):
    return args

def kw(a, *, must):
    return a

class K:
    def method(self, args):
        return args
"""


def test_python_functions_judges_each_signature():
    found = v.python_functions(SOURCE)
    assert found["good"] is None
    assert found["defaults"] is None
    assert found["star"] is None
    assert "2 required arguments" in found["two"]
    assert "no argument" in found["none"]
    assert "async" in found["later"]
    assert "keyword" in found["kw"]
    assert "method" not in found


def test_function_missing_lists_what_exists(tmp_path: Path):
    path = tmp_path / "m.py"
    path.write_text(SOURCE)
    with pytest.raises(ValidationError) as err:
        v.function(path, "python3", "predict")
    assert err.value.field == "function"
    assert "good" in err.value.message
    with pytest.raises(ValidationError, match="2 required arguments"):
        v.function(path, "python3", "two")


def test_syntax_error_is_reported_on_the_file_field(tmp_path: Path):
    path = tmp_path / "m.py"
    path.write_text("def broken(:\n")
    with pytest.raises(ValidationError) as err:
        v.function(path, "python3", "broken")
    assert err.value.field == "file"
    assert "line 1" in err.value.message


def test_r_functions_found():
    source = "add <- function(args) {\n args$a + args$b\n}\nsq = function(x) x^2\n`odd name` <- function(a) a\nnot_a_fn <- 3\n"
    assert set(v.r_functions(source)) == {"add", "sq", "odd name"}


def test_model_file_must_stay_in_the_project(tmp_path: Path):
    (tmp_path / "p").mkdir()
    (tmp_path / "outside.py").write_text("")
    with pytest.raises(ValidationError, match="outside the project"):
        v.model_file(tmp_path / "p", "../outside.py")
    with pytest.raises(ValidationError, match="does not exist"):
        v.model_file(tmp_path / "p", "missing.py")


def test_names_and_env_keys():
    assert v.name(" my model ") == "my model"
    for bad in ("", "a/b", "-lead", "x" * 65):
        with pytest.raises(ValidationError):
            v.name(bad)
    assert v.env_pairs(["A=1", "B_2=x=y"]) == {"A": "1", "B_2": "x=y"}
    for bad in (["A"], ["1A=2"], ["A-B=1"]):
        with pytest.raises(ValidationError):
            v.env_pairs(bad)
    assert v.slug("My Model 2!") == "my-model-2"


def test_access_keys_are_32_lowercase_alnum_and_distinct():
    keys = {new_access_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert len(key) == 32 and set(key) <= set(ALPHABET)
    key = next(iter(keys))
    assert key[:4] not in mask(key)


@pytest.mark.parametrize(
    "good",
    [
        "cdsw-tui/engine:latest",
        "python",
        "localhost:5000/team/engine-r:3.11",
        "a/b@sha256:" + "0" * 64,
    ],
)
def test_engine_accepts_image_references(good):
    assert v.engine(good) == good


@pytest.mark.parametrize(
    "bad", ["", "Engine:1", "a b", "x:", "../etc", "img:tag;rm -rf /", "a" * 300]
)
def test_engine_refuses_what_docker_would(bad):
    with pytest.raises(ValidationError) as caught:
        v.engine(bad)
    assert caught.value.field == "engine"


def test_a_display_name_or_its_slug_picks_one_and_a_shared_slug_is_refused():
    from types import SimpleNamespace

    from cdsw_tui.services.validation import pick_by_name

    rows = [SimpleNamespace(name=n) for n in ("Price Regressor", "Churn Model", "churn model")]
    assert pick_by_name(rows, "Price Regressor", "model", "here").name == "Price Regressor"
    assert pick_by_name(rows, "price-regressor", "model", "here").name == "Price Regressor"
    assert pick_by_name(rows, "churn model", "model", "here").name == "churn model"  # exact
    assert pick_by_name(rows, "nope", "model", "here") is None
    with pytest.raises(ValidationError, match="slug of several models here"):
        pick_by_name(rows, "churn-model", "model", "here")
