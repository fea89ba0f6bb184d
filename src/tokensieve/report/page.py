"""The HTML toolkit: data embedded so no text can break the page, placeholders filled
in one pass. Knows nothing of any capability."""

from __future__ import annotations

import re

from tokensieve.outputs import json_text


def fill_placeholders(template: str, values: dict[str, str]) -> str:
    """Replace each ``__NAME__`` of `template` by ``values["__NAME__"]`` in one pass, so
    text put into one placeholder is never searched for the next one."""
    return re.sub(r"__[A-Z]+__", lambda m: values.get(m.group(0), m.group(0)), template)


# Inside <script> an HTML parser looks only for "</script" and "<!--", but escaping every
# <, > and & (and the two line separators old JavaScript refused) is simplest to trust.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                   "\u2028": "\\u2028", "\u2029": "\\u2029"}  # fmt: skip


def script_json(value) -> str:
    """`value` as JSON that is safe inside a ``<script>`` element, whatever its strings hold."""
    text = json_text(value, indent=None)
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_ESCAPES[m.group(0)], text)
