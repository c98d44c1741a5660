"""The NiiVue viewer page: self-contained, the embedded volumes are the case's, bad inputs refused,
and in headless Chromium it draws the case, switches modality and overlay, and obeys the opacity slider."""

import base64
import gzip
import hashlib
import io
import json
import re
import shutil
import time

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from glioseg.data.layouts import find_cases
from glioseg.data.nifti import CaseError, read_case
from glioseg.evaluation.figures import LABEL_COLOURS
from glioseg.interop.viewer import (
    ASSETS,
    NIIVUE_FILE,
    ViewerError,
    encode_image,
    label_volumes_ml,
    niivue_release,
    read_viewer_inputs,
    render_viewer,
    tumour_centre_mm,
    write_case_viewer,
    write_prediction_viewers,
    write_viewer,
)
from glioseg.labels import ED, ET, NCR

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader", "--window-size=1366,1100"]  # the whole canvas on screen
ET_RGB = np.array([round(255 * c) for c in LABEL_COLOURS[ET]])
ED_RGB = np.array([round(255 * c) for c in LABEL_COLOURS[ED]])


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    """A brats2017 synthetic case of 40^3 (LPS affine with an offset origin), and a prediction that calls
    the tumour voxels on the patient's right ET (so prediction and ground truth differ in colour and place)."""
    from glioseg.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("viewer_case")
    write_synthetic_dataset(root, 1, layout="brats2017", shape=(40, 40, 40), seed=5)
    files = find_cases(root)[0]
    img = nib.load(str(files.label))
    seg = np.asarray(img.dataobj)
    right = (np.arange(seg.shape[0]) < seg.shape[0] // 2)[:, None, None]  # LPS: low i = the patient's right
    pred = np.where((seg > 0) & right, 4, 0).astype(np.uint8)  # brats2017: 4 = ET
    pred_path = root / "pred.nii.gz"
    nib.save(nib.Nifti1Image(pred, img.affine, img.header), str(pred_path))
    return files, pred_path


def _payloads(page: str) -> dict[str, nib.Nifti1Image]:
    found = re.findall(r'<script type="application/gzip" id="vol-([a-z0-9]+)">([^<]*)</script>', page)
    return {key: nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(text))) for key, text in found}


def test_page_is_self_contained(case_dir):
    files, pred = case_dir
    page = render_viewer(read_viewer_inputs(files, pred))
    outside = page.replace((ASSETS / NIIVUE_FILE).read_text(), "")  # the bundle's comments cite URLs
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:|//)""", outside, re.I)
    assert not re.search(r"https?://", outside)  # nothing in glioseg's own part of the page names a URL
    assert outside.count("<script") == 2 + 6 + 1  # bundle, viewer code, 4 images + 2 label maps, config
    assert f"NiiVue {niivue_release()['version']}" in page


def test_vendored_niivue_matches_its_record():
    release = niivue_release()
    bundle = (ASSETS / release["file"]).read_bytes()
    assert hashlib.sha256(bundle).hexdigest() == release["sha256"]
    assert release["package"] == "@niivue/niivue" and release["license"] == "BSD-2-Clause"
    assert "Redistributions in binary form must reproduce" in (ASSETS / "NIIVUE_LICENSE").read_text()
    assert b"sA.niivue={}" in bundle[:1000]  # the UMD build: defines window.niivue for a classic <script>


def test_embedded_volumes_are_the_case(case_dir):
    files, pred = case_dir
    inputs = read_viewer_inputs(files, pred)
    volumes = _payloads(render_viewer(inputs))
    assert sorted(volumes) == ["flair", "gt", "pred", "t1", "t1ce", "t2"]
    case = inputs.case
    for index, key in enumerate(("t1", "t1ce", "t2", "flair")):
        img = volumes[key]
        assert img.get_data_dtype() == np.int16
        np.testing.assert_array_equal(np.asarray(img.dataobj), case.image[index])  # exact: integer intensities
        np.testing.assert_allclose(img.affine, case.geometry.canonical_affine)  # same world position
    gt = np.asarray(volumes["gt"].dataobj)
    assert volumes["gt"].get_data_dtype() == np.uint8 and set(np.unique(gt)) == {0, NCR, ED, ET}
    np.testing.assert_array_equal(gt, case.label)
    ijk = np.argwhere(np.asarray(volumes["pred"].dataobj) == ET)
    x = (volumes["pred"].affine @ np.c_[ijk, np.ones(len(ijk))].T)[0]
    centre_x = (volumes["pred"].affine @ [19.5, 19.5, 19.5, 1])[0]
    assert x.size > 50 and (x > centre_x).all()  # on the patient's right (RAS: +x = right) in world space
    disk = nib.load(str(files.images["flair"].path))  # a world point shows the same intensity in both
    i, j, k = 3, 17, 29
    world = disk.affine @ [i, j, k, 1]
    x, y, z = np.round(np.linalg.inv(volumes["flair"].affine) @ world)[:3].astype(int)
    assert np.asarray(disk.dataobj)[i, j, k] == np.asarray(volumes["flair"].dataobj)[x, y, z]


