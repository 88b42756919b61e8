"""The viewer's model, without Qt (as napari keeps ``napari/components`` free of Qt): the observable viewer
state, the mapping between a study's slices and model-sized slices, and the per-slice results. The Qt widgets in
:mod:`app.gui` observe these objects; :mod:`app.figure` and the command line use them without a window."""
