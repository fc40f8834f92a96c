"""The PyPI `open311` 1.1 client (codeforamerica/open311_python), ported to Python 3 at test time.

The package is Python 2 code: implicit relative imports, `Element.getchildren()` (gone since
Python 3.9) and `urlopen` with a `str` body. This module copies the installed package's source
into a temporary package and makes exactly those mechanical changes (each one must apply, so an
upstream change is noticed), leaving the client's logic as published: it still asks for
`services.xml` and the singular `service/{code}` path, and posts `api_key` and `jurisdiction_id`
in the query string.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

# (file, old, new): the Python 3 port.
PATCHES = [
    ("__init__.py", "from open311 import Open311", "from .open311 import Open311"),
    ("open311.py", "from api import API", "from .api import API"),
    ("open311.py", "from api.api import urlopen, urlencode", "from .api.api import urlopen, urlencode"),
    ("open311.py", "urlopen(url_path, post_data)", "urlopen(url_path, post_data.encode())"),
    (
        "api/__init__.py",
        "from api import API\nfrom api import urlopen",
        "from .api import API\nfrom .api import urlopen",
    ),
    ("api/api.py", "from xml2dict import xml2dict", "from .xml2dict import xml2dict"),
    (
        "api/xml2dict/__init__.py",
        "from object_dict import object_dict",
        "from .object_dict import object_dict",
    ),
    (
        "api/xml2dict/xml2dict.py",
        "from object_dict import object_dict",
        "from .object_dict import object_dict",
    ),
    ("api/xml2dict/xml2dict.py", "node.getchildren()", "list(node)"),
    ("api/xml2dict/xml2dict.py", 're.compile("\\{(.*)\\}(.*)")', 're.compile(r"\\{(.*)\\}(.*)")'),
]
NAME = "open311_py3"


def load(tmp: Path) -> Any:
    """The `Open311` class of the installed `open311` package, ported."""
    spec = importlib.util.find_spec("open311")
    assert spec is not None and spec.submodule_search_locations, "the open311 package is not installed"
    source = Path(next(iter(spec.submodule_search_locations)))
    target = tmp / NAME
    for path in source.rglob("*.py"):
        if path.name.startswith("test_"):
            continue
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    for name, old, new in PATCHES:
        file = target / name
        text = file.read_text(encoding="utf-8")
        assert old in text, f"open311 changed: {name} no longer has {old!r}"
        file.write_text(text.replace(old, new), encoding="utf-8")
    sys.path.insert(0, str(tmp))
    try:
        for module in [m for m in sys.modules if m == NAME or m.startswith(NAME + ".")]:
            del sys.modules[module]
        package = importlib.import_module(NAME)
    finally:
        sys.path.remove(str(tmp))
    return package.Open311