def test_non_integer_images_are_scaled_within_half_a_step():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 3, (6, 5, 4)).astype(np.float32)
    raw = gzip.decompress(encode_image(image, np.eye(4)))
    img = nib.Nifti1Image.from_bytes(raw)
    slope = float(nib.Nifti1Header.from_fileobj(io.BytesIO(raw))["scl_slope"])  # what NiiVue reads
    assert img.get_data_dtype() == np.int16 and 0 < slope <= 2 * (image.max() - image.min()) / 65535
    assert np.abs(img.get_fdata() - image).max() <= slope / 2 + 1e-6


def test_label_volumes_in_ml():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[:2] = NCR  # 200 voxels
    labels[2:5] = ED  # 300
    labels[5, :5] = ET  # 50
    volumes = label_volumes_ml(labels, (2.0, 1.0, 0.5))  # 1 mm^3 voxels = 0.001 ml
    assert volumes == pytest.approx({"NCR": 0.2, "ED": 0.3, "ET": 0.05, "TC": 0.25, "WT": 0.55})
    assert list(volumes) == ["NCR", "ED", "ET", "TC", "WT"]


def test_page_opens_on_the_tumour(case_dir):
    files, pred = case_dir
    inputs = read_viewer_inputs(files, pred)
    config = json.loads(re.search(r'id="viewer-config">(.*?)</script>', render_viewer(inputs)).group(1))
    affine = inputs.case.geometry.canonical_affine
    voxel = np.round(np.linalg.inv(affine) @ [*config["centre_mm"], 1])[:3].astype(int)
    assert inputs.pred[tuple(voxel)] > 0  # inside the tumour
    assert config["labels"] == [{"value": k, "name": n, "rgb": [round(255 * c) for c in LABEL_COLOURS[k]]}
                                for k, n in ((NCR, "NCR"), (ED, "ED"), (ET, "ET"))]
    assert tumour_centre_mm(np.zeros((3, 3, 3), np.uint8), affine) is None


def test_prediction_on_another_grid_is_refused(case_dir, tmp_path):
    files, _ = case_dir
    img = nib.load(str(files.label))
    other = tmp_path / "pred_2mm.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::2, ::2, ::2], img.affine @ np.diag([2, 2, 2, 1])), str(other))
    with pytest.raises(CaseError, match=r"prediction is on another grid \(shape \(20, 20, 20\)") as err:
        read_viewer_inputs(files, other)
    message = str(err.value)
    assert str(other) in message and str(files.images["flair"].path) in message and "resample" in message
    assert "\n" not in message


def test_missing_prediction_file_is_named(case_dir, tmp_path):
    files, _ = case_dir
    with pytest.raises(CaseError, match="--pred file not found") as err:
        read_viewer_inputs(files, tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(err.value)


def test_never_writes_over_an_input(case_dir):
    files, pred = case_dir
    inputs = read_viewer_inputs(files, pred)
    for source in (pred, files.images["t1"].path, files.label):
        before = source.read_bytes()
        with pytest.raises(ViewerError, match="is the input"):
            write_viewer(inputs, source)
        assert source.read_bytes() == before


def test_unwritable_output_leaves_nothing(case_dir, tmp_path):
    files, pred = case_dir
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        write_case_viewer(files, blocker / "view.html", pred)  # its folder would have to be a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"] and blocker.read_text() == "x"


def test_prediction_viewers_per_case(make_synthetic_dataset, tmp_path):
    root = make_synthetic_dataset("brats2017", n_cases=3, shape=(24, 24, 24), seed=9)
    cases = find_cases(root)
    out = tmp_path / "pred"
    out.mkdir()
    shutil.copy(cases[0].label, out / f"{cases[0].case_id}.nii.gz")
    img = nib.load(str(cases[1].label))
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), img.affine), str(out / f"{cases[1].case_id}.nii.gz"))
    pages, problems = write_prediction_viewers(cases, out)
    assert list(pages) == [cases[0].case_id] and pages[cases[0].case_id] == out / "viewer" / f"{cases[0].case_id}.html"
    assert 'id="vol-pred"' in pages[cases[0].case_id].read_text()
    assert "another grid" in problems[cases[1].case_id] and "no prediction" in problems[cases[2].case_id]
    assert sorted(p.name for p in (out / "viewer").iterdir()) == [f"{cases[0].case_id}.html"]


