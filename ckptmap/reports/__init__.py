"""Reports as self-contained HTML pages: plots drawn by matplotlib as inline SVG, pages from
Jinja2 templates (`templates/`), nothing fetched when a page is opened. Needs the `report` extra."""
