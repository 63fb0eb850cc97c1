"""`cfgan explain --run RUN FOLDER --out DIR`: every image under FOLDER explained, and DIR/index.html,
a static page to look through them (cfgan.report.gallery)."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from cfgan.cli import main
from cfgan.errors import UserError
from cfgan.report import gallery
from conftest import save_image
from test_explain import trained_run  # noqa: F401  (the fixture: a small trained run)

# relative to the folder given; odd names must reach the page escaped and their files load; two of one stem
NAMES = ["a&b <x>.png", "c#1 50%.png", "sub/z.jpg", "sub/z.png", "sub/deeper/y.PNG"]
OUTPUT_NAMES = {"a&b <x>.png": "a&b <x>", "c#1 50%.png": "c#1 50%", "sub/z.jpg": "sub/z.jpg", "sub/z.png": "sub/z.png",
                "sub/deeper/y.PNG": "sub/deeper/y"}


def _folder(root: Path) -> Path:
    for k, name in enumerate(NAMES):
        save_image(root / name, (40 + 6 * k, 32 + 3 * k), seed=k)
    save_image(root / ".hidden.png")  # hidden files and folders, and files that are not images, are left out
    save_image(root / ".thumbs" / "w.png")
    (root / "notes.txt").write_text("not an image")
    return root


class _Page(HTMLParser):
    """The rows (their attributes, pictures, links and text), and <body>'s attributes, of a gallery page."""

    def __init__(self, text: str):
        super().__init__()
        self.rows, self.body, self.links = [], {}, []
        self._row = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "tr" and "data-image" in attrs:
            self._row = {**attrs, "img": [], "href": [], "text": ""}
            self.rows.append(self._row)
        if tag in ("img", "a", "link", "script", "iframe"):
            self.links.append(attrs.get("src") or attrs.get("href") or "")
        if self._row is not None and tag == "img":
            self._row["img"].append(attrs["src"])
        if self._row is not None and tag == "a":
            self._row["href"].append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._row is not None:
            self._row["text"] += data


def test_a_folder_gives_a_page_of_every_image_with_the_jsons_figures(trained_run, tmp_path, capsys):
    folder = _folder(tmp_path / "photos")
    out = tmp_path / "gallery"
    assert main(["explain", "--run", str(trained_run), str(folder), "--out", str(out)]) == 0
    assert "index.html" in capsys.readouterr().out
    text = (out / "index.html").read_text()
    page = _Page(text)
    assert sorted(r["data-image"] for r in page.rows) == sorted(NAMES)  # every image once, in path order
    assert [r["data-image"] for r in page.rows] == sorted(NAMES, key=lambda n: Path(n).parts)
    for row in page.rows:
        name = OUTPUT_NAMES[row["data-image"]]
        record = json.loads((out / f"{name}.json").read_text())  # beside the page, as single files get
        assert record["image"] == str(folder / row["data-image"])
        assert float(row["data-damaged"]) == record["p_damaged"]  # exactly the JSON's
        for key in ("p_damaged", "p_undamaged", "p_fake"):
            assert f"{record[key]:.3f}" in row["text"]
        assert f"prediction: {record['prediction']}" in row["text"]
        badge = {True: "out of distribution", False: "in distribution", None: "not assessed"}[record["out_of_distribution"]]
        assert badge in row["text"] and all(reason in row["text"] for reason in record["out_of_distribution_reasons"])
        # the photo, its counterfactual and the map over it: relative links to files beside the page
        assert [unquote(src) for src in row["img"]] == [f"{name}_photo.png", f"{name}_counterfactual.png", f"{name}_overlay.png"]
        for link in row["img"] + row["href"]:
            assert (out / unquote(link)).is_file(), link
        assert (out / f"{name}_saliency.png").is_file()  # explain's own figure, as for single files
    assert not any(re.match(r"^([a-z]+:)?//", link) for link in page.links)  # nothing from the network
    # names escaped: the odd one only ever appears as entities
    assert "<x>" not in text and "a&b" not in text and "a&amp;b &lt;x&gt;" in text
    # a second run refuses to overwrite what is there; --force replaces it
    before = (out / "index.html").stat().st_mtime_ns
    assert main(["explain", "--run", str(trained_run), str(folder), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and (out / "index.html").stat().st_mtime_ns == before
    assert main(["explain", "--run", str(trained_run), str(folder), "--out", str(out), "--force"]) == 0
    # an output folder inside the photo folder is not explained again
    inner = folder / "explained"
    assert main(["explain", "--run", str(trained_run), str(folder), "--out", str(inner)]) == 0
    assert main(["explain", "--run", str(trained_run), str(folder), "--out", str(inner), "--force"]) == 0
    assert len(_Page((inner / "index.html").read_text()).rows) == len(NAMES)


def test_the_page_refuses_files_of_the_gallery_already_there(trained_run, tmp_path, capsys):
    folder = _folder(tmp_path / "photos")
    out = tmp_path / "gallery"
    save_image(out / "sub" / "deeper" / "y_overlay.png")  # the user's, by chance of a gallery name
    assert main(["explain", "--run", str(trained_run), str(folder), "--out", str(out)]) == 2
    assert "y_overlay.png already exist" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == ["deeper", "sub", "y_overlay.png"]  # nothing written


def test_names_of_images_found_in_folders(tmp_path):
    for root in ("one", "two"):
        for name in ("x.png", "s/x.png"):
            save_image(tmp_path / root / name)
    items = gallery.expand([str(tmp_path / "one"), str(tmp_path / "two")], tmp_path / "out")
    assert [(name, label) for _, name, label in items] == [
        ("one/s/x", "one/s/x.png"), ("one/x", "one/x.png"), ("two/s/x", "two/s/x.png"), ("two/x", "two/x.png")]
    items = gallery.expand([str(tmp_path / "one"), str(tmp_path / "two" / "x.png")], tmp_path / "out")
    assert [name for _, name, _ in items] == ["s/x", "x.png", "x.png"]  # explain refuses the last two: one output name
    with pytest.raises(UserError, match="folder of photos itself"):
        gallery.expand([str(tmp_path / "one")], tmp_path / "one")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images under it"):
        gallery.expand([str(tmp_path / "empty")], tmp_path / "out")


def test_a_page_of_several_defect_classes():
    classes = [{"defect": d, "counterfactual": f"p_{d}_counterfactual.png", "overlay": f"p_{d}_overlay.png",
                "p_damaged": p, "p_undamaged": 1 - p, "p_fake": 0.1} for d, p in (("scab", 0.2), ("bruise", 0.7))]
    row = {"label": "p.png", "name": "p", "photo": "p_photo.png", "shape": (30, 60), "json": "p.json", "prediction": "bruise",
           "ood": None, "reasons": ["scab: no val calibration <here>"], "classes": classes, "runs": ["r-kscab", "r-kbruise"],
           "size": 32}
    text = gallery.render([row], "abs", ["photos"])
    page = _Page(text)
    assert page.rows[0]["data-damaged"] == "0.7"  # the rows sort by the most damaged class
    assert len(page.rows[0]["img"]) == 5 and "without bruise" in page.rows[0]["text"]
    assert "not assessed" in page.rows[0]["text"] and "&lt;here&gt;" in text and "1 not assessed" in text


# --- in a browser ---------------------------------------------------------------------------------

def _browser() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if shutil.which(b)), None)


