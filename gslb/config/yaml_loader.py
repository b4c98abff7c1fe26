"""YAML loading that remembers where every mapping, list and scalar came from.

Each mapping becomes a MarkedDict and each list a MarkedList, carrying the Mark of the node and
the Mark of every key, so validation errors can say file, line and column.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import ConfigError, Mark, Reason


class MarkedDict(dict):  # type: ignore[type-arg]
    """A dict that knows where it and each of its keys were written."""

    mark: Mark
    key_marks: dict[str, Mark]

    def mark_of(self, key: str) -> Mark:
        return self.key_marks.get(key, self.mark)


class MarkedList(list):  # type: ignore[type-arg]
    mark: Mark
    item_marks: list[Mark]

    def mark_of(self, index: int) -> Mark:
        if 0 <= index < len(self.item_marks):
            return self.item_marks[index]
        return self.mark


def _mark(file: str, node: yaml.Node) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Loader(yaml.SafeLoader):
    filename = "<string>"

    def construct_marked_mapping(self, node: yaml.MappingNode) -> MarkedDict:
        result = MarkedDict()
        result.mark = _mark(self.filename, node)
        result.key_marks = {}
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ConfigError(
                    Reason(_mark(self.filename, key_node), "", "mapping keys must be scalars")
                )
            key = str(key)
            if key in result:
                raise ConfigError(
                    Reason(_mark(self.filename, key_node), key, "duplicate key in mapping")
                )
            result[key] = self.construct_object(value_node, deep=True)
            result.key_marks[key] = _mark(self.filename, key_node)
        return result

    def construct_marked_sequence(self, node: yaml.SequenceNode) -> MarkedList:
        result = MarkedList(self.construct_object(child, deep=True) for child in node.value)
        result.mark = _mark(self.filename, node)
        result.item_marks = [_mark(self.filename, child) for child in node.value]
        return result


_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_marked_mapping
)
_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _Loader.construct_marked_sequence
)


def load_yaml_text(text: str, filename: str = "<string>") -> object:
    """Parse YAML text; syntax errors become ConfigError with file:line:column."""
    loader = _Loader(text)
    loader.filename = filename
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        pm = exc.problem_mark
        mark = Mark(filename, pm.line + 1, pm.column + 1) if pm else Mark(filename, 0)
        raise ConfigError(Reason(mark, "", f"YAML syntax error: {exc.problem}")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(Reason(Mark(filename, 0), "", f"YAML error: {exc}")) from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path) -> object:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(Reason(Mark(str(path), 0), "", f"cannot read: {exc.strerror}")) from None
    return load_yaml_text(text, str(path))


def mark_of(container: object, key: str | int | None = None) -> Mark | None:
    """The best known position for container[key] (or the container itself)."""
    if key is not None and isinstance(container, MarkedDict) and isinstance(key, str):
        return container.mark_of(key)
    if key is not None and isinstance(container, MarkedList) and isinstance(key, int):
        return container.mark_of(key)
    return getattr(container, "mark", None)
