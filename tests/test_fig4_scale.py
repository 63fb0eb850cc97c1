"""Figure 4 draws each method's maps on one colour scale (issue 46, item 3): never per-crop min-max."""

import numpy as np

from cfgan.report import figures


def test_two_crops_of_one_method_share_vmin_and_vmax(tmp_path, monkeypatch):
    """Old behaviour: imshow autoscaled every cell, so a crop whose map is 100 times fainter was drawn
    as bright as the strong one (clims (0, 0.01) and (0, 1))."""
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig))
    rng = np.random.default_rng(0)
    strong, faint = rng.random((16, 16)), rng.random((16, 16)) * 0.01
    examples = {"x": rng.integers(0, 255, (2, 3, 16, 16), dtype=np.uint8), "mask": np.zeros((2, 16, 16), bool),
                "counterfactual": np.stack([strong, faint]), "gradcam": np.stack([faint * 3, strong * 2])}
    segmenter = np.stack([strong * 0.5, faint])
    figures.fig4_saliency(examples, tmp_path / "fig4.png", "t", {"segmenter cnn_unet": segmenter})
    axes = np.array(drawn[0].axes).reshape(2, -1)
    for j, maps in ((2, examples["counterfactual"]), (3, examples["gradcam"]), (4, segmenter)):
        top, bottom = (axes[i, j].images[0].get_clim() for i in range(2))
        assert top == bottom, (j, top, bottom)  # one scale for the method's crops ...
        assert np.allclose(top, (maps.min(), maps.max()))  # ... its range over them
        assert f"scale {maps.min():.3g} to {maps.max():.3g}" in axes[0, j].get_title()
    assert axes[0, 1].images[0].get_clim() == axes[1, 1].images[0].get_clim() == (0.0, 1.0)  # the masks: 0/1
