"""The audit's report page ``audit.html`` (and ``audit_files/``): one gallery per issue, in the offline style of the
classify and evaluate pages (:mod:`garmentcv.report`): no script, no network, thumbnails in the files folder.

When the audit's model file has the ``cam`` output (``gcv export --cam``), the images flagged as label errors,
unknowns and outliers show where the model looked (:mod:`garmentcv.report.heatmap`, the route of the classify and
evaluate pages): a label error the map of its suggested label, the others the map of the model's top class; the
caption names the class shown."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from garmentcv.curate.fixes import EXACT_DUPLICATE, ISSUES, LABEL, NEAR_DUPLICATE, OUTLIER, UNKNOWN, Fix
from garmentcv.report import html as h
from garmentcv.report.html import Gallery, HeatLookup, Limits, Prediction
from garmentcv.report.write import FilesFolder, gallery_heatmaps, gallery_thumbnails, write_page

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

#: The issues whose images get a heatmap when the model file has the ``cam`` output; duplicates keep their plain
#: thumbnails (what they show is the copy, not the model's view).
HEATMAP_ISSUES = (LABEL, UNKNOWN, OUTLIER)


def _figure(fix: Fix, row: Prediction, copy_of: str | None, thumb: h.ThumbLookup,
            heat: HeatLookup | None = None) -> str:
    url, width, height, reason = thumb(row)
    name = h.esc(fix.path)
    overlaid = heat(row) if heat is not None else None
    if overlaid is not None:  # the crop the model saw with where it looked for a class blended over it
        pic = (f'<img class="heatmap" src="{h.esc(overlaid[0])}" alt="{name}, heatmap of {h.esc(overlaid[3])}" '
               f'width="{overlaid[1]}" height="{overlaid[2]}">')
    elif url is not None:
        pic = f'<img src="{h.esc(url)}" alt="{name}" width="{width}" height="{height}">'
    else:
        pic = f'<span class="nopic" title="{h.esc(reason or "")}">no preview: {h.esc(reason or "no file")}</span>'
    spans = [f'<span class="file" title="{name}">{name}</span>',
             f'<span title="given {h.esc(fix.given_label)}">given {h.esc(fix.given_label)}</span>']
    if fix.suggested_label:
        spans.append(f'<span title="suggested {h.esc(fix.suggested_label)}">suggested '
                     f"{h.esc(fix.suggested_label)}</span>")
    if copy_of is not None:
        spans.append(f'<span title="copy of {h.esc(copy_of)}">copy of {h.esc(copy_of)}</span>')
    spans.append(f"<span>score {fix.score:.3f}</span>")
    if overlaid is not None:  # the class shown: the one asked for, or the model's top class when it has no such class
        shown = h.esc(overlaid[3] + ("" if overlaid[3] == row.predicted else " (the model's top class)"))
        spans.append(f'<span class="heat" title="where the model looked for {shown} (class activation map on the '
                     f'crop it saw)">heatmap of {shown}</span>')
    attr = ' class="wrong"' if fix.issue == LABEL else ""
    return (f'<figure{attr}><div class="pic" title="{name}">{pic}</div>'
            f'<figcaption title="{name}">{"".join(spans)}</figcaption></figure>')


def write_audit_report(page: Path, result: AuditResult, base: Path, has_unknown: bool,
                       limits: Limits = Limits(), model: Path | None = None, unknown_note: str | None = None) -> Path:
    """Write the audit's page: a summary, then one gallery per issue, highest score first (at most
    ``limits.gallery`` thumbnails each).

    Args:
        page: the HTML file to write (its thumbnails go to ``<stem>_files/``).
        result: the :class:`garmentcv.curate.audit.AuditResult`.
        base: the folder the fix list's paths are relative to.
        has_unknown: the unknown check ran (otherwise its gallery says why not: ``unknown_note``).
        limits: gallery sizes.
        model: the audit's model file: when it has the ``cam`` output, the images of :data:`HEATMAP_ISSUES` shown
            carry a heatmap (:func:`garmentcv.report.write.gallery_heatmaps`) of their suggested label (a label
            error whose suggested label is one of the model's classes) or else of the model's top class. ``None``
            (an audit from an embeddings file): no heatmaps.
        unknown_note: why the unknown check did not run; ``None``: the model file has no unknown-item detector.

    Raises:
        OutputPathError: ``page`` or its folder cannot be written.
        ModelFileError: ``model`` cannot be read.
    """
    fixes: tuple[Fix, ...] = result.fixes
    copies = {(d.path, EXACT_DUPLICATE if d.exact else NEAR_DUPLICATE): d.original
              for d in result.duplicates}
    shown: dict[str, list[Fix]] = {issue: [f for f in fixes if f.issue == issue][: limits.gallery] for issue in ISSUES}
    # a row's predicted class is the one its heatmap explains: the suggested label of a label error, else the top one
    galleries = [Gallery(f"issue-{issue.replace('_', '-')}", TITLES[issue][0],
                         [Prediction(f.path, _source(f.path, base), predicted=f.suggested_label or None)
                          for f in shown[issue]],
                         sum(f.issue == issue for f in fixes), "most") for issue in ISSUES]

    def build(files: FilesFolder) -> str:
        thumb = gallery_thumbnails(galleries, files, limits)
        heat = gallery_heatmaps([g for issue, g in zip(ISSUES, galleries, strict=True) if issue in HEATMAP_ISSUES],
                                files, limits, model)
        sections = []
        for issue, gallery in zip(ISSUES, galleries, strict=True):
            figures = [_figure(f, row, copies.get((f.path, issue)), thumb, heat if issue in HEATMAP_ISSUES else None)
                       for f, row in zip(shown[issue], gallery.rows, strict=True)]
            if issue == UNKNOWN and not has_unknown:
                note = unknown_note or "the model file has no unknown-item detector"
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

    return write_page(page, build)


def _source(path: str, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p
