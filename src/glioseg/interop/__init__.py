"""Interoperability: the model outside glioseg's own torch code.

- :mod:`glioseg.interop.export`: ``glioseg export-model --format onnx|torchscript|openvino``, every
  stage and fold as a graph with dynamic spatial shapes, a ``model.json`` with the pre- and
  post-processing parameters, and a sha256 manifest.
- :mod:`glioseg.interop.runners`: load an exported folder and run its graphs with only numpy and
  ONNX Runtime or OpenVINO (no torch import).
- :mod:`glioseg.interop.backends`: ``glioseg predict --backend``: the same
  :class:`glioseg.inference.predictor.Predictor` with only the network call swapped for an
  ONNX Runtime / OpenVINO one; graphs built on first use and cached by the weights' sha256.
- :mod:`glioseg.interop.dicom`, :mod:`glioseg.interop.dicom_volume`: ``glioseg predict --dicom``:
  MR series found and assigned to T1/T1ce/T2/FLAIR, read with their exact geometry.
- :mod:`glioseg.interop.dicom_seg`: DICOM Segmentation objects (highdicom) written on the source
  series and read back onto it.
- :mod:`glioseg.interop.viewer`: ``glioseg view`` and ``--viewer``: self-contained NiiVue pages.
"""
