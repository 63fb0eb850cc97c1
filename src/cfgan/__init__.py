"""cfgan: counterfactual GANs whose discriminator is the classifier (arXiv 2310.00761)."""

__version__ = "0.1.0"
