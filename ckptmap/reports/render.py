"""Render a report page from its template: Jinja2 with autoescaping on, so names taken from a
checkpoint (which a crafted file chooses) are text, never markup."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from ..errors import UnsupportedError

_TEMPLATES = Path(__file__).with_name("templates")
_INSTALL = "pip install 'ckptmap[report]'"


def page(template: str, **context: Any) -> str:
    try:
        import jinja2
    except ImportError:
        raise UnsupportedError(f"HTML reports need Jinja2 and matplotlib: {_INSTALL}.") from None
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    made = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return env.get_template(template).render(made=made, **context)


def save(html: str, path: str | Path) -> Path:
    """Write the page atomically (a half-written report is not left where the old one was)."""
    from ..atomic import AtomicFiles
    from ..formats.rawio import open_output

    path = Path(path)
    with AtomicFiles([path]) as out, open_output(out.temp(path)) as f:
        f.write(html.encode("utf-8"))
    return path