@pytest.mark.realdata
def test_real_case_page_size(shared_brats18, tmp_path):
    folder = sorted(p for p in shared_brats18.iterdir() if p.is_dir())[0]
    files = find_cases(folder)[0]
    page = write_case_viewer(files, tmp_path / "view.html", pred=files.label)
    size_mb = page.stat().st_size / 1e6
    assert 3 < size_mb < 16, size_mb  # 2.3 MB of NiiVue + 4 int16 images and 2 label maps, gzip + base64
    volumes = _payloads(page.read_text())
    np.testing.assert_array_equal(np.asarray(volumes["flair"].dataobj), read_case(files).image[3])


# ---------------------------------------------------------------- headless Chromium


@pytest.fixture()
def chrome(tmp_path):
    """Headless Chromium (software WebGL2) with http(s) blocked and its requests logged, or skip."""
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip("headless chromium / chromedriver not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    except Exception as exc:  # noqa: BLE001 -- a browser that cannot start here is the environment, not the page
        pytest.skip(f"chromium did not start: {exc}")
    try:
        if not driver.execute_script("return !!document.createElement('canvas').getContext('webgl2')"):
            pytest.skip("this chromium has no WebGL2 (software rendering unavailable)")
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*"]})
        yield driver
    finally:
        driver.quit()


def _wait_ready(driver, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = driver.execute_script("return document.body.dataset.state")
        if state != "loading":
            return state
        time.sleep(0.2)
    raise AssertionError(f"the page did not finish loading in {timeout} s")


FRAME = "var done = arguments[0]; requestAnimationFrame(function () { requestAnimationFrame(done); });"


def _canvas(driver) -> np.ndarray:
    driver.execute_script("window.scrollTo(0, 0);")  # the same part of the canvas every time
    driver.execute_async_script(FRAME)  # the redraw reached the screen
    png = driver.find_element("id", "gl").screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _colour(pixels: np.ndarray, rgb: np.ndarray) -> int:
    """How many pixels have the hue of ``rgb`` (saturated)."""
    return int(_hue(pixels, rgb).sum())


def _hue(pixels: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Mask of the saturated pixels whose hue is that of ``rgb`` (a label colour blended over grey)."""
    chroma = pixels - pixels.min(axis=-1, keepdims=True)
    target = rgb - rgb.min()
    saturated = chroma.max(axis=-1) > 50
    cos = (chroma * target).sum(axis=-1) / (np.linalg.norm(chroma, axis=-1) * np.linalg.norm(target) + 1e-9)
    return saturated & (cos > 0.97)


def _tumour_column(pixels: np.ndarray) -> float:
    """Centre column (0 left .. 1 right of the canvas) of the pixels in a label colour."""
    columns = np.nonzero(_hue(pixels, ET_RGB))[1]
    assert columns.size > 100, "no label colour on the canvas"
    return float(columns.mean() + 0.5) / pixels.shape[1]


def _set(driver, selector, value=None):
    """Use a control the way a user does: click a radio button, or move the slider (an input event)."""
    element = driver.find_element("css selector", selector)
    if value is None:
        element.click()
    else:
        driver.execute_script("arguments[0].value = arguments[1];"
                              "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", element, value)


@pytest.mark.browser
def test_viewer_in_headless_chromium(case_dir, tmp_path, chrome):
    files, pred = case_dir
    page = write_case_viewer(files, tmp_path / "view.html", pred)
    chrome.get_log("performance")  # drop what the browser's start page requested
    chrome.get(page.as_uri())
    assert _wait_ready(chrome) == "ready", chrome.find_element("id", "status").text
    body = chrome.find_element("tag name", "body")
    assert (body.get_attribute("data-modality"), body.get_attribute("data-overlay")) == ("flair", "pred")

    first = _canvas(chrome)
    (tmp_path / "viewer_pred.png").write_bytes(chrome.find_element("id", "gl").screenshot_as_png)
    assert first.std() > 15 and len(np.unique(first.reshape(-1, 3), axis=0)) > 50  # drawn, not blank
    assert _colour(first, ET_RGB) > 200 and _colour(first, ED_RGB) < 20  # the prediction: all ET (yellow)

    _set(chrome, "#overlay-gt")
    truth = _canvas(chrome)
    assert body.get_attribute("data-overlay") == "gt"
    assert _colour(truth, ED_RGB) > 200 and _colour(truth, ED_RGB) > 10 * max(_colour(first, ED_RGB), 1)  # edema
    assert np.abs(truth - first).mean() > 1  # another label map

    _set(chrome, "#modality-t1")
    t1 = _canvas(chrome)
    assert body.get_attribute("data-modality") == "t1"
    assert np.abs(t1 - truth).mean() > 2  # another picture under the same overlay
    _set(chrome, "#modality-flair")
    np.testing.assert_allclose(_canvas(chrome), truth, atol=2)  # and back

    _set(chrome, "#opacity", 0)
    none = _canvas(chrome)
    _set(chrome, "#opacity", 100)
    full = _canvas(chrome)
    (tmp_path / "viewer_gt_full.png").write_bytes(chrome.find_element("id", "gl").screenshot_as_png)
    assert body.get_attribute("data-opacity") == "1"
    assert _colour(none, ED_RGB) < 10 and _colour(none, ET_RGB) < 10  # no overlay at opacity 0
    assert _colour(full, ED_RGB) >= _colour(truth, ED_RGB) > 0
    ed_full = (np.abs(full - ED_RGB).max(axis=-1) < 30).sum()  # the pure label colour, only when opaque
    assert ed_full > 200 and (np.abs(truth - ED_RGB).max(axis=-1) < 30).sum() < ed_full / 4

    _set(chrome, "#overlay-pred")  # ET on the patient's right only
    chrome.find_element("css selector", 'button[data-slice="0"]').click()  # one axial slice, centred
    radiological = _tumour_column(_canvas(chrome))
    _set(chrome, "#radiological")  # to the neurological convention: the picture mirrors left-right
    neurological = _tumour_column(_canvas(chrome))
    assert radiological < 0.48 and neurological > 0.52  # the patient's right on the left, then on the right
    assert neurological == pytest.approx(1 - radiological, abs=0.02)

    _set(chrome, "#overlay-none")
    _set(chrome, "#opacity", 50)
    assert _colour(_canvas(chrome), ED_RGB) < 10

    _set(chrome, "#overlay-gt")
    chrome.find_element("id", "gl").click()  # a click moves the crosshair; the status line names what is there
    status = chrome.find_element("id", "status").text
    assert status.startswith("mm [") and "flair " in status and "gt " in status, status

    assert [e for e in chrome.get_log("browser") if e["level"] == "SEVERE"] == []
    requested = [json.loads(e["message"])["message"] for e in chrome.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requested if m["method"] == "Network.requestWillBeSent"]
    assert page.as_uri() in urls and all(u.startswith(("file:", "data:", "blob:")) for u in urls), urls


@pytest.mark.browser
def test_report_links_open_the_viewer(make_synthetic_dataset, tmp_path, chrome):
    from glioseg.evaluation.evaluate import evaluate_folder
    from glioseg.evaluation.report import write_report

    root = make_synthetic_dataset("brats2017", n_cases=2, shape=(24, 24, 24), seed=8)
    pred = tmp_path / "pred"
    pred.mkdir()
    for files in find_cases(root):
        shutil.copy(files.label, pred / f"{files.case_id}.nii.gz")
    result = evaluate_folder(pred, root)

    def viewer(case_id, path):
        return write_case_viewer(result.gt_files[case_id], path, pred=result.pred_paths[case_id])

    report = write_report(result, tmp_path / "report", thumbnails=False, viewer=viewer)["html"]
    chrome.get(report.as_uri())
    link = chrome.find_element("css selector", "#volumes a")
    case_id = link.text
    link.click()
    assert chrome.current_url == (report.parent / "viewer" / f"{case_id}.html").as_uri()
    assert _wait_ready(chrome) == "ready" and chrome.find_element("tag name", "h1").text == case_id
    assert _canvas(chrome).std() > 10
    assert [e for e in chrome.get_log("browser") if e["level"] == "SEVERE"] == []
