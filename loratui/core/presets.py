"""YAML presets: sparse overlays on the defaults, with a ``version`` key.

A preset holds only what differs from ``TrainingConfig()`` so that it stays readable and survives new
defaults. Loading is strict: an unknown key is an error with its line number and a "did you mean", and a
wrong type names the key and line. Only ``yaml.safe_load``-equivalent loading is used.
"""

from __future__ import annotations

import difflib
import stat
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from loratui.core.atomic import atomic_write_text
from loratui.core.config import SECTIONS, TrainingConfig, section_model

PRESET_VERSION = 1
META_KEYS = ("version", "description")
MAX_PRESET_BYTES = 1_000_000  # a full config is ~3 kB; a 50 MB file is a mistake, not a preset
MAX_YAML_NODES = 20_000  # counted with aliases expanded: an alias bomb is refused before it is built
MAX_YAML_DEPTH = 40
SHIPPED_PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"


class PresetError(ValueError):
    """A preset that cannot be used; the message is one line naming the file, line, key and fix."""


class PresetWriteError(PresetError, OSError):
    """A preset that cannot be written; also an ``OSError`` so that callers catching write errors still do."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.strerror = reason


@dataclass(frozen=True)
class PresetInfo:
    name: str
    path: Path
    description: str


# --- reading -------------------------------------------------------------------------------------------------


def _compose(text: str, source: str) -> yaml.Node | None:
    """The YAML node tree, after the checks that keep a hostile or broken file from hanging or bloating us."""
    if len(text) > MAX_PRESET_BYTES:
        raise PresetError(f"{source}: {len(text):,} characters is far too large for a preset (limit "
                          f"{MAX_PRESET_BYTES:,}); is it the right file?")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise PresetError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}); check indentation "
                          "and quoting") from exc
    except RecursionError as exc:
        raise PresetError(f"{source}: nested too deeply to be a preset") from exc
    _check_nodes(root, source)
    return root


def _check_nodes(root: yaml.Node | None, source: str) -> None:
    """Refuse duplicate keys (naming both lines), alias bombs and absurd nesting. Counts each node as many
    times as aliases would copy it, memoised per node, so the count itself stays linear."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if id(node) in sizes:
            if sizes[id(node)] < 0:
                raise PresetError(f"{source}:{node.start_mark.line + 1}: an alias refers to itself")
            return sizes[id(node)]
        if depth > MAX_YAML_DEPTH:
            raise PresetError(f"{source}:{node.start_mark.line + 1}: nested more than {MAX_YAML_DEPTH} levels deep")
        sizes[id(node)] = -1
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None and name in seen:
                    raise PresetError(f"{source}:{key.start_mark.line + 1}: duplicate key '{name}' (also at line "
                                      f"{seen[name]}); keep one of them")
                if name is not None:
                    seen[name] = key.start_mark.line + 1
                total += size(key, depth + 1) + size(value, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        if total > MAX_YAML_NODES:
            raise PresetError(f"{source}: expands to more than {MAX_YAML_NODES:,} values (aliases repeated over "
                              "and over?); a preset is a few dozen settings")
        sizes[id(node)] = total
        return total

    if root is not None:
        size(root, 0)


def _key_lines(root: yaml.Node | None) -> dict[tuple[str, ...], int]:
    """Map every mapping key path in the YAML document to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node | None, prefix: tuple[str, ...]) -> None:
        if not isinstance(node, yaml.MappingNode) or len(prefix) > 2:
            return
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            lines[path] = key_node.start_mark.line + 1
            walk(value_node, path)

    walk(root, ())
    return lines


def _allows(annotation: Any, value: Any) -> bool:
    """Whether a YAML boolean may stand for this field: only where the field itself is (or holds) a bool."""
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_allows(arg, value) for arg in typing.get_args(annotation))
    if origin is Literal:
        return any(isinstance(arg, bool) for arg in typing.get_args(annotation))
    return False


def bool_misuse(sections: dict[str, Any]) -> tuple[tuple[str, ...], Any] | None:
    """The first (key path, value) where a true/false stands for a number: pydantic would read ``network_dim:
    true`` as rank 1, so such values are refused before validation. None when there is none."""
    for section, values in sections.items():
        if section not in SECTIONS or not isinstance(values, dict):
            continue
        fields = section_model(section).model_fields
        for name, value in values.items():
            if name not in fields:
                continue
            annotation = fields[name].annotation
            if typing.get_origin(annotation) is dict and isinstance(value, dict):
                value_type = typing.get_args(annotation)[1]
                for key, item in value.items():
                    if isinstance(item, bool) and not _allows(value_type, item):
                        return (section, name, str(key)), item
            elif isinstance(value, bool) and not _allows(annotation, value):
                return (section, name), value
    return None


def _check_booleans(sections: dict[str, Any], source: str, lines: dict[tuple[str, ...], int]) -> None:
    misuse = bool_misuse(sections)
    if misuse is not None:
        path, value = misuse
        raise PresetError(f"{_where(source, lines, path)}: '{'.'.join(path)}' = {value!r}: give a number, "
                          "not true/false")


def _all_paths() -> list[str]:
    return [f"{s}.{n}" for s in SECTIONS for n in section_model(s).model_fields]


def _suggest(key: str, section: str | None) -> str:
    """A "did you mean" for an unknown key: same section first, then any section."""
    if section is not None:
        names = list(section_model(section).model_fields)
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        if close:
            return f"did you mean '{section}.{close[0]}'?"
    leaf_matches = [p for p in _all_paths() if p.split(".", 1)[1] == key]
    if leaf_matches:
        return f"did you mean '{leaf_matches[0]}'?"
    candidates = _all_paths() + list(SECTIONS)
    full = key if section is None else f"{section}.{key}"
    close = difflib.get_close_matches(full, candidates, n=1, cutoff=0.6)
    close = close or difflib.get_close_matches(key, [p.split(".", 1)[-1] for p in candidates], n=1, cutoff=0.6)
    if close:
        match = next((p for p in candidates if p == close[0] or p.endswith("." + close[0])), close[0])
        return f"did you mean '{match}'?"
    return "see `loratui preset show` for the valid keys"


def _where(source: str, lines: dict[tuple[str, ...], int], path: tuple[str, ...]) -> str:
    while path and path not in lines:
        path = path[:-1]
    return f"{source}:{lines[path]}" if path in lines else source


def _check_keys(data: dict[str, Any], source: str, lines: dict[tuple[str, ...], int]) -> None:
    for key, value in data.items():
        if key in META_KEYS:
            continue
        if key not in SECTIONS:
            raise PresetError(f"{_where(source, lines, (key,))}: unknown key '{key}'; {_suggest(str(key), None)}")
        if not isinstance(value, dict):
            raise PresetError(f"{_where(source, lines, (key,))}: '{key}' must be a mapping of settings, "
                              f"got {type(value).__name__}")
        fields = section_model(key).model_fields
        for name in value:
            if name not in fields:
                raise PresetError(f"{_where(source, lines, (key, str(name)))}: unknown key '{key}.{name}'; "
                                  f"{_suggest(str(name), key)}")


def parse_preset_text(text: str, source: str = "<preset>") -> TrainingConfig:
    """Validate a preset's YAML text and return the full config it describes."""
    root = _compose(text, source)
    try:
        data = yaml.SafeLoader(text).construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise PresetError(f"{source}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PresetError(f"{source}: a preset must be a mapping of sections, got {type(data).__name__}")
    version = data.get("version", PRESET_VERSION)
    if version != PRESET_VERSION or isinstance(version, bool):
        raise PresetError(f"{source}: preset version {version!r} is not supported; this loratui reads "
                          f"version {PRESET_VERSION}")
    lines = _key_lines(root)
    _check_keys(data, source, lines)
    sections = {k: v for k, v in data.items() if k not in META_KEYS}
    _check_booleans(sections, source, lines)
    try:
        return TrainingConfig.model_validate(sections)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc)
        shown = repr(err.get("input"))
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise PresetError(f"{_where(source, lines, loc)}: '{key}' = {shown}: {err['msg']}") from exc


def load_config(path: str | Path) -> TrainingConfig:
    """Read a preset or saved config file (YAML)."""
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise PresetError(f"{path}: not a file (a folder or device?); give a preset YAML file")
        if info.st_size > MAX_PRESET_BYTES:
            raise PresetError(f"{path}: {info.st_size:,} bytes is far too large for a preset (limit "
                              f"{MAX_PRESET_BYTES:,}); is it the right file?")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PresetError(f"{path}: no such file; check the path or run `loratui preset list`") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(f"{path}: cannot be read ({exc}); check permissions and that it is UTF-8 text") from exc
    return parse_preset_text(text, str(path))


# --- writing -------------------------------------------------------------------------------------------------


def diff_from_defaults(cfg: TrainingConfig) -> list[tuple[str, Any, Any]]:
    """(path, default, value) for every setting that differs from the defaults."""
    defaults = TrainingConfig().model_dump()
    current = cfg.model_dump()
    return [
        (f"{section}.{name}", defaults[section][name], value)
        for section in SECTIONS
        for name, value in current[section].items()
        if value != defaults[section][name]
    ]


def preset_data(cfg: TrainingConfig) -> dict[str, Any]:
    data: dict[str, Any] = {"version": PRESET_VERSION}
    for path, _default, value in diff_from_defaults(cfg):
        section, name = path.split(".", 1)
        data.setdefault(section, {})[name] = value
    return data


def dump_preset(cfg: TrainingConfig, comment: str = "") -> str:
    """Sparse YAML for ``cfg``; ``parse_preset_text(dump_preset(cfg)) == cfg``."""
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    body = yaml.safe_dump(preset_data(cfg), sort_keys=False, allow_unicode=True, default_flow_style=False)
    return header + body


def dump_full_config(cfg: TrainingConfig) -> str:
    """Every setting, for a run's frozen config."""
    data = {"version": PRESET_VERSION, **cfg.model_dump()}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def save_preset(cfg: TrainingConfig, path: str | Path, comment: str = "") -> Path:
    """Write a sparse preset atomically; ``PresetError`` (one line) for a missing folder or a folder as target."""
    path = Path(path)
    if path.is_dir():
        raise PresetWriteError(f"{path}: is a folder; give a file name such as {path / 'preset.yaml'}",
                               "is a folder")
    if not path.parent.is_dir():
        raise PresetWriteError(f"{path}: the folder {path.parent} does not exist; create it first or pick another "
                               "path", "no such folder")
    try:
        atomic_write_text(path, dump_preset(cfg, comment))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PresetWriteError(f"{path}: cannot be written ({reason})", reason) from exc
    return path


# --- shipped presets -----------------------------------------------------------------------------------------


def _leading_comment(path: Path) -> str:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def list_presets(folder: Path = SHIPPED_PRESETS_DIR) -> list[PresetInfo]:
    if not folder.is_dir():
        return []
    return [PresetInfo(p.stem, p, _leading_comment(p)) for p in sorted(folder.glob("*.yaml"))]


def resolve_preset(name_or_path: str) -> Path:
    """A path as given, or the shipped preset of that name."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = SHIPPED_PRESETS_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if shipped.exists():
        return shipped
    names = ", ".join(p.name for p in list_presets()) or "none"
    raise PresetError(f"{name_or_path}: no such file or shipped preset; shipped presets: {names}")


def apply_overrides(cfg: TrainingConfig, assignments: list[str]) -> TrainingConfig:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars) to a config."""
    for item in assignments:
        path, sep, raw = item.partition("=")
        if not sep:
            raise PresetError(f"--set {item}: expected section.key=value, e.g. network.network_dim=32")
        path = path.strip()
        section, _, name = path.partition(".")
        if section not in SECTIONS or name not in section_model(section).model_fields:
            known_section = section if section in SECTIONS else None
            raise PresetError(f"--set {item}: unknown key '{path}'; {_suggest(name or section, known_section)}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, bool) and not _allows(section_model(section).model_fields[name].annotation, value):
            raise PresetError(f"--set {item}: give a number, not true/false")
        try:
            cfg = cfg.with_value(path, value)
        except ValidationError as exc:
            raise PresetError(f"--set {item}: {exc.errors()[0]['msg']}") from exc
    return cfg
