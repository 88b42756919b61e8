"""The foreground threshold, defined once: a pixel of a normalised image (intensities in [0, 1]) is foreground
(body, brain) when it is above this value. Cropping studies to the foreground (``app.data.pipeline``), the
foreground mask that zeroes difference maps outside the body (``app.core.maps``), skipping empty slices
(``app.core.detector``), the validation loss of training and the noise of the denoising AE all use it.

It sits at the bottom of the import arrows (like ``app.errors``), so io, data, nets and core can all name it.
"""

FOREGROUND_THRESHOLD = 0.01
