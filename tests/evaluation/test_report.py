import re
import shutil

import pytest

from glioseg.data.layouts import find_cases
from glioseg.evaluation.evaluate import evaluate_folder
from glioseg.evaluation.report import pick_cases, render_html, write_report

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
    assert "No cases." in render_html(result)


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.browser
def test_report_in_headless_chromium(evaluated, tmp_path):
    browser, driver_path = _chromium(), shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip("headless chromium / chromedriver not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    result, cases = evaluated
    html = write_report(result, tmp_path / "report")["html"]
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    except Exception as exc:  # noqa: BLE001 -- a browser that cannot start here is the environment, not the report
        pytest.skip(f"chromium did not start: {exc}")
    try:
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
    finally:
        driver.quit()
