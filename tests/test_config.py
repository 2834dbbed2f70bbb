import pytest
import yaml

from convgen.config import apply_overrides, build_config, load_config
from convgen.errors import ConfigError
from tests.conftest import REPO, tiny_config


def test_defaults_fill_and_roundtrip():
    cfg = build_config(tiny_config())
    assert cfg.train.optimizer == "adamw" and cfg.model.kernel_size == 3
    again = build_config(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ("train", "learning_rate", "train.learning_rate"),
        ("model", "chanels", "model.chanels"),
        ("data", "rooot", "data.rooot"),
    ],
)
def test_unknown_key_is_named(section, key, message):
    raw = tiny_config()
    raw[section][key] = 1
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        build_config(raw)


def test_unknown_nested_key_suggests():
    raw = tiny_config()
    raw["task"]["augment"]["degree"] = 5
    with pytest.raises(ConfigError, match=r"'task\.augment\.degree'.*did you mean 'task\.augment\.degrees'"):
        build_config(raw)


def test_unknown_section():
    raw = tiny_config()
    raw["trian"] = {}
    with pytest.raises(ConfigError, match="'trian'.*did you mean 'train'"):
        build_config(raw)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("epochs", "ten", "expected an integer"),
        ("epochs", True, "expected an integer"),
        ("epochs", 2.5, "expected an integer"),
        ("lr", "fast", "expected a number"),
        ("bf16", "yes", "expected true or false"),
        ("optimizer", "lbfgs", "expected one of"),
        ("lr", -1.0, "must be > 0"),
        ("device", "tpu", "expected auto"),
    ],
)
def test_mistyped_values(key, value, message):
    raw = tiny_config()
    raw["train"][key] = value
    with pytest.raises(ConfigError, match=message):
        build_config(raw)


def test_int_accepted_for_float():
    raw = tiny_config()
    raw["train"]["lr"] = 1
    assert build_config(raw).train.lr == 1.0


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path):
    # PyYAML reads "3e-4" as a string (YAML 1.1 wants "3.0e-4"); in a file and on the command line it is a number
    raw = apply_overrides(tiny_config(), ["train.lr=3e-4", "train.weight_decay=1E-5"])
    cfg = build_config(raw)
    assert cfg.train.lr == 3e-4 and cfg.train.weight_decay == 1e-5
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config()).replace("lr: 0.003", "lr: 2e-3"))
    assert "2e-3" in path.read_text() and load_config(path).train.lr == 2e-3
    for bad in ("fast", "1e", "e-4", "1e-4x"):  # only whole numbers in exponent form, nothing else
        with pytest.raises(ConfigError, match="expected a number"):
            build_config(apply_overrides(tiny_config(), [f"train.lr={bad}"]))


def test_unknown_model_type_lists_known():
    raw = tiny_config()
    raw["model"]["type"] = "resnet9000"
    with pytest.raises(Exception, match="unknown model type 'resnet9000'.*cnn-classifier"):
        build_config(raw)


def test_overrides_parse_yaml_values():
    raw = apply_overrides(tiny_config(), ["train.lr=0.5", "model.stages=[[4],[8]]", "train.bf16=true"])
    cfg = build_config(raw)
    assert cfg.train.lr == 0.5 and cfg.model.stages == [[4], [8]] and cfg.train.bf16 is True


def test_override_without_equals():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["train.lr"])


def test_every_preset_loads_and_names_its_stage():
    presets = sorted((REPO / "configs").glob("*/*.yaml"))
    assert len(presets) >= 17 and not list((REPO / "configs").glob("*.yaml"))  # grouped by task
    for path in presets:
        cfg = load_config(path)
        assert path.parent.name == cfg.task.registry_name, path  # configs/<task>/<name>.yaml
        assert f"configs/{path.parent.name}/{path.name}" in path.read_text(), f"{path}: header names another file"
    with pytest.raises(ConfigError, match="grouped by task now: .*classification/mnist-classifier.yaml"):
        load_config(REPO / "configs" / "mnist-classifier.yaml")


def test_preset_file_loads(tmp_path):
    from tests.conftest import REPO

    cfg = load_config(REPO / "configs" / "classification" / "mnist-classifier.yaml", ["train.epochs=1"])
    assert cfg.train.epochs == 1 and cfg.data.val_count == 1000


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
