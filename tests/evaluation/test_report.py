import base64
import io
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from glioseg.data.layouts import find_cases
from glioseg.evaluation.evaluate import evaluate_folder
from glioseg.evaluation.figures import LABEL_COLOURS
from glioseg.evaluation.report import case_thumbnails, pick_cases, render_html, write_report
from glioseg.labels import ED, ET, NCR

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture()
def evaluated(make_synthetic_dataset, tmp_path):
    import nibabel as nib
    import numpy as np

    root = make_synthetic_dataset("brats2017", n_cases=3, shape=(32, 32, 32), seed=3)
    pred = tmp_path / "pred"
    pred.mkdir()
    cases = find_cases(root)
    for shift, case in zip((0, 1), cases[:2], strict=True):  # the third case has no prediction
        img = nib.load(str(case.label))
        data = np.roll(np.asarray(img.dataobj), shift, axis=0)
        nib.save(nib.Nifti1Image(data, img.affine, img.header), str(pred / f"{case.case_id}.nii.gz"))
    return evaluate_folder(pred, root, lesion_wise=True), cases


def test_report_is_self_contained(evaluated, tmp_path):
    result, cases = evaluated
    paths = write_report(result, tmp_path / "report")
    html = paths["html"].read_text()
    assert 'id="summary"' in html and 'id="cases"' in html and "Lesion-wise Dice" in html
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)  # nothing fetched from anywhere
    images = re.findall(r'src="data:image/png;base64,', html)
    assert len(images) == 1 + 2  # box plots + best and worst of the two scored cases (best = median)
    assert cases[2].case_id in html and "no prediction file" in html
    assert [name for name, _ in pick_cases(result.cases)] == ["best", "worst"]


def test_report_without_cases_renders(evaluated):
    result, _ = evaluated
    result.cases = []
    html = render_html(result)
    assert "No cases." in html and "No scored case." in html


