"""The page skeleton and style sheet of the report pages (no script, no external resource)."""

from __future__ import annotations

#: No script may run, nothing may be fetched from elsewhere: a file name that slipped through escaping still
#: could not execute, and the page works offline by construction. Images come from the page's own folder.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"

STYLE = """
:root { --ok: 31, 119, 180; --bad: 214, 39, 40; --review: #e69500; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #222;
       background: #fafafa; }
header { background: #1f3b57; color: #fff; padding: 12px 24px; }
header h1 { margin: 0; font-size: 20px; }
header p { margin: 4px 0 0; color: #cfe0f0; }
nav { margin-top: 8px; }
nav a { color: #fff; margin-right: 14px; font-size: 13px; }
main { padding: 8px 24px 32px; }
section { margin: 18px 0; }
h2 { font-size: 17px; border-bottom: 1px solid #ccc; padding-bottom: 3px; }
h3 { font-size: 15px; margin: 14px 0 2px; }
p.note { margin: 2px 0 8px; color: #555; }
.tables { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; text-align: left; font-weight: 600; }
td.text { text-align: left; word-break: break-all; }
.scroll { overflow-x: auto; max-width: 100%; }
table.matrix td { min-width: 34px; text-align: center; }
table.matrix td a { display: block; color: inherit; text-decoration: none; }
table.matrix td a:hover { text-decoration: underline; }
table.matrix td.zero { color: #bbb; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
.plots figure { margin: 0; background: #fff; border: 1px solid #ddd; padding: 6px; }
.plots img { max-width: 560px; height: auto; display: block; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
.gallery figure { margin: 0; width: 128px; background: #fff; border: 1px solid #ddd; padding: 4px; font-size: 11px; }
.gallery figure.wrong { border-color: rgb(var(--bad)); }
.gallery figure.review { border: 2px solid var(--review); }
.gallery .pic { width: 120px; height: 104px; display: flex; align-items: center; justify-content: center;
  background: #eee; }
.gallery img { max-width: 104px; max-height: 104px; }
.gallery .nopic { color: #888; font-size: 11px; text-align: center; padding: 4px; }
details.more { margin-top: 8px; }
details.more summary { cursor: pointer; color: #1f3b57; margin-bottom: 8px; }
figcaption span { display: block; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
figcaption .file { font-family: ui-monospace, monospace; }
figcaption .flag { color: var(--review); font-weight: 600; }
footer { color: #888; font-size: 12px; padding: 8px 24px 24px; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header><h1>{title}</h1><p>{subtitle}</p><nav>{nav}</nav></header>
<main>
{body}
</main>
<footer>Written by GarmentCV {version}. Thumbnails and plots are in the folder {folder}/ beside this page;
copy both together.</footer>
</body>
</html>
"""
