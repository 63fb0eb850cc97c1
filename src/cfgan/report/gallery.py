"""`cfgan explain --run RUN FOLDER --out DIR`: every image under FOLDER explained (cfgan.explain: the
counterfactual, the saliency figure and the JSON of each, as for single files) and one static page,
DIR/index.html, to look through them: the photo, its counterfactual, the map over the photo, D's
probabilities and the out-of-distribution flag with its reasons, sortable by P(damaged) and by the flag.

The page opens from disk without a server: its CSS and JS are inline, nothing comes from the network,
and its images are PNG files beside it (`<name>_photo.png`, `<name>_overlay.png`, and explain's
`<name>_counterfactual.png`), so move DIR as a whole. `#sort=damaged` or `#sort=flag` at the end of its
address sorts on opening; the page records on <body> how many of its images loaded (data-images-loaded
of data-images-total), which tests/test_gallery.py reads through a headless browser.
"""

from __future__ import annotations

import html
import os
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from ..data.images import IMAGE_SUFFIXES, is_image_file, read_rgb
from ..errors import UserError
from ..io import atomic_path, write_text

THUMB = 256  # the photo's copy on the page: its longest side, in pixels (never enlarged)
SHOW = 160  # the longest side of each picture as the page shows it, in CSS pixels


def find_images(folder: Path, skip: Path | None = None) -> list[Path]:
    """The image files under `folder`, recursively (the extensions the data code reads, upper-case alike),
    in path order; hidden files and folders are left out, and so is `skip` (the output folder, when inside)."""
    skip = skip.resolve() if skip is not None else None
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and (skip is None or (Path(root) / d).resolve() != skip)]
        found += [Path(root) / f for f in files if is_image_file(Path(root) / f)]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def expand(given: list[str], out: Path) -> list[tuple[Path, str, str]]:
    """(image file, its output name relative to `out`, the label the page shows) for each file given and each
    image under each folder given. Images under a folder keep their sub-folders in `out`; with several
    folders, each folder's name leads; two images of one stem side by side (x.jpg, x.png) keep their extension."""
    folders = [g for g in given if Path(g).is_dir()]
    items = []
    for g in given:
        path = Path(g)
        if not path.is_dir():
            items.append((path, path.stem, path.name))
            continue
        if path.resolve() == out.resolve():
            raise UserError(f"--out {out} is the folder of photos itself: its explanations would be explained next time; "
                            f"choose another --out (a sub-folder of it is left out of the walk)")
        found = find_images(path, skip=out)
        if not found:
            raise UserError(f"{g}: no images under it ({', '.join(sorted(IMAGE_SUFFIXES))}, upper-case alike; "
                            f"hidden files and folders are left out)")
        lead = f"{path.resolve().name}/" if len(folders) > 1 else ""
        for f in found:
            rel = f.relative_to(path)
            items.append((f, lead + rel.with_suffix("").as_posix(), lead + rel.as_posix()))
    stems = Counter(name for _, name, _ in items)
    return [(f, str(Path(name).parent / Path(label).name) if stems[name] > 1 else name, label)
            for f, name, label in items]


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def thumbnail(path: Path) -> np.ndarray:
    """The photo, upright, its longest side at most THUMB pixels."""
    im = Image.fromarray(read_rgb(path))
    im.thumbnail((THUMB, THUMB), Image.LANCZOS)
    return np.asarray(im)