def _pngs(html: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data)))
            for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_figures_fit_a_laptop_page(evaluated):
    result, _ = evaluated
    html = render_html(result, case_thumbnails(result))
    assert "img { max-width: 100%; height: auto; }" in html and '<div class="scroll"><table id="cases"' in html
    boxes, *thumbs = _pngs(html)
    assert boxes.size[0] <= 1200 and boxes.size[0] < 3 * boxes.size[1]  # 6 metrics in 2 rows, not 1728 px in one
    assert len(thumbs) == 2
    for thumb in thumbs:  # the legend's pure NCR / ED / ET swatches in the bottom band (overlays are blends)
        bottom = np.asarray(thumb.convert("RGB"))[-thumb.size[1] // 5:].astype(int)
        for label in (NCR, ED, ET):
            rgb = np.array([round(255 * c) for c in LABEL_COLOURS[label]])
            assert (np.abs(bottom - rgb).max(axis=-1) < 10).sum() > 10, label
    assert "radiological convention" in html


def test_no_thumbnails_says_so(evaluated, tmp_path):
    result, _ = evaluated
    html = write_report(result, tmp_path / "report", thumbnails=False)["html"].read_text()
    assert "No scored case" not in html and "Pictures not drawn (evaluate --no-thumbnails)" in html
    assert len(_pngs(html)) == 1  # the box plots only


def test_evaluate_cli_no_thumbnails(evaluated, tmp_path):
    from typer.testing import CliRunner

    from glioseg.cli import app

    result, _ = evaluated
    out = tmp_path / "cli_report"
    run = CliRunner().invoke(app, ["evaluate", "--pred", str(result.pred_dir), "--gt", str(result.gt_root),
                                   "-o", str(out), "--no-thumbnails"])
    assert run.exit_code == 1 and "1 missing predictions" in run.output  # the third case has no prediction
    html = (out / "report.html").read_text()
    assert "No scored case" not in html and "No scored case" not in run.output and "not drawn" in html


def test_unreadable_flair_is_not_called_no_scored_case(evaluated, tmp_path):
    result, _ = evaluated
    for files in result.gt_files.values():
        files.images.pop("flair", None)
    html = render_html(result, case_thumbnails(result))
    assert "No scored case" not in html and "could not be read" in html


PROVENANCE = {
    "protocol": "brats2024",
    "protocol_parameters": {"dilation": 1, "min_lesion_voxels": {"WT": 50, "TC": 10}, "hd95_missed": 374.0},
    "label_schemes": {"ground_truth": "brats2017", "prediction": "<brats2023>"},
    "model": {"name": "default", "sha256": "ab" * 32, "options": {"tta": True, "folds": [0, 1]}},
}


def test_provenance_table(evaluated):
    result, _ = evaluated
    result.summary.pop("provenance", None)
    assert 'id="provenance"' not in render_html(result)  # older summaries: no table, no error
    result.summary["provenance"] = PROVENANCE
    html = render_html(result)
    table = re.search(r'<table id="provenance">(.*?)</table>', html).group(1)
    header = html.index('id="provenance"') < html.index("<h2>Summary</h2>")
    assert header and "<th>protocol</th><td>brats2024</td>" in table
    assert "dilation: 1<br>min_lesion_voxels: WT: 50, TC: 10<br>hd95_missed: 374</td>" in table  # one line each
    assert "prediction: &lt;brats2023&gt;" in table  # escaped
    assert f"sha256: {'ab' * 32}<br>options: tta: True, folds: 0, 1</td>" in table
    result.summary["provenance"] = {**PROVENANCE, "model": None, "extra_field": "x"}
    table = re.search(r'<table id="provenance">(.*?)</table>', render_html(result)).group(1)
    assert "not recorded" in table and "<th>extra field</th><td>x</td>" in table
    result.summary["provenance"] = {"protocol_parameters": {f"p{i}": i for i in range(7)}}
    table = re.search(r'<table id="provenance">(.*?)</table>', render_html(result)).group(1)
    assert "<details><summary>7 fields</summary>p0: 0<br>" in table and "p6: 6</details>" in table


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture()
def chrome(tmp_path):
    """A headless Chromium WebDriver at 1366 x 768 (a common laptop screen), or skip without one."""
    browser, driver_path = _chromium(), shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip("headless chromium / chromedriver not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in [*CHROME_FLAGS, "--window-size=1366,768", f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    except Exception as exc:  # noqa: BLE001 -- a browser that cannot start here is the environment, not the report
        pytest.skip(f"chromium did not start: {exc}")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.browser
def test_report_in_headless_chromium(evaluated, tmp_path, chrome):
    driver = chrome
    result, cases = evaluated
    html = write_report(result, tmp_path / "report")["html"]
    driver.get(html.as_uri())
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    table = driver.find_element("id", "cases")
    assert table.is_displayed()

    def column(index: int) -> list[str]:
        rows = table.find_elements("css selector", "tbody tr")
        return [r.find_elements("tag name", "td")[index].text for r in rows]

    def ids() -> list[str]:
        return column(0)

    assert sorted(ids()) == sorted(c.case_id for c in cases)
    header = {h.text.strip(" \u25b2\u25bc"): h for h in table.find_elements("tag name", "th")}
    header["dice_WT"].click()
    ascending = [float(v) for v in column(2)]
    assert ascending == sorted(ascending) and ascending[0] == 0.0  # the missing case first
    header["dice_WT"].click()
    descending = [float(v) for v in column(2)]
    assert descending == sorted(ascending, reverse=True)
    header["case_id"].click()
    assert ids() == sorted(ids())
    assert driver.find_element("id", "summary").is_displayed()
    assert len(driver.find_elements("css selector", "#thumbnails img")) == 2
    assert driver.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")


FITS_SCRIPT = """
const width = window.innerWidth;
return {
  width: width, client: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth,
  height: document.documentElement.scrollHeight,
  images: Array.from(document.images).map(i => {
    const r = i.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top + window.scrollY, width: r.width, natural: i.naturalWidth,
            ratio: r.height / r.width,
            naturalRatio: i.naturalHeight / i.naturalWidth};
  }),
};
"""


@pytest.mark.browser
def test_report_fits_a_laptop_screen(evaluated, tmp_path, chrome):
    result, _ = evaluated
    record = result.summary.get("provenance") or PROVENANCE  # the evaluation's own, where it records one
    result.summary["provenance"] = {**record, "model": PROVENANCE["model"]}  # long values (a sha256) in the header
    html = write_report(result, tmp_path / "report")["html"]
    chrome.get(html.as_uri())
    assert [e for e in chrome.get_log("browser") if e["level"] == "SEVERE"] == []
    chrome.execute_script("document.querySelectorAll('details').forEach(d => { d.open = true; });")  # all shown
    page = chrome.execute_script(FITS_SCRIPT)
    assert page["width"] == 1366 and page["client"] >= 1340, page  # the laptop's width (less a scrollbar)
    assert page["scroll"] <= page["client"] <= page["width"], "the page scrolls sideways"
    assert len(page["images"]) == 3
    for image in page["images"]:
        assert image["natural"] > 0 and image["left"] >= 0 and image["right"] <= page["client"], image
        assert abs(image["ratio"] - image["naturalRatio"]) < 0.02, image  # scaled, not squashed
    assert chrome.find_element("id", "provenance").is_displayed()
    shot = chrome.execute_cdp_cmd("Page.captureScreenshot", {  # the whole page, as wide as the laptop's
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": page["client"], "height": page["height"], "scale": 1}})
    (tmp_path / "report_1366.png").write_bytes(base64.b64decode(shot["data"]))
    pixels = np.asarray(Image.open(tmp_path / "report_1366.png").convert("RGB")).astype(int)
    assert pixels.shape[1] == page["client"] and pixels.shape[0] > 1000
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text and a plot, not blank
    pictures = pixels[int(page["images"][0]["top"]):]  # from the box plots down: the pictures were drawn
    assert (pictures.max(axis=-1) - pictures.min(axis=-1) > 100).sum() > 1000  # coloured overlays and legend
