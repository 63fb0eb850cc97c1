from .registry import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator, cam_target_layer

__all__ = ["DISCRIMINATORS", "GENERATORS", "build_discriminator", "build_generator", "cam_target_layer"]
