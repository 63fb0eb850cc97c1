"""Classify and explain one image with a model from `cfgan export --format onnx`, without cfgan:
onnxruntime, numpy and Pillow only. Usage: python predict_onnx.py model.onnx photo.jpg"""
import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def predict(model_path: str, image_path: str) -> dict:
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["cfgan.json"])
    size = meta["image_size"]  # preprocessing as meta["input"]["preprocessing"] says: upright RGB, bilinear, / 255
    image = ImageOps.exif_transpose(Image.open(image_path)).convert("RGB").resize((size, size), Image.BILINEAR)
    x = (np.asarray(image, np.float32) / 255).transpose(2, 0, 1)[None]  # 1 x 3 x size x size
    names = [o.name for o in session.get_outputs()]
    out = {name: value[0] for name, value in zip(names, session.run(None, {"image": x}))}
    real = np.exp(out["d_logits"][:2] - out["d_logits"][:2].max())  # P(damaged): D's two real logits
    ood = meta["ood"]
    signals = dict(zip(ood["signals"], out["ood_signals"].tolist()))
    flags = [k for k, t in (ood["thresholds"] or {}).items() if signals[k] > t]
    result = {"run": meta["run"], "prediction": "damaged" if out["d_logits"][1] > out["d_logits"][0] else "undamaged",
              "p_damaged": float(real[1] / real.sum()), "p_fake": float(out["probabilities"][2]),
              "out_of_distribution": bool(flags) if ood["thresholds"] else None, "ood_flags": flags}
    saliency = meta["saliency"]  # the map's form and the threshold chosen on val for it (None: none applies)
    if saliency["threshold"] is not None and saliency["smooth_sigma"] == 0:  # > 0: blur the map first
        result["salient_fraction"] = float((out["saliency"] > saliency["threshold"]).mean())
    result["saliency_mean"] = float(out["saliency"].mean())  # out["counterfactual"]: G(x), 3 x size x size in [0, 1]
    return result


if __name__ == "__main__":
    print(json.dumps(predict(sys.argv[1], sys.argv[2]), indent=2))
