"""Prints the stack config reference (a Markdown table) from config/settings.py.

README.md embeds its output between the config-reference markers; tests/config/test_project.py
fails when the two differ. Refresh with:  .venv/bin/python tools/config_reference.py --write
"""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import StackConfig  # noqa: E402

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def _type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "number"
    if annotation is str:
        return "string"
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"array of {_type_name(args[0]).replace('string', 'strings').replace('object', 'objects')}"
    if origin is dict:
        return "object"
    if origin is typing.Union:
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return str(annotation)


# A field's json_schema_extra key that spells its default column where the field's value does not
# say it (a None that means `main`, or a generated key).
DEFAULT_TEXT = "x-default"


def _default(field) -> str:
    """The default column: **required**, the literal default, or for a None default what it
    means: the field's ``x-default``, else "off" / "derived: <how>" from the description's
    "(default: ...)", else "none" (the key is simply unset)."""
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if DEFAULT_TEXT in extra:
        return str(extra[DEFAULT_TEXT])
    value = field.get_default(call_default_factory=True)
    if value is None:
        said = _described_default(field.description or "")
        if said is None:
            return "none"
        return "off" if said == "off" else f"derived: {said}"
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`"


def _described_default(description: str) -> "str | None":
    """What "default: ..." in a description's parentheses says, up to its first "; " (nested
    parentheses kept); None without one."""
    start = description.find("default: ")
    if start < 0:
        return None
    depth, text = 0, []
    for char in description[start + len("default: "):]:
        if char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                break
            depth -= 1
        elif char == ";" and depth == 0:
            break
        text.append(char)
    return "".join(text).strip()


def table() -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for field in StackConfig.model_fields.values():
        rows.append(
            f"| `{field.alias}` | {_type_name(field.annotation)} | {_default(field)} | {field.description} |"
        )
    rows.append(
        "| `apiKey` | secret string | generated | API key clients send as `Authorization: Bearer`; "
        "set with `pulumi config set --secret apiKey ...`, else a random 48-character key. |"
    )
    rows.append(
        "| `hfToken` | secret string | none | Hugging Face token for gated models, sent only to "
        "Hugging Face; `pulumi config set --secret hfToken` (prompts). The preview asks the Hub "
        "whether it can read the model. |"
    )
    rows.append(
        "| `modelscopeToken` | secret string | none | ModelScope token, sent only to ModelScope "
        "(modelSource modelscope); `pulumi config set --secret modelscopeToken` (prompts). |"
    )
    rows.append(
        "| `aws:region` | string | none | AWS region (the AWS provider's own key). |"
    )
    return "\n".join(rows)


def embedded(readme: str) -> str:
    return readme.split(START, 1)[1].split(END, 1)[0].strip()


def main() -> None:
    text = table()
    if "--write" in sys.argv:
        path = ROOT / "README.md"
        readme = path.read_text()
        before, rest = readme.split(START, 1)
        after = rest.split(END, 1)[1]
        path.write_text(f"{before}{START}\n{text}\n{END}{after}")
    else:
        print(text)


if __name__ == "__main__":
    main()