def _dom(browser: str, page: Path, fragment: str, profile: Path) -> _Page:
    """The page's DOM after its scripts ran (headless Chromium, opened from disk)."""
    done = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
                           "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
                           page.resolve().as_uri() + fragment], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "<body" in done.stdout, done.stderr[-3000:]
    return _Page(done.stdout)


@pytest.mark.skipif(_browser() is None, reason="no Chromium found (chromium, chromium-browser, google-chrome on PATH): "
                    "the browser test needs one; Debian: apt-get install chromium (.ci/run installs it where it can)")
def test_the_page_in_a_headless_browser_loads_its_pictures_and_sorts(trained_run, tmp_path):
    browser = _browser()
    out = tmp_path / "gallery"
    assert main(["explain", "--run", str(trained_run), str(_folder(tmp_path / "photos")), "--out", str(out)]) == 0
    for fragment in ("", "#sort=damaged", "#sort=flag", "#sort=damaged-reversed"):
        dom = _dom(browser, out / "index.html", fragment, tmp_path / "profile")
        assert dom.body.get("data-images-total") == str(3 * len(NAMES)), (fragment, dom.body)
        assert dom.body["data-images-loaded"] == dom.body["data-images-total"], fragment  # every picture decoded
        assert sorted(r["data-image"] for r in dom.rows) == sorted(NAMES)
        damaged = [float(r["data-damaged"]) for r in dom.rows]
        flags = [int(r["data-flag"]) for r in dom.rows]
        assert len(set(damaged)) > 1  # else no order would be tested
        if fragment == "#sort=damaged":
            assert dom.body["data-sorted"] == "damaged" and damaged == sorted(damaged, reverse=True), damaged
        elif fragment == "#sort=damaged-reversed":
            assert damaged == sorted(damaged), damaged
        elif fragment == "#sort=flag":
            assert flags == sorted(flags, reverse=True), flags
        else:  # as written: path order
            assert [r["data-image"] for r in dom.rows] == sorted(NAMES, key=lambda n: Path(n).parts)
    # the pictures are files beside the page: moved alone, it says they did not load
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out / "index.html", alone / "index.html")
    dom = _dom(browser, alone / "index.html", "", tmp_path / "profile")
    assert dom.body["data-images-loaded"] == "0"
