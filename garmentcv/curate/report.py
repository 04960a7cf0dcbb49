"""The audit's report page ``audit.html`` (and ``audit_files/``): one gallery per issue, in the offline style of the
classify and evaluate pages (:mod:`garmentcv.report`): no script, no network, thumbnails in the files folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from garmentcv.curate.fixes import EXACT_DUPLICATE, ISSUES, LABEL, NEAR_DUPLICATE, OUTLIER, UNKNOWN, Fix
from garmentcv.report import html as h
from garmentcv.report.html import Gallery, Limits, Prediction
from garmentcv.report.write import _FilesFolder, _thumbnails, _write

if TYPE_CHECKING:
    from garmentcv.curate.audit import AuditResult

#: Gallery titles and what each score means, per issue.
TITLES: dict[str, tuple[str, str]] = {
    LABEL: ("Likely label errors", "score: 1 - out-of-sample probability of the given label"),
    EXACT_DUPLICATE: ("Exact duplicates", "byte-identical to an image listed before it"),
    NEAR_DUPLICATE: ("Near-duplicates", "score: cosine similarity to the image listed before it"),
    UNKNOWN: ("None of the classes", "score: the model file's unknown score"),
    OUTLIER: ("Outliers", "score: mean cosine distance to the nearest neighbours"),
}


def _figure(fix: Fix, row: Prediction, copy_of: str | None, thumb: h.ThumbLookup) -> str:
    url, width, height, reason = thumb(row)
    name = h.esc(fix.path)
    pic = (f'<img src="{h.esc(url)}" alt="{name}" width="{width}" height="{height}">' if url is not None else
           f'<span class="nopic" title="{h.esc(reason or "")}">no preview: {h.esc(reason or "no file")}</span>')
    spans = [f'<span class="file" title="{name}">{name}</span>',
             f'<span title="given {h.esc(fix.given_label)}">given {h.esc(fix.given_label)}</span>']
    if fix.suggested_label:
        spans.append(f'<span title="suggested {h.esc(fix.suggested_label)}">suggested '
                     f"{h.esc(fix.suggested_label)}</span>")
    if copy_of is not None:
        spans.append(f'<span title="copy of {h.esc(copy_of)}">copy of {h.esc(copy_of)}</span>')
    spans.append(f"<span>score {fix.score:.3f}</span>")
    attr = ' class="wrong"' if fix.issue == LABEL else ""
    return (f'<figure{attr}><div class="pic" title="{name}">{pic}</div>'
            f'<figcaption title="{name}">{"".join(spans)}</figcaption></figure>')


def write_audit_report(page: Path, result: AuditResult, base: Path, has_unknown: bool,
                       limits: Limits = Limits()) -> Path:
    """Write the audit's page: a summary, then one gallery per issue, highest score first (at most
    ``limits.gallery`` thumbnails each).

    Args:
        page: the HTML file to write (its thumbnails go to ``<stem>_files/``).
        result: the :class:`garmentcv.curate.audit.AuditResult`.
        base: the folder the fix list's paths are relative to.
        has_unknown: the model file has an unknown-item detector (otherwise its gallery says so).
        limits: gallery sizes.

    Raises:
        OutputPathError: ``page`` or its folder cannot be written.
    """
    fixes: tuple[Fix, ...] = result.fixes
    copies = {(d.path, EXACT_DUPLICATE if d.exact else NEAR_DUPLICATE): d.original
              for d in result.duplicates}
    shown: dict[str, list[Fix]] = {issue: [f for f in fixes if f.issue == issue][: limits.gallery] for issue in ISSUES}
    galleries = [Gallery(f"issue-{issue.replace('_', '-')}", TITLES[issue][0],
                         [Prediction(f.path, _source(f.path, base)) for f in shown[issue]],
                         sum(f.issue == issue for f in fixes), "most") for issue in ISSUES]

    def build(files: _FilesFolder) -> str:
        thumb = _thumbnails(galleries, files, limits)
        sections = []
        for issue, gallery in zip(ISSUES, galleries, strict=True):
            figures = [_figure(f, row, copies.get((f.path, issue)), thumb)
                       for f, row in zip(shown[issue], gallery.rows, strict=True)]
            if issue == UNKNOWN and not has_unknown:
                note = "the model file has no unknown-item detector"
            elif not gallery.total:
                note = "none found"
            elif len(figures) < gallery.total:
                note = f"showing the {len(figures):,} highest scores of {gallery.total:,}; {TITLES[issue][1]}"
            else:
                note = f"{h.count(gallery.total, 'image')}, highest score first; {TITLES[issue][1]}"
            cut = limits.unfolded
            folded = ""
            if len(figures) > cut:
                folded = (f'<details class="more"><summary>show the other {len(figures) - cut:,}</summary>'
                          f'<div class="gallery">{"".join(figures[cut:])}</div></details>')
            sections.append(f'<section id="{gallery.ident}"><h2>{h.esc(gallery.title)}</h2>'
                            f'<p class="note">{h.esc(note)}</p><div class="gallery">{"".join(figures[:cut])}</div>'
                            f"{folded}</section>")
        summary = [("images audited", result.images), ("not decoded", len(result.not_decoded)),
                   ("out-of-sample probabilities", result.probs), ("folds", result.folds),
                   ("out-of-sample accuracy", f"{result.out_of_sample_accuracy:.4f}"),
                   *((TITLES[g][0].lower(), gal.total) for g, gal in zip(ISSUES, galleries, strict=True))]
        body = [f'<section id="summary"><h2>Summary</h2>{h.summary_table(summary)}</section>', *sections]
        nav = [("summary", "Summary"), *((g.ident, g.title) for g in galleries)]
        flagged = len({f.path for f in fixes})
        sub = f"{h.count(result.images, 'image')}: {flagged:,} flagged"
        return h.page("GarmentCV data audit", sub, nav, body, files.final.name)

    return _write(page, build)


def _source(path: str, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p
