from .registry import (DISCRIMINATORS, GENERATORS, build_discriminator, build_generator, build_segmenter,
                       cam_target_layer)

__all__ = ["DISCRIMINATORS", "GENERATORS", "build_discriminator", "build_generator", "build_segmenter", "cam_target_layer"]
