// glioseg viewer page: NiiVue (inlined above this script) showing one case's four modalities and its label
// overlays. Every volume is embedded in the page as base64 NIfTI (gzip) in a script element of type application/gzip
// element; nothing is fetched. The page's state is mirrored in <body data-*> attributes for tests.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("viewer-config").textContent);
  var body = document.body;
  var status = document.getElementById("status");
  var nv = null, images = {}, overlays = {}, base = null, shown = "none";

  function fail(message) {
    body.dataset.state = "error";
    status.textContent = "error: " + message;
    status.className = "error";
    console.error("glioseg viewer: " + message);
  }

  function payload(key) {
    var node = document.getElementById("vol-" + key);
    return node.textContent.replace(/\s+/g, "");
  }

  function labelLut() {
    var cm = {R: [0], G: [0], B: [0], A: [0], I: [0], labels: ["background"]};
    config.labels.forEach(function (l) {
      cm.R.push(l.rgb[0]); cm.G.push(l.rgb[1]); cm.B.push(l.rgb[2]); cm.A.push(255); cm.I.push(l.value);
      cm.labels.push(l.name);
    });
    return cm;
  }

  async function load(key, colormap) {
    return niivue.NVImage.loadFromBase64({base64: payload(key), name: key + ".nii.gz", colormap: colormap});
  }

  function opacity() { return Number(document.getElementById("opacity").value) / 100; }

  function redraw() {
    // the stack is the background and the shown label map only; one GL update re-blends it
    var stack = [images[base]];
    if (overlays[shown] !== undefined) {
      overlays[shown].opacity = opacity();
      stack.push(overlays[shown]);
    }
    nv.volumes = stack;
    nv.back = stack[0];
    nv.overlays = stack.slice(1);
    nv.updateGLVolume();
    body.dataset.modality = base;
    body.dataset.overlay = shown;
    body.dataset.opacity = String(opacity());
  }

  function setModality(key) { base = key; redraw(); }

  function setOverlay(key) { shown = key; redraw(); }

  function describe(location) {
    var vox = location.vox ? " voxel [" + Array.from(location.vox).join(", ") + "]" : "";
    var names = {};
    config.labels.forEach(function (l) { names[l.value] = l.name; });
    var parts = (location.values || []).map(function (v) {
      var name = v.name || "", value = v.value;
      var key = name.replace(/\.nii\.gz$/, "");
      if (overlays[key] !== undefined) { return key + " " + (names[value] || "background"); }
      return key + " " + (Math.round(value * 100) / 100);
    });
    status.textContent = "mm [" + Array.from(location.mm || []).slice(0, 3).map(function (x) {
      return x.toFixed(1); }).join(", ") + "]" + vox + "  " + parts.join("  ");
  }

  function wire() {
    document.querySelectorAll("input[name=modality]").forEach(function (input) {
      input.addEventListener("change", function () { if (input.checked) { setModality(input.value); } });
    });
    document.querySelectorAll("input[name=overlay]").forEach(function (input) {
      input.addEventListener("change", function () { if (input.checked) { setOverlay(input.value); } });
    });
    var slider = document.getElementById("opacity");
    slider.addEventListener("input", function () {
      document.getElementById("opacity-value").textContent = slider.value + "%";
      redraw();
    });
    document.querySelectorAll("button[data-slice]").forEach(function (button) {
      button.addEventListener("click", function () {
        nv.setSliceType(Number(button.dataset.slice));
        body.dataset.slice = button.dataset.slice;
      });
    });
    var radiological = document.getElementById("radiological");
    radiological.addEventListener("change", function () { nv.setRadiologicalConvention(radiological.checked); });
  }

  async function start() {
    var t0 = performance.now();
    if (typeof niivue === "undefined") { fail("the NiiVue library did not load"); return; }
    var canvas = document.getElementById("gl");
    if (!canvas.getContext("webgl2")) { fail("this browser has no WebGL2; open the page in a current browser"); return; }
    nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1], crosshairColor: [0.3, 0.7, 1.0, 1], isColorbar: false, showLegend: false,
      dragAndDropEnabled: false, isRadiologicalConvention: config.radiological, isNearestInterpolation: true,
      logLevel: "error", loadingText: "loading " + config.case_id + " ..."
    });
    await nv.attachToCanvas(canvas);
    for (var i = 0; i < config.modalities.length; i++) {
      var m = config.modalities[i].key;
      images[m] = await load(m, "gray");
    }
    base = config.initial_modality;
    for (var j = 0; j < config.overlays.length; j++) {
      var key = config.overlays[j].key;
      overlays[key] = await load(key, "gray");
      overlays[key].setColormapLabel(labelLut());
    }
    shown = config.overlays.length ? config.overlays[0].key : "none";
    nv.onLocationChange = describe;
    redraw();
    if (config.centre_mm) { nv.scene.crosshairPos = nv.mm2frac(config.centre_mm); }  // open on the tumour
    nv.setSliceType(niivue.SLICE_TYPE.MULTIPLANAR);  // draws the scene
    wire();
    body.dataset.loadMs = String(Math.round(performance.now() - t0));
    body.dataset.state = "ready";
    status.textContent = "Click or drag in a view to move the crosshair; scroll to change slices.";
  }

  window.addEventListener("error", function (event) { fail(String(event.message)); });
  start().catch(function (error) { fail(String(error && error.message ? error.message : error)); });
})();