def overlay(photo: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """The map over the photo as explain's figure draws it: its positive side, stretched from its lowest to its
    highest value, magma at 60 %; the map (of the crop the run saw, squashed square) stretched back to the photo's shape."""
    from matplotlib import colormaps
    m = np.clip(np.asarray(saliency, np.float32), 0, None)
    m = np.asarray(Image.fromarray(m, mode="F").resize(photo.shape[1::-1], Image.BILINEAR))
    lo, hi = float(m.min()), float(m.max())
    m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    return (0.4 * photo + 0.6 * colormaps["magma"](m)[..., :3] * 255).round().clip(0, 255).astype(np.uint8)


def _url(name: str) -> str:
    """A file name as a relative link inside an HTML attribute: percent-encoded, then escaped."""
    return html.escape(quote(name, safe="/"), quote=True)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


FLAGS = {True: (2, "flagged", "out of distribution"), None: (1, "unknown", "not assessed"),
         False: (0, "ok", "in distribution")}


def explain_folder(run: str | list[str], given: list[str], out: Path, force: bool = False, form: str = "abs",
                   seed: int = 0) -> tuple[Path, list[Path]]:
    """Explain every image given or found under the folders given into `out`, then write `out/index.html`;
    returns the page and every file written. Refuses, before writing anything, to replace files already there
    unless `force`."""
    from ..explain import explain
    out = Path(out)
    items = expand(given, out)
    page = out / "index.html"
    if page.exists() and not force:
        raise UserError(f"{page} already exists; pass --force to overwrite or choose another --out")
    rows = []

    def also_writes(name: str, tags: list[str]) -> list[Path]:
        return [out / f"{name}_photo.png"] + [out / f"{name}{t}_overlay.png" for t in tags]

    def on_image(i: int, record: dict, maps: dict) -> None:
        path, name, label = items[i]
        photo = thumbnail(path)
        _save_png(photo, out / f"{name}_photo.png")
        multi = "classes" in record
        classes = []
        for defect, saliency in maps.items():
            tag = f"_{defect}" if multi else ""
            _save_png(overlay(photo, saliency), out / f"{name}{tag}_overlay.png")
            c = record["classes"][defect] if multi else record
            classes.append({"defect": defect, "counterfactual": f"{name}{tag}_counterfactual.png",
                            "overlay": f"{name}{tag}_overlay.png", "p_damaged": c["p_damaged"],
                            "p_undamaged": c["p_undamaged"], "p_fake": c["p_fake"]})
        rows.append({"label": label, "name": name, "photo": f"{name}_photo.png", "shape": photo.shape[:2],
                     "json": f"{name}.json", "prediction": record["prediction"], "ood": record["out_of_distribution"],
                     "reasons": record["out_of_distribution_reasons"], "classes": classes,
                     "runs": record.get("runs") or [record["run"]], "size": record["resized_to"]})

    written = explain(run, [str(f) for f, _, _ in items], out, force, seed=seed, form=form,
                      names=[name for _, name, _ in items], also_writes=also_writes, on_image=on_image, progress=True)
    write_text(page, render(rows, form, given))
    return page, written + [out / f for r in rows for f in [r["photo"]] + [c["overlay"] for c in r["classes"]]] + [page]


def _dims(shape) -> tuple[int, int]:
    h, w = shape
    return max(1, round(SHOW * w / max(h, w))), max(1, round(SHOW * h / max(h, w)))


def _row(i: int, r: dict) -> str:
    w, h = _dims(r["shape"])
    rank, cls, flag = FLAGS[r["ood"]]
    multi = r["classes"][0]["defect"] is not None
    label = _e(r["label"])

    def pictures(key: str, alt: str, caption: str) -> str:
        cells = []
        for c in r["classes"]:
            defect = _e(c["defect"]) if multi else ""
            cells.append(f'<figure><img src="{_url(c[key])}" width="{w}" height="{h}" alt="{alt} {label}'
                         + (f' ({defect})' if multi else "") + '">'
                         + (f"<figcaption>{caption}{defect}</figcaption>" if multi else "") + "</figure>")
        return "".join(cells)

    def probability(c: dict) -> str:
        head = f'<span class="defect">{_e(c["defect"])}</span> ' if multi else ""
        return (f'<div class="p">{head}<span class="bar"><span style="width:{100 * c["p_damaged"]:.1f}%"></span></span>'
                f' <b>{c["p_damaged"]:.3f}</b><small>undamaged {c["p_undamaged"]:.3f}</small></div>')

    fakes = "<br>".join((f'<span class="defect">{_e(c["defect"])}</span> ' if multi else "") + f'{c["p_fake"]:.3f}'
                        for c in r["classes"])
    reasons = "".join(f"<li>{_e(x)}</li>" for x in r["reasons"])
    damaged = max(c["p_damaged"] for c in r["classes"])
    return (f'<tr class="{cls}" data-index="{i}" data-damaged="{damaged!r}" data-flag="{rank}" data-image="{label}">\n'
            f'<td class="file"><div class="label">{label}</div>'
            f'<div>prediction: <b>{_e(r["prediction"])}</b></div><a href="{_url(r["json"])}">JSON</a></td>\n'
            f'<td><figure><img src="{_url(r["photo"])}" width="{w}" height="{h}" alt="photo {label}"></figure></td>\n'
            f'<td>{pictures("counterfactual", "counterfactual of", "without ")}</td>\n'
            f'<td>{pictures("overlay", "map over", "")}</td>\n'
            f'<td class="num">{"".join(probability(c) for c in r["classes"])}</td>\n'
            f'<td class="num">{fakes}</td>\n'
            f'<td class="flag"><span class="badge {cls}">{flag}</span>' + (f"<ul>{reasons}</ul>" if reasons else "")
            + "</td>\n</tr>")


CSS = """
:root { color-scheme: light; --line: #d8dbe0; --muted: #5f6670; --flag: #b3261e; --flag-bg: #fdecea; --ok: #1e7d32; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d2125; background: #f6f7f9; }
header { padding: 16px 24px 8px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0 0 4px; }
header p { margin: 4px 0; color: var(--muted); max-width: 70em; }
.toolbar { display: flex; gap: 8px; align-items: center; margin: 10px 0 4px; flex-wrap: wrap; }
button { font: inherit; padding: 4px 10px; border: 1px solid var(--line); border-radius: 6px; background: #fff; cursor: pointer; }
button:hover { background: #eef1f5; }
button.active { background: #1d2125; color: #fff; border-color: #1d2125; }
th button { border: 0; padding: 2px 4px; font-weight: 600; background: transparent; }
th button.active { background: transparent; color: inherit; text-decoration: underline; }
button.active.reversed::after { content: " (reversed)"; }
#missing { margin: 8px 24px; padding: 8px 12px; background: var(--flag-bg); color: var(--flag); border-radius: 6px; }
table { border-collapse: collapse; margin: 12px 24px 32px; background: #fff; border: 1px solid var(--line); }
thead th { position: sticky; top: 0; background: #fff; text-align: left; padding: 8px 10px; border-bottom: 2px solid var(--line);
           font-size: 13px; white-space: nowrap; z-index: 1; }
td { padding: 8px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
tr.flagged td { background: var(--flag-bg); }
td.file { min-width: 13em; max-width: 18em; word-break: break-word; }
td.file .label { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; margin-bottom: 4px; }
figure { margin: 0 4px 4px 0; display: inline-block; vertical-align: top; }
figcaption { font-size: 12px; color: var(--muted); }
img { display: block; background: #eee; border-radius: 3px; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.p { margin-bottom: 6px; }
.p small { display: block; color: var(--muted); }
.bar { display: inline-block; width: 70px; height: 8px; background: #e4e7eb; border-radius: 4px; overflow: hidden; vertical-align: middle; }
.bar span { display: block; height: 100%; background: #c2410c; }
.defect { color: var(--muted); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; white-space: nowrap; }
.badge.flagged { background: var(--flag); color: #fff; }
.badge.unknown { background: #e4e7eb; color: var(--muted); }
.badge.ok { background: #e6f4ea; color: var(--ok); }
td.flag { min-width: 16em; max-width: 28em; }
td.flag ul { margin: 6px 0 0; padding-left: 18px; font-size: 12px; color: var(--flag); }
"""

JS = """
(function () {
  "use strict";
  var body = document.body, rows = document.getElementById("rows");
  var keys = {  // ascending order of these arrays; the first click on P(damaged) puts the most damaged first
    damaged: function (r) { return [-parseFloat(r.dataset.damaged), +r.dataset.index]; },
    flag: function (r) { return [-parseInt(r.dataset.flag, 10), -parseFloat(r.dataset.damaged), +r.dataset.index]; },
    file: function (r) { return [+r.dataset.index]; }
  };
  function compare(a, b) {
    for (var i = 0; i < a.length; i++) { if (a[i] !== b[i]) { return a[i] < b[i] ? -1 : 1; } }
    return 0;
  }
  function sortBy(key, reversed) {
    var list = Array.prototype.slice.call(rows.rows), k = keys[key];
    list.sort(function (a, b) { var c = compare(k(a), k(b)); return reversed ? -c : c; });
    list.forEach(function (r) { rows.appendChild(r); });
    body.dataset.sorted = key + (reversed ? "-reversed" : "");
    document.querySelectorAll("button[data-sort]").forEach(function (b) {
      b.classList.toggle("active", b.dataset.sort === key);
      b.classList.toggle("reversed", b.dataset.sort === key && reversed);
      b.setAttribute("aria-pressed", b.dataset.sort === key ? "true" : "false");
    });
  }
  document.querySelectorAll("button[data-sort]").forEach(function (b) {
    b.addEventListener("click", function () {
      var key = b.dataset.sort, again = body.dataset.sorted === key;  // a second click reverses the order
      sortBy(key, again);
      try { history.replaceState(null, "", "#sort=" + key + (again ? "-reversed" : "")); } catch (e) { /* file: URLs */ }
    });
  });
  var asked = /sort=([a-z]+)(-reversed)?/.exec(location.hash);
  if (asked && keys[asked[1]]) { sortBy(asked[1], !!asked[2]); }
  function count() {
    var images = document.images, loaded = 0;
    for (var i = 0; i < images.length; i++) { if (images[i].complete && images[i].naturalWidth > 0) { loaded++; } }
    body.dataset.imagesLoaded = loaded;
    body.dataset.imagesTotal = images.length;
    if (loaded < images.length) {
      var note = document.getElementById("missing");
      note.textContent = (images.length - loaded) + " of " + images.length + " pictures did not load: the page reads the " +
        "PNG files beside it, so move or copy its whole folder.";
      note.hidden = false;
    }
  }
  if (document.readyState === "complete") { count(); } else { window.addEventListener("load", count); }
})();
"""


def render(rows: list[dict], form: str, given: list[str]) -> str:
    """The page: one table row per image, in path order."""
    from ..explain import FORM_TITLES
    from ..maps import parse_candidate
    base, turns = parse_candidate(form)
    map_title = FORM_TITLES[base] + (f", mean of {turns} turns" if turns > 1 else "")
    runs = sorted({r for row in rows for r in row["runs"]})
    sizes = sorted({row["size"] for row in rows})
    counts = Counter(row["ood"] for row in rows)
    multi = any(c["defect"] is not None for row in rows for c in row["classes"])
    flagged = (f'<b>{counts[True]} of {len(rows)}</b> flagged out of distribution (unlike the run\'s training data: do not '
               f'trust their explanations; the reasons are in the last column)')
    if counts[None]:
        flagged += f"; {counts[None]} not assessed (the run's checkpoint has no val calibration)"
    p_damaged = ("the probability D gives real-damaged over real-undamaged (its fake logit left out), per defect class's run; "
                 "the rows sort by the largest" if multi else
                 "the probability D gives real-damaged over real-undamaged (its fake logit left out)")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cfgan explain: {len(rows)} images</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>cfgan explain: {len(rows)} images</h1>
<p>From {_e(", ".join(given))}; run {_e(", ".join(runs))}; map {_e(map_title)} of the {_e(", ".join(map(str, sizes)))} px
crop the run sees (the photo squashed square), stretched back to the photo's shape, as are the counterfactuals.</p>
<p>P(damaged): {_e(p_damaged)}. P(fake): D's probability that the image is a generated one. {flagged}.
Each row's JSON holds every figure; the counterfactual is G(x), what the image would look like without the defect.</p>
<div class="toolbar">Sort: <button type="button" data-sort="damaged">P(damaged), highest first</button>
<button type="button" data-sort="flag">out-of-distribution flag first</button>
<button type="button" data-sort="file">file order</button>
<span style="color:var(--muted)">(click again to reverse)</span></div>
</header>
<div id="missing" hidden></div>
<table>
<thead><tr><th><button type="button" data-sort="file">File</button></th><th>Photo</th><th>Counterfactual G(x)</th>
<th>Map over the photo</th><th><button type="button" data-sort="damaged">P(damaged) &#8597;</button></th><th>P(fake)</th>
<th><button type="button" data-sort="flag">Out of distribution &#8597;</button></th></tr></thead>
<tbody id="rows">
{chr(10).join(_row(i, r) for i, r in enumerate(rows))}
</tbody>
</table>
<script>{JS}</script>
</body>
</html>
"""
