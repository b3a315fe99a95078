"""natinv: data-free image synthesis by model inversion (NaturalInversion, DeepInversion) and its uses."""

__version__ = "0.1.0"
